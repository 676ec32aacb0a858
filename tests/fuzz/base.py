"""What every stateful fuzz machine shares: the deployment, the actions on contracts and model,
the oracle's round history, trades through two-step orders, and the checks after every step.

Every action runs on the contracts and on `perpdex.model` and is compared to the wei (that is
what `System` does, tests/system.py); a reverting action must revert with the model's reason.
After every step `PerpdexMachine` checks DESIGN.md invariants 1-3 (`System.check_invariants`),
compares everything the contracts store with the model (`System.assert_state_matches`) and
every stored order and order book with the model's (`OrderStorage`), all from storage reads
(tests/raw_state.py); every VIEW_CHECK_EVERY steps and at the end of each example it compares
every view as well (`System.assert_system_matches` and the order book's views).

Trades are market orders, as traders and keepers make them: committed, executed by a keeper at
the first oracle round published `min_order_delay` later (the price pusher publishes it at the
current price if no round came meanwhile). Every fill and every cancellation at execution is
audited from its event: never at a round published before the order could execute, never
beyond `acceptable_price`, at the first round after the delay (market) or at a crossing round
(trigger orders), the fee paid to the executor.

The model knows no oracle freshness; the machines track it (a feed is stale once HEARTBEAT has
passed since its last round) and expect "oracle: stale price" wherever the contracts read a
stale answer, with the model left untouched.

The system is deployed once per process; each example works on a `fresh` snapshot of it (an
EVM anchor plus a model copy) that is rolled back in `teardown`. The machines are in
tests/fuzz/test_stateful.py (trading, liquidation, liquidity vault) and
tests/fuzz/test_orders_stateful.py (orders); profiles and step counts in tests/fuzz/conftest.py.
"""

from __future__ import annotations

import bisect
import copy
import re
import functools
import os
import sys
import time
from collections import Counter

import boa
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from perpdex.fixed_point import WAD, mul_div_up
from perpdex.model import LIQUIDITY_VAULT, ModelRevert
from perpdex.orders import (
    KIND_MARKET,
    KIND_NAMES,
    KIND_STOP_LOSS,
    REASON_ACCEPTABLE,
    STATE_CANCELLED,
    STATE_EXECUTED,
    STATE_OPEN,
    ExecutionResult,
    Order,
    RoundPrice,
    triggered,
)
from raw_state import mapping_slot, storage_slots
from system import FEED_DECIMALS, HEARTBEAT, System, fresh

BTC, ETH = 0, 1
MARKETS = (BTC, ETH)
INITIAL_PRICE = {BTC: 40_000, ETH: 2_000}
FEED_TO_WAD = 10 ** (18 - FEED_DECIMALS)
TOKEN = 10**6  # one USDC in token units
SCALE = 10**12  # token units -> WAD
MAX_UINT = 2**256 - 1
INT256_MAX = 2**255 - 1
SIZE_LIMIT = {BTC: 5 * WAD, ETH: 100 * WAD}  # scale of random trade sizes

STALE = "oracle: stale price"
NO_PREVIOUS_ROUND = "oracle: no previous round"
NOT_OPEN = "order: not open"
MARGIN_REASONS = ("exchange: insufficient margin", "exchange: trade would leave account bankrupt")
PENDING = "vault: a market order is pending; withdraw after it executes or expires"
BATCH_GAS = 30_000_000  # execute_orders keeps a million gas for each order of its batch
# every view is compared with the model this often (and at the end of each example); the state
# behind them, and the invariants, after every step. A failure that only a view shows shrinks
# to an example padded up to the next view check; PERPDEX_FUZZ_VIEW_EVERY=1 (views after every
# step, ~4x slower) lets the re-run, which replays the saved example, shrink it all the way.
VIEW_CHECK_EVERY = int(os.environ.get("PERPDEX_FUZZ_VIEW_EVERY", "10"))

# ============================================================================================
# the deployment, built once per process
# ============================================================================================

_BASE: System | None = None


def base_system() -> System:
    """BTC-USD at 40,000 and ETH-USD at 2,000 with the default parameters, plus the fuzzers'
    actors (approvals given once). Nothing else: each machine sets itself up per example."""
    global _BASE
    if _BASE is None:
        eoa = boa.env.eoa
        s = System()
        for market_id in MARKETS:
            s.list_market(market_id, ("BTC-USD", "ETH-USD")[market_id], INITIAL_PRICE[market_id])
        s.traders = [boa.env.generate_address(f"fuzz_trader{i}") for i in range(3)]
        s.lps = [boa.env.generate_address(f"fuzz_lp{i}") for i in range(2)]
        s.keeper = boa.env.generate_address("fuzz_keeper")
        s.adl_keeper = boa.env.generate_address("fuzz_adl_keeper")
        s.attacker = boa.env.generate_address("fuzz_attacker")
        s.donor = boa.env.generate_address("fuzz_donor")
        for who in [*s.traders, *s.lps, s.donor, s.attacker]:
            with boa.env.prank(who):
                s.usdc.approve(s.vault.address, MAX_UINT)
                s.usdc.approve(s.liquidity_vault.address, MAX_UINT)
                s.usdc.approve(s.insurance_fund.address, MAX_UINT)
        with boa.env.prank(s.owner):
            s.liquidator.set_adl_keeper(s.adl_keeper, True)
        s.order_storage = OrderStorage(s)  # the storage layout is read once
        boa.env.eoa = eoa
        _BASE = s
    return _BASE


