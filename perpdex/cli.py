"""The wallet behind `ape run trade`: deposits, orders, positions, LP shares, market reports.

Trades are two-step orders (DESIGN.md, "Orders"): the wallet commits an order to the order
book, and a keeper executes it at a later oracle price. `open` and `close` commit a market order
and wait (bounded) for the keeper's execution or cancellation; `order` commits any kind
(market, limit, stop-loss, take-profit) and returns; `orders` lists the open ones; `cancel`
cancels one. Every transaction is simulated first (eth_call on the pending state), so a
refusal prints the contract's reason and sends nothing.

`scripts/trade.py` parses the command line and calls the functions here, which take a
`Deployment` (from a manifest by `perpdex.deploy.load_deployment`) and an ape account, and work
without the command line.
Amounts a person types are USD or base units in decimal notation; they are converted exactly
(never through floats) to token units or WAD, and refused when they carry more decimals than
the chain can represent. Reverts surface as `CliError` with the contract's reason in plain words,
e.g. "Rejected by the exchange: insufficient margin".
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING, Iterator

import click
from rich.console import Console
from rich.table import Table

from perpdex.config import MarketConfig
from perpdex.deploy import Deployment
from perpdex.fixed_point import WAD
from perpdex.model import FUNDING_PERIOD, MarketParams
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

if TYPE_CHECKING:
    from ape.api import AccountAPI
    from ape.contracts import ContractInstance

YEAR = 365 * 24 * 3600
FUNDING_PERIODS_PER_YEAR = YEAR // FUNDING_PERIOD  # 1,095 periods of 8 h
DEFAULT_SLIPPAGE = Decimal("0.5")  # percent
_clock, _sleep = time.monotonic, time.sleep  # the wait for a keeper (tests replace them)
# reason-string namespace ("exchange: ...") -> who rejected it, in words
REJECTERS = {
    "liquidity vault": "the liquidity vault",
    "insurance fund": "the insurance fund",
    "exchange": "the exchange",
    "vault": "the vault",
    "oracle": "the price oracle",
    "liquidator": "the liquidator",
    "order": "the order book",
    "erc20": "the collateral token",
    "mock": "the devnet collateral token",
}


class CliError(click.ClickException):
    """A failure explained to a person: printed without a traceback, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


# =============================================================================================
# UNITS
# =============================================================================================


