"""What the read commands show, each read in at most two JSON-RPC batches.

`positions` never fails on a stale feed: cash, sizes and entry prices come from views that need
no oracle (Vault.account, Exchange.position_state); prices, PnL, margins and liquidation prices
are shown as unavailable, with the oracle's reason, where the oracle refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from perpdex.wallet.client import Wallet
from perpdex.wallet.rpc import Reverted
from perpdex.wallet.units import WAD

YEAR = 365 * 24 * 3600
FUNDING_PERIOD = 8 * 3600


def value(result):
    """A view's value, or None when the contract refused it."""
    return None if isinstance(result, Reverted) else result


@dataclass(frozen=True)
class PositionRow:
    symbol: str
    size: int
    entry: int
    index: int | None
    mark: int | None
    pnl: int | None
    funding: int | None  # positive: the position owes it
    liquidation: int | None  # 0: no positive price liquidates it
    oracle_error: str | None


@dataclass(frozen=True)
class AccountRow:
    owner: str
    sub: int
    cash: int
    equity: int | None
    initial: int | None
    maintenance: int | None
    withdrawable: int | None
    liquidatable: bool | None
    wallet_units: int
    decimals: int
    escrow: int  # execution fees held for open orders


def read_positions(w: Wallet, owner: str, sub: int) -> tuple[list[PositionRow], AccountRow]:
    (cash, mask), decimals, balance, ids = w.reads([
        ("vault", "account", (owner, sub)), ("collateral", "decimals", ()), ("collateral", "balanceOf", (owner,)),
        ("order_book", "open_orders", (owner, sub)),
    ])
    markets = [m for m in w.markets if mask >> m.id & 1]
    calls = [("exchange", "account_state", (owner, sub)), ("exchange", "withdrawable", (owner, sub)),
             ("liquidator", "is_liquidatable", (owner, sub))]
    calls += [("order_book", "order", (i,)) for i in ids]
    for m in markets:
        calls += [("exchange", "position_state", (owner, sub, m.id)), ("exchange", "position", (owner, sub, m.id)),
                  ("exchange", "index_price", (m.id,)), ("exchange", "mark_price", (m.id,)),
                  ("liquidator", "liquidation_price", (owner, sub, m.id))]
    results = w.reads(calls)
    state, free, liquidatable = (value(r) for r in results[:3])
    orders = results[3:3 + len(ids)]
    escrow = sum(o.fee for o in orders if not isinstance(o, Reverted))
    rows = []
    for i, m in enumerate(markets):
        size_state, full, index, mark, liquidation = results[3 + len(ids) + 5 * i: 3 + len(ids) + 5 * (i + 1)]
        size, basis, _ = size_state
        if size == 0:
            continue
        entry = abs(basis) * WAD // abs(size)
        error = index.reason if isinstance(index, Reverted) else None
        full = value(full)
        rows.append(PositionRow(
            m.symbol, size, entry, value(index), value(mark), full[2] if full else None, full[3] if full else None,
            value(liquidation), error,
        ))
    account = AccountRow(
        owner, sub, cash, state[1] if state else None, state[2] if state else None, state[3] if state else None,
        free, liquidatable, balance, decimals, escrow,
    )
    return rows, account


@dataclass(frozen=True)
class MarketRow:
    id: int
    symbol: str
    params: SimpleNamespace
    index: int | None
    mark: int | None
    skew: int
    long_oi: int
    short_oi: int
    funding_rate: int  # per 8 h
    pnl_factor: int | None
    oracle_error: str | None

    @property
    def funding_rate_annual(self) -> int:
        return self.funding_rate * (YEAR // FUNDING_PERIOD)


def read_markets(w: Wallet) -> list[MarketRow]:
    per = ("index_price", "mark_price", "skew", "open_interest", "funding_rate", "market_params")
    calls = []
    for m in w.markets:
        calls += [("exchange", fn, (m.id,)) for fn in per] + [("liquidator", "pnl_factor", (m.id,))]
    results = w.reads(calls)
    rows = []
    for i, m in enumerate(w.markets):
        index, mark, skew, oi, rate, params, factor = results[7 * i: 7 * (i + 1)]
        rows.append(MarketRow(
            m.id, m.symbol, params, value(index), value(mark), skew, oi[0], oi[1],
            rate if not isinstance(rate, Reverted) else 0, value(factor),
            index.reason if isinstance(index, Reverted) else None,
        ))
    return rows


@dataclass(frozen=True)
class InsuranceRow:
    balance: int
    target: int
    surplus_units: int
    decimals: int
    deficits: list[tuple[str, int, int]]  # (symbol, uncovered deficit, losing side)


def read_insurance(w: Wallet) -> InsuranceRow:
    calls = [("insurance_fund", "fund_balance", ()), ("insurance_fund", "target", ()),
             ("insurance_fund", "surplus", ()), ("collateral", "decimals", ())]
    for m in w.markets:
        calls += [("liquidator", "uncovered_deficit", (m.id,)), ("liquidator", "deficit_side", (m.id,))]
    r = w.reads(calls)
    deficits = [(m.symbol, r[4 + 2 * i], r[5 + 2 * i]) for i, m in enumerate(w.markets)]
    return InsuranceRow(r[0], r[1], r[2], r[3], deficits)
