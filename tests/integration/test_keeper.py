"""The liquidation and ADL keeper (perpdex.keeper) on ape's embedded chain.

config/markets.json: 4 % initial and 2 % maintenance margin, 0.5 % penalty, a 5 USD keeper
floor. A 1 BTC long opened at 40,000 with 2,200 USDC is liquidatable at 38,700 (equity ~870 <
maintenance ~975); with 10,000 USDC it is not. Positions are opened through the order book
(keeper_world.trade). Every test starts from the module's deployment (ape reverts the chain
after each)."""

import json
import logging
import os
import signal
import threading

import pytest
from ape.exceptions import ProviderError
from keeper_world import (  # noqa: F401 (fixtures)
    BTC,
    ETH,
    KEEPER_FLOOR,
    competitor,
    events,
    fund,
    keeper_account,
    liquidations,
    make_keeper,
    open_position,
    owner,
    set_price,
    size_of,
    trade,
    world,
)

from perpdex.fixed_point import WAD
from perpdex.keeper import Keeper, adl_turn, install_signal_handlers

USDC = 10**6


# ---------------------------------------------------------------------------------------------


def test_pass_liquidates_exactly_the_unhealthy_accounts_and_a_second_pass_does_nothing(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d = world
    risky_btc = open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200)  # ~18x long
    risky_eth = open_position(d, owner, accounts[5], 2, ETH, 20 * WAD, 2_200)  # ~18x long
    safe_long = open_position(d, owner, accounts[6], 0, BTC, WAD, 10_000)
    safe_short = open_position(d, owner, accounts[6], 1, BTC, -WAD, 2_200)  # gains when BTC falls
    set_price(d, owner, BTC, 38_700)
    set_price(d, owner, ETH, 1_930)
    unhealthy = {k for k in (risky_btc, risky_eth, safe_long, safe_short) if d.liquidator.is_liquidatable(*k)}
    assert unhealthy == {risky_btc, risky_eth}

    keeper = make_keeper(d, keeper_account, tmp_path)
    report = keeper.run_once()
    assert (report.liquidatable, report.liquidated, report.errors, report.lost_races) == (2, 2, 0, 0)
    assert report.accounts == 4 and report.transactions == 1
    assert size_of(d, risky_btc) == 0 and size_of(d, risky_eth, ETH) == 0
    assert size_of(d, safe_long) == WAD and size_of(d, safe_short) == -WAD
    assert report.keeper_reward >= 2 * KEEPER_FLOOR
    assert d.vault.cash(keeper_account, 0) == report.keeper_reward  # rewards land in its sub-account 0
    assert {(e.owner, e.sub_account) for e in liquidations(d, chain)} == {risky_btc, risky_eth}

    checkpoint = json.loads((tmp_path / "keeper.json").read_text())
    assert checkpoint["chain_id"] == chain.chain_id and checkpoint["block"] == chain.blocks.head.number
    assert {tuple(a) for a in checkpoint["accounts"]} == {risky_btc, risky_eth, safe_long, safe_short}

    nonce, cash = keeper_account.nonce, d.vault.cash(keeper_account, 0)
    again = keeper.run_once()
    assert (again.liquidatable, again.liquidated, again.transactions, again.errors) == (0, 0, 0, 0)
    assert keeper_account.nonce == nonce and d.vault.cash(keeper_account, 0) == cash
    assert len(liquidations(d, chain)) == 2


