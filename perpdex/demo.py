"""`make demo`: the March 2020 crash, replayed hour by hour on ape's embedded chain.

Deploys perpdex, lets an LP seed the liquidity vault, and has two dozen traders (2x-25x, longs
and shorts, BTC and ETH) commit market orders, which the keeper (`perpdex.keeper.Keeper`)
executes at the next oracle round; half of them then set stop-losses. It replays 8-16 March
2020 from data/prices: every hour the oracle publishes the close and the keeper
liquidates, auto-deleverages, fires the stop-losses the close crossed and executes or cancels
the dip buyers' market orders; DESIGN.md's invariants are checked from on-chain state after
every pass. Prints the report (with the orders committed, executed and cancelled by reason)
and writes reports/demo.json and reports/demo.png.
"""

from __future__ import annotations

import csv
from collections import Counter
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
from perpdex.orders import KIND_NAMES, KIND_STOP_LOSS
from perpdex.snapshot import apply_accounts, apply_markets, load_globals, load_model

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "prices"
REPORTS = ROOT / "reports"
START, END = datetime(2020, 3, 8, tzinfo=timezone.utc), datetime(2020, 3, 17, tzinfo=timezone.utc)
HOUR = 3600
LEVERAGES = (2, 3, 5, 8, 10, 12, 15, 20, 25)
TRADERS = 24
COLLATERAL_USD = 10_000
LP_USD = 3_000_000
WHALE_USD = 60_000  # a 25x whale long, opened just before the steepest hour of the window
WHALE_TIME = int(datetime(2020, 3, 12, 9, tzinfo=timezone.utc).timestamp())  # then -18 % in one hour
# dip buyers: every 6 hours of the crash each commits a BTC market buy (a third of its collateral,
# 1 % slippage) half-way to the next hourly round; the last one gives its orders 15 minutes
DIP_BUYERS = 3
DIP_USD = 20_000
DIP_START = int(datetime(2020, 3, 12, 0, tzinfo=timezone.utc).timestamp())
DIP_END = int(datetime(2020, 3, 14, 6, tzinfo=timezone.utc).timestamp())
DIP_EVERY = 6 * HOUR
MAX_NUDGES = 40  # rounds per step at most when the capacity is lifted (40 x 40 BTC, 40 x 800 ETH)
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
    orders_executed: int
    orders_cancelled: int


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
    from ape import networks
    from ape.logging import logger

    logger.set_level(logging.WARNING)
    logging.getLogger("perpdex").setLevel(logging.WARNING)
    path = load_path()[:steps]

    with networks.parse_network_choice("ethereum:local:test"):
        console.rule("[bold]perpdex: the March 2020 crash, hour by hour")
        summary, records = replay(path, unbounded=False)
        console.print("the same replay again, the liquidation capacity lifted (see docs/DECISIONS.md) ...")
        without, _ = replay(path, unbounded=True)
    summary["capacity_cost"] = capacity_cost(summary, without)
    print_report(summary)
    write_outputs(summary, records)
    return summary


