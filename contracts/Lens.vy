# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title Lens
@custom:contract-name Lens
@license GNU Affero General Public License v3.0 only
@notice Read-only batch views for keepers, wallets and dashboards: every market's state, or
        many accounts' cash and raw positions, in one eth_call. Holds no state and no funds;
        nothing calls it on-chain.
"""

from .interfaces import IExchange
from .interfaces import IVault

MAX_MARKETS: constant(uint256) = 32
MAX_ACCOUNTS: constant(uint256) = 500

struct MarketSnapshot:
    market_id: uint256
    index_price: uint256
    long_oi: uint256
    short_oi: uint256
    funding_per_unit: int256  # stored (as of the last touch)
    last_funding_time: uint256
    open_notional_sum: int256
    params: IExchange.MarketParams

struct PositionSnapshot:
    market_id: uint256
    size: int256
    open_notional: int256
    funding_snapshot: int256

struct AccountSnapshot:
    owner: address
    sub_account: uint256
    cash: int256
    positions: DynArray[PositionSnapshot, MAX_MARKETS]

struct AccountKey:
    owner: address
    sub_account: uint256

EXCHANGE: public(immutable(IExchange))
VAULT: public(immutable(IVault))


@deploy
def __init__(exchange: IExchange, vault: IVault):
    EXCHANGE = exchange
    VAULT = vault


@external
@view
def markets() -> DynArray[MarketSnapshot, MAX_MARKETS]:
    """
    @notice Every listed market: index, open interest, funding accumulator, cost-basis sum
            and parameters. Reverts with the oracle's reason if a market has no valid price.
    """
    out: DynArray[MarketSnapshot, MAX_MARKETS] = []
    for i: uint256 in range(MAX_MARKETS):
        if i >= staticcall EXCHANGE.market_count():
            break
        market_id: uint256 = staticcall EXCHANGE.market_ids(i)
        long_oi: uint256 = 0
        short_oi: uint256 = 0
        long_oi, short_oi = staticcall EXCHANGE.open_interest(market_id)
        fpu: int256 = 0
        last: uint256 = 0
        fpu, last = staticcall EXCHANGE.funding_state(market_id)
        out.append(
            MarketSnapshot(
                market_id=market_id,
                index_price=staticcall EXCHANGE.index_price(market_id),
                long_oi=long_oi,
                short_oi=short_oi,
                funding_per_unit=fpu,
                last_funding_time=last,
                open_notional_sum=staticcall EXCHANGE.open_notional_sum(market_id),
                params=staticcall EXCHANGE.market_params(market_id),
            )
        )
    return out


@external
@view
def accounts(keys: DynArray[AccountKey, MAX_ACCOUNTS]) -> DynArray[AccountSnapshot, MAX_ACCOUNTS]:
    """
    @notice Cash and raw positions (size, open notional, funding snapshot) of many accounts.
            Needs no oracle.
    """
    out: DynArray[AccountSnapshot, MAX_ACCOUNTS] = []
    for key: AccountKey in keys:
        cash: int256 = 0
        mask: uint256 = 0
        cash, mask = staticcall VAULT.account(key.owner, key.sub_account)
        positions: DynArray[PositionSnapshot, MAX_MARKETS] = []
        for market_id: uint256 in range(MAX_MARKETS):
            if mask >> market_id == 0:
                break
            if (mask >> market_id) & 1 == 0:
                continue
            size: int256 = 0
            basis: int256 = 0
            snapshot: int256 = 0
            size, basis, snapshot = staticcall EXCHANGE.position_state(key.owner, key.sub_account, market_id)
            positions.append(
                PositionSnapshot(market_id=market_id, size=size, open_notional=basis, funding_snapshot=snapshot)
            )
        out.append(AccountSnapshot(owner=key.owner, sub_account=key.sub_account, cash=cash, positions=positions))
    return out
