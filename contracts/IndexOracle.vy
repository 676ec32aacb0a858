# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title IndexOracle
@custom:contract-name IndexOracle
@license GNU Affero General Public License v3.0 only
@notice Index price of every perpdex market, in WAD (18 decimals), from one to five
        Chainlink-compatible feeds (`AggregatorV3Interface.latestRoundData`). Each answer is
        validated (complete round, positive, not from the future, not older than the feed's
        heartbeat), normalised to WAD rounding down, and, with several feeds, combined into
        their median, rejected when the feeds disagree by more than the market's maximum
        deviation. An optional L2 sequencer-uptime feed blocks every price while the
        sequencer is down and for a grace period after it comes back up. With no valid price
        `index_price` reverts with an "oracle: ..." reason, so every price-dependent action
        of the exchange reverts with it. See docs/oracle.md.
@custom:security The deployer fixes the sequencer feed; the owner (a multisig) sets the configurator and any
        market's feeds; the configurator (the exchange) sets the feeds of the markets it
        lists. Neither can set an unbounded heartbeat, more than 5 feeds, a zero or
        duplicate aggregator, or a deviation above 100 %. Reads never write state and are
        `@reentrant`, so the exchange may read them in the middle of its own calls. Every
        feed's configuration is packed in one storage slot to keep a price read cheap.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from .interfaces import IIndexOracle
from .interfaces import AggregatorV3Interface

implements: IIndexOracle

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)


# ---------------------------------------------------------------- CONSTANTS

WAD: constant(uint256) = 10**18

# @notice Most feeds one market may combine.
MAX_FEEDS: public(constant(uint256)) = 5
# @notice Longest heartbeat a feed may be configured with, in seconds.
MAX_HEARTBEAT: public(constant(uint256)) = 7 * 86400
# @notice Most decimals an aggregator may report.
MAX_DECIMALS: public(constant(uint256)) = 36
# @notice Longest grace period after the sequencer comes back up, in seconds.
MAX_GRACE_PERIOD: public(constant(uint256)) = 86400
# @notice Highest index price accepted, in WAD (10**18 USD per unit). Any price the oracle
#         returns is in [1, MAX_PRICE], so callers may multiply it by WAD-scaled sizes freely.
MAX_PRICE: public(constant(uint256)) = 10**36

# Packed feed slot: aggregator (bits 0..159) | heartbeat (160..191) | decimals (192..199).
# The first feed's slot also carries the market's feed count (200..207), so a one-feed
# market is priced from that single slot without reading the market slot.
ADDRESS_MASK: constant(uint256) = 2**160 - 1
HEARTBEAT_SHIFT: constant(uint256) = 160
HEARTBEAT_MASK: constant(uint256) = 2**32 - 1
DECIMALS_SHIFT: constant(uint256) = 192
DECIMALS_MASK: constant(uint256) = 2**8 - 1
HEAD_COUNT_SHIFT: constant(uint256) = 200

# Packed market slot: feed count (bits 0..7) | max_deviation (8..255).
COUNT_MASK: constant(uint256) = 2**8 - 1
DEVIATION_SHIFT: constant(uint256) = 8

# Packed sequencer slot: feed (bits 0..159) | grace period (160..255).
GRACE_SHIFT: constant(uint256) = 160


# ---------------------------------------------------------------- STRUCTS

struct FeedInfo:
    aggregator: address
    heartbeat: uint256
    decimals: uint8


# ---------------------------------------------------------------- STORAGE

# @notice The account (the exchange) allowed to set feeds besides the owner.
configurator: public(address)

# market id => packed feed slots (only the first `count` are meaningful; the first one also
# holds the count, written together with `_market_config` by `set_feeds` only)
_feed_config: HashMap[uint256, uint256[MAX_FEEDS]]
# market id => feed count | max_deviation << 8
_market_config: HashMap[uint256, uint256]
# sequencer-uptime feed | grace period << 160, fixed at deployment: it is the chain's, and an
# immutable costs no storage read on every price
SEQUENCER_CONFIG: immutable(uint256)


