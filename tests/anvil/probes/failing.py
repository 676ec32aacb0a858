"""Probe: a test that fails while a node and a tool process run (see probe_tools.py)."""

from probe_tools import STAND_IN, record


def test_fails_with_a_node_and_a_tool_running(node, tools):
    record("failing", node, tools("stand-in", command=STAND_IN))
    raise AssertionError("this probe fails on purpose")
