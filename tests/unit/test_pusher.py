"""The price pusher's pure parts: what it reads from the CSVs in data/prices, which window and
resolution it replays, the random walk, the 8-decimal answers, and how the loop paces, stops
and warps. No chain: the loop is driven with fakes."""

import itertools
import math
import os
import signal
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from perpdex.pusher import (
    DATA_DIR,
    ChainClock,
    PricePoint,
    Step,
    csv_schedule,
    data_file,
    from_answer,
    load_prices,
    merge,
    parse_csv_spec,
    parse_timestamp,
    random_walk,
    resample,
    run,
    select_window,
    stop_on_signals,
    to_answer,
    wall_delay,
)

BTC_2020 = DATA_DIR / "btc-usdt_2020-03_1h.csv"
ETH_2020 = DATA_DIR / "eth-usdt_2020-03_1h.csv"
BTC_2024_1M = DATA_DIR / "btc-usdt_2024-08-05_1m.csv"
MARCH_1_2020 = 1583020800
HOUR = 3600


# --------------------------------------------------------------------------- CSV files


def test_march_2020_btc_file_has_one_close_per_hour_for_the_whole_month():
    points = load_prices(BTC_2020)
    assert len(points) == 31 * 24
    assert points[0] == PricePoint(MARCH_1_2020, Decimal("8547.25"))
    assert {b.timestamp - a.timestamp for a, b in itertools.pairwise(points)} == {HOUR}


def test_12_13_march_2020_crash_from_7900_to_3782():
    start, end = parse_timestamp("2020-03-12"), parse_timestamp("2020-03-13T23:00")
    closes = select_window(load_prices(BTC_2020, "close"), start, end)
    lows = select_window(load_prices(BTC_2020, "low"), start, end)
    assert closes[0].price == Decimal("7913.42")  # 12 March, 00:00 UTC
    bottom = min(lows, key=lambda p: p.price)
    assert bottom == PricePoint(parse_timestamp("2020-03-13T02:00"), Decimal("3782.13"))
    assert min(p.price for p in closes) == Decimal("4130.64")  # the close never printed the wick


def test_column_choice_reads_that_column():
    first = {column: load_prices(BTC_2020, column)[0].price for column in ("open", "high", "low", "close")}
    assert first == {"open": Decimal("8523.61"), "high": Decimal("8613.57"), "low": Decimal("8511.11"),
                     "close": Decimal("8547.25")}


@pytest.mark.parametrize(
    "content, message",
    [
        ("timestamp,open\n1,2\n", "missing column(s) close"),
        ("timestamp,close\n10,5\n10,6\n", ":3: timestamp 10 does not increase"),
        ("timestamp,close\n10,5\n20,-1\n", ":3: price must be positive"),
        ("timestamp,close\n10,abc\n", ":2: unreadable row"),
        ("timestamp,close\n", "no prices"),
    ],
)
def test_malformed_csv_is_refused_with_the_line(tmp_path, content, message):
    path = tmp_path / "prices.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_prices(path)


# --------------------------------------------------------------------------- windows, resampling


def test_window_bounds_are_inclusive_and_accept_iso_dates_in_utc():
    day = select_window(load_prices(BTC_2020), parse_timestamp("2020-03-12"), parse_timestamp("2020-03-12T23:00Z"))
    assert len(day) == 24
    assert (day[0].timestamp, day[-1].timestamp) == (1583971200, 1583971200 + 23 * HOUR)
    assert parse_timestamp("1583971200") == parse_timestamp("2020-03-12T00:00:00+00:00") == 1583971200


def test_open_ended_windows():
    points = load_prices(BTC_2020)
    assert select_window(points, start=points[-2].timestamp) == points[-2:]
    assert select_window(points, end=points[1].timestamp) == points[:2]
    assert select_window(points) == points


def test_unparsable_timestamp_is_refused():
    with pytest.raises(ValueError, match="not a timestamp"):
        parse_timestamp("yesterday")


def test_resampling_minutes_to_hours_keeps_each_hours_last_close():
    minutes = load_prices(BTC_2024_1M)
    hours = resample(minutes, HOUR)
    assert len(minutes) == 1440 and len(hours) == 24
    by_time = {p.timestamp: p.price for p in minutes}
    for bar in hours:
        assert bar.timestamp % HOUR == 0
        assert bar.price == by_time[bar.timestamp + HOUR - 60]  # the 59th minute's close


