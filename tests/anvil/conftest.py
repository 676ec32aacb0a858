"""Fixtures of the real-node tests: see anvil_tools.py."""

from anvil_tools import REPORT, node, tools  # noqa: F401  (fixtures)


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("perpdex on anvil")
        for name, value in REPORT.items():
            terminalreporter.write_line(f"{name}: {value}")
