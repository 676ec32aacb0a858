# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title Exchange
@custom:contract-name Exchange
@license GNU Affero General Public License v3.0 only
@notice Perpetual-futures markets priced off an oracle index. Traders' orders (committed in
        the order book, executed by keepers at a later oracle round) fill against the
        liquidity vault at the path-independent fill price of DESIGN.md; realized PnL, fees
        and funding settle as cash in the vault's ledger. Funding is one accumulator per
        market with a per-position snapshot: settlement is lazy and O(1), and the liquidity
        vault's -skew position settles on every touch of its market.
@custom:security Health is valued at the oracle index, never at the mark. No function loops
        over accounts; loops are bounded by MAX_MARKETS. Every cash movement is one balanced
        `Vault.settle` call. All state-changing functions are non-reentrant.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from .interfaces import IIndexOracle
from .interfaces import IVault
from .modules import fixed_point as fp
from .modules import pricing


interface ILiquidatorDeficits:
    def total_uncovered_deficit() -> uint256: view

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)

# ============================================================================================
# CONSTANTS
# ============================================================================================

MAX_MARKETS: constant(uint256) = 32
MAX_FEEDS: constant(uint256) = 5
WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
MAX_FEE: constant(uint256) = 10**16  # 1 % of notional
MAX_MAINTENANCE: constant(uint256) = 2 * 10**17  # 20 %
MAX_PENALTY: constant(uint256) = 2 * 10**16  # 2 %
MAX_KEEPER_SHARE: constant(uint256) = 5 * 10**17  # 50 % of the penalty
MAX_FUNDING_RATE: constant(uint256) = 10**17  # 10 % per 8 hours
MAX_KEEPER_MIN_REWARD: constant(uint256) = 1_000 * 10**18  # USD
MAX_SIZE: constant(uint256) = 2**120  # sizes and open interest stay far inside int128
OFFSET: constant(int256) = 2**127  # packs an int128 into 128 unsigned bits
FUNDING_OFFSET: constant(int256) = 2**111
NOTIONAL_SUM_OFFSET: constant(int256) = 2**103
NOTIONAL_SUM_MASK: constant(uint256) = 2**104 - 1
MASK128: constant(uint256) = 2**128 - 1
MASK64: constant(uint256) = 2**64 - 1
MASK60: constant(uint256) = 2**60 - 1
MASK75: constant(uint256) = 2**75 - 1
INSURANCE_SHARE_SHIFT: constant(uint256) = 196
PROTOCOL_SHARE_SHIFT: constant(uint256) = 136
KEEPER_SHARE_SHIFT: constant(uint256) = 76

# ============================================================================================
# STRUCTS AND EVENTS
# ============================================================================================

MODE_TRADE: constant(uint256) = 0
MODE_LIQUIDATION: constant(uint256) = 1  # forced close at the fill price, no fee
MODE_ADL: constant(uint256) = 2  # forced close at the index, no fee
MODE_ADL_FILL: constant(uint256) = 3  # forced close at the ordinary fill price, no fee

struct Fill:
    price: uint256
    index: uint256
    fee: uint256
    realized_pnl: int256
    funding_paid: int256
    new_size: int256
    risk_up: bool
    cash: int256  # the account's cash after the fill
    mask: uint256  # the account's open-markets mask after the fill

struct MarketParams:
    skew_scale: uint256  # base units (WAD); premium = skew / skew_scale
    max_funding_rate: uint256  # WAD per 8 hours
    maker_fee: uint256  # WAD ratio of notional
    taker_fee: uint256  # WAD ratio of notional
    initial_margin_ratio: uint256  # WAD
    maintenance_margin_ratio: uint256  # WAD
    liquidation_penalty_ratio: uint256  # WAD
    max_long_oi: uint256  # base units
    max_short_oi: uint256  # base units
    max_position_size: uint256  # base units
    max_liquidation_size: uint256  # base units per liquidation call

event MarketListed:
    market_id: indexed(uint256)
    symbol: String[16]

event MarketParamsSet:
    market_id: indexed(uint256)
    params: MarketParams

event GlobalParamsSet:
    insurance_fee_share: uint256
    protocol_fee_share: uint256
    keeper_min_reward: uint256
    keeper_reward_share: uint256

event GuardianSet:
    guardian: address

event LiquidatorSet:
    liquidator: address

event OrderBookSet:
    order_book: address

event PauseSet:
    paused: bool
    by: indexed(address)

event FundingAccrued:
    market_id: indexed(uint256)
    funding_rate: int256
    funding_per_unit: int256
    liquidity_vault_funding: int256  # paid (+) or received (-) by the liquidity vault

event Trade:
    owner: indexed(address)
    sub_account: indexed(uint256)
    market_id: indexed(uint256)
    size_delta: int256
    fill_price: uint256
    fee: uint256
    realized_pnl: int256
    funding_paid: int256
    new_size: int256
    new_open_notional: int256

# ============================================================================================
# STORAGE
# ============================================================================================

VAULT: public(immutable(IVault))
ORACLE: public(immutable(IIndexOracle))

# market parameters packed in four slots (read on every trade; cold reads dominate gas):
#   0: skew_scale (128) | maintenance_margin_ratio (64) | liquidation_penalty_ratio (64)
#   1: maker_fee (64) | taker_fee (64) | max_funding_rate (64) | initial_margin_ratio (64)
#   2: max_long_oi (128) | max_short_oi (128)
#   3: max_position_size (128) | max_liquidation_size (128)
_params: HashMap[uint256, uint256[4]]
market_symbol: public(HashMap[uint256, String[16]])
market_ids: public(DynArray[uint256, MAX_MARKETS])

