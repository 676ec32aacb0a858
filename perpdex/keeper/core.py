"""The keeper's view of the exchange at one block, and the health of every account in it.

Plain Python over the reference model (perpdex.model), no chain client: the transport
(perpdex.keeper.chain) fills a `Snapshot` from the contracts, tests and simulators build one
from a model. `Snapshot.evaluate` is the keeper's hot loop: the model's `account_view`, inlined
over cached positions, for every account at the new prices and funding.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from perpdex.fixed_point import WAD
from perpdex.model import LIQUIDITY_VAULT, ExchangeModel, Position, accrued_funding_per_unit

AccountKey = tuple[str, int]  # (owner address, sub-account)

MAX_BATCH = 50  # Liquidator.MAX_BATCH: accounts per liquidate_many


@dataclass(slots=True)
class AccountState:
    """A sub-account as the vault and exchange store it."""

    cash: int
    positions: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # market -> (size, open notional, snapshot)


class Health(NamedTuple):
    equity: int
    initial: int
    maintenance: int

    @property
    def liquidatable(self) -> bool:
        """Liquidator._is_liquidatable: maintenance != 0 and equity < maintenance."""
        return self.maintenance != 0 and self.equity < self.maintenance


class MarketTerms(NamedTuple):
    """What one account's health needs from a market, computed once per snapshot."""

    index: int
    funding_per_unit: int  # accrued to the snapshot's timestamp
    initial_margin_ratio: int
    maintenance_margin_ratio: int
    liquidation_penalty_ratio: int
    double_skew_scale: int


@dataclass
class Evaluation:
    health: dict[AccountKey, Health]
    liquidatable: list[AccountKey]
    bankrupt: list[AccountKey]  # negative cash, no position
    unpriced: list[AccountKey]  # a position in a market without a valid index


