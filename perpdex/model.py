"""Reference model of perpdex's exchange math, in exact integers with the contracts' rounding.

Every function here has a twin in contracts/Exchange.vy (or its modules) and the tests compare
the two to the wei. Units: prices and USD amounts are WAD (1e18), sizes are base units in WAD,
ratios are WAD (1e18 = 100 %), signed quantities are Python ints standing for int256.

Rounding rule (DESIGN.md): every division rounds against the party being paid and in favour of
the system. Concretely:
- fill price rounds up for buys, down for sells;
- a position's cost basis rounds up when it grows; proceeds of a close round down;
- funding charged to a holder rounds up (payers pay the ceiling, receivers get the floor);
- fees round up; the insurance fund's share of a fee rounds up, the fee receiver's down;
- margin requirements round up, equity rounds down.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from perpdex.fixed_point import WAD, ceil_div, floor_div, mul_div_down, mul_div_up, sign
from perpdex.lp_flows import LiquidityFlowsMixin
from perpdex.orders import ORDER_ESCROW, OrderBookMixin, OrderParams

FUNDING_PERIOD = 8 * 3600  # funding rates are quoted per 8 hours

# System accounts of the vault ledger (trader accounts are (owner, sub_account) tuples).
LIQUIDITY_VAULT = "liquidity_vault"
INSURANCE_FUND = "insurance_fund"
FEE_RECEIVER = "fee_receiver"
FUNDING_POOL = "funding_pool"
SYSTEM_ACCOUNTS = (LIQUIDITY_VAULT, INSURANCE_FUND, FEE_RECEIVER, FUNDING_POOL, ORDER_ESCROW)

# Exchange._execute modes
MODE_TRADE, MODE_LIQUIDATION, MODE_ADL, MODE_ADL_FILL = 0, 1, 2, 3


class ModelRevert(Exception):
    """The model's equivalent of a contract revert; `reason` is the contract's reason string."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise ModelRevert(reason)


# ---------------------------------------------------------------------------------------------
# Parameters and state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarketParams:
    skew_scale: int  # base units (WAD); premium = skew / skew_scale
    max_funding_rate: int  # WAD per 8 h
    maker_fee: int  # WAD ratio of notional, for the part of a trade that reduces |skew|
    taker_fee: int  # WAD ratio of notional, for the part that increases |skew|
    initial_margin_ratio: int
    maintenance_margin_ratio: int
    liquidation_penalty_ratio: int
    max_long_oi: int  # base units
    max_short_oi: int  # base units
    max_position_size: int  # base units
    max_liquidation_size: int  # base units per liquidation call (used by liquidation)


@dataclass(frozen=True)
class GlobalParams:
    insurance_fee_share: int = WAD // 5  # share of every fee to the insurance fund
    protocol_fee_share: int = 0  # share of every fee to the fee receiver
    keeper_min_reward: int = 0  # flat keeper reward floor (WAD USD), part of maintenance
    keeper_reward_share: int = WAD // 5  # share of the liquidation penalty paid to the keeper


@dataclass
class MarketState:
    long_oi: int = 0
    short_oi: int = 0
    funding_per_unit: int = 0
    last_funding_time: int = 0
    open_notional_sum: int = 0  # sum of the traders' open notionals (signed cost bases)

    @property
    def skew(self) -> int:
        return self.long_oi - self.short_oi


@dataclass
class Position:
    size: int = 0
    open_notional: int = 0  # signed cost basis: size x average entry price
    funding_snapshot: int = 0

    @property
    def entry_price(self) -> int:
        if self.size == 0:
            return 0
        return abs(self.open_notional) * WAD // abs(self.size)


# ---------------------------------------------------------------------------------------------
# Prices and funding
# ---------------------------------------------------------------------------------------------


def premium(skew: int, skew_scale: int) -> int:
    """skew / skew_scale in WAD, floored."""
    return floor_div(skew * WAD, skew_scale)


def funding_rate(skew: int, params: MarketParams) -> int:
    """Funding rate per 8 hours: the premium clamped to +-max_funding_rate."""
    rate = premium(skew, params.skew_scale)
    return max(-params.max_funding_rate, min(params.max_funding_rate, rate))


def mark_price(index: int, skew: int, skew_scale: int) -> int:
    """index x (1 + skew / skew_scale), floored, and never below zero."""
    return max(index + mul_div_down(index, skew, skew_scale), 0)


def fill_price(index: int, skew: int, skew_scale: int, size_delta: int) -> int:
    """index x (1 + (skew + (skew + delta)) / (2 skew_scale)); up for buys, down for sells."""
    require(size_delta != 0, "exchange: zero size")
    numerator = index * (2 * skew + size_delta)
    impact = ceil_div(numerator, 2 * skew_scale) if size_delta > 0 else floor_div(numerator, 2 * skew_scale)
    price = index + impact
    require(price > 0, "exchange: fill price out of range")
    return price