def test_off_chain_health_equals_the_contract_for_every_indexed_account(
    world, owner, keeper_account, accounts, chain, tmp_path
):
    d = world
    keys = [
        open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200),
        open_position(d, owner, accounts[4], 1, ETH, -30 * WAD, 3_000),
        open_position(d, owner, accounts[5], 0, BTC, -WAD // 2, 1_500),
        open_position(d, owner, accounts[6], 3, BTC, 2 * WAD, 20_000),
    ]
    trade(d, owner, accounts[6], 3, ETH, 15 * WAD, accounts[8])  # cross margin: two markets
    fund(d, owner, accounts[7], 500)
    d.vault.deposit(0, 500 * USDC, sender=accounts[7])  # cash only
    keys.append((accounts[7].address, 0))
    keeper = make_keeper(d, keeper_account, tmp_path)

    verdicts = set()
    for seconds, btc, eth in ((0, 40_000, 2_000), (1_800, 38_600, 1_930), (1_200, 41_500, 2_150)):
        if seconds:
            chain.pending_timestamp += seconds  # funding accrues, then fresh prices
            set_price(d, owner, BTC, btc)
            set_price(d, owner, ETH, eth)
        keeper.sync()
        assert keeper.accounts == set(keys)
        for key in keys:
            health = keeper.health(key)
            _, equity, initial, maintenance = d.exchange.account_state(*key, block_id=keeper.block)
            assert (health.equity, health.initial, health.maintenance) == (equity, initial, maintenance)
            assert health.liquidatable == d.liquidator.is_liquidatable(*key, block_id=keeper.block)
            verdicts.add(health.liquidatable)
    assert verdicts == {True, False}


def test_restart_from_checkpoint_misses_nothing_and_repeats_nothing(world, owner, keeper_account, accounts, chain, tmp_path):
    d = world
    risky = open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200)
    old = open_position(d, owner, accounts[6], 0, BTC, WAD, 3_000)  # liquidatable below ~37,980
    first = make_keeper(d, keeper_account, tmp_path)
    assert first.run_once().liquidated == 0
    before_crash = (tmp_path / "keeper.json").read_text()

    set_price(d, owner, BTC, 38_700)
    assert first.run_once().liquidated == 1 and size_of(d, risky) == 0
    # the keeper dies right after sending, before its checkpoint reached the disk
    (tmp_path / "keeper.json").write_text(before_crash)

    newcomer = open_position(d, owner, accounts[7], 5, BTC, WAD, 2_000)  # new while it was down
    set_price(d, owner, BTC, 37_500)
    assert d.liquidator.is_liquidatable(*old) and d.liquidator.is_liquidatable(*newcomer)

    second = make_keeper(d, keeper_account, tmp_path)
    assert second.block == json.loads(before_crash)["block"] and second.accounts == {risky, old}
    report = second.run_once()
    assert (report.liquidated, report.new_accounts, report.lost_races, report.errors) == (2, 1, 0, 0)
    assert size_of(d, old) == 0 and size_of(d, newcomer) == 0
    liquidated = [(e.owner, e.sub_account) for e in liquidations(d, chain)]
    assert sorted(liquidated) == sorted([risky, old, newcomer])  # each exactly once
    assert json.loads((tmp_path / "keeper.json").read_text())["block"] == chain.blocks.head.number


def test_competitor_first_is_a_lost_race_not_a_reverting_transaction(
    world, owner, keeper_account, competitor, accounts, tmp_path, monkeypatch, caplog
):
    d = world
    first = open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200)
    set_price(d, owner, BTC, 38_700)
    keeper = make_keeper(d, keeper_account, tmp_path)
    simulate = keeper.simulate_liquidations
    armed = [True]

    def competitor_wins(batch):
        """Another keeper's transaction for the batch's first account lands between our health
        check and our first simulation."""
        if armed[0]:
            armed[0] = False
            d.liquidator.liquidate(*batch[0], sender=competitor)
        return simulate(batch)

    monkeypatch.setattr(keeper, "simulate_liquidations", competitor_wins)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    nonce = keeper_account.nonce
    report = keeper.run_once()
    assert (report.liquidatable, report.liquidated, report.lost_races, report.errors) == (1, 0, 1, 0)
    assert keeper_account.nonce == nonce  # no transaction at all, so none that reverts
    assert size_of(d, first) == 0 and d.vault.cash(competitor, 0) >= KEEPER_FLOOR
    assert d.vault.cash(keeper_account, 0) == 0
    (lost,) = events(caplog, "liquidation.lost_race")
    assert lost.fields["owner"] == first[0]

    # two unhealthy accounts, the competitor takes one: we send for the other only
    second = open_position(d, owner, accounts[5], 0, BTC, WAD, 2_000)
    third = open_position(d, owner, accounts[5], 1, BTC, WAD, 2_000)
    set_price(d, owner, BTC, 37_300)
    armed[0] = True
    report = keeper.run_once()
    assert (report.liquidated, report.lost_races, report.errors, report.transactions) == (1, 1, 0, 1)
    assert keeper_account.nonce == nonce + 1
    assert size_of(d, second) == 0 and size_of(d, third) == 0
    assert d.vault.cash(keeper_account, 0) == report.keeper_reward > 0


