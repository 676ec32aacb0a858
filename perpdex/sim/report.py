"""A simulation's report: report.json, report.md and report.png in a run directory of its own.

`summarize` turns a finished `Simulation` into plain data: the configuration, what happened
(liquidations, bankruptcies, insurance fund in and out, uncovered deficit peak and at the end,
ADL targets, write-offs, LP PnL, orders), the invariants checked, and the series per step.
Everything in report.json follows from the configuration and the seed alone (wall-clock
timings go to timing.json), so two runs of one seed write identical report.json files.
`new_run_dir` never reuses a directory: a name already taken gets the next free suffix.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from perpdex.fixed_point import WAD

if TYPE_CHECKING:
    from perpdex.sim.runner import Simulation

ROOT = Path(__file__).resolve().parent.parent.parent
RUNS = ROOT / "runs"


def _usd(wad: int) -> float:
    return round(wad / WAD, 6)


def summarize(sim: Simulation) -> dict:
    """The report's content (deterministic for one configuration and seed)."""
    logs = sim.chain.logs
    by_name: dict[str, list] = {}
    for log, source in zip(logs, sim.chain.log_sources):
        if log.event == "DeficitWrittenOff" and source != "liquidator":
            continue  # the vault's own record of the same write-off
        by_name.setdefault(log.event, []).append(log.args)
    # the insurance fund's flows: its fee share through Settled; liquidation penalties (in) and
    # bankruptcy cover (out) through PairSettled; donations through InsuranceDeposited
    flows = [(name, e["insurance"]) for name in ("Settled", "PairSettled") for e in by_name.get(name, [])
             if e.get("insurance", 0)]
    insurance_in = sum(amount for _, amount in flows if amount > 0)
    insurance_out = -sum(amount for _, amount in flows if amount < 0)
    fee_share = sum(amount for name, amount in flows if name == "Settled" and amount > 0)
    donated = sum(e["credited"] for e in by_name.get("InsuranceDeposited", []))
    bad_debt = by_name.get("BadDebt", [])
    cancels: dict[str, int] = {}
    for e in by_name.get("OrderCancelled", []):
        cancels[e["reason"]] = cancels.get(e["reason"], 0) + 1
    records = sim.records
    first, last = records[0], records[-1]
    traders = sim.population.traders
    config = dataclasses.asdict(sim.config)
    return {
        "config": config,
        "window": {"start": sim.start, "end": sim.end, "steps": len(sim.steps),
                   "start_utc": _utc(sim.start), "end_utc": _utc(sim.end)},
        "rounds": {"published": len(sim.rounds), "deviation": sum(r.reason == "deviation" for r in sim.rounds),
                   "heartbeat": sum(r.reason == "heartbeat" for r in sim.rounds)},
        "population": {"traders": sum(not t.whale for t in traders), "whales": sum(t.whale for t in traders),
                       "lps": len(sim.population.lps),
                       "with_stop_loss": sum(t.stop_loss is not None for t in traders),
                       "with_take_profit": sum(t.take_profit is not None for t in traders)},
        "orders": {"committed": len(by_name.get("OrderCommitted", [])),
                   "executed": len(by_name.get("OrderExecuted", [])),
                   "cancelled": len(by_name.get("OrderCancelled", [])), "cancel_reasons": dict(sorted(cancels.items())),
                   "refused_at_commit": dict(sorted(sim.refusals.items()))},
        "liquidations": len(by_name.get("Liquidation", [])),
        "liquidated_accounts": len({(e["owner"], e["sub_account"]) for e in by_name.get("Liquidation", [])}),
        "bankruptcies": len(bad_debt),
        "bad_debt_usd": _usd(sum(e["deficit"] for e in bad_debt)),
        "bad_debt_covered_by_insurance_usd": _usd(sum(e["covered_by_insurance"] for e in bad_debt)),
        "margin": _margin(sim, by_name.get("Liquidation", [])),
        "bankrupt_accounts": [_bankrupt(sim, e) for e in bad_debt],
        "insurance_fund": {"start_usd": first.insurance_fund, "end_usd": last.insurance_fund,
                           "donated_usd": _usd(donated), "in_usd": _usd(insurance_in),
                           "in_fee_share_usd": _usd(fee_share), "in_penalties_usd": _usd(insurance_in - fee_share),
                           "out_usd": _usd(insurance_out)},
        # the peak between step ends too: ADL and write-offs often clear a deficit within the step
        "uncovered_deficit": {"peak_usd": max(max(r.uncovered_deficit for r in records), _usd(_deficit_peak(sim))),
                              "peak_at_step_end_usd": max(r.uncovered_deficit for r in records),
                              "end_usd": last.uncovered_deficit,
                              "recorded_usd": _usd(sum(e["amount"] for e in by_name.get("DeficitRecorded", [])))},
        "adl": {"targets": len(by_name.get("AutoDeleveraged", [])),
                "haircut_usd": _usd(sum(e["haircut"] for e in by_name.get("AutoDeleveraged", [])))},
        "write_offs": {"count": len(by_name.get("DeficitWrittenOff", [])),
                       "usd": _usd(sum(e["amount"] for e in by_name.get("DeficitWrittenOff", [])))},
        "liquidity_vault": {"value_start_usd": first.lv_value, "value_end_usd": last.lv_value,
                            "lp_pnl_usd": last.lp_pnl},
        "invariants": {"checked": dict(sorted(sim.checker.checked.items())),
                       "capacity_waits": sim.checker.capacity_waits, "broken": None},
        "keeper_errors": dict(sorted(sim.keeper_errors.counts.items())),
        "transactions": sim.chain.transactions,
        "series": [dataclasses.asdict(r) for r in records],
        "events": _markers(sim, logs),
    }