# ---------------------------------------------------------------- CONSTRUCTOR


@deploy
def __init__(sequencer_feed: address, grace_period: uint256):
    """
    @notice The deployer becomes the owner. No market has feeds yet.
    @param sequencer_feed The chain's L2 sequencer-uptime feed (Chainlink: answer 0 = up,
           1 = down), checked before every price; empty(address) on a chain without one. Fixed
           for the oracle's life.
    @param grace_period Seconds after the sequencer comes back up during which prices are
           still refused, at most MAX_GRACE_PERIOD.
    """
    ownable.__init__()
    ownable_2step.__init__()
    assert grace_period <= MAX_GRACE_PERIOD, "oracle: invalid grace period"
    SEQUENCER_CONFIG = convert(sequencer_feed, uint256) | (grace_period << GRACE_SHIFT)
    log IIndexOracle.SequencerFeedSet(feed=sequencer_feed, grace_period=grace_period)


# ---------------------------------------------------------------- EXTERNAL: ADMIN


@external
def set_configurator(configurator: address):
    """
    @notice Let `configurator` (the exchange) set feeds. empty(address) revokes it.
    @param configurator The new configurator, replacing the previous one.
    """
    ownable._check_owner()
    self.configurator = configurator
    log IIndexOracle.ConfiguratorSet(configurator=configurator)


@external
def set_feeds(
    market_id: uint256,
    feeds: DynArray[IIndexOracle.FeedConfig, MAX_FEEDS],
    max_deviation: uint256,
):
    """
    @notice Replace the feeds of `market_id`. Reads each aggregator's `decimals()` now and
            stores it with the feed. Callable by the owner or the configurator.
    @param market_id The market.
    @param feeds One to MAX_FEEDS distinct aggregators, each with a heartbeat in
           (0, MAX_HEARTBEAT] seconds.
    @param max_deviation Largest accepted (max - min) / min between the feeds' answers, in
           WAD (10**18 = 100 %); at most WAD, and above zero with two feeds or more.
    """
    if msg.sender != self.configurator:
        ownable._check_owner()

    count: uint256 = len(feeds)
    assert count != 0, "oracle: no feeds"
    assert max_deviation <= WAD, "oracle: invalid deviation"
    assert count == 1 or max_deviation != 0, "oracle: invalid deviation"

    aggregators: DynArray[address, MAX_FEEDS] = []
    heartbeats: DynArray[uint256, MAX_FEEDS] = []
    for feed: IIndexOracle.FeedConfig in feeds:
        assert feed.aggregator != empty(address), "oracle: zero aggregator"
        assert feed.aggregator not in aggregators, "oracle: duplicate feed"
        assert feed.heartbeat != 0 and feed.heartbeat <= MAX_HEARTBEAT, "oracle: invalid heartbeat"
        decimals: uint8 = staticcall AggregatorV3Interface(feed.aggregator).decimals()
        assert convert(decimals, uint256) <= MAX_DECIMALS, "oracle: invalid decimals"
        config: uint256 = (
            convert(feed.aggregator, uint256)
            | (feed.heartbeat << HEARTBEAT_SHIFT)
            | (convert(decimals, uint256) << DECIMALS_SHIFT)
        )
        if len(aggregators) == 0:
            config |= count << HEAD_COUNT_SHIFT
        self._feed_config[market_id][len(aggregators)] = config
        aggregators.append(feed.aggregator)
        heartbeats.append(feed.heartbeat)

    # clear the slots of a longer previous configuration (gas refund, clean `feeds` reads)
    previous: uint256 = self._market_config[market_id] & COUNT_MASK
    for i: uint256 in range(count, MAX_FEEDS, bound=MAX_FEEDS):
        if i >= previous:
            break
        self._feed_config[market_id][i] = 0

    self._market_config[market_id] = count | (max_deviation << DEVIATION_SHIFT)
    log IIndexOracle.FeedsSet(
        market_id=market_id,
        aggregators=aggregators,
        heartbeats=heartbeats,
        max_deviation=max_deviation,
    )


