# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title LiquidityVault
@custom:contract-name LiquidityVault
@license GNU Affero General Public License v3.0 only
@notice ERC-4626 shares of perpdex's market maker. The liquidity vault takes the other side
        of every trade; its assets are its cash in the vault's ledger plus its unrealized PnL
        on -skew and its unsettled funding over all markets (computed by the exchange in
        O(number of markets)). The collateral never rests here: deposits pass straight on to
        the vault in the same transaction and redemptions are paid by the vault.
@custom:security Share price uses a virtual offset (OpenZeppelin's defence against the
        first-depositor inflation attack). Redemptions are refused when they would leave open
        interest above `max_oi_ratio` x the vault's value, or exceed its cash.
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed
from ethereum.ercs import IERC4626
from snekmate.auth import ownable
from snekmate.auth import ownable_2step
from snekmate.tokens import erc20
from snekmate.utils import math

from .interfaces import IExchange
from .interfaces import IVault

implements: IERC4626

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: erc20[ownable := ownable]

exports: (
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.transferFrom,
    erc20.approve,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)

# ============================================================================================
# EVENTS AND STORAGE
# ============================================================================================

event MaxOiRatioSet:
    max_oi_ratio: uint256

WAD: constant(uint256) = 10**18

ASSET: immutable(IERC20)
VAULT: immutable(IVault)
EXCHANGE: immutable(IExchange)
SCALE: immutable(uint256)  # WAD per asset unit
VIRTUAL_SHARES: immutable(uint256)  # 10 ** decimals offset

# open interest notional may be at most this multiple (WAD) of the vault's value after a redemption
max_oi_ratio: public(uint256)

# ============================================================================================
# CONSTRUCTOR
# ============================================================================================

@deploy
def __init__(vault: IVault, exchange: IExchange, name: String[25], symbol: String[5]):
    """
    @param vault The perpdex vault (holds the collateral, keeps our cash).
    @param exchange The exchange (values our positions).
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
    SCALE = staticcall vault.token_scale()
    VIRTUAL_SHARES = 10 ** convert(offset, uint256)
    self.max_oi_ratio = 5 * WAD
    # the vault pulls deposits from here within the same transaction
    extcall ASSET.approve(vault.address, max_value(uint256))

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
    @notice The vault's value in asset units: cash + unrealized PnL - unsettled funding.
    """
    return self._total_assets()


@external
@view
def convertToShares(assets: uint256) -> uint256:
    return self._to_shares(assets, self._total_assets(), False)


@external
@view
def convertToAssets(shares: uint256) -> uint256:
    return self._to_assets(shares, self._total_assets(), False)


@external
@view
def maxDeposit(receiver: address) -> uint256:
    """
    @notice Unlimited, except 0 while the vault is insolvent (shares outstanding, no value).
    """
    if self._insolvent(self._total_assets()):
        return 0
    return max_value(uint256)


@external
@view
def previewDeposit(assets: uint256) -> uint256:
    return self._to_shares(assets, self._total_assets(), False)


@external
@view
def maxMint(receiver: address) -> uint256:
    if self._insolvent(self._total_assets()):
        return 0
    return max_value(uint256)


@external
@view
def previewMint(shares: uint256) -> uint256:
    return self._to_assets(shares, self._total_assets(), True)


@external
@view
def maxWithdraw(owner: address) -> uint256:
    """
    @notice The most `owner` can withdraw now: its assets, capped by the vault's free cash and
            the open-interest cap.
    """
    total: uint256 = self._total_assets()
    return min(self._to_assets(erc20.balanceOf[owner], total, False), self._free_assets(total))


@external
@view
def previewWithdraw(assets: uint256) -> uint256:
    return self._to_shares(assets, self._total_assets(), True)


@external
@view
def maxRedeem(owner: address) -> uint256:
    total: uint256 = self._total_assets()
    return min(erc20.balanceOf[owner], self._to_shares(self._free_assets(total), total, False))


