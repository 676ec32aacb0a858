"""The keeper executes and cancels orders (perpdex.keeper) on ape's embedded chain.

Orders: 1 s delay, one-hour maximum age, a 0.5 USD execution fee (config/markets.json). Each
block on the embedded chain is a second after the previous one, so a round published in the
block after a commit is the order's first round. Every test starts from the module's
deployment (ape reverts the chain after each)."""

import dataclasses
import json
import logging

from keeper_world import (  # noqa: F401 (fixtures)
    BTC,
    commit,
    trade,
    competitor,
    deposit,
    events,
    keeper_account,
    make_keeper,
    open_position,
    owner,
    set_price,
    size_of,
    world,
)

from perpdex.fixed_point import WAD
from perpdex.keeper import Keeper
from perpdex.orders import KIND_LIMIT, KIND_STOP_LOSS, STATE_CANCELLED, STATE_EXECUTED, STATE_OPEN


def fee_of(d) -> int:
    return d.order_book.order_params().execution_fee


def executions(d, chain, start: int) -> list:
    return list(d.order_book.OrderExecuted.range(start, chain.blocks.head.number + 1))


def cancellations(d, chain, start: int) -> list:
    return list(d.order_book.OrderCancelled.range(start, chain.blocks.head.number + 1))


def test_a_market_order_is_executed_at_the_first_round_after_its_delay(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d, trader = world, accounts[4]
    deposit(d, owner, trader, 0, 10_000)
    keeper = make_keeper(d, keeper_account, tmp_path)
    start = chain.blocks.head.number
    order_id = commit(d, trader, 0, BTC, WAD // 2)
    nonce = keeper_account.nonce
    report = keeper.run_once()  # no round published since the commit: it waits
    assert (report.orders, report.orders_executed, report.transactions, report.errors) == (1, 0, 0, 0)
    assert keeper_account.nonce == nonce

    set_price(d, owner, BTC, 40_100)  # the order's round
    set_price(d, owner, BTC, 41_000)  # a later round: executing there would hand the trader an option
    report = keeper.run_once()
    assert (report.orders_executed, report.orders_cancelled, report.orders, report.errors) == (1, 0, 0, 0)
    (event,) = executions(d, chain, start)
    assert event.order_id == order_id and event.executor == keeper_account.address
    assert event.index_price == 40_100 * WAD and event.size_delta == WAD // 2
    assert size_of(d, (trader.address, 0)) == WAD // 2
    assert d.order_book.order(order_id).state == STATE_EXECUTED
    assert d.order_book.pending_market_orders(trader, 0) == 0
    assert d.vault.cash(keeper_account, 0) == fee_of(d) == report.order_fees  # the executor's fee

    nonce = keeper_account.nonce
    assert keeper.run_once().transactions == 0 and keeper_account.nonce == nonce


def test_the_keeper_refreshes_the_open_interest_room_an_order_needs(
    world, owner, keeper_account, accounts, chain, tmp_path, caplog
):
    """The global open-interest cap's room is consumed by growing fills and given back only
    when it is recomputed. After a trader opened most of it and closed again, another trader's
    order that the cached room would cancel but a fresh one fits is filled: the keeper first
    sends `refresh_open_interest_room` (one transaction), then executes the order."""
    d, first, second = world, accounts[4], accounts[5]
    d.liquidity_vault.set_max_oi_ratio(WAD // 10, sender=owner)  # a tenth of the vault's value
    setup = accounts[8]
    deposit(d, owner, first, 0, 10_000)
    room = d.order_book.refresh_open_interest_room(sender=setup).return_value
    opened = room // 40_000 // (WAD // 100) * (WAD // 100) - WAD // 10  # most of the room
    trade(d, owner, first, 0, BTC, opened, setup)
    trade(d, owner, first, 0, BTC, -opened, setup)  # a reduction: no room given back yet
    cached, stamp = d.order_book.open_interest_room()
    assert size_of(d, (first.address, 0)) == 0 and cached < 40_000 * WAD // 2

    deposit(d, owner, second, 0, 10_000)
    order_id = commit(d, second, 0, BTC, WAD // 2)  # 20,000 USD: more than the cached room
    set_price(d, owner, BTC, 40_000)  # the order's round
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    keeper = make_keeper(d, keeper_account, tmp_path)
    report = keeper.run_once()
    assert (report.orders_executed, report.orders_cancelled, report.errors) == (1, 0, 0)
    assert d.order_book.order(order_id).state == STATE_EXECUTED and size_of(d, (second.address, 0)) == WAD // 2
    (refreshed,) = events(caplog, "open_interest_room.refreshed")
    assert refreshed.fields["was"] == cached and refreshed.fields["room"] > cached
    room_now, stamp_now = d.order_book.open_interest_room()
    assert stamp_now > stamp and room_now == refreshed.fields["room"] - 20_000 * WAD


def test_an_expired_market_order_is_cancelled_by_the_keeper_for_the_fee(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d, trader = world, accounts[4]
    deposit(d, owner, trader, 0, 10_000)
    cash = d.vault.cash(trader, 0)
    start = chain.blocks.head.number
    order_id = commit(d, trader, 0, BTC, WAD // 2, expiry=chain.blocks.head.timestamp + 30)
    keeper = make_keeper(d, keeper_account, tmp_path)
    assert keeper.run_once().orders == 1

    chain.pending_timestamp += 60
    set_price(d, owner, BTC, 40_100)  # the first round after the delay came after the expiry
    report = keeper.run_once()
    assert (report.orders_executed, report.orders_cancelled, report.errors) == (0, 1, 0)
    assert report.cancel_reasons == {"expired": 1}
    (event,) = cancellations(d, chain, start)
    assert (event.order_id, event.reason, event.by, event.fee_to) == (
        order_id, "expired", keeper_account.address, keeper_account.address
    )
    assert size_of(d, (trader.address, 0)) == 0 and d.order_book.pending_market_orders(trader, 0) == 0
    assert d.vault.cash(keeper_account, 0) == fee_of(d) and d.vault.cash(trader, 0) == cash - fee_of(d)


def test_a_stop_loss_fires_at_the_round_that_crosses_its_trigger(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d, trader = world, accounts[4]
    key = open_position(d, owner, trader, 0, BTC, WAD, 10_000)
    stop = commit(d, trader, 0, BTC, -WAD, kind=KIND_STOP_LOSS, trigger=38_000 * WAD, acceptable=0)
    keeper = make_keeper(d, keeper_account, tmp_path)
    start = chain.blocks.head.number
    set_price(d, owner, BTC, 39_000)
    assert keeper.run_once().orders_executed == 0  # not triggered: it rests
    assert d.order_book.order(stop).state == STATE_OPEN

    set_price(d, owner, BTC, 37_800)  # the crossing
    set_price(d, owner, BTC, 37_500)  # triggered too, but not the crossing
    report = keeper.run_once()
    assert (report.orders_executed, report.errors) == (1, 0)
    (event,) = executions(d, chain, start)
    assert event.order_id == stop and event.index_price == 37_800 * WAD and event.size_delta == -WAD
    assert size_of(d, key) == 0


def test_a_limit_order_beyond_its_acceptable_price_keeps_resting_and_nothing_is_sent(
    world, owner, keeper_account, accounts, chain, tmp_path, caplog
):
    d, trader = world, accounts[4]
    deposit(d, owner, trader, 0, 10_000)
    limit = commit(d, trader, 0, BTC, WAD, kind=KIND_LIMIT, trigger=39_000 * WAD, acceptable=38_000 * WAD)
    crossing = set_price(d, owner, BTC, 38_900)  # triggers it, but a buy fills above 38,900 here
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    keeper = make_keeper(d, keeper_account, tmp_path)
    nonce = keeper_account.nonce
    report = keeper.run_once()
    assert (report.orders_executed, report.orders_cancelled, report.transactions, report.errors) == (0, 0, 0, 0)
    assert keeper_account.nonce == nonce and d.order_book.order(limit).state == STATE_OPEN
    (refused,) = events(caplog, "order.not_executable")
    assert refused.fields["reason"] == "exchange: price beyond acceptable"
    try:  # the contract agrees: this execution would revert
        d.order_book.execute_order.call(limit, [crossing], sender=keeper_account)
        raise AssertionError("the execution did not revert")
    except Exception as err:
        assert "exchange: price beyond acceptable" in str(err)


def test_a_stop_loss_cancelled_after_its_crossing_is_still_executed_at_it(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d, trader = world, accounts[4]
    key = open_position(d, owner, trader, 0, BTC, WAD, 10_000)
    stop = commit(d, trader, 0, BTC, -WAD, kind=KIND_STOP_LOSS, trigger=38_000 * WAD, acceptable=0)
    start = chain.blocks.head.number
    set_price(d, owner, BTC, 37_800)  # the crossing
    d.order_book.cancel_order(stop, sender=trader)  # the owner tries to escape the triggered stop
    assert d.order_book.order(stop).state == STATE_CANCELLED

    report = make_keeper(d, keeper_account, tmp_path).run_once()
    assert (report.orders_executed, report.errors) == (1, 0)
    (event,) = executions(d, chain, start)
    assert event.order_id == stop and event.index_price == 37_800 * WAD and size_of(d, key) == 0
    assert d.vault.cash(keeper_account, 0) == fee_of(d)  # charged again at the late execution


def test_a_keeper_that_loses_the_race_sends_nothing(
    world, owner, keeper_account, competitor, accounts, chain, tmp_path, monkeypatch, caplog
):
    d, trader = world, accounts[4]
    deposit(d, owner, trader, 0, 10_000)
    start = chain.blocks.head.number
    order_id = commit(d, trader, 0, BTC, WAD // 2)
    set_price(d, owner, BTC, 40_000)
    rival = make_keeper(d, competitor, tmp_path, "rival.json")
    keeper = make_keeper(d, keeper_account, tmp_path)
    simulate = keeper.client.simulate_execute_order

    def rival_first(order, rounds):
        """The rival keeper's pass lands between our decision and our simulation."""
        assert rival.run_once().orders_executed == 1
        return simulate(order, rounds)

    monkeypatch.setattr(keeper.client, "simulate_execute_order", rival_first)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    nonce = keeper_account.nonce
    report = keeper.run_once()
    assert (report.orders_executed, report.lost_races, report.errors, report.transactions) == (0, 1, 0, 0)
    assert keeper_account.nonce == nonce  # no transaction at all, so none that reverts
    (lost,) = events(caplog, "order.lost_race")
    assert lost.fields["order"] == order_id and lost.fields["reason"] == "order: not open"
    assert [e.executor for e in executions(d, chain, start)] == [competitor.address]  # executed once
    assert d.vault.cash(competitor, 0) == fee_of(d) and d.vault.cash(keeper_account, 0) == 0


def test_keepers_that_know_each_other_take_turns_per_order(world, owner, accounts, chain, tmp_path):
    d, trader = world, accounts[4]
    first_account, second_account = accounts[1], accounts[2]
    deposit(d, owner, trader, 0, 10_000)
    start = chain.blocks.head.number
    order_id = commit(d, trader, 0, BTC, WAD // 2)
    set_price(d, owner, BTC, 40_000)
    pair = (first_account.address, second_account.address)
    ranked = sorted(pair, key=str.lower)
    turn_holder = ranked[order_id % 2]  # the order's first turn (perpdex.keeper.core.take_turn)
    holder, other = (first_account, second_account) if turn_holder == first_account.address else (
        second_account, first_account
    )
    waiting = make_keeper(d, other, tmp_path, "other.json", order_keepers=pair)
    nonce = other.nonce
    assert waiting.run_once().orders_executed == 0 and other.nonce == nonce  # not its turn

    acting = make_keeper(d, holder, tmp_path, "holder.json", order_keepers=pair)
    assert acting.run_once().orders_executed == 1
    assert waiting.run_once().transactions == 0 and other.nonce == nonce
    assert [e.executor for e in executions(d, chain, start)] == [holder.address]


def test_the_next_keeper_executes_when_the_one_in_turn_does_not(world, owner, accounts, chain, tmp_path):
    d, trader = world, accounts[4]
    pair = (accounts[1].address, accounts[2].address)
    deposit(d, owner, trader, 0, 10_000)
    start = chain.blocks.head.number
    order_id = commit(d, trader, 0, BTC, WAD // 2)
    set_price(d, owner, BTC, 40_000)
    ranked = sorted(pair, key=str.lower)
    second = accounts[1] if ranked[(order_id + 1) % 2] == accounts[1].address else accounts[2]
    keeper = make_keeper(d, second, tmp_path, order_keepers=pair)  # the one in turn never runs
    assert keeper.run_once().orders_executed == 0
    chain.mine(4)  # one turn of 4 s later (a block a second)
    assert keeper.run_once().orders_executed == 1
    assert [e.executor for e in executions(d, chain, start)] == [second.address]


def test_a_restarted_keeper_executes_orders_from_its_checkpoint_and_those_committed_while_it_was_down(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d, early_trader, late_trader = world, accounts[4], accounts[5]
    deposit(d, owner, early_trader, 0, 10_000)
    deposit(d, owner, late_trader, 1, 10_000)
    early = commit(d, early_trader, 0, BTC, WAD // 4)
    first = make_keeper(d, keeper_account, tmp_path)
    assert first.run_once().orders == 1  # waiting for its round
    saved = json.loads((tmp_path / "keeper.json").read_text())
    assert [int(order_id) for order_id, _ in saved["orders"]] == [early]

    late = commit(d, late_trader, 1, BTC, -WAD // 4)  # the keeper is down
    start = chain.blocks.head.number
    set_price(d, owner, BTC, 40_200)  # the first round of both
    restarted = make_keeper(d, keeper_account, tmp_path)
    assert list(restarted.orders) == [early]
    report = restarted.run_once()
    assert (report.orders_executed, report.errors, report.orders) == (2, 0, 0)
    assert [e.order_id for e in executions(d, chain, start)] == [early, late]  # in commit order
    assert all(e.index_price == 40_200 * WAD for e in executions(d, chain, start))
    assert size_of(d, (early_trader.address, 0)) == WAD // 4 and size_of(d, (late_trader.address, 1)) == -WAD // 4


def test_without_an_order_book_the_keeper_only_liquidates_and_deleverages(
    world, owner, keeper_account, accounts, tmp_path
):
    d = world
    deposit(d, owner, accounts[4], 0, 10_000)
    order_id = commit(d, accounts[4], 0, BTC, WAD // 2)
    set_price(d, owner, BTC, 40_000)
    before_orders = dataclasses.replace(d, order_book=None)  # a manifest from before the order book
    keeper = Keeper(before_orders, keeper_account, tmp_path / "keeper.json", start_block=d.start_block)
    report = keeper.run_once()
    assert not keeper.executes_orders and report.orders == 0 and report.transactions == 0
    assert d.order_book.order(order_id).state == STATE_OPEN