def _deficit_peak(sim: Simulation) -> int:
    """The largest uncovered deficit outstanding over all markets at any moment (WAD), followed
    event by event: a record sets its market's total (DeficitRecorded.total), a deficit ADL's
    haircut and a write-off take from it."""
    outstanding: dict[int, int] = {}
    peak = 0
    for log, source in zip(sim.chain.logs, sim.chain.log_sources):
        a = log.args
        if log.event == "DeficitRecorded":
            outstanding[a["market_id"]] = a["total"]
        elif log.event == "AutoDeleveraged" and a["trigger"] == 1:
            outstanding[a["market_id"]] = outstanding.get(a["market_id"], 0) - a["haircut"]
        elif log.event == "DeficitWrittenOff" and source == "liquidator":
            outstanding[a["market_id"]] = outstanding.get(a["market_id"], 0) - a["amount"]
        else:
            continue
        peak = max(peak, sum(outstanding.values()))
    return peak


def _margin(sim: Simulation, liquidations: list) -> dict:
    """How close the crash came to bankruptcies: the largest price move from one oracle round to
    the next per market (what the keeper cannot act inside), and the smallest equity a
    liquidation left, as a percentage of the notional it closed (below zero: a bankruptcy)."""
    last: dict[int, float] = {}
    moves: dict[int, float] = {}
    for r in sim.rounds:
        if r.market in last:
            moves[r.market] = max(moves.get(r.market, 0.0), abs(r.price / last[r.market] - 1) * 100)
        last[r.market] = r.price
    left = [e["equity_after"] / e["closed_notional"] * 100 for e in liquidations if e["closed_notional"]]
    return {"max_round_move_pct": {m: round(v, 4) for m, v in sorted(moves.items())},
            "min_equity_after_pct_of_notional": round(min(left), 4) if left else None}


def _bankrupt(sim: Simulation, e) -> dict:
    """A bankrupt account: who it was (market, side, leverage, collateral) and its deficit."""
    t = sim.by_address.get(e["owner"])
    who = {} if t is None else {"market": t.market, "side": t.side, "leverage": t.leverage,
                                "collateral_usd": t.collateral_usd, "entry_time": t.entry_time, "whale": t.whale}
    return {"owner": e["owner"], **who, "deficit_usd": _usd(e["deficit"]),
            "covered_by_insurance_usd": _usd(e["covered_by_insurance"]), "uncovered_usd": _usd(e["uncovered"])}


def _markers(sim: Simulation, logs) -> list[dict]:
    """Liquidations, ADL, bad debt and write-offs with their time and market (for the chart)."""
    markers, block_times = [], sim.chain.block_times
    for log, source in zip(logs, sim.chain.log_sources):
        if log.event not in ("Liquidation", "AutoDeleveraged", "BadDebt", "DeficitWrittenOff") or source == "vault":
            continue
        a = log.args
        trader = sim.by_address.get(a["owner"])
        market = int(a["market_id"]) if "market_id" in a else (trader.market if trader else 0)
        when = block_times[log.block]
        markers.append({"event": log.event, "block": log.block, "time": when, "market": market, "owner": a["owner"]})
    return markers