# ---------------------------------------------------------------- EXTERNAL: VIEWS


@external
@view
@reentrant
def index_price(market_id: uint256) -> uint256:
    """
    @notice The index price of `market_id`: the median of its feeds' answers in WAD. Reverts
            with an "oracle: ..." reason when the sequencer is down or in its grace period,
            the market has no feeds, any feed's round is incomplete, non-positive, from the
            future, stale or out of range, or the feeds disagree.
    @param market_id The market.
    @return The index price in WAD, in [1, MAX_PRICE].
    """
    sequencer: uint256 = SEQUENCER_CONFIG
    if sequencer & ADDRESS_MASK != 0:
        self._check_sequencer(sequencer)

    head: uint256 = self._feed_config[market_id][0]
    count: uint256 = head >> HEAD_COUNT_SHIFT
    assert count != 0, "oracle: unknown market"
    if count == 1:
        return self._feed_price(head)

    # insertion sort into `prices` as the feeds are read, in configuration order
    prices: uint256[MAX_FEEDS] = empty(uint256[MAX_FEEDS])
    prices[0] = self._feed_price(head)
    for i: uint256 in range(1, count, bound=MAX_FEEDS):
        price: uint256 = self._feed_price(self._feed_config[market_id][i])
        j: uint256 = i
        for _: uint256 in range(MAX_FEEDS):
            if j == 0 or prices[j - 1] <= price:
                break
            prices[j] = prices[j - 1]
            j -= 1
        prices[j] = price

    low: uint256 = prices[0]
    high: uint256 = prices[count - 1]
    deviation: uint256 = self._market_config[market_id] >> DEVIATION_SHIFT
    # no overflow: both prices are <= MAX_PRICE = 1e36 and max_deviation <= WAD
    assert (high - low) * WAD <= deviation * low, "oracle: feeds disagree"

    middle: uint256 = count // 2
    if count % 2 == 1:
        return prices[middle]
    # even count: the mean of the two middle prices, rounded down
    return (prices[middle - 1] + prices[middle]) // 2


@external
@view
@reentrant
def round_price(market_id: uint256, round_ids: DynArray[uint80, MAX_FEEDS]) -> IIndexOracle.RoundPrice:
    """
    @notice The index at named past rounds, for two-step orders: the median of the answers of
            `round_ids` (one round per feed, in configuration order) and the median of the
            rounds just before them, with when they were published. Each named round is
            validated like a latest round (complete, positive, not from the future, not older
            than the feed's heartbeat now, feeds agreeing); each previous round must be
            complete and positive.
    @param market_id The market.
    @param round_ids One round id per feed of the market.
    @return price (WAD), previous (WAD), published (earliest updatedAt of the named rounds),
            previous_published (latest updatedAt of the rounds before them).
    """
    sequencer: uint256 = SEQUENCER_CONFIG
    if sequencer & ADDRESS_MASK != 0:
        self._check_sequencer(sequencer)
    head: uint256 = self._feed_config[market_id][0]
    count: uint256 = head >> HEAD_COUNT_SHIFT
    assert count != 0, "oracle: unknown market"
    assert len(round_ids) == count, "oracle: one round id per feed expected"

    prices: uint256[MAX_FEEDS] = empty(uint256[MAX_FEEDS])
    previous: uint256[MAX_FEEDS] = empty(uint256[MAX_FEEDS])
    published: uint256 = max_value(uint256)
    previous_published: uint256 = 0
    for i: uint256 in range(count, bound=MAX_FEEDS):
        config: uint256 = head
        if i > 0:
            config = self._feed_config[market_id][i]
        round_id: uint80 = round_ids[i]
        # a previous round exists inside the same Chainlink phase (low 64 bits of the id)
        assert convert(round_id, uint256) & (2**64 - 1) > 1, "oracle: no previous round"
        price: uint256 = 0
        updated_at: uint256 = 0
        price, updated_at = self._round_answer(config, round_id, True)
        prev_price: uint256 = 0
        prev_updated: uint256 = 0
        prev_price, prev_updated = self._round_answer(config, round_id - 1, False)
        published = min(published, updated_at)
        previous_published = max(previous_published, prev_updated)
        prices = self._insert_sorted(prices, i, price)
        previous = self._insert_sorted(previous, i, prev_price)

    if count > 1:
        deviation: uint256 = self._market_config[market_id] >> DEVIATION_SHIFT
        assert (prices[count - 1] - prices[0]) * WAD <= deviation * prices[0], "oracle: feeds disagree"
    return IIndexOracle.RoundPrice(
        price=self._median(prices, count),
        previous=self._median(previous, count),
        published=published,
        previous_published=previous_published,
    )


