"""The ape path: deploy from config/markets.json on ape's embedded chain and trade as a wallet.

These use ape's pytest plugin (`accounts`, `chain` fixtures) and the compiled project."""

import pytest

from perpdex.config import load_markets
from perpdex.deploy import deploy_local
from perpdex.fixed_point import WAD


@pytest.fixture(scope="module")
def deployment(accounts):
    return deploy_local(accounts[0])


def test_deploy_lists_the_configured_markets(deployment):
    markets, globals_ = load_markets()
    assert deployment.exchange.market_count() == len(markets)
    for m in markets:
        assert deployment.exchange.market_symbol(m.id) == m.symbol
        onchain = deployment.exchange.market_params(m.id)
        assert onchain.skew_scale == m.params.skew_scale
        assert onchain.initial_margin_ratio == m.params.initial_margin_ratio
        assert deployment.exchange.index_price(m.id) == int(m.initial_price) * WAD
    assert deployment.exchange.insurance_fee_share() == globals_.insurance_fee_share
    assert deployment.vault.exchange() == deployment.exchange.address
    assert deployment.vault.liquidity_vault() == deployment.liquidity_vault.address


def test_wallet_deposits_trades_and_withdraws(deployment, accounts):
    owner, trader = accounts[0], accounts[5]
    usdc, vault, exchange = deployment.collateral, deployment.vault, deployment.exchange
    usdc.mint(trader, 10_000 * 10**6, sender=owner)
    usdc.approve(vault.address, 2**256 - 1, sender=trader)
    vault.deposit(3, 10_000 * 10**6, sender=trader)
    assert vault.cash(trader, 3) == 10_000 * WAD

    quote = exchange.fill_price(0, WAD // 10)
    receipt = exchange.trade(3, 0, WAD // 10, quote, sender=trader)
    (event,) = receipt.decode_logs(exchange.Trade)
    assert event.fill_price == quote
    assert event.new_size == WAD // 10
    size, entry, _, _ = exchange.position(trader, 3, 0)
    assert (size, entry) == (WAD // 10, quote)

    # beyond the slippage bound: the wallet sees the reason
    with pytest.raises(Exception, match="exchange: price beyond acceptable"):
        exchange.trade(3, 0, WAD // 10, quote - 1, sender=trader)

    exchange.trade(3, 0, -(WAD // 10), 0, sender=trader)
    free = exchange.withdrawable(trader, 3)
    before = usdc.balanceOf(trader)
    vault.withdraw(3, free // 10**12, sender=trader)
    assert usdc.balanceOf(trader) - before == free // 10**12
