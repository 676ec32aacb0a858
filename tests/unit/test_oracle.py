"""IndexOracle and MockAggregator: prices, every revert reason, access control, gas, a replay
of ten months of real Chainlink ETH/USD rounds, and a differential property test against the
reference model perpdex.oracle.

Fixtures live here (tests/unit/conftest.py belongs to the shared suite). Run from the repo
root: contracts are loaded by path.
"""

from __future__ import annotations

from pathlib import Path

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from eth.db.backends.memory import MemoryDB
from eth.db.journal import JournalDB
from eth_abi import decode as abi_decode
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from perpdex import oracle as ref
from perpdex.oracle import FeedReading, Round, SequencerStatus

ORACLE = "contracts/IndexOracle.vy"
AGGREGATOR = "contracts/mocks/MockAggregator.vy"
ROUNDS_CSV = Path(__file__).resolve().parents[2] / "data" / "chainlink" / "eth-usd_mainnet_rounds_2023-04_2024-01.csv"

WAD = 10**18
HOUR = 3600
NOW = 1_700_000_000  # block time at the start of every test
ZERO_ADDRESS = "0x" + "00" * 20
ERROR_SELECTOR = bytes.fromhex("08c379a0")
NOT_OWNER = "ownable: caller is not the owner"
GAS_TARGET_ONE_FEED = 14_000


# ---------------------------------------------------------------- helpers


def revert_reason(contract) -> str:
    """The Error(string) reason of the contract's last (reverted) call."""
    output = bytes(contract._computation.output)
    assert output[:4] == ERROR_SELECTOR, f"not a reason-string revert: {output.hex()}"
    return abi_decode(["string"], output[4:])[0]


def price_or_reason(oracle, market_id: int) -> int | str:
    """`index_price` as the reference model reports it: the value, or the revert reason."""
    try:
        return oracle.index_price(market_id)
    except BoaError:
        return revert_reason(oracle)


def cold_gas(contract, fn_name: str, *args) -> int:
    """Gas of one call with every account and slot cold, as the first read in a transaction
    (the called contract itself is warm, as a transaction's target is). Titanoboa keeps
    EIP-2929 warm sets across calls, so the call runs against a fresh access journal; the
    real one is put back afterwards (resetting it would break the test's snapshots)."""
    account_db = boa.env.evm.vm.state._account_db
    saved = account_db._journal_accessed_state
    account_db._journal_accessed_state = JournalDB(MemoryDB())
    try:
        getattr(contract, fn_name)(*args)
    finally:
        account_db._journal_accessed_state = saved
    return contract._computation.get_gas_used()


def publish(feed, answer: int, round_id: int | None = None, updated_at: int | None = None):
    """Write a complete round with `answer` at `updated_at` (default: now)."""
    updated_at = boa.env.timestamp if updated_at is None else updated_at
    round_id = feed.latestRound() + 1 if round_id is None else round_id
    feed.set_round(round_id, answer, updated_at, updated_at, round_id)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def clock():
    boa.env.timestamp = NOW
    return NOW


@pytest.fixture(scope="module")
def owner():
    return boa.env.eoa


@pytest.fixture(scope="module")
def configurator():
    """Stands in for the exchange, which lists markets."""
    return boa.env.generate_address("configurator")


@pytest.fixture(scope="module")
def attacker():
    return boa.env.generate_address("attacker")


@pytest.fixture(scope="module")
def keeper():
    """The devnet price pusher, an updater of the mock feeds."""
    return boa.env.generate_address("keeper")


@pytest.fixture(scope="module")
def oracle_deployer(owner):
    return boa.load_partial(ORACLE)


@pytest.fixture(scope="module")
def aggregator_deployer(owner):
    return boa.load_partial(AGGREGATOR)


@pytest.fixture
def oracle(oracle_deployer, owner, request):
    """An oracle without a sequencer feed; with `sequencer_feed` and a one-hour grace period
    for the tests that ask for `sequencer` (the feed is fixed at deployment)."""
    feed, grace_period = ZERO_ADDRESS, 0
    if "sequencer" in request.fixturenames:
        feed, grace_period = request.getfixturevalue("sequencer_feed").address, HOUR
    with boa.env.prank(owner):
        return oracle_deployer.deploy(feed, grace_period)


@pytest.fixture
def make_feed(aggregator_deployer, owner):
    """A MockAggregator with `decimals`, publishing `answer` now (none when answer is 0)."""

    def make(decimals: int = 8, answer: int = 2_000 * 10**8, description: str = "ETH / USD"):
        with boa.env.prank(owner):
            return aggregator_deployer.deploy(decimals, description, answer)

    return make


