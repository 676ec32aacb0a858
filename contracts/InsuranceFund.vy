# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title InsuranceFund
@custom:contract-name InsuranceFund
@license GNU Affero General Public License v3.0 only
@notice The face of perpdex's insurance fund. Its money is a cash balance in the vault's
        ledger: the insurance share of every trading fee, liquidation penalties and rounding
        dust flow in there; the liquidator takes bad debt out. Anyone can donate; the owner
        can withdraw only the surplus above `target`.
@custom:security Holds no tokens between transactions: donations pass through to the vault.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from .interfaces import IVault

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)

event Donation:
    donor: indexed(address)
    amount: uint256  # token units received

event SurplusWithdrawn:
    receiver: indexed(address)
    amount: uint256
    balance_after: int256

event TargetSet:
    target: uint256

VAULT: public(immutable(IVault))
TOKEN: immutable(IERC20)
SCALE: immutable(uint256)

# WAD: the owner may only withdraw what the fund holds above this
target: public(uint256)


@deploy
def __init__(vault: IVault, target: uint256):
    """
    @param vault The perpdex vault keeping the fund's cash.
    @param target Balance (WAD) below which the owner cannot withdraw.
    """
    ownable.__init__()
    ownable_2step.__init__()
    VAULT = vault
    TOKEN = IERC20(staticcall vault.TOKEN())
    SCALE = staticcall vault.token_scale()
    self.target = target
    extcall TOKEN.approve(vault.address, max_value(uint256))


@external
@view
def fund_balance() -> int256:
    """
    @notice The fund's cash in the vault's ledger (WAD).
    """
    return staticcall VAULT.insurance_cash()


@external
@view
def surplus() -> uint256:
    """
    @notice What the owner could withdraw now (token units).
    """
    cash: int256 = staticcall VAULT.insurance_cash()
    if cash <= convert(self.target, int256):
        return 0
    return (convert(cash, uint256) - self.target) // SCALE


@external
def donate(amount: uint256) -> uint256:
    """
    @notice Give `amount` collateral tokens to the insurance fund (approve this contract).
    @return Token units received.
    """
    assert amount > 0, "insurance fund: zero amount"
    before: uint256 = staticcall TOKEN.balanceOf(self)
    assert extcall TOKEN.transferFrom(msg.sender, self, amount, default_return_value=True), "insurance fund: transfer failed"
    arrived: uint256 = staticcall TOKEN.balanceOf(self) - before
    received: uint256 = extcall VAULT.deposit_insurance(arrived)
    log Donation(donor=msg.sender, amount=received)
    return received


@external
def withdraw_surplus(receiver: address, amount: uint256):
    """
    @notice Withdraw `amount` tokens of the surplus above `target`. Owner.
    """
    ownable._check_owner()
    assert amount > 0, "insurance fund: zero amount"
    cash: int256 = staticcall VAULT.insurance_cash()
    assert cash - convert(amount * SCALE, int256) >= convert(self.target, int256), "insurance fund: below target"
    extcall VAULT.withdraw_insurance(receiver, amount)
    log SurplusWithdrawn(receiver=receiver, amount=amount, balance_after=cash - convert(amount * SCALE, int256))


@external
def set_target(target: uint256):
    """
    @notice The balance (WAD) the fund keeps before the owner can take a surplus. Owner.
    """
    ownable._check_owner()
    self.target = target
    log TargetSet(target=target)