def closing_price(index: int, skew: int, skew_scale: int) -> int:
    """pricing._closing_price: the fill at which the traders' whole skew would close, never below 0."""
    if skew == 0:
        return index
    numerator = index * skew
    impact = ceil_div(numerator, 2 * skew_scale) if skew < 0 else floor_div(numerator, 2 * skew_scale)
    return max(index + impact, 0)


def liquidation_price_of_slice(index: int, skew: int, skew_scale: int, size_delta: int) -> int:
    """pricing._liquidation_price: the worse, for the account, of the slice's own-impact price
    and the ordinary fill."""
    fill = fill_price(index, skew, skew_scale, size_delta)
    own = fill_price(index, 0, skew_scale, size_delta)
    return min(fill, own) if size_delta < 0 else max(fill, own)


def funding_per_unit_delta(rate: int, index: int, elapsed: int) -> int:
    """USD per unit of size accrued over `elapsed` seconds at `rate` per 8 h, floored."""
    return floor_div(rate * index * elapsed, WAD * FUNDING_PERIOD)


def funding_charge(size: int, funding_per_unit: int, snapshot: int) -> int:
    """What a holder of `size` pays (positive) or receives (negative); rounded up."""
    return ceil_div(size * (funding_per_unit - snapshot), WAD)


def accrued_funding_per_unit(market: MarketState, params: MarketParams, index: int, now: int) -> int:
    """The market's funding_per_unit as it would be after a touch at `now`."""
    elapsed = now - market.last_funding_time
    if elapsed <= 0 or market.skew == 0:
        return market.funding_per_unit
    rate = funding_rate(market.skew, params)
    return market.funding_per_unit + funding_per_unit_delta(rate, index, elapsed)


# ---------------------------------------------------------------------------------------------
# Fees
# ---------------------------------------------------------------------------------------------


def trade_fee(skew: int, size_delta: int, price: int, params: MarketParams) -> int:
    """Maker fee on the part of the trade that reduces |skew|, taker fee on the rest; rounded up."""
    size = abs(size_delta)
    maker_size = min(size, abs(skew)) if sign(skew) == -sign(size_delta) else 0
    taker_size = size - maker_size
    return ceil_div((maker_size * params.maker_fee + taker_size * params.taker_fee) * price, WAD * WAD)


def split_fee(fee: int, g: GlobalParams) -> tuple[int, int, int]:
    """(to liquidity vault, to insurance fund, to fee receiver); the insurance fund gets the dust."""
    insurance = ceil_div(fee * g.insurance_fee_share, WAD)
    protocol = floor_div(fee * g.protocol_fee_share, WAD)
    return fee - insurance - protocol, insurance, protocol


# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


def apply_fill(position: Position, size_delta: int, price: int) -> tuple[Position, int]:
    """Execute `size_delta` at `price` against a position: increase, reduce, close or flip.

    Returns the new position (funding snapshot unchanged) and the realized PnL of the part that
    was closed.
    """
    size, basis = position.size, position.open_notional
    realized = 0
    remaining = size_delta
    if size != 0 and sign(size_delta) != sign(size):
        # close min(|delta|, |size|) of the position
        closing = size if abs(size_delta) >= abs(size) else -size_delta  # same sign as size
        if closing == size:
            basis_removed = basis
        else:
            basis_removed = mul_div_up(basis, abs(closing), abs(size))
        proceeds = floor_div(closing * price, WAD)
        realized = proceeds - basis_removed
        basis -= basis_removed
        size -= closing
        remaining = size_delta + closing
    if remaining != 0:
        basis += ceil_div(remaining * price, WAD)
        size += remaining
    return replace(position, size=size, open_notional=basis), realized


def increases_risk(old_size: int, new_size: int) -> bool:
    return new_size != 0 and (sign(new_size) != sign(old_size) or abs(new_size) > abs(old_size))


def unrealized_pnl(position: Position, index: int) -> int:
    return floor_div(position.size * index, WAD) - position.open_notional


def notional(size: int, index: int) -> int:
    return ceil_div(abs(size) * index, WAD)


def close_terms(size: int, index: int, params: MarketParams) -> int:
    """The impact of closing the position alone + its liquidation penalty: part of both requirements."""
    n = notional(size, index)
    return ceil_div(n * abs(size), 2 * params.skew_scale) + ceil_div(n * params.liquidation_penalty_ratio, WAD)


