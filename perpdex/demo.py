"""`make demo`: the March 2020 crash, replayed hour by hour on ape's embedded chain.

Deploys perpdex, lets an LP seed the liquidity vault, opens positions for two dozen traders
(2x-25x, longs and shorts, BTC and ETH), then replays 8-16 March 2020 from
../shared/data/prices: every hour the oracle publishes the close, the keeper
(`perpdex.keeper.Keeper`) liquidates and auto-deleverages, and DESIGN.md's invariants are
checked from on-chain state. Prints the report and writes reports/demo.json and
reports/demo.png.
"""

from __future__ import annotations

import csv
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perpdex.fixed_point import WAD
from perpdex.snapshot import apply_accounts, apply_markets, load_globals, load_model

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "prices"
REPORTS = ROOT / "reports"
START, END = datetime(2020, 3, 8, tzinfo=timezone.utc), datetime(2020, 3, 17, tzinfo=timezone.utc)
HOUR = 3600
LEVERAGES = (2, 3, 5, 8, 10, 12, 15, 20, 25)
TRADERS = 24
COLLATERAL_USD = 10_000
LP_USD = 3_000_000
WHALE_USD = 60_000  # a 25x whale long, opened just before the steepest hour of the window
WHALE_TIME = int(datetime(2020, 3, 12, 9, tzinfo=timezone.utc).timestamp())  # then -18 % in one hour
console = Console(width=120)


@dataclass
class StepRecord:
    time: int
    btc: float
    eth: float
    open_interest_usd: float
    insurance_fund: float
    liquidity_vault_value: float
    liquidated: int
    adl_targets: int


@dataclass
class InvariantLog:
    checked: dict[str, int] = field(default_factory=dict)

    def ok(self, name: str, condition: bool, detail: str = "") -> None:
        if not condition:
            raise AssertionError(f"invariant broken: {name} {detail}")
        self.checked[name] = self.checked.get(name, 0) + 1


def load_path() -> list[tuple[int, float, float]]:
    """(timestamp, BTC close, ETH close) for every hour of 8-16 March 2020."""
    def closes(name: str) -> dict[int, float]:
        with open(DATA / name) as f:
            return {int(r["timestamp"]): float(r["close"]) for r in csv.DictReader(f)}

    btc, eth = closes("btc-usdt_2020-03_1h.csv"), closes("eth-usdt_2020-03_1h.csv")
    window = range(int(START.timestamp()), int(END.timestamp()), HOUR)
    return [(t, btc[t], eth[t]) for t in window if t in btc and t in eth]


def usd(wad: int) -> float:
    return wad / WAD


