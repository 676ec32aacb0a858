"""Oracle rounds as a Chainlink feed publishes them, from price candles (the simulator's and
the demo's).

A Chainlink feed publishes a new round when the price has moved `deviation` (0.5 % for BTC/USD
and ETH/USD) from its last answer, and on a heartbeat when it has not moved for that long. The
candles of data/prices (`timestamp,open,high,low,close`, hourly or by the minute) give four
prices per candle, not the path between them, so each candle's path is taken as straight lines
from the open to the nearer extreme, then to the other extreme, then to the close, walked at
constant speed (time in proportion to the distance covered): a wick counts. The feed publishes
at every point of that path where the price is `deviation` away from its last answer (at
exactly that price), and at the path's price whenever its last round is `heartbeat` seconds
old. `resample` merges candles into longer ones (open of the first, extremes of all, close of
the last) when a replay wants coarser steps than the file has.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

HOUR = 3600
DEVIATION = 0.005
# the feeds' staleness limit is 1 h (config/markets.json); a feed that waited the full hour
# would be stale for the few seconds its round takes to land, so the heartbeat round comes
# two minutes early, as live feeds do
HEARTBEAT = HOUR - 120


@dataclass(frozen=True)
class Candle:
    time: int  # the candle's start (UTC seconds)
    open: float
    high: float
    low: float
    close: float
    duration: int = HOUR  # seconds


@dataclass(frozen=True)
class Round:
    time: int  # publication time (UTC seconds, candle time)
    market: int
    price: float
    reason: str  # "deviation" or "heartbeat"


def load_candles(path: Path, start: int = 0, end: int = 2**63) -> list[Candle]:
    """The candles of `path` (timestamp,open,high,low,close) with start <= time < end; each
    one's duration is the file's spacing (the smallest gap between two timestamps)."""
    with open(path) as f:
        rows = [(int(r["timestamp"]), float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]))
                for r in csv.DictReader(f)]
    rows.sort()
    gaps = [b[0] - a[0] for a, b in zip(rows, rows[1:]) if b[0] > a[0]]
    duration = min(gaps) if gaps else HOUR
    return [Candle(*r, duration=duration) for r in rows if start <= r[0] < end]


def resample(candles: list[Candle], duration: int) -> list[Candle]:
    """`candles` merged into candles of `duration` seconds (a multiple of theirs), aligned on
    multiples of `duration` since the epoch."""
    merged: dict[int, list[Candle]] = {}
    for c in candles:
        merged.setdefault(c.time - c.time % duration, []).append(c)
    return [
        Candle(t, group[0].open, max(c.high for c in group), min(c.low for c in group), group[-1].close, duration)
        for t, group in sorted(merged.items())
    ]


def candle_path(candle: Candle) -> list[tuple[float, float]]:
    """(seconds into the candle, price) at the open, both extremes (the nearer one first) and
    the close; the time between two of them is in proportion to the price distance."""
    if candle.open - candle.low <= candle.high - candle.open:
        prices = [candle.open, candle.low, candle.high, candle.close]
    else:
        prices = [candle.open, candle.high, candle.low, candle.close]
    legs = [abs(b - a) for a, b in zip(prices, prices[1:])]
    total = sum(legs)
    times, elapsed = [0.0], 0.0
    for leg in legs:
        elapsed += leg
        times.append(candle.duration * elapsed / total if total else candle.duration * len(times) / 3)
    return list(zip(times, prices))


def feed_rounds(candles: list[Candle], market: int, first_answer: float, deviation: float = DEVIATION,
                heartbeat: int = HEARTBEAT) -> list[Round]:
    """The rounds a feed whose last answer is `first_answer`, published at the first candle's
    start, publishes along `candles`' paths. Several rounds in one second keep the last."""
    rounds: list[Round] = []
    last, last_time = first_answer, candles[0].time if candles else 0

    def publish(t: float, price: float, reason: str) -> None:
        nonlocal last, last_time
        second = int(t)
        if rounds and rounds[-1].time == second:
            rounds.pop()
        rounds.append(Round(second, market, price, reason))
        last, last_time = price, second

    for candle in candles:
        path = candle_path(candle)
        if abs(path[0][1] - last) >= deviation * last:  # a gap between two candles
            publish(candle.time, path[0][1], "deviation")
        for (t0, p0), (t1, p1) in zip(path, path[1:]):
            start, end = candle.time + t0, candle.time + t1
            position = p0
            while True:
                moving = p1 != position
                target = last * (1 + deviation) if p1 > position else last * (1 - deviation)
                crossing = moving and min(position, p1) <= target <= max(position, p1)
                t_next = start + (end - start) * (target - p0) / (p1 - p0) if crossing else end
                t_beat = last_time + heartbeat
                if t_beat < t_next or (not crossing and t_beat <= end):  # the heartbeat falls due first
                    price = p0 + (p1 - p0) * (t_beat - start) / (end - start) if end > start else p1
                    publish(t_beat, price, "heartbeat")
                    position = price
                elif crossing:
                    publish(t_next, target, "deviation")
                    position = target
                else:
                    break
    return rounds


def merged_rounds(*feeds: list[Round]) -> list[Round]:
    """Every feed's rounds in publication order (market order within one second)."""
    return sorted((r for feed in feeds for r in feed), key=lambda r: (r.time, r.market))