class Snapshot:
    """The exchange at one block, as an ExchangeModel without trader positions, plus per-market
    terms precomputed for the health of many accounts."""

    def __init__(self, model: ExchangeModel, block: int = 0):
        self.model = model
        self.block = block
        self.timestamp = model.now
        self.keeper_min_reward = model.globals.keeper_min_reward
        self.terms: dict[int, MarketTerms] = {m: self._terms(m) for m in model.params if m in model.index}

    def _terms(self, market_id: int) -> MarketTerms:
        params, index = self.model.params[market_id], self.model.index[market_id]
        fpu = accrued_funding_per_unit(self.model.markets[market_id], params, index, self.model.now)
        return MarketTerms(
            index,
            fpu,
            params.initial_margin_ratio,
            params.maintenance_margin_ratio,
            params.liquidation_penalty_ratio,
            2 * params.skew_scale,
        )

    def health(self, state: AccountState) -> Health | None:
        """ExchangeModel.account_view, inlined: None when a market of the account has no price."""
        equity, initial, maintenance = state.cash, 0, 0
        terms = self.terms
        for market_id, (size, basis, snapshot) in state.positions.items():
            t = terms.get(market_id)
            if t is None:
                return None
            index = t.index
            abs_size = size if size > 0 else -size
            equity += size * index // WAD - basis  # unrealized PnL, floored
            equity -= -((size * (snapshot - t.funding_per_unit)) // WAD)  # funding owed, rounded up
            notional = -((-abs_size * index) // WAD)
            close_terms = -((-notional * abs_size) // t.double_skew_scale) - (
                (-notional * t.liquidation_penalty_ratio) // WAD
            )
            initial += -((-notional * t.initial_margin_ratio) // WAD) + close_terms
            maintenance += -((-notional * t.maintenance_margin_ratio) // WAD) + close_terms
        if state.positions:
            initial += self.keeper_min_reward
            maintenance += self.keeper_min_reward
        return Health(equity, initial, maintenance)

    def evaluate(self, states: Mapping[AccountKey, AccountState]) -> Evaluation:
        """Health of every account; liquidatable ones in a deterministic order."""
        health: dict[AccountKey, Health] = {}
        liquidatable: list[AccountKey] = []
        bankrupt: list[AccountKey] = []
        unpriced: list[AccountKey] = []
        evaluate = self.health
        for key, state in states.items():
            if not state.positions:
                if state.cash < 0:
                    bankrupt.append(key)
                continue
            h = evaluate(state)
            if h is None:
                unpriced.append(key)
                continue
            health[key] = h
            if h.maintenance and h.equity < h.maintenance:
                liquidatable.append(key)
        liquidatable.sort()
        bankrupt.sort(key=lambda k: (states[k].cash, k))  # deepest first
        return Evaluation(health, liquidatable, bankrupt, unpriced)

    def account_model(self, accounts: Mapping[AccountKey, AccountState], writable: bool = True) -> ExchangeModel:
        """An ExchangeModel holding only `accounts` (and the liquidity vault's cash): every model
        view of these accounts is exact, at the cost of their own positions only. When
        `writable`, market state is copied so that transactions on the returned model leave the
        snapshot untouched; read-only views can share it."""
        model = copy.copy(self.model)
        if writable:
            model.markets = copy.deepcopy(self.model.markets)
            model.uncovered_deficit = dict(self.model.uncovered_deficit)
            model.deficit_side = dict(self.model.deficit_side)
            model.deficit_records = {k: list(v) for k, v in self.model.deficit_records.items()}
            model.liquidation_windows = dict(self.model.liquidation_windows)
            model.index = dict(self.model.index)
            model.order_slots, model.order_seq, model.order_books, model.order_ids = {}, {}, {}, {}
        model.cash = {LIQUIDITY_VAULT: self.model.cash_of(LIQUIDITY_VAULT)}
        model.positions = {}
        for key, state in accounts.items():
            model.cash[key] = state.cash
            for market_id, (size, basis, snapshot) in state.positions.items():
                model.positions[(key, market_id)] = Position(size, basis, snapshot)
        return model

    def priced(self, state: AccountState) -> bool:
        return all(m in self.terms for m in state.positions)

    def lv_priced(self) -> bool:
        """The liquidity vault's value (hence the PnL factor) needs the index of every market
        with a skew."""
        return all(m in self.model.index for m, s in self.model.markets.items() if s.skew != 0)


def states_from_model(model: ExchangeModel) -> dict[AccountKey, AccountState]:
    """The trader sub-accounts of a model as the keeper caches them (tests, benchmarks)."""
    states: dict[AccountKey, AccountState] = {}
    for account, cash in model.cash.items():
        if isinstance(account, tuple):
            states[account] = AccountState(cash)
    for (account, market_id), p in model.positions.items():
        if p.size != 0:
            state = states.setdefault(account, AccountState(0))
            state.positions[market_id] = (p.size, p.open_notional, p.funding_snapshot)
    return states


def take_turn(
    keeper: str, keepers: Iterable[str], since: int, now: int, length: int, margin: int, first: int = 0
) -> tuple[bool, int]:
    """Whether `keeper` may act at `now` (a block number or a timestamp) on something that is
    due since `since`, and the first moment >= `now` at which it may.

    The keepers (in address order, rotated by `first`) take turns of `length` units, the first
    one starting at `since`: the first keeper acts at once and the others only if the work is
    still there when their turn comes (a keeper that does not run leaves its turns idle). A
    keeper acts only in the first `length - margin` units of its turn: what it sent has `margin`
    units to be mined before the next keeper, which simulates first, may act. Every keeper
    derives the same turns from data they all see."""
    ranked = sorted({k.lower() for k in keepers})
    me = keeper.lower()
    if me not in ranked:
        return False, -1
    if len(ranked) == 1:
        return True, now
    rank, cycle = (ranked.index(me) - first) % len(ranked), length * len(ranked)
    elapsed = max(0, now - since)
    offset = elapsed % cycle - rank * length  # units into our turn (negative: before it)
    if 0 <= offset < length - margin:
        return True, now
    wait = -offset if offset < 0 else cycle - offset
    return False, now + wait
