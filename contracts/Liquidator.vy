# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title Liquidator
@custom:contract-name Liquidator
@license GNU Affero General Public License v3.0 only
@notice Keeper-triggered liquidation, bankruptcy cover by the insurance fund, and
        auto-deleveraging (ADL), to DESIGN.md. Liquidation is permissionless: an account whose
        equity is below its maintenance requirement has its positions closed against the
        liquidity vault at the fill price, at most `max_liquidation_size` per market per call.
        The penalty goes to the keeper (share + floor, capped at the remaining equity) and the
        insurance fund. A bankrupt account's deficit is paid by the insurance fund up to its
        balance; the rest is recorded as the uncovered deficit of the markets that lost, which
        ADL then takes from the profit of top-ranked positions on the other side.
@custom:security ADL is restricted to ADL keepers, but every step is checked here: the
        trigger, the target's side and profit, non-increasing score order, and haircuts never
        above the profit realized. Liquidation never reverts because the insurance fund is
        short. No loop runs over accounts, only over one account's markets and one call's
        targets.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from .interfaces import IExchange
from .interfaces import IVault
from .modules import fixed_point as fp
from .modules import pricing

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)

# ============================================================================================
# CONSTANTS, STRUCTS, EVENTS
# ============================================================================================

MAX_MARKETS: constant(uint256) = 32
MAX_BATCH: constant(uint256) = 50
MAX_ADL_TARGETS: constant(uint256) = 20
WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
TRIGGER_DEFICIT: constant(uint256) = 1
TRIGGER_PNL_FACTOR: constant(uint256) = 2
# @notice Longest `deficit_grace_period`, in seconds.
MAX_DEFICIT_GRACE_PERIOD: public(constant(uint256)) = 30 * 86400
MASK128: constant(uint256) = 2**128 - 1
# _liquidation_window: the index the window is for << 128 | size closed at it (base units)
# deficit record: amount (0..191) | losing side long (192) | recorded at (200..255)
RECORD_AMOUNT_MASK: constant(uint256) = 2**192 - 1
RECORD_LONG_BIT: constant(uint256) = 2**192
RECORD_TIME_SHIFT: constant(uint256) = 200
LIQUIDATION_HEALTHY: constant(uint256) = 0
# Exchange.close_for modes
CLOSE_LIQUIDATION: constant(uint256) = 1
CLOSE_ADL_AT_INDEX: constant(uint256) = 2
CLOSE_ADL_AT_FILL: constant(uint256) = 3
LIQUIDATION_DONE: constant(uint256) = 1
LIQUIDATION_NO_CAPACITY: constant(uint256) = 2

struct Account:
    owner: address
    sub_account: uint256

struct AdlTarget:
    owner: address
    sub_account: uint256
    size: uint256  # how much of the position to close (base units, WAD)

event Liquidation:
    owner: indexed(address)
    sub_account: indexed(uint256)
    keeper: indexed(address)
    closed_notional: uint256
    penalty: uint256
    keeper_reward: uint256
    to_insurance: uint256
    equity_after: int256
    fully_closed: bool

event BadDebt:
    owner: indexed(address)
    sub_account: indexed(uint256)
    deficit: uint256
    covered_by_insurance: uint256
    uncovered: uint256

event DeficitRecorded:
    market_id: indexed(uint256)
    owner: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256
    losing_side: int256
    total: uint256  # the market's outstanding uncovered deficit after this record

event DeficitWrittenOff:
    market_id: indexed(uint256)
    owner: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256  # WAD paid by the liquidity vault's cash to the bankrupt account
    by: address

event LiquidationParamsSet:
    capacity_multiplier: uint256
    deficit_grace_period: uint256

event LiquidationBatch:
    keeper: indexed(address)
    checked: uint256
    liquidated: uint256

event AutoDeleveraged:
    market_id: indexed(uint256)
    owner: indexed(address)
    sub_account: indexed(uint256)
    trigger: uint256
    score: int256
    size_closed: int256
    price: uint256
    realized_pnl: int256
    haircut: uint256

event AdlKeeperSet:
    keeper: indexed(address)
    allowed: bool

event PnlFactorsSet:
    max_pnl_factor: uint256
    target_pnl_factor: uint256

# ============================================================================================
# STORAGE
# ============================================================================================

EXCHANGE: public(immutable(IExchange))
VAULT: public(immutable(IVault))