def initial_requirement(size: int, index: int, params: MarketParams) -> int:
    """initial ratio + the close terms (no keeper floor): never below the maintenance requirement."""
    return ceil_div(notional(size, index) * params.initial_margin_ratio, WAD) + close_terms(size, index, params)


def maintenance_requirement(size: int, index: int, params: MarketParams) -> int:
    """maintenance ratio + the impact of closing alone + the liquidation penalty (no keeper floor)."""
    n = notional(size, index)
    return (
        ceil_div(n * params.maintenance_margin_ratio, WAD)
        + ceil_div(n * abs(size), 2 * params.skew_scale)
        + ceil_div(n * params.liquidation_penalty_ratio, WAD)
    )


# ---------------------------------------------------------------------------------------------
# The exchange as a whole: ledger, markets, accounts
# ---------------------------------------------------------------------------------------------

Account = tuple[str, int]  # (owner, sub_account)


@dataclass
class AccountView:
    cash: int
    equity: int
    initial: int
    maintenance: int

    @property
    def withdrawable(self) -> int:
        return max(0, min(self.cash, self.equity - self.initial))


@dataclass
class TradeResult:
    fill_price: int
    fee: int
    realized_pnl: int
    funding_paid: int
    position: Position


# ---------------------------------------------------------------------------------------------
# Liquidation, insurance fund, auto-deleveraging (contracts/Liquidator.vy)
# ---------------------------------------------------------------------------------------------

TRIGGER_DEFICIT, TRIGGER_PNL_FACTOR = 1, 2
REDUCTION_REASON = "exchange: reduction lowers the margin surplus"
NO_CAPACITY = "no capacity"  # _liquidate's answer when the capacity at this index is used up
NO_CAPACITY_REASON = "liquidator: liquidation capacity at this index used up; retry at the next price"
INT256_MAX = 2**255 - 1


@dataclass
class LiquidationResult:
    closed_notional: int
    penalty: int
    keeper_reward: int
    to_insurance: int
    equity_after: int
    fully_closed: bool
    covered_by_insurance: int = 0
    uncovered: int = 0


