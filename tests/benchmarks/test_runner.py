"""benchmarks.lib.runner: request digests, reusing finished runs, and the worker processes of both suites."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from benchmarks.lib import runner


# ------------------------------------------------------------------------------------- requests and --resume

def test_request_digest_is_the_sha256_of_the_canonical_json():
    request = {"method": "lora", "profile": {"steps": 3, "seq_len": 16}}
    canonical = '{"method":"lora","profile":{"seq_len":16,"steps":3}}'
    assert runner.request_digest(request) == hashlib.sha256(canonical.encode()).hexdigest()


def test_request_digest_survives_a_json_round_trip_and_ignores_only_the_named_keys():
    request = {"targets": ("query", "value"), "settings": {"seed": 0, "lr": 2e-3}, "progress": True}
    stored = json.loads(json.dumps(request))  # tuples come back as lists, key order may differ
    assert stored != request and runner.request_digest(stored) == runner.request_digest(request)
    quiet = dict(request, progress=False)
    assert runner.request_digest(quiet) != runner.request_digest(request)
    assert runner.request_digest(quiet, ignore=("progress",)) == runner.request_digest(request, ignore=["progress"])
    other_seed = dict(request, settings={"seed": 1, "lr": 2e-3})
    assert runner.request_digest(other_seed, ignore=("progress",)) != runner.request_digest(request, ("progress",))


def test_a_result_holding_its_request_is_reused_only_for_the_same_request(tmp_path):
    request = {"method": "prompt", "model": "synthetic", "profile": {"steps": 3, "sizes": (1, 2)}}
    path = tmp_path / "lm_prompt_seed0.json"
    assert runner.reusable(path, request) is None  # nothing there yet
    path.write_text(json.dumps({"heldout_ppl": 12.5, "request": request}))
    assert runner.reusable(path, request)["heldout_ppl"] == 12.5
    assert runner.reusable(path, dict(request, model="smollm2")) is None
    path.write_text(json.dumps({"heldout_ppl": 12.5}))  # no request recorded: never reused
    assert runner.reusable(path, request) is None
    path.write_text('{"heldout_ppl": 12.')  # an interrupted write: not reused, not an error
    assert runner.reusable(path, request) is None


def test_a_result_with_its_request_in_a_file_beside_it_is_reused_with_the_ignored_keys_aside(tmp_path):
    request = {"row": "lora", "settings": {"seed": 0}, "progress": True, "result": "out/lora_seed0.json"}
    result_path, request_path = tmp_path / "lora_seed0.json", tmp_path / "lora_seed0.request.json"
    result_path.write_text(json.dumps({"test": {"accuracy": 0.9}}))
    assert runner.reusable(result_path, request, request_path) is None  # no request file
    request_path.write_text(json.dumps(dict(request, progress=False, result=str(result_path))))
    assert runner.reusable(result_path, request, request_path) is None
    ignore = ("progress", "result")
    assert runner.reusable(result_path, request, request_path, ignore)["test"]["accuracy"] == 0.9
    assert runner.reusable(result_path, dict(request, settings={"seed": 1}), request_path, ignore) is None


# ------------------------------------------------------------------------------------- worker processes

def test_run_timed_reports_the_exit_status_and_the_child_cpu_time(capfd):
    burn = "import sys; x = sum(i * i for i in range(3_000_000)); print('noise'); sys.exit(4)"
    run = runner.run_timed(runner.module_command("this_module_does_not_exist"), quiet=True)
    assert run.returncode == 1
    capfd.readouterr()
    run = runner.run_timed([sys.executable, "-c", burn], env=dict(os.environ), quiet=True)
    assert run.returncode == 4 and run.cpu_s > 0 and run.wall_s > 0
    assert "noise" not in capfd.readouterr().out  # quiet: the worker's standard output is discarded


def test_module_command_runs_this_interpreter():
    assert runner.module_command("benchmarks.suite", "--worker", "r.json") == [
        sys.executable, "-m", "benchmarks.suite", "--worker", "r.json"]


def test_cpu_groups_are_disjoint_contiguous_and_cover_every_cpu():
    assert runner.cpu_groups([1, 0], 2) == [(0,), (1,)]
    groups = runner.cpu_groups(range(5), 2)
    assert sorted(c for g in groups for c in g) == [0, 1, 2, 3, 4] and sorted(map(len, groups)) == [2, 3]
    assert runner.cpu_groups([4, 6, 8], 1) == [(4, 6, 8)]
    for jobs in (0, 3):
        with pytest.raises(ValueError, match=rf"jobs must be between 1 and the 2 usable CPUs, got {jobs}"):
            runner.cpu_groups([0, 1], jobs)


def test_parallel_workers_are_pinned_apart_and_a_failure_is_reported_after_the_others_finish(tmp_path, capsys):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip(f"needs 2 usable CPUs, this process has {len(os.sched_getaffinity(0))}")
    probe = ("import json, os, sys; json.dump({'cpus': sorted(os.sched_getaffinity(0)), "
             "'omp': os.environ['OMP_NUM_THREADS']}, open(sys.argv[1], 'w'))")
    commands = [("bad one", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])] + [
        (f"probe {i}", [sys.executable, "-c", probe, str(tmp_path / f"probe{i}.json")]) for i in range(3)]
    with pytest.raises(RuntimeError, match=r"worker 'bad one' failed with exit 3; see .*bad_one\.log"):
        runner.run_workers(commands, 2, tmp_path / "logs", tag="t")
    assert (tmp_path / "logs" / "bad_one.log").read_text().strip() == "boom"
    seen = [json.loads((tmp_path / f"probe{i}.json").read_text()) for i in range(3)]  # all ran despite the failure
    assert all(len(s["cpus"]) == 1 and s["omp"] == "1" for s in seen)
    assert "[t] bad one: finished (exit 3)" in capsys.readouterr().out


def test_one_job_runs_the_workers_in_turn_and_stops_at_the_first_failure(tmp_path):
    mark = "import sys; open(sys.argv[1], 'w').close()"
    commands = [("first", [sys.executable, "-c", mark, str(tmp_path / "first")]),
                ("fails", [sys.executable, "-c", "import sys; sys.exit(2)"]),
                ("never", [sys.executable, "-c", mark, str(tmp_path / "never")])]
    with pytest.raises(subprocess.CalledProcessError) as err:
        runner.run_workers(commands, 1, tmp_path / "logs")
    assert err.value.returncode == 2
    assert (tmp_path / "first").exists() and not (tmp_path / "never").exists()
    assert not (tmp_path / "logs").exists()  # one job: output inherited, no logs
