# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title MockUSDC
@custom:contract-name MockUSDC
@license GNU Affero General Public License v3.0 only
@notice A USD stablecoin for devnets and tests (snekmate ERC-20, configurable decimals).
        Minters (the deployer first) mint; `faucet` gives anyone up to 1,000,000 tokens per
        call on a devnet. Never deploy this on a real network.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: erc20.__interface__

FAUCET_CAP: constant(uint256) = 1_000_000


@deploy
def __init__(name: String[25], symbol: String[5], decimals: uint8):
    ownable.__init__()
    erc20.__init__(name, symbol, decimals, name, "1")


@external
def faucet(amount: uint256):
    """
    @notice Mint up to 1,000,000 whole tokens to the caller (devnet only).
    """
    assert amount <= FAUCET_CAP * 10 ** convert(erc20.decimals, uint256), "mock: faucet cap"
    erc20._mint(msg.sender, amount)
