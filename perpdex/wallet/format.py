"""Tables and blocks of text for the read commands (rich tables on stdout, USD with cents)."""

from __future__ import annotations

from perpdex.orders import KIND_MARKET, KIND_NAMES
from perpdex.wallet.trading import Order
from perpdex.wallet.units import base_amount, percent, price, ratio_percent, relative, size_text, tokens, usd, utc_time
from perpdex.wallet.views import AccountRow, InsuranceRow, MarketRow, PositionRow

UNAVAILABLE = "price unavailable"


def table(title: str, *columns: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    return t


def _or(amount: int | None, shown=usd) -> str:
    return UNAVAILABLE if amount is None else shown(amount)


def liquidation_text(p: PositionRow) -> str:
    if p.liquidation is None:
        return UNAVAILABLE
    if p.liquidation == 0:
        return "none (no price liquidates it)"
    return price(p.liquidation)


def positions_table(rows: list[PositionRow], owner: str, sub: int):
    t = table(f"positions of {owner}, sub-account {sub}", "market", "size", "entry", "index", "mark",
              "unrealized PnL", "unsettled funding", "liquidation price")
    for p in rows:
        t.add_row(p.symbol, size_text(p.size), price(p.entry), _or(p.index, price), _or(p.mark, price), _or(p.pnl),
                  _or(p.funding), liquidation_text(p))
    return t


def position_notes(rows: list[PositionRow]) -> list[str]:
    notes = []
    for p in rows:
        if p.oracle_error:
            notes.append(f"{p.symbol}: {UNAVAILABLE} ({p.oracle_error}); size and entry are as stored, PnL and margin "
                         "need a price")
        elif p.liquidation == 0:
            why = ("the collateral covers the position even at a price of zero" if p.size > 0
                   else "the account's other positions and cash cover it at any price")
            notes.append(f"{p.symbol}: no liquidation price: {why} (all other prices fixed)")
    return notes


def account_table(a: AccountRow):
    t = table("account (USD)", "cash", "equity", "initial margin", "maintenance margin", "withdrawable",
              "liquidatable", "order fees escrowed", "wallet")
    liquidatable = UNAVAILABLE if a.liquidatable is None else "YES" if a.liquidatable else "no"
    t.add_row(usd(a.cash), _or(a.equity), _or(a.initial), _or(a.maintenance), _or(a.withdrawable), liquidatable,
              usd(a.escrow), tokens(a.wallet_units, a.decimals))
    return t


def markets_table(rows: list[MarketRow]):
    t = table("markets", "market", "index", "mark", "skew", "long OI", "short OI", "funding / 8 h", "funding / year",
              "PnL factor")
    for m in rows:
        prices = [f"n/a ({m.oracle_error})", "n/a"] if m.index is None else [price(m.index), price(m.mark)]
        t.add_row(f"{m.symbol} ({m.id})", *prices, size_text(m.skew), f"{base_amount(m.long_oi)}",
                  f"{base_amount(m.short_oi)}", percent(m.funding_rate), percent(m.funding_rate_annual, 2),
                  "n/a" if m.pnl_factor is None else percent(m.pnl_factor, 2))
    return t


def params_table(rows: list[MarketRow]):
    t = table("market parameters", "market", "skew scale", "max funding / 8 h", "maker", "taker", "initial margin",
              "maintenance", "penalty", "max long OI", "max short OI", "max position", "liquidation slice")
    for m in rows:
        p = m.params
        t.add_row(m.symbol, base_amount(p.skew_scale), ratio_percent(p.max_funding_rate), ratio_percent(p.maker_fee),
                  ratio_percent(p.taker_fee), ratio_percent(p.initial_margin_ratio),
                  ratio_percent(p.maintenance_margin_ratio), ratio_percent(p.liquidation_penalty_ratio),
                  *(base_amount(v) for v in (p.max_long_oi, p.max_short_oi, p.max_position_size, p.max_liquidation_size)))
    return t


def insurance_tables(r: InsuranceRow):
    fund = table("insurance fund (USD)", "balance", "target", "surplus (withdrawable by the owner)")
    fund.add_row(usd(r.balance), usd(r.target), tokens(r.surplus_units, r.decimals))
    deficits = table("uncovered deficits (bad debt the fund could not pay)", "market", "deficit (USD)", "losing side")
    for symbol, deficit, side in r.deficits:
        deficits.add_row(symbol, usd(deficit), "long" if side > 0 else "short" if side < 0 else "-")
    return [fund, deficits]


def order_block(o: Order, now: int, max_order_age: int) -> str:
    """One order, a field a line (a table of eleven columns does not fit a terminal)."""
    kind = f"{KIND_NAMES[o.kind]} {o.side}" + (", reduce-only" if o.reduce_only else "")
    fields = [
        ("state", o.status(now, max_order_age)),
        ("kind", kind),
        ("size", f"{size_text(o.size_delta)} {o.symbol}"),
        ("trigger", price(o.trigger_price) if o.kind != KIND_MARKET else "-"),
        ("acceptable", o.acceptable_text()),
        ("not before", f"{utc_time(o.not_before)} ({relative(o.not_before, now)})"),
        ("expiry", f"{utc_time(o.expiry)} ({relative(o.expiry, now)})"),
        ("fee", f"{usd(o.fee)} USD"),
    ]
    return "\n".join([f"order {o.order_id:#x}", *(f"  {name:<11} {text}" for name, text in fields)])


def show(*renderables) -> None:
    """Print lines and tables (rich is imported only when there is a table)."""
    if all(isinstance(r, str) for r in renderables):
        print(*renderables, sep="\n", flush=True)
        return
    from rich.console import Console

    out = Console(soft_wrap=False)
    if not out.is_terminal:
        out.width = 220  # pipes and tests: wide enough for the tables
    for renderable in renderables:
        out.print(renderable, highlight=False)
