"""benchmarks.step_probe --ab: configurations, round order and the summary (no model is built here)."""
import json
import subprocess
import types

import pytest

from benchmarks import step_probe


def test_every_configuration_takes_every_position_equally_often():
    orders = step_probe.round_orders(["a", "b", "c"], 6)
    assert all(sorted(o) == ["a", "b", "c"] for o in orders)
    for position in range(3):
        column = [o[position] for o in orders]
        assert {c: column.count(c) for c in "abc"} == {"a": 2, "b": 2, "c": 2}


def test_config_env_sets_and_removes_the_libgomp_variables():
    base = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "5", "PATH": "/bin"}
    default = step_probe.config_env("default", base)
    assert "OMP_WAIT_POLICY" not in default and "GOMP_SPINCOUNT" not in default and default["PATH"] == "/bin"
    passive = step_probe.config_env("passive", base)
    assert passive["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in passive
    spin = step_probe.config_env("spin10k", base)
    assert spin["GOMP_SPINCOUNT"] == "10000" and "OMP_WAIT_POLICY" not in spin
    assert base == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "5", "PATH": "/bin"}  # not modified
    with pytest.raises(ValueError, match=r"unknown configuration 'busy'"):
        step_probe.config_env("busy", base)


def _ms(forward, lora_forward, full_step, lora_step):
    return {"forward": forward, "lora_forward": lora_forward, "full_step": full_step, "lora_step": lora_step}


def test_summary_gives_median_and_range_of_times_and_ratios():
    samples = {"default": [_ms(200, 260, 700, 630), _ms(220, 264, 800, 720), _ms(180, 234, 600, 570)],
               "passive": [_ms(210, 220, 700, 560)]}
    summary = step_probe.summarise(samples)
    assert summary["default"]["forward"] == {"median": 200.0, "min": 180.0, "max": 220.0}
    lora_fwd = summary["default"]["lora_fwd/fwd"]
    assert lora_fwd["median"] == pytest.approx(1.3) and lora_fwd["min"] == pytest.approx(1.2)
    assert summary["default"]["lora_step/full"]["max"] == pytest.approx(0.95)
    assert summary["passive"]["lora_step/full"]["median"] == pytest.approx(0.8)
    text = step_probe.table(summary, 3)
    assert "| default | 200 (180-220) |" in text and "0.800 (0.800-0.800)" in text


def test_ab_runs_each_configuration_in_its_own_process_with_its_environment(monkeypatch, capsys):
    calls = []

    def fake_run(cmd, env, stdout, text, check):
        calls.append(env.get("OMP_WAIT_POLICY", "-"))
        assert cmd[1:4] == ["-m", "benchmarks.step_probe", "--json"] and check
        scale = 1.0 if env.get("OMP_WAIT_POLICY") == "PASSIVE" else 1.2
        return types.SimpleNamespace(stdout="compiling...\n" + json.dumps(_ms(200, 200 * scale, 700, 560 * scale)))

    monkeypatch.setattr(subprocess, "run", fake_run)
    samples = step_probe.run_ab(["default", "passive"], rounds=2, reps=1)
    assert calls == ["-", "PASSIVE", "PASSIVE", "-"]
    summary = step_probe.summarise(samples)
    assert summary["passive"]["lora_fwd/fwd"]["median"] == pytest.approx(1.0)
    assert summary["default"]["lora_step/full"]["median"] == pytest.approx(0.96)
    assert "round 2 default" in capsys.readouterr().out


def test_bad_arguments_are_rejected_before_any_process_starts(monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no probe may start"))
    with pytest.raises(SystemExit):
        step_probe.main(["--ab", "2", "--configs", "default,busy"])
    assert "--configs: unknown ['busy']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        step_probe.main(["--ab", "0"])
    assert "--ab must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown configuration"):
        step_probe.run_ab(["default", "busy"], rounds=1, reps=1)