@external
@view
@reentrant
def has_feeds(market_id: uint256) -> bool:
    """
    @notice Whether `market_id` has feeds configured (not whether its price is valid now).
    @param market_id The market.
    @return True when at least one feed is configured.
    """
    return self._market_config[market_id] & COUNT_MASK != 0


@external
@view
@reentrant
def feeds(market_id: uint256) -> DynArray[FeedInfo, MAX_FEEDS]:
    """
    @notice The feeds of `market_id`, in configuration order, with the decimals read from
            each aggregator when it was configured.
    @param market_id The market.
    @return One FeedInfo (aggregator, heartbeat, decimals) per feed; empty if none.
    """
    result: DynArray[FeedInfo, MAX_FEEDS] = []
    count: uint256 = self._market_config[market_id] & COUNT_MASK
    for i: uint256 in range(count, bound=MAX_FEEDS):
        config: uint256 = self._feed_config[market_id][i]
        result.append(
            FeedInfo(
                aggregator=self._aggregator(config),
                heartbeat=(config >> HEARTBEAT_SHIFT) & HEARTBEAT_MASK,
                decimals=convert((config >> DECIMALS_SHIFT) & DECIMALS_MASK, uint8),
            )
        )
    return result


@external
@view
@reentrant
def max_deviation(market_id: uint256) -> uint256:
    """
    @notice The largest accepted disagreement (max - min) / min between the market's feeds.
    @param market_id The market.
    @return The maximum deviation in WAD (10**18 = 100 %); 0 if unset.
    """
    return self._market_config[market_id] >> DEVIATION_SHIFT


@external
@view
@reentrant
def sequencer_feed() -> address:
    """
    @notice The L2 sequencer-uptime feed checked before every price.
    @return The feed, or empty(address) when the check is disabled.
    """
    return self._aggregator(SEQUENCER_CONFIG)


@external
@view
@reentrant
def grace_period() -> uint256:
    """
    @notice Seconds after the sequencer comes back up during which prices are refused.
    @return The grace period in seconds.
    """
    return SEQUENCER_CONFIG >> GRACE_SHIFT


# ---------------------------------------------------------------- INTERNAL


@internal
@pure
def _aggregator(config: uint256) -> address:
    return convert(convert(config & ADDRESS_MASK, uint160), address)


@internal
@view
def _check_sequencer(config: uint256):
    """
    @dev Chainlink L2 sequencer-uptime semantics: answer 0 = up, anything else = down;
         startedAt = when the status last changed. A startedAt of 0 (status unknown) counts
         as down; a startedAt in the future counts as just changed (grace period).
    """
    round_id: uint80 = 0
    answer: int256 = 0
    started_at: uint256 = 0
    updated_at: uint256 = 0
    answered_in_round: uint80 = 0
    round_id, answer, started_at, updated_at, answered_in_round = staticcall AggregatorV3Interface(
        self._aggregator(config)
    ).latestRoundData()
    assert answer == 0 and started_at != 0, "oracle: sequencer down"
    assert (
        started_at < block.timestamp and block.timestamp - started_at > config >> GRACE_SHIFT
    ), "oracle: sequencer grace period"


