"""Shared by the probe modules of this folder: a stand-in for a keeper, and where the probes
record the process groups they started. These modules have no `test_` prefix, so the suite
never collects them; tests/anvil/test_process_cleanup.py runs them in a pytest of their own
and interrupts it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# a long-running tool with a child of its own, as `ape run keeper` has threads and anvil's npm
# wrapper a child: the whole process group must go. Bounded: it ends by itself after 300 s.
STAND_IN = [
    sys.executable, "-c",
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)",
]
PROBE_DIR_ENV = "PERPDEX_PROBE_DIR"


def record(name: str, node, tool) -> None:
    """Write the process groups of `node` and `tool` (each is its group's leader) for the test
    that runs the probe."""
    groups = {"node": node.process.pid, "tool": tool.process.pid}
    path = Path(os.environ[PROBE_DIR_ENV]) / f"{name}.json"
    path.with_suffix(".tmp").write_text(json.dumps(groups))
    path.with_suffix(".tmp").rename(path)  # whole or absent, never half written
