"""The wallet behind `ape run trade`: deposits, trades, positions, LP shares, market reports.

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
from contextlib import contextmanager
from dataclasses import dataclass
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

if TYPE_CHECKING:
    from ape.api import AccountAPI
    from ape.contracts import ContractInstance

YEAR = 365 * 24 * 3600
FUNDING_PERIODS_PER_YEAR = YEAR // FUNDING_PERIOD  # 1,095 periods of 8 h
DEFAULT_SLIPPAGE = Decimal("0.5")  # percent
# reason-string namespace ("exchange: ...") -> who rejected it, in words
REJECTERS = {
    "liquidity vault": "the liquidity vault",
    "insurance fund": "the insurance fund",
    "exchange": "the exchange",
    "vault": "the vault",
    "oracle": "the price oracle",
    "liquidator": "the liquidator",
    "erc20": "the collateral token",
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
def contract_errors() -> Iterator[None]:
    """Turn ape's revert and transaction errors into a `CliError` a person can read."""
    from ape.exceptions import AccountsError, ContractLogicError, TransactionError

    try:
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
        deployment.vault.deposit(sub_account, units, sender=account)
    return CashMove(sub_account, units, decimals, int(deployment.vault.cash(account.address, sub_account)))


def withdraw(deployment: Deployment, account: AccountAPI, amount: str | Decimal, sub_account: int = 0) -> CashMove:
    """Withdraw `amount` USD of free collateral from `sub_account` to the wallet."""
    decimals = token_decimals(deployment)
    units = positive_amount(amount, decimals)
    with contract_errors():
        deployment.vault.withdraw(sub_account, units, sender=account)
    return CashMove(sub_account, units, decimals, int(deployment.vault.cash(account.address, sub_account)))


def _trade(
    deployment: Deployment, account: AccountAPI, market: MarketConfig, size_delta: int, sub_account: int,
    slippage: str | Decimal,
) -> TradeResult:
    exchange = deployment.exchange
    with contract_errors():
        quote = int(exchange.fill_price(market.id, size_delta))
        limit = acceptable_price(quote, size_delta, parse_decimal(slippage, "--slippage"))
        receipt = exchange.trade(sub_account, market.id, size_delta, limit, sender=account)
    (event,) = receipt.decode_logs(exchange.Trade)
    return TradeResult(
        symbol=market.symbol,
        size_delta=size_delta,
        acceptable_price=limit,
        fill_price=int(event.fill_price),
        fee=int(event.fee),
        realized_pnl=int(event.realized_pnl),
        funding_paid=int(event.funding_paid),
        new_size=int(event.new_size),
    )


def open_position(
    deployment: Deployment, account: AccountAPI, market: str, size: str | Decimal, sub_account: int = 0,
    slippage: str | Decimal = DEFAULT_SLIPPAGE,
) -> TradeResult:
    """Trade `size` base units (negative sells) in `market`, accepting the quoted fill price
    moved by at most `slippage` percent."""
    return _trade(deployment, account, resolve_market(deployment, market), signed_size(size), sub_account, slippage)


def close_position(
    deployment: Deployment, account: AccountAPI, market: str, sub_account: int = 0,
    slippage: str | Decimal = DEFAULT_SLIPPAGE,
) -> TradeResult:
    """Close the whole position of `sub_account` in `market`."""
    m = resolve_market(deployment, market)
    size, _, _ = deployment.exchange.position_state(account.address, sub_account, m.id)
    if size == 0:
        raise CliError(f"no open {m.symbol} position in sub-account {sub_account}")
    return _trade(deployment, account, m, -int(size), sub_account, slippage)


def lp_deposit(deployment: Deployment, account: AccountAPI, amount: str | Decimal) -> LpMove:
    """Deposit `amount` USD into the liquidity vault for shares, approving it if needed."""
    lv = deployment.liquidity_vault
    decimals = token_decimals(deployment)
    units = positive_amount(amount, decimals)
    _require_balance(deployment.collateral, account, units, decimals)
    with contract_errors():
        ensure_allowance(deployment.collateral, account, lv.address, units)
        receipt = lv.deposit(units, account.address, sender=account)
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
        receipt = lv.redeem(amount, account.address, account.address, sender=account)
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