def test_rpc_errors_back_off_and_recover(world, owner, keeper_account, accounts, chain, tmp_path, monkeypatch, caplog):
    d = world
    risky = open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200)
    set_price(d, owner, BTC, 38_700)
    provider_type = type(chain.provider)
    get_block = provider_type.get_block
    failures = [3]

    def flaky_get_block(self, block_id, *args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("connection refused")
        return get_block(self, block_id, *args, **kwargs)

    monkeypatch.setattr(provider_type, "get_block", flaky_get_block)
    keeper = make_keeper(d, keeper_account, tmp_path, backoff_initial=0.01, backoff_max=0.03)
    stop = threading.Event()
    run_once = keeper.run_once

    def run_then_stop():
        report = run_once()
        stop.set()
        return report

    monkeypatch.setattr(keeper, "run_once", run_then_stop)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    keeper.run_forever(interval=0.01, stop=stop)

    assert failures == [0]
    assert [r.fields["retry_in"] for r in events(caplog, "rpc.error")] == [0.01, 0.02, 0.03]  # doubling, capped
    assert keeper.last_report.liquidated == 1 and size_of(d, risky) == 0
    assert len(events(caplog, "keeper.stopped")) == 1


def test_a_poll_at_the_head_of_the_last_pass_runs_no_second_pass(world, keeper_account, chain, tmp_path, monkeypatch):
    """Nothing a keeper acts on changes between blocks: polling faster than blocks come reads
    only the head, and the next block gets its pass."""
    keeper = make_keeper(world, keeper_account, tmp_path)
    stop = threading.Event()
    passes, heads = [], []
    run_once, head = keeper.run_once, keeper.client.head

    def counted_pass():
        passes.append(run_once())
        return passes[-1]

    def counted_head():
        heads.append(None)
        if len(heads) == 3:  # the second poll after the first pass: a block has been mined
            chain.mine()
        if len(heads) == 8:
            stop.set()
        return head()

    monkeypatch.setattr(keeper, "run_once", counted_pass)
    monkeypatch.setattr(keeper.client, "head", counted_head)
    first = chain.blocks.head.number
    keeper.run_forever(interval=0.001, stop=stop)
    # reads of the head: 1 in the first pass, 2 polls, 1 in the second pass, 4 polls
    assert [p.block for p in passes] == [first, first + 1]


def test_nonce_error_is_retried_once(world, owner, keeper_account, accounts, chain, tmp_path, monkeypatch, caplog):
    d = world
    risky = open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200)
    set_price(d, owner, BTC, 38_700)
    provider_type = type(chain.provider)
    send_transaction = provider_type.send_transaction
    rejected = []

    def nonce_gap_once(self, txn):
        if not rejected:
            rejected.append(txn.nonce)
            raise ProviderError("nonce too low: next nonce 7, tx nonce 6")
        return send_transaction(self, txn)

    monkeypatch.setattr(provider_type, "send_transaction", nonce_gap_once)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    nonce = keeper_account.nonce
    report = make_keeper(d, keeper_account, tmp_path).run_once()
    assert rejected == [nonce]
    assert (report.liquidated, report.errors) == (1, 0) and size_of(d, risky) == 0
    assert keeper_account.nonce == nonce + 1
    assert len(events(caplog, "tx.nonce_retry")) == 1


