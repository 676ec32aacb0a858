"""`python -m perpdex.sim`: one crash replay, or a sweep over parameter grids.

    python -m perpdex.sim --traders 500 --name march-2020
    python -m perpdex.sim --prices 0=btc-usdt_2024-08-05_1m.csv --start 1722816000 --resample 300
    python -m perpdex.sim --set max_leverage=25 --set insurance_seed_usd=100000
    python -m perpdex.sim --sweep max_leverage=10,25,50 --sweep insurance_seed_usd=0,1000000 [--scheduler tcp://host:8786]

Every run writes report.json, report.md, report.png and timing.json under runs/<name>/ (a name
already taken gets the next free suffix: nothing is overwritten); a sweep writes its summary
table (sweep.json, sweep.md) and one directory per run.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from perpdex.sim.config import SimConfig
from perpdex.sim.report import RUNS, new_run_dir, write_report


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def build_config(args: argparse.Namespace) -> SimConfig:
    config = SimConfig()
    changes: dict = {"seed": args.seed}
    if args.prices:
        changes["prices"] = tuple((int(p.split("=", 1)[0]), p.split("=", 1)[1]) for p in args.prices)
        changes.setdefault("start", None)
        changes.setdefault("end", None)
    for name in ("start", "end", "resample", "traders", "whales", "lps", "keeper_latency_blocks", "deviation"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    for item in args.set or ():
        name, value = item.split("=", 1)
        changes[name] = parse_value(value)
    return config.replace(**changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perpdex.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prices", action="append", metavar="MARKET=CSV",
                        help="a price file per market (a path or a name in data/prices); default March 2020 BTC and ETH")
    parser.add_argument("--start", type=int, help="window start (UTC seconds)")
    parser.add_argument("--end", type=int, help="window end (UTC seconds)")
    parser.add_argument("--resample", type=int, help="seconds per step (candles merged)")
    parser.add_argument("--traders", type=int)
    parser.add_argument("--whales", type=int)
    parser.add_argument("--lps", type=int)
    parser.add_argument("--deviation", type=float, help="the feeds' deviation threshold (0.005 = 0.5 %%)")
    parser.add_argument("--keeper-latency-blocks", type=int, dest="keeper_latency_blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="any SimConfig, population, market (human units, or max_leverage) or global parameter")
    parser.add_argument("--sweep", action="append", metavar="NAME=V1,V2,...", help="a grid axis (repeatable)")
    parser.add_argument("--scheduler", help="a Dask distributed scheduler address (default: local processes)")
    parser.add_argument("--workers", type=int, default=2, help="local processes for a sweep")
    parser.add_argument("--name", default="sim", help="the run directory's name under --runs")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    config = build_config(args)
    if args.sweep:
        from perpdex.sim.sweep import run_sweep

        grid = {name: [parse_value(v) for v in values.split(",")]
                for name, values in (item.split("=", 1) for item in args.sweep)}
        table = run_sweep(config, grid, args.runs, args.name, scheduler=args.scheduler, workers=args.workers)
        print(json.dumps(table, indent=1))
        return 0
    run_dir = run_one(config, new_run_dir(args.name, args.runs), progress=not args.no_progress)
    print((run_dir / "report.md").read_text())
    print(f"report: {run_dir}/report.md, report.json, report.png")
    return 0


def run_one(config: SimConfig, run_dir: Path, progress: bool = False) -> Path:
    """One simulation written to `run_dir`; a broken invariant is reported there, then raised."""
    from perpdex.sim.invariants import InvariantBroken
    from perpdex.sim.runner import Simulation

    sim = Simulation(config, progress=progress)
    try:
        summary = sim.run()
    except InvariantBroken as err:
        (run_dir / "broken.json").write_text(json.dumps({"step": err.step, "invariant": err.name,
                                                         "detail": err.detail}, indent=1))
        raise
    symbols = {m.id: m.symbol for m in sim.d.markets}
    write_report(summary, run_dir, timing=timing_of(sim), symbols=symbols)
    return run_dir


def timing_of(sim) -> dict:
    """Wall-clock seconds by phase, transactions and their rate (not part of the report)."""
    from dataclasses import asdict

    t = asdict(sim.timing)
    t["transactions"] = sim.chain.transactions
    t["tx_per_s"] = sim.chain.transactions / t["replay"] if t["replay"] else 0.0
    t["accounts"] = len(sim.population.traders)
    t["steps"] = len(sim.steps)
    return t


if __name__ == "__main__":
    sys.exit(main())