def run(steps: int | None = None) -> dict:
    warnings.filterwarnings("ignore")
    from ape import accounts, chain, networks
    from ape.logging import logger

    from perpdex.deploy import FEED_DECIMALS, deploy_local
    from perpdex.keeper import Keeper

    logger.set_level(logging.WARNING)
    logging.getLogger("perpdex").setLevel(logging.WARNING)
    path = load_path()[:steps]
    started = time.perf_counter()

    with networks.parse_network_choice("ethereum:local:test"):
        owner, lp, keeper_account = accounts.test_accounts[:3]
        console.rule("[bold]perpdex: the March 2020 crash, hour by hour")
        d = deploy_local(owner)
        d.liquidator.set_adl_keeper(keeper_account, True, sender=owner)
        first_block = chain.blocks.head.number

        def publish(btc: float, eth: float) -> None:
            d.aggregators[0][0].update_answer(int(btc * 10**FEED_DECIMALS), sender=owner)
            d.aggregators[1][0].update_answer(int(eth * 10**FEED_DECIMALS), sender=owner)

        def fund(who, amount_usd: int, spender) -> int:
            amount = amount_usd * 10**6
            d.collateral.mint(who, amount, sender=owner)
            d.collateral.approve(spender.address, 2**256 - 1, sender=who)
            return amount

        _, btc0, eth0 = path[0]
        publish(btc0, eth0)
        d.liquidity_vault.deposit(fund(lp, LP_USD, d.liquidity_vault), lp, sender=lp)
        lv_start = d.exchange.liquidity_vault_value()

        traders, leverages = [], []
        for i in range(TRADERS):
            trader = accounts.test_accounts.generate_test_account()
            owner.transfer(trader, 10**18)
            leverage = LEVERAGES[i % len(LEVERAGES)]
            side = -1 if i % 3 == 2 else 1  # two longs for every short, in both markets: a long skew
            market, price = (0, btc0) if i % 2 == 0 else (1, eth0)
            d.vault.deposit(0, fund(trader, COLLATERAL_USD, d.vault), sender=trader)
            size = largest_size(d, (trader.address, 0), market, COLLATERAL_USD * leverage / price * side, chain)
            bound = 2**256 - 1 if side > 0 else 0
            d.exchange.trade(0, market, size, bound, sender=trader)
            traders.append((trader.address, 0))
            leverages.append(abs(size) * price / WAD / COLLATERAL_USD)
        known = traders + [(keeper_account.address, 0)]
        console.print(
            f"{TRADERS} traders opened {min(leverages):.1f}x-{max(leverages):.1f}x positions; LP seeded {LP_USD:,} USDC; "
            f"BTC {btc0:,.0f}, ETH {eth0:,.2f} on {START:%d %b %Y}"
        )

        # stress: the insurance fund starts the crash empty (the owner took the fee share out),
        # so bad debt it cannot cover goes to auto-deleveraging
        surplus = d.insurance_fund.surplus()
        if surplus:
            d.insurance_fund.withdraw_surplus(owner, surplus, sender=owner)
        globals_ = load_globals(d.exchange)
        keeper = Keeper(d, keeper_account)
        risk_log: list[tuple[int, int, set]] = []
        events = EventLog()
        invariants = InvariantLog()
        records: list[StepRecord] = []
        last_block = chain.blocks.head.number
        settlements = 2 * TRADERS  # every trade and accrual so far may have rounded once
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("replaying", total=len(path))
            for step, (timestamp, btc, eth) in enumerate(path):
                if step:
                    chain.pending_timestamp += HOUR
                    publish(btc, eth)
                if timestamp == WHALE_TIME:
                    whale = accounts.test_accounts.generate_test_account()
                    owner.transfer(whale, 10**18)
                    d.vault.deposit(0, fund(whale, WHALE_USD, d.vault), sender=whale)
                    size = largest_size(d, (whale.address, 0), 0, WHALE_USD * 25 / btc, chain)
                    d.exchange.trade(0, 0, size, 2**256 - 1, sender=whale)
                    traders.append((whale.address, 0))
                    known.append((whale.address, 0))
                before = load_model(d, known, chain.blocks.head.timestamp, globals_)  # eth_call's clock
                at_risk = {a for a in traders if before.is_liquidatable(a)}
                report = keeper.run_once()
                head = chain.blocks.head.number
                risk_log.append((last_block + 1, head, at_risk))
                events.collect(d, last_block + 1, head)
                settlements, lv_value = check_invariants(
                    d, known, invariants, settlements, last_block + 1, head, chain.blocks.head.timestamp, globals_
                )
                last_block = head
                records.append(record(d, timestamp, btc, eth, report, lv_value))
                progress.update(task, advance=1, description=f"{datetime.fromtimestamp(timestamp, timezone.utc):%d %b %H:%M}")

        check_actions(events, risk_log, invariants)
        summary = summarize(d, events, lv_start, records, invariants, time.perf_counter() - started)
    print_report(summary)
    write_outputs(summary, records)
    return summary


def largest_size(d, account, market: int, nominal: float, chain) -> int:
    """The largest size up to `nominal` (base units, signed) that the exchange accepts now:
    fees and the price impact of the current skew eat into the initial margin. Found with the
    reference model, so no transaction is sent that would revert."""
    import copy

    from perpdex.model import ModelRevert

    base = load_model(d, [account], chain.pending_timestamp)
    wanted = int(abs(nominal) * WAD)
    side = 1 if nominal > 0 else -1
    low, high = 0, wanted
    while high - low > WAD // 1000:
        mid = (low + high) // 2
        try:
            copy.deepcopy(base).trade(account, market, side * mid, 2**256 - 1 if side > 0 else 0)
            low = mid
        except ModelRevert:
            high = mid
    return side * low