adl_keeper: public(HashMap[address, bool])
# ADL trigger 2: traders' net unrealized profit in a market above max_pnl_factor x the
# liquidity vault's value; ADL brings it back under target_pnl_factor (both WAD)
max_pnl_factor: public(uint256)
target_pnl_factor: public(uint256)
# per market: bad debt the insurance fund could not pay, and the side (+1 long, -1 short)
# whose positions lost it last
uncovered_deficit: public(HashMap[uint256, uint256])
deficit_side: public(HashMap[uint256, int256])
# every market's outstanding uncovered deficit (see `total_uncovered_deficit`)
_total_deficit: uint256
# owner -> sub-account -> market -> deficit record (see RECORD_*): what ADL may credit to this
# bankrupt account, and what a write-off pays it
_deficits: HashMap[address, HashMap[uint256, HashMap[uint256, uint256]]]
# @notice Seconds after which an uncovered deficit may be written off even while ADL targets exist.
deficit_grace_period: public(uint256)
# @notice Share (WAD, at most 1) of the sandwich-free capacity 2 x min(maker, taker) x skew_scale
#         that liquidations and ADL may close in a market at one index.
capacity_multiplier: public(uint256)
# per market: the index of the current liquidation window << 128 | size closed in it
_liquidation_window: HashMap[uint256, uint256]

# ============================================================================================
# CONSTRUCTOR
# ============================================================================================

@deploy
def __init__(exchange: IExchange, vault: IVault):
    ownable.__init__()
    ownable_2step.__init__()
    EXCHANGE = exchange
    VAULT = vault
    self.max_pnl_factor = WAD // 2
    self.target_pnl_factor = WAD * 4 // 10
    self.capacity_multiplier = WAD
    self.deficit_grace_period = 86400

# ============================================================================================
# LIQUIDATION
# ============================================================================================

@external
@view
def is_liquidatable(owner: address, sub_account: uint256) -> bool:
    """
    @notice True when the sub-account has positions and equity < maintenance requirement.
    """
    return self._is_liquidatable(owner, sub_account)


@external
def liquidate(owner: address, sub_account: uint256) -> bool:
    """
    @notice Liquidate an unhealthy sub-account: close up to `max_liquidation_size` of each of
            its positions at the fill price; the caller earns the keeper reward (credited to
            the caller's sub-account 0 in the vault).
    @return True (a healthy account reverts "liquidator: account healthy").
    """
    status: uint256 = self._liquidate(owner, sub_account, msg.sender)
    assert status != LIQUIDATION_HEALTHY, "liquidator: account healthy"
    assert status != LIQUIDATION_NO_CAPACITY, "liquidator: liquidation capacity at this index used up; retry at the next price"
    return True


@external
def liquidate_many(accounts: DynArray[Account, MAX_BATCH]) -> uint256:
    """
    @notice Liquidate the unhealthy accounts of a batch and skip the healthy ones without
            reverting, so competing keepers never waste a transaction.
    @return How many accounts were liquidated.
    """
    liquidated: uint256 = 0
    for a: Account in accounts:
        if self._liquidate(a.owner, a.sub_account, msg.sender) == LIQUIDATION_DONE:
            liquidated += 1
    log LiquidationBatch(keeper=msg.sender, checked=len(accounts), liquidated=liquidated)
    return liquidated


@external
@view
def liquidation_price(owner: address, sub_account: uint256, market_id: uint256) -> uint256:
    """
    @notice The index price of `market_id` at which the sub-account becomes liquidatable, all
            other prices fixed (0 when no such positive price exists). Funding accrued since
            the market's last touch is taken at the current index.
    """
    size: int256 = 0
    basis: int256 = 0
    snapshot: int256 = 0
    size, basis, snapshot = staticcall EXCHANGE.position_state(owner, sub_account, market_id)
    if size == 0:
        return 0
    cash: int256 = 0
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    cash, equity, initial, maintenance = staticcall EXCHANGE.account_state(owner, sub_account)
    index: uint256 = staticcall EXCHANGE.index_price(market_id)
    p: IExchange.MarketParams = staticcall EXCHANGE.market_params(market_id)
    abs_size: uint256 = fp._abs(size)
    notional: uint256 = fp._ceil_div_u(abs_size * index, WAD)
    own_maintenance: uint256 = (
        fp._ceil_div_u(notional * p.maintenance_margin_ratio, WAD)
        + fp._ceil_div_u(notional * abs_size, 2 * p.skew_scale)
        + fp._ceil_div_u(notional * p.liquidation_penalty_ratio, WAD)
    )
    # equity(P) = rest + size * P;  maintenance(P) = other + |size| * P * c
    rest: int256 = equity - fp._floor_div(size * convert(index, int256), IWAD)
    other: int256 = convert(maintenance - own_maintenance, int256)
    c: int256 = convert(
        p.maintenance_margin_ratio + p.liquidation_penalty_ratio + abs_size * WAD // (2 * p.skew_scale), int256
    )
    denominator: int256 = size * IWAD - convert(abs_size, int256) * c  # size x WAD units
    numerator: int256 = (other - rest) * IWAD * IWAD
    if denominator == 0:
        return 0
    if denominator < 0:
        numerator = -numerator
        denominator = -denominator
    price: int256 = fp._floor_div(numerator, denominator)
    if price <= 0:
        return 0
    return convert(price, uint256)

