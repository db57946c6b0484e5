"""benchmarks.lib.threads: the OpenMP environment of benchmark workers, and what a run records of it."""
import os

from benchmarks import suite
from benchmarks.lib import threads


def test_worker_env_defaults_to_the_passive_wait_policy_and_keeps_a_chosen_one():
    assert threads.worker_env(base={"PATH": "/bin"}) == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.worker_env(base={"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_worker_confined_to_cpus_gets_one_openmp_thread_per_cpu():
    env = threads.worker_env((2, 3), {"OMP_NUM_THREADS": "8"})
    assert env == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


def test_thread_settings_report_this_process(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    settings = threads.thread_settings()
    assert settings["cpus"] == sorted(os.sched_getaffinity(0))
    assert settings["OMP_WAIT_POLICY"] == "PASSIVE" and settings["GOMP_SPINCOUNT"] is None


def test_the_classification_suite_runs_its_workers_with_the_passive_policy_unless_set(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert suite._subprocess_env()["OMP_WAIT_POLICY"] == "PASSIVE"  # pylint: disable=protected-access
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert suite._subprocess_env()["OMP_WAIT_POLICY"] == "ACTIVE"  # pylint: disable=protected-access
