"""The demo's report: the hourly records, the summary of a replay, the table, the chart.

`python -m perpdex.demo` prints the replay with the liquidation capacity and, beside it, the same replay
without it (docs/DECISIONS.md, "Crash replay: the capacity's cost"), and writes
reports/demo.json and reports/demo.png.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from perpdex.demo_checks import CapacityWaits, DeficitLog, EventLog, InvariantLog, usd
from perpdex.orders import KIND_NAMES

console = Console(width=120)


@dataclass
class StepRecord:
    time: int
    btc: float
    eth: float
    open_interest_usd: float
    insurance_fund: float
    liquidity_vault_value: float
    rounds: int
    liquidated: int
    adl_targets: int
    orders_executed: int
    orders_cancelled: int


@dataclass
class HourTally:
    """What one hour of the replay published and what the keeper did in it."""

    rounds: int = 0
    liquidated: int = 0
    adl_targets: int = 0
    orders_executed: int = 0
    orders_cancelled: int = 0

    def add(self, report) -> None:
        for name in ("liquidated", "adl_targets", "orders_executed", "orders_cancelled"):
            setattr(self, name, getattr(self, name) + getattr(report, name))


def record(d, timestamp: int, btc: float, eth: float, hour: "HourTally", lv_value: int) -> StepRecord:
    """The state at the end of an hour: the feeds' last answers and what the keeper did."""
    oi = d.exchange.open_interest_notional()
    return StepRecord(
        time=timestamp,
        btc=btc,
        eth=eth,
        open_interest_usd=usd(oi),
        insurance_fund=usd(d.vault.insurance_cash()),
        liquidity_vault_value=usd(lv_value),
        rounds=hour.rounds,
        liquidated=hour.liquidated,
        adl_targets=hour.adl_targets,
        orders_executed=hour.orders_executed,
        orders_cancelled=hour.orders_cancelled,
    )


def tally(items) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def order_summary(orders) -> dict:
    kinds = {e.order_id: KIND_NAMES[e.kind] for e in orders.committed}
    return {
        "committed": tally([kinds[e.order_id] for e in orders.committed]),
        "executed": tally([kinds[e.order_id] for e in orders.executed]),
        "cancelled_by_reason": tally([e.reason for e in orders.cancelled]),
        "stop_losses_fired": sum(1 for e in orders.executed if e.order_id in set(orders.stops)),
        "open_at_end": len(orders.committed) - len(orders.executed) - len(orders.cancelled),
        "execution_fees_usd": usd(sum(e.fee for e in orders.executed) + sum(e.fee for e in orders.cancelled)),
    }


def summarize(
    d, events: EventLog, deficits: DeficitLog, orders, lv_start: int, records, invariants: InvariantLog,
    waits: CapacityWaits, rounds: dict, seconds: float,
) -> dict:
    liquidations, bad_debt, adl = events.liquidations, events.bad_debt, events.adl
    trades, accruals = events.trades, events.accruals
    # the insurance deltas of Settled are the fee share (penalties move through PairSettled)
    fee_share = events.insurance_in
    funding_paid = sum(e.funding_paid for e in trades if e.funding_paid > 0)
    funding_received = -sum(e.funding_paid for e in trades if e.funding_paid < 0)
    lv_funding = -sum(e.liquidity_vault_funding for e in accruals)
    return {
        "hours": len(records),
        "rounds": rounds,
        "seconds": round(seconds, 1),
        "liquidations": len(liquidations),
        "fully_closed": sum(1 for e in liquidations if e.fully_closed),
        "keeper_rewards_usd": usd(sum(e.keeper_reward for e in liquidations)),
        "insurance_fund": {
            "in_fee_share_usd": usd(fee_share),
            "in_penalties_usd": usd(sum(e.to_insurance for e in liquidations)),
            "out_bad_debt_usd": usd(sum(e.covered_by_insurance for e in bad_debt)),
            "end_balance_usd": usd(d.vault.insurance_cash()),
        },
        "bankruptcies": len(bad_debt),
        "bad_debt_usd": usd(sum(e.deficit for e in bad_debt)),
        "uncovered_deficit_usd": usd(sum(e.uncovered for e in bad_debt)),
        "written_off_usd": usd(sum(e.amount for e in deficits.written_off)),
        "adl": {
            "targets": len(adl),
            "haircuts_usd": usd(sum(e.haircut for e in adl)),
            "by_trigger": {str(t): sum(1 for e in adl if e.trigger == t) for t in (1, 2)},
        },
        "funding": {
            "paid_by_positions_usd": usd(funding_paid),
            "received_by_positions_usd": usd(funding_received),
            "received_by_liquidity_vault_usd": usd(lv_funding),
        },
        "liquidity_vault": {
            "start_usd": usd(lv_start),
            "end_usd": usd(d.exchange.liquidity_vault_value()),
            "pnl_usd": usd(d.exchange.liquidity_vault_value() - lv_start),
        },
        "orders": order_summary(orders),
        "capacity_waits": waits.summary(),
        "invariants": invariants.checked,
        "invariants_held": True,
    }


