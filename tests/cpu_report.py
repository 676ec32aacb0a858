"""CPU time by test file: `pytest --cpu-report` (or PERPDEX_CPU_REPORT=1) prints, after the
run, the CPU seconds (user + sys) each test file cost the pytest process and the processes it
started and reaped (anvil nodes, keepers, ape scripts, chromedriver and its browser), sorted by
total. A file's module-scoped fixtures are torn down inside its last test's protocol, so the
nodes and keepers a module starts are counted to that module."""

import gc
import os
import resource
import time

import pytest


def _cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime, time.monotonic())


class CpuByFile:
    def __init__(self):
        self.rows = {}  # file -> [own cpu, children's cpu, wall, tests, garbage collection]
        self.gc_seconds = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._gc_started

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        before, collecting = _cpu(), self.gc_seconds
        yield
        after = _cpu()
        row = self.rows.setdefault(item.location[0], [0.0, 0.0, 0.0, 0, 0.0])
        for k in range(3):
            row[k] += after[k] - before[k]
        row[3] += 1
        row[4] += self.gc_seconds - collecting

    def pytest_terminal_summary(self, terminalreporter):
        write = terminalreporter.write_line
        rows = sorted(self.rows.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
        total = [sum(r[k] for _, r in rows) for k in range(5)]
        write("")
        write("CPU seconds by test file (pytest's own, of which garbage collection, + the processes it "
              "started and reaped):")
        write(f"{'total':>8} {'pytest':>8} {'gc':>6} {'children':>9} {'wall':>8} {'tests':>6}  file")
        for name, (own, children, wall, n, collecting) in rows + [("(all files)", total)]:
            write(f"{own + children:8.1f} {own:8.1f} {collecting:6.1f} {children:9.1f} {wall:8.1f} {n:6d}  {name}")


def add_option(parser):
    parser.addoption("--cpu-report", action="store_true", help="print CPU seconds by test file")


def configure(config):
    if config.getoption("--cpu-report") or os.environ.get("PERPDEX_CPU_REPORT"):
        config.pluginmanager.register(CpuByFile(), "perpdex-cpu-report")