@internal
@view
def _feed_price(config: uint256) -> uint256:
    """
    @dev Read, validate and normalise one feed's latest round; the checks run in the order
         docs/oracle.md lists them and perpdex/oracle.py mirrors.
    """
    round_id: uint80 = 0
    answer: int256 = 0
    started_at: uint256 = 0
    updated_at: uint256 = 0
    answered_in_round: uint80 = 0
    round_id, answer, started_at, updated_at, answered_in_round = staticcall AggregatorV3Interface(
        self._aggregator(config)
    ).latestRoundData()
    return self._validated(config, round_id, answer, started_at, updated_at, answered_in_round, True)


@internal
@view
def _round_answer(config: uint256, round_id: uint80, check_stale: bool) -> (uint256, uint256):
    """
    @dev One feed's answer at a past round, validated and normalised: (price, updatedAt).
    """
    rid: uint80 = 0
    answer: int256 = 0
    started_at: uint256 = 0
    updated_at: uint256 = 0
    answered_in_round: uint80 = 0
    rid, answer, started_at, updated_at, answered_in_round = staticcall AggregatorV3Interface(
        self._aggregator(config)
    ).getRoundData(round_id)
    assert rid == round_id, "oracle: round id mismatch"
    return self._validated(config, rid, answer, started_at, updated_at, answered_in_round, check_stale), updated_at


@internal
@view
def _validated(
    config: uint256,
    round_id: uint80,
    answer: int256,
    started_at: uint256,
    updated_at: uint256,
    answered_in_round: uint80,
    check_stale: bool,
) -> uint256:
    assert (
        updated_at != 0 and started_at != 0 and answered_in_round >= round_id
    ), "oracle: incomplete round"
    assert answer > 0, "oracle: non-positive price"
    assert updated_at <= block.timestamp, "oracle: future timestamp"
    if check_stale:
        assert (
            block.timestamp - updated_at <= (config >> HEARTBEAT_SHIFT) & HEARTBEAT_MASK
        ), "oracle: stale price"

    # normalise to WAD, rounding down; reject 0 (too small to represent) and > MAX_PRICE
    value: uint256 = convert(answer, uint256)
    decimals: uint256 = (config >> DECIMALS_SHIFT) & DECIMALS_MASK
    price: uint256 = 0
    if decimals <= 18:
        scale: uint256 = 10 ** (18 - decimals)
        assert value <= MAX_PRICE // scale, "oracle: price out of range"
        price = unsafe_mul(value, scale)
    else:
        price = value // 10 ** (decimals - 18)  # rounds down
        assert price != 0 and price <= MAX_PRICE, "oracle: price out of range"
    return price


@internal
@pure
def _insert_sorted(sorted_prices: uint256[MAX_FEEDS], filled: uint256, price: uint256) -> uint256[MAX_FEEDS]:
    """
    @dev Insertion sort step: `sorted_prices[0:filled]` is sorted; returns it with `price`
         inserted in order.
    """
    prices: uint256[MAX_FEEDS] = sorted_prices
    j: uint256 = filled
    for _: uint256 in range(MAX_FEEDS):
        if j == 0 or prices[j - 1] <= price:
            break
        prices[j] = prices[j - 1]
        j -= 1
    prices[j] = price
    return prices


@internal
@pure
def _median(prices: uint256[MAX_FEEDS], count: uint256) -> uint256:
    middle: uint256 = count // 2
    if count % 2 == 1:
        return prices[middle]
    # even count: the mean of the two middle prices, rounded down
    return (prices[middle - 1] + prices[middle]) // 2
