"""A pytest plugin: each test's wall time and the machine's busy CPU time over it, one JSON line per test.

    PYTHONPATH=bench .venv/bin/python -m pytest -q -n 0 -p pytest_cpu_time    # writes cpu_time.jsonl

Busy CPU time is the whole machine's (``/proc/stat``: every core's time outside idle and iowait), so it counts the
servers, job runners and training workers a test starts, which the test process's own rusage does not. It is only
a test's own cost when nothing else runs: one pytest process (``-n 0``) on an otherwise idle machine. The output
file is ``$CPU_TIME_OUT`` (default ``cpu_time.jsonl``), appended to.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest


def busy_cpu_s() -> float:
    """Seconds of CPU time the machine has spent busy since boot, over all cores."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    cpu, wall = busy_cpu_s(), time.monotonic()
    yield
    record = {"id": item.nodeid, "wall_s": round(time.monotonic() - wall, 2), "cpu_s": round(busy_cpu_s() - cpu, 2)}
    with open(os.environ.get("CPU_TIME_OUT", "cpu_time.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
