"""The devnet price pusher: replays a price path into the mock Chainlink aggregators.

A path is either historical prices from CSV files (`timestamp,open,high,low,close`, as in
data/prices in this repository) or a seeded geometric random walk. Each step publishes one answer
per market with `MockAggregator.update_answer` (the account must own the aggregator or hold
its updater role). Wall time between steps is the path's time divided by `speed`; on local
chains `warp` also moves chain time by the path's time deltas, so the oracle's heartbeat and
the funding accrual see the path's clock, not the wall clock.

Everything that decides *what* to push is a pure function (parsing, windows, resampling, the
random walk, answer conversion); `run` is the thin loop and `push_prices` wires it to a chain.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

from perpdex.wallet.units import CliError

if TYPE_CHECKING:
    from ape.api import AccountAPI
    from ape.contracts import ContractInstance
    from ape.managers import ChainManager

    from perpdex.config import MarketConfig
    from perpdex.deploy import Deployment

log = logging.getLogger("perpdex.pusher")

FEED_DECIMALS = 8
PRICE_COLUMNS = ("open", "high", "low", "close")
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "prices"


@dataclass(frozen=True)
class PricePoint:
    timestamp: int  # unix seconds, UTC
    price: Decimal  # USD


@dataclass(frozen=True)
class Step:
    """One update: the answers to publish at path time `timestamp`, by market symbol."""

    timestamp: int
    prices: Mapping[str, Decimal]


# =============================================================================================
# PURE: PATHS
# =============================================================================================


def load_prices(path: Path | str, column: str = "close") -> list[PricePoint]:
    """A price series from a `timestamp,open,high,low,close` CSV, in increasing time.

    Raises ValueError naming the line of any missing column, non-positive price, unparsable
    value or timestamp that does not increase.
    """
    if column not in PRICE_COLUMNS:
        raise ValueError(f"column must be one of {', '.join(PRICE_COLUMNS)}, not {column!r}")
    points: list[PricePoint] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"timestamp", column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            line = reader.line_num
            try:
                point = PricePoint(int(row["timestamp"]), Decimal(row[column]))
            except (TypeError, ValueError, InvalidOperation):
                raise ValueError(f"{path}:{line}: unreadable row {row}") from None
            if not point.price.is_finite() or point.price <= 0:
                raise ValueError(f"{path}:{line}: price must be positive, got {row[column]}")
            if points and point.timestamp <= points[-1].timestamp:
                raise ValueError(f"{path}:{line}: timestamp {point.timestamp} does not increase")
            points.append(point)
    if not points:
        raise ValueError(f"{path}: no prices")
    return points


def parse_timestamp(text: str) -> int:
    """Unix seconds ('1583971200') or an ISO date/time in UTC ('2020-03-12', '2020-03-12T06:00')."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a timestamp: {text!r} (unix seconds or ISO 8601, UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def select_window(points: Sequence[PricePoint], start: int | None = None, end: int | None = None) -> list[PricePoint]:
    """The points with start <= timestamp <= end (either bound optional)."""
    return [
        p for p in points
        if (start is None or p.timestamp >= start) and (end is None or p.timestamp <= end)
    ]


def resample(points: Sequence[PricePoint], interval: int) -> list[PricePoint]:
    """One point per `interval` seconds: the last price of each bucket, stamped with the
    bucket's start (bars are stamped with their open time, like the CSVs)."""
    if interval <= 0:
        raise ValueError("resampling interval must be positive")
    buckets: dict[int, Decimal] = {}
    for p in points:
        buckets[p.timestamp - p.timestamp % interval] = p.price
    return [PricePoint(t, price) for t, price in sorted(buckets.items())]


def merge(series: Mapping[str, Sequence[PricePoint]]) -> list[Step]:
    """One step per distinct timestamp across all series, with the prices of the series that
    have a point at that time (series of different granularity interleave)."""
    by_time: dict[int, dict[str, Decimal]] = {}
    for symbol, points in series.items():
        for p in points:
            by_time.setdefault(p.timestamp, {})[symbol] = p.price
    return [Step(t, by_time[t]) for t in sorted(by_time)]


