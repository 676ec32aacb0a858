"""Probe: a test that waits, with a node and a tool process running, until the run is
interrupted (see probe_tools.py)."""

import time

from probe_tools import STAND_IN, record


def test_waits_for_the_interrupt_with_a_node_and_a_tool_running(node, tools):
    record("interrupted", node, tools("stand-in", command=STAND_IN))
    time.sleep(300)  # the test that runs this probe interrupts it within seconds
    raise AssertionError("not interrupted within 300 s")