# per market: long OI << 128 | short OI
_oi: HashMap[uint256, uint256]
# per market, one slot written by every execution: (funding_per_unit + 2**111) << 144 (WAD USD
# per base unit, to 2.6e15 USD) | last funding timestamp << 104 (40 bits) | (sum of the
# traders' signed cost bases + 2**103) (WAD USD, to 1e13 USD; the liquidity vault's is its
# negative)
_funding: HashMap[uint256, uint256]

# owner -> sub-account -> market -> (size + OFFSET) << 128 | (funding snapshot + OFFSET)
_position: HashMap[address, HashMap[uint256, HashMap[uint256, uint256]]]
# owner -> sub-account -> market -> signed cost basis (size x average entry price)
_open_notional: HashMap[address, HashMap[uint256, HashMap[uint256, int256]]]
# (the bitmask of each sub-account's open markets lives in the vault, beside its cash)

# one slot, read by every execution: insurance_fee_share (196..255) | protocol_fee_share
# (136..195) | keeper_reward_share (76..135) | keeper_min_reward (1..75) | paused (0); the
# shares are at most WAD (< 2**60), the reward floor at most MAX_KEEPER_MIN_REWARD (< 2**75)
_globals: uint256

guardian: public(address)
liquidator: public(address)
order_book: public(address)

# ============================================================================================
# CONSTRUCTOR
# ============================================================================================

