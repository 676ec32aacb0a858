# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title LiquidityVault
@custom:contract-name LiquidityVault
@license GNU Affero General Public License v3.0 only
@notice ERC-4626 shares of perpdex's market maker, entered and left through two-step requests
        (the request shape of ERC-7540). The liquidity vault takes the other side of every
        trade; its value is the exchange's `liquidity_vault_value`: its cash in the vault's
        ledger + its -skew at the closing price - its unsettled funding - the outstanding
        uncovered deficits.
        An LP requests a deposit (the tokens wait here, outside the vault's value) or a
        redemption (the shares wait here, still outstanding); a keeper executes the request
        at the first oracle round of every listed market published at least `min_delay`
        after it, at `Exchange.liquidity_vault_value_at` of those rounds' indices, and earns
        the request's execution fee. An LP executor (a role the owner grants, as the ADL
        role) executes from `not_before`; anyone else from `OPEN_EXECUTION_AFTER` later, so
        the flows never depend on the role being alive. While an uncovered deficit is outstanding, deposits are
        priced at the larger and redemptions at the smaller of the value with and without it
        netted. A request that was not executed by its expiry can only be cancelled (by
        anyone, the fee to the canceller, the assets or shares back to the requester); the
        requester cannot withdraw it before (no free option). Shares from an executed deposit
        can neither be transferred nor requested for redemption during `cooldown`.
        The synchronous ERC-4626 functions are closed: `withdraw`/`redeem` revert for
        everyone; `deposit`/`mint` only for the owner, to seed the vault at launch.
        `totalAssets` and `convertTo*` value the vault at the current index (netted);
        `max*` are 0 and `preview*` revert, as ERC-7540 asks of asynchronous flows.