class LiquidationMixin:
    """contracts/Liquidator.vy: liquidation, bankruptcy cover, ADL; mixed into ExchangeModel."""


    def is_liquidatable(self, account: Account) -> bool:
        view = self.account_view(account)
        return view.maintenance != 0 and view.equity < view.maintenance

    def liquidate(self, account: Account, keeper) -> LiquidationResult:
        result = self._transaction(self._liquidate, account, keeper)
        require(result is not None, "liquidator: account healthy")
        require(result != NO_CAPACITY, NO_CAPACITY_REASON)
        return result

    def liquidate_many(self, accounts: list[Account], keeper) -> int:
        results = [self._transaction(self._liquidate, a, keeper) for a in accounts]
        return sum(1 for r in results if isinstance(r, LiquidationResult))

    def liquidation_capacity(self, market_id: int) -> int:
        """Liquidator.liquidation_capacity: what liquidations and ADL may still close at the index."""
        params = self.params[market_id]
        capacity = 2 * min(params.maker_fee, params.taker_fee) * params.skew_scale // WAD * self.capacity_multiplier // WAD
        window_index, used = self.liquidation_windows.get(market_id, (None, 0))
        if window_index != self.index[market_id]:
            used = 0
        return capacity - min(used, capacity)

    def _use_capacity(self, market_id: int, wanted: int) -> int:
        granted = min(wanted, self.liquidation_capacity(market_id))
        if granted > 0:
            window_index, used = self.liquidation_windows.get(market_id, (None, 0))
            if window_index != self.index[market_id]:
                used = 0
            self.liquidation_windows[market_id] = (self.index[market_id], used + granted)
        return granted

    def _liquidate(self, account: Account, keeper) -> LiquidationResult | None:
        if not self.is_liquidatable(account):
            return None
        markets = self.open_markets(account)
        penalty = closed_notional = total_loss = 0
        losses: dict[int, int] = {}
        sides: dict[int, int] = {}
        closed_any = False
        for market_id in markets:
            size = self.position(account, market_id).size
            params = self.params[market_id]
            amount = self._use_capacity(market_id, min(abs(size), params.max_liquidation_size))
            if amount == 0:
                continue
            closed_any = True
            fill, _ = self._execute(account, market_id, -sign(size) * amount, 0, MODE_LIQUIDATION)
            notional = ceil_div(amount * fill.fill_price, WAD)
            closed_notional += notional
            penalty += ceil_div(notional * params.liquidation_penalty_ratio, WAD)
            loss = fill.funding_paid - fill.realized_pnl
            if loss > 0:
                losses[market_id] = loss
                total_loss += loss
            sides[market_id] = sign(size)
        if not closed_any:
            return NO_CAPACITY
        view = self.account_view(account)
        available = max(view.equity, 0)
        penalty = min(penalty, available)
        keeper_reward = min(
            penalty * self.globals.keeper_reward_share // WAD + self.globals.keeper_min_reward, available
        )
        charged = max(penalty, keeper_reward)
        to_insurance = charged - keeper_reward
        self._credit(account, -charged)
        self._credit((keeper, 0), keeper_reward)
        self._credit(INSURANCE_FUND, to_insurance)
        fully_closed = not self.open_markets(account)
        result = LiquidationResult(
            closed_notional, penalty, keeper_reward, to_insurance, view.equity - charged, fully_closed
        )
        cash = self.cash_of(account)
        if fully_closed and cash < 0:
            self._cover_bankruptcy(account, cash, markets, losses, sides, total_loss, result)
        return result

    def _cover_bankruptcy(self, account, cash, markets, losses, sides, total_loss, result) -> None:
        deficit = -cash
        cover = min(deficit, max(self.cash_of(INSURANCE_FUND), 0))
        self._credit(account, cover)
        self._credit(INSURANCE_FUND, -cover)
        uncovered = deficit - cover
        result.covered_by_insurance, result.uncovered = cover, uncovered
        if uncovered == 0:
            return
        eligible = [m for m in markets if total_loss == 0 or losses.get(m, 0) > 0]
        remaining = uncovered
        for market_id in eligible:
            share = remaining if market_id == eligible[-1] else uncovered * losses[market_id] // total_loss
            remaining -= share
            if share > 0:
                self.uncovered_deficit[market_id] = self.uncovered_deficit.get(market_id, 0) + share
                self.deficit_side[market_id] = sides[market_id]
                self.total_uncovered_deficit += share
                previous = self.deficit_records.get((account, market_id), [0, 0, 0])[0]
                self.deficit_records[(account, market_id)] = [previous + share, sides[market_id], self.now]

    def adl_score(self, account: Account, market_id: int) -> tuple[int, int]:
        """(score, unrealized PnL): PnL % x effective leverage, WAD."""
        size, _, pnl, _ = self.position_view(account, market_id)
        if size == 0:
            return 0, 0
        basis = self.position(account, market_id).open_notional
        if basis == 0:  # a dust position whose cost basis rounded to zero
            return 0, pnl
        pnl_ratio = floor_div(pnl * WAD, abs(basis))
        equity = self.account_view(account).equity
        if equity <= 0:
            return (INT256_MAX if pnl_ratio > 0 else pnl_ratio), pnl
        notional = abs(size) * self.index[market_id] // WAD
        leverage = notional * WAD // equity
        return floor_div(pnl_ratio * leverage, WAD), pnl

    def pnl_factor(self, market_id: int) -> int:
        market = self.markets[market_id]
        if market.skew == 0:
            return 0
        closing = closing_price(self.index[market_id], market.skew, self.params[market_id].skew_scale)
        traders_pnl = floor_div(market.skew * closing, WAD) - market.open_notional_sum
        if traders_pnl <= 0:
            return 0
        value = self.liquidity_vault_value()
        if value <= 0:
            return 2**256 - 1
        return traders_pnl * WAD // value

    def auto_deleverage(self, market_id: int, targets: list[tuple[Account, int]], bankrupt: Account) -> list:
        return self._transaction(self._auto_deleverage, market_id, targets, bankrupt)

    def _auto_deleverage(self, market_id, targets, bankrupt) -> list:
        """targets: [(account, size to close)]; returns [(score, fill, haircut)] per target."""
        deficit = self.uncovered_deficit.get(market_id, 0)
        record = [0, 0, 0]
        if deficit > 0:
            record = list(self.deficit_records.get((bankrupt, market_id), [0, 0, 0]))
            require(record[0] > 0, "liquidator: no deficit recorded for this account in this market")
            trigger, side = TRIGGER_DEFICIT, -record[1]
            require(self.cash_of(bankrupt) < 0, "liquidator: account not bankrupt")
        else:
            require(self.pnl_factor(market_id) > self.max_pnl_factor, "liquidator: no ADL trigger")
            trigger, side = TRIGGER_PNL_FACTOR, sign(self.markets[market_id].skew)
        previous, out = INT256_MAX, []
        for account, amount in targets:
            if trigger == TRIGGER_DEFICIT:
                require(record[0] > 0 and self.cash_of(bankrupt) < 0, "liquidator: deficit already covered")
            else:
                require(self.pnl_factor(market_id) > self.target_pnl_factor, "liquidator: PnL factor under target")
            size = self.position(account, market_id).size
            require(size != 0 and sign(size) == side, "liquidator: target on the wrong side")
            score, pnl = self.adl_score(account, market_id)
            require(pnl > 0, "liquidator: target not profitable")
            require(score <= previous, "liquidator: targets out of order")
            previous = score
            require(0 < amount <= abs(size), "liquidator: bad ADL size")
            require(self._use_capacity(market_id, amount) == amount, NO_CAPACITY_REASON)
            mode = MODE_ADL if trigger == TRIGGER_DEFICIT else MODE_ADL_FILL
            fill, _ = self._execute(account, market_id, -side * amount, 0, mode)
            haircut = 0
            if trigger == TRIGGER_DEFICIT and fill.realized_pnl > 0:
                haircut = min(record[0], fill.realized_pnl, -self.cash_of(bankrupt))
                record[0] -= haircut
                self.total_uncovered_deficit -= haircut
                self._credit(account, -haircut)
                self._credit(bankrupt, haircut)
                deficit -= haircut
            out.append((score, fill, haircut))
        if trigger == TRIGGER_DEFICIT:
            self.uncovered_deficit[market_id] = deficit
            self._set_record(bankrupt, market_id, record)
        return out

    def _set_record(self, account, market_id: int, record: list) -> None:
        if record[0] == 0:
            self.deficit_records.pop((account, market_id), None)
        else:
            self.deficit_records[(account, market_id)] = record

    def deficit_record(self, account, market_id: int) -> tuple[int, int, int]:
        """Liquidator.deficit_record: (amount, losing side, recorded at), zeros without one."""
        return tuple(self.deficit_records.get((account, market_id), (0, 0, 0)))

    def can_write_off(self, account, market_id: int) -> bool:
        amount, side, recorded_at = self.deficit_record(account, market_id)
        if amount == 0:
            return False
        if self.now >= recorded_at + self.deficit_grace_period:
            return True
        market = self.markets[market_id]
        return (market.short_oi if side > 0 else market.long_oi) == 0

    def write_off(self, account, market_id: int) -> int:
        return self._transaction(self._write_off, account, market_id)

    def _write_off(self, account, market_id: int) -> int:
        amount, _, recorded_at = self.deficit_record(account, market_id)
        require(amount > 0, "liquidator: no deficit recorded for this account in this market")
        require(
            self.can_write_off(account, market_id),
            f"liquidator: ADL may still cover this deficit; write-off possible from {recorded_at + self.deficit_grace_period}",
        )
        self.deficit_records.pop((account, market_id))
        self.uncovered_deficit[market_id] -= amount
        self.total_uncovered_deficit -= amount
        paid = min(amount, max(-self.cash_of(account), 0))
        self._credit(account, paid)
        self._credit(LIQUIDITY_VAULT, -paid)
        return paid

    def liquidation_price(self, account: Account, market_id: int) -> int:
        p = self.position(account, market_id)
        if p.size == 0:
            return 0
        view, index, params = self.account_view(account), self.index[market_id], self.params[market_id]
        abs_size = abs(p.size)
        own = maintenance_requirement(p.size, index, params)
        rest = view.equity - floor_div(p.size * index, WAD)
        other = view.maintenance - own
        c = params.maintenance_margin_ratio + params.liquidation_penalty_ratio + abs_size * WAD // (2 * params.skew_scale)
        denominator = p.size * WAD - abs_size * c
        numerator = (other - rest) * WAD * WAD
        if denominator == 0:
            return 0
        if denominator < 0:
            numerator, denominator = -numerator, -denominator
        price = floor_div(numerator, denominator)
        return max(price, 0)