@deploy
def __init__(vault: IVault, oracle: IIndexOracle):
    """
    @param vault The vault holding the collateral and the cash ledger.
    @param oracle The index oracle.
    """
    ownable.__init__()
    ownable_2step.__init__()
    VAULT = vault
    ORACLE = oracle
    self._globals = self._pack_globals(WAD // 5, 0, WAD // 5, 0, False)
    self.guardian = msg.sender

# ============================================================================================
# TRADING
# ============================================================================================

@external
def execute_trade(
    owner: address,
    sub_account: uint256,
    market_id: uint256,
    size_delta: int256,
    acceptable_price: uint256,
    index: uint256,
    executor: address,
    execution_fee: uint256,
) -> uint256:
    """
    @notice Fill a trader's order against the liquidity vault at `index` (the oracle round the
            order book validated for it): increase, reduce, close or flip the position of
            `owner` in `sub_account`. Order book only: traders commit orders there.
    @param owner The trader.
    @param sub_account The trader's sub-account (cross margin inside it).
    @param market_id The market.
    @param size_delta Signed size in base units (WAD): > 0 buys, < 0 sells.
    @param acceptable_price Worst fill price accepted: a maximum for buys, a minimum for sells.
    @param index The index price of the order's execution round (WAD).
    @param executor Who executes the order: its escrowed execution fee is paid to the
           executor's sub-account 0 in the same settlement.
    @param execution_fee The order's escrowed execution fee (WAD).
    @return The fill price (WAD).
    """
    assert msg.sender == self.order_book, "exchange: caller is not the order book"
    fill: Fill = self._execute(
        owner, sub_account, market_id, size_delta, acceptable_price, MODE_TRADE, index, executor, execution_fee
    )
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    equity, initial, maintenance = self._account_state(owner, sub_account, fill.cash, fill.mask, market_id, fill.index)
    if fill.risk_up:
        assert equity >= convert(max(initial, maintenance), int256), "exchange: insufficient margin"
    else:
        assert equity >= 0, "exchange: trade would leave account bankrupt"
        # a reduction that leaves the account under maintenance may not lower its margin
        # surplus: nobody walks an account into liquidation with its own trades at a pushed
        # price (closing every position is always allowed)
        if equity < convert(maintenance, int256) and fill.mask != 0:
            assert self._surplus_change(market_id, size_delta, fill) >= 0, "exchange: reduction lowers the margin surplus"
    return fill.price


@external
def close_for(owner: address, sub_account: uint256, market_id: uint256, size_delta: int256, mode: uint256) -> Fill:
    """
    @notice Reduce a position on behalf of the liquidator, without fee: `mode` 1 a liquidation
            (the worse, for the account, of the slice's own-impact price and the fill price),
            2 a deficit ADL (at the index), 3 a PnL-factor ADL (at the ordinary fill price).
            Liquidator only.
    @dev No margin check: the liquidator decides and settles penalties itself.
    """
    assert msg.sender == self.liquidator, "exchange: caller is not the liquidator"
    assert mode >= MODE_LIQUIDATION and mode <= MODE_ADL_FILL, "exchange: unknown close mode"
    return self._execute(owner, sub_account, market_id, size_delta, 0, mode, 0, empty(address), 0)


@external
def touch_market(market_id: uint256):
    """
    @notice Accrue a market's funding and settle the liquidity vault's share of it. Anyone.
    """
    self._touch(market_id)

# ============================================================================================
# VIEWS: PRICES
# ============================================================================================

@external
@view
def index_price(market_id: uint256) -> uint256:
    """
    @notice The oracle index price (WAD); reverts with the oracle's reason when invalid.
    """
    return staticcall ORACLE.index_price(market_id)


@external
@view
def skew(market_id: uint256) -> int256:
    """
    @notice Total long size minus total short size of traders (base units, WAD).
    """
    long_oi: uint256 = 0
    short_oi: uint256 = 0
    long_oi, short_oi = self._unpack_oi(self._oi[market_id])
    return convert(long_oi, int256) - convert(short_oi, int256)


@external
@view
def open_interest(market_id: uint256) -> (uint256, uint256):
    """
    @notice (long open interest, short open interest) in base units.
    """
    return self._unpack_oi(self._oi[market_id])


@external
@view
def mark_price(market_id: uint256) -> uint256:
    """
    @notice index x (1 + skew / skew_scale).
    """
    skew_scale: uint256 = self._skew_scale(market_id)
    return pricing._mark_price(staticcall ORACLE.index_price(market_id), self._skew_of(market_id), skew_scale)


@external
@view
def fill_price(market_id: uint256, size_delta: int256) -> uint256:
    """
    @notice The price a trade of `size_delta` would fill at now.
    """
    assert size_delta != 0, "exchange: zero size"
    skew_scale: uint256 = self._skew_scale(market_id)
    return pricing._fill_price(staticcall ORACLE.index_price(market_id), self._skew_of(market_id), skew_scale, size_delta)


@external
@view
def funding_rate(market_id: uint256) -> int256:
    """
    @notice Current funding rate per 8 hours (WAD); positive: longs pay shorts.
    """
    skew_scale: uint256 = self._skew_scale(market_id)
    return pricing._funding_rate(self._skew_of(market_id), skew_scale, (self._params[market_id][1] >> 64) & MASK64)


@external
@view
def funding_per_unit(market_id: uint256) -> int256:
    """
    @notice The market's funding accumulator as it would be if touched now.
    """
    skew_scale: uint256 = self._skew_scale(market_id)
    return self._current_funding_per_unit(market_id, staticcall ORACLE.index_price(market_id))


@external
@view
def funding_state(market_id: uint256) -> (int256, uint256):
    """
    @notice The stored (funding_per_unit, last update timestamp) of a market.
    """
    return self._unpack_funding(self._funding[market_id])


@external
@view
def open_notional_sum(market_id: uint256) -> int256:
    """
    @notice The sum of the traders' signed cost bases in a market (WAD); the liquidity vault's
            is its negative.
    """
    return self._notional_sum(self._funding[market_id])

# ============================================================================================
# VIEWS: ACCOUNTS
# ============================================================================================

@external
@view
def position(owner: address, sub_account: uint256, market_id: uint256) -> (int256, uint256, int256, int256):
    """
    @notice A position: (size, average entry price, unrealized PnL at the index, unsettled
            funding: positive means the position owes it).
    """
    size: int256 = 0
    snapshot: int256 = 0
    size, snapshot = self._unpack_position(self._position[owner][sub_account][market_id])
    if size == 0:
        return 0, 0, 0, 0
    index: uint256 = staticcall ORACLE.index_price(market_id)
    basis: int256 = self._open_notional[owner][sub_account][market_id]
    fpu: int256 = self._current_funding_per_unit(market_id, index)
    return (
        size,
        fp._abs(basis) * WAD // fp._abs(size),
        pricing._unrealized_pnl(size, basis, index),
        pricing._funding_charge(size, fpu, snapshot),
    )


@external
@view
def position_state(owner: address, sub_account: uint256, market_id: uint256) -> (int256, int256, int256):
    """
    @notice Raw stored position: (size, open notional, funding snapshot). No oracle needed.
    """
    size: int256 = 0
    snapshot: int256 = 0
    size, snapshot = self._unpack_position(self._position[owner][sub_account][market_id])
    return size, self._open_notional[owner][sub_account][market_id], snapshot


@external
@view
def open_markets(owner: address, sub_account: uint256) -> uint256:
    """
    @notice Bitmask of the markets in which the sub-account has a position.
    """
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = staticcall VAULT.account(owner, sub_account)
    return mask


@external
@view
def market_params(market_id: uint256) -> MarketParams:
    """
    @notice A market's parameters (all zero for an unlisted market).
    """
    p: uint256[4] = self._params[market_id]
    return MarketParams(
        skew_scale=p[0] >> 128,
        max_funding_rate=(p[1] >> 64) & MASK64,
        maker_fee=p[1] >> 192,
        taker_fee=(p[1] >> 128) & MASK64,
        initial_margin_ratio=p[1] & MASK64,
        maintenance_margin_ratio=(p[0] >> 64) & MASK64,
        liquidation_penalty_ratio=p[0] & MASK64,
        max_long_oi=p[2] >> 128,
        max_short_oi=p[2] & MASK128,
        max_position_size=p[3] >> 128,
        max_liquidation_size=p[3] & MASK128,
    )


@external
@view
def max_position_size(market_id: uint256) -> uint256:
    """
    @notice A market's largest position (base units); 0 for an unlisted market.
    """
    return self._params[market_id][3] >> 128


@external
@view
def insurance_fee_share() -> uint256:
    return self._globals >> INSURANCE_SHARE_SHIFT


@external
@view
def protocol_fee_share() -> uint256:
    return (self._globals >> PROTOCOL_SHARE_SHIFT) & MASK60


@external
@view
def keeper_reward_share() -> uint256:
    return (self._globals >> KEEPER_SHARE_SHIFT) & MASK60


@external
@view
def keeper_min_reward() -> uint256:
    """
    @notice The flat keeper reward floor (WAD USD), part of every maintenance requirement.
    """
    return (self._globals >> 1) & MASK75


@external
@view
def paused() -> bool:
    """
    @notice True while the exchange is in reduce-only mode.
    """
    return self._globals & 1 != 0


@external
@view
def equity(owner: address, sub_account: uint256) -> int256:
    """
    @notice cash + unrealized PnL at the index - unsettled funding (WAD).
    """
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = staticcall VAULT.account(owner, sub_account)
    equity, initial, maintenance = self._account_state(owner, sub_account, cash, mask, MAX_MARKETS, 0)
    return equity


@external
@view
def account_state(owner: address, sub_account: uint256) -> (int256, int256, uint256, uint256):
    """
    @notice (cash, equity, initial requirement, maintenance requirement) in one call.
    """
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = staticcall VAULT.account(owner, sub_account)
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    equity, initial, maintenance = self._account_state(owner, sub_account, cash, mask, MAX_MARKETS, 0)
    return cash, equity, initial, maintenance


@external
@view
def withdrawable(owner: address, sub_account: uint256) -> uint256:
    """
    @notice max(0, min(cash, equity - initial requirement)) in WAD. Needs no oracle when the
            sub-account has no position.
    """
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = staticcall VAULT.account(owner, sub_account)
    if mask == 0:
        return convert(max(cash, 0), uint256)
    equity: int256 = 0
    initial: uint256 = 0
    maintenance: uint256 = 0
    equity, initial, maintenance = self._account_state(owner, sub_account, cash, mask, MAX_MARKETS, 0)
    free: int256 = min(cash, equity - convert(initial, int256))
    return convert(max(free, 0), uint256)

# ============================================================================================
# VIEWS: LIQUIDITY VAULT
# ============================================================================================

@external
@view
def liquidity_vault_value() -> int256:
    """
    @notice The liquidity vault's value (WAD) at the current index: its cash + its -skew
            position in every market valued at the closing price `index x (1 + skew / (2 x
            skew_scale))` (the fill at which the traders' skew would close) - its unsettled
            funding - the outstanding uncovered deficits (losses it already bears). At one
            index no trade moves it: fills are path-independent, so a skew pushed and taken
            back leaves it where it was. O(number of markets).
    """
    return self._lv_value(empty(DynArray[uint256, MAX_MARKETS])) - convert(self._outstanding_deficit(), int256)


@external
@view
def liquidity_vault_value_at(indices: DynArray[uint256, MAX_MARKETS]) -> int256:
    """
    @notice The liquidity vault's value before netting the outstanding uncovered deficits (see
            `liquidity_vault_value`), at the given index of every listed market (in the order
            of `market_ids`): what a two-step LP flow is priced at, with the indices of its
            execution rounds.
    """
    assert len(indices) == len(self.market_ids), "exchange: one index per market"
    return self._lv_value(indices)


@external
@view
def open_interest_notional() -> uint256:
    """
    @notice Sum over markets of (long + short open interest) x index (WAD).
    """
    total: uint256 = 0
    for market_id: uint256 in self.market_ids:
        long_oi: uint256 = 0
        short_oi: uint256 = 0
        long_oi, short_oi = self._unpack_oi(self._oi[market_id])
        if long_oi + short_oi == 0:
            continue
        total += fp._ceil_div_u((long_oi + short_oi) * staticcall ORACLE.index_price(market_id), WAD)
    return total


@external
@view
def market_count() -> uint256:
    return len(self.market_ids)

# ============================================================================================
# ADMIN
# ============================================================================================

@external
def list_market(
    market_id: uint256,
    symbol: String[16],
    feeds: DynArray[IIndexOracle.FeedConfig, MAX_FEEDS],
    max_deviation: uint256,
    params: MarketParams,
):
    """
    @notice List a market: its oracle feeds and its parameters (within hard bounds). Owner.
    @param market_id 0 .. MAX_MARKETS - 1, unused.
    """
    ownable._check_owner()
    assert market_id < MAX_MARKETS, "exchange: market id out of range"
    assert self._params[market_id][0] == 0, "exchange: market already listed"
    assert len(symbol) > 0, "exchange: empty symbol"
    extcall ORACLE.set_feeds(market_id, feeds, max_deviation)
    self._set_params(market_id, params)
    self.market_symbol[market_id] = symbol
    self.market_ids.append(market_id)
    self._funding[market_id] = self._pack_funding(0, block.timestamp, 0)
    log MarketListed(market_id=market_id, symbol=symbol)


@external
def set_market_params(market_id: uint256, params: MarketParams):
    """
    @notice Change a listed market's parameters (within hard bounds). Owner. Funding accrued
            so far is settled at the old parameters first. skew_scale moves by at most a factor
            of 2 per change: it prices every fill and the liquidity vault's value.
    """
    ownable._check_owner()
    old: uint256 = self._skew_scale(market_id)
    self._touch(market_id)
    self._set_params(market_id, params)
    assert params.skew_scale * 2 >= old and params.skew_scale <= old * 2, "exchange: skew_scale change above 2x"


@external
def set_global_params(
    insurance_fee_share: uint256, protocol_fee_share: uint256, keeper_min_reward: uint256, keeper_reward_share: uint256
):
    """
    @notice Fee split, keeper reward floor and keeper share of liquidation penalties. Owner.
    """
    ownable._check_owner()
    assert insurance_fee_share + protocol_fee_share <= WAD, "exchange: fee shares above 100%"
    assert keeper_min_reward <= MAX_KEEPER_MIN_REWARD, "exchange: keeper reward floor too high"
    assert keeper_reward_share <= MAX_KEEPER_SHARE, "exchange: keeper share above 50%"
    self._globals = self._pack_globals(
        insurance_fee_share, protocol_fee_share, keeper_reward_share, keeper_min_reward, self._globals & 1 != 0
    )
    log GlobalParamsSet(
        insurance_fee_share=insurance_fee_share,
        protocol_fee_share=protocol_fee_share,
        keeper_min_reward=keeper_min_reward,
        keeper_reward_share=keeper_reward_share,
    )


@external
def set_liquidator(liquidator: address):
    """
    @notice Wire the liquidator (liquidation and auto-deleveraging), once. Owner.
    """
    ownable._check_owner()
    assert self.liquidator == empty(address), "exchange: liquidator already set"
    assert liquidator != empty(address), "exchange: zero address"
    self.liquidator = liquidator
    log LiquidatorSet(liquidator=liquidator)


@external
def set_order_book(order_book: address):
    """
    @notice Wire the order book, the only caller of `execute_trade`, once. Owner.
    """
    ownable._check_owner()
    assert self.order_book == empty(address), "exchange: order book already set"
    assert order_book != empty(address), "exchange: zero address"
    self.order_book = order_book
    log OrderBookSet(order_book=order_book)


@external
def set_guardian(guardian: address):
    """
    @notice The guardian can pause new risk (reduce-only mode); it can never move funds. Owner.
    """
    ownable._check_owner()
    self.guardian = guardian
    log GuardianSet(guardian=guardian)


@external
def set_paused(paused: bool):
    """
    @notice Pause (reduce-only: no new risk; closes and withdrawals of free collateral still
            work): the guardian or the owner, at once. Unpause: the owner only (behind the
            timelock), since it loosens risk.
    """
    assert msg.sender == self.guardian or msg.sender == ownable.owner, "exchange: caller is not the guardian"
    if not paused:
        assert msg.sender == ownable.owner, "exchange: only the owner unpauses"
    self._globals = (self._globals & ~convert(1, uint256)) | convert(paused, uint256)
    log PauseSet(paused=paused, by=msg.sender)

# ============================================================================================
# INTERNAL: EXECUTION
# ============================================================================================

@internal
def _execute(
    owner: address,
    sub_account: uint256,
    market_id: uint256,
    size_delta: int256,
    acceptable_price: uint256,
    mode: uint256,
    known_index: uint256,
    fee_payee: address,
    escrow_release: uint256,
) -> Fill:
    """
    @dev One code path for every position change: accrue the market, settle the position's
         funding, fill against the liquidity vault, update open interest, settle cash in one
         balanced vault call. Trades pay fees and face slippage, caps and pause; forced closes
         (liquidation at the fill price, ADL at the index) may only reduce and pay no fee.
         `known_index` is the index of an order's execution round (0: the oracle's latest);
         `escrow_release` is the order's execution fee, paid to `fee_payee` by the same
         settlement.
    """
    assert size_delta != 0, "exchange: zero size"
    p0: uint256 = self._params[market_id][0]
    skew_scale: uint256 = p0 >> 128
    assert skew_scale != 0, "exchange: unknown market"
    p1: uint256 = self._params[market_id][1]
    index: uint256 = known_index
    if index == 0:
        index = staticcall ORACLE.index_price(market_id)

    long_oi: uint256 = 0
    short_oi: uint256 = 0
    long_oi, short_oi = self._unpack_oi(self._oi[market_id])
    skew: int256 = convert(long_oi, int256) - convert(short_oi, int256)
    funding_per_unit: int256 = 0
    lv_funding: int256 = 0
    funding_per_unit, lv_funding = self._accrue(market_id, skew, skew_scale, (p1 >> 64) & MASK64, index)

    old_size: int256 = 0
    snapshot: int256 = 0
    old_size, snapshot = self._unpack_position(self._position[owner][sub_account][market_id])
    funding_paid: int256 = 0
    if old_size != 0:
        funding_paid = pricing._funding_charge(old_size, funding_per_unit, snapshot)
    old_basis: int256 = self._open_notional[owner][sub_account][market_id]

    price: uint256 = index
    fee: uint256 = 0
    if mode == MODE_TRADE:
        price = pricing._fill_price(index, skew, skew_scale, size_delta)
        if size_delta > 0:
            assert price <= acceptable_price, "exchange: price beyond acceptable"
        else:
            assert price >= acceptable_price, "exchange: price beyond acceptable"
        fee = pricing._trade_fee(skew, size_delta, price, p1 >> 192, (p1 >> 128) & MASK64)
    else:
        assert fp._sign(size_delta) == -fp._sign(old_size) and fp._abs(size_delta) <= fp._abs(old_size), "exchange: not a reduction"
        if mode == MODE_LIQUIDATION:
            price = pricing._liquidation_price(index, skew, skew_scale, size_delta)
        elif mode == MODE_ADL_FILL:
            price = pricing._fill_price(index, skew, skew_scale, size_delta)
    new_size: int256 = 0
    new_basis: int256 = 0
    realized: int256 = 0
    new_size, new_basis, realized = self._apply_fill(old_size, old_basis, size_delta, price)

    globals_: uint256 = self._globals
    risk_up: bool = self._increases_risk(old_size, new_size)
    if risk_up:
        assert globals_ & 1 == 0, "exchange: paused, reduce-only"
        assert fp._abs(new_size) <= self._params[market_id][3] >> 128, "exchange: position above max size"

    new_long: uint256 = long_oi + self._long_part(new_size) - self._long_part(old_size)
    new_short: uint256 = short_oi + self._long_part(-new_size) - self._long_part(-old_size)
    if new_long > long_oi or new_short > short_oi:
        caps: uint256 = self._params[market_id][2]
        if new_long > long_oi:
            assert new_long <= caps >> 128, "exchange: long open interest cap"
        if new_short > short_oi:
            assert new_short <= caps & MASK128, "exchange: short open interest cap"

    # effects
    self._oi[market_id] = (new_long << 128) | new_short
    if new_size == 0:
        # clear both slots: the refund makes closing cheaper
        self._position[owner][sub_account][market_id] = 0
    else:
        self._position[owner][sub_account][market_id] = self._pack_position(new_size, funding_per_unit)
    self._open_notional[owner][sub_account][market_id] = new_basis
    if new_basis != old_basis:
        packed: uint256 = self._funding[market_id]  # warm: just accrued
        self._funding[market_id] = (packed & ~NOTIONAL_SUM_MASK) | self._pack_notional_sum(
            self._notional_sum(packed) + new_basis - old_basis
        )
    toggled: uint256 = 0
    if (old_size == 0) != (new_size == 0):
        toggled = 1 << market_id

    to_insurance: uint256 = fp._ceil_div_u(fee * (globals_ >> INSURANCE_SHARE_SHIFT), WAD)
    to_protocol: uint256 = fee * ((globals_ >> PROTOCOL_SHARE_SHIFT) & MASK60) // WAD
    to_lv: uint256 = fee - to_insurance - to_protocol
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = extcall VAULT.settle(
        owner,
        sub_account,
        realized - convert(fee, int256) - funding_paid,
        convert(to_lv, int256) - realized - lv_funding,
        convert(to_insurance, int256),
        convert(to_protocol, int256),
        funding_paid + lv_funding,
        toggled,
        fee_payee,
        escrow_release,
    )
    log Trade(
        owner=owner,
        sub_account=sub_account,
        market_id=market_id,
        size_delta=size_delta,
        fill_price=price,
        fee=fee,
        realized_pnl=realized,
        funding_paid=funding_paid,
        new_size=new_size,
        new_open_notional=new_basis,
    )
    return Fill(
        price=price,
        index=index,
        fee=fee,
        realized_pnl=realized,
        funding_paid=funding_paid,
        new_size=new_size,
        risk_up=risk_up,
        cash=cash,
        mask=mask,
    )

# ============================================================================================
# INTERNAL: LIQUIDITY VAULT VALUE
# ============================================================================================

@internal
@view
def _lv_value(indices: DynArray[uint256, MAX_MARKETS]) -> int256:
    """
    @dev The vault's cash + its -skew at the closing price - unsettled funding, at `indices`
         (the oracle's when empty).
    """
    value: int256 = staticcall VAULT.liquidity_cash()
    count: uint256 = len(self.market_ids)
    for i: uint256 in range(count, bound=MAX_MARKETS):
        market_id: uint256 = self.market_ids[i]
        skew: int256 = self._skew_of(market_id)
        if skew == 0:
            continue
        index: uint256 = 0
        if len(indices) == 0:
            index = staticcall ORACLE.index_price(market_id)
        else:
            index = indices[i]
        packed: uint256 = self._funding[market_id]
        stored: int256 = 0
        last: uint256 = 0
        stored, last = self._unpack_funding(packed)
        closing: uint256 = pricing._closing_price(index, skew, self._skew_scale(market_id))
        value += self._notional_sum(packed) - fp._floor_div(skew * convert(closing, int256), IWAD)
        value -= pricing._funding_charge(-skew, self._current_funding_per_unit(market_id, index), stored)
    return value


@internal
@view
def _outstanding_deficit() -> uint256:
    liquidator: address = self.liquidator
    if liquidator == empty(address):
        return 0
    return staticcall ILiquidatorDeficits(liquidator).total_uncovered_deficit()

# ============================================================================================
# INTERNAL: FUNDING
# ============================================================================================

@internal
def _accrue(
    market_id: uint256, skew: int256, skew_scale: uint256, max_funding_rate: uint256, index: uint256
) -> (int256, int256):
    """
    @dev Advance the market's funding accumulator to now. Returns (funding_per_unit, what the
         liquidity vault's -skew position pays for the elapsed time); the caller settles it.
    """
    fpu: int256 = 0
    last: uint256 = 0
    packed: uint256 = self._funding[market_id]
    fpu, last = self._unpack_funding(packed)
    if last == block.timestamp:
        return fpu, 0
    lv_funding: int256 = 0
    if skew != 0:
        rate: int256 = pricing._funding_rate(skew, skew_scale, max_funding_rate)
        delta: int256 = pricing._funding_per_unit_delta(rate, index, block.timestamp - last)
        if delta != 0:
            lv_funding = pricing._funding_charge(-skew, fpu + delta, fpu)
            fpu += delta
            log FundingAccrued(market_id=market_id, funding_rate=rate, funding_per_unit=fpu, liquidity_vault_funding=lv_funding)
    self._funding[market_id] = self._pack_funding(fpu, block.timestamp, self._notional_sum(packed))
    return fpu, lv_funding


@internal
def _touch(market_id: uint256):
    """
    @dev Accrue a market's funding and settle the liquidity vault's part of it.
    """
    p0: uint256 = self._params[market_id][0]
    assert p0 != 0, "exchange: unknown market"
    index: uint256 = staticcall ORACLE.index_price(market_id)
    fpu: int256 = 0
    lv_funding: int256 = 0
    fpu, lv_funding = self._accrue(
        market_id, self._skew_of(market_id), p0 >> 128, (self._params[market_id][1] >> 64) & MASK64, index
    )
    if lv_funding != 0:
        extcall VAULT.settle(empty(address), 0, 0, -lv_funding, 0, 0, lv_funding, 0, empty(address), 0)


@internal
@view
def _current_funding_per_unit(market_id: uint256, index: uint256) -> int256:
    fpu: int256 = 0
    last: uint256 = 0
    fpu, last = self._unpack_funding(self._funding[market_id])
    skew: int256 = self._skew_of(market_id)
    if last >= block.timestamp or skew == 0:
        return fpu
    p0: uint256 = self._params[market_id][0]
    p1: uint256 = self._params[market_id][1]
    rate: int256 = pricing._funding_rate(skew, p0 >> 128, (p1 >> 64) & MASK64)
    return fpu + pricing._funding_per_unit_delta(rate, index, block.timestamp - last)

# ============================================================================================
# INTERNAL: POSITIONS AND MARGIN
# ============================================================================================

@internal
@pure
def _apply_fill(size: int256, basis: int256, size_delta: int256, price: uint256) -> (int256, int256, int256):
    """
    @dev Mirror of perpdex.model.apply_fill: returns (new size, new basis, realized PnL).
    """
    new_size: int256 = size
    new_basis: int256 = basis
    realized: int256 = 0
    remaining: int256 = size_delta
    p: int256 = convert(price, int256)
    if size != 0 and fp._sign(size_delta) != fp._sign(size):
        closing: int256 = -size_delta
        if fp._abs(size_delta) >= fp._abs(size):
            closing = size
        basis_removed: int256 = basis
        if closing != size:
            basis_removed = fp._ceil_div(basis * convert(fp._abs(closing), int256), convert(fp._abs(size), int256))
        realized = fp._floor_div(closing * p, IWAD) - basis_removed
        new_basis -= basis_removed
        new_size -= closing
        remaining = size_delta + closing
    if remaining != 0:
        new_basis += fp._ceil_div(remaining * p, IWAD)
        new_size += remaining
    return new_size, new_basis, realized


@internal
@pure
def _increases_risk(old_size: int256, new_size: int256) -> bool:
    if new_size == 0:
        return False
    return fp._sign(new_size) != fp._sign(old_size) or fp._abs(new_size) > fp._abs(old_size)


@internal
@pure
def _long_part(size: int256) -> uint256:
    if size > 0:
        return convert(size, uint256)
    return 0


@internal
@view
def _account_state(
    owner: address, sub_account: uint256, cash: int256, mask: uint256, known_market: uint256, known_index: uint256
) -> (int256, uint256, uint256):
    """
    @dev (equity, initial requirement, maintenance requirement) of a sub-account, iterating
         only its open markets (bounded by MAX_MARKETS). `known_index` is used for
         `known_market`: the execution round's index of an order, and a spared oracle read.
    """
    equity: int256 = cash
    initial: uint256 = 0
    maintenance: uint256 = 0
    if mask == 0:
        return equity, 0, 0
    for market_id: uint256 in range(MAX_MARKETS):
        if mask >> market_id == 0:
            break
        if (mask >> market_id) & 1 == 0:
            continue
        index: uint256 = known_index
        if market_id != known_market:
            index = staticcall ORACLE.index_price(market_id)
        size: int256 = 0
        snapshot: int256 = 0
        size, snapshot = self._unpack_position(self._position[owner][sub_account][market_id])
        basis: int256 = self._open_notional[owner][sub_account][market_id]
        equity += pricing._unrealized_pnl(size, basis, index)
        equity -= pricing._funding_charge(size, self._current_funding_per_unit(market_id, index), snapshot)
        notional: uint256 = pricing._notional(size, index)
        p0: uint256 = self._params[market_id][0]
        # the close impact and penalty count in both requirements: initial >= maintenance
        close_terms: uint256 = fp._ceil_div_u(notional * fp._abs(size), 2 * (p0 >> 128)) + fp._ceil_div_u(
            notional * (p0 & MASK64), WAD
        )
        initial += fp._ceil_div_u(notional * (self._params[market_id][1] & MASK64), WAD) + close_terms
        maintenance += fp._ceil_div_u(notional * ((p0 >> 64) & MASK64), WAD) + close_terms
    keeper_floor: uint256 = (self._globals >> 1) & MASK75
    return equity, initial + keeper_floor, maintenance + keeper_floor


@internal
@view
def _surplus_change(market_id: uint256, size_delta: int256, fill: Fill) -> int256:
    """
    @dev A reduction's change of the account's margin surplus (equity - maintenance), exactly:
         the fee, the change of the position's unrealized PnL at the index and what the closed
         part realized at the fill price (floor(closing x price) - the basis removed), less the
         change of its maintenance terms. Only on the rare path that needs it.
    """
    p0: uint256 = self._params[market_id][0]
    i: int256 = convert(fill.index, int256)
    old_size: int256 = fill.new_size - size_delta
    return (
        fp._floor_div(-size_delta * convert(fill.price, int256), IWAD)
        - convert(fill.fee, int256)
        + fp._floor_div(fill.new_size * i, IWAD)
        - fp._floor_div(old_size * i, IWAD)
        - convert(self._maintenance_of(fill.new_size, fill.index, p0), int256)
        + convert(self._maintenance_of(old_size, fill.index, p0), int256)
    )


@internal
@pure
def _maintenance_of(size: int256, index: uint256, p0: uint256) -> uint256:
    """
    @dev One position's maintenance requirement (without the account's keeper floor), as
         `_account_state` adds it up.
    """
    if size == 0:
        return 0
    notional: uint256 = pricing._notional(size, index)
    return (
        fp._ceil_div_u(notional * ((p0 >> 64) & MASK64), WAD)
        + fp._ceil_div_u(notional * fp._abs(size), 2 * (p0 >> 128))
        + fp._ceil_div_u(notional * (p0 & MASK64), WAD)
    )

# ============================================================================================
# INTERNAL: PARAMETERS AND PACKING
# ============================================================================================

@internal
def _set_params(market_id: uint256, p: MarketParams):
    assert p.skew_scale > 0 and p.skew_scale <= MAX_SIZE, "exchange: bad skew scale"
    assert p.max_funding_rate <= MAX_FUNDING_RATE, "exchange: funding rate cap too high"
    # a maker fee > 0 bounds the liquidation capacity (2 x min(maker, taker) x skew_scale)
    assert p.maker_fee > 0 and p.maker_fee <= p.taker_fee, "exchange: maker fee not in (0, taker fee]"
    assert p.taker_fee <= MAX_FEE, "exchange: fee above cap"
    assert p.initial_margin_ratio <= WAD, "exchange: initial margin above 100%"
    assert p.maintenance_margin_ratio > 0 and p.maintenance_margin_ratio <= MAX_MAINTENANCE, "exchange: maintenance margin not in (0, 20%]"
    assert p.liquidation_penalty_ratio <= MAX_PENALTY, "exchange: liquidation penalty above 2%"
    assert (
        p.maintenance_margin_ratio + p.liquidation_penalty_ratio < p.initial_margin_ratio
    ), "exchange: maintenance + penalty must be below initial margin"
    assert p.max_long_oi <= MAX_SIZE and p.max_short_oi <= MAX_SIZE, "exchange: open interest cap too high"
    assert p.max_position_size > 0 and p.max_position_size <= MAX_SIZE, "exchange: bad max position size"
    assert p.max_liquidation_size > 0 and p.max_liquidation_size <= MAX_SIZE, "exchange: bad max liquidation size"
    self._params[market_id] = [
        (p.skew_scale << 128) | (p.maintenance_margin_ratio << 64) | p.liquidation_penalty_ratio,
        (p.maker_fee << 192) | (p.taker_fee << 128) | (p.max_funding_rate << 64) | p.initial_margin_ratio,
        (p.max_long_oi << 128) | p.max_short_oi,
        (p.max_position_size << 128) | p.max_liquidation_size,
    ]
    log MarketParamsSet(market_id=market_id, params=p)


@internal
@view
def _skew_scale(market_id: uint256) -> uint256:
    skew_scale: uint256 = self._params[market_id][0] >> 128
    assert skew_scale != 0, "exchange: unknown market"
    return skew_scale


@internal
@view
def _skew_of(market_id: uint256) -> int256:
    long_oi: uint256 = 0
    short_oi: uint256 = 0
    long_oi, short_oi = self._unpack_oi(self._oi[market_id])
    return convert(long_oi, int256) - convert(short_oi, int256)


@internal
@pure
def _pack_globals(
    insurance_fee_share: uint256,
    protocol_fee_share: uint256,
    keeper_reward_share: uint256,
    keeper_min_reward: uint256,
    paused: bool,
) -> uint256:
    return (
        (insurance_fee_share << INSURANCE_SHARE_SHIFT)
        | (protocol_fee_share << PROTOCOL_SHARE_SHIFT)
        | (keeper_reward_share << KEEPER_SHARE_SHIFT)
        | (keeper_min_reward << 1)
        | convert(paused, uint256)
    )


@internal
@pure
def _unpack_oi(packed: uint256) -> (uint256, uint256):
    return packed >> 128, packed & MASK128


@internal
@pure
def _pack_position(size: int256, snapshot: int256) -> uint256:
    return (convert(size + OFFSET, uint256) << 128) | convert(snapshot + OFFSET, uint256)


@internal
@pure
def _unpack_position(packed: uint256) -> (int256, int256):
    if packed == 0:
        return 0, 0
    return convert(packed >> 128, int256) - OFFSET, convert(packed & MASK128, int256) - OFFSET


@internal
@pure
def _pack_funding(fpu: int256, timestamp: uint256, notional_sum: int256) -> uint256:
    assert fpu > -FUNDING_OFFSET and fpu < FUNDING_OFFSET, "exchange: funding accumulator overflow"
    return (convert(fpu + FUNDING_OFFSET, uint256) << 144) | (timestamp << 104) | self._pack_notional_sum(notional_sum)


@internal
@pure
def _pack_notional_sum(notional_sum: int256) -> uint256:
    assert (
        notional_sum > -NOTIONAL_SUM_OFFSET and notional_sum < NOTIONAL_SUM_OFFSET
    ), "exchange: open notional sum out of range"
    return convert(notional_sum + NOTIONAL_SUM_OFFSET, uint256)


@internal
@pure
def _notional_sum(packed: uint256) -> int256:
    return convert(packed & NOTIONAL_SUM_MASK, int256) - NOTIONAL_SUM_OFFSET


@internal
@pure
def _unpack_funding(packed: uint256) -> (int256, uint256):
    return convert(packed >> 144, int256) - FUNDING_OFFSET, (packed >> 104) & (2**40 - 1)