def check_invariants(
    d, known, invariants: InvariantLog, settlements: int, from_block: int, to_block: int, now: int, globals_
) -> tuple[int, int]:
    """DESIGN.md invariants 1-4 from on-chain state after the keeper acted. `settlements`
    bounds the rounded funding settlements so far; returns the new bound and the liquidity
    vault's value."""
    accounts = d.lens.accounts(known)
    system = [d.vault.liquidity_cash(), d.vault.insurance_cash(), d.vault.fee_cash(), d.vault.funding_pool_cash()]
    balance = d.collateral.balanceOf(d.vault.address) * 10**12
    invariants.ok("1 ledger balances exactly", sum(int(a.cash) for a in accounts) + sum(system) == balance)

    markets = d.lens.markets()
    for m in markets:
        sizes = [int(p.size) for a in accounts for p in a.positions if int(p.market_id) == int(m.market_id)]
        bases = [int(p.open_notional) for a in accounts for p in a.positions if int(p.market_id) == int(m.market_id)]
        invariants.ok(
            "2 zero-sum positions",
            sum(s for s in sizes if s > 0) == m.long_oi and -sum(s for s in sizes if s < 0) == m.short_oi
            and sum(bases) == m.open_notional_sum,
        )

    settlements += len(list(d.exchange.Trade.range(from_block, to_block + 1)))
    settlements += len(list(d.exchange.FundingAccrued.range(from_block, to_block + 1)))
    unsettled = 0
    for m in markets:
        fpu = d.exchange.funding_per_unit(m.market_id)
        unsettled += -(int(m.long_oi) - int(m.short_oi)) * (fpu - int(m.funding_per_unit))
        for a in accounts:
            for p in a.positions:
                if int(p.market_id) == int(m.market_id):
                    unsettled += int(p.size) * (fpu - int(p.funding_snapshot))
    dust = system[3] * WAD + unsettled
    invariants.ok("3 zero-sum funding", 0 <= dust <= settlements * WAD, f"dust {dust}")

    from perpdex.model import ExchangeModel

    model = ExchangeModel(token_decimals=6, globals=globals_, now=now)
    apply_markets(model, markets)
    apply_accounts(model, accounts)
    deficits = sum(d.liquidator.uncovered_deficit(int(m.market_id)) for m in markets)
    bankrupt = 0
    for account in known:
        view = model.account_view(account)
        if view.equity < 0:
            invariants.ok("4 solvency after keepers", not model.open_markets(account), f"{account} still open")
            bankrupt += -view.cash
    invariants.ok("4 solvency after keepers", bankrupt <= deficits + 1, f"{bankrupt} vs {deficits}")
    # equity nets PnL and funding across holders, so the claims add up to the balance, plus
    # whatever bad debt is still waiting for ADL
    claims = sum(max(model.account_view(a).equity, 0) for a in known)
    lv_value = d.exchange.liquidity_vault_value()
    claims += max(lv_value, 0) + max(system[1], 0) + max(system[2], 0)
    invariants.ok("4 every positive claim is payable", claims <= balance + deficits, f"{claims} vs {balance}")
    return settlements, lv_value


@dataclass
class EventLog:
    """The replay's money-moving events, gathered step by step over the few new blocks."""

    liquidations: list = field(default_factory=list)
    bad_debt: list = field(default_factory=list)
    adl: list = field(default_factory=list)
    trades: list = field(default_factory=list)
    accruals: list = field(default_factory=list)
    insurance_in: int = 0

    def collect(self, d, first: int, last: int) -> None:
        blocks = (first, last + 1)
        self.liquidations += d.liquidator.Liquidation.range(*blocks)
        self.bad_debt += d.liquidator.BadDebt.range(*blocks)
        self.adl += d.liquidator.AutoDeleveraged.range(*blocks)
        self.trades += d.exchange.Trade.range(*blocks)
        self.accruals += d.exchange.FundingAccrued.range(*blocks)
        self.insurance_in += sum(e.insurance for e in d.vault.Settled.range(*blocks) if e.insurance > 0)