def test_sigterm_stops_the_keeper_after_its_pass(world, keeper_account, tmp_path, monkeypatch, caplog):
    keeper = make_keeper(world, keeper_account, tmp_path)
    stop = threading.Event()
    previous = install_signal_handlers(stop)
    run_once = keeper.run_once
    passes = []

    def pass_then_signal():
        passes.append(run_once())
        os.kill(os.getpid(), signal.SIGTERM)
        return passes[-1]

    monkeypatch.setattr(keeper, "run_once", pass_then_signal)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    try:
        keeper.run_forever(interval=0.01, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert stop.is_set() and len(passes) == 1
    assert json.loads((tmp_path / "keeper.json").read_text())["block"] == passes[0].block
    assert [r.fields["signal"] for r in events(caplog, "keeper.signal")] == ["SIGTERM"]


def test_adl_covers_an_uncovered_deficit(world, owner, keeper_account, accounts, chain, tmp_path, caplog):
    d = world
    victim = open_position(d, owner, accounts[4], 0, BTC, 3 * WAD, 6_600)
    shorts = [
        open_position(d, owner, accounts[5], 0, BTC, -WAD, 5_000),
        open_position(d, owner, accounts[6], 1, BTC, -4 * WAD // 5, 8_000),
        open_position(d, owner, accounts[7], 0, BTC, -3 * WAD // 5, 11_000),
    ]
    d.insurance_fund.withdraw_surplus(owner, d.vault.insurance_cash() // 10**12, sender=owner)  # empty it
    assert d.vault.insurance_cash() < 10**12
    set_price(d, owner, BTC, 36_000)  # gap down through the long's bankruptcy price
    caplog.set_level(logging.INFO, logger="perpdex.keeper")

    keeper = make_keeper(d, keeper_account, tmp_path)
    report = keeper.run_once()  # liquidates; has no ADL role yet
    assert report.liquidated == 1 and size_of(d, victim) == 0
    deficit = d.liquidator.uncovered_deficit(BTC)
    assert deficit > 0 and d.vault.cash(*victim) == -deficit
    nonce = keeper_account.nonce
    assert keeper.run_once().adl_targets == 0 and keeper_account.nonce == nonce
    assert len(events(caplog, "adl.no_role")) == 1  # logged once, not every pass

    d.liquidator.set_adl_keeper(keeper_account, True, sender=owner)
    cash_before = {k: d.vault.cash(*k) for k in shorts}
    report = keeper.run_once()
    assert report.adl_targets >= 2 and report.errors == 0
    assert d.liquidator.uncovered_deficit(BTC) == 0 and d.vault.cash(*victim) == 0
    done = events(caplog, "adl.done")
    scores = [r.fields["score"] for r in done]
    assert scores == sorted(scores, reverse=True)
    assert sum(r.fields["haircut"] for r in done) == deficit
    receipt = chain.provider.get_receipt(done[0].fields["tx"])
    closes = {(t.owner, t.sub_account): t for t in receipt.decode_logs(d.exchange.Trade)}
    for record in done:
        key = (record.fields["owner"], record.fields["sub_account"])
        haircut, close = record.fields["haircut"], closes[key]
        assert key in shorts and close.realized_pnl == record.fields["realized_pnl"]
        assert 0 < haircut <= close.realized_pnl  # never more than the profit: no principal lost
        assert d.vault.cash(*key) - cash_before[key] == close.realized_pnl - haircut - close.funding_paid
    assert keeper.run_once().adl_targets == 0  # nothing left to do


def test_a_deficit_no_adl_can_cover_is_written_off_by_the_keeper(world, owner, keeper_account, accounts, tmp_path, caplog):
    """A long goes bankrupt with no short left to deleverage (the liquidity vault was its only
    counterparty) and an empty insurance fund: the keeper liquidates it, and the same pass
    writes the deficit off, so the liquidity vault's cash pays the account back to zero and no
    deficit stays on the books (DESIGN.md invariant 4, Liquidator.write_off)."""
    d = world
    victim = open_position(d, owner, accounts[4], 0, BTC, 3 * WAD, 6_600)
    d.insurance_fund.withdraw_surplus(owner, d.vault.insurance_cash() // 10**12, sender=owner)  # empty it
    set_price(d, owner, BTC, 36_000)  # gap down through the long's bankruptcy price
    caplog.set_level(logging.INFO, logger="perpdex.keeper")

    keeper = make_keeper(d, keeper_account, tmp_path)
    report = keeper.run_once()
    assert report.liquidated == 1 and report.errors == 0 and size_of(d, victim) == 0
    (done,) = events(caplog, "write_off.done")
    assert (done.fields["owner"], done.fields["sub_account"], done.fields["market"]) == (*victim, BTC)
    assert done.fields["amount"] > 0
    assert d.liquidator.total_uncovered_deficit() == 0 and d.vault.cash(*victim) == 0
    assert d.liquidator.deficit_record(*victim, BTC)[0] == 0
    nonce = keeper_account.nonce
    assert keeper.run_once().transactions == 0 and keeper_account.nonce == nonce  # nothing left


def test_adl_turns_rotate_in_address_order_from_the_trigger_block():
    keepers = ["0xCC", "0xaa", "0xBb"]  # turn order: 0xaa, 0xbb, 0xcc (case-insensitive)
    since = 100
    # turns of 4 blocks; a keeper sends in the first 2 of its turn, the other 2 let its transaction land
    assert [adl_turn("0xAA", keepers, since, b) for b in range(100, 104)] == [
        (True, 100), (True, 101), (False, 112), (False, 112)
    ]
    assert adl_turn("0xbb", keepers, since, 100) == (False, 104)
    assert [adl_turn("0xbb", keepers, since, b)[0] for b in range(104, 108)] == [True, True, False, False]
    assert adl_turn("0xcc", keepers, since, 107) == (False, 108)
    assert adl_turn("0xcc", keepers, since, 109) == (True, 109)
    assert adl_turn("0xaa", keepers, since, 112) == (True, 112)  # the next round
    assert adl_turn("0xaa", ["0xaa"], since, 103) == (True, 103)  # alone: always
    assert adl_turn("0xdd", keepers, since, 100) == (False, -1)  # no role
    # at any block at most one keeper may send
    for block in range(90, 140):
        assert sum(adl_turn(k, keepers, since, block)[0] for k in keepers) <= 1


def deficit_world(d, owner, accounts) -> tuple:
    """A 3 BTC long gapped through its bankruptcy price with an empty insurance fund, and
    profitable shorts to deleverage."""
    victim = open_position(d, owner, accounts[4], 0, BTC, 3 * WAD, 6_600)
    for who, size, usd in ((accounts[5], -WAD, 5_000), (accounts[6], -4 * WAD // 5, 8_000)):
        open_position(d, owner, who, 0, BTC, size, usd)
    d.insurance_fund.withdraw_surplus(owner, d.vault.insurance_cash() // 10**12, sender=owner)  # empty it
    set_price(d, owner, BTC, 36_000)
    return victim


def test_two_adl_keepers_take_turns_and_never_both_send(world, owner, accounts, chain, tmp_path, caplog):
    d = world
    first, second = sorted([accounts[1], accounts[2]], key=lambda a: a.address.lower())  # turn order
    for keeper_account in (first, second):
        d.liquidator.set_adl_keeper(keeper_account, True, sender=owner)
    victim = deficit_world(d, owner, accounts)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    late = Keeper(d, second, tmp_path / "second.json", start_block=d.start_block)
    early = Keeper(d, first, tmp_path / "first.json", start_block=d.start_block)

    report = late.run_once()  # liquidates; the deficit appears; the first turn is the other's
    since = chain.blocks.head.number
    assert report.liquidated == 1 and size_of(d, victim) == 0 and report.adl_targets == 0
    assert d.liquidator.uncovered_deficit(BTC) > 0
    (waiting,) = events(caplog, "adl.waiting_turn")
    assert waiting.fields["next_turn"] == since + 4

    report = early.run_once()
    assert report.adl_targets >= 1 and report.errors == 0
    assert d.liquidator.uncovered_deficit(BTC) == 0 and d.vault.cash(*victim) == 0

    chain.mine(since + 4 - chain.blocks.head.number)  # the second keeper's turn: nothing left to do
    nonce = second.nonce
    assert late.run_once().adl_targets == 0 and second.nonce == nonce


def test_the_next_adl_keeper_acts_when_the_first_one_does_not(world, owner, accounts, chain, tmp_path, caplog):
    d = world
    first, second = sorted([accounts[1], accounts[2]], key=lambda a: a.address.lower())
    for keeper_account in (first, second):
        d.liquidator.set_adl_keeper(keeper_account, True, sender=owner)
    victim = deficit_world(d, owner, accounts)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")
    late = Keeper(d, second, tmp_path / "second.json", start_block=d.start_block)  # the first never runs

    assert late.run_once().adl_targets == 0
    (waiting,) = events(caplog, "adl.waiting_turn")
    chain.mine(waiting.fields["next_turn"] - chain.blocks.head.number)
    report = late.run_once()
    assert report.adl_targets >= 1 and report.errors == 0
    assert d.liquidator.uncovered_deficit(BTC) == 0 and d.vault.cash(*victim) == 0


def test_adl_brings_the_pnl_factor_back_under_target(world, owner, keeper_account, accounts, tmp_path):
    d = world
    d.liquidator.set_pnl_factors(WAD // 50, WAD // 100, sender=owner)  # 2 % max, 1 % target
    d.liquidator.set_adl_keeper(keeper_account, True, sender=owner)
    longs = [open_position(d, owner, accounts[4 + i], 0, BTC, (i + 2) * WAD, 40_000) for i in range(3)]
    set_price(d, owner, BTC, 46_000)
    assert d.liquidator.pnl_factor(BTC) > d.liquidator.max_pnl_factor()

    report = make_keeper(d, keeper_account, tmp_path).run_once()
    assert report.adl_targets >= 1 and report.errors == 0 and report.liquidated == 0
    assert d.liquidator.pnl_factor(BTC) <= d.liquidator.target_pnl_factor()
    assert sum(size_of(d, k) for k in longs) < 9 * WAD  # some of the top-ranked profit was closed


def test_a_market_without_a_valid_price_is_skipped_not_fatal(
    world, owner, keeper_account, accounts, chain, tmp_path, caplog
):
    d = world
    risky_btc = open_position(d, owner, accounts[4], 0, BTC, WAD, 2_200)
    risky_eth = open_position(d, owner, accounts[5], 0, ETH, 20 * WAD, 2_200)
    chain.pending_timestamp += 3_700  # past the feeds' one-hour heartbeat
    set_price(d, owner, BTC, 38_700)  # ETH's feed stays stale
    with pytest.raises(Exception, match="oracle: stale price"):
        d.exchange.index_price(ETH)
    caplog.set_level(logging.INFO, logger="perpdex.keeper")

    keeper = make_keeper(d, keeper_account, tmp_path)
    report = keeper.run_once()
    assert (report.liquidated, report.unpriced, report.errors) == (1, 1, 0)
    assert size_of(d, risky_btc) == 0 and size_of(d, risky_eth, ETH) == 20 * WAD
    assert keeper.health(risky_eth) is None
    keeper.run_once()
    assert len(events(caplog, "market.unpriced")) == 1  # once, not every pass

    set_price(d, owner, ETH, 1_900)  # the feed is back: the ETH long is handled at once
    report = keeper.run_once()
    assert (report.liquidated, report.unpriced) == (1, 0) and size_of(d, risky_eth, ETH) == 0
