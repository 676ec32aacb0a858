"""The simulator's speed-ups change nothing a run computes: the lean interpreter
(perpdex.sim.evm) ends in the same state with the same results and events as titanoboa's, and
an order execution the keeper simulates and then sends runs once, mined as the one transaction
the keeper sent, while anything the keeper does in between sees the chain as it was."""

import contextlib

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.orders import KIND_MARKET
from perpdex.raw_state import mapping_slot
from perpdex.sim.config import SimConfig
from perpdex.sim.evm import fast_evm
from perpdex.sim.runner import Simulation

# the tests choose the interpreter themselves: titanoboa's own unless they say otherwise
pytestmark = pytest.mark.metered

CONFIG = SimConfig(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1583992800, end=1584007200).replace(
    traders=4, lps=1, lp_seed_usd=300_000.0,
)


@pytest.fixture(scope="module")
def sim():
    with boa.env.anchor():
        sim = Simulation(CONFIG)
        sim.prepare()
        yield sim


def open_orders(sim, count: int) -> tuple[list[int], int]:
    """`count` traders each commit a market order; a round is published after the delay.
    The orders and the round to execute them at."""
    d, chain = sim.d, sim.chain
    price = sim.answers[0] * 10**10
    ids = []
    for i in range(count):
        trader = boa.env.generate_address(f"speed-{i}")
        sim._mint(trader, 10_000, d.vault)
        chain.transact(trader, d.vault.deposit, 0, 10_000 * 10**6)
        side = 1 if i % 2 else -1
        receipt = chain.transact(trader, d.order_book.commit_order, 0, 0, side * WAD // 100,
                                 price * 2 if side > 0 else 0, KIND_MARKET, 0, False, 0)
        ids.append(int(receipt.result))
    chain.set_time(chain.now + 2)
    chain.transact(sim.owner, d.aggregators[0].update_answer, sim.answers[0])
    return ids, int(d.aggregators[0].latestRound())


def outcome(sim, ids: list[int], receipts: list) -> tuple:
    """What the executions did: their fills (in order) and the traders' accounts and positions."""
    fills = [(e.fill_price, e.size_delta, e.fee) for r in receipts for e in r.events("OrderExecuted")]
    owners = [sim.d.order_book.order(i).owner for i in ids]
    return fills, [(sim.raw.account(o, 0), sim.raw.position(o, 0, 0)) for o in owners]


def test_the_lean_interpreter_ends_in_titanoboas_state(sim):
    results = []
    for lean in (False, True):
        with boa.env.anchor(), (fast_evm() if lean else contextlib.nullcontext()):
            ids, round_id = open_orders(sim, 3)
            receipts = [sim.chain.transact(sim.keeper_address, sim.d.order_book.execute_order, i, [round_id])
                        for i in ids]
            results.append(([r.result for r in receipts], outcome(sim, ids, receipts)))
    assert results[0][0] == [True, True, True]
    assert results[1] == results[0]


def test_a_simulated_batch_is_mined_once_as_the_batch_sent(sim):
    client, chain = sim.client, sim.chain
    with boa.env.anchor():
        ids, round_id = open_orders(sim, 3)
        with boa.env.anchor():
            sent = chain.transact(sim.keeper_address, sim.d.order_book.execute_orders, ids, [[round_id]] * 3)
            expected = outcome(sim, ids, [sent])
        before = chain.transactions
        assert all(client.simulate_execute_order(i, [round_id]) for i in ids)
        receipt = client.execute_orders(ids, [[round_id]] * 3)
        assert chain.transactions == before + 1, "one transaction mined"
        assert [e.order_id for e in receipt.events("OrderExecuted")] == ids
        assert len(expected[0]) == 3
        assert outcome(sim, ids, [receipt]) == expected


def test_what_the_keeper_reads_after_a_simulation_is_the_chain_as_it_was(sim):
    client, chain = sim.client, sim.chain
    with boa.env.anchor():
        ids, round_id = open_orders(sim, 1)
        owner = sim.d.order_book.order(ids[0]).owner
        before = client.read_account((owner, 0))
        assert client.simulate_execute_order(ids[0], [round_id])
        assert client.read_account((owner, 0)) == before, "the simulation left nothing behind"
        receipt = client.execute_order(ids[0], [round_id])  # sent for real now
        assert [e.order_id for e in receipt.events("OrderExecuted")] == ids
        assert client.read_account((owner, 0)) != before


def test_the_checker_reads_deficit_records_as_the_liquidator_reports_them(sim):
    """The invariant checker reads deficit records from storage; planted records read back as
    `Liquidator.deficit_record` returns them."""
    lq, raw = sim.d.liquidator, sim.raw
    owner = boa.env.generate_address("bankrupt")
    with boa.env.anchor():
        for market_id, record in ((0, 7 * WAD | 2**192 | 1584000000 << 200), (1, 3 * WAD | 1583990000 << 200)):
            slot = mapping_slot(raw.q["_deficits"], owner, 0, market_id)
            boa.env.set_storage(lq.address, slot, record)
            expected = tuple(lq.deficit_record(owner, 0, market_id))
            assert expected[0] > 0
            assert sim.checker.deficit_record(owner, 0, market_id) == expected
    assert sim.checker.deficit_record(owner, 0, 0) == (0, 0, 0) == tuple(lq.deficit_record(owner, 0, 0))


def test_the_invariant_checks_see_every_change_of_an_account(sim):
    """The checker reads again the accounts whose storage a transaction wrote; a change behind
    the chain's back is seen once it is told to forget what it read."""
    d, chain, checker = sim.d, sim.chain, sim.checker
    trader = sim.population.traders[0].address
    key = (trader, 0)
    with boa.env.anchor(), fast_evm():
        sim._mint(trader, 100, d.vault)
        before = checker.read_states([key])[key].cash
        chain.transact(trader, d.vault.deposit, 0, 100 * 10**6)
        assert checker.read_states([key])[key].cash == before + 100 * WAD
        slot = mapping_slot(sim.raw.v["_accounts"], trader, 0)
        boa.env.set_storage(d.vault.address, slot, 0)
        checker.forget()
        assert checker.read_states([key])[key].cash == 0


def test_the_keepers_market_snapshot_is_the_lenss(sim):
    """After its first Lens call, the transport reads markets from storage and the index view:
    the keeper's model gets what `Lens.markets()` gives, prices and funding moved."""
    client, chain, d = sim.client, sim.chain, sim.d
    with boa.env.anchor():
        ids, round_id = open_orders(sim, 2)
        chain.transact(sim.keeper_address, d.order_book.execute_orders, ids, [[round_id]] * 2)
        client.forget_reads()
        client.read_snapshot(chain.block, chain.now, lambda m, r: None)  # the first read: the Lens
        chain.set_time(chain.now + 3_600)
        chain.transact(sim.owner, d.aggregators[0].update_answer, sim.answers[0] * 9 // 10)
        chain.transact(sim.keeper_address, d.exchange.touch_market, 0)
        expected = [tuple(m) for m in d.lens.markets()]
        assert expected[0][2] > 0, "open interest"
        assert [tuple(m) for m in client._markets()] == expected