# ============================================================================================
# AUTO-DELEVERAGING
# ============================================================================================

@external
def auto_deleverage(
    market_id: uint256,
    targets: DynArray[AdlTarget, MAX_ADL_TARGETS],
    bankrupt_owner: address,
    bankrupt_sub_account: uint256,
) -> uint256:
    """
    @notice Close profitable positions at the index. Trigger 1 (an uncovered deficit in the
            market): targets are on the side opposite the losers, and the deficit is taken out
            of their realized profit and credited to the bankrupt account until its cash is
            back to zero. Trigger 2 (traders' profit above max_pnl_factor of the liquidity
            vault): positions on the skew's side close without a haircut while the factor is
            above target_pnl_factor. ADL keepers only; targets in non-increasing score order.
    @return The total size closed (base units).
    """
    assert self.adl_keeper[msg.sender], "liquidator: caller is not an ADL keeper"
    deficit: uint256 = self.uncovered_deficit[market_id]
    trigger: uint256 = TRIGGER_DEFICIT
    side: int256 = 0
    bankrupt_cash: int256 = 0
    record: uint256 = 0
    if deficit > 0:
        record = self._deficits[bankrupt_owner][bankrupt_sub_account][market_id]
        assert record & RECORD_AMOUNT_MASK != 0, "liquidator: no deficit recorded for this account in this market"
        side = 1  # the losing side was short: profitable longs pay
        if record & RECORD_LONG_BIT != 0:
            side = -1
        bankrupt_cash = staticcall VAULT.cash(bankrupt_owner, bankrupt_sub_account)
        assert bankrupt_cash < 0, "liquidator: account not bankrupt"
    else:
        assert self._pnl_factor(market_id) > self.max_pnl_factor, "liquidator: no ADL trigger"
        trigger = TRIGGER_PNL_FACTOR
        side = fp._sign(staticcall EXCHANGE.skew(market_id))

    previous: int256 = max_value(int256)
    closed: uint256 = 0
    for t: AdlTarget in targets:
        if trigger == TRIGGER_DEFICIT:
            assert record & RECORD_AMOUNT_MASK != 0 and bankrupt_cash < 0, "liquidator: deficit already covered"
        else:
            assert self._pnl_factor(market_id) > self.target_pnl_factor, "liquidator: PnL factor under target"
        size: int256 = 0
        basis: int256 = 0
        snapshot: int256 = 0
        size, basis, snapshot = staticcall EXCHANGE.position_state(t.owner, t.sub_account, market_id)
        assert size != 0 and fp._sign(size) == side, "liquidator: target on the wrong side"
        score: int256 = 0
        pnl: int256 = 0
        score, pnl = self._adl_score(t.owner, t.sub_account, market_id)
        assert pnl > 0, "liquidator: target not profitable"
        assert score <= previous, "liquidator: targets out of order"
        previous = score
        assert t.size > 0 and t.size <= fp._abs(size), "liquidator: bad ADL size"
        assert self._use_capacity(market_id, t.size) == t.size, "liquidator: liquidation capacity at this index used up; retry at the next price"

        # a deficit ADL closes at the index (the haircut takes the profit); a PnL-factor ADL at
        # the ordinary fill price, as any market decrease would
        mode: uint256 = CLOSE_ADL_AT_INDEX
        if trigger == TRIGGER_PNL_FACTOR:
            mode = CLOSE_ADL_AT_FILL
        fill: IExchange.Fill = extcall EXCHANGE.close_for(
            t.owner, t.sub_account, market_id, -side * convert(t.size, int256), mode
        )
        haircut: uint256 = 0
        if trigger == TRIGGER_DEFICIT and fill.realized_pnl > 0:
            haircut = min(
                record & RECORD_AMOUNT_MASK, min(convert(fill.realized_pnl, uint256), convert(-bankrupt_cash, uint256))
            )
            record -= haircut
            self._total_deficit -= haircut
            extcall VAULT.settle_pair(
                t.owner, t.sub_account, bankrupt_owner, bankrupt_sub_account,
                -convert(haircut, int256), convert(haircut, int256), 0
            )
            deficit -= haircut
            bankrupt_cash += convert(haircut, int256)
        closed += t.size
        log AutoDeleveraged(
            market_id=market_id,
            owner=t.owner,
            sub_account=t.sub_account,
            trigger=trigger,
            score=score,
            size_closed=-side * convert(t.size, int256),
            price=fill.price,
            realized_pnl=fill.realized_pnl,
            haircut=haircut,
        )
    if trigger == TRIGGER_DEFICIT:
        self.uncovered_deficit[market_id] = deficit
        self._deficits[bankrupt_owner][bankrupt_sub_account][market_id] = record
    return closed


