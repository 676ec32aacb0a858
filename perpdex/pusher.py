"""The devnet price pusher: replays a price path into the mock Chainlink aggregators.

A path is either historical prices from CSV files (`timestamp,open,high,low,close`, as in
data/prices in this repository) or a seeded geometric random walk. Each step publishes one answer
per market with `MockAggregator.update_answer` (the account must own the aggregator or hold
its updater role). Wall time between steps is the path's time divided by `speed`; on local
chains `warp` also moves chain time by the path's time deltas, so the oracle's heartbeat and
the funding accrual see the path's clock, not the wall clock.

Everything that decides *what* to push is a pure function (parsing, windows, resampling, the
random walk, answer conversion); `run` is the thin loop and `push_prices` wires it to a node
through the wallet's JSON-RPC client (perpdex.wallet: no ape, no web3.py, so the pusher starts in
about half a second), which simulates every update before it is signed.
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
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from perpdex.wallet.client import Market, Wallet
from perpdex.wallet.rpc import Contract, Reverted, RpcError
from perpdex.wallet.units import CliError

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
    """The aggregators of one market (the wallet's names for them) and their decimals."""

    symbol: str
    aggregators: list[str]
    decimals: list[int] = field(default_factory=list)

    def latest_price(self, wallet: Wallet) -> Decimal:
        answer = int(wallet.read(self.aggregators[0], "latestRoundData")[1])
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


def resolve_market(wallet: Wallet, text: str) -> Market:
    """A market by symbol ('BTC-USD', any case; 'BTC' for '<BASE>-USD') or by id ('0')."""
    wanted = text.strip().upper()
    for m in wallet.markets:
        if wanted in (m.symbol.upper(), str(m.id)) or f"{wanted}-USD" == m.symbol.upper():
            return m
    known = ", ".join(f"{m.symbol} ({m.id})" for m in wallet.markets)
    raise CliError(f"unknown market {text!r}; listed markets: {known}")


@contextmanager
def contract_errors() -> Iterator[None]:
    """A refused or failed update as one line a person can read, not a traceback."""
    try:
        yield
    except Reverted as err:
        raise CliError(f"the aggregator refused the update: {err.reason}") from None
    except RpcError as err:
        raise CliError(f"the update failed: {err}") from None


def aggregator_names(wallet: Wallet, market: Market) -> list[str]:
    """The wallet's names of a market's aggregators (the manifest lists their addresses; the
    ABI is the one recorded for `aggregator_<SYMBOL>`)."""
    abi_entry = wallet.manifest["contracts"].get(f"aggregator_{market.symbol}", {})
    if not market.aggregators or not abi_entry.get("abi"):
        raise CliError(f"{market.symbol} has no aggregators in the manifest")
    names = []
    for address in market.aggregators:
        name = f"aggregator {address}"
        if name not in wallet.contracts:
            wallet.contracts[name] = Contract(address, abi_entry["abi"])
        names.append(name)
    return names


def feeds_for(wallet: Wallet, symbols: Iterable[str]) -> dict[str, Feed]:
    """The feeds of the named markets; refuses markets whose aggregators the wallet may not
    update. One batch of reads for all of them."""
    markets = [resolve_market(wallet, text) for text in symbols]
    names = {m.symbol: aggregator_names(wallet, m) for m in markets}
    me = wallet.address
    calls = [(name, fn, args) for ns in names.values() for name in ns
             for fn, args in (("owner", ()), ("is_updater", (me,)), ("decimals", ()))]
    answers = iter(wallet.reads(calls))
    feeds = {}
    for symbol, ns in names.items():
        decimals = []
        for name in ns:
            owner, updater, places = next(answers), next(answers), next(answers)
            for answer in (owner, updater, places):
                if isinstance(answer, Reverted):
                    raise CliError(f"{wallet.contracts[name].address} is not an aggregator: {answer.reason}")
            if not (owner.lower() == me.lower() or updater):
                raise CliError(
                    f"{me} may not update {symbol}'s aggregator {wallet.contracts[name].address}: "
                    f"its owner {owner} must call set_updater first"
                )
            decimals.append(int(places))
        feeds[symbol] = Feed(symbol, ns, decimals)
    return feeds


def publish(wallet: Wallet, feeds: Mapping[str, Feed], step: Step) -> None:
    """Publish one step: every price to every aggregator of its market (each update simulated,
    then signed and sent, then its receipt awaited)."""
    for symbol, price in step.prices.items():
        feed = feeds[symbol]
        for name, decimals in zip(feed.aggregators, feed.decimals):
            wallet.send(name, "update_answer", to_answer(price, decimals))
    log.info("pushed %s", describe(step))


class NodeTime:
    """The chain clock of a dev node (anvil): the pending block's time, and the time the next
    block gets (`evm_setNextBlockTimestamp`)."""

    def __init__(self, wallet: Wallet):
        self.rpc = wallet.rpc

    @property
    def pending_timestamp(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", ["pending", False])["timestamp"], 16)

    @pending_timestamp.setter
    def pending_timestamp(self, timestamp: int) -> None:
        self.rpc.call("evm_setNextBlockTimestamp", [int(timestamp)])


def is_dev_node(wallet: Wallet) -> bool:
    """Whether the node lets a client set chain time (anvil, hardhat, ganache)."""
    try:
        version = str(wallet.rpc.call("web3_clientVersion", [])).lower()
    except RpcError:
        return False
    return version.startswith(("anvil", "hardhat", "ganache"))


class ChainClock:
    """`warp` for `run` on local chains: chain time advances by the path's time deltas."""

    def __init__(self, chain: NodeTime):
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


def walk_schedule(options: PusherOptions, wallet: Wallet, now: int) -> tuple[Iterator[Step], dict[str, Feed]]:
    """A random walk over every market from its feed's current answer, stepping from `now`."""
    feeds = feeds_for(wallet, [m.symbol for m in wallet.markets])
    start = {symbol: feed.latest_price(wallet) for symbol, feed in feeds.items()}
    for symbol, price in start.items():
        if price <= 0:
            raise ValueError(f"{symbol}'s feed has no positive answer to start a random walk from")
    walk = random_walk(start, seed=options.seed, volatility=options.volatility, interval=options.interval,
                       start_time=now)
    return walk, feeds


def csv_files(options: PusherOptions, wallet: Wallet) -> dict[str, Path]:
    """The --csv files by the deployment's market symbols."""
    files: dict[str, Path] = {}
    for text, path in map(parse_csv_spec, options.csv):
        symbol = resolve_market(wallet, text).symbol
        if symbol in files:
            raise ValueError(f"two --csv files for {symbol}")
        files[symbol] = data_file(path)
    return files


def schedule(options: PusherOptions, wallet: Wallet, now: int) -> tuple[Iterable[Step], dict[str, Feed]]:
    """The steps to push and the feeds they go to, from the command-line options."""
    if options.random_walk == bool(options.csv):
        raise ValueError("give either --csv SYMBOL=PATH (repeatable) or --random-walk")
    if options.random_walk:
        return walk_schedule(options, wallet, now)
    files = csv_files(options, wallet)
    feeds = feeds_for(wallet, files)
    start = parse_timestamp(options.start) if options.start else None
    end = parse_timestamp(options.end) if options.end else None
    return csv_schedule(files, options.column, start, end, options.resample), feeds


def push_prices(wallet: Wallet, options: PusherOptions) -> int:
    """Run the pusher until its path ends, `--steps`/`--once` are reached or SIGINT/SIGTERM."""
    if options.warp and not is_dev_node(wallet):
        raise CliError("--warp moves chain time: only on a dev node that allows it (anvil)")
    chain = NodeTime(wallet)
    try:
        steps, feeds = schedule(options, wallet, chain.pending_timestamp)
    except (ValueError, OSError) as err:
        raise CliError(str(err)) from None
    log.info(
        "pushing %s to %s at speed %s%s", "a random walk" if options.random_walk else ", ".join(options.csv),
        ", ".join(feeds), options.speed, " with chain time warp" if options.warp else "",
    )
    with stop_on_signals() as stop, contract_errors():
        pushed = run(
            steps, lambda step: publish(wallet, feeds, step), speed=options.speed, max_steps=options.max_steps,
            stop=stop, warp=ChainClock(chain) if options.warp else None,
        )
    log.info("done: %d step(s) pushed%s", pushed, " (stopped by signal)" if stop.is_set() else "")
    return pushed
