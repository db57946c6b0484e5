"""freeze_from_config: YAML files, good and bad; every error names the file and changes nothing."""
import os
import stat

import pytest

from mindpet.graph import freeze_from_config, freeze_modules


def write(tmp_path, text, name="freeze.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, include, exclude", [
    ("freeze:\n  include: ['encoder.*']\n  exclude: ['*lora*']\n", ["encoder.*"], ["*lora*"]),
    ("freeze:\n  include:\n    - 'encoder.*.weight'\n", ["encoder.*.weight"], None),
    ("model: bert\nfreeze: {exclude: ['head.*']}\n", None, ["head.*"]),
])
def test_config_matches_freeze_modules(tmp_path, toy_net, snapshot, text, include, exclude):
    reference, net = toy_net(), toy_net()
    for model in (reference, net):
        model.head.weight.requires_grad = False
        model.head.bias.requires_grad = False
    expected = freeze_modules(reference, include=include, exclude=exclude)
    result = freeze_from_config(net, str(write(tmp_path, text)))
    assert result == expected
    assert result.frozen or result.unfrozen
    assert snapshot(net) == snapshot(reference)


def test_read_only_file_and_pathlike(tmp_path, toy_net, snapshot):
    path = write(tmp_path, "freeze:\n  include: ['*dense*']\n")
    os.chmod(path, stat.S_IRUSR)
    try:
        net = toy_net()
        result = freeze_from_config(net, path)
    finally:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    assert result.frozen == [f"encoder.{i}.dense.{w}" for i in range(2) for w in ("weight", "bias")]
    assert [n for n, t in snapshot(net).items() if not t] == result.frozen


BAD_FILES = {
    "empty file": ("", ValueError, "empty"),
    "comments only": ("# nothing here\n", ValueError, "empty"),
    "not YAML": ("freeze: [unclosed\n", ValueError, "YAML"),
    "top level a list": ("- freeze\n", ValueError, "mapping"),
    "no freeze key": ("train:\n  epochs: 3\n", ValueError, "'freeze'"),
    "freeze not a mapping": ("freeze: ['head.*']\n", TypeError, "mapping"),
    "freeze null": ("freeze:\n", TypeError, "mapping"),
    "unknown key": ("freeze:\n  include: ['head.*']\n  exlude: ['*']\n", ValueError, "exlude"),
    "no lists": ("freeze: {}\n", ValueError, "cannot both be None"),
    "include a str": ("freeze:\n  include: 'head.*'\n", TypeError, "include"),
    "bad item": ("freeze:\n  exclude: ['head.*', 5]\n", TypeError, "exclude[1]"),
    "pattern matches nothing": ("freeze:\n  include: ['decoder.*']\n", ValueError, "decoder.*"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_contents(case, tmp_path, toy_net, snapshot):
    text, error, word = BAD_FILES[case]
    path = write(tmp_path, text)
    net = toy_net()
    before = snapshot(net)
    with pytest.raises(error) as info:
        freeze_from_config(net, str(path))
    assert str(path) in str(info.value)
    assert word in str(info.value)
    assert snapshot(net) == before


def test_missing_file(tmp_path, toy_net):
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        freeze_from_config(toy_net(), path)


def test_symlink_is_refused(tmp_path, toy_net, snapshot):
    real = write(tmp_path, "freeze:\n  include: ['*']\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    net = toy_net()
    before = snapshot(net)
    with pytest.raises(ValueError, match="symbolic link") as info:
        freeze_from_config(net, str(link))
    assert str(link) in str(info.value)
    assert snapshot(net) == before


def test_directory_and_bad_argument_types(tmp_path, toy_net):
    with pytest.raises(ValueError, match="regular file"):
        freeze_from_config(toy_net(), str(tmp_path))
    with pytest.raises(TypeError, match="config_path"):
        freeze_from_config(toy_net(), 3)
    with pytest.raises(TypeError, match="model"):
        freeze_from_config(object(), str(write(tmp_path, "freeze:\n  include: ['*']\n")))
