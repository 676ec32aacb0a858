"""The ape path: deploy from config/markets.json on ape's embedded chain as `ape run deploy`
does (every contract handed over to the timelock), trade as a wallet through the order book
(commit, then execute at the next oracle round as a keeper does), and change a parameter
through the timelock.

These use ape's pytest plugin (`accounts`, `chain` fixtures) and the compiled project."""

import pytest

from perpdex.config import load_markets, load_order_params
from perpdex.deploy import LOCAL_TIMELOCK_DELAY, OWNED_CONTRACTS, deploy_local
from perpdex.fixed_point import WAD
from perpdex.governance import (
    Governance,
    GovernanceError,
    describe_call,
    find_operation,
    market_params_call,
    scheduled_operations,
)

BTC = 0
MARKET = 0  # order kind


@pytest.fixture(scope="module")
def deployment(accounts):
    return deploy_local(accounts[0], timelock_delay=LOCAL_TIMELOCK_DELAY, seed_liquidity_usd=1_000_000)


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


def test_every_contract_is_owned_by_the_timelock(deployment, accounts):
    deployer = accounts[0]
    timelock = deployment.timelock
    for name in OWNED_CONTRACTS:
        assert getattr(deployment, name).owner() == timelock.address, name
        assert getattr(deployment, name).pending_owner() == "0x" + "00" * 20, name
    assert timelock.get_minimum_delay() == LOCAL_TIMELOCK_DELAY
    assert timelock.hasRole(timelock.PROPOSER_ROLE(), deployer) and timelock.hasRole(timelock.EXECUTOR_ROLE(), deployer)
    assert not timelock.hasRole(timelock.DEFAULT_ADMIN_ROLE(), deployer)
    with pytest.raises(Exception, match="ownable: caller is not the owner"):
        deployment.exchange.set_global_params(0, 0, 0, WAD // 2, sender=deployer)


def test_a_scheduled_change_executes_after_the_delay(deployment, accounts, chain):
    """What `ape run governance market-params BTC-USD maintenance_margin_ratio=0.03` and
    `ape run governance execute <id>` do, on the local network's 2 s delay."""
    proposer, outsider = accounts[0], accounts[7]
    exchange, timelock = deployment.exchange, deployment.timelock
    before = exchange.market_params(BTC)
    gov = Governance(timelock, proposer, chain)
    call = market_params_call(exchange, BTC, {"maintenance_margin_ratio": 3 * WAD // 100})
    op = gov.operation([call])
    receipt = gov.schedule(op)
    (event,) = receipt.decode_logs(timelock.CallScheduled)
    assert bytes(event.id) == op.id and event.delay == LOCAL_TIMELOCK_DELAY
    assert bytes(event.payload) == call.payload and event.target == exchange.address

    # not before the delay: refused without sending, and the contract refuses too
    with pytest.raises(GovernanceError, match="is waiting until"):
        gov.execute(op)
    with pytest.raises(Exception, match="timelock_controller: operation is not ready"):
        timelock.execute(*op.args(), sender=proposer)
    assert exchange.market_params(BTC).maintenance_margin_ratio == before.maintenance_margin_ratio

    # an operator finds it again from its id alone, readable
    found = find_operation(timelock, "0x" + op.id.hex(), deployment.block)
    assert found == op and op.id in scheduled_operations(timelock, deployment.block)
    assert describe_call(found.calls[0], deployment.contracts).startswith("exchange.set_market_params(market_id=0")

    gov.wait(op)
    with pytest.raises(Exception, match="access_control: account is missing role"):
        timelock.execute(*op.args(), sender=outsider)
    gov.execute(op)
    after = exchange.market_params(BTC)
    assert after.maintenance_margin_ratio == 3 * WAD // 100
    assert after.initial_margin_ratio == before.initial_margin_ratio  # the other fields kept
    assert gov.state(op) == "done"


def test_ape_finds_every_contract_compiled_by_make_compile(monkeypatch):
    """perpdex/build.py writes ape's manifest: ape's project loads every contract from it and
    compiles nothing (ape-vyper is not called)."""
    from ape import project

    def compile_again(*args, **kwargs):
        raise AssertionError(f"ape compiled again: {args}")

    monkeypatch.setattr(type(project.compiler_manager), "compile", compile_again)
    contracts = project.load_contracts()
    assert {"Exchange", "OrderBook", "Vault", "Liquidator", "LiquidityVault", "Timelock", "Lens"} <= set(contracts)
