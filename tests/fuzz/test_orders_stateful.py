"""Stateful fuzzing of two-step orders (contracts/OrderBook.vy) against the reference model
(perpdex/orders.py): commit, execute, cancel and expire at random, every invariant after
every step.

`OrderMachine` drives one deployment (tests/fuzz/base.py) with:
- traders (3 x 2 sub-accounts) committing orders of every kind (market, limit, stop-loss,
  take-profit), reduce-only or not, of random sizes (oversize and zero included, reductions of
  the position by 1-200 %), with acceptable prices that any fill meets, that are near the
  trigger or index, or that nothing can meet, and with default, valid, too early and too late
  expiries; trigger prices on either side of the index (on the triggered side the commit is
  refused);
- the oracle publishing rounds that move prices up and down, often exactly at, just through
  or just short of an open order's trigger, with or without time passing (several rounds in
  one second included); time passing from a second to beyond the longest order age, the price
  pusher publishing a round at least every heartbeat so that feeds never go stale (the rounds
  an order names can: a round older than the heartbeat is refused by the oracle);
- keepers executing any order (open, executed, cancelled, superseded, unknown) at the right
  round, the latest, the one before or after the right one, any round, or round 1, one at a
  time or several in one batch (execute_orders: the ones that cannot execute skipped); an honest
  keeper executing every order at its first executable round (an owner-cancelled trigger order
  too, at a crossing published before its cancellation) and cancelling the expired ones;
- owners cancelling their orders (market orders before expiry are refused; trigger orders are
  refunded and linger), strangers cancelling expired orders for the fee (and refused before);
  a trader churning limit orders (commit, cancel, again) until every slot is held by a
  lingering cancellation, the slots reused once max_order_age has passed;
- withdrawals with pending market orders (refused), liquidations of accounts with orders,
  ordinary trades, deposits, withdrawals and the guardian's pause from the shared base;
- the owner changing the order parameters within their bounds (and refused outside them or
  when not the owner) and the markets' size and open-interest caps, so that orders committed
  under old limits fail at execution.
The execution fee is never zero here.

Every action runs on the contracts and on the model (System, tests/system.py) and a refusal
must carry the model's reason; refusals the model cannot see (an oracle round that is stale
or has no previous round) are expected in the contract's order of checks. After every step:
model parity of everything stored (accounts, markets, every order slot and book), DESIGN.md
invariants 1-3 (the ledger including the fee escrow), the escrow equal to the fees of the
open orders, each book's pending count equal to its open market orders, its masks equal to
its open and lingering orders (tests/fuzz/order_actions.py). Every fill is audited from its event:
never at a round published before the order's `not_before`, never beyond its acceptable
price, a market order only at its first round after the delay, a trigger order only at a
crossing round before its expiry or cancellation, never twice, the fee to the executor.
"""

from __future__ import annotations

import bisect

import boa
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition

from perpdex.fixed_point import WAD
from perpdex.model import ModelRevert
from perpdex.orders import (
    KIND_LIMIT,
    KIND_MARKET,
    KIND_NAMES,
    KIND_STOP_LOSS,
    KIND_TAKE_PROFIT,
    MAX_EXECUTION_FEE,
    MAX_MAX_ORDER_AGE,
    MAX_MIN_ORDER_DELAY,
    MAX_OPEN_ORDERS,
    MAX_TRIGGER_LIFETIME,
    REASON_ACCEPTABLE,
    STATE_CANCELLED,
    STATE_OPEN,
    Order,
    OrderParams,
    order_id_of,
    triggered,
)

from .base import (
    ACCOUNT,
    DUST,
    FEED_TO_WAD,
    HEARTBEAT,
    MARKET,
    MARKETS,
    MOVE_BPS,
    PER_MILLE,
    SIZE_LIMIT,
    TOKEN,
    PerpdexMachine,
    first_step,
    brief,
    refusal,
    run_machine,
    size_of,
    step,
    worst_price,
)

pytestmark = pytest.mark.ignore_isolation

