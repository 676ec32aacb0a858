"""The ape path: deploy from config/markets.json on ape's embedded chain and trade as a wallet
through the order book (commit, then execute at the next oracle round as a keeper does).

These use ape's pytest plugin (`accounts`, `chain` fixtures) and the compiled project."""

import pytest

from perpdex.config import load_markets, load_order_params
from perpdex.deploy import deploy_local
from perpdex.fixed_point import WAD

BTC = 0
MARKET = 0  # order kind


@pytest.fixture(scope="module")
def deployment(accounts):
    return deploy_local(accounts[0])


def next_round(deployment, owner, chain, market_id: int = BTC) -> int:
    """A keeper's view of the next oracle round: the same answer published a second later."""
    agg = deployment.aggregators[market_id][0]
    chain.pending_timestamp += 1
    agg.update_answer(agg.latestAnswer(), sender=owner)
    return agg.latestRound()


def test_deploy_lists_the_configured_markets_and_wires_the_order_book(deployment):
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
    book = deployment.order_book
    assert deployment.exchange.order_book() == deployment.vault.order_book() == book.address
    assert tuple(book.order_params()) == (1, 3600, WAD // 2, 16)  # the fee: 0.5 USD
    assert tuple(book.order_params()) == load_order_params().as_tuple()


def test_wallet_deposits_orders_and_withdraws(deployment, accounts, chain):
    owner, trader, keeper = accounts[0], accounts[5], accounts[6]
    usdc, vault, exchange, book = deployment.collateral, deployment.vault, deployment.exchange, deployment.order_book
    fee = book.order_params().execution_fee
    usdc.mint(trader, 10_000 * 10**6, sender=owner)
    usdc.approve(vault.address, 2**256 - 1, sender=trader)
    vault.deposit(3, 10_000 * 10**6, sender=trader)
    assert vault.cash(trader, 3) == 10_000 * WAD

    quote = exchange.fill_price(BTC, WAD // 10)
    receipt = book.commit_order(3, BTC, WAD // 10, quote, MARKET, 0, False, 0, sender=trader)
    (committed,) = receipt.decode_logs(book.OrderCommitted)
    assert vault.cash(trader, 3) == 10_000 * WAD - fee and vault.order_escrow_cash() == fee
    # a market order is pending: no withdrawal until it executes
    with pytest.raises(Exception, match="vault: a market order is pending"):
        vault.withdraw(3, 10**6, sender=trader)

    receipt = book.execute_order(committed.order_id, [next_round(deployment, owner, chain)], sender=keeper)
    (executed,) = receipt.decode_logs(book.OrderExecuted)
    assert executed.fill_price == quote and executed.size_delta == WAD // 10
    assert exchange.position(trader, 3, BTC)[:2] == (WAD // 10, quote)
    assert vault.cash(keeper, 0) == fee and vault.order_escrow_cash() == 0

    # beyond the slippage bound: the order is cancelled at execution with the exchange's reason
    receipt = book.commit_order(3, BTC, WAD // 10, quote - 1, MARKET, 0, False, 0, sender=trader)
    (committed,) = receipt.decode_logs(book.OrderCommitted)
    receipt = book.execute_order(committed.order_id, [next_round(deployment, owner, chain)], sender=keeper)
    (cancelled,) = receipt.decode_logs(book.OrderCancelled)
    assert cancelled.reason == "exchange: price beyond acceptable" and cancelled.fee_to == keeper
    assert exchange.position(trader, 3, BTC)[0] == WAD // 10

    receipt = book.commit_order(3, BTC, -(WAD // 10), 0, MARKET, 0, True, 0, sender=trader)
    (committed,) = receipt.decode_logs(book.OrderCommitted)
    book.execute_order(committed.order_id, [next_round(deployment, owner, chain)], sender=keeper)
    assert exchange.position(trader, 3, BTC)[0] == 0
    free = exchange.withdrawable(trader, 3)
    before = usdc.balanceOf(trader)
    vault.withdraw(3, free // 10**12, sender=trader)
    assert usdc.balanceOf(trader) - before == free // 10**12