@external
@view
def adl_score(owner: address, sub_account: uint256, market_id: uint256) -> int256:
    """
    @notice BitMEX ranking: PnL % x effective leverage (WAD), where PnL % = unrealized PnL at
            the index / |entry notional| and leverage = |notional| / equity. Negative for
            losing positions; the maximum for a profitable position in a sub-account with no
            positive equity.
    """
    score: int256 = 0
    pnl: int256 = 0
    score, pnl = self._adl_score(owner, sub_account, market_id)
    return score


@external
@view
def pnl_factor(market_id: uint256) -> uint256:
    """
    @notice Traders' net unrealized profit in the market / the liquidity vault's value (WAD).
    """
    return self._pnl_factor(market_id)

# ============================================================================================
# DEFICITS
# ============================================================================================

@external
@view
@reentrant
def total_uncovered_deficit() -> uint256:
    """
    @notice Every market's outstanding uncovered deficit (WAD): the liquidity vault's value
            nets it. Reentrant: the exchange reads it in the middle of a liquidation or ADL.
    """
    return self._total_deficit


@external
@view
def deficit_record(owner: address, sub_account: uint256, market_id: uint256) -> (uint256, int256, uint256):
    """
    @notice What a liquidation recorded as this bankrupt account's uncovered deficit in a
            market and is still outstanding: (amount WAD, losing side +1 long / -1 short,
            when it was last recorded). ADL credits only such records, never more.
    """
    record: uint256 = self._deficits[owner][sub_account][market_id]
    if record & RECORD_AMOUNT_MASK == 0:
        return 0, 0, 0
    side: int256 = -1
    if record & RECORD_LONG_BIT != 0:
        side = 1
    return record & RECORD_AMOUNT_MASK, side, record >> RECORD_TIME_SHIFT


@external
@view
def can_write_off(owner: address, sub_account: uint256, market_id: uint256) -> bool:
    """
    @notice True when `write_off` would act: a deficit is recorded and either no position is
            left on the side ADL would take it from, or `deficit_grace_period` has passed.
    """
    return self._can_write_off(self._deficits[owner][sub_account][market_id], market_id)


@external
def write_off(owner: address, sub_account: uint256, market_id: uint256) -> uint256:
    """
    @notice Write off a bankrupt account's outstanding deficit in a market once ADL cannot
            cover it (no position left on the profitable side) or `deficit_grace_period` after
            it was recorded: the liquidity vault's cash, the counterparty that booked the
            unpaid loss as its gain, pays the account back. Anyone; the keeper does it.
    @return The amount written off (WAD).
    """
    record: uint256 = self._deficits[owner][sub_account][market_id]
    assert record & RECORD_AMOUNT_MASK != 0, "liquidator: no deficit recorded for this account in this market"
    assert self._can_write_off(record, market_id), concat(
        "liquidator: ADL may still cover this deficit; write-off possible from ",
        uint2str((record >> RECORD_TIME_SHIFT) + self.deficit_grace_period),
    )
    amount: uint256 = record & RECORD_AMOUNT_MASK
    self._deficits[owner][sub_account][market_id] = 0
    self.uncovered_deficit[market_id] -= amount
    self._total_deficit -= amount
    cash: int256 = staticcall VAULT.cash(owner, sub_account)
    paid: uint256 = min(amount, convert(max(-cash, 0), uint256))
    if paid > 0:
        extcall VAULT.write_off(owner, sub_account, paid)
    log DeficitWrittenOff(market_id=market_id, owner=owner, sub_account=sub_account, amount=paid, by=msg.sender)
    return paid