MAX_PRICE = 2**128 - 1
MAX_BATCH = 20  # OrderBook.MAX_BATCH: orders per execute_orders
LATE_ESCROW = "vault: execution fee"  # a late execution's fee, charged again after the fill
NOTHING_TO_REDUCE = "order: nothing left to reduce"

PICK = st.integers(0, 2**32)
KEEPER = st.integers(0, 1)
SIZE_MODE = st.sampled_from(["random", "random", "reduce", "reduce", "max", "oversize", "zero"])
PERCENT = st.integers(1, 200)
ACCEPTABLE_MODE = st.sampled_from(["any", "any", "near", "near", "hopeless"])
SLACK_BPS = st.integers(-200, 200)
EXPIRY_MODE = st.sampled_from(["default", "within", "within", "within", "too early", "too late"])
TRIGGER_EXPIRY_MODE = st.sampled_from(["default"] + ["within"] * 5 + ["too early", "too late"])
TRIGGER_SIZE_MODE = st.sampled_from(["reduce"] * 3 + ["random"] * 2 + ["max", "oversize", "zero"])
EXPIRY_OFFSET = st.integers(0, 2**32)
DELAY = st.one_of(st.integers(1, 5), st.integers(1, 60), st.integers(1, MAX_MIN_ORDER_DELAY))
AGE = st.one_of(
    st.sampled_from([60, 600, HEARTBEAT, 2 * HEARTBEAT, MAX_MAX_ORDER_AGE]), st.integers(2, MAX_MAX_ORDER_AGE)
)
FEE = st.one_of(st.just(1), st.integers(1, WAD), st.integers(1, MAX_EXECUTION_FEE), st.just(MAX_EXECUTION_FEE))
MAX_OPEN = st.one_of(st.just(MAX_OPEN_ORDERS), st.integers(1, MAX_OPEN_ORDERS))
# mostly seconds to an hour; sometimes beyond the longest order age (the pusher keeps
# publishing a round every heartbeat meanwhile)
SECONDS = st.one_of(st.integers(1, 60), st.integers(1, 2 * HEARTBEAT), st.integers(1, MAX_MAX_ORDER_AGE + HEARTBEAT))
AMONG = st.sampled_from(["live", "live", "live", "any"])
ROUND_MODE = st.sampled_from(["right", "right", "latest", "before", "after", "any", "round one", "unknown order"])


def firing_direction(kind: int, size: int) -> int:
    """+1 when the order fires at prices at or above its trigger, -1 at or below (so a trigger
    placed on the other side of the index leaves it resting)."""
    if kind == KIND_STOP_LOSS:
        return 1 if size > 0 else -1  # a buy stop fires at or above, a sell stop at or below
    return -1 if size > 0 else 1  # a buy limit / take-profit fires at or below, a sell at or above


