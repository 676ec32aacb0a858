#!/usr/bin/env python
"""Run the stateful fuzzers (tests/fuzz/test_stateful.py) with the "long" hypothesis profile and
print steps per second per machine.

Each machine runs in its own pytest process (at most --jobs at a time, by default all three at
once: the operating system shares the cores among them, so no core idles while the slowest
machine finishes); the figures come from the step counters the machines keep
(tests/fuzz/conftest.py writes them to a JSON file per process).

    .venv/bin/python tests/fuzz/run_long.py                 # the long profile
    .venv/bin/python tests/fuzz/run_long.py --profile quick
    .venv/bin/python tests/fuzz/run_long.py --max-examples 50 --step-count 100

Exit status: 0 when every machine passed, 1 otherwise (a failing example is printed by
hypothesis, shrunk, with a reproduce blob, and saved in .hypothesis/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = {
    "TradingMachine": "tests/fuzz/test_stateful.py::test_trading_and_funding",
    "LiquidationMachine": "tests/fuzz/test_stateful.py::test_liquidation_insurance_and_adl",
    "LiquidityVaultMachine": "tests/fuzz/test_stateful.py::test_liquidity_vault",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="long", choices=["quick", "long"])
    parser.add_argument("--jobs", type=int, default=len(TESTS))
    parser.add_argument("--max-examples", type=int, help="override the profile's max_examples per machine")
    parser.add_argument("--step-count", type=int, help="override the profile's stateful_step_count")
    parser.add_argument("machines", nargs="*", metavar="MACHINE", help=f"any of {', '.join(TESTS)} (default: all)")
    args = parser.parse_args()
    machines = args.machines or list(TESTS)
    unknown = [m for m in machines if m not in TESTS]
    if unknown:
        parser.error(f"unknown machine(s): {', '.join(unknown)}")

    scratch = Path(tempfile.mkdtemp(prefix="perpdex-fuzz-"))
    env = dict(os.environ, PERPDEX_FUZZ_PROFILE=args.profile)
    if args.max_examples:
        env["PERPDEX_FUZZ_MAX_EXAMPLES"] = str(args.max_examples)
    if args.step_count:
        env["PERPDEX_FUZZ_STEP_COUNT"] = str(args.step_count)

    print(f"perpdex fuzz: {args.profile} profile, {len(machines)} machines, {args.jobs} at a time", flush=True)
    started = time.perf_counter()
    pending, running, results = list(machines), {}, {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = open(scratch / f"{name}.log", "w")
            job_env = dict(env, PERPDEX_FUZZ_STATS=str(scratch / f"{name}.json"))
            cmd = [sys.executable, "-m", "pytest", TESTS[name], "-q", "-p", "no:cacheprovider"]
            running[name] = (subprocess.Popen(cmd, cwd=ROOT, env=job_env, stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(1)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            results[name] = proc.returncode
            status = "passed" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"{name}: {status} after {time.perf_counter() - started:.0f} s", flush=True)
            if proc.returncode != 0:
                print((scratch / f"{name}.log").read_text(), flush=True)

    wall = time.perf_counter() - started
    total_steps = 0
    print(f"\n{'machine':<24}{'steps':>9}{'examples':>10}{'seconds':>10}{'steps/s':>10}")
    for name in machines:
        path = scratch / f"{name}.json"
        if not path.exists():
            print(f"{name:<24}{'(no figures)':>39}")
            continue
        stats = json.loads(path.read_text())["machines"].get(name)
        if stats is None:
            continue
        seconds = stats.get("wall_seconds", stats["seconds"])
        total_steps += stats["steps"]
        rate = stats["steps"] / seconds if seconds else 0.0
        print(f"{name:<24}{stats['steps']:>9}{stats['examples']:>10}{seconds:>10.0f}{rate:>10.1f}")
    rate = total_steps / wall
    print(f"{'total':<24}{total_steps:>9}{'':>10}{wall:>10.0f}{rate:>10.1f}  (wall clock, {args.jobs} jobs)")
    print(f"logs and figures: {scratch}")
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
