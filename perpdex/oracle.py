"""Reference model of contracts/IndexOracle.vy: validation, normalisation, median, deviation.

Pure functions in exact integers, no web3. `index_price` returns exactly the WAD value the
contract returns, or raises `OracleError` with exactly the contract's revert reason, checking
in the same order (sequencer, unknown market, then each feed in configuration order:
incomplete round, non-positive price, future timestamp, stale price, price out of range; then
the deviation between feeds). Tests compare the contract with this module; keepers use it to
tell why a market has no price.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

WAD = 10**18
MAX_FEEDS = 5
MAX_HEARTBEAT = 7 * 86400
MAX_DECIMALS = 36
MAX_GRACE_PERIOD = 86400
MAX_PRICE = 10**36

UNKNOWN_MARKET = "oracle: unknown market"
INCOMPLETE_ROUND = "oracle: incomplete round"
NON_POSITIVE_PRICE = "oracle: non-positive price"
FUTURE_TIMESTAMP = "oracle: future timestamp"
STALE_PRICE = "oracle: stale price"
PRICE_OUT_OF_RANGE = "oracle: price out of range"
FEEDS_DISAGREE = "oracle: feeds disagree"
SEQUENCER_DOWN = "oracle: sequencer down"
SEQUENCER_GRACE_PERIOD = "oracle: sequencer grace period"


class OracleError(Exception):
    """No valid index price; `reason` is the contract's revert string."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Round:
    """One `latestRoundData` answer, field for field."""

    round_id: int
    answer: int
    started_at: int
    updated_at: int
    answered_in_round: int

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (
            self.round_id,
            self.answer,
            self.started_at,
            self.updated_at,
            self.answered_in_round,
        )


@dataclass(frozen=True)
class FeedReading:
    """A feed's configuration (heartbeat, decimals read at configuration time) and its round."""

    round: Round
    heartbeat: int
    decimals: int


@dataclass(frozen=True)
class SequencerStatus:
    """The L2 sequencer-uptime feed's latest round and the configured grace period."""

    round: Round
    grace_period: int


def normalize(answer: int, decimals: int) -> int:
    """`answer` with `decimals` decimals as WAD, rounding down (answer > 0)."""
    if decimals <= 18:
        return answer * 10 ** (18 - decimals)
    return answer // 10 ** (decimals - 18)


def validate_round(round: Round, heartbeat: int, now: int) -> str | None:
    """None when the round is usable at time `now`, else the contract's revert reason.

    Checks completeness, sign and timestamps; the WAD range is checked by `feed_price`.
    """
    if round.updated_at == 0 or round.started_at == 0 or round.answered_in_round < round.round_id:
        return INCOMPLETE_ROUND
    if round.answer <= 0:
        return NON_POSITIVE_PRICE
    if round.updated_at > now:
        return FUTURE_TIMESTAMP
    if now - round.updated_at > heartbeat:
        return STALE_PRICE
    return None


def feed_price(reading: FeedReading, now: int) -> int:
    """One feed's price in WAD, in [1, MAX_PRICE], or `OracleError`."""
    reason = validate_round(reading.round, reading.heartbeat, now)
    if reason is not None:
        raise OracleError(reason)
    price = normalize(reading.round.answer, reading.decimals)
    if price == 0 or price > MAX_PRICE:
        raise OracleError(PRICE_OUT_OF_RANGE)
    return price


def median(values: Sequence[int]) -> int:
    """Median; for an even count the floor of the mean of the two middle values."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2 == 1:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) // 2


def feeds_disagree(prices: Sequence[int], max_deviation: int) -> bool:
    """True when (max - min) / min > max_deviation (WAD), compared without division."""
    low, high = min(prices), max(prices)
    return (high - low) * WAD > max_deviation * low


def check_sequencer(status: SequencerStatus, now: int) -> None:
    """Raise `OracleError` while the sequencer is down (answer != 0, or status time unknown)
    or less than `grace_period` seconds have passed since it came back up."""
    started_at = status.round.started_at
    if status.round.answer != 0 or started_at == 0:
        raise OracleError(SEQUENCER_DOWN)
    if not (started_at < now and now - started_at > status.grace_period):
        raise OracleError(SEQUENCER_GRACE_PERIOD)


def feeds_config_error(
    aggregators: Sequence[str],
    heartbeats: Sequence[int],
    decimals: Sequence[int],
    max_deviation: int,
) -> str | None:
    """None when `set_feeds` accepts this configuration, else its revert reason.

    `decimals` are what each aggregator's `decimals()` returns. More than MAX_FEEDS feeds
    cannot even be ABI-encoded for the contract: that raises ValueError here.
    """
    if len(aggregators) > MAX_FEEDS:
        raise ValueError(f"at most {MAX_FEEDS} feeds")
    if not aggregators:
        return "oracle: no feeds"
    if max_deviation > WAD or (len(aggregators) > 1 and max_deviation == 0):
        return "oracle: invalid deviation"
    seen: set[str] = set()
    for aggregator, heartbeat, feed_decimals in zip(aggregators, heartbeats, decimals, strict=True):
        key = str(aggregator).lower()
        if int(key, 16) == 0:
            return "oracle: zero aggregator"
        if key in seen:
            return "oracle: duplicate feed"
        seen.add(key)
        if heartbeat == 0 or heartbeat > MAX_HEARTBEAT:
            return "oracle: invalid heartbeat"
        if feed_decimals > MAX_DECIMALS:
            return "oracle: invalid decimals"
    return None


def index_price(
    readings: Sequence[FeedReading],
    max_deviation: int,
    now: int,
    sequencer: SequencerStatus | None = None,
) -> int:
    """The contract's `index_price` for a market whose feeds return `readings` at `now`."""
    if sequencer is not None:
        check_sequencer(sequencer, now)
    if not readings:
        raise OracleError(UNKNOWN_MARKET)
    prices = [feed_price(reading, now) for reading in readings]
    if len(prices) == 1:
        return prices[0]
    if feeds_disagree(prices, max_deviation):
        raise OracleError(FEEDS_DISAGREE)
    return median(prices)


def index_price_or_reason(
    readings: Sequence[FeedReading],
    max_deviation: int,
    now: int,
    sequencer: SequencerStatus | None = None,
) -> int | str:
    """`index_price`, with the revert reason returned instead of raised."""
    try:
        return index_price(readings, max_deviation, now, sequencer)
    except OracleError as error:
        return error.reason


def load_chainlink_rounds(path: str | Path) -> list[Round]:
    """Parse a Chainlink rounds export (columns: index, round, answer, start, update,
    answeredInRound), keeping the file's row order and every row, malformed ones included."""
    rounds: list[Round] = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rounds.append(
                Round(
                    round_id=int(row["round"]),
                    answer=int(row["answer"]),
                    started_at=int(row["start"]),
                    updated_at=int(row["update"]),
                    answered_in_round=int(row["answeredInRound"]),
                )
            )
    return rounds
