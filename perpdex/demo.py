"""`python -m perpdex.demo`: the March 2020 crash, replayed round by round on ape's embedded chain.

The older replay, kept as an example of driving perpdex through ape (deployment, the keeper on
its ape transport, invariants from on-chain reads) and for its comparison with and without the
liquidation capacity; slow (every read goes through ape). `make demo` runs the simulator instead
(`perpdex.sim.demo`: titanoboa, a few hundred accounts, half a minute).

Deploys perpdex, lets an LP seed the liquidity vault, and has two dozen traders (2x-25x, longs
and shorts, BTC and ETH) commit market orders, which the keeper (`perpdex.keeper.Keeper`)
executes at the next oracle round; half of them then set stop-losses. It replays the first
half of 12 March 2020 from data/prices: the BTC and ETH feeds publish the rounds a Chainlink feed would along
each hour's candle (`perpdex.sim.publication`: 0.5 % deviation, heartbeat), and after every round
the keeper liquidates, auto-deleverages, writes off, fires the stop-losses the round crossed
and executes or cancels the dip buyers' market orders; DESIGN.md's invariants are checked from
on-chain state after every pass (`perpdex.demo_checks`). Then the same rounds again on a fresh
deployment with the liquidation capacity lifted, for its cost. Prints the report
(`perpdex.demo_report`) and writes reports/demo.json and reports/demo.png.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perpdex.demo_checks import (
    CapacityWaits, DeficitLog, EventLog, InvariantLog, accounts_at_risk, check_actions, check_invariants,
    fetch_events,
)
from perpdex.demo_report import (
    HourTally, StepRecord, capacity_cost, console, print_report, record, summarize, write_outputs,
)
from perpdex.sim.publication import HOUR, Round, feed_rounds, load_candles, merged_rounds
from perpdex.fixed_point import WAD
from perpdex.orders import KIND_STOP_LOSS
from perpdex.snapshot import load_globals, load_model

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "prices"
REPORTS = ROOT / "reports"
FEEDS = ("btc-usdt_2020-03_1h.csv", "eth-usdt_2020-03_1h.csv")  # market 0, market 1
# 12 March 2020 round by round: ~350 rounds; each costs ~0.45 s on the embedded chain (the
# keeper's pass and the checks), so the whole 8-16 March window (~3,950 rounds) would take
# about half an hour per replay
START, END = datetime(2020, 3, 12, tzinfo=timezone.utc), datetime(2020, 3, 12, 12, tzinfo=timezone.utc)
LEVERAGES = (2, 3, 5, 8, 10, 12, 15, 20, 25)
TRADERS = 24
COLLATERAL_USD = 10_000
LP_USD = 3_000_000
WHALE_USD = 60_000  # a 25x whale long, opened just before the steepest hour of the window
WHALE_TIME = int(datetime(2020, 3, 12, 10, tzinfo=timezone.utc).timestamp())  # then -24 % within the hour
# dip buyers: every 6 hours of the crash each commits a BTC market buy (a third of its collateral,
# 1 % slippage) at the half hour; the last one gives its orders 15 minutes
DIP_BUYERS = 3
DIP_USD = 20_000
DIP_START = int(datetime(2020, 3, 12, 1, 30, tzinfo=timezone.utc).timestamp())
DIP_END = int(datetime(2020, 3, 14, 7, tzinfo=timezone.utc).timestamp())
DIP_EVERY = 6 * HOUR
MAX_NUDGES = 40  # extra rounds after one pass at most without the capacity (40 x 40 BTC, 40 x 800 ETH)


def load_rounds(start: datetime = START, end: datetime = END) -> tuple[list[Round], list[float], list[int]]:
    """Both feeds' rounds over [start, end), their first answers (the first candles' opens)
    and the hours (each candle's end)."""
    candles = [load_candles(DATA / name, int(start.timestamp()), int(end.timestamp())) for name in FEEDS]
    first = [c[0].open for c in candles]
    rounds = merged_rounds(*(feed_rounds(c, market, c[0].open) for market, c in enumerate(candles)))
    hours = sorted({c.time + HOUR for c in candles[0]} & {c.time + HOUR for c in candles[1]})
    return rounds, first, hours


def run(end: datetime = END) -> dict:
    warnings.filterwarnings("ignore")
    from ape import networks
    from ape.logging import logger

    logger.set_level(logging.WARNING)
    logging.getLogger("perpdex").setLevel(logging.WARNING)
    rounds, first, hours = load_rounds(START, end)

    with networks.parse_network_choice("ethereum:local:test"):
        console.rule("[bold]perpdex: the March 2020 crash, round by round")
        with_capacity = Replay(rounds, first, hours, unbounded=False)
        summary, records = with_capacity.run()
        if with_capacity.left_undone:
            console.print("the same rounds again, the liquidation capacity lifted (see docs/DECISIONS.md) ...")
            without, _ = Replay(rounds, first, hours, unbounded=True).run()
        else:
            # the replay without the capacity publishes an extra round only after a pass that
            # left an account liquidatable or a deficit outstanding: none did, so it would send
            # the same transactions and end the same
            console.print("no keeper pass left an account liquidatable or a deficit outstanding: the replay "
                          "without the capacity would be the same")
            without = summary
    summary["capacity_cost"] = capacity_cost(summary, without)
    print_report(summary)
    write_outputs(summary, records, REPORTS)
    return summary


@dataclass
class Replay:
    """One replay of `rounds` on a fresh deployment. `unbounded`: the capacity lifted. After
    each keeper pass, while an account is still liquidatable or a deficit outstanding, both
    feeds publish their last answer again a second later, 1e-8 USD higher each time: the
    capacity is per index, so each such round lets the keeper close another capacity's worth
    at what is the same price to the cent."""

    rounds: list[Round]
    first: list[float]  # each feed's answer when the replay starts
    hours: list[int]  # the hour marks at which the state is recorded
    unbounded: bool
    published: dict = field(default_factory=lambda: {"deviation": 0, "heartbeat": 0, "extra": 0})
    risk_log: list = field(default_factory=list)  # (first block, last block, accounts at risk) of passes that liquidated
    events: EventLog = field(default_factory=EventLog)
    deficits: DeficitLog = field(default_factory=DeficitLog)
    invariants: InvariantLog = field(default_factory=InvariantLog)
    waits: CapacityWaits = field(default_factory=CapacityWaits)
    records: list = field(default_factory=list)
    hour: HourTally = field(default_factory=HourTally)
    settlements: int = 0
    lv_value: int = 0
    left_undone: int = 0  # passes after which an account stayed liquidatable or a deficit outstanding

    def run(self) -> tuple[dict, list[StepRecord]]:
        from ape import chain

        started = time.perf_counter()
        self.deploy()
        self.open_positions()
        self.offset = chain.pending_timestamp - int(START.timestamp())  # chain time = candle time + offset
        timeline = sorted(
            [(h, 0, "hour", None) for h in self.hours]
            + [(WHALE_TIME, 1, "whale", None)]
            + [(t, 2, "dip", None) for t in range(DIP_START, DIP_END, DIP_EVERY)]
            + [(r.time, 3, "round", r) for r in self.rounds],
            key=lambda e: e[:2],
        )
        timeline = [e for e in timeline if e[0] <= self.hours[-1]]
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("replaying", total=len(self.rounds))
            for when, _, kind, round_ in timeline:
                chain.pending_timestamp = max(when + self.offset, chain.pending_timestamp)
                if kind == "round":
                    self.publish_round(round_)
                    progress.update(task, advance=1, description=f"{datetime.fromtimestamp(when, timezone.utc):%d %b %H:%M}")
                elif kind == "hour":
                    self.records.append(record(self.d, when, *self.prices(), self.hour, self.lv_value))
                    self.hour = HourTally()
                elif kind == "whale":
                    self.commit_whale()
                else:
                    self.commit_dips(when)
        # the run ends with invariant 4 holding as DESIGN.md states it: no exception here
        self.keeper_pass(strict=True)
        check_actions(self.events, self.risk_log, self.invariants)
        rounds = {"published": sum(self.published.values()), **self.published}
        summary = summarize(self.d, self.events, self.deficits, self.orders, self.lv_start, self.records,
                            self.invariants, self.waits, rounds, time.perf_counter() - started)
        summary["whale"] = self.whale_fill()
        return summary, self.records

    # -- setup -----------------------------------------------------------------------------------

    def deploy(self) -> None:
        from ape import accounts

        from perpdex.deploy import FEED_DECIMALS, deploy_local
        from perpdex.keeper import Keeper

        self.owner, lp, keeper_account = accounts.test_accounts[:3]
        d = self.d = deploy_local(self.owner)
        d.liquidator.set_adl_keeper(keeper_account, True, sender=self.owner)
        d.liquidity_vault.set_lp_executor(keeper_account, True, sender=self.owner)
        self.fee = d.order_book.order_params().execution_fee
        self.answers = [int(price * 10**FEED_DECIMALS) for price in self.first]
        self.units = 10**FEED_DECIMALS
        for market, answer in enumerate(self.answers):
            d.aggregators[market][0].update_answer(answer, sender=self.owner)
        # LPs enter through two-step requests; the owner alone may seed the vault at once
        d.liquidity_vault.deposit(self.fund(self.owner, LP_USD, d.liquidity_vault), lp, sender=self.owner)
        self.lv_start = self.lv_value = d.exchange.liquidity_vault_value()
        self.globals = load_globals(d.exchange)
        self.keeper = Keeper(d, keeper_account)
        self.orders = OrderLog()
        self.known = [(keeper_account.address, 0)]

    def fund(self, who, amount_usd: int, spender) -> int:
        amount = amount_usd * 10**6
        self.d.collateral.mint(who, amount, sender=self.owner)
        self.d.collateral.approve(spender.address, 2**256 - 1, sender=who)
        return amount

    def newcomer(self, collateral_usd: int):
        from ape import accounts

        who = accounts.test_accounts.generate_test_account()
        self.owner.transfer(who, 10**18)
        self.d.vault.deposit(0, self.fund(who, collateral_usd, self.d.vault), sender=who)
        self.known.append((who.address, 0))
        return who

    def open_positions(self) -> None:
        """Every trader commits a market order sized on a plan of the fills before it (the
        keeper executes them in commit order at the next round, at this same price); then every
        BTC trader and every short sets a stop-loss at half its margin lost."""
        from ape import chain

        d, (btc0, eth0) = self.d, self.first
        self.last_block = chain.blocks.head.number
        plan = load_model(d, [], chain.pending_timestamp, self.globals)
        traders, wallets, sides = [], [], []
        for i in range(TRADERS):
            trader = self.newcomer(COLLATERAL_USD)
            leverage = LEVERAGES[i % len(LEVERAGES)]
            side = -1 if i % 3 == 2 else 1  # two longs for every short, in both markets: a long skew
            market, price = (0, btc0) if i % 2 == 0 else (1, eth0)
            account = (trader.address, 0)
            plan.cash[account] = COLLATERAL_USD * WAD - self.fee  # the execution fee is escrowed at commit
            size = largest_size(plan, account, market, COLLATERAL_USD * leverage / price * side)
            plan.trade(account, market, size, 2**256 - 1 if size > 0 else 0)
            self.orders.commit(d, trader, market, size, slippage_bound(plan.index[market], size, 0.01))
            traders.append(account)
            wallets.append(trader)
            sides.append(side)
        # stress: the insurance fund starts the crash empty (the owner took the fee share out),
        # so bad debt it cannot cover goes to auto-deleveraging
        surplus = d.insurance_fund.surplus()
        if surplus:
            d.insurance_fund.withdraw_surplus(self.owner, surplus, sender=self.owner)
        # the feeds publish the same answers again a few seconds later (a round for the orders)
        chain.pending_timestamp += 5
        for market, answer in enumerate(self.answers):
            d.aggregators[market][0].update_answer(answer, sender=self.owner)
        self.keeper_pass()
        fills = {(e.owner, e.sub_account): e for e in self.orders.executed}
        assert set(fills) == set(traders), "every opening order fills"
        leverages = []
        for i, account in enumerate(traders):
            size = d.exchange.position_state(*account, i % 2)[0]
            leverages.append(abs(size) * (btc0 if i % 2 == 0 else eth0) / WAD / COLLATERAL_USD)
            if i % 2 == 0 or i % 3 == 2:
                entry = fills[account].fill_price
                trigger = int(entry * (1 - sides[i] * 0.5 / leverages[-1]))
                self.orders.commit_stop(d, wallets[i], i % 2, -size, trigger, slippage_bound(trigger, -size, 0.2))
        self.dip_buyers = [self.newcomer(DIP_USD) for _ in range(DIP_BUYERS)]
        if not self.unbounded:
            console.print(
                f"{TRADERS} traders opened {min(leverages):.1f}x-{max(leverages):.1f}x positions through market "
                f"orders, {len(self.orders.stops)} set stop-losses; LP seeded {LP_USD:,} USDC; "
                f"BTC {btc0:,.2f}, ETH {eth0:,.2f} on {START:%d %b %Y}; {len(self.rounds):,} oracle rounds to replay"
            )

    # -- the replay ------------------------------------------------------------------------------

    def prices(self) -> tuple[float, float]:
        return self.answers[0] / self.units, self.answers[1] / self.units

    def publish_round(self, round_: Round) -> None:
        """The feed publishes the round, then the keeper acts (and, unbounded, the extra rounds)."""
        self.answers[round_.market] = int(round_.price * self.units)
        self.d.aggregators[round_.market][0].update_answer(self.answers[round_.market], sender=self.owner)
        self.published[round_.reason] += 1
        self.hour.rounds += 1
        result = self.keeper_pass()
        self.left_undone += bool(result.liquidatable or result.deficit)
        if self.unbounded:
            self.lift_capacity(result)

    def lift_capacity(self, result) -> None:
        """Without the capacity: new rounds at the same answers (+1e-8 USD each) until no
        account is liquidatable and no deficit is outstanding, or a pass changes nothing."""
        from ape import chain

        for _ in range(MAX_NUDGES):
            if not result.liquidatable and not result.deficit:
                return
            chain.pending_timestamp += 1
            for market in range(len(self.answers)):
                self.answers[market] += 1
                self.d.aggregators[market][0].update_answer(self.answers[market], sender=self.owner)
                self.published["extra"] += 1
            acted = (self.hour.liquidated, self.hour.adl_targets)
            result = self.keeper_pass()
            if (self.hour.liquidated, self.hour.adl_targets) == acted:
                return

    def keeper_pass(self, strict: bool = False):
        """One keeper pass, its events collected and DESIGN.md's invariants checked."""
        from ape import chain

        before = chain.blocks.head
        report = self.keeper.run_once()
        self.hour.add(report)
        head, first = chain.blocks.head, self.last_block + 1
        logs = fetch_events(self.d, first, head.number)
        if logs["Liquidation"]:  # who was liquidatable when the pass began (eth_call at that block)
            self.risk_log.append((first, head.number, accounts_at_risk(
                self.d, self.known, before.number, before.timestamp, self.globals)))
        for log in (self.events, self.orders, self.deficits):
            log.collect(logs)
        result = check_invariants(
            self.d, self.known, self.invariants, self.settlements, logs, head.timestamp, self.globals,
            self.orders.escrowed(), self.deficits, self.waits, strict,
        )
        self.settlements, self.lv_value = result.settlements, result.lv_value
        self.last_block = head.number
        return result

    def commit_whale(self) -> None:
        """A 25x BTC long, as large as the margin allows at the current answer, 1 % slippage."""
        from ape import chain

        whale = self.newcomer(WHALE_USD)
        account = (whale.address, 0)
        plan = load_model(self.d, [account], chain.pending_timestamp, self.globals)
        plan.cash[account] -= self.fee
        size = largest_size(plan, account, 0, WHALE_USD * 25 / self.prices()[0])
        self.whale = account
        self.orders.commit(self.d, whale, 0, size, slippage_bound(plan.index[0], size, 0.01))

    def whale_fill(self) -> dict:
        if not hasattr(self, "whale"):
            return {"filled": False}
        fills = [e for e in self.orders.executed if (e.owner, e.sub_account) == self.whale]
        if not fills:
            return {"filled": False}
        return {"filled": True, "size_btc": fills[0].size_delta / WAD, "fill_price": fills[0].fill_price / WAD}

    def commit_dips(self, when: int) -> None:
        """The dip buyers' BTC market buys at 1 % slippage; the last one's expire in 15 minutes."""
        from ape import chain

        btc = self.prices()[0]
        for j, buyer in enumerate(self.dip_buyers):
            size = int(DIP_USD / 3 / btc * WAD)
            expiry = chain.pending_timestamp + 900 if j == DIP_BUYERS - 1 else 0
            self.orders.commit(self.d, buyer, 0, size, slippage_bound(int(btc * WAD), size, 0.01), expiry)


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



if __name__ == "__main__":
    run()