def random_walk(
    start_prices: Mapping[str, Decimal],
    *,
    seed: int,
    volatility: float,
    interval: int = 3600,
    start_time: int = 0,
) -> Iterator[Step]:
    """An endless geometric random walk: each step multiplies every price by
    exp(volatility x N(0, 1)). The same seed and markets give the same path; prices stay
    positive and are rounded to 8 decimals."""
    if volatility < 0:
        raise ValueError("volatility must not be negative")
    if interval <= 0:
        raise ValueError("interval must be positive")
    rng = random.Random(seed)
    prices = {symbol: float(price) for symbol, price in sorted(start_prices.items())}
    for n in itertools.count(1):
        for symbol in prices:
            prices[symbol] *= math.exp(volatility * rng.gauss(0.0, 1.0))
        yield Step(start_time + n * interval, {s: Decimal(f"{p:.8f}") for s, p in prices.items()})


def to_answer(price: Decimal | str | int | float, decimals: int = FEED_DECIMALS) -> int:
    """A USD price as an aggregator answer with `decimals` decimals, rounded half to even.
    Floats go through their shortest repr (0.1 -> 10000000, not 10000000.000000000555)."""
    value = Decimal(str(price)) if isinstance(price, float) else Decimal(price)
    answer = int(value.scaleb(decimals).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if answer <= 0:
        raise ValueError(f"price {price} is not positive at {decimals} decimals")
    return answer


def from_answer(answer: int, decimals: int = FEED_DECIMALS) -> Decimal:
    return Decimal(answer).scaleb(-decimals)


def parse_csv_spec(spec: str) -> tuple[str, Path]:
    """'BTC-USD=prices/btc.csv' -> ('BTC-USD', Path('prices/btc.csv'))."""
    symbol, sep, path = spec.partition("=")
    if not sep or not symbol.strip() or not path.strip():
        raise ValueError(f"--csv takes SYMBOL=PATH (e.g. BTC-USD=btc.csv), not {spec!r}")
    return symbol.strip().upper(), Path(path.strip()).expanduser()


def data_file(path: Path) -> Path:
    """`path` as given, or the file of that name in the repository's data/prices."""
    if not path.exists() and (DATA_DIR / path).exists():
        return DATA_DIR / path
    return path


def csv_schedule(
    files: Mapping[str, Path],
    column: str = "close",
    start: int | None = None,
    end: int | None = None,
    interval: int | None = None,
) -> list[Step]:
    """The steps replaying CSV files (by market symbol) inside [start, end], optionally
    resampled to one point per `interval` seconds."""
    series = {}
    for symbol, path in files.items():
        points = select_window(load_prices(path, column), start, end)
        if not points:
            raise ValueError(f"{path}: no prices between {utc(start) if start else 'the start'} and "
                             f"{utc(end) if end else 'the end'}")
        series[symbol] = resample(points, interval) if interval else points
    return merge(series)


def wall_delay(previous: int, current: int, speed: float) -> float:
    """Wall seconds for the path time between two steps: path time / speed (speed 0: none)."""
    if speed < 0:
        raise ValueError("speed must not be negative")
    return 0.0 if speed == 0 else max(current - previous, 0) / speed


def warp_target(timestamp: int, path_origin: int, chain_origin: int) -> int:
    """The chain time at which a step stamped `timestamp` is pushed: the chain's clock at the
    first step plus the path time elapsed since."""
    return chain_origin + timestamp - path_origin


def utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(step: Step) -> str:
    prices = "  ".join(f"{s} {p:,.2f}" for s, p in step.prices.items())
    return f"{utc(step.timestamp)}  {prices}"


# =============================================================================================
# THE LOOP
# =============================================================================================


def run(
    steps: Iterable[Step],
    push: Callable[[Step], None],
    *,
    speed: float,
    max_steps: int | None = None,
    stop: threading.Event | None = None,
    warp: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Push steps in order until the path ends, `max_steps` were pushed or `stop` is set (the
    step in flight completes). Step n is due (its time - the first step's time) / speed wall
    seconds after the start, so the time spent sending transactions does not slow the pace.
    Returns how many steps were pushed."""
    stop = stop or threading.Event()
    pushed = 0
    origin: int | None = None
    started = clock()
    for step in steps:
        if max_steps is not None and pushed >= max_steps:
            break
        if origin is None:
            origin = step.timestamp
        due = started + wall_delay(origin, step.timestamp, speed)
        if stop.wait(max(0.0, due - clock())) or stop.is_set():
            break
        if warp:
            warp(step.timestamp)
        push(step)
        pushed += 1
    return pushed


@contextmanager
def stop_on_signals(signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while inside the block (previous handlers restored)."""
    stop = threading.Event()

    def handler(signum, _frame) -> None:
        log.info("%s received: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def configure_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


# =============================================================================================
# CHAIN SIDE
# =============================================================================================


@dataclass
class Feed:
    """The aggregators of one market and their decimals."""

    symbol: str
    aggregators: list[ContractInstance]
    decimals: list[int] = field(default_factory=list)

    def latest_price(self) -> Decimal:
        answer = int(self.aggregators[0].latestRoundData()[1])
        return from_answer(answer, self.decimals[0])


@dataclass(frozen=True)
class PusherOptions:
    """What `ape run pusher` was asked to do (see scripts/pusher.py for the flags)."""

    csv: tuple[str, ...] = ()
    column: str = "close"
    start: str | None = None
    end: str | None = None
    resample: int | None = None
    speed: float = 3600.0
    steps: int | None = None
    once: bool = False
    random_walk: bool = False
    seed: int = 7
    volatility: float = 0.01
    interval: int = 3600
    warp: bool = False

    @property
    def max_steps(self) -> int | None:
        return 1 if self.once else self.steps


def resolve_market(deployment: Deployment, text: str) -> MarketConfig:
    """A market by symbol ('BTC-USD', any case; 'BTC' for '<BASE>-USD') or by id ('0')."""
    wanted = text.strip().upper()
    for m in deployment.markets:
        if wanted in (m.symbol.upper(), str(m.id)) or f"{wanted}-USD" == m.symbol.upper():
            return m
    known = ", ".join(f"{m.symbol} ({m.id})" for m in deployment.markets)
    raise CliError(f"unknown market {text!r}; listed markets: {known}")


@contextmanager
def contract_errors() -> Iterator[None]:
    """A refused or failed update as one line a person can read, not a traceback."""
    from ape.exceptions import AccountsError, ContractLogicError, TransactionError

    try:
        yield
    except ContractLogicError as err:
        raise CliError(f"the aggregator refused the update: {err.revert_message or err}") from None
    except TransactionError as err:
        raise CliError(f"the update failed: {err}") from None
    except AccountsError as err:  # e.g. the signer declined
        raise CliError(f"not signed: {err}") from None


def feeds_for(deployment: Deployment, symbols: Iterable[str], account: AccountAPI) -> dict[str, Feed]:
    """The feeds of the named markets; refuses markets whose aggregators `account` may not update."""
    feeds = {}
    for text in symbols:
        market = resolve_market(deployment, text)
        aggregators = deployment.aggregators.get(market.id) or []
        if not aggregators:
            raise CliError(f"{market.symbol} has no aggregators in the manifest")
        for agg in aggregators:
            if not (agg.owner() == account.address or agg.is_updater(account.address)):
                raise CliError(
                    f"{account.address} may not update {market.symbol}'s aggregator {agg.address}: "
                    f"its owner {agg.owner()} must call set_updater first"
                )
        feeds[market.symbol] = Feed(market.symbol, aggregators, [int(a.decimals()) for a in aggregators])
    return feeds


def publish(feeds: Mapping[str, Feed], account: AccountAPI, step: Step) -> None:
    """Publish one step: every price to every aggregator of its market."""
    for symbol, price in step.prices.items():
        feed = feeds[symbol]
        for agg, decimals in zip(feed.aggregators, feed.decimals):
            agg.update_answer(to_answer(price, decimals), sender=account)
    log.info("pushed %s", describe(step))


class ChainClock:
    """`warp` for `run` on local chains: chain time advances by the path's time deltas."""

    def __init__(self, chain: ChainManager):
        self.chain = chain
        self.path_origin: int | None = None
        self.chain_origin = 0

    def __call__(self, timestamp: int) -> None:
        if self.path_origin is None:
            self.path_origin, self.chain_origin = timestamp, int(self.chain.pending_timestamp)
            return
        target = warp_target(timestamp, self.path_origin, self.chain_origin)
        if target > self.chain.pending_timestamp:
            self.chain.pending_timestamp = target
            log.debug("chain time warped to %d", target)


def walk_schedule(
    options: PusherOptions, deployment: Deployment, account: AccountAPI, now: int
) -> tuple[Iterator[Step], dict[str, Feed]]:
    """A random walk over every market from its feed's current answer, stepping from `now`."""
    feeds = feeds_for(deployment, [m.symbol for m in deployment.markets], account)
    start = {symbol: feed.latest_price() for symbol, feed in feeds.items()}
    for symbol, price in start.items():
        if price <= 0:
            raise ValueError(f"{symbol}'s feed has no positive answer to start a random walk from")
    walk = random_walk(start, seed=options.seed, volatility=options.volatility, interval=options.interval,
                       start_time=now)
    return walk, feeds


def csv_files(options: PusherOptions, deployment: Deployment) -> dict[str, Path]:
    """The --csv files by the deployment's market symbols."""
    files: dict[str, Path] = {}
    for text, path in map(parse_csv_spec, options.csv):
        symbol = resolve_market(deployment, text).symbol
        if symbol in files:
            raise ValueError(f"two --csv files for {symbol}")
        files[symbol] = data_file(path)
    return files


def schedule(
    options: PusherOptions, deployment: Deployment, account: AccountAPI, now: int
) -> tuple[Iterable[Step], dict[str, Feed]]:
    """The steps to push and the feeds they go to, from the command-line options."""
    if options.random_walk == bool(options.csv):
        raise ValueError("give either --csv SYMBOL=PATH (repeatable) or --random-walk")
    if options.random_walk:
        return walk_schedule(options, deployment, account, now)
    files = csv_files(options, deployment)
    feeds = feeds_for(deployment, files, account)
    start = parse_timestamp(options.start) if options.start else None
    end = parse_timestamp(options.end) if options.end else None
    return csv_schedule(files, options.column, start, end, options.resample), feeds


def push_prices(deployment: Deployment, account: AccountAPI, options: PusherOptions) -> int:
    """Run the pusher until its path ends, `--steps`/`--once` are reached or SIGINT/SIGTERM."""
    from ape import chain

    if options.warp and chain.provider.network.name != "local":
        raise CliError("--warp moves chain time: only on a local network (ape's embedded chain or anvil)")
    try:
        steps, feeds = schedule(options, deployment, account, int(chain.pending_timestamp))
    except (ValueError, OSError) as err:
        raise CliError(str(err)) from None
    log.info(
        "pushing %s to %s at speed %s%s", "a random walk" if options.random_walk else ", ".join(options.csv),
        ", ".join(feeds), options.speed, " with chain time warp" if options.warp else "",
    )
    with stop_on_signals() as stop, contract_errors():
        pushed = run(
            steps, lambda step: publish(feeds, account, step), speed=options.speed, max_steps=options.max_steps,
            stop=stop, warp=ChainClock(chain) if options.warp else None,
        )
    log.info("done: %d step(s) pushed%s", pushed, " (stopped by signal)" if stop.is_set() else "")
    return pushed