@external
@view
def liquidation_window(market_id: uint256) -> (uint256, uint256):
    """
    @notice (the index of the market's current liquidation window, size closed at it).
    """
    window: uint256 = self._liquidation_window[market_id]
    return window >> 128, window & MASK128


@external
@view
def liquidation_capacity(market_id: uint256) -> uint256:
    """
    @notice Size (base units) liquidations and ADL may still close in the market at the
            current index: 2 x min(maker, taker) x skew_scale x capacity_multiplier, minus
            what was closed at this index. Sandwiching a forced close's skew move at one price
            then costs at least what it gains (docs/DECISIONS.md).
    """
    index: uint256 = staticcall EXCHANGE.index_price(market_id)
    window: uint256 = self._liquidation_window[market_id]
    used: uint256 = 0
    if window >> 128 == index:
        used = window & MASK128
    return self._capacity(market_id) - min(used, self._capacity(market_id))

# ============================================================================================
# ADMIN
# ============================================================================================

@external
def set_liquidation_params(capacity_multiplier: uint256, deficit_grace_period: uint256):
    """
    @notice The liquidation capacity's multiplier (0 < m <= 1, WAD) and the deficit grace
            period (1 hour .. 30 days). Owner.
    """
    ownable._check_owner()
    assert capacity_multiplier > 0 and capacity_multiplier <= WAD, "liquidator: capacity multiplier must be in (0, 1]"
    assert deficit_grace_period >= 3600 and deficit_grace_period <= MAX_DEFICIT_GRACE_PERIOD, "liquidator: deficit grace period out of bounds"
    self.capacity_multiplier = capacity_multiplier
    self.deficit_grace_period = deficit_grace_period
    log LiquidationParamsSet(capacity_multiplier=capacity_multiplier, deficit_grace_period=deficit_grace_period)

@external
def set_adl_keeper(keeper: address, allowed: bool):
    """
    @notice Grant or revoke the ADL keeper role. Owner.
    """
    ownable._check_owner()
    self.adl_keeper[keeper] = allowed
    log AdlKeeperSet(keeper=keeper, allowed=allowed)


@external
def set_pnl_factors(max_pnl_factor: uint256, target_pnl_factor: uint256):
    """
    @notice ADL trigger 2 thresholds (WAD): 0 < target < max <= 10. Owner.
    """
    ownable._check_owner()
    assert target_pnl_factor > 0 and target_pnl_factor < max_pnl_factor, "liquidator: target must be below max"
    assert max_pnl_factor <= 10 * WAD, "liquidator: max PnL factor too high"
    self.max_pnl_factor = max_pnl_factor
    self.target_pnl_factor = target_pnl_factor
    log PnlFactorsSet(max_pnl_factor=max_pnl_factor, target_pnl_factor=target_pnl_factor)

# ============================================================================================
# INTERNAL
# ============================================================================================

@internal
@view
def _capacity(market_id: uint256) -> uint256:
    p: IExchange.MarketParams = staticcall EXCHANGE.market_params(market_id)
    return 2 * min(p.maker_fee, p.taker_fee) * p.skew_scale // WAD * self.capacity_multiplier // WAD


@internal
def _use_capacity(market_id: uint256, wanted: uint256) -> uint256:
    """
    @dev Take up to `wanted` of the market's liquidation capacity at the current index; the
         size granted. A new index opens a new window.
    """
    index: uint256 = staticcall EXCHANGE.index_price(market_id)
    window: uint256 = self._liquidation_window[market_id]
    used: uint256 = 0
    if window >> 128 == index:
        used = window & MASK128
    capacity: uint256 = self._capacity(market_id)
    granted: uint256 = min(wanted, capacity - min(used, capacity))
    if granted > 0:
        self._liquidation_window[market_id] = (index << 128) | (used + granted)
    return granted


