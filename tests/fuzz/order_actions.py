"""The order book in the fuzz machines: committing, executing (one order or a batch) and
cancelling orders on contracts and model, auditing every outcome from its event, and the order
book's invariants read from storage after every step.

`OrderActions` is mixed into `PerpdexMachine` (tests/fuzz/base.py), whose round history
(`rounds`, `round_price`, `first_round`) and oracle freshness (`is_stale`) it uses: the model
knows no freshness, so the refusals only the oracle makes (a stale round, a stale price read by
the margin check, a round without a previous one) are predicted here, in the contract's order
of checks.
"""

from __future__ import annotations

import copy
import re

import boa

from perpdex.model import ModelRevert
from perpdex.orders import (
    KIND_MARKET,
    KIND_NAMES,
    REASON_ACCEPTABLE,
    ROOM_MAX_AGE,
    STATE_CANCELLED,
    STATE_EXECUTED,
    STATE_OPEN,
    ExecutionResult,
    Order,
    triggered,
)
from raw_state import mapping_slot, storage_slots
from system import HEARTBEAT, System

STALE = "oracle: stale price"
NO_PREVIOUS_ROUND = "oracle: no previous round"
NOT_OPEN = "order: not open"
MARGIN_REASONS = ("exchange: insufficient margin", "exchange: trade would leave account bankrupt")
BATCH_GAS = 30_000_000  # execute_orders keeps a million gas for each order of its batch
MASK40 = 2**40 - 1
MASK128 = 2**128 - 1


def brief(reason: str) -> str:
    """A reason with its figures (timestamps, sizes, prices) as N: one event name per reason."""
    return re.sub(r"\d+", "N", reason)


def events_named(logs, name: str) -> list:
    return [e for e in logs if type(e).__name__ == name]


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
        state = (meta >> 53) & 7
        if state == STATE_OPEN and not (self.book(owner, sub_account)[0] >> slot) & 1:
            state = STATE_EXECUTED  # a fill clears the book's bit and leaves the stored state
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
            state=state,
            cancelled_at=(meta >> 136) & MASK40,
        )
        return meta & MASK40, order

    def book(self, owner, sub_account: int) -> list[int]:
        """[open slot mask, lingering slot mask, pending market orders], as the model keeps it."""
        word = self._get(mapping_slot(self.book_slot, owner, sub_account))
        return [word & 0xFFFF, (word >> 16) & 0xFFFF, (word >> 32) & 255]


class OrderActions:
    """Order actions and checks of a fuzz machine (mixed into PerpdexMachine)."""

    # -- the order book's invariants ------------------------------------------------------------

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

    def compare_order_views(self) -> None:
        s = self.s
        assert tuple(s.order_book.order_params()) == s.model.order_params.as_tuple()
        for account in s.model.order_books:
            open_ids = s.model.open_orders(account)
            assert list(s.order_book.open_orders(*account)) == open_ids, f"open orders of {account}"
            for order_id in open_ids:
                s.assert_order_matches(order_id)  # the order view, the escrow and pending views

    # -- commit, execute, cancel ----------------------------------------------------------------

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
        """OrderBook.commit_order on both sides (System.mirror): the ids agree; a refusal raises
        ModelRevert after the contract reverted with the model's reason. The OrderCommitted
        event carries the order as the model stores it. (The stored order, the book and the
        escrow are compared with the model from storage after every step, the order views every
        few steps: System.commit_order's per-call view comparison would repeat them.)"""
        s = self.s
        # a trigger order's commit reads its market's index (the fee escrow checks the cash
        # only): the machines commit those only while the price is fresh
        assert kind == KIND_MARKET or not self.is_stale(market_id), "commit reading a stale price"
        s.accounts.add((who, sub))
        expected, order_id = s.mirror(
            who,
            lambda: s.model.commit_order((who, sub), market_id, size, acceptable, kind, trigger, reduce_only, expiry),
            lambda: s.order_book.commit_order(sub, market_id, size, acceptable, kind, trigger, reduce_only, expiry),
        )
        assert order_id == expected
        o = s.model.order(order_id)
        (event,) = events_named(s.order_book.get_logs(), "OrderCommitted")
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
        checks; the rest is mirrored (System.mirror, the model fed from the round history, as
        System.execute_order but without its per-call comparisons, which the checks after every
        step make from storage). ModelRevert when refused (the contract reverted with that
        reason). Every fill and cancellation is audited."""
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
        s.accounts.add((executor, 0))
        rp = self.round_price(o.market_id, round_id)
        result, filled = s.mirror(
            executor,
            lambda: s.model.execute_order(order_id, executor, rp),
            lambda: s.order_book.execute_order(order_id, [round_id]),
        )
        assert filled == result.filled
        assert s.raw.account(executor, 0)[0] == executor_cash + o.fee, "the executor earns the fee"
        (event,) = events_named(s.order_book.get_logs(), "OrderExecuted" if result.filled else "OrderCancelled")
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
        s = self.s
        stale = {m for m in s.model.params if self.is_stale(m)}
        if not stale:
            return False
        open_stale = {m for m in stale if s.model.markets[m].long_oi + s.model.markets[m].short_oi}
        if open_stale and self.refreshes_open_interest_room(order_id, o, round_id, executor):
            return True  # the room of the global open-interest cap reads every open market's index
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

    def refreshes_open_interest_room(self, order_id: int, o: Order, round_id: int, executor) -> bool:
        """Whether the execution grows the position while the open-interest room is more than
        ROOM_MAX_AGE old, so that it recomputes the room (the index of every market with open
        interest) before the fill. Refusals the model makes before that point keep their own
        reason."""
        s = self.s
        stamp, _ = s.model.oi_room_cache
        if o.reduce_only or s.now <= stamp + ROOM_MAX_AGE:
            return False
        size = s.model.position(o.account, o.market_id).size
        if abs(size + o.size_delta) <= abs(size):
            return False
        trial = copy.deepcopy(s.model)
        try:
            trial.execute_order(order_id, executor, self.round_price(o.market_id, round_id))
        except ModelRevert:
            return False
        return True

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
            # a trigger order that misses its acceptable price keeps resting
            assert o.kind == KIND_MARKET or result.reason != REASON_ACCEPTABLE, "a trigger order cancelled"
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