@custom:security Pricing at a round published after the request takes away the atomic
        deposit-push-redeem round trip and any trade on a price known in advance; the closing
        price makes the value insensitive to skew pushes at one index. Share price uses a
        virtual offset (OpenZeppelin's defence against the first-depositor inflation attack).
        Redemptions that would leave open interest above `max_oi_ratio` x the vault's value,
        or exceed its cash, are cancelled at execution with the reason in an event.
        Requested deposit tokens rest in this contract until executed or cancelled (the
        ERC-7540 escrow): they are nobody's cash in the vault's ledger yet.
        Where a flow sits among the trades and liquidations of one second decides whether it
        shares what they book (a deposit before a round's fees shares them, a redemption
        before a bankruptcy's liquidation escapes its loss). The LP executor places flows
        after the round's trades and liquidations; an executor without the role could place
        its own flows first, so it waits `OPEN_EXECUTION_AFTER` (docs/SECURITY.md, finding 9).
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed
from ethereum.ercs import IERC4626
from snekmate.auth import ownable
from snekmate.auth import ownable_2step
from snekmate.tokens import erc20
from snekmate.utils import math

from .interfaces import IExchange
from .interfaces import IIndexOracle
from .interfaces import IVault

implements: IERC4626

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: erc20[ownable := ownable]

exports: (
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.approve,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)


interface IExchangeValue:
    def liquidity_vault_value_at(indices: DynArray[uint256, MAX_MARKETS]) -> int256: view
    def liquidator() -> address: view
    def ORACLE() -> address: view


interface ILiquidatorDeficits:
    def total_uncovered_deficit() -> uint256: view

# ============================================================================================
# CONSTANTS
# ============================================================================================

WAD: constant(uint256) = 10**18
MAX_MARKETS: constant(uint256) = 32
MAX_FEEDS: constant(uint256) = 5
# @notice Longest `min_delay`, in seconds (as the order book's `min_order_delay`).
MAX_MIN_DELAY: public(constant(uint256)) = 600
# @notice Longest `max_age`: with `MAX_COOLDOWN`, the worst redemption queue stays well under
#         the owner's 24-hour timelock, so LPs can leave before a parameter change lands.
MAX_MAX_AGE: public(constant(uint256)) = 12 * 3600
# @notice Longest `cooldown`, in seconds.
MAX_COOLDOWN: public(constant(uint256)) = 3600
# @notice Seconds after a request's `not_before` from which anyone may execute it; before, only
#         an LP executor. Longer than a live keeper takes, shorter than any request lives
#         with the default `max_age`: a dead LP executor delays flows, it never traps them.
OPEN_EXECUTION_AFTER: public(constant(uint256)) = 300
# @notice Highest execution fee, in asset units: sized to a keeper's gas (50 USD of USDC).
MAX_EXECUTION_FEE: public(constant(uint256)) = 50 * 10**6
REASON_SYNC_DEPOSIT: constant(String[96]) = "liquidity vault: deposits are two-step, use request_deposit"
REASON_SYNC_REDEEM: constant(String[96]) = "liquidity vault: redemptions are two-step, use request_redeem"
REASON_PREVIEW: constant(String[96]) = "liquidity vault: two-step flows are priced at execution; see convertToShares"

# request, three words: [0] requester (0..159) | not_before (160..199) | expiry (200..239)
# | redemption (240); [1] receiver (0..159) | fee in asset units (160..255); [2] assets (a
# deposit, asset units) or shares (a redemption). A word 0 of zero: no open request.
NOT_BEFORE_SHIFT: constant(uint256) = 160
EXPIRY_SHIFT: constant(uint256) = 200
REDEEM_BIT: constant(uint256) = 1 << 240
FEE_SHIFT: constant(uint256) = 160
MASK40: constant(uint256) = 2**40 - 1
MASK160: constant(uint256) = 2**160 - 1
# cooldown lock of an LP: shares minted during the cooldown (0..215) | cooldown end (216..255)
LOCK_END_SHIFT: constant(uint256) = 216
LOCK_SHARES_MASK: constant(uint256) = 2**216 - 1
# parameters, one word: min_delay (0..31) | max_age (32..63) | cooldown (64..95) | fee (128..255)

# ============================================================================================
# STRUCTS AND EVENTS
# ============================================================================================

struct LpParams:
    min_delay: uint256  # seconds from a request to the earliest round it executes at
    max_age: uint256  # seconds a request lives; then it can only be cancelled
    cooldown: uint256  # seconds an executed deposit's shares stay in place
    execution_fee: uint256  # asset units, paid with the request, to its executor

struct LpRequest:
    requester: address
    receiver: address
    redemption: bool  # False: a deposit of `amount` assets; True: a redemption of `amount` shares
    amount: uint256
    fee: uint256  # asset units
    not_before: uint256  # earliest publication time of the execution rounds
    expiry: uint256  # no execution from this time on; from then anyone may cancel

event DepositRequested:
    request_id: indexed(uint256)
    requester: indexed(address)
    receiver: indexed(address)
    assets: uint256
    fee: uint256
    not_before: uint256
    expiry: uint256

event RedeemRequested:
    request_id: indexed(uint256)
    requester: indexed(address)
    receiver: indexed(address)
    shares: uint256
    fee: uint256
    not_before: uint256
    expiry: uint256

event DepositExecuted:
    request_id: indexed(uint256)
    receiver: indexed(address)
    executor: indexed(address)
    assets: uint256
    shares: uint256
    total_assets: uint256  # the value the shares were priced at (asset units)
    deficit: uint256  # outstanding uncovered deficit at execution (WAD)
    fee: uint256

event RedeemExecuted:
    request_id: indexed(uint256)
    receiver: indexed(address)
    executor: indexed(address)
    shares: uint256
    assets: uint256
    total_assets: uint256
    deficit: uint256
    fee: uint256

event RequestCancelled:
    request_id: indexed(uint256)
    requester: indexed(address)
    by: indexed(address)
    redemption: bool
    amount: uint256  # assets or shares returned to the requester
    reason: String[96]
    fee: uint256
    fee_to: address

event LpExecutorSet:
    executor: indexed(address)
    allowed: bool

event MaxOiRatioSet:
    max_oi_ratio: uint256

event LpParamsSet:
    min_delay: uint256
    max_age: uint256
    cooldown: uint256
    execution_fee: uint256

# ============================================================================================
# STORAGE
# ============================================================================================

ASSET: immutable(IERC20)
VAULT: immutable(IVault)
EXCHANGE: immutable(IExchange)
ORACLE: immutable(IIndexOracle)
SCALE: immutable(uint256)  # WAD per asset unit
VIRTUAL_SHARES: immutable(uint256)  # 10 ** decimals offset

# open interest notional may be at most this multiple (WAD) of the vault's value after a redemption
max_oi_ratio: public(uint256)
# @notice The id of the latest request (ids start at 1).
last_request_id: public(uint256)
_requests: HashMap[uint256, uint256[3]]
_locks: HashMap[address, uint256]
_params: uint256
# @notice Accounts that may execute requests from their `not_before` (everyone else waits
#         `OPEN_EXECUTION_AFTER` more). Owner.
lp_executor: public(HashMap[address, bool])

# ============================================================================================
# CONSTRUCTOR
# ============================================================================================

@deploy
def __init__(vault: IVault, exchange: IExchange, name: String[25], symbol: String[5]):
    """
    @param vault The perpdex vault (holds the collateral, keeps our cash).
    @param exchange The exchange (values our positions; its oracle prices the requests).
    """
    ownable.__init__()
    ownable_2step.__init__()
    asset: address = staticcall IVault(vault.address).TOKEN()
    asset_decimals: uint8 = staticcall IERC20Detailed(asset).decimals()
    offset: uint8 = 18 - asset_decimals
    erc20.__init__(name, symbol, asset_decimals + offset, name, "1")
    ASSET = IERC20(asset)
    VAULT = vault
    EXCHANGE = exchange
    ORACLE = IIndexOracle(staticcall IExchangeValue(exchange.address).ORACLE())
    SCALE = staticcall vault.token_scale()
    VIRTUAL_SHARES = 10 ** convert(offset, uint256)
    self.max_oi_ratio = 5 * WAD
    self._set_params(LpParams(min_delay=1, max_age=7200, cooldown=900, execution_fee=0))
    # the vault pulls executed deposits from here
    extcall ASSET.approve(vault.address, max_value(uint256))

# ============================================================================================
# LPS: TWO-STEP REQUESTS
# ============================================================================================

@external
def request_deposit(assets: uint256, receiver: address) -> uint256:
    """
    @notice Request a deposit of `assets` tokens for shares to `receiver`. The tokens and the
            execution fee are pulled now (approve this contract for `assets + fee`) and wait
            here; a keeper executes at the first round of every market published `min_delay`
            after now, at that round's share price.
    @param assets Token units to deposit.
    @param receiver Who receives the shares.
    @return The request id.
    """
    assert assets > 0, "liquidity vault: zero amount"
    assert receiver != empty(address), "liquidity vault: zero receiver"
    params: LpParams = self._unpack_params(self._params)
    self._pull(assets + params.execution_fee)
    request_id: uint256 = self._store(msg.sender, receiver, False, assets, params)
    log DepositRequested(
        request_id=request_id,
        requester=msg.sender,
        receiver=receiver,
        assets=assets,
        fee=params.execution_fee,
        not_before=block.timestamp + params.min_delay,
        expiry=block.timestamp + params.max_age,
    )
    return request_id


@external
def request_redeem(shares: uint256, receiver: address) -> uint256:
    """
    @notice Request the redemption of `shares` of the caller for assets to `receiver`. The
            shares are locked here now (still outstanding) and the execution fee is pulled in
            tokens; a keeper executes at the first round of every market published
            `min_delay` after now, at that round's share price.
    @param shares Shares to redeem.
    @param receiver Who receives the assets.
    @return The request id.
    """
    assert shares > 0, "liquidity vault: zero amount"
    assert receiver != empty(address), "liquidity vault: zero receiver"
    self._check_unlocked(msg.sender, shares)
    params: LpParams = self._unpack_params(self._params)
    erc20._transfer(msg.sender, self, shares)
    if params.execution_fee != 0:
        self._pull(params.execution_fee)
    request_id: uint256 = self._store(msg.sender, receiver, True, shares, params)
    log RedeemRequested(
        request_id=request_id,
        requester=msg.sender,
        receiver=receiver,
        shares=shares,
        fee=params.execution_fee,
        not_before=block.timestamp + params.min_delay,
        expiry=block.timestamp + params.max_age,
    )
    return request_id


@external
def cancel_request(request_id: uint256):
    """
    @notice Cancel a request that expired unexecuted: its assets or shares go back to the
            requester, its fee to the caller. Anyone, from the request's expiry on; nobody
            before (a requester who could withdraw after seeing the next price would hold a
            free option).
    @param request_id The request.
    """
    r: LpRequest = self._load(request_id)
    assert block.timestamp >= r.expiry, concat(
        "liquidity vault: a request cannot be cancelled before it expires at ", uint2str(r.expiry)
    )
    self._refund(request_id, r, msg.sender, "expired")

# ============================================================================================
# KEEPERS
# ============================================================================================

@external
def execute_deposit(request_id: uint256, round_ids: DynArray[DynArray[uint80, MAX_FEEDS], MAX_MARKETS]) -> bool:
    """
    @notice Execute a deposit request at `round_ids`: for every listed market (in the
            exchange's `market_ids` order) one round id per feed, the first round published at
            least `min_delay` after the request. Shares are priced at the vault's value at
            those rounds' indices, without netting outstanding deficits (the larger value). A
            deposit the vault must refuse (insolvent, zero shares) is cancelled, the assets
            back to the requester. The caller earns the fee either way. An LP executor from
            the request's `not_before`, anyone from `OPEN_EXECUTION_AFTER` later.
    @param request_id The deposit request.
    @param round_ids Per listed market, its execution round of each feed.
    @return True when executed, False when cancelled.
    """
    r: LpRequest = self._load(request_id)
    assert not r.redemption, "liquidity vault: not a deposit request"
    self._check_executor(r)
    gross: int256 = self._value_at(r, round_ids)
    deficit: uint256 = self._deficit()
    total: uint256 = self._to_asset_units(gross)
    supply: uint256 = erc20.totalSupply
    shares: uint256 = self._to_shares(r.amount, total, False)
    if total == 0 and supply > 0:
        self._refund(request_id, r, msg.sender, "liquidity vault: insolvent, deposits refused")
        return False
    if shares == 0:
        self._refund(request_id, r, msg.sender, "liquidity vault: zero shares")
        return False
    self._delete(request_id)
    received: uint256 = extcall VAULT.deposit_liquidity(r.amount)
    assert received == r.amount, "liquidity vault: token took a transfer fee"
    erc20._mint(r.receiver, shares)
    self._lock(r.receiver, shares)
    self._pay_fee(msg.sender, r.fee)
    log IERC4626.Deposit(sender=r.requester, owner=r.receiver, assets=r.amount, shares=shares)
    log DepositExecuted(
        request_id=request_id,
        receiver=r.receiver,
        executor=msg.sender,
        assets=r.amount,
        shares=shares,
        total_assets=total,
        deficit=deficit,
        fee=r.fee,
    )
    return True


@external
def execute_redeem(request_id: uint256, round_ids: DynArray[DynArray[uint80, MAX_FEEDS], MAX_MARKETS]) -> bool:
    """
    @notice Execute a redemption request at `round_ids` (as `execute_deposit`). Assets are
            priced at the vault's value at those rounds' indices minus the outstanding
            uncovered deficits (the smaller value). A redemption the vault must refuse (zero
            assets, more than its cash or the vault's tokens, open interest above
            `max_oi_ratio` x the value left) is cancelled, the shares back to the requester.
            The caller earns the fee either way.
    @param request_id The redemption request.
    @param round_ids Per listed market, its execution round of each feed.
    @return True when executed, False when cancelled.
    """
    r: LpRequest = self._load(request_id)
    assert r.redemption, "liquidity vault: not a redemption request"
    self._check_executor(r)
    gross: int256 = self._value_at(r, round_ids)
    deficit: uint256 = self._deficit()
    total: uint256 = self._to_asset_units(gross - convert(deficit, int256))
    assets: uint256 = self._to_assets(r.amount, total, False)
    refusal: String[96] = self._redeem_refusal(assets, total)
    if refusal != "":
        self._refund(request_id, r, msg.sender, refusal)
        return False
    self._delete(request_id)
    erc20._burn(self, r.amount)
    extcall VAULT.withdraw_liquidity(r.receiver, assets)
    self._pay_fee(msg.sender, r.fee)
    log IERC4626.Withdraw(sender=r.requester, receiver=r.receiver, owner=r.requester, assets=assets, shares=r.amount)
    log RedeemExecuted(
        request_id=request_id,
        receiver=r.receiver,
        executor=msg.sender,
        shares=r.amount,
        assets=assets,
        total_assets=total,
        deficit=deficit,
        fee=r.fee,
    )
    return True

# ============================================================================================
# VIEWS
# ============================================================================================

@external
@view
def request(request_id: uint256) -> LpRequest:
    """
    @notice An open request (all zero once executed or cancelled: see the events).
    """
    return self._unpack(self._requests[request_id])


@external
@view
def lp_params() -> LpParams:
    """
    @notice (min_delay, max_age, cooldown, execution_fee in asset units).
    """
    return self._unpack_params(self._params)


@external
@view
def locked_shares(owner: address) -> (uint256, uint256):
    """
    @notice Shares of `owner` still in their deposit cooldown, and when it ends (0, 0 if none).
    """
    lock: uint256 = self._locks[owner]
    if block.timestamp >= lock >> LOCK_END_SHIFT:
        return 0, 0
    return lock & LOCK_SHARES_MASK, lock >> LOCK_END_SHIFT


@external
@view
def free_assets() -> uint256:
    """
    @notice Assets that could leave now at the current index: at most the vault's cash, and
            no more than keeps open interest within `max_oi_ratio` x the value left.
    """
    return self._free_assets(self._total_assets())

# ============================================================================================
# ERC-20 (transfers respect the deposit cooldown)
# ============================================================================================

@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @notice ERC-20 transfer; shares in their deposit cooldown cannot move.
    """
    self._check_unlocked(msg.sender, amount)
    erc20._transfer(msg.sender, to, amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    """
    @notice ERC-20 transferFrom; shares in their deposit cooldown cannot move.
    """
    self._check_unlocked(owner, amount)
    erc20._spend_allowance(owner, msg.sender, amount)
    erc20._transfer(owner, to, amount)
    return True

# ============================================================================================
# ERC-4626
# ============================================================================================

@external
@view
def asset() -> address:
    return ASSET.address


@external
@view
def totalAssets() -> uint256:
    """
    @notice The vault's value in asset units at the current index: cash + its -skew at the
            closing price - unsettled funding - outstanding uncovered deficits. Requests are
            priced at their execution rounds instead.
    """
    return self._total_assets()


@external
@view
def convertToShares(assets: uint256) -> uint256:
    """
    @notice Shares `assets` are worth at the current index (an indication: a deposit request
            is priced at its execution round).
    """
    return self._to_shares(assets, self._total_assets(), False)


@external
@view
def convertToAssets(shares: uint256) -> uint256:
    """
    @notice Assets `shares` are worth at the current index (an indication: a redemption
            request is priced at its execution round, deficits netted).
    """
    return self._to_assets(shares, self._total_assets(), False)


@external
@view
def maxDeposit(receiver: address) -> uint256:
    """
    @notice 0: deposits are two-step (`request_deposit`).
    """
    return 0


@external
@view
def maxMint(receiver: address) -> uint256:
    """
    @notice 0: deposits are two-step (`request_deposit`).
    """
    return 0


@external
@view
def maxWithdraw(owner: address) -> uint256:
    """
    @notice 0: redemptions are two-step (`request_redeem`).
    """
    return 0


@external
@view
def maxRedeem(owner: address) -> uint256:
    """
    @notice 0: redemptions are two-step (`request_redeem`).
    """
    return 0


@external
@view
def previewDeposit(assets: uint256) -> uint256:
    raise REASON_PREVIEW


@external
@view
def previewMint(shares: uint256) -> uint256:
    raise REASON_PREVIEW


@external
@view
def previewWithdraw(assets: uint256) -> uint256:
    raise REASON_PREVIEW


@external
@view
def previewRedeem(shares: uint256) -> uint256:
    raise REASON_PREVIEW


@external
def deposit(assets: uint256, receiver: address) -> uint256:
    """
    @notice Seeding only: the owner deposits `assets` at the current index and mints shares to
            `receiver` at once. Everyone else uses `request_deposit`.
    @return Shares minted.
    """
    assert msg.sender == ownable.owner, REASON_SYNC_DEPOSIT
    assert assets > 0, "liquidity vault: zero amount"
    total: uint256 = self._total_assets()
    assert not self._insolvent(total), "liquidity vault: insolvent, deposits refused"
    self._pull(assets)
    received: uint256 = extcall VAULT.deposit_liquidity(assets)
    shares: uint256 = self._to_shares(received, total, False)
    assert shares > 0, "liquidity vault: zero shares"
    erc20._mint(receiver, shares)
    log IERC4626.Deposit(sender=msg.sender, owner=receiver, assets=received, shares=shares)
    return shares


@external
def mint(shares: uint256, receiver: address) -> uint256:
    """
    @notice Seeding only: the owner mints exactly `shares` to `receiver`, paying the assets
            they are worth at the current index (rounded up). Everyone else uses
            `request_deposit`.
    @return Assets paid.
    """
    assert msg.sender == ownable.owner, REASON_SYNC_DEPOSIT
    assert shares > 0, "liquidity vault: zero amount"
    total: uint256 = self._total_assets()
    assert not self._insolvent(total), "liquidity vault: insolvent, deposits refused"
    assets: uint256 = self._to_assets(shares, total, True)
    self._pull(assets)
    received: uint256 = extcall VAULT.deposit_liquidity(assets)
    assert received == assets, "liquidity vault: token took a transfer fee"
    erc20._mint(receiver, shares)
    log IERC4626.Deposit(sender=msg.sender, owner=receiver, assets=assets, shares=shares)
    return assets


@external
def withdraw(assets: uint256, receiver: address, owner: address) -> uint256:
    """
    @notice Closed: redemptions are two-step (`request_redeem`).
    """
    raise REASON_SYNC_REDEEM


@external
def redeem(shares: uint256, receiver: address, owner: address) -> uint256:
    """
    @notice Closed: redemptions are two-step (`request_redeem`).
    """
    raise REASON_SYNC_REDEEM

# ============================================================================================
# ADMIN
# ============================================================================================

@external
def set_max_oi_ratio(max_oi_ratio: uint256):
    """
    @notice Open interest notional may be at most `max_oi_ratio` (WAD) x the vault's value
            after a redemption. Between 0.1x and 100x. Owner.
    """
    ownable._check_owner()
    assert max_oi_ratio >= WAD // 10 and max_oi_ratio <= 100 * WAD, "liquidity vault: ratio out of bounds"
    self.max_oi_ratio = max_oi_ratio
    log MaxOiRatioSet(max_oi_ratio=max_oi_ratio)


@external
def set_lp_executor(executor: address, allowed: bool):
    """
    @notice Grant or revoke the LP executor role: executing requests from their `not_before`
            (everyone else from `OPEN_EXECUTION_AFTER` later). Owner.
    """
    ownable._check_owner()
    self.lp_executor[executor] = allowed
    log LpExecutorSet(executor=executor, allowed=allowed)


@external
def set_lp_params(params: LpParams):
    """
    @notice The request parameters, within their hard bounds: 1 s <= min_delay <= 600 s,
            min_delay < max_age <= 12 h, cooldown <= 1 h, execution_fee <= MAX_EXECUTION_FEE.
            Open requests keep their fee, delay and expiry. Owner.
    """
    ownable._check_owner()
    self._set_params(params)

# ============================================================================================
# INTERNAL: REQUESTS
# ============================================================================================

@internal
def _store(requester: address, receiver: address, redemption: bool, amount: uint256, p: LpParams) -> uint256:
    request_id: uint256 = self.last_request_id + 1
    self.last_request_id = request_id
    word: uint256 = (
        convert(requester, uint256)
        | ((block.timestamp + p.min_delay) << NOT_BEFORE_SHIFT)
        | ((block.timestamp + p.max_age) << EXPIRY_SHIFT)
    )
    if redemption:
        word |= REDEEM_BIT
    self._requests[request_id] = [word, convert(receiver, uint256) | (p.execution_fee << FEE_SHIFT), amount]
    return request_id


@internal
@view
def _check_executor(r: LpRequest):
    """
    @dev An LP executor from `not_before`, anyone from `OPEN_EXECUTION_AFTER` later.
    """
    if self.lp_executor[msg.sender]:
        return
    open_at: uint256 = r.not_before + OPEN_EXECUTION_AFTER
    assert block.timestamp >= open_at, concat(
        "liquidity vault: only an LP executor may execute before ", uint2str(open_at)
    )


@internal
@view
def _load(request_id: uint256) -> LpRequest:
    words: uint256[3] = self._requests[request_id]
    assert words[0] != 0, "liquidity vault: no open request with this id"
    return self._unpack(words)


@internal
@pure
def _unpack(words: uint256[3]) -> LpRequest:
    return LpRequest(
        requester=convert(convert(words[0] & MASK160, uint160), address),
        receiver=convert(convert(words[1] & MASK160, uint160), address),
        redemption=words[0] & REDEEM_BIT != 0,
        amount=words[2],
        fee=words[1] >> FEE_SHIFT,
        not_before=(words[0] >> NOT_BEFORE_SHIFT) & MASK40,
        expiry=(words[0] >> EXPIRY_SHIFT) & MASK40,
    )


@internal
def _delete(request_id: uint256):
    self._requests[request_id] = empty(uint256[3])


@internal
def _refund(request_id: uint256, r: LpRequest, fee_to: address, reason: String[96]):
    """
    @dev Close the request: its assets or shares back to the requester, its fee to `fee_to`.
    """
    self._delete(request_id)
    if r.redemption:
        erc20._transfer(self, r.requester, r.amount)
    else:
        self._push(r.requester, r.amount)
    self._pay_fee(fee_to, r.fee)
    log RequestCancelled(
        request_id=request_id,
        requester=r.requester,
        by=msg.sender,
        redemption=r.redemption,
        amount=r.amount,
        reason=reason,
        fee=r.fee,
        fee_to=fee_to,
    )


@internal
@view
def _value_at(r: LpRequest, round_ids: DynArray[DynArray[uint80, MAX_FEEDS], MAX_MARKETS]) -> int256:
    """
    @dev The vault's value (WAD, deficits not netted) at the named rounds, after checking that
         each is its market's first round published at least `min_delay` after the request.
    """
    assert block.timestamp < r.expiry, "liquidity vault: request expired"
    count: uint256 = staticcall EXCHANGE.market_count()
    assert len(round_ids) == count, concat(
        "liquidity vault: one list of round ids per listed market expected (", uint2str(count), ")"
    )
    indices: DynArray[uint256, MAX_MARKETS] = []
    for i: uint256 in range(count, bound=MAX_MARKETS):
        market_id: uint256 = staticcall EXCHANGE.market_ids(i)
        rp: IIndexOracle.RoundPrice = staticcall ORACLE.round_price(market_id, round_ids[i])
        assert rp.published >= r.not_before, concat(
            "liquidity vault: round of market ", uint2str(market_id), " published before the delay ended at ",
            uint2str(r.not_before)
        )
        assert rp.previous_published < r.not_before, concat(
            "liquidity vault: not the first round of market ", uint2str(market_id), " after the delay"
        )
        indices.append(rp.price)
    return staticcall IExchangeValue(EXCHANGE.address).liquidity_vault_value_at(indices)


@internal
@view
def _deficit() -> uint256:
    liquidator: address = staticcall IExchangeValue(EXCHANGE.address).liquidator()
    if liquidator == empty(address):
        return 0
    return staticcall ILiquidatorDeficits(liquidator).total_uncovered_deficit()


@internal
@view
def _redeem_refusal(assets: uint256, total: uint256) -> String[96]:
    """
    @dev Why the vault cannot pay `assets` now ("" when it can).
    """
    if assets == 0:
        return "liquidity vault: zero assets"
    cash: int256 = staticcall VAULT.liquidity_cash()
    if convert(assets * SCALE, int256) > cash:
        return "vault: insufficient liquidity cash"
    if assets > staticcall ASSET.balanceOf(VAULT.address):
        return "vault: insufficient token balance"
    oi: uint256 = staticcall EXCHANGE.open_interest_notional()
    if oi * WAD > self.max_oi_ratio * (total - min(total, assets)) * SCALE:
        return "liquidity vault: open interest cap"
    return ""

# ============================================================================================
# INTERNAL: COOLDOWN
# ============================================================================================

@internal
def _lock(receiver: address, shares: uint256):
    """
    @dev Freshly minted shares stay in place for `cooldown` (earlier shares still locked stay
         locked until the new end). Only the receiver's new shares are locked, so a deposit
         made for someone else cannot freeze what they already hold.
    """
    cooldown: uint256 = (self._params >> 64) & 2**32 - 1
    if cooldown == 0:
        return
    lock: uint256 = self._locks[receiver]
    locked: uint256 = shares
    if block.timestamp < lock >> LOCK_END_SHIFT:
        locked += lock & LOCK_SHARES_MASK
    self._locks[receiver] = min(locked, LOCK_SHARES_MASK) | ((block.timestamp + cooldown) << LOCK_END_SHIFT)


@internal
@view
def _check_unlocked(owner: address, amount: uint256):
    lock: uint256 = self._locks[owner]
    end: uint256 = lock >> LOCK_END_SHIFT
    if block.timestamp >= end:
        return
    locked: uint256 = lock & LOCK_SHARES_MASK
    assert erc20.balanceOf[owner] >= amount + locked, concat(
        "liquidity vault: ", uint2str(locked), " shares from a recent deposit are locked until ", uint2str(end)
    )

# ============================================================================================
# INTERNAL: PARAMETERS
# ============================================================================================

@internal
def _set_params(p: LpParams):
    assert p.min_delay >= 1 and p.min_delay <= MAX_MIN_DELAY, "liquidity vault: min delay out of bounds"
    assert p.max_age > p.min_delay and p.max_age <= MAX_MAX_AGE, "liquidity vault: max age out of bounds"
    assert p.cooldown <= MAX_COOLDOWN, "liquidity vault: cooldown out of bounds"
    assert p.execution_fee <= MAX_EXECUTION_FEE, "liquidity vault: execution fee above the cap"
    self._params = p.min_delay | (p.max_age << 32) | (p.cooldown << 64) | (p.execution_fee << 128)
    log LpParamsSet(min_delay=p.min_delay, max_age=p.max_age, cooldown=p.cooldown, execution_fee=p.execution_fee)


@internal
@pure
def _unpack_params(params: uint256) -> LpParams:
    return LpParams(
        min_delay=params & 2**32 - 1,
        max_age=(params >> 32) & 2**32 - 1,
        cooldown=(params >> 64) & 2**32 - 1,
        execution_fee=params >> 128,
    )

# ============================================================================================
# INTERNAL: SHARES AND TOKENS
# ============================================================================================

@internal
@view
def _total_assets() -> uint256:
    return self._to_asset_units(staticcall EXCHANGE.liquidity_vault_value())


@internal
@view
def _to_asset_units(wad: int256) -> uint256:
    if wad <= 0:
        return 0
    return convert(wad, uint256) // SCALE


@internal
@view
def _insolvent(total: uint256) -> bool:
    """
    @dev Shares are outstanding but worth nothing: a deposit now would buy the existing LPs'
         claim on any recovery for nothing (and the share price math would explode).
    """
    return total == 0 and erc20.totalSupply > 0


@internal
@view
def _to_shares(assets: uint256, total: uint256, roundup: bool) -> uint256:
    return math._mul_div(assets, erc20.totalSupply + VIRTUAL_SHARES, total + 1, roundup)


@internal
@view
def _to_assets(shares: uint256, total: uint256, roundup: bool) -> uint256:
    return math._mul_div(shares, total + 1, erc20.totalSupply + VIRTUAL_SHARES, roundup)


@internal
@view
def _free_assets(total: uint256) -> uint256:
    """
    @dev Assets that can leave: at most the vault's cash, and no more than keeps open
         interest within max_oi_ratio x the remaining value.
    """
    cash: int256 = staticcall VAULT.liquidity_cash()
    if cash <= 0:
        return 0
    free: uint256 = convert(cash, uint256) // SCALE
    oi: uint256 = staticcall EXCHANGE.open_interest_notional()
    locked: uint256 = math._mul_div(oi, WAD, self.max_oi_ratio * SCALE, True)
    if locked >= total:
        return 0
    return min(free, total - locked)


@internal
def _pull(amount: uint256):
    """
    @dev `amount` tokens from the caller to here; exactly that much must arrive.
    """
    before: uint256 = staticcall ASSET.balanceOf(self)
    assert extcall ASSET.transferFrom(msg.sender, self, amount, default_return_value=True), "liquidity vault: transfer failed"
    assert staticcall ASSET.balanceOf(self) - before == amount, "liquidity vault: token took a transfer fee"


@internal
def _push(receiver: address, amount: uint256):
    assert extcall ASSET.transfer(receiver, amount, default_return_value=True), "liquidity vault: transfer failed"


@internal
def _pay_fee(payee: address, fee: uint256):
    if fee != 0:
        self._push(payee, fee)
