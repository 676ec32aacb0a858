"""Trades are two-step orders (contracts/OrderBook.vy): the wallet commits an order, a keeper
executes it at a later oracle round. `commit` checks and sends one; `wait_for` follows it (a
bounded wait) to its fill or its cancellation; `cancel` cancels one; `open_orders` reads them.

Before a commit, the order is simulated twice: the commit itself (the order book's checks) and,
for market and limit orders, its execution now (`simulate.execution_check`: margin and price
bound). Stop-loss and take-profit orders only reduce a position: no margin to check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from perpdex.orders import (
    KIND_LIMIT,
    KIND_MARKET,
    KIND_NAMES,
    KIND_STOP_LOSS,
    KIND_TAKE_PROFIT,
    MAX_PRICE,
    STATE_CANCELLED,
    STATE_EXECUTED,
    STATE_OPEN,
)
from perpdex.wallet.abi import to_checksum
from perpdex.wallet.client import Wallet
from perpdex.wallet.rpc import Reverted
from perpdex.wallet.simulate import execution_check, order_refusal, plain, refuse, room_check
from perpdex.wallet.units import (
    CliError,
    acceptable_price,
    base_amount,
    parse_expiry,
    positive_amount,
    price,
    relative,
    size_text,
    usd,
    utc_time,
)

ORDER_KINDS = {
    "market": KIND_MARKET, "limit": KIND_LIMIT, "stop": KIND_STOP_LOSS, "stop-loss": KIND_STOP_LOSS,
    "take-profit": KIND_TAKE_PROFIT, "tp": KIND_TAKE_PROFIT,
}
DEFAULT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.5
_clock, _sleep = time.monotonic, time.sleep


@dataclass(frozen=True)
class OrderSpec:
    """An order as typed, validated before any connection."""

    kind: int
    market: str
    size_delta: int
    trigger: int  # WAD, 0 for market orders
    slippage: Decimal
    acceptable: int | None  # WAD; None: from the slippage
    reduce_only: bool
    expiry: str | None


def order_spec(code: int, market: str, size: int, trigger: str | None, slippage: Decimal,
               acceptable: str | None, reduce_only: bool, explicit_slippage: bool, expiry: str | None) -> OrderSpec:
    """An order as typed, checked before connecting (the market's name is checked after)."""
    if code == KIND_MARKET and trigger is not None:
        raise CliError("a market order takes no --price/--trigger: it executes at the next price")
    if code != KIND_MARKET and trigger is None:
        raise CliError(f"a {KIND_NAMES[code]} order needs its {'--price' if code == KIND_LIMIT else '--trigger'}")
    if explicit_slippage and acceptable is not None:
        raise CliError("give either --slippage or --acceptable, not both")
    trigger_wad = 0 if trigger is None else positive_amount(trigger, 18, "--price" if code == KIND_LIMIT else "--trigger")
    bound = None
    if acceptable is not None:
        bound = (MAX_PRICE if size > 0 else 0) if acceptable.strip().lower() == "any" else positive_amount(
            acceptable, 18, "--acceptable")
    return OrderSpec(code, market, size, trigger_wad, slippage, bound, reduce_only, expiry)


@dataclass(frozen=True)
class Order:
    order_id: int
    owner: str
    sub_account: int
    market_id: int
    symbol: str
    size_delta: int
    acceptable_price: int
    kind: int
    trigger_price: int
    reduce_only: bool
    not_before: int
    expiry: int
    fee: int
    state: int = STATE_OPEN

    @property
    def side(self) -> str:
        return "buy" if self.size_delta > 0 else "sell"

    def acceptable_text(self) -> str:
        if self.size_delta > 0:
            return "any" if self.acceptable_price >= MAX_PRICE else f"<= {price(self.acceptable_price)}"
        return "any" if self.acceptable_price == 0 else f">= {price(self.acceptable_price)}"

    def describe(self) -> str:
        what = f"{KIND_NAMES[self.kind]} {self.side} {base_amount(self.size_delta)} {self.symbol}"
        if self.kind != KIND_MARKET:
            what += f" triggered at {price(self.trigger_price)}"
        return f"{what}, acceptable price {self.acceptable_text()}" + (", reduce-only" if self.reduce_only else "")

    def status(self, now: int, max_order_age: int) -> str:
        if self.state == STATE_EXECUTED:
            return "executed"
        if self.state == STATE_CANCELLED:
            return "cancelled"
        if self.kind == KIND_MARKET:
            if now >= self.expiry:
                return "expired: anyone may cancel it for the fee"
            return "pending: executes at the first price published from its not-before time"
        if now >= self.expiry + max_order_age:
            return "expired: anyone may cancel it for the fee"
        if now >= self.expiry:
            return "expired (a round before its expiry may still execute it)"
        return "resting until the index crosses its trigger"


def order_from(w: Wallet, order_id: int, o) -> Order:
    return Order(order_id, o.owner, o.sub_account, o.market_id, w.symbol(o.market_id), o.size_delta,
                 o.acceptable_price, o.kind, o.trigger_price, o.reduce_only, o.not_before, o.expiry, o.fee, o.state)


def open_orders(w: Wallet, owner: str, sub: int) -> list[Order]:
    ids = w.read("order_book", "open_orders", owner, sub)
    stored = w.reads([("order_book", "order", (i,)) for i in ids])
    return [order_from(w, i, o) for i, o in zip(ids, stored) if not isinstance(o, Reverted)]


def resolve_market(w: Wallet, text: str) -> int:
    """A market id by symbol ('BTC-USD', any case; 'BTC' for '<BASE>-USD') or by id ('0')."""
    wanted = text.strip().upper()
    for m in w.markets:
        if wanted in (m.symbol.upper(), str(m.id)) or f"{wanted}-USD" == m.symbol.upper():
            return m.id
    known = ", ".join(f"{m.symbol} ({m.id})" for m in w.markets)
    raise CliError(f"unknown market {text!r}; listed markets: {known}")


# =============================================================================================
# Commit
# =============================================================================================


def commit(w: Wallet, spec: OrderSpec, sub: int) -> tuple[Order, int]:
    """Check and commit an order; returns it and the commit's block."""
    market_id = resolve_market(w, spec.market)
    size = spec.size_delta
    position, params, head = w.reads([("exchange", "position_state", (w.address, sub, market_id)),
                                      ("order_book", "order_params", ()), ("exchange", "index_price", (market_id,))])
    if isinstance(head, Reverted):
        raise CliError(f"Refused: {w.symbol(market_id)} has no valid price now (the oracle says: "
                       f"{head.reason.removeprefix('oracle: ')}); an order could not execute. Nothing was sent.")
    current = position[0]
    if spec.kind in (KIND_STOP_LOSS, KIND_TAKE_PROFIT) and current != 0 and (current > 0) == (size > 0):
        side = "long" if current > 0 else "short"
        raise CliError(f"a {KIND_NAMES[spec.kind]} order reduces the position: your {w.symbol(market_id)} position "
                       f"is {side}, so its SIZE must be {'negative' if current > 0 else 'positive'}")
    if spec.kind == KIND_MARKET:
        reference = w.read("exchange", "fill_price", market_id, size)
    else:
        reference = spec.trigger
    bound = spec.acceptable if spec.acceptable is not None else acceptable_price(reference, size, spec.slippage)
    deadline = parse_expiry(spec.expiry, w.chain_time()) if spec.expiry else 0
    args = (sub, market_id, size, bound, spec.kind, spec.trigger, spec.reduce_only, deadline)
    try:
        w.simulate("order_book", "commit_order", *args)
    except Reverted as err:
        raise order_refusal(w, sub, market_id, size, err.reason) from None
    if spec.kind in (KIND_MARKET, KIND_LIMIT) and not spec.reduce_only:
        execution_check(w, sub, market_id, size, bound, head if spec.kind == KIND_MARKET else spec.trigger,
                        params.execution_fee, at_trigger=spec.kind != KIND_MARKET)
    if spec.kind == KIND_MARKET and not spec.reduce_only and abs(current + size) > abs(current):
        room_check(w, market_id, abs(current + size) - abs(current), head)
    try:
        receipt = w.send("order_book", "commit_order", *args)
    except Reverted as err:
        raise order_refusal(w, sub, market_id, size, err.reason) from None
    (event,) = receipt.find("OrderCommitted")
    a = event.args
    order = Order(a.order_id, w.address, sub, market_id, w.symbol(market_id), size, a.acceptable_price, spec.kind,
                  spec.trigger, a.reduce_only, a.not_before, a.expiry, a.fee)
    return order, receipt.block


def committed_text(order: Order, now: int) -> str:
    when = (f"a keeper executes it at the first {order.symbol} price published from {utc_time(order.not_before)}"
            if order.kind == KIND_MARKET else f"it rests until a {order.symbol} price crosses {price(order.trigger_price)}")
    return (f"committed order {order.order_id:#x}: {order.describe()}\n"
            f"  {when} (expires {utc_time(order.expiry)}, {relative(order.expiry, now)}); "
            f"execution fee {usd(order.fee)} USD escrowed")


def close_spec(w: Wallet, market: str, sub: int, slippage: Decimal) -> OrderSpec:
    """A reduce-only market order closing the whole position in `market`."""
    market_id = resolve_market(w, market)
    size = w.read("exchange", "position_state", w.address, sub, market_id)[0]
    if size == 0:
        raise CliError(f"no open {w.symbol(market_id)} position in sub-account {sub}")
    return OrderSpec(KIND_MARKET, str(market_id), -size, 0, slippage, None, True, None)


# =============================================================================================
# Follow
# =============================================================================================


def outcome(w: Wallet, order: Order, from_block: int) -> tuple[bool, str] | None:
    """(filled, text) once the order was executed or cancelled; None while it is open."""
    book = w.order_book
    topics = [[book.topic("OrderExecuted"), book.topic("OrderCancelled")], "0x" + order.order_id.to_bytes(32, "big").hex()]
    events = w.logs(["order_book"], from_block, topics=topics)
    executed = [e for e in events if e.name == "OrderExecuted"]
    if executed:
        e = executed[0]
        receipt = w.wait_receipt(e.tx, "the execution", 10)
        trade = next(t.args for t in receipt.find("Trade") if t.args.market_id == order.market_id
                     and t.args.owner.lower() == order.owner.lower() and t.args.sub_account == order.sub_account)
        side = "bought" if trade.size_delta > 0 else "sold"
        return True, (
            f"order {order.order_id:#x} executed by {to_checksum(e.args.executor)} at the {order.symbol} price published "
            f"{utc_time(e.args.round_published)}:\n  {side} {base_amount(trade.size_delta)} {order.symbol} at "
            f"{price(trade.fill_price)} (limit {order.acceptable_text().removeprefix('<= ').removeprefix('>= ')}), "
            f"fee {usd(trade.fee)}, realized PnL {usd(trade.realized_pnl)}, funding paid {usd(trade.funding_paid)}; "
            f"position now {size_text(trade.new_size)}; execution fee {usd(e.args.fee)}"
        )
    cancelled = [e for e in events if e.name == "OrderCancelled"]
    if not cancelled:
        return None
    # a keeper's or an expiry's cancellation is the last word over an owner's
    e = min(cancelled, key=lambda c: c.args.reason == "cancelled by owner")
    reason = e.args.reason
    shown = plain(reason).rstrip(".") if ": " in reason else reason
    return False, (f"order {order.order_id:#x} cancelled by {to_checksum(e.args.by)}: {shown};\n"
                   f"  the execution fee {usd(e.args.fee)} USD went to {to_checksum(e.args.fee_to)}")


def poll(check, timeout: float, pause: float = POLL_SECONDS):
    """`check()` until it gives something other than None, at most `timeout` s (None then)."""
    deadline = _clock() + timeout
    while True:
        result = check()
        if result is not None or _clock() >= deadline:
            return result
        _sleep(pause)


def wait_for(w: Wallet, order: Order, from_block: int, timeout: float, pause: float = POLL_SECONDS) -> tuple[bool, str]:
    """Wait at most `timeout` s for the order's fill or cancellation; CliError naming what it
    waited for when neither came."""
    result = poll(lambda: outcome(w, order, from_block), timeout, pause)
    if result is not None:
        return result
    waited_for = (f"the first {order.symbol} price published from {utc_time(order.not_before)}"
                  if order.kind == KIND_MARKET else f"a {order.symbol} price crossing {price(order.trigger_price)}")
    raise CliError(
        f"no keeper executed order {order.order_id:#x} within {timeout:g} s: it waits for a keeper to execute it at "
        f"{waited_for}, which needs the price feeds to publish (a devnet runs both: `make devnet`). It stays open; "
        f"it expires {utc_time(order.expiry)}. See it with `orders`."
    )


def cancel(w: Wallet, order_id: int) -> str:
    try:
        receipt = w.send("order_book", "cancel_order", order_id)
    except Reverted as err:
        expires = err.reason.rsplit(" ", 1)[-1]
        if "cannot be cancelled before it expires" in err.reason and expires.isdigit():
            raise CliError(f"Refused: a market order cannot be cancelled before it expires at {utc_time(int(expires))} "
                           "(it waits for its execution price). Nothing was sent.") from None
        raise refuse(err.reason) from None
    (event,) = receipt.find("OrderCancelled")
    a = event.args
    whose = ("refunded to your sub-account" if a.fee_to.lower() == a.by.lower() and a.reason == "cancelled by owner"
             else f"paid to {to_checksum(a.fee_to)} (sub-account 0)")
    return f"cancelled order {order_id:#x} ({a.reason}); execution fee {usd(a.fee)} USD {whose}"