def test_schedule_merges_markets_at_each_timestamp():
    steps = csv_schedule({"BTC-USD": BTC_2020, "ETH-USD": ETH_2020}, start=MARCH_1_2020, end=MARCH_1_2020 + 2 * HOUR)
    assert [s.timestamp for s in steps] == [MARCH_1_2020, MARCH_1_2020 + HOUR, MARCH_1_2020 + 2 * HOUR]
    assert steps[0].prices == {"BTC-USD": Decimal("8547.25"), "ETH-USD": Decimal("218.36")}


def test_series_of_different_resolutions_interleave():
    hourly = [PricePoint(0, Decimal(100)), PricePoint(3600, Decimal(101))]
    half_hourly = [PricePoint(0, Decimal(10)), PricePoint(1800, Decimal(11)), PricePoint(3600, Decimal(12))]
    steps = merge({"BTC-USD": hourly, "ETH-USD": half_hourly})
    assert [(s.timestamp, dict(s.prices)) for s in steps] == [
        (0, {"BTC-USD": Decimal(100), "ETH-USD": Decimal(10)}),
        (1800, {"ETH-USD": Decimal(11)}),
        (3600, {"BTC-USD": Decimal(101), "ETH-USD": Decimal(12)}),
    ]


def test_empty_window_is_an_error_not_a_silent_no_op():
    with pytest.raises(ValueError, match="no prices between"):
        csv_schedule({"BTC-USD": BTC_2020}, start=parse_timestamp("2021-01-01"))


def test_csv_option_parsing():
    assert parse_csv_spec("btc-usd=/data/btc.csv") == ("BTC-USD", Path("/data/btc.csv"))
    with pytest.raises(ValueError, match="SYMBOL=PATH"):
        parse_csv_spec("/data/btc.csv")


def test_a_bare_file_name_is_found_in_the_repositorys_data_from_any_directory(tmp_path, monkeypatch):
    """`--csv BTC-USD=btc-usdt_2020-03_1h.csv` works wherever the clone is and wherever the
    command runs; a path that exists as given wins."""
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    found = data_file(Path("btc-usdt_2020-03_1h.csv"))
    assert found == repo / "data" / "prices" / "btc-usdt_2020-03_1h.csv"
    assert load_prices(found)[0] == PricePoint(MARCH_1_2020, Decimal("8547.25"))
    own = tmp_path / "btc-usdt_2020-03_1h.csv"
    own.write_text("timestamp,close\n1,2\n")
    assert data_file(Path("btc-usdt_2020-03_1h.csv")) == Path("btc-usdt_2020-03_1h.csv")
    assert data_file(Path("missing.csv")) == Path("missing.csv")  # the error names it as given


# --------------------------------------------------------------------------- random walk


def _walk(seed, n=50, volatility=0.01, start=None):
    start = start or {"BTC-USD": Decimal(40_000), "ETH-USD": Decimal(2_000)}
    return list(itertools.islice(random_walk(start, seed=seed, volatility=volatility, interval=HOUR), n))


def test_random_walk_is_reproducible_by_seed():
    assert _walk(7) == _walk(7)
    assert _walk(7) != _walk(8)


def test_random_walk_steps_every_interval_and_stays_positive():
    steps = _walk(7, n=2000, volatility=0.2)
    assert [s.timestamp for s in steps[:3]] == [HOUR, 2 * HOUR, 3 * HOUR]
    assert all(p > 0 for s in steps for p in s.prices.values())


def test_random_walk_volatility_is_the_std_of_log_returns():
    path = [Decimal(40_000)] + [s.prices["BTC-USD"] for s in _walk(3, n=4000, start={"BTC-USD": Decimal(40_000)})]
    returns = [math.log(b / a) for a, b in itertools.pairwise(path)]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    assert std == pytest.approx(0.01, rel=0.05)