def replay(path: list[tuple[int, float, float]], unbounded: bool) -> tuple[dict, list[StepRecord]]:
    """One replay on a fresh deployment. `unbounded`: after each keeper pass, while an account
    is still liquidatable or a deficit outstanding, the feeds publish the same close again a
    second later, 1e-8 USD higher each time: the capacity is per index, so each such round
    lets the keeper close another capacity's worth at what is the same price to the cent."""
    from ape import accounts, chain

    from perpdex.deploy import FEED_DECIMALS, deploy_local
    from perpdex.keeper import Keeper

    started = time.perf_counter()
    owner, lp, keeper_account = accounts.test_accounts[:3]
    d = deploy_local(owner)
    d.liquidator.set_adl_keeper(keeper_account, True, sender=owner)
    fee = d.order_book.order_params().execution_fee

    def publish(btc: float, eth: float, nudge: int = 0) -> None:
        d.aggregators[0][0].update_answer(int(btc * 10**FEED_DECIMALS) + nudge, sender=owner)
        d.aggregators[1][0].update_answer(int(eth * 10**FEED_DECIMALS) + nudge, sender=owner)

    def fund(who, amount_usd: int, spender) -> int:
        amount = amount_usd * 10**6
        d.collateral.mint(who, amount, sender=owner)
        d.collateral.approve(spender.address, 2**256 - 1, sender=who)
        return amount

    def newcomer(collateral_usd: int):
        who = accounts.test_accounts.generate_test_account()
        owner.transfer(who, 10**18)
        d.vault.deposit(0, fund(who, collateral_usd, d.vault), sender=who)
        return who

    _, btc0, eth0 = path[0]
    publish(btc0, eth0)
    # LPs enter through two-step requests; the owner alone may seed the vault at once
    d.liquidity_vault.deposit(fund(owner, LP_USD, d.liquidity_vault), lp, sender=owner)
    lv_start = d.exchange.liquidity_vault_value()
    globals_ = load_globals(d.exchange)
    keeper = Keeper(d, keeper_account)
    orders = OrderLog()

    # every trader commits a market order sized on a plan of the fills before it (the
    # keeper executes them in commit order at the next round, at this same price)
    traders, wallets, leverages, sides = [], [], [], []
    first_block = chain.blocks.head.number + 1
    plan = load_model(d, [], chain.pending_timestamp, globals_)
    for i in range(TRADERS):
        trader = newcomer(COLLATERAL_USD)
        leverage = LEVERAGES[i % len(LEVERAGES)]
        side = -1 if i % 3 == 2 else 1  # two longs for every short, in both markets: a long skew
        market, price = (0, btc0) if i % 2 == 0 else (1, eth0)
        account = (trader.address, 0)
        plan.cash[account] = COLLATERAL_USD * WAD - fee  # the execution fee is escrowed at commit
        size = largest_size(plan, account, market, COLLATERAL_USD * leverage / price * side)
        plan.trade(account, market, size, 2**256 - 1 if size > 0 else 0)
        orders.commit(d, trader, market, size, slippage_bound(plan.index[market], size, 0.01))
        traders.append(account)
        wallets.append(trader)
        sides.append(side)
    known = traders + [(keeper_account.address, 0)]

    # stress: the insurance fund starts the crash empty (the owner took the fee share out),
    # so bad debt it cannot cover goes to auto-deleveraging
    surplus = d.insurance_fund.surplus()
    if surplus:
        d.insurance_fund.withdraw_surplus(owner, surplus, sender=owner)
    risk_log: list[tuple[int, int, set]] = []
    events = EventLog()
    deficits = DeficitLog()
    invariants = InvariantLog()
    records: list[StepRecord] = []
    state = {"last_block": first_block - 1, "settlements": 0}

    def keeper_pass():
        """One keeper pass, its events collected and DESIGN.md's invariants checked."""
        before = load_model(d, known, chain.blocks.head.timestamp, globals_)  # eth_call's clock
        at_risk = {a for a in known if before.is_liquidatable(a)}
        report = keeper.run_once()
        head, first = chain.blocks.head.number, state["last_block"] + 1
        risk_log.append((first, head, at_risk))
        logs = fetch_events(d, first, head)
        events.collect(logs)
        orders.collect(logs)
        deficits.collect(logs)
        state["settlements"], lv_value = check_invariants(
            d, known, invariants, state["settlements"], logs, chain.blocks.head.timestamp, globals_, orders,
            deficits,
        )
        state["last_block"] = head
        return report, lv_value

    def unbounded_pass(btc: float, eth: float, report, lv_value: int):
        """Without the capacity: new rounds at the same close (+1e-8 USD each) until no account
        is liquidatable and no deficit is outstanding; the passes' counts added up."""
        for nudge in range(1, MAX_NUDGES + 1):
            pending = any(d.liquidator.is_liquidatable(*a) for a in known)
            if not pending and d.liquidator.total_uncovered_deficit() == 0:
                break
            chain.pending_timestamp += 1
            publish(btc, eth, nudge)
            more, lv_value = keeper_pass()
            for name in ("liquidated", "adl_targets", "orders_executed", "orders_cancelled"):
                setattr(report, name, getattr(report, name) + getattr(more, name))
        return report, lv_value

    def heartbeat_round(btc: float, eth: float) -> None:
        """The feeds publish the same answers again a few seconds later: the round the
        market orders committed just before execute at (a devnet pusher does this)."""
        chain.pending_timestamp += 5
        publish(btc, eth)

    heartbeat_round(btc0, eth0)
    keeper_pass()
    fills = {(e.owner, e.sub_account): e for e in orders.executed}
    assert set(fills) == set(traders), "every opening order fills"
    for i, account in enumerate(traders):
        size = d.exchange.position_state(*account, i % 2)[0]
        leverages.append(abs(size) * (btc0 if i % 2 == 0 else eth0) / WAD / COLLATERAL_USD)
        if i % 2 == 0 or i % 3 == 2:  # every BTC trader and every short: a stop at half the margin lost
            entry = fills[account].fill_price
            trigger = int(entry * (1 - sides[i] * 0.5 / leverages[-1]))
            orders.commit_stop(d, wallets[i], i % 2, -size, trigger, slippage_bound(trigger, -size, 0.2))
    console.print(
        f"{TRADERS} traders opened {min(leverages):.1f}x-{max(leverages):.1f}x positions through market orders, "
        f"{len(orders.stops)} set stop-losses; LP seeded {LP_USD:,} USDC; "
        f"BTC {btc0:,.0f}, ETH {eth0:,.2f} on {START:%d %b %Y}"
    )

    dip_buyers = [newcomer(DIP_USD) for _ in range(DIP_BUYERS)]
    known += [(b.address, 0) for b in dip_buyers]
    t0 = chain.pending_timestamp
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=len(path))
        for step, (timestamp, btc, eth) in enumerate(path):
            if step:
                chain.pending_timestamp = max(t0 + step * HOUR, chain.pending_timestamp)
                publish(btc, eth)
            report, lv_value = keeper_pass()
            if unbounded:
                report, lv_value = unbounded_pass(btc, eth, report, lv_value)
            if timestamp == WHALE_TIME:
                whale = newcomer(WHALE_USD)
                account = (whale.address, 0)
                plan = load_model(d, [account], chain.pending_timestamp, globals_)
                plan.cash[account] -= fee
                size = largest_size(plan, account, 0, WHALE_USD * 25 / btc)
                orders.commit(d, whale, 0, size, slippage_bound(plan.index[0], size, 0.01))
                traders.append(account)
                known.append(account)
                heartbeat_round(btc, eth)
                report, lv_value = keeper_pass()
                if unbounded:
                    report, lv_value = unbounded_pass(btc, eth, report, lv_value)
            if (timestamp - DIP_START) % DIP_EVERY == 0 and DIP_START <= timestamp < DIP_END:
                # dip buyers commit half-way to the next hourly round, at 1 % slippage
                chain.pending_timestamp = max(t0 + step * HOUR + HOUR // 2, chain.pending_timestamp)
                for j, buyer in enumerate(dip_buyers):
                    size = int(DIP_USD / 3 / btc * WAD)
                    expiry = chain.pending_timestamp + 900 if j == DIP_BUYERS - 1 else 0  # the impatient one
                    orders.commit(d, buyer, 0, size, slippage_bound(int(btc * WAD), size, 0.01), expiry)
            records.append(record(d, timestamp, btc, eth, report, lv_value))
            progress.update(task, advance=1, description=f"{datetime.fromtimestamp(timestamp, timezone.utc):%d %b %H:%M}")

    check_actions(events, risk_log, invariants)
    summary = summarize(d, events, deficits, orders, lv_start, records, invariants, time.perf_counter() - started)
    return summary, records


def capacity_cost(with_capacity: dict, without: dict) -> dict:
    """Bad debt of the replay with the liquidation capacity and of the replay without it."""
    def figures(summary: dict) -> dict:
        return {
            "liquidations": summary["liquidations"],
            "bankruptcies": summary["bankruptcies"],
            "bad_debt_usd": summary["bad_debt_usd"],
            "uncovered_deficit_usd": summary["uncovered_deficit_usd"],
            "written_off_usd": summary["written_off_usd"],
            "liquidity_vault_pnl_usd": summary["liquidity_vault"]["pnl_usd"],
        }

    return {"with_capacity": figures(with_capacity), "without_capacity": figures(without),
            "seconds_without": without["seconds"]}


def slippage_bound(price: int, size: int, slippage: float) -> int:
    """The acceptable price `slippage` away from `price` (WAD) against the order's side."""
    return int(price * (1 + slippage)) if size > 0 else int(price * (1 - slippage))


def largest_size(model, account, market: int, nominal: float) -> int:
    """The largest size up to `nominal` (base units, signed) that the exchange accepts from
    `account` on `model`, less 0.5 % for the funding that accrues until its execution: fees and
    the price impact of the current skew eat into the initial margin. Found with the reference
    model, so that the order fills."""
    import copy

    from perpdex.model import ModelRevert

    wanted = int(abs(nominal) * WAD)
    side = 1 if nominal > 0 else -1
    low, high = 0, wanted
    while high - low > WAD // 1000:
        mid = (low + high) // 2
        try:
            copy.deepcopy(model).trade(account, market, side * mid, 2**256 - 1 if side > 0 else 0)
            low = mid
        except ModelRevert:
            high = mid
    return side * (low * 995 // 1000)


@dataclass
class OrderLog:
    """The orders the demo's traders commit, and the order book's events."""

    stops: list[int] = field(default_factory=list)
    committed: list = field(default_factory=list)
    executed: list = field(default_factory=list)
    cancelled: list = field(default_factory=list)

    def commit(self, d, who, market: int, size: int, acceptable: int, expiry: int = 0) -> int:
        receipt = d.order_book.commit_order(0, market, size, acceptable, 0, 0, False, expiry, sender=who)
        return receipt.decode_logs(d.order_book.OrderCommitted)[0].order_id

    def commit_stop(self, d, who, market: int, size: int, trigger: int, acceptable: int) -> int:
        receipt = d.order_book.commit_order(0, market, size, acceptable, KIND_STOP_LOSS, trigger, True, 0, sender=who)
        order_id = receipt.decode_logs(d.order_book.OrderCommitted)[0].order_id
        self.stops.append(order_id)
        return order_id

    def collect(self, logs: dict[str, list]) -> None:
        self.committed += logs["OrderCommitted"]
        self.executed += logs["OrderExecuted"]
        self.cancelled += logs["OrderCancelled"]

    def escrowed(self) -> int:
        """Fees of the orders still open: what the vault's order escrow must hold."""
        return sum(e.fee for e in self.committed) - sum(e.fee for e in self.executed) - sum(
            e.fee for e in self.cancelled
        )


def check_invariants(
    d, known, invariants: InvariantLog, settlements: int, logs: dict[str, list], now: int, globals_, orders: OrderLog,
    deficits: DeficitLog,
) -> tuple[int, int]:
    """DESIGN.md invariants 1-4 from on-chain state after the keeper acted. `settlements`
    bounds the rounded funding settlements so far; returns the new bound and the liquidity
    vault's value."""
    accounts = d.lens.accounts(known)
    system = [d.vault.liquidity_cash(), d.vault.insurance_cash(), d.vault.fee_cash(), d.vault.funding_pool_cash()]
    escrow = d.vault.order_escrow_cash()
    balance = d.collateral.balanceOf(d.vault.address) * 10**12
    invariants.ok("1 ledger balances exactly", sum(int(a.cash) for a in accounts) + sum(system) + escrow == balance)
    invariants.ok("6 order escrow holds the fees of the open orders", escrow == orders.escrowed(), f"{escrow}")

    markets = d.lens.markets()
    for m in markets:
        sizes = [int(p.size) for a in accounts for p in a.positions if int(p.market_id) == int(m.market_id)]
        bases = [int(p.open_notional) for a in accounts for p in a.positions if int(p.market_id) == int(m.market_id)]
        invariants.ok(
            "2 zero-sum positions",
            sum(s for s in sizes if s > 0) == m.long_oi and -sum(s for s in sizes if s < 0) == m.short_oi
            and sum(bases) == m.open_notional_sum,
        )

    settlements += len(logs["Trade"]) + len(logs["FundingAccrued"])
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
    check_solvency(d, known, model, markets, invariants, deficits, now, balance, system)
    return settlements, d.exchange.liquidity_vault_value()


@dataclass
class DeficitLog:
    """The accounts and markets with a deficit ever recorded (their records are read back)."""

    recorded: set = field(default_factory=set)
    written_off: list = field(default_factory=list)

    def collect(self, logs: dict[str, list]) -> None:
        self.recorded |= {(e.owner, e.sub_account, e.market_id) for e in logs["DeficitRecorded"]}
        self.written_off += logs["DeficitWrittenOff"]


def check_solvency(d, known, model, markets, invariants: InvariantLog, deficits: DeficitLog, now: int, balance: int,
                   system: list[int]) -> None:
    """DESIGN.md invariant 4 once the keeper acted: no account has negative equity, no uncovered
    deficit is outstanding past its grace period, the liquidity vault's value nets every
    outstanding deficit, and every positive claim is payable from the vault's balance."""
    for account in known:
        equity = model.account_view(account).equity
        invariants.ok("4 no negative equity after keepers", equity >= 0, f"{account}: equity {usd(equity):,.2f} USD")
    grace = d.liquidator.deficit_grace_period()
    outstanding = 0
    for owner, sub, market_id in sorted(deficits.recorded):
        amount, _, recorded_at = d.liquidator.deficit_record(owner, sub, market_id)
        outstanding += amount
        invariants.ok("4 no deficit outstanding past its grace period", amount == 0 or now < recorded_at + grace,
                      f"{owner}/{sub} market {market_id}: {usd(amount):,.2f} USD since {recorded_at}")
    total_deficit = d.liquidator.total_uncovered_deficit()
    per_market = sum(d.liquidator.uncovered_deficit(int(m.market_id)) for m in markets)
    invariants.ok("4 deficits recorded per account add up", outstanding == total_deficit == per_market,
                  f"{outstanding} / {total_deficit} / {per_market}")
    indices = [d.exchange.index_price(int(m.market_id)) for m in markets]
    lv_value = d.exchange.liquidity_vault_value()
    invariants.ok("4 the LP vault's value nets the outstanding deficits",
                  lv_value == d.exchange.liquidity_vault_value_at(indices) - total_deficit, f"{lv_value}")
    # every positive claim: traders' equity, the liquidity vault's value, the insurance fund and
    # the fee receiver, out of the vault's token balance alone
    claims = sum(max(model.account_view(a).equity, 0) for a in known)
    claims += max(lv_value, 0) + max(system[1], 0) + max(system[2], 0)
    invariants.ok("4 every positive claim is payable", claims <= balance, f"{usd(claims):,.2f} vs {usd(balance):,.2f}")


DEMO_EVENTS = (
    ("liquidator", "Liquidation"), ("liquidator", "BadDebt"), ("liquidator", "AutoDeleveraged"),
    ("liquidator", "DeficitRecorded"), ("liquidator", "DeficitWrittenOff"),
    ("exchange", "Trade"), ("exchange", "FundingAccrued"), ("vault", "Settled"),
    ("order_book", "OrderCommitted"), ("order_book", "OrderExecuted"), ("order_book", "OrderCancelled"),
)


def fetch_events(d, first: int, last: int) -> dict[str, list]:
    """The DEMO_EVENTS of blocks first..last by name, in one eth_getLogs."""
    from ape import chain
    from ape.types import LogFilter
    from eth_utils import encode_hex, keccak

    abis = [getattr(getattr(d, contract), name).abi for contract, name in DEMO_EVENTS]
    log_filter = LogFilter(
        addresses=sorted({getattr(d, contract).address for contract, _ in DEMO_EVENTS}),
        events=abis,
        topic_filter=[[encode_hex(keccak(text=abi.selector)) for abi in abis]],
        start_block=first,
        stop_block=last,
    )
    by_name: dict[str, list] = {name: [] for _, name in DEMO_EVENTS}
    for log in chain.provider.get_contract_logs(log_filter):
        by_name[log.event_name].append(log)
    return by_name


@dataclass
class EventLog:
    """The replay's money-moving events, gathered step by step over the few new blocks."""

    liquidations: list = field(default_factory=list)
    bad_debt: list = field(default_factory=list)
    adl: list = field(default_factory=list)
    trades: list = field(default_factory=list)
    accruals: list = field(default_factory=list)
    insurance_in: int = 0

    def collect(self, logs: dict[str, list]) -> None:
        self.liquidations += logs["Liquidation"]
        self.bad_debt += logs["BadDebt"]
        self.adl += logs["AutoDeleveraged"]
        self.trades += logs["Trade"]
        self.accruals += logs["FundingAccrued"]
        self.insurance_in += sum(e.insurance for e in logs["Settled"] if e.insurance > 0)


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
        orders_executed=report.orders_executed,
        orders_cancelled=report.orders_cancelled,
    )


def tally(items) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def order_summary(orders: OrderLog) -> dict:
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
    d, events: EventLog, deficits: DeficitLog, orders: OrderLog, lv_start: int, records, invariants: InvariantLog,
    seconds: float,
) -> dict:
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
        "invariants": invariants.checked,
        "invariants_held": True,
    }


def by_kind(counts: dict[str, int]) -> str:
    """`40 (24 market, 16 stop-loss)`."""
    return f"{sum(counts.values())} ({', '.join(f'{n} {kind}' for kind, n in counts.items())})"


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
    cost = summary.get("capacity_cost")
    if cost:
        on, off = cost["with_capacity"], cost["without_capacity"]
        rows += [
            ("bad debt with / without the liquidation capacity",
             f"{on['bad_debt_usd']:,.2f} / {off['bad_debt_usd']:,.2f} USD"),
            ("bankruptcies with / without it", f"{on['bankruptcies']} / {off['bankruptcies']}"),
            ("LP vault PnL with / without it",
             f"{on['liquidity_vault_pnl_usd']:+,.2f} / {off['liquidity_vault_pnl_usd']:+,.2f} USD"),
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
