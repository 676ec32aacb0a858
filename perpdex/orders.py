"""Reference model of contracts/OrderBook.vy: two-step orders, exactly as the contract does them.

Mixed into `perpdex.model.ExchangeModel`. The round an order executes at is given as a
`RoundPrice` (what `IndexOracle.round_price` returns for the round ids the executor names); the
model checks it exactly as the contract does and fills at its price through the exchange model.

Order ids encode where the order lives: seq << 200 | slot << 192 | sub_account << 160 | owner.
A sub-account's slot (0..15) is reused by its next order (the seq grows), so an order that ended
before its slot was reused is found in the events only, as on-chain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from perpdex.fixed_point import WAD

KIND_MARKET, KIND_LIMIT, KIND_STOP_LOSS, KIND_TAKE_PROFIT = 0, 1, 2, 3
KIND_NAMES = {KIND_MARKET: "market", KIND_LIMIT: "limit", KIND_STOP_LOSS: "stop-loss", KIND_TAKE_PROFIT: "take-profit"}
STATE_NONE, STATE_OPEN, STATE_EXECUTED, STATE_CANCELLED = 0, 1, 2, 3
STATE_NAMES = {STATE_OPEN: "open", STATE_EXECUTED: "executed", STATE_CANCELLED: "cancelled"}

MAX_OPEN_ORDERS = 16
MAX_MIN_ORDER_DELAY = 600
MAX_MAX_ORDER_AGE = 2 * 86400
MAX_EXECUTION_FEE = 50 * WAD
MAX_TRIGGER_LIFETIME = 365 * 86400
MAX_SUB_ACCOUNT = 2**32 - 1
MAX_PRICE = 2**128 - 1
ROOM_MAX_AGE = 60  # seconds a computed open-interest room stays in use (OrderBook.ROOM_MAX_AGE)
REASON_ACCEPTABLE = "exchange: price beyond acceptable"

ORDER_ESCROW = "order_escrow"  # the vault's ledger account of escrowed execution fees


@dataclass(frozen=True)
class OrderParams:
    min_order_delay: int = 1
    max_order_age: int = 3600
    execution_fee: int = 0
    max_open_orders: int = MAX_OPEN_ORDERS

    def as_tuple(self) -> tuple[int, int, int, int]:
        """The contract's OrderParams struct, in field order."""
        return (self.min_order_delay, self.max_order_age, self.execution_fee, self.max_open_orders)


@dataclass(frozen=True)
class RoundPrice:
    price: int  # median of the named rounds (WAD)
    previous: int  # median of the rounds before them (WAD)
    published: int  # earliest updatedAt of the named rounds
    previous_published: int  # latest updatedAt of the rounds before them


@dataclass(frozen=True)
class Order:
    owner: str
    sub_account: int
    market_id: int
    size_delta: int
    acceptable_price: int
    kind: int
    trigger_price: int
    reduce_only: bool
    not_before: int
    expiry: int
    fee: int
    state: int
    cancelled_at: int = 0

    @property
    def account(self) -> tuple[str, int]:
        return (self.owner, self.sub_account)


@dataclass(frozen=True)
class ExecutionResult:
    filled: bool
    size_delta: int = 0  # what was filled (clipped for reduce-only)
    fill_price: int = 0
    reason: str = ""  # the cancellation reason when not filled
    fee: int = 0


def order_id_of(owner: str, sub_account: int, slot: int, seq: int) -> int:
    return (seq << 200) | (slot << 192) | (sub_account << 160) | int(owner, 16)


def decode_order_id(order_id: int) -> tuple[str, int, int, int]:
    """(owner as a checksum-free 0x address, sub_account, slot, seq)."""
    owner = "0x" + format(order_id & (2**160 - 1), "040x")
    return owner, (order_id >> 160) & MAX_SUB_ACCOUNT, (order_id >> 192) & 255, order_id >> 200


def triggered(kind: int, size_delta: int, trigger: int, index: int) -> bool:
    """Limit and take-profit fire at or better than the trigger; stop-loss through it the other way."""
    if kind == KIND_STOP_LOSS:
        return index >= trigger if size_delta > 0 else index <= trigger
    return index <= trigger if size_delta > 0 else index >= trigger


def exchange_reason(reason: str) -> bool:
    """Whether an exchange refusal is the order's own (so the order is cancelled, not reverted)."""
    return reason.startswith("exchange: ") and len(reason) <= 96


