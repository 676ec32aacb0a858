"""`make demo`: the March 2020 crash as a short story told by the simulator.

    python -m perpdex.sim.demo [--name demo] [--runs runs] [--traders 300] [--no-progress]

One replay of 12 March 00:00 - 13 March 12:00 UTC (BTC and ETH, hourly candles from
data/prices), set so that every safety mechanism acts in it: 300 traders (most of them long,
some with stop-losses and take-profits) and 6 whales at the maximum leverage open their
positions in the first 9 hours, the feeds publish a round at every 2 % move (as many Chainlink
feeds do) and on the hourly heartbeat, and the liquidity vault and the insurance fund start
small. The crash then brings liquidations, bankruptcies the insurance fund pays for until it
runs dry, uncovered deficits that ADL takes out of the profitable shorts, and write-offs where no
profitable position is left; DESIGN.md's invariants are checked at every step. It prints what
happened, with the report's figures, and where the report and the chart are (a new run
directory under runs/ each time: nothing is overwritten).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from perpdex.sim.config import SimConfig
from perpdex.sim.report import RUNS, new_run_dir

HOUR = 3600
START = 1583971200  # 12 March 2020 00:00 UTC
END = 1584100800  # 13 March 2020 12:00 UTC: both legs of the crash (12 March 10:00, 13 March 01:00)

PRESET = SimConfig(start=START, end=END, deviation=0.02).replace(
    traders=300,
    long_share=0.9,  # a crowd long into the crash: few shorts are left to take a deficit from
    entry_span=0.25,  # everyone is in by 09:00 on 12 March, before the first leg
    whales=6,
    whale_usd=35_000.0,  # at the maximum leverage: about 100 BTC, or 3,900 ETH of the 4,000 allowed
    lps=2,
    lp_median_usd=200_000.0,
    lp_seed_usd=1_000_000.0,
)


def demo_config(**changes) -> SimConfig:
    """The preset with any SimConfig, population or parameter field changed by name."""
    return PRESET.replace(**changes) if changes else PRESET


def run_demo(config: SimConfig = PRESET, runs: Path = RUNS, name: str = "demo",
             progress: bool = False) -> tuple[Path, dict, dict]:
    """One replay into a new run directory under `runs`: (the directory, report.json's
    content, timing.json's content). A broken invariant is written there, then raised."""
    from perpdex.sim.__main__ import run_one

    run_dir = run_one(config, new_run_dir(name, runs), progress=progress)
    summary = json.loads((run_dir / "report.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    return run_dir, summary, timing


def _get(mapping: dict, market: int):
    return mapping[market] if market in mapping else mapping[str(market)]


def _usd(x: float) -> str:
    return f"{x:,.0f} USD"


def narrative(s: dict, run_dir: Path, symbols: dict[int, str] | None = None, timing: dict | None = None) -> str:
    """What happened in a replay, in a few lines, with the report's figures."""
    symbols = symbols or {}
    series = s["series"]
    markets = sorted({int(m) for m in series[0]["prices"]})
    pop, fund, deficit = s["population"], s["insurance_fund"], s["uncovered_deficit"]
    cfg = s["config"]
    hours = (s["window"]["end"] - s["window"]["start"]) / HOUR
    lines = [
        f"The March 2020 crash, replayed: {s['window']['start_utc']} - {s['window']['end_utc']} UTC "
        f"({hours:.0f} hours, {s['window']['steps']} candles), {s['rounds']['published']:,} oracle rounds "
        f"(a round at every {100 * cfg['deviation']:g} % move and on the heartbeat).",
        f"{pop['traders']:,} traders ({pop['with_stop_loss']:,} with stop-losses, {pop['with_take_profit']:,} with "
        f"take-profits) and {pop['whales']} whales at the maximum leverage open positions; the liquidity vault "
        f"holds {_usd(s['liquidity_vault']['value_start_usd'])} at the first step's end, the insurance fund "
        f"starts with {_usd(cfg['insurance_seed_usd'])} and its share of the fees.",
        "",
    ]
    for m in markets:
        prices = [_get(r["prices"], m) for r in series]
        low = min(range(len(prices)), key=prices.__getitem__)
        lines.append(
            f"- {symbols.get(m, f'market {m}')}: {prices[0]:,.2f} -> low {prices[low]:,.2f} "
            f"({100 * (prices[low] / prices[0] - 1):+.1f} %, {_hour(series[low]['time'])}) "
            f"-> {prices[-1]:,.2f} at the end."
        )
    lines += [
        f"- The keeper liquidated {s['liquidations']:,} times ({s['liquidated_accounts']:,} accounts); "
        f"{s['bankruptcies']:,} accounts went bankrupt, leaving {_usd(s['bad_debt_usd'])} of bad debt.",
        f"- The insurance fund took in {_usd(fund['in_usd'])}"
        + (f" ({_usd(fund['in_penalties_usd'])} of liquidation penalties, {_usd(fund['in_fee_share_usd'])} of fees)"
           if "in_penalties_usd" in fund else "")
        + f", paid out {_usd(s['bad_debt_covered_by_insurance_usd'])} of the bad debt and ends with "
        f"{_usd(fund['end_usd'])}.",
        f"- What it could not pay, {_usd(deficit['recorded_usd'])}, was recorded as uncovered deficit: ADL took "
        f"{_usd(s['adl']['haircut_usd'])} from {s['adl']['targets']:,} profitable positions, and "
        f"{s['write_offs']['count']:,} write-offs ({_usd(s['write_offs']['usd'])}) were paid by the liquidity vault "
        f"where no profitable position was left to take it from. Outstanding: at most "
        f"{_usd(deficit['peak_usd'])} at its worst moment, "
        f"{_usd(deficit.get('peak_at_step_end_usd', deficit['peak_usd']))} at a candle's end, "
        f"{_usd(deficit['end_usd'])} at the end.",
        f"- The liquidity vault, the traders' counterparty, went from {_usd(s['liquidity_vault']['value_start_usd'])} "
        f"to {_usd(s['liquidity_vault']['value_end_usd'])}: LP PnL {s['liquidity_vault']['lp_pnl_usd']:+,.0f} USD.",
    ]
    inv = s["invariants"]
    checks = sum(inv["checked"].values())
    held = "all held" if inv.get("broken") is None else f"BROKEN: {inv['broken']}"
    lines.append(
        f"- DESIGN.md's invariants 1-5: {checks:,} checks over {s['window']['steps']} steps, {held}"
        + (f" ({inv['capacity_waits']:,} times an account waited for liquidation capacity at its index)"
           if inv.get("capacity_waits") else "") + "."
    )
    waits = sum(n for what, n in s.get("keeper_errors", {}).items() if "capacity" in what)
    if waits:
        lines.append(f"- {waits:,} times the keeper held an ADL plan back because the liquidation capacity at the "
                     "index was used up; it went through at a later price.")
    lines += ["", f"{s['transactions']:,} transactions"
              + (f", replayed in {timing['replay']:.0f} s (setup {timing['setup']:.0f} s)" if timing else "") + "."]
    lines += [f"Report: {run_dir / 'report.md'} (figures: report.json)", f"Chart:  {run_dir / 'report.png'}"]
    return "\n".join(lines)


def _shown(path: Path) -> Path:
    """`path` relative to the working directory when under it."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _hour(t: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%d %b %H:%M UTC")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perpdex.sim.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="demo", help="the run directory's name under --runs (a free suffix is added)")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--traders", type=int, help=f"default {PRESET.population.traders}")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    changes = {k: v for k, v in (("traders", args.traders), ("seed", args.seed)) if v is not None}
    config = demo_config(**changes)
    started = time.perf_counter()
    from perpdex.sim.invariants import InvariantBroken

    try:
        run_dir, summary, timing = run_demo(config, args.runs, args.name, progress=not args.no_progress)
    except InvariantBroken as err:
        print(f"invariant broken at step {err.step}: {err.name}: {err.detail}", file=sys.stderr)
        return 1
    symbols = {m.id: m.symbol for m in config.deploy_config().markets}
    print(narrative(summary, _shown(run_dir), symbols, timing))
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