@external
@view
def previewRedeem(shares: uint256) -> uint256:
    return self._to_assets(shares, self._total_assets(), False)


@external
def deposit(assets: uint256, receiver: address) -> uint256:
    """
    @notice Deposit `assets` collateral tokens and mint shares to `receiver`.
    @return Shares minted.
    """
    assert assets > 0, "liquidity vault: zero amount"
    total: uint256 = self._total_assets()
    assert not self._insolvent(total), "liquidity vault: insolvent, deposits refused"
    received: uint256 = self._pull(assets)
    shares: uint256 = self._to_shares(received, total, False)
    assert shares > 0, "liquidity vault: zero shares"
    erc20._mint(receiver, shares)
    log IERC4626.Deposit(sender=msg.sender, owner=receiver, assets=received, shares=shares)
    return shares


@external
def mint(shares: uint256, receiver: address) -> uint256:
    """
    @notice Mint exactly `shares` to `receiver`, paying the assets they are worth (rounded up).
    @return Assets paid.
    """
    assert shares > 0, "liquidity vault: zero amount"
    total: uint256 = self._total_assets()
    assert not self._insolvent(total), "liquidity vault: insolvent, deposits refused"
    assets: uint256 = self._to_assets(shares, total, True)
    received: uint256 = self._pull(assets)
    assert received == assets, "liquidity vault: token took a transfer fee"
    erc20._mint(receiver, shares)
    log IERC4626.Deposit(sender=msg.sender, owner=receiver, assets=assets, shares=shares)
    return assets


@external
def withdraw(assets: uint256, receiver: address, owner: address) -> uint256:
    """
    @notice Burn `owner`'s shares worth `assets` (rounded up) and pay `assets` to `receiver`.
    @return Shares burned.
    """
    assert assets > 0, "liquidity vault: zero amount"
    total: uint256 = self._total_assets()
    shares: uint256 = self._to_shares(assets, total, True)
    self._exit(owner, receiver, assets, shares, total)
    return shares


@external
def redeem(shares: uint256, receiver: address, owner: address) -> uint256:
    """
    @notice Burn `shares` of `owner` and pay what they are worth (rounded down) to `receiver`.
    @return Assets paid.
    """
    assert shares > 0, "liquidity vault: zero amount"
    total: uint256 = self._total_assets()
    assets: uint256 = self._to_assets(shares, total, False)
    assert assets > 0, "liquidity vault: zero assets"
    self._exit(owner, receiver, assets, shares, total)
    return assets

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

# ============================================================================================
# INTERNAL
# ============================================================================================

@internal
@view
def _total_assets() -> uint256:
    value: int256 = staticcall EXCHANGE.liquidity_vault_value()
    if value <= 0:
        return 0
    return convert(value, uint256) // SCALE


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
def _pull(assets: uint256) -> uint256:
    """
    @dev Collateral passes through: LP -> here -> vault, in this transaction.
    """
    before: uint256 = staticcall ASSET.balanceOf(self)
    assert extcall ASSET.transferFrom(msg.sender, self, assets, default_return_value=True), "liquidity vault: transfer failed"
    arrived: uint256 = staticcall ASSET.balanceOf(self) - before
    return extcall VAULT.deposit_liquidity(arrived)


@internal
def _exit(owner: address, receiver: address, assets: uint256, shares: uint256, total: uint256):
    if msg.sender != owner:
        erc20._spend_allowance(owner, msg.sender, shares)
    erc20._burn(owner, shares)
    extcall VAULT.withdraw_liquidity(receiver, assets)
    oi: uint256 = staticcall EXCHANGE.open_interest_notional()
    remaining: uint256 = total - min(total, assets)
    assert oi * WAD <= self.max_oi_ratio * remaining * SCALE, "liquidity vault: open interest cap"
    log IERC4626.Withdraw(sender=msg.sender, receiver=receiver, owner=owner, assets=assets, shares=shares)