def _require(condition: bool, reason: str) -> None:
    from perpdex.model import ModelRevert

    if not condition:
        raise ModelRevert(reason)


class OrderBookMixin:
    """contracts/OrderBook.vy over the exchange model (mixed into ExchangeModel)."""

    # state lives in ExchangeModel's fields: order_params, order_slots ((account, slot) -> the
    # latest Order there), order_seq ((account, slot) -> its seq), order_books (account ->
    # [open slot mask, lingering slot mask, pending market orders]), order_ids (id -> (account, slot))

    def _reserve_open_interest(self, notional_wad2: int) -> str:
        """Take the notional (rounded up) from the cached room under the global open-interest
        cap, recomputing it first when older than ROOM_MAX_AGE; or the refusal."""
        need = -(-notional_wad2 // WAD)
        stamp, room = self.oi_room_cache
        if self.now > stamp + ROOM_MAX_AGE:
            room = self.refresh_open_interest_room()
            stamp = self.now
        if need > room:
            return f"order: open interest cap, room left {room // WAD} USD"
        self.oi_room_cache = (stamp, room - need)
        return ""

    def fresh_open_interest_room(self) -> int:
        """max_oi_ratio x the liquidity vault's value (net of deficits) - open interest notional."""
        value = self.liquidity_vault_value()
        if value <= 0:
            return 0
        cap = value * self.max_oi_ratio // WAD
        return min(max(0, cap - self.open_interest_notional()), 2**192 - 1)

    def refresh_open_interest_room(self) -> int:
        """OrderBook.refresh_open_interest_room: recompute the room and stamp it now."""
        room = self.fresh_open_interest_room()
        self.oi_room_cache = (self.now, room)
        return room

    def open_interest_room(self) -> int:
        """The room the next risk-increasing execution would see now (the cache while it is at
        most ROOM_MAX_AGE old, else recomputed)."""
        stamp, room = self.oi_room_cache
        return room if self.now <= stamp + ROOM_MAX_AGE else self.fresh_open_interest_room()

    def _book(self, account) -> list[int]:
        return self.order_books.setdefault(account, [0, 0, 0])

    # -- parameters ----------------------------------------------------------------------------

    def set_order_params(self, p: OrderParams) -> None:
        _require(1 <= p.min_order_delay <= MAX_MIN_ORDER_DELAY, "order: min order delay out of bounds")
        _require(p.min_order_delay < p.max_order_age <= MAX_MAX_ORDER_AGE, "order: max order age out of bounds")
        _require(p.execution_fee <= MAX_EXECUTION_FEE, "order: execution fee above the cap")
        _require(1 <= p.max_open_orders <= MAX_OPEN_ORDERS, "order: max open orders out of bounds")
        self.order_params = p

    # -- views ---------------------------------------------------------------------------------

    def order(self, order_id: int) -> Order:
        owner, sub, slot, seq = self._locate(order_id)
        return self.order_slots[((owner, sub), slot)]

    def open_orders(self, account) -> list[int]:
        mask = self._book(account)[0]
        return [
            order_id_of(account[0], account[1], slot, self.order_seq[(account, slot)])
            for slot in range(MAX_OPEN_ORDERS)
            if mask >> slot & 1
        ]

    def pending_market_orders(self, account) -> int:
        """Market orders that can still execute: one stops counting at its expiry, cancelled or not."""
        book = self._book(account)
        if not book[2]:
            return 0
        return sum(
            1
            for slot in range(MAX_OPEN_ORDERS)
            if book[0] >> slot & 1
            and self.order_slots[(account, slot)].kind == KIND_MARKET
            and self.now < self.order_slots[(account, slot)].expiry
        )

    def _locate(self, order_id: int) -> tuple[str, int, int, int]:
        """(owner, sub_account, slot, seq) of a stored order, as OrderBook._load."""
        _, _, slot, seq = decode_order_id(order_id)
        _require(slot < MAX_OPEN_ORDERS, "order: unknown order")
        where = self.order_ids.get(order_id)
        _require(where is not None and self.order_seq.get(where) == seq, "order: unknown order")
        (owner, sub), slot = where
        return owner, sub, slot, seq

    # -- commit --------------------------------------------------------------------------------

    def commit_order(
        self,
        account,
        market_id: int,
        size_delta: int,
        acceptable_price: int,
        kind: int,
        trigger_price: int = 0,
        reduce_only: bool = False,
        expiry: int = 0,
    ) -> int:
        return self._transaction(
            self._commit_order, account, market_id, size_delta, acceptable_price, kind, trigger_price, reduce_only, expiry
        )

    def _commit_order(self, account, market_id, size_delta, acceptable_price, kind, trigger_price, reduce_only, expiry):
        owner, sub = account
        _require(sub <= MAX_SUB_ACCOUNT, "order: sub-account above 2**32 - 1")
        _require(size_delta != 0, "order: zero size")
        _require(kind <= KIND_TAKE_PROFIT, "order: unknown kind (0 market, 1 limit, 2 stop-loss, 3 take-profit)")
        max_size = self.params[market_id].max_position_size if market_id in self.params else 0
        _require(max_size != 0, "order: unknown market")
        _require(abs(size_delta) <= max_size, f"order: size above the market's max position size of {max_size} (WAD)")
        p = self.order_params
        horizon = self.now + p.max_order_age
        if kind == KIND_MARKET:
            _require(trigger_price == 0, "order: a market order takes no trigger price")
        else:
            _require(trigger_price > 0, "order: zero trigger price")
            _require(trigger_price <= MAX_PRICE, "order: trigger price out of range")
            horizon = self.now + MAX_TRIGGER_LIFETIME
            index = self.index[market_id]
            _require(
                not triggered(kind, size_delta, trigger_price, index),
                f"order: trigger already reached at the index {index} (WAD); use a market order",
            )
            if kind != KIND_LIMIT:
                reduce_only = True
        not_before = self.now + p.min_order_delay
        order_expiry = expiry or horizon
        _require(order_expiry > not_before, "order: expiry before the order can execute")
        _require(order_expiry <= horizon, f"order: expiry after the latest allowed, {horizon}")

        slot = self._free_slot(account, p)
        seq = self.order_seq.get((account, slot), 0) + 1
        fee = p.execution_fee
        if fee:
            self._escrow_fee(account, fee)
        book = self._book(account)
        book[0] |= 1 << slot
        if kind == KIND_MARKET:
            book[2] += 1
        self.order_seq[(account, slot)] = seq
        order_id = order_id_of(owner, sub, slot, seq)
        self.order_ids[order_id] = (account, slot)
        self.order_slots[(account, slot)] = Order(
            owner, sub, market_id, size_delta, min(acceptable_price, MAX_PRICE), kind, trigger_price,
            reduce_only, not_before, order_expiry, fee, STATE_OPEN,
        )
        return order_id

    def _free_slot(self, account, p: OrderParams) -> int:
        """The lowest slot neither open nor held by a cancelled trigger order that an earlier
        round may still execute (freed `max_order_age` after its cancellation)."""
        book = self._book(account)
        open_mask, linger = book[0], book[1]
        _require(bin(open_mask).count("1") < p.max_open_orders,
                 f"order: too many open orders, the maximum is {p.max_open_orders}")
        held = open_mask | linger
        for slot in range(MAX_OPEN_ORDERS):
            if not held >> slot & 1:
                return slot
        for slot in range(MAX_OPEN_ORDERS):
            if not open_mask >> slot & 1:
                stored = self.order_slots.get((account, slot))
                cancelled_at = stored.cancelled_at if stored else 0
                if self.now > cancelled_at + p.max_order_age:
                    book[1] &= ~(1 << slot)
                    return slot
        _require(False, "order: every slot is held by a cancelled order that can still execute; retry later")

    def _escrow_fee(self, account, fee: int) -> None:
        """Vault.escrow_fee: from the sub-account's cash into the escrow (only the cash is checked)."""
        _require(fee <= self.cash_of(account), "vault: execution fee above cash")
        self._credit(account, -fee)
        self._credit(ORDER_ESCROW, fee)

    def _release_fee(self, payee, fee: int) -> None:
        if fee:
            self._credit(ORDER_ESCROW, -fee)
            self._credit(payee, fee)

    # -- cancel --------------------------------------------------------------------------------

    def cancel_order(self, order_id: int, caller: str) -> None:
        return self._transaction(self._cancel_order, order_id, caller)

    def _cancel_order(self, order_id: int, caller: str) -> None:
        owner, sub, slot, _ = self._locate(order_id)
        account = (owner, sub)
        o = self.order_slots[(account, slot)]
        _require(o.state == STATE_OPEN, "order: not open")
        p = self.order_params
        book = self._book(account)
        cancelled_at = 0
        is_owner = caller.lower() == owner.lower()
        if o.kind == KIND_MARKET:
            _require(self.now >= o.expiry, f"order: a market order cannot be cancelled before it expires at {o.expiry}")
            book[2] -= 1
        elif is_owner:
            cancelled_at = self.now
            book[1] |= 1 << slot
        else:
            _require(self.now >= o.expiry + p.max_order_age,
                     f"order: not expired; anyone may cancel it from {o.expiry + p.max_order_age}")
        book[0] &= ~(1 << slot)
        self.order_slots[(account, slot)] = replace(o, state=STATE_CANCELLED, cancelled_at=cancelled_at)
        self._release_fee(account if is_owner else (caller, 0), o.fee)

    # -- execute -------------------------------------------------------------------------------

    def execute_order(self, order_id: int, executor: str, rp: RoundPrice) -> ExecutionResult:
        return self._transaction(self._execute_order, order_id, executor, rp)

    def _execute_order(self, order_id: int, executor: str, rp: RoundPrice) -> ExecutionResult:
        from perpdex.model import ModelRevert

        owner, sub, slot, _ = self._locate(order_id)
        account = (owner, sub)
        o = self.order_slots[(account, slot)]
        late = o.state == STATE_CANCELLED and o.cancelled_at != 0
        _require(o.state == STATE_OPEN or late, "order: not open")
        p = self.order_params
        if o.kind == KIND_MARKET:
            _require(self.now < o.expiry, "order: expired")
            _require(rp.published >= o.not_before,
                     f"order: round published before the order's delay ended at {o.not_before}")
            _require(rp.previous_published < o.not_before, "order: not the first round after the order's delay")
        else:
            _require(rp.published >= o.not_before, "order: round published before the order could trigger")
            # a round published in the second of the cancellation is not published after it
            end = min(o.expiry, o.cancelled_at + 1) if late else o.expiry
            _require(rp.published < end, "order: round published after the order's expiry or cancellation")
            _require(self.now <= rp.published + p.max_order_age, "order: triggering round too old to execute")
            _require(triggered(o.kind, o.size_delta, o.trigger_price, rp.price), "order: not triggered at this round")
            _require(not triggered(o.kind, o.size_delta, o.trigger_price, rp.previous),
                     "order: already triggered at the round before (not the crossing)")

        size_delta, reason, fill_price = o.size_delta, "", 0
        if o.reduce_only:
            size = self.position(account, o.market_id).size
            if size == 0 or (size > 0) == (size_delta > 0):
                reason = "order: nothing left to reduce"
                _require(not late, reason)
            elif abs(size_delta) > abs(size):
                size_delta = -size

        if not reason:
            # the global open-interest cap (contracts/OrderBook.vy `_reserve_open_interest`)
            size = self.position(account, o.market_id).size
            grown = abs(size + size_delta) - abs(size)
            if grown > 0:
                reason = self._reserve_open_interest(grown * rp.price)
                _require(not (reason and late), reason)

        if not reason:
            saved_index = self.index.get(o.market_id)
            self.index[o.market_id] = rp.price
            try:
                fill_price = self._transaction(self._trade, account, o.market_id, size_delta, o.acceptable_price).fill_price
            except ModelRevert as refusal:
                if not exchange_reason(refusal.reason) or late or (
                    o.kind != KIND_MARKET and refusal.reason == REASON_ACCEPTABLE
                ):
                    raise
                reason = refusal.reason
            finally:
                self.index[o.market_id] = saved_index
            if late and o.fee:
                # refunded at the cancellation: charged again from the cash after the fill
                self._escrow_fee(account, o.fee)

        book = self._book(account)
        if late:
            book[1] &= ~(1 << slot)
        else:
            book[0] &= ~(1 << slot)
            if o.kind == KIND_MARKET:
                book[2] -= 1
        self._release_fee((executor, 0), o.fee)
        if not reason:
            self.order_slots[(account, slot)] = replace(o, state=STATE_EXECUTED)
            return ExecutionResult(True, size_delta, fill_price, "", o.fee)
        self.order_slots[(account, slot)] = replace(o, state=STATE_CANCELLED, cancelled_at=0)
        return ExecutionResult(False, 0, 0, reason, o.fee)
