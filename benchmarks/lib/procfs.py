"""This process's memory from ``/proc`` without importing MindSpore or mindpet (for probes that must
measure the import itself, or must run without mindpet): ``VmRSS``/``VmHWM`` in MiB and a peak reset."""
from __future__ import annotations


def status_mib(key: str) -> float:
    """``key`` (e.g. ``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in MiB; NaN where it is absent."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Restart ``VmHWM`` at the current RSS (Linux >= 4.0: ``5`` into ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")