@internal
@view
def _can_write_off(record: uint256, market_id: uint256) -> bool:
    if record & RECORD_AMOUNT_MASK == 0:
        return False
    if block.timestamp >= (record >> RECORD_TIME_SHIFT) + self.deficit_grace_period:
        return True
    long_oi: uint256 = 0
    short_oi: uint256 = 0
    long_oi, short_oi = staticcall EXCHANGE.open_interest(market_id)
    if record & RECORD_LONG_BIT != 0:
        return short_oi == 0  # longs lost: only shorts could be deleveraged
    return long_oi == 0

@internal
@view
def _is_liquidatable(owner: address, sub_account: uint256) -> bool:
    cash: int256 = 0
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    cash, equity, initial, maintenance = staticcall EXCHANGE.account_state(owner, sub_account)
    return maintenance != 0 and equity < convert(maintenance, int256)


@internal
def _liquidate(owner: address, sub_account: uint256, keeper: address) -> uint256:
    if not self._is_liquidatable(owner, sub_account):
        return LIQUIDATION_HEALTHY
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = staticcall VAULT.account(owner, sub_account)

    penalty: uint256 = 0
    closed_notional: uint256 = 0
    losses: uint256[MAX_MARKETS] = empty(uint256[MAX_MARKETS])
    sides: int256[MAX_MARKETS] = empty(int256[MAX_MARKETS])
    total_loss: uint256 = 0
    open_after: uint256 = 0
    closed_any: bool = False
    for market_id: uint256 in range(MAX_MARKETS):
        if mask >> market_id == 0:
            break
        if (mask >> market_id) & 1 == 0:
            continue
        size: int256 = 0
        basis: int256 = 0
        snapshot: int256 = 0
        size, basis, snapshot = staticcall EXCHANGE.position_state(owner, sub_account, market_id)
        p: IExchange.MarketParams = staticcall EXCHANGE.market_params(market_id)
        amount: uint256 = self._use_capacity(market_id, min(fp._abs(size), p.max_liquidation_size))
        if amount == 0:  # the capacity at this index is used up: the position waits
            continue
        fill: IExchange.Fill = extcall EXCHANGE.close_for(
            owner, sub_account, market_id, -fp._sign(size) * convert(amount, int256), CLOSE_LIQUIDATION
        )
        notional: uint256 = fp._ceil_div_u(amount * fill.price, WAD)
        closed_notional += notional
        penalty += fp._ceil_div_u(notional * p.liquidation_penalty_ratio, WAD)
        loss: int256 = fill.funding_paid - fill.realized_pnl
        if loss > 0:
            losses[market_id] = convert(loss, uint256)
            total_loss += convert(loss, uint256)
        sides[market_id] = fp._sign(size)
        closed_any = True
        open_after = fill.mask

    if not closed_any:
        return LIQUIDATION_NO_CAPACITY
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    cash, equity, initial, maintenance = staticcall EXCHANGE.account_state(owner, sub_account)
    available: uint256 = convert(max(equity, 0), uint256)
    penalty = min(penalty, available)
    keeper_reward: uint256 = min(
        penalty * staticcall EXCHANGE.keeper_reward_share() // WAD + staticcall EXCHANGE.keeper_min_reward(),
        available,
    )
    charged: uint256 = max(penalty, keeper_reward)
    to_insurance: uint256 = charged - keeper_reward
    if charged > 0:
        cash = extcall VAULT.settle_pair(
            owner, sub_account, keeper, 0,
            -convert(charged, int256), convert(keeper_reward, int256), convert(to_insurance, int256)
        )
    if open_after == 0 and cash < 0:
        self._cover_bankruptcy(owner, sub_account, cash, mask, losses, sides, total_loss)
    log Liquidation(
        owner=owner,
        sub_account=sub_account,
        keeper=keeper,
        closed_notional=closed_notional,
        penalty=penalty,
        keeper_reward=keeper_reward,
        to_insurance=to_insurance,
        equity_after=equity - convert(charged, int256),
        fully_closed=open_after == 0,
    )
    return LIQUIDATION_DONE