@dataclass
class ExchangeModel(LiquidationMixin, OrderBookMixin, LiquidityFlowsMixin):
    """The contracts' state and transitions, in Python. Prices come from `index` (market -> WAD)."""

    token_decimals: int = 6
    globals: GlobalParams = field(default_factory=GlobalParams)
    params: dict[int, MarketParams] = field(default_factory=dict)
    markets: dict[int, MarketState] = field(default_factory=dict)
    positions: dict[tuple[Account, int], Position] = field(default_factory=dict)
    cash: dict = field(default_factory=dict)
    token_balance: int = 0  # the vault's collateral token balance, in token units
    index: dict[int, int] = field(default_factory=dict)
    now: int = 0
    paused: bool = False
    lv_supply: int = 0  # liquidity vault shares outstanding
    lv_shares: dict = field(default_factory=dict)
    max_oi_ratio: int = 5 * WAD
    max_pnl_factor: int = WAD // 2
    target_pnl_factor: int = WAD * 4 // 10
    uncovered_deficit: dict = field(default_factory=dict)  # market -> WAD
    deficit_side: dict = field(default_factory=dict)  # market -> +1 / -1, the side that lost
    # (account, market) -> [amount, losing side, recorded at]: what ADL may credit, a write-off pays
    deficit_records: dict = field(default_factory=dict)
    total_uncovered_deficit: int = 0
    deficit_grace_period: int = 86400
    capacity_multiplier: int = WAD
    liquidation_windows: dict = field(default_factory=dict)  # market -> (index, size closed at it)
    funding_settlements: int = 0  # how many rounded funding settlements happened (dust bound)
    # the order book (perpdex/orders.py)
    order_params: OrderParams = field(default_factory=OrderParams)
    order_slots: dict = field(default_factory=dict)
    order_seq: dict = field(default_factory=dict)
    order_books: dict = field(default_factory=dict)
    order_ids: dict = field(default_factory=dict)
    oi_room_cache: tuple = (0, 0)  # (second, WAD room) of the global open-interest cap

    # -- configuration -------------------------------------------------------------------------

    @property
    def scale(self) -> int:
        return 10 ** (18 - self.token_decimals)

    def list_market(self, market_id: int, params: MarketParams) -> None:
        self.params[market_id] = params
        self.markets[market_id] = MarketState(last_funding_time=self.now)

    # -- ledger --------------------------------------------------------------------------------

    def cash_of(self, account) -> int:
        return self.cash.get(account, 0)

    def _credit(self, account, amount: int) -> None:
        if amount:
            self.cash[account] = self.cash.get(account, 0) + amount

    def deposit(self, account: Account, amount: int) -> int:
        require(amount > 0, "vault: zero amount")
        credited = amount * self.scale
        self.token_balance += amount
        self._credit(account, credited)
        return credited

    def withdraw(self, account: Account, amount: int) -> None:
        require(amount > 0, "vault: zero amount")
        wad = amount * self.scale
        require(
            self.pending_market_orders(account) == 0,
            "vault: a market order is pending; withdraw after it executes or expires",
        )
        require(wad <= self.account_view(account).withdrawable, "vault: insufficient free collateral")
        self.push_tokens(amount)
        self._credit(account, -wad)

    def push_tokens(self, amount: int) -> None:
        """Vault._push: tokens leave the vault, if it holds them (it may not when the liquidity
        vault lost more than its capital: the claims are then larger than the balance)."""
        require(amount <= self.token_balance, "vault: insufficient token balance")
        self.token_balance -= amount

    def ledger_total(self) -> int:
        return sum(self.cash.values())

    # -- markets -------------------------------------------------------------------------------

    def open_markets(self, account: Account) -> list[int]:
        return sorted(m for (a, m), p in self.positions.items() if a == account and p.size != 0)

    def position(self, account: Account, market_id: int) -> Position:
        return self.positions.get((account, market_id), Position())

    def _accrue(self, market_id: int) -> int:
        """Touch a market: advance funding_per_unit and settle the liquidity vault's funding."""
        market, params = self.markets[market_id], self.params[market_id]
        new_fpu = accrued_funding_per_unit(market, params, self.index[market_id], self.now)
        lv_charge = 0
        if new_fpu != market.funding_per_unit:
            lv_charge = funding_charge(-market.skew, new_fpu, market.funding_per_unit)
            self.funding_settlements += 1
        market.funding_per_unit = new_fpu
        market.last_funding_time = self.now
        self._credit(LIQUIDITY_VAULT, -lv_charge)
        self._credit(FUNDING_POOL, lv_charge)
        return lv_charge

    def funding_rate(self, market_id: int) -> int:
        return funding_rate(self.markets[market_id].skew, self.params[market_id])

    def mark_price(self, market_id: int) -> int:
        return mark_price(self.index[market_id], self.markets[market_id].skew, self.params[market_id].skew_scale)

    def fill_price(self, market_id: int, size_delta: int) -> int:
        return fill_price(
            self.index[market_id], self.markets[market_id].skew, self.params[market_id].skew_scale, size_delta
        )

    # -- trading -------------------------------------------------------------------------------

    def _transaction(self, fn, *args):
        """Run `fn` atomically: on a ModelRevert every change is undone, as on-chain."""
        fields = (
            "cash", "markets", "positions", "token_balance", "funding_settlements", "uncovered_deficit", "deficit_side",
            "deficit_records", "total_uncovered_deficit", "liquidation_windows",
            "order_slots", "order_seq", "order_books", "order_ids", "oi_room_cache",
        )
        saved = copy.deepcopy([getattr(self, f) for f in fields])
        try:
            return fn(*args)
        except ModelRevert:
            for f, value in zip(fields, saved):
                setattr(self, f, value)
            raise

    def trade(self, account: Account, market_id: int, size_delta: int, acceptable_price: int) -> TradeResult:
        """Buy (size_delta > 0) or sell against the liquidity vault; atomic like the contract."""
        return self._transaction(self._trade, account, market_id, size_delta, acceptable_price)

    def _trade(self, account: Account, market_id: int, size_delta: int, acceptable_price: int) -> TradeResult:
        result, risk_up = self._execute(account, market_id, size_delta, acceptable_price, MODE_TRADE)
        self.last_trade = result
        view = self.account_view(account)
        if risk_up:
            # a new risk must clear the initial requirement and stay above maintenance (a large
            # position's closing impact can put maintenance above initial)
            require(view.equity >= max(view.initial, view.maintenance), "exchange: insufficient margin")
        else:
            require(view.equity >= 0, "exchange: trade would leave account bankrupt")
            if view.equity < view.maintenance and self.open_markets(account):
                require(self.last_surplus_change >= 0, REDUCTION_REASON)
        return result

    def _execute(
        self, account: Account, market_id: int, size_delta: int, acceptable_price: int, mode: int
    ) -> tuple[TradeResult, bool]:
        """Exchange._execute: every position change, trade or forced close."""
        require(size_delta != 0, "exchange: zero size")
        require(market_id in self.params, "exchange: unknown market")
        params, market = self.params[market_id], self.markets[market_id]
        index = self.index[market_id]

        self._accrue(market_id)
        old = self.position(account, market_id)
        funding_paid = funding_charge(old.size, market.funding_per_unit, old.funding_snapshot)
        if old.size != 0 and market.funding_per_unit != old.funding_snapshot:
            self.funding_settlements += 1

        price, fee = index, 0
        if mode == MODE_TRADE:
            price = fill_price(index, market.skew, params.skew_scale, size_delta)
            if size_delta > 0:
                require(price <= acceptable_price, "exchange: price beyond acceptable")
            else:
                require(price >= acceptable_price, "exchange: price beyond acceptable")
            fee = trade_fee(market.skew, size_delta, price, params)
        else:
            require(sign(size_delta) == -sign(old.size) and abs(size_delta) <= abs(old.size), "exchange: not a reduction")
            if mode == MODE_LIQUIDATION:
                price = liquidation_price_of_slice(index, market.skew, params.skew_scale, size_delta)
            elif mode == MODE_ADL_FILL:
                price = fill_price(index, market.skew, params.skew_scale, size_delta)
        new, realized = apply_fill(old, size_delta, price)
        new = replace(new, funding_snapshot=market.funding_per_unit)

        risk_up = increases_risk(old.size, new.size)
        if risk_up:
            require(not self.paused, "exchange: paused, reduce-only")
            require(abs(new.size) <= params.max_position_size, "exchange: position above max size")
        long_oi = market.long_oi - max(old.size, 0) + max(new.size, 0)
        short_oi = market.short_oi - max(-old.size, 0) + max(-new.size, 0)
        require(long_oi <= params.max_long_oi or long_oi <= market.long_oi, "exchange: long open interest cap")
        require(short_oi <= params.max_short_oi or short_oi <= market.short_oi, "exchange: short open interest cap")

        self.last_surplus_change = 0
        if mode == MODE_TRADE and not risk_up:
            equity_change = (
                realized - fee + floor_div(new.size * index, WAD) - floor_div(old.size * index, WAD)
                - (new.open_notional - old.open_notional)
            )
            self.last_surplus_change = (
                equity_change - maintenance_requirement(new.size, index, params)
                + maintenance_requirement(old.size, index, params)
            )
        to_lv, to_insurance, to_protocol = split_fee(fee, self.globals)
        market.long_oi, market.short_oi = long_oi, short_oi
        market.open_notional_sum += new.open_notional - old.open_notional
        self.positions[(account, market_id)] = new
        self._credit(account, realized - fee - funding_paid)
        self._credit(LIQUIDITY_VAULT, to_lv - realized)
        self._credit(INSURANCE_FUND, to_insurance)
        self._credit(FEE_RECEIVER, to_protocol)
        self._credit(FUNDING_POOL, funding_paid)
        return TradeResult(price, fee, realized, funding_paid, new), risk_up

    # -- account views -------------------------------------------------------------------------

    def position_view(self, account: Account, market_id: int) -> tuple[int, int, int, int]:
        """(size, entry price, unrealized PnL at the index, unsettled funding)."""
        p = self.position(account, market_id)
        if p.size == 0:
            return 0, 0, 0, 0
        market, params = self.markets[market_id], self.params[market_id]
        fpu = accrued_funding_per_unit(market, params, self.index[market_id], self.now)
        return (
            p.size,
            p.entry_price,
            unrealized_pnl(p, self.index[market_id]),
            funding_charge(p.size, fpu, p.funding_snapshot),
        )

    def account_view(self, account: Account) -> AccountView:
        cash = self.cash_of(account)
        equity, initial, maintenance = cash, 0, 0
        markets = self.open_markets(account)
        for market_id in markets:
            _, _, pnl, funding = self.position_view(account, market_id)
            size, index, params = self.position(account, market_id).size, self.index[market_id], self.params[market_id]
            equity += pnl - funding
            initial += initial_requirement(size, index, params)
            maintenance += maintenance_requirement(size, index, params)
        if markets:
            initial += self.globals.keeper_min_reward
            maintenance += self.globals.keeper_min_reward
        return AccountView(cash, equity, initial, maintenance)

    # -- liquidity vault -----------------------------------------------------------------------

    def liquidity_vault_value(self) -> int:
        """LV cash + its -skew valued at the closing price in every market - its unsettled
        funding - the outstanding uncovered deficits."""
        value = self.cash_of(LIQUIDITY_VAULT)
        for market_id, market in self.markets.items():
            if market.skew == 0:
                continue
            index = self.index[market_id]
            fpu = accrued_funding_per_unit(market, self.params[market_id], index, self.now)
            closing = closing_price(index, market.skew, self.params[market_id].skew_scale)
            value += market.open_notional_sum - floor_div(market.skew * closing, WAD)
            value -= funding_charge(-market.skew, fpu, market.funding_per_unit)
        return value - self.total_uncovered_deficit

    # ERC-4626 share accounting of the liquidity vault (virtual offset against inflation attacks)

    @property
    def virtual_shares(self) -> int:
        return self.scale  # 10 ** (18 - token decimals): shares have 18 decimals

    def lv_total_assets(self) -> int:
        return max(0, self.liquidity_vault_value()) // self.scale

    def lv_to_shares(self, assets: int, total: int, round_up: bool = False) -> int:
        f = mul_div_up if round_up else mul_div_down
        return f(assets, self.lv_supply + self.virtual_shares, total + 1)

    def lv_to_assets(self, shares: int, total: int, round_up: bool = False) -> int:
        f = mul_div_up if round_up else mul_div_down
        return f(shares, total + 1, self.lv_supply + self.virtual_shares)

    def lp_deposit(self, lp, assets: int) -> int:
        require(assets > 0, "liquidity vault: zero amount")
        total = self.lv_total_assets()
        require(not (total == 0 and self.lv_supply > 0), "liquidity vault: insolvent, deposits refused")
        shares = self.lv_to_shares(assets, total)
        require(shares > 0, "liquidity vault: zero shares")
        self.token_balance += assets
        self._credit(LIQUIDITY_VAULT, assets * self.scale)
        self.lv_supply += shares
        self.lv_shares[lp] = self.lv_shares.get(lp, 0) + shares
        return shares

    def lp_redeem(self, lp, shares: int) -> int:
        require(shares > 0, "liquidity vault: zero amount")
        total = self.lv_total_assets()
        assets = self.lv_to_assets(shares, total)
        require(assets > 0, "liquidity vault: zero assets")
        require(self.lv_shares.get(lp, 0) >= shares, "erc20: burn amount exceeds balance")
        require(assets * self.scale <= self.cash_of(LIQUIDITY_VAULT), "vault: insufficient liquidity cash")
        require(assets <= self.token_balance, "vault: insufficient token balance")  # Vault._push
        remaining = total - min(total, assets)
        require(self.open_interest_notional() * WAD <= self.max_oi_ratio * remaining * self.scale,
                "liquidity vault: open interest cap")
        self.lv_supply -= shares
        self.lv_shares[lp] -= shares
        self.token_balance -= assets
        self._credit(LIQUIDITY_VAULT, -assets * self.scale)
        return assets

    def open_interest_notional(self) -> int:
        return sum(
            ceil_div((m.long_oi + m.short_oi) * self.index[i], WAD) for i, m in self.markets.items()
        )

    # -- invariants ----------------------------------------------------------------------------

    def unsettled_funding_total(self) -> int:
        """Exact (unrounded, floor) sum of every holder's unsettled funding, LV included."""
        total = 0
        for (account, market_id), p in self.positions.items():
            if p.size:
                m = self.markets[market_id]
                fpu = accrued_funding_per_unit(m, self.params[market_id], self.index[market_id], self.now)
                total += p.size * (fpu - p.funding_snapshot)
        for market_id, m in self.markets.items():
            fpu = accrued_funding_per_unit(m, self.params[market_id], self.index[market_id], self.now)
            total += -m.skew * (fpu - m.funding_per_unit)
        return total  # in WAD * WAD units
