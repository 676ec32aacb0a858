"""What the keeper tests on ape's embedded chain share: the deployment, the roles, and trading
through the order book as any trader and keeper do (commit a market order, a new oracle round,
execute it at that round).

config/markets.json: 4 % initial and 2 % maintenance margin, 0.5 % penalty, a 5 USD keeper
floor; orders: 1 s delay, one-hour maximum age, a 0.5 USD execution fee."""

import logging

import pytest

from perpdex.deploy import FEED_DECIMALS, deploy_local
from perpdex.fixed_point import WAD
from perpdex.keeper import Keeper
from perpdex.orders import KIND_MARKET

BTC, ETH = 0, 1
USDC = 10**6
KEEPER_FLOOR = 5 * WAD
SETUP_EXECUTOR = 8  # the test account that executes the setup trades (a third party's keeper)


@pytest.fixture(scope="module")
def world(accounts, chain):
    owner, lp = accounts[0], accounts[3]
    d = deploy_local(owner)
    ensure_order_book(d, owner)
    d.start_block = chain.blocks.head.number
    fund(d, owner, owner, 1_000_000)  # the owner seeds the liquidity vault for the LP
    d.collateral.approve(d.liquidity_vault.address, 2**256 - 1, sender=owner)
    d.liquidity_vault.deposit(1_000_000 * USDC, lp, sender=owner)
    return d


@pytest.fixture
def owner(accounts):
    return accounts[0]


@pytest.fixture
def keeper_account(accounts):
    return accounts[1]


@pytest.fixture
def competitor(accounts):
    return accounts[2]


def ensure_order_book(d, owner) -> None:
    """Deployments made before the order book existed: deploy and wire one."""
    if getattr(d, "order_book", None) is not None:
        return
    from ape import project

    from perpdex.config import load_order_params

    d.order_book = project.OrderBook.deploy(
        d.exchange.address, d.vault.address, d.oracle.address, load_order_params().as_tuple(), sender=owner
    )
    d.exchange.set_order_book(d.order_book.address, sender=owner)
    d.vault.set_order_book(d.order_book.address, sender=owner)


def fund(d, owner, who, usd: int) -> None:
    d.collateral.mint(who, usd * USDC, sender=owner)
    d.collateral.approve(d.vault.address, 2**256 - 1, sender=who)


def deposit(d, owner, who, sub: int, usd: int) -> None:
    fund(d, owner, who, usd)
    d.vault.deposit(sub, usd * USDC, sender=who)


def commit(d, who, sub: int, market: int, size: int, kind: int = KIND_MARKET, trigger: int = 0,
           acceptable: int | None = None, expiry: int = 0) -> int:
    """`commit_order`; the order id."""
    if acceptable is None:
        acceptable = 2**256 - 1 if size > 0 else 0
    receipt = d.order_book.commit_order(sub, market, size, acceptable, kind, trigger, False, expiry, sender=who)
    (event,) = receipt.decode_logs(d.order_book.OrderCommitted)
    return event.order_id


def latest_round(d, market: int) -> int:
    return d.aggregators[market][0].latestRoundData()[0]


def trade(d, owner, who, sub: int, market: int, size: int, executor) -> None:
    """A market order filled at the current price: committed, a round published after its delay
    (the same answer again), executed at that round by `executor`."""
    order_id = commit(d, who, sub, market, size)
    agg = d.aggregators[market][0]
    agg.update_answer(agg.latestAnswer(), sender=owner)
    receipt = d.order_book.execute_order(order_id, [latest_round(d, market)], sender=executor)
    assert receipt.decode_logs(d.order_book.OrderExecuted), f"order of {who} not filled"


def open_position(d, owner, who, sub: int, market: int, size: int, collateral_usd: int, executor=None) -> tuple:
    from ape import accounts

    deposit(d, owner, who, sub, collateral_usd)
    trade(d, owner, who, sub, market, size, executor or accounts.test_accounts[SETUP_EXECUTOR])
    return (who.address, sub)


def set_price(d, owner, market: int, usd: float) -> int:
    """Publish a new round; its round id."""
    d.aggregators[market][0].update_answer(int(usd * 10**FEED_DECIMALS), sender=owner)
    return latest_round(d, market)


def size_of(d, key, market: int = BTC) -> int:
    return d.exchange.position_state(key[0], key[1], market)[0]


def make_keeper(d, account, tmp_path, name: str = "keeper.json", **kwargs) -> Keeper:
    return Keeper(d, account, tmp_path / name, start_block=d.start_block, **kwargs)


def events(caplog, name: str) -> list:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def liquidations(d, chain) -> list:
    return list(d.liquidator.Liquidation.range(d.start_block, chain.blocks.head.number + 1))


def watch(caplog) -> None:
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