def check_actions(events: EventLog, risk_log, invariants: InvariantLog) -> None:
    """Invariant 5 over the whole replay: every liquidation hit an account that was unhealthy
    when the keeper's pass began; no ADL took a loss-maker or more than the profit."""
    for first, last, at_risk in risk_log:
        for event in events.liquidations:
            if first <= event.block_number <= last:
                invariants.ok("5 no wrongful liquidation", (event.owner, event.sub_account) in at_risk)
    for event in events.adl:
        invariants.ok("5 ADL never takes principal", event.realized_pnl > 0 and event.haircut <= event.realized_pnl)


def record(d, timestamp: int, btc: float, eth: float, report, lv_value: int) -> StepRecord:
    oi = d.exchange.open_interest_notional()
    return StepRecord(
        time=timestamp,
        btc=btc,
        eth=eth,
        open_interest_usd=usd(oi),
        insurance_fund=usd(d.vault.insurance_cash()),
        liquidity_vault_value=usd(lv_value),
        liquidated=report.liquidated,
        adl_targets=report.adl_targets,
    )


def summarize(d, events: EventLog, lv_start: int, records, invariants: InvariantLog, seconds: float) -> dict:
    liquidations, bad_debt, adl = events.liquidations, events.bad_debt, events.adl
    trades, accruals = events.trades, events.accruals
    # the insurance deltas of Settled are the fee share (penalties move through PairSettled)
    fee_share = events.insurance_in
    funding_paid = sum(e.funding_paid for e in trades if e.funding_paid > 0)
    funding_received = -sum(e.funding_paid for e in trades if e.funding_paid < 0)
    lv_funding = -sum(e.liquidity_vault_funding for e in accruals)
    return {
        "steps": len(records),
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
        "uncovered_deficit_usd": usd(sum(e.uncovered for e in bad_debt)),
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
        "invariants": invariants.checked,
        "invariants_held": True,
    }


def print_report(summary: dict) -> None:
    table = Table(title=f"perpdex crash replay: {summary['steps']} hourly steps in {summary['seconds']} s")
    table.add_column("")
    table.add_column("", justify="right")
    fund, lv = summary["insurance_fund"], summary["liquidity_vault"]
    rows = [
        ("liquidations (fully closed)", f"{summary['liquidations']} ({summary['fully_closed']})"),
        ("keeper rewards", f"{summary['keeper_rewards_usd']:,.2f} USD"),
        ("insurance fund in: fee share", f"{fund['in_fee_share_usd']:,.2f} USD"),
        ("insurance fund in: penalties", f"{fund['in_penalties_usd']:,.2f} USD"),
        ("insurance fund out: bad debt", f"{fund['out_bad_debt_usd']:,.2f} USD"),
        ("insurance fund at the end", f"{fund['end_balance_usd']:,.2f} USD"),
        ("bankruptcies / uncovered deficit", f"{summary['bankruptcies']} / {summary['uncovered_deficit_usd']:,.2f} USD"),
        ("ADL targets / haircuts", f"{summary['adl']['targets']} / {summary['adl']['haircuts_usd']:,.2f} USD"),
        ("funding paid by positions", f"{summary['funding']['paid_by_positions_usd']:,.2f} USD"),
        ("funding received by positions", f"{summary['funding']['received_by_positions_usd']:,.2f} USD"),
        ("funding received by the LP vault", f"{summary['funding']['received_by_liquidity_vault_usd']:,.2f} USD"),
        ("liquidity vault PnL", f"{lv['pnl_usd']:+,.2f} USD ({lv['start_usd']:,.0f} -> {lv['end_usd']:,.0f})"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    checks = ", ".join(f"{name} ({count}x)" for name, count in summary["invariants"].items())
    console.print(f"[green]invariants held[/green] at every step: {checks}")


def write_outputs(summary: dict, records: list[StepRecord]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "demo.json").write_text(json.dumps({"summary": summary, "steps": [asdict(r) for r in records]}, indent=2))
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
    fig.savefig(REPORTS / "demo.png", dpi=100)
    console.print(f"wrote {REPORTS / 'demo.json'} and {REPORTS / 'demo.png'}")


if __name__ == "__main__":
    run()
