"""benchmarks.lib.outputs: every benchmark file is written completely or not at all."""
import json

import matplotlib
import numpy as np
import pytest

from benchmarks.lib import outputs

matplotlib.use("Agg")


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_text_and_json_are_written_and_read_back_with_parents_created(tmp_path):
    text = outputs.write_text(tmp_path / "a" / "b" / "table.md", "| x |\n| ü |\n")
    assert text.read_text(encoding="utf-8") == "| x |\n| ü |\n"
    record = outputs.write_json(tmp_path / "run.json", {"ppl": 36.8, "seeds": [0, 1, 2]})
    assert record.read_text(encoding="utf-8").endswith("\n")
    assert json.loads(record.read_text(encoding="utf-8")) == {"ppl": 36.8, "seeds": [0, 1, 2]}
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "a" / "b") == []


def test_a_failed_write_keeps_the_previous_complete_file(tmp_path):
    path = outputs.write_json(tmp_path / "run.json", {"finished": True})
    with pytest.raises(TypeError):  # not JSON-serialisable: fails before anything is renamed
        outputs.write_json(path, {"finished": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"finished": True}

    class Failing:
        def savefig(self, tmp, **kwargs):
            with open(tmp, "wb") as handle:
                handle.write(b"\x89PNG half")  # a partial file under the scratch name, then a crash
            raise RuntimeError("disk full")

    png = tmp_path / "plot.png"
    png.write_bytes(b"old plot")
    with pytest.raises(RuntimeError, match="disk full"):
        outputs.save_figure(Failing(), png)
    assert png.read_bytes() == b"old plot"
    assert _leftovers(tmp_path) == []


def test_npz_round_trip_and_its_extension_is_required(tmp_path):
    ids = np.arange(12, dtype=np.int32).reshape(3, 4)
    path = outputs.save_npz(tmp_path / "tokens.npz", input_ids=ids, labels=np.array([1, 0, 2]))
    with np.load(path) as data:
        np.testing.assert_array_equal(data["input_ids"], ids)
        np.testing.assert_array_equal(data["labels"], [1, 0, 2])
    with pytest.raises(ValueError, match=r"must end in '\.npz'"):
        outputs.save_npz(tmp_path / "tokens", input_ids=ids)
    assert not (tmp_path / "tokens").exists() and not (tmp_path / "tokens.npz.npz").exists()


def test_figures_are_saved_in_the_format_of_their_extension(tmp_path):
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = outputs.save_figure(fig, tmp_path / "plot.png", dpi=50)
    plt.close(fig)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert _leftovers(tmp_path) == []