class OrderMachine(PerpdexMachine):
    """Orders of every kind committed, executed at right and wrong rounds, cancelled by owners
    and strangers, expired, under changing parameters; ordinary trading alongside."""

    def __init__(self):
        super().__init__()
        self.keepers = [self.s.executor, self.s.keeper]
        self.owner_of: dict[int, str] = {}

    # -- the oracle's pusher keeps every feed fresh ---------------------------------------------

    def advance(self, seconds: int) -> None:
        """Time passes; the pusher republishes a market's price whenever its last round would
        otherwise go stale, so that the latest answers stay valid (old rounds do not)."""
        s = self.s
        end = s.now + seconds
        while True:
            deadline = min(self.updated_at[m] + HEARTBEAT for m in MARKETS)
            if end <= deadline:
                break
            if deadline > s.now:
                s.warp(deadline - s.now)
            for m in MARKETS:
                if self.updated_at[m] + HEARTBEAT <= s.now:
                    self.publish(m, s.model.index[m])
        if end > s.now:
            s.warp(end - s.now)

    @invariant()
    def feeds_fresh(self):
        assert not any(self.is_stale(m) for m in MARKETS), "the pusher let a feed go stale"

    # -- helpers ------------------------------------------------------------------------------

    def live_orders(self) -> list[tuple[int, Order]]:
        """(id, order) of every order that may still execute: the open ones and the
        owner-cancelled trigger orders (executable at rounds published before the cancellation)."""
        model = self.s.model
        out = []
        for (account, slot), o in model.order_slots.items():
            if o.state == STATE_OPEN or (o.state == STATE_CANCELLED and o.cancelled_at):
                out.append((order_id_of(account[0], account[1], slot, model.order_seq[(account, slot)]), o))
        return out

    def pick_order(self, pick: int, among: str) -> int:
        """An order id: among the expired or the live ones (when there are any), or among all
        ever committed (executed, cancelled and superseded ones included)."""
        pool = []
        if among == "expired":
            max_age = self.s.model.order_params.max_order_age
            pool = [
                order_id
                for order_id, o in self.live_orders()
                if o.state == STATE_OPEN and self.s.now >= o.expiry + (0 if o.kind == KIND_MARKET else max_age)
            ]
        if among in ("live", "expired") and not pool:
            pool = [order_id for order_id, _ in self.live_orders()]
        pool = pool or self.orders
        return pool[pick % len(pool)]

    def crossings(self, o: Order, executable_only: bool = False) -> list[int]:
        """The rounds a trigger order may execute at: published in [not_before, end) (end: its
        expiry, or the second after its cancellation by the owner), triggering it while the
        round before did not.
        `executable_only`: also not older than the heartbeat (the oracle refuses older rounds)
        nor than max_order_age."""
        rounds, times = self.rounds[o.market_id], self.round_times[o.market_id]
        end = min(o.expiry, o.cancelled_at + 1) if o.cancelled_at else o.expiry
        start = max(bisect.bisect_left(times, o.not_before), 2)
        if executable_only:
            oldest = self.s.now - min(HEARTBEAT, self.s.model.order_params.max_order_age)
            start = max(start, bisect.bisect_left(times, oldest))
        out = []
        for round_id in range(start, len(rounds)):
            price, published = rounds[round_id]
            if published >= end:
                break
            fires = triggered(o.kind, o.size_delta, o.trigger_price, price)
            if fires and not triggered(o.kind, o.size_delta, o.trigger_price, rounds[round_id - 1][0]):
                out.append(round_id)
        return out

    def right_round(self, o: Order, pick: int) -> int | None:
        """The round a keeper should name: a market order's first round after the delay; one of a
        trigger order's crossings."""
        if o.kind == KIND_MARKET:
            return self.first_round(o.market_id, o.not_before)
        crossings = self.crossings(o)
        return crossings[pick % len(crossings)] if crossings else None

    def order_size(self, account, market_id: int, mode: str, side: int, per_mille: int, dust: int, percent: int) -> int:
        s = self.s
        position = s.model.position(account, market_id).size
        limit = s.model.params[market_id].max_position_size
        if mode == "reduce" and position:
            return -position * percent // 100 or -position
        if mode == "max":
            return side * limit
        if mode == "oversize":
            return side * (limit + 1 + dust)
        if mode == "zero":
            return 0
        size = size_of(market_id, per_mille, dust)
        return abs(size) * side

    @staticmethod
    def acceptable(mode: str, size: int, reference: int, slack_bps: int) -> int:
        """`any`: every fill; `near`: the reference price +- slack (loose when positive);
        `hopeless`: no fill can meet it."""
        if mode == "any":
            return worst_price(size)
        if mode == "hopeless":
            return 0 if size > 0 else MAX_PRICE
        side = 1 if size > 0 else -1
        return max(reference * (10_000 + side * slack_bps) // 10_000, 0)

    def expiry(self, mode: str, offset: int, kind: int) -> int:
        s, p = self.s, self.s.model.order_params
        not_before = s.now + p.min_order_delay
        horizon = s.now + (p.max_order_age if kind == KIND_MARKET else MAX_TRIGGER_LIFETIME)
        if mode == "default":
            return 0
        if mode == "too early":
            return not_before - offset % 2
        if mode == "too late":
            return horizon + 1 + offset % 1_000
        # within: for trigger orders mostly within days, so that they expire inside an example
        span = horizon - not_before if kind == KIND_MARKET or offset % 4 == 0 else 3 * MAX_MAX_ORDER_AGE
        return not_before + 1 + offset % span

    def place(self, who, sub, market_id, size, acceptable, kind, trigger, reduce_only, expiry) -> int | None:
        try:
            order_id = self.commit(who, sub, market_id, size, acceptable, kind, trigger, reduce_only, expiry)
        except ModelRevert as revert:
            self.events[f"commit refused ({KIND_NAMES[kind]}): {brief(revert.reason)}"] += 1
            return None
        reduce_only = " reduce-only" if self.s.model.order(order_id).reduce_only else ""
        self.events[f"committed: {KIND_NAMES[kind]}{reduce_only}"] += 1
        return order_id

    # -- setup --------------------------------------------------------------------------------

    @first_step(
        lp=st.integers(100_000, 2_000_000),
        collateral=st.integers(1_000, 50_000),
        delay=DELAY,
        age=AGE,
        fee=FEE,
        max_open=MAX_OPEN,
    )
    def setup(self, lp, collateral, delay, age, fee, max_open):
        """The liquidity vault's capital, every trader's collateral (USD) and the order
        parameters (a non-zero execution fee)."""
        s = self.s
        s.lp_deposit(s.lps[0], lp)
        for who, sub in self.accounts:
            s.deposit(who, collateral, sub)
        s.set_order_params(
            min_order_delay=delay, max_order_age=max(age, delay + 1), execution_fee=fee, max_open_orders=max_open
        )

    # -- traders ------------------------------------------------------------------------------

    @step(
        i=ACCOUNT,
        market_id=MARKET,
        side=st.sampled_from([1, -1]),
        size_mode=SIZE_MODE,
        per_mille=PER_MILLE,
        dust=DUST,
        percent=PERCENT,
        acceptable_mode=ACCEPTABLE_MODE,
        slack_bps=SLACK_BPS,
        reduce_only=st.booleans(),
        expiry_mode=EXPIRY_MODE,
        offset=EXPIRY_OFFSET,
    )
    def commit_market_order(
        self, i, market_id, side, size_mode, per_mille, dust, percent, acceptable_mode, slack_bps, reduce_only,
        expiry_mode, offset,
    ):
        who, sub = account = self.account(i)
        size = self.order_size(account, market_id, size_mode, side, per_mille, dust, percent)
        acceptable = self.acceptable(acceptable_mode, size, self.s.model.index[market_id], slack_bps)
        expiry = self.expiry(expiry_mode, offset, KIND_MARKET)
        self.place(who, sub, market_id, size, acceptable, KIND_MARKET, 0, reduce_only, expiry)

    @step(
        i=ACCOUNT,
        market_id=MARKET,
        kind=st.sampled_from([KIND_LIMIT, KIND_STOP_LOSS, KIND_TAKE_PROFIT]),
        side_mode=st.sampled_from(["closing", "closing", "random"]),
        side=st.sampled_from([1, -1]),
        trigger_bps=st.one_of(st.integers(0, 300), st.integers(0, 3_000)),
        triggered_side=st.sampled_from([False] * 7 + [True]),
        on_tick=st.booleans(),
        trigger_dust=st.integers(1, FEED_TO_WAD - 1),
        size_mode=TRIGGER_SIZE_MODE,
        per_mille=PER_MILLE,
        dust=DUST,
        percent=PERCENT,
        acceptable_mode=ACCEPTABLE_MODE,
        slack_bps=SLACK_BPS,
        reduce_only=st.booleans(),
        expiry_mode=TRIGGER_EXPIRY_MODE,
        offset=EXPIRY_OFFSET,
        then=st.sampled_from(["rest", "cross", "cross", "cross and execute", "cross, owner cancels, keeper executes"]),
        ticks=st.integers(0, 20),
    )
    def commit_trigger_order(
        self, i, market_id, kind, side_mode, side, trigger_bps, triggered_side, on_tick, trigger_dust, size_mode,
        per_mille, dust, percent, acceptable_mode, slack_bps, reduce_only, expiry_mode, offset, then, ticks,
    ):
        """A limit, stop-loss or take-profit order with its trigger some way from the index on
        the untriggered side (on the triggered side: refused), on the feed's price grid (so
        that a round can land exactly on it) or between two grid points. Then the order rests,
        or once it can execute a round lands on or through its trigger, and a keeper may execute
        it there at once (filled, cancelled, or refused for its acceptable price and resting),
        or after the owner cancelled it in that second or later (a late execution, charging
        the refunded fee again).
        A stop-loss or take-profit (or a reduce-only limit) of an account without a position
        first opens one."""
        s = self.s
        who, sub = account = self.account(i)
        position = s.model.position(account, market_id).size
        if not position and (kind != KIND_LIMIT or size_mode == "reduce"):
            # a stop-loss or take-profit protects a position: open one first (at half the margin)
            self.trade(who, sub, market_id, self.levered_size(account, market_id, -side, 50))
            position = s.model.position(account, market_id).size
        if side_mode == "closing" and position:
            side = -1 if position > 0 else 1
        size = self.order_size(account, market_id, size_mode, side, per_mille, dust, percent)
        index = s.model.index[market_id]
        direction = firing_direction(kind, size or side) * (-1 if triggered_side else 1)
        trigger = max(index * (10_000 + direction * trigger_bps) // 10_000, 1)
        trigger = trigger - trigger % FEED_TO_WAD if on_tick else trigger - trigger % FEED_TO_WAD + trigger_dust
        acceptable = self.acceptable(acceptable_mode, size, trigger, slack_bps)
        expiry = self.expiry(expiry_mode, offset, kind)
        order_id = self.place(who, sub, market_id, size, acceptable, kind, max(trigger, 1), reduce_only, expiry)
        if order_id is not None and then != "rest":
            o = s.model.order(order_id)
            self.advance(o.not_before - s.now)
            fires = firing_direction(o.kind, o.size_delta)
            # on the feed's grid at or through the trigger (rounds carry 8 decimals)
            on_grid = -(-o.trigger_price // FEED_TO_WAD) * FEED_TO_WAD if fires > 0 else o.trigger_price
            round_id = self.publish(market_id, on_grid + fires * ticks * FEED_TO_WAD)
            late = then == "cross, owner cancels, keeper executes"
            if late:
                self.advance(ticks % 3)  # in the crossing's own second or after it
                self.cancel(who, order_id)
            if then != "cross":
                name = f"{'late ' if late else ''}{KIND_NAMES[kind]} at its crossing"
                try:
                    result = self.execute(order_id, round_id, s.keeper)
                except ModelRevert as revert:
                    self.events[f"{name}: refused: {revert.reason}"] += 1
                else:
                    self.events[f"{name}: {'filled' if result.filled else 'cancelled'}"] += 1

    @step(i=ACCOUNT, market_id=MARKET, per_mille=PER_MILLE, amount=st.integers(1, 1_000 * TOKEN))
    def withdraw_with_pending_market_order(self, i, market_id, per_mille, amount):
        """A trader with a pending market order tries to withdraw (to make the order fail for
        margin after seeing the next price): refused, whatever the amount."""
        s = self.s
        who, sub = account = self.account(i)
        if not s.model.pending_market_orders(account):
            size = size_of(market_id, per_mille, 0)
            if self.place(who, sub, market_id, size, worst_price(size), KIND_MARKET, 0, False, 0) is None:
                return
        assert s.model.pending_market_orders(account)
        assert not self.withdraw(who, sub, amount)  # refused: PENDING, as withdraw() checks

    @step(i=ACCOUNT, market_id=MARKET, count=st.integers(1, 20), seconds=st.sampled_from([0, 1, 60]))
    def owner_churns_limit_orders(self, i, market_id, count, seconds):
        """A trader commits a resting limit order and cancels it, again and again: each cancelled
        order holds its slot (a round published before the cancellation may still execute it)
        until max_order_age has passed, so the sixteen slots fill up; commits are then refused
        until the oldest cancellation is that old, and its slot is reused (older ids of the
        slot become unknown)."""
        s = self.s
        who, sub = self.account(i)
        size = SIZE_LIMIT[market_id] // 100
        for _ in range(count):
            trigger = s.model.index[market_id] * 9 // 10  # a buy 10 % below the index
            order_id = self.place(who, sub, market_id, size, worst_price(size), KIND_LIMIT, trigger, False, 0)
            if order_id is None:
                return
            self.cancel(who, order_id)
            self.advance(seconds)

    @precondition(lambda self: self.orders)
    @step(pick=PICK, among=AMONG)
    def owner_cancels(self, pick, among):
        """The owner cancels any of its orders: a trigger order at any time (refunded; it
        lingers for rounds published before), a market order only once expired."""
        order_id = self.pick_order(pick, among)
        who = self.owner_of[order_id]
        try:
            self.cancel(who, order_id)
        except ModelRevert as revert:
            self.events[f"owner cancel refused: {brief(revert.reason)}"] += 1
            return
        self.events["owner cancelled"] += 1

    @precondition(lambda self: self.orders)
    @step(
        pick=PICK,
        among=st.sampled_from(["expired", "expired", "live", "any"]),
        who=st.sampled_from(["attacker", "keeper"]),
    )
    def stranger_cancels(self, pick, among, who):
        """Anyone cancels an expired order and takes its fee; before that: refused."""
        s = self.s
        order_id = self.pick_order(pick, among)
        try:
            self.cancel(s.attacker if who == "attacker" else s.keeper, order_id)
        except ModelRevert as revert:
            self.events[f"stranger cancel refused: {brief(revert.reason)}"] += 1
            return
        self.events["stranger cancelled an expired order"] += 1

    def commit(self, who, sub, *args, **kwargs) -> int:
        order_id = super().commit(who, sub, *args, **kwargs)
        self.owner_of[order_id] = who
        return order_id

    # -- keepers ------------------------------------------------------------------------------

    def choose_execution(self, pick: int, among: str, mode: str, round_pick: int) -> tuple[int, int]:
        """(order id, round id) for a keeper: any order ever committed (or an unknown id), at
        the right round, or a wrong, earlier or later one."""
        s = self.s
        order_id = self.pick_order(pick, among)
        try:
            o = s.model.order(order_id)
        except ModelRevert:
            o = None  # superseded: its slot holds a newer order
        market_id = o.market_id if o else MARKETS[pick % 2]
        latest = self.latest_round(market_id)
        right = (self.right_round(o, round_pick) if o else None) or latest
        if mode == "unknown order":
            order_id |= 31 << 192  # no slot above 15
        round_id = {
            "latest": latest,
            "before": max(right - 1, 1),
            "after": min(right + 1, latest),
            "any": 1 + round_pick % latest,
            "round one": 1,
        }.get(mode, right)
        return order_id, round_id

    @precondition(lambda self: self.orders)
    @step(pick=PICK, among=AMONG, mode=ROUND_MODE, round_pick=PICK, keeper=KEEPER)
    def keeper_executes(self, pick, among, mode, round_pick, keeper):
        """A keeper executes any order ever committed (or an unknown id) at a chosen round: the
        right one, or a wrong, earlier or later one. The contract and the model agree on every
        refusal; a fill or a cancellation is audited."""
        order_id, round_id = self.choose_execution(pick, among, mode, round_pick)
        try:
            result = self.execute(order_id, round_id, self.keepers[keeper])
        except ModelRevert as revert:
            self.events[f"execution refused ({mode}): {brief(revert.reason)}"] += 1
            return
        self.events[f"executed ({mode}): {'filled' if result.filled else 'cancelled'}"] += 1

    @precondition(lambda self: self.orders)
    @step(
        picks=st.lists(st.tuples(PICK, AMONG, ROUND_MODE, PICK), min_size=1, max_size=8),
        keeper=KEEPER,
    )
    def keeper_executes_batch(self, picks, keeper):
        """A keeper executes several orders in one transaction (execute_orders), each at its
        chosen round, the same order possibly twice: the ones that cannot execute are skipped
        and change nothing, the others fill or are cancelled in turn, as one by one."""
        batch = [self.choose_execution(*pick) for pick in picks]
        acted = self.execute_batch(batch, self.keepers[keeper])
        self.events[f"batch of {len(batch)}: {acted} acted"] += 1

    @precondition(lambda self: self.orders)
    @step(keeper=KEEPER, batched=st.booleans())
    def keeper_runs(self, keeper, batched):
        """An honest keeper's pass: every live order at its first executable round — a market
        order at its first round after the delay (it fills or is cancelled, never refused), a
        trigger order at its earliest crossing that still executes (a crossing whose fill misses
        the acceptable price is refused and the order keeps resting) — and every expired order
        cancelled for the fee. `batched`: the executions go out as one execute_orders (each
        trigger order at all its executable crossings: the first that executes acts, the rest
        are skipped), at most MAX_BATCH of them per pass."""
        s = self.s
        executor = self.keepers[keeper]
        batch = []
        for order_id, o in self.live_orders():
            lingering = o.state == STATE_CANCELLED
            if o.kind == KIND_MARKET:
                if s.now >= o.expiry:
                    self.cancel(s.attacker, order_id)
                    self.events["keeper pass: market order expired"] += 1
                    continue
                round_id = self.first_round(o.market_id, o.not_before)
                if round_id is None or s.now - self.rounds[o.market_id][round_id][1] > HEARTBEAT:
                    continue  # no round yet, or it is already too old for the oracle
                if batched:
                    batch.append((order_id, round_id))
                    continue
                result = self.execute(order_id, round_id, executor)
                self.events[f"keeper pass: market order {'filled' if result.filled else 'cancelled'}"] += 1
                continue
            crossings = self.crossings(o, executable_only=True)
            if batched:
                batch += [(order_id, round_id) for round_id in crossings]
            for round_id in [] if batched else crossings:
                try:
                    result = self.execute(order_id, round_id, executor)
                except ModelRevert as revert:
                    # a late execution fails whole (the order was cancelled); an open one only
                    # for its acceptable price, and keeps resting
                    assert revert.reason == REASON_ACCEPTABLE or (
                        lingering and revert.reason.startswith((LATE_ESCROW, NOTHING_TO_REDUCE, "exchange: "))
                    ), revert.reason
                    self.events[f"keeper pass: {'late ' if lingering else ''}crossing refused: {revert.reason}"] += 1
                    continue
                outcome = "filled" if result.filled else "cancelled"
                self.events[f"keeper pass: {'late ' if lingering else ''}{KIND_NAMES[o.kind]} {outcome}"] += 1
                break
            else:
                if not crossings and not lingering and s.now >= o.expiry + s.model.order_params.max_order_age:
                    self.cancel(s.attacker, order_id)
                    self.events["keeper pass: trigger order expired"] += 1
        if batch:
            acted = self.execute_batch(batch[:MAX_BATCH], executor)
            self.events[f"keeper pass in one batch: {'some' if acted else 'none'} acted"] += 1

    @step(i=ACCOUNT)
    def keeper_liquidates(self, i):
        """A liquidation keeper closes an unhealthy account's positions (refused for a healthy
        one): its resting reduce-only orders then have nothing left to reduce, its pending
        market order still executes against what is left."""
        s = self.s
        who, sub = self.account(i)
        try:
            s.liquidate(s.keeper, who, sub)
        except ModelRevert as revert:
            assert revert.reason == "liquidator: account healthy", revert.reason
            return
        self.events["liquidated"] += 1

    # -- the oracle and time ------------------------------------------------------------------

    @precondition(lambda self: any(o.kind != KIND_MARKET for _, o in self.live_orders()))
    @step(pick=PICK, where=st.sampled_from(["at", "through", "through", "short"]), ticks=st.integers(0, 50),
          bps=st.integers(0, 200), seconds=st.sampled_from([0, 0, 1, 5]))
    def price_reaches_trigger(self, pick, where, ticks, bps, seconds):
        """A round exactly at a live trigger order's trigger (on the feed's grid), through it by a
        few ticks or basis points, or just short of it; sometimes in the same second."""
        live = [o for _, o in self.live_orders() if o.kind != KIND_MARKET]
        o = live[pick % len(live)]
        fires = firing_direction(o.kind, o.size_delta)
        distance = ticks * FEED_TO_WAD + o.trigger_price * bps // 10_000
        price = {"at": o.trigger_price, "through": o.trigger_price + fires * distance,
                 "short": o.trigger_price - fires * max(distance, FEED_TO_WAD)}[where]
        self.advance(seconds)
        self.publish(o.market_id, price)

    @step(market_id=MARKET, bps=MOVE_BPS, seconds=st.sampled_from([0, 0, 1, 12]))
    def oracle_moves(self, market_id, bps, seconds):
        """A new round with the price moved up or down (a gap up to +-30 %)."""
        self.advance(seconds)
        self.publish(market_id, self.s.model.index[market_id] * (10_000 + bps) // 10_000)

    @step(seconds=SECONDS)
    def time_passes(self, seconds):
        """Time passes (funding accrues, orders age and expire); the pusher keeps the feeds
        fresh with rounds at the current prices."""
        self.advance(seconds)

    # -- the owner ----------------------------------------------------------------------------

    @step(
        delay=DELAY,
        age=AGE,
        fee=FEE,
        max_open=MAX_OPEN,
        wrong=st.sampled_from([None, None, None, "delay", "age", "fee", "max open", "not the owner"]),
    )
    def owner_sets_order_params(self, delay, age, fee, max_open, wrong):
        """New order parameters within the bounds (orders already committed keep their fee,
        delay and expiry); outside them, or from anyone but the owner: refused with the reason."""
        s = self.s
        params = OrderParams(delay, max(age, delay + 1), fee, max_open)
        if wrong == "not the owner":
            with boa.reverts("ownable: caller is not the owner"), boa.env.prank(s.attacker):
                s.order_book.set_order_params(params.as_tuple())
            return
        if wrong is not None:
            params = {
                "delay": OrderParams(0 if delay % 2 else MAX_MIN_ORDER_DELAY + 1, MAX_MAX_ORDER_AGE, fee, max_open),
                "age": OrderParams(delay, delay if age % 2 else MAX_MAX_ORDER_AGE + 1, fee, max_open),
                "fee": OrderParams(delay, max(age, delay + 1), MAX_EXECUTION_FEE + fee, max_open),
                "max open": OrderParams(delay, max(age, delay + 1), fee, 0 if max_open % 2 else MAX_OPEN_ORDERS + 1),
            }[wrong]
            before = s.model.order_params
            reason = refusal(s.model.set_order_params, params)
            with boa.reverts(reason), boa.env.prank(s.owner):
                s.order_book.set_order_params(params.as_tuple())
            assert s.model.order_params == before
            self.events[f"order params refused: {reason}"] += 1
            return
        s.set_order_params(**params.__dict__)
        (event,) = [e for e in s.order_book.get_logs() if type(e).__name__ == "OrderParamsSet"]
        fields = (event.min_order_delay, event.max_order_age, event.execution_fee, event.max_open_orders)
        assert fields == params.as_tuple()
        self.events["order params set"] += 1

    @step(market_id=MARKET, size_pct=st.integers(5, 300), oi_pct=st.integers(50, 3_000), restore=st.booleans())
    def owner_sets_market_limits(self, market_id, size_pct, oi_pct, restore):
        """The market's maximum position size and open-interest caps move (orders committed
        under the old limits may fail at execution, or now be refused at commit)."""
        s = self.s
        if restore:
            s.set_market_params(
                market_id, max_position_size=10_000 * WAD, max_long_oi=100_000 * WAD, max_short_oi=100_000 * WAD
            )
            return
        size_cap = SIZE_LIMIT[market_id] * size_pct // 100
        oi_cap = SIZE_LIMIT[market_id] * oi_pct // 100
        s.set_market_params(market_id, max_position_size=size_cap, max_long_oi=oi_cap, max_short_oi=oi_cap)


# ============================================================================================
# the test
# ============================================================================================


def test_orders(fuzz_settings, fuzz_stats):
    run_machine(OrderMachine, fuzz_settings, fuzz_stats)