@internal
def _cover_bankruptcy(
    owner: address,
    sub_account: uint256,
    cash: int256,
    mask: uint256,
    losses: uint256[MAX_MARKETS],
    sides: int256[MAX_MARKETS],
    total_loss: uint256,
):
    """
    @dev The insurance fund pays what it can at once; the rest stays as the account's negative
         cash and is recorded per market, pro rata to the losses of this liquidation.
    """
    deficit: uint256 = convert(-cash, uint256)
    insurance: int256 = staticcall VAULT.insurance_cash()
    cover: uint256 = min(deficit, convert(max(insurance, 0), uint256))
    if cover > 0:
        extcall VAULT.settle_pair(owner, sub_account, empty(address), 0, convert(cover, int256), 0, -convert(cover, int256))
    uncovered: uint256 = deficit - cover
    log BadDebt(owner=owner, sub_account=sub_account, deficit=deficit, covered_by_insurance=cover, uncovered=uncovered)
    if uncovered == 0:
        return
    remaining: uint256 = uncovered
    last: uint256 = MAX_MARKETS
    for market_id: uint256 in range(MAX_MARKETS):
        if (mask >> market_id) & 1 == 0:
            continue
        if total_loss == 0 or losses[market_id] > 0:
            last = market_id
    for market_id: uint256 in range(MAX_MARKETS):
        if (mask >> market_id) & 1 == 0 or (total_loss > 0 and losses[market_id] == 0):
            continue
        share: uint256 = remaining
        if market_id != last:
            share = uncovered * losses[market_id] // total_loss
        remaining -= share
        if share > 0:
            self.uncovered_deficit[market_id] += share
            self.deficit_side[market_id] = sides[market_id]
            self._total_deficit += share
            previous: uint256 = self._deficits[owner][sub_account][market_id]
            long_bit: uint256 = 0
            if sides[market_id] > 0:
                long_bit = RECORD_LONG_BIT
            # one account's records in one market add up (a re-opened position bankrupt again)
            self._deficits[owner][sub_account][market_id] = (
                ((previous & RECORD_AMOUNT_MASK) + share) | long_bit | (block.timestamp << RECORD_TIME_SHIFT)
            )
            log DeficitRecorded(
                market_id=market_id,
                owner=owner,
                sub_account=sub_account,
                amount=share,
                losing_side=sides[market_id],
                total=self.uncovered_deficit[market_id],
            )
        if market_id == last:
            break


@internal
@view
def _adl_score(owner: address, sub_account: uint256, market_id: uint256) -> (int256, int256):
    """
    @dev (score, unrealized PnL at the index) of a position.
    """
    size: int256 = 0
    entry: uint256 = 0
    pnl: int256 = 0
    funding: int256 = 0
    size, entry, pnl, funding = staticcall EXCHANGE.position(owner, sub_account, market_id)
    if size == 0:
        return 0, 0
    basis: int256 = 0
    snapshot: int256 = 0
    size, basis, snapshot = staticcall EXCHANGE.position_state(owner, sub_account, market_id)
    if basis == 0:
        # a dust position whose cost basis rounded to zero: it can never be profitable
        return 0, pnl
    pnl_ratio: int256 = fp._floor_div(pnl * IWAD, convert(fp._abs(basis), int256))
    cash: int256 = 0
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    cash, equity, initial, maintenance = staticcall EXCHANGE.account_state(owner, sub_account)
    if equity <= 0:
        if pnl_ratio > 0:
            return max_value(int256), pnl
        return pnl_ratio, pnl
    notional: uint256 = fp._abs(size) * staticcall EXCHANGE.index_price(market_id) // WAD
    leverage: int256 = convert(notional * WAD // convert(equity, uint256), int256)
    return fp._floor_div(pnl_ratio * leverage, IWAD), pnl


@internal
@view
def _pnl_factor(market_id: uint256) -> uint256:
    skew: int256 = staticcall EXCHANGE.skew(market_id)
    if skew == 0:
        return 0
    index: uint256 = staticcall EXCHANGE.index_price(market_id)
    closing: uint256 = pricing._closing_price(index, skew, (staticcall EXCHANGE.market_params(market_id)).skew_scale)
    traders_pnl: int256 = fp._floor_div(skew * convert(closing, int256), IWAD) - staticcall EXCHANGE.open_notional_sum(market_id)
    if traders_pnl <= 0:
        return 0
    value: int256 = staticcall EXCHANGE.liquidity_vault_value()
    if value <= 0:
        return max_value(uint256)
    return convert(traders_pnl, uint256) * WAD // convert(value, uint256)