# ============================================================================================
# actions on contracts and model that System does not provide (token-unit amounts, reverts)
# ============================================================================================


def mint(s: System, who, amount: int) -> None:
    if amount > 0:
        with boa.env.prank(s.owner):
            s.usdc.mint(who, amount)


def publish(s: System, market_id: int, index: int) -> None:
    """A new oracle round at `index` (WAD, a multiple of 1e10), on the feed and the model."""
    with boa.env.prank(s.owner):
        s.aggregators[market_id].update_answer(index // FEED_TO_WAD)
    s.model.index[market_id] = index


def deposit(s: System, who, sub: int, amount: int) -> None:
    """Vault.deposit of `amount` token units; a zero amount must revert as in the model."""
    mint(s, who, amount)
    expected, credited = s.mirror(who, lambda: s.model.deposit((who, sub), amount), lambda: s.vault.deposit(sub, amount))
    assert credited == expected == amount * SCALE
    s.accounts.add((who, sub))


def lp_deposit(s: System, lp, amount: int) -> int:
    """LiquidityVault.deposit of `amount` token units; shares == previewDeposit == the model's."""
    mint(s, lp, amount)
    try:
        expected = s.model._transaction(s.model.lp_deposit, lp, amount)
    except ModelRevert as revert:
        with boa.reverts(revert.reason), boa.env.prank(lp):
            s.liquidity_vault.deposit(amount, lp)
        raise
    preview = s.liquidity_vault.previewDeposit(amount)  # quoted only for a deposit that goes through
    with boa.env.prank(lp):
        shares = s.liquidity_vault.deposit(amount, lp)
    assert shares == expected == preview
    assert s.liquidity_vault.balanceOf(lp) == s.model.lv_shares[lp]
    return shares


def lp_redeem(s: System, lp, shares: int) -> int:
    """System.lp_redeem plus ERC-4626: what redeem pays is what previewRedeem quoted."""
    preview = s.liquidity_vault.previewRedeem(shares)
    before = s.usdc.balanceOf(lp)
    assets = s.lp_redeem(lp, shares)  # ModelRevert: the contract reverted with the same reason
    assert assets == preview
    assert s.usdc.balanceOf(lp) == before + assets
    assert s.liquidity_vault.balanceOf(lp) == s.model.lv_shares[lp]
    return assets


def expected_max_redeem(s: System, lp) -> int:
    """ERC-4626 maxRedeem from the model's state: the LP's shares, capped by the vault's cash
    and by what keeps open interest within max_oi_ratio x the remaining value."""
    m = s.model
    total = m.lv_total_assets()
    cash = m.cash_of(LIQUIDITY_VAULT)
    free = 0
    if cash > 0:
        locked = mul_div_up(m.open_interest_notional(), WAD, m.max_oi_ratio * m.scale)
        free = 0 if locked >= total else min(cash // m.scale, total - locked)
    return min(m.lv_shares.get(lp, 0), m.lv_to_shares(free, total))


def refusal(action, *args) -> str:
    """Run an action that must be refused; its reason (the action has checked that the
    contract reverted with the model's reason)."""
    try:
        action(*args)
    except ModelRevert as revert:
        return revert.reason
    raise AssertionError(f"{action.__name__}{args} was not refused")


def size_of(market_id: int, per_mille: int, dust: int) -> int:
    """A trade size up to SIZE_LIMIT with wei-level dust, so that every rounding path runs."""
    size = per_mille * SIZE_LIMIT[market_id] // 1_000
    size = size + dust if size >= 0 else size - dust
    return size or 1


def worst_price(size: int) -> int:
    """The acceptable price that accepts any fill."""
    return MAX_UINT if size > 0 else 0


def brief(reason: str) -> str:
    """A reason with its figures (timestamps, sizes, prices) as N: one event name per reason."""
    return re.sub(r"\d+", "N", reason)


def events_named(logs, name: str) -> list:
    return [e for e in logs if type(e).__name__ == name]


# ============================================================================================
# the order book's storage, compared with the model after every step
# ============================================================================================

MASK40 = 2**40 - 1
MASK128 = 2**128 - 1


class OrderStorage:
    """contracts/OrderBook.vy's packed orders and per-sub-account books, read from storage (the
    packing documented in its STORAGE section), without running the contract."""

    def __init__(self, s: System) -> None:
        self.address = s.order_book.address.canonical_address
        slots = storage_slots(s.order_book)
        self.orders_slot, self.book_slot = slots["_orders"], slots["_book"]

    def _get(self, slot: int) -> int:
        return boa.env.evm.vm.state.get_storage(self.address, slot)

    def order(self, owner, sub_account: int, slot: int) -> tuple[int, Order]:
        """(seq, the order) stored in a sub-account's slot."""
        base = mapping_slot(self.orders_slot, owner, sub_account, slot)
        meta, packed, trigger = self._get(base), self._get(base + 1), self._get(base + 2)
        order = Order(
            owner=owner,
            sub_account=sub_account,
            market_id=(meta >> 40) & 255,
            size_delta=(packed >> 128) - 2**127,
            acceptable_price=packed & MASK128,
            kind=(meta >> 48) & 15,
            trigger_price=trigger,
            reduce_only=bool((meta >> 52) & 1),
            not_before=(meta >> 56) & MASK40,
            expiry=(meta >> 96) & MASK40,
            fee=meta >> 176,
            state=(meta >> 53) & 7,
            cancelled_at=(meta >> 136) & MASK40,
        )
        return meta & MASK40, order

    def book(self, owner, sub_account: int) -> list[int]:
        """[open slot mask, lingering slot mask, pending market orders], as the model keeps it."""
        word = self._get(mapping_slot(self.book_slot, owner, sub_account))
        return [word & 0xFFFF, (word >> 16) & 0xFFFF, (word >> 32) & 255]


# ============================================================================================
# rule decorators and shared strategies
# ============================================================================================


def counted(fn):
    """Count every executed rule as one step of its machine (for steps per second)."""

    @functools.wraps(fn)
    def wrapper(self, **kwargs):
        self.steps += 1
        self.rule_counts[fn.__name__] += 1
        self.keepers_just_ran = False
        return fn(self, **kwargs)

    return wrapper


def step(**strategies):
    """@rule that counts its executions."""
    return lambda fn: rule(**strategies)(counted(fn))


def first_step(**strategies):
    """@initialize that counts its executions."""
    return lambda fn: initialize(**strategies)(counted(fn))


ACCOUNT = st.integers(0, 5)  # 3 traders x 2 sub-accounts (fewer in LiquidityVaultMachine)
MARKET = st.sampled_from(MARKETS)
PER_MILLE = st.integers(-1_000, 1_000)
DUST = st.integers(0, 10**6)
# mostly small moves, often gaps of up to +-30 %
MOVE_BPS = st.one_of(
    st.integers(-300, 300), st.sampled_from([-3_000, -2_000, -1_000, 1_000, 2_000, 3_000]), st.integers(-3_000, 3_000)
)
COLLATERAL = st.one_of(st.integers(1, 100 * TOKEN), st.integers(100 * TOKEN, 50_000 * TOKEN))


# ============================================================================================
# the base machine
# ============================================================================================


class PerpdexMachine(RuleBasedStateMachine):
    """Shared actions (deposit, withdraw, trade through market orders, order execution, prices,
    time, pause) and the per-step checks.

    Oracle freshness is tracked here (the model has no notion of it): a market's feed is stale
    once HEARTBEAT has passed since its last round, and every action that reads that price must
    then revert with "oracle: stale price" while the model stays put. Only TradingMachine lets
    time pass without republishing. The machine keeps every feed's round history (price and
    publication time by round id), from which the keepers name execution rounds.
    """

    N_TRADERS = 3
    SUBS = (0, 1)
    stats: dict = {}

    def __init__(self):
        super().__init__()
        self.started = time.perf_counter()
        self.steps = 0
        self.events = Counter()
        self.rule_counts = Counter()
        self._eoa = boa.env.eoa
        self._fresh = fresh(base_system())
        self.s = self._fresh.__enter__()
        self.s.compare_views = False  # accounts are compared through storage after each action
        self.order_storage = self.s.order_storage
        self.views_checked_at = 0
        self.accounts = [(who, sub) for who in self.s.traders[: self.N_TRADERS] for sub in self.SUBS]
        self.gifts = 0  # token units sent straight to the vault
        self.keepers_just_ran = False
        self.updated_at = {m: self.s.aggregators[m].latestRoundData()[3] for m in MARKETS}
        # round id -> (price in WAD, updatedAt), index 0 unused; and the updatedAt column alone
        self.rounds = {m: self.read_rounds(m) for m in MARKETS}
        self.round_times = {m: [t for _, t in self.rounds[m]] for m in MARKETS}
        self.orders: list[int] = []  # every order id committed, in order
        self.filled: set[int] = set()

    def read_rounds(self, market_id: int) -> list[tuple[int, int]]:
        agg = self.s.aggregators[market_id]
        rounds = [(0, -1)]
        for round_id in range(1, agg.latestRound() + 1):
            _, answer, _, updated_at, _ = agg.getRoundData(round_id)
            rounds.append((answer * FEED_TO_WAD, updated_at))
        return rounds

    def teardown(self):
        try:
            # the last steps' views, unless the example is already failing (or was cut short
            # by hypothesis): a second error here would hide the first from the shrinker
            if self.steps > self.views_checked_at and sys.exc_info()[0] is None:
                self.compare_views()
            empty = {"steps": 0, "examples": 0, "seconds": 0.0, "events": {}}
            stats = self.stats.setdefault(type(self).__name__, empty)
            stats["steps"] += self.steps
            stats["examples"] += 1
            stats["seconds"] += time.perf_counter() - self.started
            for name, count in self.events.items():
                stats["events"][name] = stats["events"].get(name, 0) + count
            rules = stats.setdefault("rules", {})
            for name, count in self.rule_counts.items():
                rules[name] = rules.get(name, 0) + count
        finally:
            self._fresh.__exit__(None, None, None)
            boa.env.eoa = self._eoa

    # -- the checks after every step ----------------------------------------------------------

    @invariant()
    def contracts_match_model_and_invariants_hold(self):
        """After every step: DESIGN.md invariants 1-3, everything the contracts store equal to
        the model to the wei, and the order book's invariants, all read straight from storage
        (tests/raw_state.py, OrderStorage). Every VIEW_CHECK_EVERY steps, and when the example
        ends, every view is compared as well."""
        self.s.check_invariants(gifts=self.gifts)
        self.s.assert_state_matches()
        self.check_order_book()
        if self.steps - self.views_checked_at >= VIEW_CHECK_EVERY:
            self.compare_views()

    def check_order_book(self) -> None:
        """Every stored order and book equals the model's, and from storage alone: the escrow
        holds exactly the fees of the open orders (owner-cancelled ones were refunded), each
        book's pending count is its number of open market orders, its open mask marks exactly
        its open orders, its lingering mask exactly its owner-cancelled trigger orders."""
        s, raw, model = self.s, self.order_storage, self.s.model
        escrowed = 0
        for account, book in model.order_books.items():
            stored_book = raw.book(*account)
            assert stored_book == book, f"order book of {account}"
            open_mask = linger = pending = 0
            for slot in range(16):
                if (account, slot) not in model.order_slots:
                    continue
                seq, order = raw.order(*account, slot)
                assert (seq, order) == (model.order_seq[(account, slot)], model.order_slots[(account, slot)]), (
                    f"order in slot {slot} of {account}"
                )
                if order.state == STATE_OPEN:
                    open_mask |= 1 << slot
                    escrowed += order.fee
                    pending += order.kind == KIND_MARKET
                elif order.state == STATE_CANCELLED and order.cancelled_at:
                    linger |= 1 << slot
            assert stored_book == [open_mask, linger, pending], f"book of {account} against its orders"
        assert s.raw.order_escrow() == escrowed, "escrow against the fees of the open orders"

    def compare_views(self) -> None:
        """Every view against the model. While a feed is stale the views that need its price
        revert, so the comparison then runs on a throwaway snapshot in which the same prices are
        republished (state unchanged)."""
        self.views_checked_at = self.steps
        self.compare_order_views()
        stale = [m for m in MARKETS if self.is_stale(m)]
        if not stale:
            self.s.assert_system_matches()
            return
        with boa.env.anchor():
            for m in stale:
                publish(self.s, m, self.s.model.index[m])
            self.s.assert_system_matches()

    def compare_order_views(self) -> None:
        s = self.s
        assert tuple(s.order_book.order_params()) == s.model.order_params.as_tuple()
        for account in s.model.order_books:
            open_ids = s.model.open_orders(account)
            assert list(s.order_book.open_orders(*account)) == open_ids, f"open orders of {account}"
            for order_id in open_ids:
                s.assert_order_matches(order_id)  # the order view, the escrow and pending views

    # -- oracle rounds and time ---------------------------------------------------------------

    def is_stale(self, market_id: int) -> bool:
        return self.s.now - self.updated_at[market_id] > HEARTBEAT

    def account(self, i: int):
        return self.accounts[i % len(self.accounts)]

    def publish(self, market_id: int, index: int) -> int:
        """A new round at `index` (clamped to 1/100..100x the initial price, rounded down to the
        feed's precision); its round id."""
        low, high = INITIAL_PRICE[market_id] * WAD // 100, INITIAL_PRICE[market_id] * WAD * 100
        index = min(max(index, low), high)
        index -= index % FEED_TO_WAD
        publish(self.s, market_id, index)
        self.updated_at[market_id] = self.s.now
        self.rounds[market_id].append((index, self.s.now))
        self.round_times[market_id].append(self.s.now)
        return len(self.rounds[market_id]) - 1

    def refresh_prices(self) -> None:
        for m in MARKETS:
            self.publish(m, self.s.model.index[m])

    def advance(self, seconds: int) -> None:
        """Time passes (funding accrues). A machine whose feeds must stay fresh publishes the
        heartbeat rounds on the way (OrderMachine)."""
        if seconds > 0:
            self.s.warp(seconds)

    def latest_round(self, market_id: int) -> int:
        return len(self.rounds[market_id]) - 1

    def first_round(self, market_id: int, not_before: int) -> int | None:
        """The first round published at or after `not_before` (a market order's only execution
        round), if there is one yet."""
        round_id = bisect.bisect_left(self.round_times[market_id], not_before)
        return round_id if round_id < len(self.rounds[market_id]) else None

    def round_price(self, market_id: int, round_id: int) -> RoundPrice:
        (price, published), (previous, previous_published) = self.rounds[market_id][round_id], self.rounds[market_id][round_id - 1]
        return RoundPrice(price, previous, published, previous_published)

    # -- orders -------------------------------------------------------------------------------

    def open_order_ids(self) -> list[int]:
        s = self.s
        return [order_id for account in s.model.order_books for order_id in s.model.open_orders(account)]

    def commit(
        self,
        who,
        sub: int,
        market_id: int,
        size: int,
        acceptable: int,
        kind: int = KIND_MARKET,
        trigger: int = 0,
        reduce_only: bool = False,
        expiry: int = 0,
    ) -> int:
        """OrderBook.commit_order on both sides (System.commit_order: the ids, the stored order
        and the escrow agree); a refusal raises ModelRevert after the contract reverted with the
        model's reason. The OrderCommitted event carries the order as stored."""
        s = self.s
        # a trigger order's commit reads its market's index (the fee escrow checks the cash
        # only): the machines commit those only while the price is fresh
        assert kind == KIND_MARKET or not self.is_stale(market_id), "commit reading a stale price"
        order_id = s.commit_order(who, market_id, size, acceptable, kind, trigger, reduce_only, expiry, sub_account=sub)
        o = s.model.order(order_id)
        (event,) = events_named(s.last_logs, "OrderCommitted")
        assert (event.order_id, event.owner, event.sub_account, event.market_id, event.size_delta) == (
            order_id, who, sub, market_id, size,
        )
        assert (event.acceptable_price, event.kind, event.trigger_price, event.reduce_only) == (
            o.acceptable_price, o.kind, o.trigger_price, o.reduce_only,
        )
        assert (event.not_before, event.expiry, event.fee) == (o.not_before, o.expiry, o.fee)
        assert o.not_before == s.now + s.model.order_params.min_order_delay
        self.orders.append(order_id)
        return order_id

    def execute(self, order_id: int, round_id: int, executor=None) -> ExecutionResult:
        """A keeper's OrderBook.execute_order at `round_id`, on both sides. Refusals the model
        cannot see (see `refusal_before_model`) are expected in the contract's order of
        checks; the rest is System.execute_order's mirror. ModelRevert when refused (the
        contract reverted with that reason). Every fill and cancellation is audited."""
        s = self.s
        executor = executor or s.executor
        try:
            o, reason = self.refusal_before_model(order_id, round_id, executor)
        except ModelRevert as revert:  # unknown (never committed, or its slot was reused)
            reason = revert.reason
        if reason is not None:
            with boa.reverts(reason), boa.env.prank(executor):
                s.order_book.execute_order(order_id, [round_id])
            raise ModelRevert(reason)
        size_before = s.model.position(o.account, o.market_id).size
        executor_cash = s.raw.account(executor, 0)[0]
        result = s.execute_order(order_id, round_id, executor)
        assert s.raw.account(executor, 0)[0] == executor_cash + o.fee, "the executor earns the fee"
        (event,) = events_named(s.last_logs, "OrderExecuted" if result.filled else "OrderCancelled")
        size_after = s.model.position(o.account, o.market_id).size
        self.audit_execution(order_id, o, round_id, executor, result, size_before, size_after, event)
        return result

    def refusal_before_model(self, order_id: int, round_id: int, executor) -> tuple[Order, str | None]:
        """The order (ModelRevert if unknown) and the reason the contract refuses its execution
        at `round_id` with before the model's checks could: not open; a round without a previous
        one; a stale round, or a fill whose margin check reads a stale price. None otherwise."""
        s = self.s
        o = s.model.order(order_id)
        late = o.state == STATE_CANCELLED and o.cancelled_at != 0
        if o.state != STATE_OPEN and not late:
            return o, NOT_OPEN
        if round_id & (2**64 - 1) <= 1:
            return o, NO_PREVIOUS_ROUND
        if s.now - self.rounds[o.market_id][round_id][1] > HEARTBEAT:
            return o, STALE
        if self.execution_reads_stale(order_id, o, round_id, executor):
            return o, STALE
        return o, None

    def execute_batch(self, batch: list[tuple[int, int]], executor) -> int:
        """A keeper's OrderBook.execute_orders over (order id, round id) pairs: the model runs
        them one by one, an order it (or the oracle) refuses is skipped and changes nothing.
        The count of orders acted on, their events in order, every outcome audited, the
        executor paid every fee."""
        s = self.s
        acted = []
        for order_id, round_id in batch:
            try:
                o, reason = self.refusal_before_model(order_id, round_id, executor)
                if reason is not None:
                    continue
                size_before = s.model.position(o.account, o.market_id).size
                result = s.model.execute_order(order_id, executor, self.round_price(o.market_id, round_id))
            except ModelRevert:
                continue
            size_after = s.model.position(o.account, o.market_id).size
            acted.append((order_id, o, round_id, result, size_before, size_after))
        s.accounts.add((executor, 0))
        executor_cash = s.raw.account(executor, 0)[0]
        with boa.env.prank(executor):
            count = s.order_book.execute_orders([i for i, _ in batch], [[r] for _, r in batch], gas=BATCH_GAS)
        assert count == len(acted), (count, len(acted))
        assert s.raw.account(executor, 0)[0] == executor_cash + sum(a[1].fee for a in acted), "the executor's fees"
        events = [e for e in s.order_book.get_logs() if type(e).__name__ in ("OrderExecuted", "OrderCancelled")]
        assert len(events) == len(acted)
        for (order_id, o, round_id, result, size_before, size_after), event in zip(acted, events):
            assert type(event).__name__ == ("OrderExecuted" if result.filled else "OrderCancelled")
            self.audit_execution(order_id, o, round_id, executor, result, size_before, size_after, event)
        return count

    def execution_reads_stale(self, order_id: int, o: Order, round_id: int, executor) -> bool:
        """Whether the execution, as the model would run it, reads a stale price on-chain first:
        the margin check after a fill values the account's other open positions at the
        oracle's latest answers. Refusals that come before it keep their own reason; what
        comes after it (a late execution's fee, charged after the fill) is not reached."""
        stale = {m for m in MARKETS if self.is_stale(m)}
        if not stale:
            return False
        s = self.s
        others = set(s.model.open_markets(o.account)) - {o.market_id}
        if not others & stale:
            return False
        trial = copy.deepcopy(s.model)
        try:
            result = trial.execute_order(order_id, executor, self.round_price(o.market_id, round_id))
            reason = "" if result.filled else result.reason
        except ModelRevert as revert:
            reason = revert.reason
        return reason == "" or reason in MARGIN_REASONS or reason.startswith("vault: execution fee")

    def audit_execution(self, order_id, o: Order, round_id, executor, result, size_before, size_after, event) -> None:
        """An execution's event against the order as it was: a fill at a round published once
        the order could execute, before its end, the very first such round for a market order
        and a crossing for a trigger order, within the acceptable price, reduce-only never
        growing the position, the fee to the executor, never twice. A cancellation at
        execution: its reason and the fee to the executor."""
        s = self.s
        price, published = self.rounds[o.market_id][round_id]
        previous, previous_published = self.rounds[o.market_id][round_id - 1]
        assert published >= o.not_before, "executed at a round published before the order could execute"
        if o.kind == KIND_MARKET:
            assert previous_published < o.not_before and s.now < o.expiry, "a market order after its first round"
        else:
            # an owner's cancellation stops the rounds published after its own second
            end = min(o.expiry, o.cancelled_at + 1) if o.cancelled_at else o.expiry
            assert published < end and s.now <= published + s.model.order_params.max_order_age
            assert triggered(o.kind, o.size_delta, o.trigger_price, price), "executed without its trigger"
            assert not triggered(o.kind, o.size_delta, o.trigger_price, previous), "executed past the crossing"
        if result.filled:
            assert order_id not in self.filled, "an order filled twice"
            self.filled.add(order_id)
            assert (event.order_id, event.owner, event.executor, event.sub_account, event.market_id) == (
                order_id, o.owner, executor, o.sub_account, o.market_id,
            )
            assert (event.size_delta, event.fill_price, event.fee) == (result.size_delta, result.fill_price, o.fee)
            assert (event.index_price, event.round_published) == (price, published)
            if o.size_delta > 0:
                assert event.fill_price <= o.acceptable_price, "a buy filled above its acceptable price"
            else:
                assert event.fill_price >= o.acceptable_price, "a sell filled below its acceptable price"
            assert (event.size_delta > 0) == (o.size_delta > 0) and abs(event.size_delta) <= abs(o.size_delta)
            if o.reduce_only:
                assert size_before * size_after >= 0 and abs(size_after) < abs(size_before), "reduce-only grew"
            self.events[f"filled: {KIND_NAMES[o.kind]}"] += 1
        else:
            assert (event.order_id, event.by, event.fee_to, event.fee, event.reason) == (
                order_id, executor, executor, o.fee, result.reason,
            )
            assert o.kind == KIND_MARKET or result.reason != REASON_ACCEPTABLE, "a trigger order cancelled for its price"
            self.events[f"cancelled at execution ({KIND_NAMES[o.kind]}): {result.reason}"] += 1

    def cancel(self, who, order_id: int) -> None:
        """OrderBook.cancel_order by `who`, on both sides (ModelRevert when refused). A market
        order is cancelled only once expired, someone else's trigger order only once no round
        can execute it. Whoever cancels receives the fee (the owner's refund into the order's
        sub-account, anyone else's takings into their sub-account 0); the event says so."""
        s = self.s
        try:
            o = s.model.order(order_id)
        except ModelRevert:
            o = None
        payee = None if o is None else (o.account if who == o.owner else (who, 0))
        before = s.raw.account(*payee)[0] if payee else 0
        s.cancel_order(who, order_id)
        # no free option: a market order only once expired; someone else's order only once no
        # round can execute it any more
        assert o.kind != KIND_MARKET or s.now >= o.expiry, "a market order cancelled before its expiry"
        if who != o.owner and o.kind != KIND_MARKET:
            assert s.now >= o.expiry + s.model.order_params.max_order_age, "a stranger cancelled a live order"
        (event,) = events_named(s.last_logs, "OrderCancelled")
        assert (event.order_id, event.by, event.fee_to, event.fee) == (order_id, who, who, o.fee)
        assert event.reason == ("cancelled by owner" if who == o.owner and o.kind != KIND_MARKET else "expired")
        assert s.raw.account(*payee)[0] == before + o.fee

    # -- trading through market orders ----------------------------------------------------------

    def trade(self, who, sub: int, market_id: int, size: int, acceptable: int | None = None):
        """A market order as a trader and a keeper make it: committed now, executed at the
        first round published `min_order_delay` later (the pusher publishes one at the current
        price if none came). Returns the fill (the model's TradeResult, which the contract's
        matched) or None when the commit is refused, the order is cancelled at execution, or
        the execution reads a stale price (the order then stays pending for a keeper)."""
        s = self.s
        acceptable = worst_price(size) if acceptable is None else acceptable
        try:
            order_id = self.commit(who, sub, market_id, size, acceptable)
        except ModelRevert as revert:
            self.events[f"order refused: {brief(revert.reason)}"] += 1
            return None
        not_before = s.model.order(order_id).not_before
        self.advance(not_before - s.now)
        round_id = self.first_round(market_id, not_before) or self.publish(market_id, s.model.index[market_id])
        try:
            result = self.execute(order_id, round_id)
        except ModelRevert as revert:
            assert revert.reason == STALE, revert.reason
            self.events["market order left pending: stale price"] += 1
            return None
        return s.model.last_trade if result.filled else None  # the audit counted it

    def withdraw(self, who, sub: int, amount: int) -> bool:
        """Vault.withdraw of `amount` token units on both sides; a refused withdrawal reverts
        with the model's reason (a pending market order first, then the stale-price one) and
        changes nothing."""
        s, account = self.s, (who, sub)
        open_markets = s.model.open_markets(account)
        pending = s.model.pending_market_orders(account)
        if amount > 0 and not pending and any(self.is_stale(m) for m in open_markets):
            with boa.reverts(STALE), boa.env.prank(who):
                s.vault.withdraw(sub, amount)
            self.events["withdraw refused: stale price"] += 1
            return False
        try:
            s.model.withdraw(account, amount)  # checks before it changes anything
        except ModelRevert as revert:
            with boa.reverts(revert.reason), boa.env.prank(who):
                s.vault.withdraw(sub, amount)
            assert (revert.reason == PENDING) == (amount > 0 and pending > 0), revert.reason
            self.events[f"withdraw refused: {revert.reason}"] += 1
            return False
        before = s.usdc.balanceOf(who)
        with boa.env.prank(who):
            debited = s.vault.withdraw(sub, amount)
        assert debited == amount * SCALE
        assert s.usdc.balanceOf(who) == before + amount
        if open_markets:
            # DESIGN.md invariant 5: nobody withdraws below the initial requirement
            _, equity, initial, _ = s.exchange.account_state(who, sub)
            assert equity >= initial, (equity, initial)
        self.events["withdraw"] += 1
        return True

    def levered_size(self, account, market_id: int, side: int, percent: int) -> int:
        """The size that uses `percent` % of the account's free margin at the initial margin
        ratio: around 100 % it lands on both sides of "insufficient margin"."""
        view = self.s.model.account_view(account)
        free = view.equity - max(view.initial, view.maintenance)
        if free <= 0:
            return side * SIZE_LIMIT[market_id] // 100
        notional = free * WAD // self.s.model.params[market_id].initial_margin_ratio
        return side * max(notional * WAD // self.s.model.index[market_id] * percent // 100, 1)

    # -- rules --------------------------------------------------------------------------------

    @first_step(amounts=st.lists(st.integers(0, 50_000), min_size=6, max_size=6))
    def traders_fund_accounts(self, amounts):
        for (who, sub), usd in zip(self.accounts, amounts):
            if usd:
                self.s.deposit(who, usd, sub)

    @step(i=ACCOUNT, amount=st.one_of(st.just(0), COLLATERAL))
    def deposit(self, i, amount):
        who, sub = self.account(i)
        try:
            deposit(self.s, who, sub, amount)
        except ModelRevert as revert:
            assert amount == 0 and revert.reason == "vault: zero amount"

    @step(
        i=ACCOUNT,
        mode=st.sampled_from(["percent", "all", "one more", "any", "zero"]),
        percent=st.integers(1, 100),
        any_amount=st.integers(1, 10**12),
    )
    def withdraw_collateral(self, i, mode, percent, any_amount):
        who, sub = self.account(i)
        free = self.s.model.account_view((who, sub)).withdrawable // SCALE  # token units
        amount = {
            "percent": free * percent // 100,
            "all": free,
            "one more": free + 1,  # always above the free collateral: must be refused
            "any": any_amount,
            "zero": 0,
        }[mode]
        done = self.withdraw(who, sub, amount)
        if mode in ("one more", "zero"):
            assert not done

    @step(i=ACCOUNT, market_id=MARKET, per_mille=PER_MILLE, dust=DUST)
    def trade_random(self, i, market_id, per_mille, dust):
        who, sub = self.account(i)
        self.trade(who, sub, market_id, size_of(market_id, per_mille, dust))

    @step(i=ACCOUNT, market_id=MARKET, side=st.sampled_from([1, -1]), percent=st.integers(30, 130))
    def trade_levered(self, i, market_id, side, percent):
        """Open or add up to (and past) the initial margin limit."""
        account = self.account(i)
        self.trade(*account, market_id, self.levered_size(account, market_id, side, percent))

    @step(i=ACCOUNT, market_id=MARKET, per_mille=PER_MILLE, dust=DUST, slack=st.integers(-2, 2))
    def trade_with_slippage_bound(self, i, market_id, per_mille, dust, slack):
        """acceptable_price a few wei around the quoted fill: the bound is exact (the order
        executes at a round at the quoted index)."""
        who, sub = self.account(i)
        s = self.s
        size = size_of(market_id, per_mille, dust)
        try:
            quote = s.model.fill_price(market_id, size)
        except ModelRevert:
            quote = s.model.index[market_id]
        else:
            if not self.is_stale(market_id):
                assert s.exchange.fill_price(market_id, size) == quote  # the quoting view
        acceptable = max(quote + slack if size > 0 else quote - slack, 0)
        fill = self.trade(who, sub, market_id, size, acceptable)
        if fill is not None:
            assert fill.fill_price == quote
            assert slack >= 0

    @step(i=ACCOUNT, market_id=MARKET, extra=st.integers(0, 1_000))
    def close_or_flip(self, i, market_id, extra):
        """Close a position exactly or flip it to the other side (open one if there is none)."""
        who, sub = self.account(i)
        size = self.s.model.position((who, sub), market_id).size
        flip = (1 if size > 0 else -1) * extra * SIZE_LIMIT[market_id] // 1_000
        if size:
            fill = self.trade(who, sub, market_id, -size - flip)
            if fill is not None:
                assert self.s.exchange.position_state(who, sub, market_id)[0] == -flip
        else:
            self.trade(who, sub, market_id, flip or SIZE_LIMIT[market_id] // 10)

    @step(market_id=MARKET, bps=MOVE_BPS)
    def move_price(self, market_id, bps):
        self.publish(market_id, self.s.model.index[market_id] * (10_000 + bps) // 10_000)

    @step(paused=st.sampled_from([False, False, False, True]))
    def guardian_pauses(self, paused):
        """The guardian switches reduce-only mode; nobody else can."""
        s = self.s
        with boa.reverts("exchange: caller is not the guardian"), boa.env.prank(s.attacker):
            s.exchange.set_paused(not paused)
        with boa.env.prank(s.owner):  # System.owner is the guardian
            s.exchange.set_paused(paused)
        s.model.paused = paused
        assert s.exchange.paused() == paused


# ============================================================================================
# running a machine
# ============================================================================================


def run_machine(machine: type[PerpdexMachine], fuzz_settings, fuzz_stats) -> None:
    machine.stats = fuzz_stats
    base_system()  # deploy once, outside the timed run
    started = time.perf_counter()
    try:
        run_state_machine_as_test(machine, settings=fuzz_settings)
    finally:
        stats = fuzz_stats.get(machine.__name__)
        if stats is not None:
            stats["wall_seconds"] = stats.get("wall_seconds", 0.0) + time.perf_counter() - started