@pytest.fixture
def eth_feed(make_feed):
    return make_feed(8, 2_000 * 10**8)


@pytest.fixture
def eth_market(oracle, eth_feed, owner):
    """Market 1: ETH/USD from one 8-decimal feed, heartbeat one hour."""
    with boa.env.prank(owner):
        oracle.set_feeds(1, [(eth_feed.address, HOUR)], 0)
    return 1


@pytest.fixture
def three_feeds(make_feed):
    return [make_feed(8, 1_990 * 10**8), make_feed(18, 2_000 * WAD), make_feed(6, 2_010 * 10**6)]


@pytest.fixture
def median_market(oracle, three_feeds, owner):
    """Market 2: three feeds (1,990 / 2,000 / 2,010 USD), 2 % maximum deviation."""
    with boa.env.prank(owner):
        oracle.set_feeds(2, [(feed.address, HOUR) for feed in three_feeds], 2 * WAD // 100)
    return 2


@pytest.fixture
def sequencer_feed(make_feed, owner):
    """An L2 sequencer-uptime feed, up for a day."""
    feed = make_feed(0, 0, "L2 Sequencer Uptime Status Feed")
    with boa.env.prank(owner):
        feed.set_round(1, 0, NOW - 86400, NOW - 86400, 1)
    return feed


@pytest.fixture
def sequencer(oracle, sequencer_feed):
    """The sequencer-uptime feed `oracle` checks, with a one-hour grace period."""
    return sequencer_feed


# ---------------------------------------------------------------- normalisation and median


@pytest.mark.parametrize(
    "decimals, answer, expected",
    [
        (8, 2_000_12345678, 2_000_12345678 * 10**10),
        (18, 2_000 * WAD + 7, 2_000 * WAD + 7),
        (6, 1_000_001, 1_000_001 * 10**12),
        (0, 42, 42 * WAD),
        (24, 3 * 10**24 + 999_999, 3 * WAD),  # rounds down
        (36, 5 * 10**35, WAD // 2),
    ],
)
def test_single_feed_price_is_normalised_to_wad(
    oracle, make_feed, owner, decimals, answer, expected
):
    feed = make_feed(decimals, answer)
    with boa.env.prank(owner):
        oracle.set_feeds(7, [(feed.address, HOUR)], 0)

    assert oracle.index_price(7) == expected
    assert expected == ref.normalize(answer, decimals)


def test_three_feeds_give_their_median(oracle, median_market):
    assert oracle.index_price(median_market) == 2_000 * WAD


def test_median_ignores_feed_order(oracle, three_feeds, median_market):
    publish(three_feeds[0], 2_015 * 10**8)  # now the highest; the 18-decimal feed is the median
    assert oracle.index_price(median_market) == 2_010 * WAD


def test_two_feeds_give_the_floor_of_their_mean(oracle, make_feed, owner):
    low, high = make_feed(8, 2_000 * 10**8), make_feed(18, 2_001 * WAD + 1)
    with boa.env.prank(owner):
        oracle.set_feeds(3, [(high.address, HOUR), (low.address, HOUR)], WAD // 100)

    assert oracle.index_price(3) == (2_000 * WAD + 2_001 * WAD + 1) // 2  # 2000.5e18, floored


def test_four_and_five_feeds(oracle, make_feed, owner):
    answers = [2_004, 1_999, 2_001, 2_000, 2_003]
    feeds = [make_feed(8, answer * 10**8) for answer in answers]
    with boa.env.prank(owner):
        oracle.set_feeds(4, [(feed.address, HOUR) for feed in feeds[:4]], WAD // 100)
        oracle.set_feeds(5, [(feed.address, HOUR) for feed in feeds], WAD // 100)

    assert oracle.index_price(4) == (2_000 + 2_001) * WAD // 2
    assert oracle.index_price(5) == 2_001 * WAD


# ---------------------------------------------------------------- revert reasons


def test_unknown_market_reverts(oracle, eth_market):
    assert not oracle.has_feeds(99)
    with boa.reverts("oracle: unknown market"):
        oracle.index_price(99)


@pytest.mark.parametrize(
    "round_id, started_at, updated_at, answered_in_round",
    [
        (5, NOW, 0, 5),  # never answered
        (5, 0, NOW, 5),  # never started
        (5, NOW, NOW, 4),  # answer carried over from an older round
        (7, 0, 0, 7),  # the all-zero row of a real export
    ],
)
def test_incomplete_round_reverts(
    oracle, eth_feed, eth_market, round_id, started_at, updated_at, answered_in_round
):
    eth_feed.set_round(round_id, 2_000 * 10**8, started_at, updated_at, answered_in_round)
    with boa.reverts("oracle: incomplete round"):
        oracle.index_price(eth_market)


def test_feed_that_never_published_reverts(oracle, make_feed, owner):
    silent = make_feed(8, 0)
    assert silent.latestRoundData() == (0, 0, 0, 0, 0)
    with boa.env.prank(owner):
        oracle.set_feeds(1, [(silent.address, HOUR)], 0)
    with boa.reverts("oracle: incomplete round"):
        oracle.index_price(1)


@pytest.mark.parametrize("answer", [0, -1, -(2**255)])
def test_non_positive_price_reverts(oracle, eth_feed, eth_market, answer):
    publish(eth_feed, answer)
    with boa.reverts("oracle: non-positive price"):
        oracle.index_price(eth_market)


def test_future_timestamp_reverts(oracle, eth_feed, eth_market):
    publish(eth_feed, 2_000 * 10**8, updated_at=NOW + 1)
    with boa.reverts("oracle: future timestamp"):
        oracle.index_price(eth_market)


def test_price_goes_stale_one_second_after_the_heartbeat(oracle, eth_feed, eth_market):
    boa.env.timestamp = NOW + HOUR
    assert oracle.index_price(eth_market) == 2_000 * WAD

    boa.env.timestamp = NOW + HOUR + 1
    with boa.reverts("oracle: stale price"):
        oracle.index_price(eth_market)

    publish(eth_feed, 2_100 * 10**8)  # the next round brings the market back
    assert oracle.index_price(eth_market) == 2_100 * WAD


def test_checks_run_in_documented_order(oracle, eth_feed, eth_market):
    # incomplete and negative and from the future: incomplete first
    eth_feed.set_round(9, -5, NOW + 10, NOW + 10, 8)
    with boa.reverts("oracle: incomplete round"):
        oracle.index_price(eth_market)
    # negative and from the future: non-positive first
    eth_feed.set_round(10, -5, NOW + 10, NOW + 10, 10)
    with boa.reverts("oracle: non-positive price"):
        oracle.index_price(eth_market)
    # negative and stale: non-positive first
    eth_feed.set_round(11, -5, NOW - 2 * HOUR, NOW - 2 * HOUR, 11)
    with boa.reverts("oracle: non-positive price"):
        oracle.index_price(eth_market)
    # positive and stale: stale
    eth_feed.set_round(12, 5, NOW - 2 * HOUR, NOW - 2 * HOUR, 12)
    with boa.reverts("oracle: stale price"):
        oracle.index_price(eth_market)


def test_first_failing_feed_gives_the_reason(oracle, three_feeds, median_market):
    publish(three_feeds[2], 2_000 * 10**6, updated_at=NOW - HOUR - 1)  # third: stale
    publish(three_feeds[1], 0)  # second: non-positive
    with boa.reverts("oracle: non-positive price"):
        oracle.index_price(median_market)


@pytest.mark.parametrize(
    "decimals, answer",
    [
        (36, 10**18 - 1),  # below 1 wei of WAD: would normalise to 0
        (0, 10**36 + 1),  # above MAX_PRICE
        (8, 2**255 - 1),  # would overflow the scaling
    ],
)
def test_price_out_of_range_reverts(oracle, make_feed, owner, decimals, answer):
    feed = make_feed(decimals, answer)
    with boa.env.prank(owner):
        oracle.set_feeds(8, [(feed.address, HOUR)], 0)
    with boa.reverts("oracle: price out of range"):
        oracle.index_price(8)


def test_max_price_is_accepted(oracle, make_feed, owner):
    feed = make_feed(0, 10**18)
    with boa.env.prank(owner):
        oracle.set_feeds(8, [(feed.address, HOUR)], 0)
    assert oracle.index_price(8) == oracle.MAX_PRICE() == 10**36


def test_feeds_disagree_beyond_max_deviation(oracle, make_feed, owner):
    low, high = make_feed(8, 2_000 * 10**8), make_feed(8, 2_020 * 10**8)  # exactly 1 % apart
    with boa.env.prank(owner):
        oracle.set_feeds(3, [(low.address, HOUR), (high.address, HOUR)], WAD // 100)
    assert oracle.index_price(3) == 2_010 * WAD  # at the limit: accepted

    publish(high, 2_020 * 10**8 + 1)
    with boa.reverts("oracle: feeds disagree"):
        oracle.index_price(3)


def test_sequencer_down_reverts_every_market(oracle, sequencer, eth_market, median_market):
    sequencer.set_round(2, 1, NOW - 60, NOW - 60, 2)
    for market_id in (eth_market, median_market, 99):  # checked before the market, too
        with boa.reverts("oracle: sequencer down"):
            oracle.index_price(market_id)


def test_sequencer_unknown_status_counts_as_down(oracle, sequencer, eth_market):
    sequencer.set_round(2, 0, 0, NOW, 2)
    with boa.reverts("oracle: sequencer down"):
        oracle.index_price(eth_market)


def test_sequencer_grace_period(oracle, sequencer, eth_market):
    back_up = NOW - HOUR
    sequencer.set_round(3, 0, back_up, back_up, 3)  # came back up exactly one hour ago
    with boa.reverts("oracle: sequencer grace period"):
        oracle.index_price(eth_market)

    boa.env.timestamp = NOW + 1  # one hour and one second after coming back up
    assert oracle.index_price(eth_market) == 2_000 * WAD


def test_sequencer_up_then_down(oracle, sequencer, eth_market):
    assert (oracle.sequencer_feed(), oracle.grace_period()) == (sequencer.address, HOUR)
    assert oracle.index_price(eth_market) == 2_000 * WAD
    sequencer.set_round(2, 1, NOW, NOW, 2)
    with boa.reverts("oracle: sequencer down"):
        oracle.index_price(eth_market)


def test_without_sequencer_feed_no_check(oracle, eth_market):
    assert (oracle.sequencer_feed(), oracle.grace_period()) == (ZERO_ADDRESS, 0)
    assert oracle.index_price(eth_market) == 2_000 * WAD


def test_failed_read_changes_nothing(oracle, eth_feed, eth_market):
    config = (oracle.feeds(eth_market), oracle.max_deviation(eth_market))
    publish(eth_feed, 2_000 * 10**8, updated_at=NOW + 5)
    with boa.reverts("oracle: future timestamp"):
        oracle.index_price(eth_market)
    assert (oracle.feeds(eth_market), oracle.max_deviation(eth_market)) == config

    boa.env.timestamp = NOW + 5  # the round is now current: the same config prices it
    assert oracle.index_price(eth_market) == 2_000 * WAD


# ---------------------------------------------------------------- configuration


def test_set_feeds_stores_config_and_emits(oracle, three_feeds, owner):
    with boa.env.prank(owner):
        configs = [(feed.address, HOUR * (i + 1)) for i, feed in enumerate(three_feeds)]
        oracle.set_feeds(2, configs, WAD // 50)

    (event,) = oracle.get_logs()
    assert type(event).__name__ == "FeedsSet"
    assert event.market_id == 2
    assert list(event.aggregators) == [feed.address for feed in three_feeds]
    assert list(event.heartbeats) == [HOUR, 2 * HOUR, 3 * HOUR]
    assert event.max_deviation == WAD // 50

    assert oracle.has_feeds(2)
    assert oracle.max_deviation(2) == WAD // 50
    assert [tuple(info) for info in oracle.feeds(2)] == [
        (three_feeds[0].address, HOUR, 8),
        (three_feeds[1].address, 2 * HOUR, 18),
        (three_feeds[2].address, 3 * HOUR, 6),
    ]


def test_set_feeds_replaces_the_previous_feeds(
    oracle, three_feeds, median_market, make_feed, owner
):
    single = make_feed(8, 3_000 * 10**8)
    with boa.env.prank(owner):
        oracle.set_feeds(median_market, [(single.address, 2 * HOUR)], 0)

    assert [tuple(info) for info in oracle.feeds(median_market)] == [(single.address, 2 * HOUR, 8)]
    assert oracle.max_deviation(median_market) == 0
    assert oracle.index_price(median_market) == 3_000 * WAD
    # the unused slots were cleared: growing back to two feeds reads only what was set
    with boa.env.prank(owner):
        pair = [(single.address, HOUR), (three_feeds[2].address, HOUR)]
        oracle.set_feeds(median_market, pair, WAD)
    assert len(oracle.feeds(median_market)) == 2


@pytest.mark.parametrize(
    "case, reason",
    [
        ("no feeds", "oracle: no feeds"),
        ("zero aggregator", "oracle: zero aggregator"),
        ("duplicate", "oracle: duplicate feed"),
        ("zero heartbeat", "oracle: invalid heartbeat"),
        ("heartbeat over 7 days", "oracle: invalid heartbeat"),
        ("37 decimals", "oracle: invalid decimals"),
        ("deviation over 100 %", "oracle: invalid deviation"),
        ("zero deviation, two feeds", "oracle: invalid deviation"),
    ],
)
def test_invalid_set_feeds_reverts_and_keeps_old_config(
    oracle, median_market, make_feed, owner, case, reason
):
    a, b = make_feed(8), make_feed(8)
    feeds, deviation = {
        "no feeds": ([], 0),
        "zero aggregator": ([(a.address, HOUR), (ZERO_ADDRESS, HOUR)], WAD // 100),
        "duplicate": ([(a.address, HOUR), (b.address, HOUR), (a.address, HOUR)], WAD // 100),
        "zero heartbeat": ([(a.address, 0)], 0),
        "heartbeat over 7 days": ([(a.address, 7 * 86400 + 1)], 0),
        "37 decimals": ([(make_feed(37, 10**37).address, HOUR)], 0),
        "deviation over 100 %": ([(a.address, HOUR)], WAD + 1),
        "zero deviation, two feeds": ([(a.address, HOUR), (b.address, HOUR)], 0),
    }[case]

    def state():
        m = median_market
        return oracle.feeds(m), oracle.max_deviation(m), oracle.index_price(m)

    before = state()
    aggregators, heartbeats = [f[0] for f in feeds], [f[1] for f in feeds]
    decimals = [37 if case == "37 decimals" else 8 for _ in feeds]
    assert ref.feeds_config_error(aggregators, heartbeats, decimals, deviation) == reason

    with boa.env.prank(owner):
        with boa.reverts(reason):
            oracle.set_feeds(median_market, feeds, deviation)

    assert state() == before


def test_boundary_configs_are_accepted(oracle, make_feed, owner):
    feed = make_feed(36, 2_000 * 10**36)
    with boa.env.prank(owner):
        oracle.set_feeds(6, [(feed.address, 7 * 86400)], WAD)
    assert oracle.feeds(6)[0][1:] == (7 * 86400, 36)
    assert oracle.index_price(6) == 2_000 * WAD


def test_set_feeds_rejects_six_feeds_and_non_aggregators(oracle, make_feed, owner, attacker):
    feeds = [(make_feed(8).address, HOUR) for _ in range(6)]
    with boa.env.prank(owner):
        with boa.reverts():  # the ABI decoder rejects more than MAX_FEEDS entries
            oracle.set_feeds(9, feeds, WAD // 100)
        with boa.reverts():  # an account without code has no decimals()
            oracle.set_feeds(9, [(attacker, HOUR)], 0)
    assert not oracle.has_feeds(9)


def test_grace_period_is_bounded(oracle_deployer, sequencer_feed, owner):
    with boa.env.prank(owner):
        with boa.reverts("oracle: invalid grace period"):
            oracle_deployer.deploy(sequencer_feed.address, 86400 + 1)
        oracle = oracle_deployer.deploy(sequencer_feed.address, 86400)
    (event,) = [e for e in oracle.get_logs() if type(e).__name__ == "SequencerFeedSet"]
    assert (event.feed, event.grace_period) == (sequencer_feed.address, 86400)
    assert oracle.sequencer_feed() == sequencer_feed.address
    assert oracle.grace_period() == 86400


# ---------------------------------------------------------------- access control


def test_attacker_cannot_configure(oracle, eth_feed, eth_market, attacker):
    with boa.env.prank(attacker):
        with boa.reverts(NOT_OWNER):
            oracle.set_feeds(eth_market, [(attacker, HOUR)], 0)
        with boa.reverts(NOT_OWNER):
            oracle.set_configurator(attacker)
    assert oracle.feeds(eth_market)[0][0] == eth_feed.address
    assert oracle.sequencer_feed() == ZERO_ADDRESS
    assert oracle.configurator() == ZERO_ADDRESS


def test_configurator_sets_feeds_but_nothing_else(oracle, eth_feed, configurator, owner):
    with boa.env.prank(owner):
        oracle.set_configurator(configurator)
    (event,) = oracle.get_logs()
    assert (type(event).__name__, event.configurator) == ("ConfiguratorSet", configurator)

    with boa.env.prank(configurator):
        oracle.set_feeds(11, [(eth_feed.address, HOUR)], 0)
        with boa.reverts(NOT_OWNER):
            oracle.set_configurator(configurator)
    assert oracle.index_price(11) == 2_000 * WAD

    with boa.env.prank(owner):
        oracle.set_configurator(ZERO_ADDRESS)
    with boa.env.prank(configurator):
        with boa.reverts(NOT_OWNER):
            oracle.set_feeds(11, [(eth_feed.address, HOUR)], 0)


def test_two_step_ownership_transfer(oracle, owner, configurator, attacker, eth_feed):
    new_owner = boa.env.generate_address("new_owner")
    assert not hasattr(oracle, "renounce_ownership")
    with boa.env.prank(owner):
        oracle.transfer_ownership(new_owner)
    assert oracle.owner() == owner
    assert oracle.pending_owner() == new_owner

    with boa.env.prank(attacker):
        with boa.reverts("ownable_2step: caller is not the new owner"):
            oracle.accept_ownership()
    with boa.env.prank(new_owner):
        oracle.accept_ownership()
    assert oracle.owner() == new_owner
    assert oracle.pending_owner() == ZERO_ADDRESS

    with boa.env.prank(owner):
        with boa.reverts(NOT_OWNER):
            oracle.set_configurator(configurator)
    with boa.env.prank(new_owner):
        oracle.set_feeds(1, [(eth_feed.address, HOUR)], 0)
    assert oracle.has_feeds(1)


# ---------------------------------------------------------------- MockAggregator


def test_mock_publishes_rounds_like_chainlink(make_feed, owner, keeper, attacker):
    feed = make_feed(8, 1_000 * 10**8, "BTC / USD")
    assert (feed.decimals(), feed.description(), feed.version()) == (8, "BTC / USD", 4)
    assert feed.latestRoundData() == (1, 1_000 * 10**8, NOW, NOW, 1)

    with boa.env.prank(attacker):
        with boa.reverts(NOT_OWNER):
            feed.update_answer(1)
        with boa.reverts(NOT_OWNER):
            feed.set_updater(attacker, True)
    with boa.env.prank(owner):
        feed.set_updater(keeper, True)

    boa.env.timestamp = NOW + 60
    with boa.env.prank(keeper):
        feed.update_answer(1_001 * 10**8)
    new_round, answer_updated = feed.get_logs()
    assert type(new_round).__name__ == "NewRound"
    assert (new_round.roundId, new_round.startedBy, new_round.startedAt) == (2, keeper, NOW + 60)
    assert type(answer_updated).__name__ == "AnswerUpdated"
    assert (answer_updated.current, answer_updated.roundId, answer_updated.updatedAt) == (
        1_001 * 10**8,
        2,
        NOW + 60,
    )
    assert feed.latestRoundData() == (2, 1_001 * 10**8, NOW + 60, NOW + 60, 2)
    assert feed.getRoundData(1) == (1, 1_000 * 10**8, NOW, NOW, 1)
    assert (feed.latestAnswer(), feed.latestRound()) == (1_001 * 10**8, 2)

    with boa.env.prank(owner):
        feed.set_updater(keeper, False)
    with boa.env.prank(keeper):
        with boa.reverts(NOT_OWNER):
            feed.update_answer(1)


def test_mock_set_round_replays_raw_rounds(make_feed, owner):
    feed = make_feed(8, 0)
    assert feed.latestRoundData() == (0, 0, 0, 0, 0)
    with boa.reverts("aggregator: no data"):
        feed.getRoundData(1)

    raw = (2**80 - 1, -(2**255), 2**48 - 1, 2**48 - 1, 2**80 - 2)
    with boa.env.prank(owner):
        feed.set_round(*raw)
        feed.set_round(7, 0, 0, 0, 7)  # the malformed all-zero row of a real export
        with boa.reverts("aggregator: zero round"):
            feed.set_round(0, 1, 1, 1, 0)
        with boa.reverts("aggregator: timestamp too large"):
            feed.set_round(8, 1, 2**48, 1, 8)
    assert feed.latestRoundData() == (7, 0, 0, 0, 7)
    assert feed.getRoundData(2**80 - 1) == raw
    assert feed.getRoundData(7) == (7, 0, 0, 0, 7)

    with boa.env.prank(owner):
        feed.update_answer(5)  # continues from the latest round
    assert feed.latestRoundData()[0] == 8


def test_mock_two_step_ownership(make_feed, owner, keeper):
    feed = make_feed()
    with boa.env.prank(owner):
        feed.transfer_ownership(keeper)
    with boa.env.prank(keeper):
        feed.accept_ownership()
        feed.update_answer(3)
    assert feed.owner() == keeper
    assert feed.latestAnswer() == 3


# ---------------------------------------------------------------- gas


@pytest.mark.metered
def test_index_price_gas(oracle, eth_market, median_market):
    one_feed = cold_gas(oracle, "index_price", eth_market)
    three_feeds = cold_gas(oracle, "index_price", median_market)
    print(f"\nindex_price gas, cold: 1 feed {one_feed}, 3 feeds {three_feeds}")
    assert one_feed <= GAS_TARGET_ONE_FEED
    assert three_feeds <= 3 * GAS_TARGET_ONE_FEED


@pytest.mark.metered
def test_index_price_gas_with_sequencer(oracle, sequencer, eth_market):
    gas = cold_gas(oracle, "index_price", eth_market)
    print(f"\nindex_price gas, cold, 1 feed + sequencer: {gas}")
    assert gas <= 2 * GAS_TARGET_ONE_FEED


# ---------------------------------------------------------------- real data replay


def write_latest_round(feed, round: Round) -> None:
    """Make `round` the feed's latest, as `set_round` does, by writing the two storage slots
    `latestRoundData` reads (no transaction: the replay of 10,000 rounds takes about half the
    time). The replay checks it against `set_round` every 50th round."""
    packed = round.round_id | round.answered_in_round << 80 | round.started_at << 160 | round.updated_at << 208
    boa.env.set_storage(feed.address, feed._storage._latest_answer.slot, round.answer % 2**256)
    boa.env.set_storage(feed.address, feed._storage._latest_round.slot, packed)


def test_replay_chainlink_eth_usd_rounds(oracle, make_feed, owner):
    """Every round of ten months of mainnet ETH/USD, oldest first, read 12 s after its update;
    every 50th round also at exactly the heartbeat (fresh) and one second later (stale). Every
    50th round is published with `set_round`, the others are written to storage directly."""
    rounds = sorted(ref.load_chainlink_rounds(ROUNDS_CSV), key=lambda r: r.round_id)
    assert len(rounds) > 10_000
    malformed = [r for r in rounds if ref.validate_round(r, HOUR, r.updated_at + 12) is not None]
    assert malformed == [Round(rounds[0].round_id, 0, 0, 0, rounds[0].round_id)]

    feed = make_feed(8, 0, "ETH / USD")
    with boa.env.prank(owner):
        oracle.set_feeds(1, [(feed.address, HOUR)], 0)

    now = min(r.updated_at for r in rounds if r.updated_at > 0)
    outcomes: dict[str, int] = {}
    latest = [feed._storage._latest_answer.slot, feed._storage._latest_round.slot]
    with boa.env.prank(owner):
        for index, round in enumerate(rounds):
            checks = [max(now, round.updated_at + 12)]
            if index % 50 == 0:
                feed.set_round(*round.as_tuple())
                written = [boa.env.get_storage(feed.address, slot) for slot in latest]
                write_latest_round(feed, round)  # the same storage, or the shortcut is wrong
                assert [boa.env.get_storage(feed.address, slot) for slot in latest] == written, round
                if round.updated_at > 0:
                    checks += [round.updated_at + HOUR, round.updated_at + HOUR + 1]
            else:
                write_latest_round(feed, round)
            now = checks[0]
            for at in checks:
                boa.env.timestamp = at
                expected = ref.index_price_or_reason([FeedReading(round, HOUR, 8)], 0, at)
                assert price_or_reason(oracle, 1) == expected, (index, round, at)
                key = expected if isinstance(expected, str) else "price"
                outcomes[key] = outcomes.get(key, 0) + 1
            boa.env.timestamp = now

    assert outcomes["oracle: incomplete round"] == 1  # the all-zero row, rejected
    assert outcomes["oracle: stale price"] == len(range(0, len(rounds), 50)) - 1
    assert outcomes["price"] == len(rounds) - 1 + outcomes["oracle: stale price"]
    assert set(outcomes) == {"price", "oracle: incomplete round", "oracle: stale price"}


# ---------------------------------------------------------------- differential property test

TIMESTAMP_MAX = 2**48 - 1


def mostly(valid: st.SearchStrategy, *faults: st.SearchStrategy) -> st.SearchStrategy:
    """`valid` about 24 times in 25, otherwise one of `faults`: most examples reach the median
    and the deviation check, and every fault still shows up."""
    fault = st.one_of(*faults)
    return st.integers(0, 24).flatmap(lambda roll: valid if roll else fault)


@st.composite
def feed_readings(draw, now: int) -> tuple[list[FeedReading], int]:
    count = draw(st.integers(1, 5))
    # a common price the feeds cluster around: 1 to 1e6 USD, sometimes anything up to 1e37
    base_wad = draw(mostly(st.integers(WAD, 10**6 * WAD), st.integers(1, 10**37)))
    readings = []
    for _ in range(count):
        decimals = draw(st.integers(0, 36))
        heartbeat = draw(st.integers(1, 7 * 86400))
        spread_ppm = draw(st.integers(-20_000, 20_000))  # within +-2 % of the common price
        near = base_wad * 10**decimals * (10**6 + spread_ppm) // (WAD * 10**6)
        answer = draw(mostly(st.just(near), st.integers(-(2**255), 2**255 - 1), st.integers(-3, 3)))
        age = draw(
            mostly(
                st.integers(0, heartbeat),
                st.integers(heartbeat, heartbeat + 3),  # just stale
                st.integers(-3, -1),  # from the future
                st.integers(-now, 2 * 86400),
            )
        )
        updated_at = min(max(now - age, 0), TIMESTAMP_MAX)
        started_at = draw(
            mostly(st.integers(1, max(updated_at, 1)), st.just(0), st.integers(0, TIMESTAMP_MAX))
        )
        round_id = draw(st.integers(1, 2**80 - 1))
        answered_in_round = draw(
            mostly(st.integers(round_id, 2**80 - 1), st.integers(0, round_id - 1))
        )
        round = Round(round_id, answer, started_at, updated_at, answered_in_round)
        readings.append(FeedReading(round, heartbeat, decimals))
    max_deviation = draw(
        st.one_of(st.sampled_from([1, WAD // 100, WAD // 50, WAD // 20, WAD]), st.integers(1, WAD))
    )
    return readings, max_deviation


@st.composite
def sequencer_statuses(draw, now: int) -> SequencerStatus | None:
    if draw(st.booleans()):
        return None
    grace = draw(st.integers(0, 86400))
    answer = draw(mostly(st.just(0), st.integers(1, 2)))
    started_at = draw(
        mostly(st.integers(1, now - grace - 1), st.integers(now - grace, now + 3), st.just(0))
    )
    started_at = min(max(started_at, 0), TIMESTAMP_MAX)
    return SequencerStatus(Round(1, answer, started_at, started_at, 1), grace)


@st.composite
def oracle_cases(draw):
    now = draw(st.integers(10**9, 2**40))
    readings, max_deviation = draw(feed_readings(now))
    return now, readings, max_deviation, draw(sequencer_statuses(now))


@pytest.fixture(scope="module")
def feed_pool(aggregator_deployer, owner):
    """Five mock feeds for every decimals value 0..36 (hypothesis examples share them)."""
    with boa.env.prank(owner):
        return {d: [aggregator_deployer.deploy(d, "pool", 0) for _ in range(5)] for d in range(37)}


@pytest.fixture(scope="module")
def uptime_feed(aggregator_deployer, owner):
    with boa.env.prank(owner):
        return aggregator_deployer.deploy(0, "L2 Sequencer Uptime Status Feed", 0)


@pytest.fixture(scope="module")
def pool_oracle(oracle_deployer, owner):
    """The oracle of the examples without a sequencer feed (one with a feed is deployed per
    example: the feed and its grace period are fixed at deployment)."""
    with boa.env.prank(owner):
        return oracle_deployer.deploy(ZERO_ADDRESS, 0)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=oracle_cases())
def test_contract_matches_reference_model(pool_oracle, oracle_deployer, feed_pool, uptime_feed, owner, case):
    now, readings, max_deviation, sequencer = case
    if sequencer is not None:
        with boa.env.prank(owner):
            pool_oracle = oracle_deployer.deploy(uptime_feed.address, sequencer.grace_period)
    used: dict[int, int] = {}
    configs = []
    with boa.env.prank(owner):
        for reading in readings:
            feed = feed_pool[reading.decimals][used.get(reading.decimals, 0)]
            used[reading.decimals] = used.get(reading.decimals, 0) + 1
            feed.set_round(*reading.round.as_tuple())
            configs.append((feed.address, reading.heartbeat))
        pool_oracle.set_feeds(1, configs, max_deviation)
        if sequencer is not None:
            uptime_feed.set_round(*sequencer.round.as_tuple())

    boa.env.timestamp = now
    expected = ref.index_price_or_reason(readings, max_deviation, now, sequencer)
    event(expected if isinstance(expected, str) else f"price from {len(readings)} feeds")
    assert price_or_reason(pool_oracle, 1) == expected
