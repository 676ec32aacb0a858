#!/usr/bin/env python
"""Run the stateful fuzzers (tests/fuzz/test_stateful.py, tests/fuzz/test_orders_stateful.py)
until a total number of steps has run, and print steps per second per machine.

    .venv/bin/python tests/fuzz/run_long.py                      # `make fuzz`: 100,000 steps
    .venv/bin/python tests/fuzz/run_long.py --steps 20000
    .venv/bin/python tests/fuzz/run_long.py --steps 5000 TradingMachine OrderMachine

The steps are split evenly among the machines. Each machine runs in its own pytest process
(all at once by default: the operating system shares the cores among them, so no core idles
while the slowest machine finishes), with the hypothesis profile given by --profile (its
stateful_step_count caps the steps of one example). Hypothesis ends many examples before that
cap, so a machine is run in rounds: the first asks for 60 % of the machine's share at a guessed
average, each later one for as many examples as the steps still owed need at the average seen
so far, until the machine's share has run. Every round uses a new
random seed; a failing example is shrunk, printed with its reproduce blob, saved in
.hypothesis/, and stops that machine.

The figures come from the step counters the machines keep (tests/fuzz/conftest.py writes them
to a JSON file per round). Exit status: 0 when every machine passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = {
    "TradingMachine": "tests/fuzz/test_stateful.py::test_trading_and_funding",
    "LiquidationMachine": "tests/fuzz/test_stateful.py::test_liquidation_insurance_and_adl",
    "LiquidityVaultMachine": "tests/fuzz/test_stateful.py::test_liquidity_vault",
    "OrderMachine": "tests/fuzz/test_orders_stateful.py::test_orders",
    "Invariant7Machine": "tests/fuzz/test_invariant7.py::test_no_free_lunch_from_ordering",
}
STEP_COUNT = {"quick": 50, "long": 100}  # stateful_step_count of the profiles (conftest.py)
FIRST_GUESS = 0.8  # steps run per example, as a share of the cap, before any is measured
FIRST_ROUND = 0.6  # share of a machine's steps asked of its first round (the rest is sized
# from the average the first round measured, so the total overshoots by little)
MAX_ROUNDS = 20


class MachineRun:
    """One machine's rounds until `target` steps have run (or a round fails)."""

    def __init__(self, name: str, target: int, profile: str, scratch: Path, lock: threading.Lock):
        self.name, self.target, self.profile, self.scratch, self.lock = name, target, profile, scratch, lock
        self.steps = self.examples = self.rounds = 0
        self.seconds = 0.0  # inside the hypothesis runs, summed over rounds
        self.returncode = 0
        self.log = ""

    def examples_for(self, owed: int) -> int:
        per_example = self.steps / self.examples if self.examples else FIRST_GUESS * STEP_COUNT[self.profile]
        return max(1, math.ceil(owed / max(per_example, 1.0)))

    def run(self) -> None:
        while self.steps < self.target and self.returncode == 0 and self.rounds < MAX_ROUNDS:
            self.rounds += 1
            owed = self.target - self.steps
            examples = self.examples_for(math.ceil(owed * FIRST_ROUND) if self.rounds == 1 else owed)
            stats_path = self.scratch / f"{self.name}.{self.rounds}.json"
            log_path = self.scratch / f"{self.name}.{self.rounds}.log"
            env = dict(
                os.environ,
                PERPDEX_FUZZ_PROFILE=self.profile,
                PERPDEX_FUZZ_MAX_EXAMPLES=str(examples),
                PERPDEX_FUZZ_STATS=str(stats_path),
            )
            cmd = [sys.executable, "-m", "pytest", TESTS[self.name], "-q", "-p", "no:cacheprovider"]
            with open(log_path, "w") as log:
                self.returncode = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            if stats_path.exists():
                stats = json.loads(stats_path.read_text())["machines"].get(self.name, {})
                self.steps += stats.get("steps", 0)
                self.examples += stats.get("examples", 0)
                self.seconds += stats.get("wall_seconds", stats.get("seconds", 0.0))
            with self.lock:
                status = "passed" if self.returncode == 0 else f"FAILED (exit {self.returncode})"
                print(
                    f"{self.name}: round {self.rounds} ({examples} examples) {status}; "
                    f"{self.steps:,} of {self.target:,} steps",
                    flush=True,
                )
            if self.returncode != 0:
                self.log = log_path.read_text()
            elif not stats_path.exists():
                self.returncode, self.log = 1, f"no figures written by the round:\n{log_path.read_text()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="total steps over all machines (default 100,000)")
    parser.add_argument("--profile", default="long", choices=sorted(STEP_COUNT), help="hypothesis profile")
    parser.add_argument("--jobs", type=int, default=len(TESTS), help="machines run at once (default: all)")
    parser.add_argument("machines", nargs="*", metavar="MACHINE", help=f"any of {', '.join(TESTS)} (default: all)")
    args = parser.parse_args()
    machines = args.machines or list(TESTS)
    unknown = [m for m in machines if m not in TESTS]
    if unknown:
        parser.error(f"unknown machine(s): {', '.join(unknown)}")

    scratch = Path(tempfile.mkdtemp(prefix="perpdex-fuzz-"))
    lock = threading.Lock()
    share = math.ceil(args.steps / len(machines))
    runs = [MachineRun(name, share, args.profile, scratch, lock) for name in machines]
    print(
        f"perpdex fuzz: {args.steps:,} steps ({share:,} per machine), {args.profile} profile, "
        f"{min(args.jobs, len(runs))} machines at a time on {os.cpu_count()} cores",
        flush=True,
    )
    started = time.perf_counter()
    slots = threading.Semaphore(args.jobs)

    def run(machine: MachineRun) -> None:
        with slots:
            machine.run()

    threads = [threading.Thread(target=run, args=(m,)) for m in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started

    for m in runs:
        if m.returncode != 0:
            print(f"\n{m.name} failed:\n{m.log}", flush=True)
    print(f"\n{'machine':<24}{'steps':>9}{'examples':>10}{'rounds':>8}{'seconds':>10}{'steps/s':>10}")
    for m in runs:
        rate = m.steps / m.seconds if m.seconds else 0.0
        print(f"{m.name:<24}{m.steps:>9,}{m.examples:>10,}{m.rounds:>8}{m.seconds:>10.0f}{rate:>10.1f}")
    total = sum(m.steps for m in runs)
    print(f"{'total':<24}{total:>9,}{'':>18}{wall:>10.0f}{total / wall:>10.1f}  (wall clock)")
    print(f"logs and figures: {scratch}")
    ok = all(m.returncode == 0 for m in runs) and total >= args.steps
    if total < args.steps and all(m.returncode == 0 for m in runs):
        print(f"only {total:,} of {args.steps:,} steps ran in {MAX_ROUNDS} rounds per machine")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