def _utc(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")


def new_run_dir(name: str, base: Path = RUNS) -> Path:
    """base/name, or base/name-2, -3... when taken: a run never overwrites another."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = base / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory for {name} under {base}")


def write_report(summary: dict, run_dir: Path, timing: dict | None = None, symbols: dict[int, str] | None = None) -> None:
    """report.json, report.md, report.png (and timing.json) into `run_dir` (files there are
    refused, not replaced)."""
    for name in ("report.json", "report.md", "report.png", "timing.json"):
        if (run_dir / name).exists():
            raise FileExistsError(f"{run_dir / name} exists: a run directory is written once")
    (run_dir / "report.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    (run_dir / "report.md").write_text(markdown(summary, symbols or {}))
    if timing is not None:
        (run_dir / "timing.json").write_text(json.dumps(timing, indent=1))
    from perpdex.sim.charts import draw

    draw(summary, run_dir / "report.png", symbols or {})


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def markdown(s: dict, symbols: dict[int, str]) -> str:
    inv = s["invariants"]
    lines = [
        f"# Crash replay {s['window']['start_utc']} - {s['window']['end_utc']} UTC (seed {s['config']['seed']})",
        "",
        f"{s['window']['steps']} steps, {s['rounds']['published']:,} oracle rounds "
        f"({s['rounds']['deviation']:,} on deviation, {s['rounds']['heartbeat']:,} on heartbeat), "
        f"{s['transactions']:,} transactions.",
        f"Population: {s['population']['traders']:,} traders ({s['population']['with_stop_loss']:,} with stop-losses, "
        f"{s['population']['with_take_profit']:,} with take-profits), {s['population']['whales']} whales, "
        f"{s['population']['lps']} LPs.",
        "",
        "| outcome | value |",
        "|---|---|",
        f"| orders committed / executed / cancelled | {s['orders']['committed']:,} / {s['orders']['executed']:,} / "
        f"{s['orders']['cancelled']:,} |",
        f"| liquidations (accounts) | {s['liquidations']:,} ({s['liquidated_accounts']:,}) |",
        f"| bankruptcies, bad debt | {s['bankruptcies']:,}, {s['bad_debt_usd']:,.2f} USD |",
        f"| insurance fund start / end | {s['insurance_fund']['start_usd']:,.2f} / {s['insurance_fund']['end_usd']:,.2f} USD |",
        f"| insurance fund donated / in (fee share + penalties) / out (bad debt) | "
        f"{s['insurance_fund']['donated_usd']:,.2f} / {s['insurance_fund']['in_usd']:,.2f} "
        f"({s['insurance_fund']['in_fee_share_usd']:,.2f} + {s['insurance_fund']['in_penalties_usd']:,.2f}) / "
        f"{s['insurance_fund']['out_usd']:,.2f} USD |",
        f"| smallest equity a liquidation left (% of notional closed) | "
        f"{_pct(s['margin']['min_equity_after_pct_of_notional'])} |",
        f"| largest price move between two oracle rounds | "
        + ", ".join(f"{symbols.get(int(m), m)} {v:.2f} %" for m, v in s["margin"]["max_round_move_pct"].items())
        + " |",
        f"| uncovered deficit peak / at the end | {s['uncovered_deficit']['peak_usd']:,.2f} / "
        f"{s['uncovered_deficit']['end_usd']:,.2f} USD |",
        f"| ADL targets (haircut) | {s['adl']['targets']:,} ({s['adl']['haircut_usd']:,.2f} USD) |",
        f"| write-offs | {s['write_offs']['count']:,} ({s['write_offs']['usd']:,.2f} USD) |",
        f"| liquidity vault value start / end | {s['liquidity_vault']['value_start_usd']:,.2f} / "
        f"{s['liquidity_vault']['value_end_usd']:,.2f} USD |",
        f"| LP PnL | {s['liquidity_vault']['lp_pnl_usd']:,.2f} USD |",
        f"| invariant checks passed | {sum(inv['checked'].values()):,} |",
        f"| checks waiting for liquidation capacity | {inv['capacity_waits']:,} |",
        "",
        "## Invariants",
        "",
        *[f"- {name}: {count:,} checks" for name, count in inv["checked"].items()],
        "",
    ]
    if s.get("keeper_errors"):
        lines += ["## Keeper errors (counted, not printed)", "",
                  *[f"- {what}: {n:,}" for what, n in s["keeper_errors"].items()], ""]
    if s["orders"]["cancel_reasons"]:
        lines += ["## Orders cancelled at execution", "",
                  *[f"- {reason}: {n:,}" for reason, n in s["orders"]["cancel_reasons"].items()], ""]
    if s["orders"]["refused_at_commit"]:
        lines += ["## Transactions refused", "",
                  *[f"- {reason}: {n:,}" for reason, n in s["orders"]["refused_at_commit"].items()], ""]
    return "\n".join(lines)