def parse_decimal(text: str | Decimal, what: str) -> Decimal:
    """A decimal number typed by a person; refuses NaN, infinities and garbage."""
    try:
        value = Decimal(str(text).replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise CliError(f"{what} must be a number, not {text!r}") from None
    if not value.is_finite():
        raise CliError(f"{what} must be a finite number, not {text!r}")
    return value


def scale_exact(value: Decimal, decimals: int, what: str) -> int:
    """`value` x 10^decimals as an integer; refuses digits beyond the representable ones."""
    with localcontext() as exact:
        exact.prec = 100  # no rounding below 10^100: every uint256 fits
        scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise CliError(f"{what} {value} has more than {decimals} decimals")
    return int(scaled)


def positive_amount(text: str | Decimal, decimals: int, what: str = "AMOUNT") -> int:
    """A positive amount in human units converted to integer units of `decimals`."""
    units = scale_exact(parse_decimal(text, what), decimals, what)
    if units <= 0:
        raise CliError(f"{what} must be positive")
    return units


def signed_size(text: str | Decimal) -> int:
    """A signed size in base units (positive buys, negative sells) in WAD."""
    size = scale_exact(parse_decimal(text, "SIZE"), 18, "SIZE")
    if size == 0:
        raise CliError("SIZE must not be zero: positive to buy (long), negative to sell (short)")
    return size


def acceptable_price(quote: int, size_delta: int, slippage_percent: Decimal) -> int:
    """The worst fill price a trade accepts: `quote` moved against the trader by the slippage.

    Buys accept at most quote x (1 + s), rounded down; sells at least quote x (1 - s), rounded
    up, so the bound never tolerates more than the slippage asked for.
    """
    if not 0 <= slippage_percent < 100:
        raise CliError("--slippage is a percentage in [0, 100)")
    tolerance = Fraction(slippage_percent) / 100
    if size_delta > 0:
        return math.floor(quote * (1 + tolerance))
    return math.ceil(quote * (1 - tolerance))


def wad_to_decimal(value: int) -> Decimal:
    return Decimal(value) / WAD


def usd(wad: int) -> str:
    return f"{wad_to_decimal(wad):,.2f}"


def tokens(units: int, decimals: int) -> str:
    return f"{Decimal(units).scaleb(-decimals):,.2f}"


def size_text(wad: int) -> str:
    return f"{wad_to_decimal(wad):+,.4f}"


def percent(wad: int, places: int = 4) -> str:
    return f"{wad_to_decimal(wad) * 100:+.{places}f} %"


def ratio_percent(wad: int) -> str:
    """An unsigned parameter ratio (fees, margins) in percent, trailing zeros dropped."""
    return f"{(wad_to_decimal(wad) * 100).normalize():f} %"


def price_or_none(wad: int) -> str:
    return usd(wad) if wad > 0 else "none"


# =============================================================================================
# ERRORS
# =============================================================================================


def revert_reason(err: Exception) -> str:
    """The contract's reason string carried by an ape error (or its message)."""
    reason = getattr(err, "revert_message", None) or str(err)
    return reason.strip() or "reverted without a reason"


def explain_revert(reason: str) -> str:
    """'exchange: insufficient margin' -> 'Rejected by the exchange: insufficient margin'."""
    namespace, _, detail = reason.partition(": ")
    if detail and namespace in REJECTERS:
        return f"Rejected by {REJECTERS[namespace]}: {detail}"
    return f"Transaction failed: {reason}"


@contextmanager
def quiet_traces() -> Iterator[None]:
    """No call trace on stdout when a call reverts: ape's anvil provider prints one for every
    refused simulation, which would bury the reason the wallet prints in a developer's tree."""
    from ape_ethereum.trace import Trace

    show = Trace.show
    Trace.show = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        Trace.show = show


@contextmanager
def contract_errors() -> Iterator[None]:
    """Turn ape's revert and transaction errors into a `CliError` a person can read (and keep
    ape's call traces off the screen meanwhile)."""
    from ape.exceptions import AccountsError, ContractLogicError, TransactionError

    try:
        with quiet_traces():
            yield
    except ContractLogicError as err:
        raise CliError(explain_revert(revert_reason(err))) from None
    except TransactionError as err:
        raise CliError(f"Transaction failed: {revert_reason(err)}") from None
    except AccountsError as err:  # e.g. the signer declined
        raise CliError(f"Not signed: {err}") from None


# =============================================================================================
# MARKETS
# =============================================================================================


def resolve_market(deployment: Deployment, text: str) -> MarketConfig:
    """A market by symbol ('BTC-USD', any case; 'BTC' for '<BASE>-USD') or by id ('0')."""
    wanted = text.strip().upper()
    for m in deployment.markets:
        if wanted in (m.symbol.upper(), str(m.id)) or f"{wanted}-USD" == m.symbol.upper():
            return m
    known = ", ".join(f"{m.symbol} ({m.id})" for m in deployment.markets)
    raise CliError(f"unknown market {text!r}; listed markets: {known}")


def token_decimals(deployment: Deployment) -> int:
    return int(deployment.collateral.decimals())


# =============================================================================================
# ACTIONS (transactions)
# =============================================================================================


@dataclass(frozen=True)
class CashMove:
    """A deposit into or a withdrawal from a trading sub-account."""

    sub_account: int
    token_units: int
    decimals: int
    cash_after: int  # WAD

    def summary(self, verb: str) -> str:
        return (
            f"{verb} {tokens(self.token_units, self.decimals)} USD, sub-account {self.sub_account}: "
            f"cash now {usd(self.cash_after)} USD"
        )


@dataclass(frozen=True)
class TradeResult:
    symbol: str
    size_delta: int
    acceptable_price: int
    fill_price: int
    fee: int
    realized_pnl: int
    funding_paid: int
    new_size: int

    def summary(self) -> str:
        side = "bought" if self.size_delta > 0 else "sold"
        return (
            f"{side} {wad_to_decimal(abs(self.size_delta)):,f} {self.symbol} at {usd(self.fill_price)} "
            f"(limit {usd(self.acceptable_price)}), fee {usd(self.fee)}, realized PnL {usd(self.realized_pnl)}, "
            f"funding paid {usd(self.funding_paid)}; position now {size_text(self.new_size)}"
        )


@dataclass(frozen=True)
class LpMove:
    token_units: int
    decimals: int
    shares: int
    shares_after: int

    def summary(self, verb: str) -> str:
        return (
            f"{verb} {tokens(self.token_units, self.decimals)} USD for {wad_to_decimal(self.shares):,f} LP shares; "
            f"you hold {wad_to_decimal(self.shares_after):,f} shares"
        )


def ensure_allowance(token: ContractInstance, account: AccountAPI, spender: str, amount: int) -> bool:
    """Approve `spender` for exactly `amount` when the allowance is short; True if it approved."""
    if token.allowance(account.address, spender) >= amount:
        return False
    token.approve(spender, amount, sender=account)
    return True


def _require_balance(token: ContractInstance, account: AccountAPI, amount: int, decimals: int) -> None:
    balance = int(token.balanceOf(account.address))
    if balance < amount:
        raise CliError(
            f"the wallet {account.address} holds {tokens(balance, decimals)} USD of collateral, "
            f"less than {tokens(amount, decimals)}"
        )


def deposit(deployment: Deployment, account: AccountAPI, amount: str | Decimal, sub_account: int = 0) -> CashMove:
    """Deposit `amount` USD of collateral into `sub_account`, approving the vault if needed."""
    decimals = token_decimals(deployment)
    units = positive_amount(amount, decimals)
    _require_balance(deployment.collateral, account, units, decimals)
    with contract_errors():
        ensure_allowance(deployment.collateral, account, deployment.vault.address, units)
        _send(deployment.vault.deposit, sub_account, units, account=account)
    return CashMove(sub_account, units, decimals, int(deployment.vault.cash(account.address, sub_account)))


def faucet(deployment: Deployment, account: AccountAPI, amount: str | Decimal) -> str:
    """Mint `amount` USD of the devnet's mock collateral to the wallet (the mock's faucet)."""
    decimals = token_decimals(deployment)
    units = positive_amount(amount, decimals)
    with contract_errors():
        _send(deployment.collateral.faucet, units, account=account)
    balance = int(deployment.collateral.balanceOf(account.address))
    return f"minted {tokens(units, decimals)} USD of devnet collateral; the wallet holds {tokens(balance, decimals)}"


def withdraw(deployment: Deployment, account: AccountAPI, amount: str | Decimal, sub_account: int = 0) -> CashMove:
    """Withdraw `amount` USD of free collateral from `sub_account` to the wallet."""
    decimals = token_decimals(deployment)
    units = positive_amount(amount, decimals)
    with contract_errors():
        _send(deployment.vault.withdraw, sub_account, units, account=account)
    return CashMove(sub_account, units, decimals, int(deployment.vault.cash(account.address, sub_account)))


# =============================================================================================
# ORDERS (commit, wait for the keeper, cancel)
# =============================================================================================

ORDER_KINDS = {
    "market": KIND_MARKET, "limit": KIND_LIMIT, "stop": KIND_STOP_LOSS, "stop-loss": KIND_STOP_LOSS,
    "take-profit": KIND_TAKE_PROFIT, "tp": KIND_TAKE_PROFIT,
}
DEFAULT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.5
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_slippage(text: str | Decimal) -> Decimal:
    """A slippage tolerance in percent: '0.5' or '0.5%' is half a percent, '50bps' the same."""
    raw = str(text).strip().lower()
    if raw.endswith("bps"):
        value = parse_decimal(raw[:-3], "--slippage") / 100
    else:
        value = parse_decimal(raw.removesuffix("%"), "--slippage")
    if not 0 <= value < 100:
        raise CliError("--slippage is a percentage in [0, 100) (or basis points: 50bps)")
    return value


def parse_expiry(text: str | None, now: int) -> int:
    """--expiry as the contract takes it: 0 (none given: the longest allowed), a duration from
    `now` ('90s', '30m', '12h', '7d'), unix seconds, or an ISO date/time in UTC."""
    if text is None or not str(text).strip():
        return 0
    raw = str(text).strip().lower()
    if raw[-1:] in DURATION_UNITS and raw[:-1].replace(".", "", 1).isdigit():
        return now + int(Decimal(raw[:-1]) * DURATION_UNITS[raw[-1]])
    if raw.isdigit():
        moment = int(raw)
    else:
        try:
            parsed = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise CliError(
                f"--expiry {text!r}: give a duration (90s, 30m, 12h, 7d), unix seconds or an ISO date/time (UTC)"
            ) from None
        moment = int((parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp())
    if moment <= now:
        raise CliError(f"--expiry {text!r} is not in the future (chain time is {utc_time(now)})")
    return moment


def parse_order_id(text: str | int) -> int:
    """An order id as `orders` shows it (0x...) or in decimal."""
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        raise CliError(f"ORDER_ID must be the id `orders` shows (0x...), not {text!r}") from None
    if value <= 0 or value >= 2**256:
        raise CliError(f"ORDER_ID {text!r} is out of range")
    return value


def order_acceptable(
    reference: int, size_delta: int, slippage: str | Decimal | None, acceptable: str | Decimal | None
) -> int:
    """The order's acceptable price: --acceptable as given ('any': no bound), else `reference`
    (the quote, or the trigger price) moved against the trader by the slippage."""
    if acceptable is not None:
        if str(acceptable).strip().lower() == "any":
            return MAX_PRICE if size_delta > 0 else 0
        return positive_amount(acceptable, 18, "--acceptable")
    return acceptable_price(reference, size_delta, parse_slippage(DEFAULT_SLIPPAGE if slippage is None else slippage))


def utc_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(timestamp: int, now: int) -> str:
    """'in 59m 59s' / '12s ago' / 'now', against the chain's clock."""
    delta = timestamp - now
    if delta == 0:
        return "now"
    seconds = abs(delta)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    text = " ".join(parts[:2])
    return f"in {text}" if delta > 0 else f"{text} ago"


def chain_now() -> int:
    """The chain's clock: the latest block's timestamp."""
    from ape import chain

    return int(chain.blocks.head.timestamp)


@dataclass(frozen=True)
class OrderView:
    """An order as the order book stores it."""

    order_id: int
    owner: str
    sub_account: int
    symbol: str
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
    cancelled_at: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def side(self) -> str:
        return "buy" if self.size_delta > 0 else "sell"

    def acceptable_text(self) -> str:
        if self.size_delta > 0:
            return "any" if self.acceptable_price >= MAX_PRICE else f"<= {usd(self.acceptable_price)}"
        return "any" if self.acceptable_price == 0 else f">= {usd(self.acceptable_price)}"

    def status(self, now: int, max_order_age: int) -> str:
        """What the order waits for, or that it can no longer execute, at chain time `now`."""
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

    def describe(self) -> str:
        what = f"{self.kind_name} {self.side} {wad_to_decimal(abs(self.size_delta)):,f} {self.symbol}"
        if self.kind != KIND_MARKET:
            what += f" triggered at {usd(self.trigger_price)}"
        return f"{what}, acceptable price {self.acceptable_text()}" + (", reduce-only" if self.reduce_only else "")


@dataclass(frozen=True)
class CommittedOrder:
    order: OrderView
    block: int  # the commit's block: the execution is searched from there

    def summary(self, now: int) -> str:
        o = self.order
        when = (
            f"a keeper executes it at the first {o.symbol} price published from {utc_time(o.not_before)}"
            if o.kind == KIND_MARKET
            else f"it rests until a {o.symbol} price crosses {usd(o.trigger_price)}"
        )
        return (
            f"committed order {o.order_id:#x}: {o.describe()}\n"
            f"  {when} (expires {utc_time(o.expiry)}, {relative(o.expiry, now)}); execution fee {usd(o.fee)} USD escrowed"
        )


@dataclass(frozen=True)
class OrderOutcome:
    """How an order ended: filled (with the exchange's fill) or cancelled (with the reason)."""

    order: OrderView
    executor: str  # the keeper that executed or cancelled it
    filled: bool
    trade: TradeResult | None = None
    round_published: int = 0
    execution_fee: int = 0
    reason: str = ""
    fee_to: str = ""

    def summary(self) -> str:
        o = self.order
        if self.filled:
            return (
                f"order {o.order_id:#x} executed by {self.executor} at the {o.symbol} price published "
                f"{utc_time(self.round_published)}:\n  {self.trade.summary()}; execution fee {usd(self.execution_fee)}"
            )
        return (
            f"order {o.order_id:#x} cancelled by {self.executor}: "
            f"{explain_revert(self.reason) if ': ' in self.reason else self.reason};\n"
            f"  the execution fee {usd(self.execution_fee)} USD went to {self.fee_to}"
        )


@dataclass(frozen=True)
class CancelResult:
    order_id: int
    reason: str
    fee: int
    fee_to: str
    by: str

    def summary(self) -> str:
        whose = "refunded to your sub-account" if self.fee_to == self.by and self.reason == "cancelled by owner" else (
            f"paid to {self.fee_to} (sub-account 0)"
        )
        return f"cancelled order {self.order_id:#x} ({self.reason}); execution fee {usd(self.fee)} USD {whose}"


def _send(method, *args, account: AccountAPI):
    """Simulate with eth_call on the pending state, then send: a refusal raises the contract's
    reason before anything is signed or paid for."""
    method.call(*args, sender=account, block_id="pending")
    return method(*args, sender=account)


def _symbols(deployment: Deployment) -> dict[int, str]:
    return {m.id: m.symbol for m in deployment.markets}


def read_order(deployment: Deployment, order_id: int) -> OrderView:
    o = deployment.order_book.order(order_id)
    return OrderView(
        order_id=order_id, owner=o.owner, sub_account=int(o.sub_account),
        symbol=_symbols(deployment).get(int(o.market_id), str(o.market_id)), market_id=int(o.market_id),
        size_delta=int(o.size_delta), acceptable_price=int(o.acceptable_price), kind=int(o.kind),
        trigger_price=int(o.trigger_price), reduce_only=bool(o.reduce_only), not_before=int(o.not_before),
        expiry=int(o.expiry), fee=int(o.fee), state=int(o.state), cancelled_at=int(o.cancelled_at),
    )


def read_orders(deployment: Deployment, owner: str, sub_account: int = 0) -> list[OrderView]:
    """The open orders of a sub-account, by slot."""
    with contract_errors():
        return [read_order(deployment, int(i)) for i in deployment.order_book.open_orders(owner, sub_account)]


def commit_order(
    deployment: Deployment,
    account: AccountAPI,
    kind: str,
    market: str,
    size: str | Decimal,
    sub_account: int = 0,
    trigger: str | Decimal | None = None,
    slippage: str | Decimal | None = None,
    acceptable: str | Decimal | None = None,
    reduce_only: bool = False,
    expiry: str | None = None,
) -> CommittedOrder:
    """Commit an order of `kind` (market, limit, stop, take-profit) for a keeper to execute.

    A market order's acceptable price is the current quote moved by the slippage; a trigger
    order's is its trigger price moved by the slippage (or --acceptable, 'any' for no bound).
    Stop-loss and take-profit orders are reduce-only. Simulated first: a refusal raises the
    order book's reason and sends nothing."""
    if kind not in ORDER_KINDS:
        raise CliError(f"unknown order kind {kind!r}: market, limit, stop or take-profit")
    code = ORDER_KINDS[kind]
    m = resolve_market(deployment, market)
    size_delta = signed_size(size)
    if code == KIND_MARKET:
        if trigger is not None:
            raise CliError("a market order takes no --price/--trigger: it executes at the next price")
    elif trigger is None:
        raise CliError(f"a {KIND_NAMES[code]} order needs its {'--price' if code == KIND_LIMIT else '--trigger'}")
    if slippage is not None and acceptable is not None:
        raise CliError("give either --slippage or --acceptable, not both")
    if code in (KIND_STOP_LOSS, KIND_TAKE_PROFIT):
        position = int(deployment.exchange.position_state(account.address, sub_account, m.id)[0])
        if position != 0 and (position > 0) == (size_delta > 0):
            side = "long" if position > 0 else "short"
            raise CliError(
                f"a {KIND_NAMES[code]} order reduces the position: your {m.symbol} position is {side}, "
                f"so its SIZE must be {'negative' if position > 0 else 'positive'}"
            )
    with contract_errors():
        if code == KIND_MARKET:
            reference = int(deployment.exchange.fill_price(m.id, size_delta))
            trigger_wad = 0
        else:
            trigger_wad = positive_amount(trigger, 18, "--price" if code == KIND_LIMIT else "--trigger")
            reference = trigger_wad
        limit = order_acceptable(reference, size_delta, slippage, acceptable)
        deadline = parse_expiry(expiry, chain_now())
        book = deployment.order_book
        receipt = _send(
            book.commit_order, sub_account, m.id, size_delta, limit, code, trigger_wad, reduce_only, deadline,
            account=account,
        )
    (event,) = receipt.decode_logs(book.OrderCommitted)
    order = OrderView(
        order_id=int(event.order_id), owner=account.address, sub_account=sub_account, symbol=m.symbol,
        market_id=m.id, size_delta=size_delta, acceptable_price=int(event.acceptable_price), kind=code,
        trigger_price=trigger_wad, reduce_only=bool(event.reduce_only), not_before=int(event.not_before),
        expiry=int(event.expiry), fee=int(event.fee), state=STATE_OPEN, cancelled_at=0,
    )
    return CommittedOrder(order, int(receipt.block_number))


def open_position(
    deployment: Deployment, account: AccountAPI, market: str, size: str | Decimal, sub_account: int = 0,
    slippage: str | Decimal = DEFAULT_SLIPPAGE,
) -> CommittedOrder:
    """Commit a market order of `size` base units (negative sells) in `market`, accepting the
    quoted fill price moved by at most `slippage` percent; `wait_for_order` follows it."""
    return commit_order(deployment, account, "market", market, size, sub_account, slippage=slippage)


def close_position(
    deployment: Deployment, account: AccountAPI, market: str, sub_account: int = 0,
    slippage: str | Decimal = DEFAULT_SLIPPAGE,
) -> CommittedOrder:
    """Commit a reduce-only market order closing the whole position of `sub_account` in `market`."""
    m = resolve_market(deployment, market)
    size = int(deployment.exchange.position_state(account.address, sub_account, m.id)[0])
    if size == 0:
        raise CliError(f"no open {m.symbol} position in sub-account {sub_account}")
    return commit_order(
        deployment, account, "market", str(m.id), wad_to_decimal(-size), sub_account, slippage=slippage,
        reduce_only=True,
    )


def order_outcome(deployment: Deployment, order: OrderView, from_block: int) -> OrderOutcome | None:
    """How `order` ended, from the OrderExecuted / OrderCancelled events since `from_block`;
    None while it has not."""
    from ape import chain

    book, exchange = deployment.order_book, deployment.exchange
    topics = {"order_id": order.order_id}
    for log in book.OrderExecuted.range(from_block, chain.blocks.height + 1, search_topics=topics):
        receipt = chain.provider.get_receipt(log.transaction_hash)
        trade = next(
            t for t in receipt.decode_logs(exchange.Trade)
            if t.owner == order.owner and int(t.sub_account) == order.sub_account and int(t.market_id) == order.market_id
        )
        return OrderOutcome(
            order=order, executor=log.executor, filled=True, round_published=int(log.round_published),
            execution_fee=int(log.fee),
            trade=TradeResult(
                symbol=order.symbol, size_delta=int(trade.size_delta), acceptable_price=order.acceptable_price,
                fill_price=int(trade.fill_price), fee=int(trade.fee), realized_pnl=int(trade.realized_pnl),
                funding_paid=int(trade.funding_paid), new_size=int(trade.new_size),
            ),
        )
    cancelled = list(book.OrderCancelled.range(from_block, chain.blocks.height + 1, search_topics=topics))
    if not cancelled:
        return None
    # a keeper's or an expiry's cancellation is the last word; an owner's cancellation of a
    # trigger order is the outcome only while no earlier round executed it (checked above)
    log = min(cancelled, key=lambda c: c.reason == "cancelled by owner")
    return OrderOutcome(
        order=order, executor=log.by, filled=False, execution_fee=int(log.fee), reason=log.reason, fee_to=log.fee_to,
    )


def wait_for_order(
    deployment: Deployment, committed: CommittedOrder, timeout: float = DEFAULT_WAIT_SECONDS,
    poll: float = POLL_SECONDS,
) -> OrderOutcome:
    """Wait (at most `timeout` seconds) for a keeper to execute `committed` or to cancel it
    for a reason of its own; raises CliError naming what it waited for when none did."""
    from ape.exceptions import ContractLogicError

    order = committed.order
    deadline = _clock() + timeout
    while True:
        with contract_errors():
            try:
                state = int(deployment.order_book.order(order.order_id).state)
            except ContractLogicError:  # "order: unknown order": its slot holds a later order, it ended
                state = STATE_CANCELLED
            outcome = order_outcome(deployment, order, committed.block) if state != STATE_OPEN else None
        if outcome is not None:
            return outcome
        if _clock() >= deadline:
            break
        _sleep(poll)
    waited_for = (
        f"the first {order.symbol} price published from {utc_time(order.not_before)}"
        if order.kind == KIND_MARKET else f"a {order.symbol} price crossing {usd(order.trigger_price)}"
    )
    raise CliError(
        f"no keeper executed order {order.order_id:#x} within {timeout:g} s: it waits for a keeper "
        f"(`ape run keeper`) to execute it at {waited_for}, which needs the price feeds to publish "
        f"(`ape run pusher` on a devnet). It stays open; it expires {utc_time(order.expiry)}. "
        "See it with `ape run trade orders`."
    )


def follow_order(
    deployment: Deployment, committed: CommittedOrder, wait: bool = True, timeout: float = DEFAULT_WAIT_SECONDS,
) -> None:
    """Print a committed order and, with `wait`, what became of it: the fill, or (exit status 1)
    the cancellation with its reason, or that no keeper acted within `timeout` seconds."""
    show(committed.summary(chain_now()))
    if not wait:
        return
    show(f"waiting up to {timeout:g} s for a keeper to execute it ...")
    outcome = wait_for_order(deployment, committed, timeout)
    if not outcome.filled:
        raise CliError(outcome.summary())
    show(outcome.summary())


def cancel_order(deployment: Deployment, account: AccountAPI, order_id: str | int) -> CancelResult:
    """Cancel an order: the owner's trigger order at any time (fee refunded), anyone's expired
    order (the fee to the canceller). Simulated first: a refusal sends nothing."""
    oid = parse_order_id(order_id)
    book = deployment.order_book
    with contract_errors():
        receipt = _send(book.cancel_order, oid, account=account)
    (event,) = receipt.decode_logs(book.OrderCancelled)
    return CancelResult(oid, event.reason, int(event.fee), event.fee_to, event.by)


def lp_deposit(deployment: Deployment, account: AccountAPI, amount: str | Decimal) -> LpMove:
    """Deposit `amount` USD into the liquidity vault for shares, approving it if needed."""
    lv = deployment.liquidity_vault
    decimals = token_decimals(deployment)
    units = positive_amount(amount, decimals)
    _require_balance(deployment.collateral, account, units, decimals)
    with contract_errors():
        ensure_allowance(deployment.collateral, account, lv.address, units)
        receipt = _send(lv.deposit, units, account.address, account=account)
    (event,) = receipt.decode_logs(lv.Deposit)
    return LpMove(int(event.assets), decimals, int(event.shares), int(lv.balanceOf(account.address)))


def lp_redeem(deployment: Deployment, account: AccountAPI, shares: str | Decimal | None = None) -> LpMove:
    """Redeem `shares` LP shares (all of them when None) for collateral paid to the wallet."""
    lv = deployment.liquidity_vault
    held = int(lv.balanceOf(account.address))
    amount = held if shares is None else positive_amount(shares, int(lv.decimals()), "SHARES")
    if amount == 0:
        raise CliError(f"{account.address} holds no LP shares")
    if amount > held:
        raise CliError(f"you hold {wad_to_decimal(held):,f} LP shares, fewer than {wad_to_decimal(amount):,f}")
    with contract_errors():
        receipt = _send(lv.redeem, amount, account.address, account.address, account=account)
    (event,) = receipt.decode_logs(lv.Withdraw)
    return LpMove(int(event.assets), token_decimals(deployment), int(event.shares), int(lv.balanceOf(account.address)))


# =============================================================================================
# VIEWS (no gas)
# =============================================================================================


@dataclass(frozen=True)
class PositionView:
    symbol: str
    size: int
    entry_price: int
    index_price: int
    mark_price: int
    unrealized_pnl: int
    unsettled_funding: int  # positive: the position owes it
    liquidation_price: int  # 0: no positive price liquidates it


@dataclass(frozen=True)
class AccountView:
    owner: str
    sub_account: int
    cash: int
    equity: int
    initial: int
    maintenance: int
    withdrawable: int
    liquidatable: bool
    wallet_units: int
    decimals: int


@dataclass(frozen=True)
class MarketView:
    id: int
    symbol: str
    params: MarketParams
    index_price: int | None  # None: the oracle has no valid price (see `oracle_error`)
    mark_price: int | None
    skew: int
    long_oi: int
    short_oi: int
    funding_rate: int  # per 8 h, WAD; positive: longs pay
    pnl_factor: int | None
    oracle_error: str | None = None

    @property
    def funding_rate_annual(self) -> int:
        return self.funding_rate * FUNDING_PERIODS_PER_YEAR


@dataclass(frozen=True)
class InsuranceView:
    balance: int  # WAD
    target: int  # WAD
    surplus_units: int
    decimals: int
    deficits: list[tuple[str, int, int]]  # (symbol, uncovered deficit WAD, losing side sign)


def open_market_ids(deployment: Deployment, owner: str, sub_account: int) -> list[int]:
    mask = int(deployment.exchange.open_markets(owner, sub_account))
    return [m.id for m in deployment.markets if mask >> m.id & 1]


def read_positions(deployment: Deployment, owner: str, sub_account: int = 0) -> list[PositionView]:
    """Every open position of a sub-account, valued at the current index."""
    ex, liquidator = deployment.exchange, deployment.liquidator
    symbols = {m.id: m.symbol for m in deployment.markets}
    rows = []
    with contract_errors():
        for market_id in open_market_ids(deployment, owner, sub_account):
            size, entry, pnl, funding = ex.position(owner, sub_account, market_id)
            rows.append(
                PositionView(
                    symbol=symbols[market_id],
                    size=int(size),
                    entry_price=int(entry),
                    index_price=int(ex.index_price(market_id)),
                    mark_price=int(ex.mark_price(market_id)),
                    unrealized_pnl=int(pnl),
                    unsettled_funding=int(funding),
                    liquidation_price=int(liquidator.liquidation_price(owner, sub_account, market_id)),
                )
            )
    return rows


def read_account(deployment: Deployment, owner: str, sub_account: int = 0) -> AccountView:
    ex = deployment.exchange
    with contract_errors():
        cash, equity, initial, maintenance = ex.account_state(owner, sub_account)
        return AccountView(
            owner=owner,
            sub_account=sub_account,
            cash=int(cash),
            equity=int(equity),
            initial=int(initial),
            maintenance=int(maintenance),
            withdrawable=int(ex.withdrawable(owner, sub_account)),
            liquidatable=bool(deployment.liquidator.is_liquidatable(owner, sub_account)),
            wallet_units=int(deployment.collateral.balanceOf(owner)),
            decimals=token_decimals(deployment),
        )


def read_market(deployment: Deployment, market: MarketConfig) -> MarketView:
    """A market's state; prices are None (with the oracle's reason) when the oracle refuses."""
    from ape.exceptions import ContractLogicError

    ex = deployment.exchange
    long_oi, short_oi = ex.open_interest(market.id)
    common = dict(
        id=market.id, symbol=market.symbol, params=market.params, skew=int(ex.skew(market.id)),
        long_oi=int(long_oi), short_oi=int(short_oi), funding_rate=int(ex.funding_rate(market.id)),
    )
    try:
        with quiet_traces():
            index = int(ex.index_price(market.id))
    except ContractLogicError as err:
        return MarketView(**common, index_price=None, mark_price=None, pnl_factor=None, oracle_error=revert_reason(err))
    return MarketView(
        **common, index_price=index, mark_price=int(ex.mark_price(market.id)),
        pnl_factor=int(deployment.liquidator.pnl_factor(market.id)),
    )


def read_markets(deployment: Deployment) -> list[MarketView]:
    return [read_market(deployment, m) for m in deployment.markets]


def read_insurance(deployment: Deployment) -> InsuranceView:
    fund, liquidator = deployment.insurance_fund, deployment.liquidator
    return InsuranceView(
        balance=int(fund.fund_balance()),
        target=int(fund.target()),
        surplus_units=int(fund.surplus()),
        decimals=token_decimals(deployment),
        deficits=[
            (m.symbol, int(liquidator.uncovered_deficit(m.id)), int(liquidator.deficit_side(m.id)))
            for m in deployment.markets
        ],
    )


# =============================================================================================
# RENDERING (rich tables)
# =============================================================================================


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def positions_table(rows: list[PositionView], owner: str, sub_account: int) -> Table:
    table = _table(
        f"positions of {owner}, sub-account {sub_account}",
        "market", "size", "entry", "index", "mark", "unrealized PnL", "unsettled funding", "liquidation price",
    )
    for p in rows:
        table.add_row(
            p.symbol, size_text(p.size), usd(p.entry_price), usd(p.index_price), usd(p.mark_price),
            usd(p.unrealized_pnl), usd(p.unsettled_funding), price_or_none(p.liquidation_price),
        )
    return table


def account_table(a: AccountView) -> Table:
    table = _table("account (USD)", "cash", "equity", "initial margin", "maintenance margin", "withdrawable",
                   "liquidatable", "wallet")
    table.add_row(
        usd(a.cash), usd(a.equity), usd(a.initial), usd(a.maintenance), usd(a.withdrawable),
        "YES" if a.liquidatable else "no", tokens(a.wallet_units, a.decimals),
    )
    return table


def markets_table(rows: list[MarketView]) -> Table:
    table = _table(
        "markets", "market", "index", "mark", "skew", "long OI", "short OI", "funding / 8 h", "funding / year",
        "PnL factor",
    )
    for m in rows:
        if m.index_price is None:
            prices = [f"n/a ({m.oracle_error})", "n/a"]
        else:
            prices = [usd(m.index_price), usd(m.mark_price)]
        table.add_row(
            f"{m.symbol} ({m.id})", *prices, size_text(m.skew), f"{wad_to_decimal(m.long_oi):,.4f}",
            f"{wad_to_decimal(m.short_oi):,.4f}", percent(m.funding_rate), percent(m.funding_rate_annual, 2),
            "n/a" if m.pnl_factor is None else percent(m.pnl_factor, 2),
        )
    return table


def params_table(rows: list[MarketView]) -> Table:
    table = _table(
        "market parameters", "market", "skew scale", "max funding / 8 h", "maker", "taker", "initial margin",
        "maintenance", "penalty", "max long OI", "max short OI", "max position", "liquidation slice",
    )
    for m in rows:
        p = m.params
        table.add_row(
            m.symbol, f"{wad_to_decimal(p.skew_scale):,f}", ratio_percent(p.max_funding_rate),
            ratio_percent(p.maker_fee), ratio_percent(p.taker_fee), ratio_percent(p.initial_margin_ratio),
            ratio_percent(p.maintenance_margin_ratio), ratio_percent(p.liquidation_penalty_ratio),
            *(f"{wad_to_decimal(v):,f}" for v in (p.max_long_oi, p.max_short_oi, p.max_position_size,
                                                  p.max_liquidation_size)),
        )
    return table


def order_block(o: OrderView, now: int, max_order_age: int) -> str:
    """One order, a field a line (a table of eleven columns does not fit a terminal)."""
    kind = f"{o.kind_name} {o.side}" + (", reduce-only" if o.reduce_only else "")
    fields = [
        ("state", o.status(now, max_order_age)),
        ("kind", kind),
        ("size", f"{size_text(o.size_delta)} {o.symbol}"),
        ("trigger", usd(o.trigger_price) if o.kind != KIND_MARKET else "-"),
        ("acceptable", o.acceptable_text()),
        ("not before", f"{utc_time(o.not_before)} ({relative(o.not_before, now)})"),
        ("expiry", f"{utc_time(o.expiry)} ({relative(o.expiry, now)})"),
        ("fee", f"{usd(o.fee)} USD"),
    ]
    return "\n".join([f"order {o.order_id:#x}", *(f"  {name:<11} {value}" for name, value in fields)])


def orders_report(deployment: Deployment, owner: str, sub_account: int = 0) -> list[Table | str]:
    """`orders`: the open orders of a sub-account with what each waits for (or a note)."""
    rows = read_orders(deployment, owner, sub_account)
    if not rows:
        return [f"no open orders in sub-account {sub_account}"]
    max_age = int(deployment.order_book.order_params().max_order_age)
    now = chain_now()
    title = f"open orders of {owner}, sub-account {sub_account} (chain time {utc_time(now)}):"
    return [title, *(order_block(o, now, max_age) for o in rows)]


def insurance_table(r: InsuranceView) -> Table:
    table = _table("insurance fund (USD)", "balance", "target", "surplus (withdrawable by the owner)")
    table.add_row(usd(r.balance), usd(r.target), tokens(r.surplus_units, r.decimals))
    return table


def deficits_table(r: InsuranceView) -> Table:
    table = _table("uncovered deficits (bad debt the fund could not pay)", "market", "deficit (USD)", "losing side")
    for symbol, deficit, side in r.deficits:
        table.add_row(symbol, usd(deficit), "long" if side > 0 else "short" if side < 0 else "-")
    return table


def positions_report(deployment: Deployment, owner: str, sub_account: int = 0) -> list[Table | str]:
    """`positions`: the open positions (or a note that there are none), then the account."""
    rows = read_positions(deployment, owner, sub_account)
    first = positions_table(rows, owner, sub_account) if rows else f"no open positions in sub-account {sub_account}"
    return [first, account_table(read_account(deployment, owner, sub_account))]


def markets_report(deployment: Deployment) -> list[Table]:
    """`markets`: market state, then parameters."""
    rows = read_markets(deployment)
    return [markets_table(rows), params_table(rows)]


def insurance_report(deployment: Deployment) -> list[Table]:
    """`insurance`: the fund, then the uncovered deficits per market."""
    report = read_insurance(deployment)
    return [insurance_table(report), deficits_table(report)]


def show(*renderables: Table | str) -> None:
    out = console()
    for renderable in renderables:
        out.print(renderable)


def console() -> Console:
    """Rich output on stdout; wide enough for the tables when not a terminal (pipes, tests)."""
    out = Console(soft_wrap=False)
    if not out.is_terminal:
        out.width = 200
    return out