def by_kind(counts: dict[str, int]) -> str:
    """`40 (24 market, 16 stop-loss)`."""
    return f"{sum(counts.values())} ({', '.join(f'{n} {kind}' for kind, n in counts.items())})"


def capacity_cost(with_capacity: dict, without: dict) -> dict:
    """The two replays side by side: the capacity's cost is the difference."""
    def figures(summary: dict) -> dict:
        return {
            "rounds": summary["rounds"]["published"],
            "liquidations": summary["liquidations"],
            "bankruptcies": summary["bankruptcies"],
            "bad_debt_usd": summary["bad_debt_usd"],
            "uncovered_deficit_usd": summary["uncovered_deficit_usd"],
            "written_off_usd": summary["written_off_usd"],
            "adl_haircuts_usd": summary["adl"]["haircuts_usd"],
            "liquidity_vault_pnl_usd": summary["liquidity_vault"]["pnl_usd"],
            "capacity_waits": summary["capacity_waits"],
            "seconds": summary["seconds"],
        }

    # `without` is `with_capacity` itself when no pass left anything for an extra round to do
    return {"with_capacity": figures(with_capacity), "without_capacity": figures(without),
            "without_replayed": without is not with_capacity}


def print_report(summary: dict) -> None:
    rounds = summary["rounds"]
    table = Table(title=f"perpdex crash replay: {summary['hours']} hours, {rounds['published']} oracle rounds "
                        f"in {summary['seconds']} s")
    table.add_column("")
    table.add_column("", justify="right")
    fund, lv = summary["insurance_fund"], summary["liquidity_vault"]
    rows = [
        ("oracle rounds: deviation / heartbeat", f"{rounds['deviation']} / {rounds['heartbeat']}"),
        ("liquidations (fully closed)", f"{summary['liquidations']} ({summary['fully_closed']})"),
        ("keeper rewards", f"{summary['keeper_rewards_usd']:,.2f} USD"),
        ("insurance fund in: fee share", f"{fund['in_fee_share_usd']:,.2f} USD"),
        ("insurance fund in: penalties", f"{fund['in_penalties_usd']:,.2f} USD"),
        ("insurance fund out: bad debt", f"{fund['out_bad_debt_usd']:,.2f} USD"),
        ("insurance fund at the end", f"{fund['end_balance_usd']:,.2f} USD"),
        ("bankruptcies / bad debt", f"{summary['bankruptcies']} / {summary['bad_debt_usd']:,.2f} USD"),
        ("uncovered by the insurance fund / written off", f"{summary['uncovered_deficit_usd']:,.2f} / "
                                                          f"{summary['written_off_usd']:,.2f} USD"),
        ("ADL targets / haircuts", f"{summary['adl']['targets']} / {summary['adl']['haircuts_usd']:,.2f} USD"),
        ("funding paid by positions", f"{summary['funding']['paid_by_positions_usd']:,.2f} USD"),
        ("funding received by positions", f"{summary['funding']['received_by_positions_usd']:,.2f} USD"),
        ("funding received by the LP vault", f"{summary['funding']['received_by_liquidity_vault_usd']:,.2f} USD"),
        ("liquidity vault PnL", f"{lv['pnl_usd']:+,.2f} USD ({lv['start_usd']:,.0f} -> {lv['end_usd']:,.0f})"),
    ]
    o = summary["orders"]
    rows += [
        ("orders committed", by_kind(o["committed"])),
        ("orders executed by the keeper", by_kind(o["executed"])),
        ("stop-losses fired", f"{o['stop_losses_fired']}"),
        *((f"orders cancelled: {reason}", f"{n}") for reason, n in o["cancelled_by_reason"].items()),
        ("orders still open at the end", f"{o['open_at_end']}"),
        ("execution fees to the keeper", f"{o['execution_fees_usd']:,.2f} USD"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    cost = summary.get("capacity_cost")
    if cost:
        print_capacity_cost(cost)
    checks = ", ".join(f"{name} ({count}x)" for name, count in summary["invariants"].items())
    waits = summary["capacity_waits"]
    console.print(f"[green]invariants held[/green] after every keeper pass: {checks}; the one exception to "
                  f"invariant 4 (negative equity while every market of the account has no liquidation capacity "
                  f"left at its index) at {waits['checks_waiting']} checks, cleared before the end")


def print_capacity_cost(cost: dict) -> None:
    on, off = cost["with_capacity"], cost["without_capacity"]
    table = Table(title="the liquidation capacity's cost (docs/DECISIONS.md, Crash replay)")
    table.add_column("")
    table.add_column("with the capacity", justify="right")
    table.add_column("without (a new index per extra round)", justify="right")
    def both(key: str, fmt: str) -> tuple[str, str]:
        return fmt.format(on[key]), fmt.format(off[key])
    wait_on, wait_off = on["capacity_waits"], off["capacity_waits"]
    rows = [
        ("oracle rounds (extra rounds without)", *both("rounds", "{:,}")),
        ("liquidations", *both("liquidations", "{:,}")),
        ("bankruptcies", *both("bankruptcies", "{:,}")),
        ("bad debt", *both("bad_debt_usd", "{:,.2f} USD")),
        ("uncovered by the insurance fund", *both("uncovered_deficit_usd", "{:,.2f} USD")),
        ("ADL haircuts", *both("adl_haircuts_usd", "{:,.2f} USD")),
        ("written off to the LP vault", *both("written_off_usd", "{:,.2f} USD")),
        ("LP vault PnL", *both("liquidity_vault_pnl_usd", "{:+,.2f} USD")),
        ("accounts waiting for capacity at negative equity (episodes)",
         f"{wait_on['accounts']} ({wait_on['episodes']})", f"{wait_off['accounts']} ({wait_off['episodes']})"),
        ("worst equity while waiting", f"{wait_on['worst_equity_usd']:,.2f} USD", f"{wait_off['worst_equity_usd']:,.2f} USD"),
        ("longest wait", f"{wait_on['longest_wait_seconds'] / 60:,.1f} min", f"{wait_off['longest_wait_seconds'] / 60:,.1f} min"),
        ("replay time", *both("seconds", "{:,.1f} s")),
    ]
    if not cost["without_replayed"]:
        rows[-1] = ("replay time", f"{on['seconds']:,.1f} s", "not replayed: no round left work undone")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def write_outputs(summary: dict, records: list[StepRecord], reports: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports.mkdir(exist_ok=True)
    (reports / "demo.json").write_text(json.dumps({"summary": summary, "steps": [asdict(r) for r in records]}, indent=2))
    times = [datetime.fromtimestamp(r.time, timezone.utc) for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(times, [r.btc for r in records], label="BTC index")
    axes[0].set_ylabel("BTC (USD)")
    twin = axes[0].twinx()
    twin.plot(times, [r.eth for r in records], color="tab:orange", label="ETH index")
    twin.set_ylabel("ETH (USD)")
    axes[1].plot(times, [r.open_interest_usd / 1e6 for r in records], color="tab:green")
    axes[1].set_ylabel("open interest (M USD)")
    axes[2].plot(times, [r.insurance_fund for r in records], color="tab:red")
    axes[2].set_ylabel("insurance fund (USD)")
    for r, t in zip(records, times):
        if r.liquidated:
            axes[1].axvline(t, color="grey", alpha=0.2)
    axes[0].set_title("perpdex: March 2020 crash replay")
    fig.tight_layout()
    fig.savefig(reports / "demo.png", dpi=100)
    console.print(f"wrote {reports / 'demo.json'} and {reports / 'demo.png'}")