def test_zero_volatility_walk_is_flat():
    assert {s.prices["BTC-USD"] for s in _walk(1, n=10, volatility=0)} == {Decimal("40000.00000000")}


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "price, answer",
    [
        (Decimal("3782.13"), 378_213_000_000),
        ("40000", 4_000_000_000_000),
        (0.1, 10_000_000),  # through the float's repr, not its binary expansion
        (Decimal("1.000000005"), 100_000_000),  # half to even
        (Decimal("1.000000015"), 100_000_002),
        (Decimal("0.000000016"), 2),
    ],
)
def test_answers_have_8_decimals(price, answer):
    assert to_answer(price) == answer


def test_answer_round_trip_and_other_decimals():
    assert from_answer(to_answer(Decimal("51588.12345678"))) == Decimal("51588.12345678")
    assert to_answer(Decimal("2000.5"), 18) == 2000_500_000_000_000_000_000


@pytest.mark.parametrize("price", [Decimal(0), Decimal(-1), Decimal("0.000000004")])
def test_prices_that_are_not_positive_at_8_decimals_are_refused(price):
    with pytest.raises(ValueError, match="not positive"):
        to_answer(price)


# --------------------------------------------------------------------------- the loop


class FakeTime(threading.Event):
    """A clock and stop event in one: waiting advances the clock instead of sleeping."""

    def __init__(self):
        super().__init__()
        self.now = 0.0
        self.waits = []

    def __call__(self):
        return self.now

    def wait(self, timeout=None):
        self.waits.append(timeout)
        self.now += timeout
        return self.is_set()


STEPS = [Step(MARCH_1_2020 + i * HOUR, {"BTC-USD": Decimal(8000 + i)}) for i in range(5)]


def test_speed_3600_pushes_one_csv_hour_per_second():
    time_, pushed = FakeTime(), []
    assert run(STEPS, pushed.append, speed=3600, stop=time_, clock=time_) == 5
    assert pushed == STEPS
    assert time_.waits == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert wall_delay(0, 60, 0) == 0.0  # speed 0: as fast as possible


def test_time_spent_sending_does_not_slow_the_pace():
    time_ = FakeTime()

    def slow_push(step):
        time_.now += 0.25  # transactions take a quarter of a second

    run(STEPS, slow_push, speed=3600, stop=time_, clock=time_)
    assert time_.waits == [0.0, 0.75, 0.75, 0.75, 0.75]
    assert time_.now == 4.25  # four CSV hours in four seconds, plus the last push


def test_steps_and_once_limit_the_updates():
    pushed = []
    assert run(STEPS, pushed.append, speed=0, max_steps=2) == 2
    assert pushed == STEPS[:2]
    endless = random_walk({"BTC-USD": Decimal(1)}, seed=1, volatility=0.01)
    assert run(endless, lambda step: None, speed=0, max_steps=1) == 1


def test_a_stop_request_finishes_the_step_in_flight_then_stops():
    time_, pushed = FakeTime(), []

    def push(step):
        pushed.append(step)
        if len(pushed) == 3:
            time_.set()  # as the SIGTERM handler does mid-transaction

    assert run(STEPS, push, speed=3600, stop=time_, clock=time_) == 3
    assert pushed == STEPS[:3]


def test_sigterm_and_sigint_request_a_clean_stop_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the loop decides when to stop
        assert stop.wait(5)


class FakeChain:
    def __init__(self, now):
        self.pending_timestamp = now
        self.warps = []

    def __setattr__(self, name, value):
        if name == "pending_timestamp" and hasattr(self, "warps"):
            self.warps.append(value)
        super().__setattr__(name, value)


def test_warp_moves_chain_time_by_the_csv_deltas():
    chain = FakeChain(now=1_700_000_000)
    run(STEPS[:3], lambda step: None, speed=0, warp=ChainClock(chain))
    assert chain.warps == [1_700_000_000 + HOUR, 1_700_000_000 + 2 * HOUR]


def test_warp_never_moves_chain_time_backwards():
    chain = FakeChain(now=1_700_000_000)
    clock = ChainClock(chain)
    clock(MARCH_1_2020)
    chain.pending_timestamp = 1_700_000_000 + 5 * HOUR  # the chain moved on by itself
    chain.warps.clear()
    clock(MARCH_1_2020 + HOUR)
    assert chain.warps == []
