"""No node or tool process outlives the module that started it: not when a test fails, not when
the run is interrupted with SIGINT (Ctrl-C) or SIGTERM (a CI timeout, `kill`).

A pytest of its own runs two probe modules (tests/anvil/probes/): the first fails with a node
and a tool process running, the second waits with its own node and tool process until this
test signals the run. Each probe records the process groups it started (the node's, with the
anvil binary its npm wrapper starts; the tool's, with a child of its own); every process of
those groups must be gone: the failing module's once the second module runs, the second's once
the interrupted run has exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from anvil_tools import REPO, stop_group, wait_until

pytestmark = pytest.mark.anvil

PROBES = Path(__file__).parent / "probes"


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded) of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def read_groups(directory: Path, name: str) -> dict[str, int] | None:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_nodes_and_tools_end_with_their_module_on_failure_and_on_interrupt(tmp_path, sig):
    env = {**os.environ, "PERPDEX_PROBE_DIR": str(tmp_path)}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(PROBES / "failing.py"), str(PROBES / "interrupted.py"),
         "-q", "-p", "no:cacheprovider", "-p", "no:ape_test"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        def probe_running(name: str) -> dict[str, int]:
            if run.poll() is not None:
                raise AssertionError(f"the probe run exited ({run.returncode}):\n{run.stdout.read()[-3000:]}")
            return read_groups(tmp_path, name)

        interrupted = wait_until(lambda: probe_running("interrupted"), 60, "the second probe's node and tool")
        failing = read_groups(tmp_path, "failing")
        assert failing is not None, "the failing probe did not run first"
        # the failing module has ended: its node and tool with it
        for what, pgid in failing.items():
            assert not group_members(pgid), f"the failing probe's {what} (group {pgid}) outlived its module"
        for what, pgid in interrupted.items():
            assert group_members(pgid), f"the second probe's {what} (group {pgid}) is not running"

        os.kill(run.pid, sig)
        output, _ = run.communicate(timeout=60)
        assert run.returncode == pytest.ExitCode.INTERRUPTED, f"probe run exited {run.returncode}:\n{output[-3000:]}"
        assert "1 failed" in output, output[-3000:]
        for what, pgid in interrupted.items():
            wait_until(lambda pgid=pgid: not group_members(pgid), 10,
                       f"the second probe's {what} (group {pgid}) to end after the run's {sig.name}")
    finally:
        stop_group(run, signal.SIGKILL)
        for name in ("failing", "interrupted"):
            for pgid in (read_groups(tmp_path, name) or {}).values():
                try:
                    os.killpg(pgid, signal.SIGKILL)  # only if the test above already failed
                except ProcessLookupError:
                    pass
