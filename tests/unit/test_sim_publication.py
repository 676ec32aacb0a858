"""The simulator's oracle publication (perpdex/sim/publication.py): a Chainlink-style feed
publishes on a deviation threshold and a heartbeat along each candle's path, wicks included."""

from perpdex.sim.publication import Candle, candle_path, feed_rounds, resample

HOUR = 3600


def test_a_wick_publishes_rounds_even_when_the_candle_closes_where_it_opened():
    # open 100, low 90, close 100: the feed must follow the wick down and back
    candle = Candle(0, 100.0, 100.0, 90.0, 100.0)
    rounds = feed_rounds([candle], 0, 100.0, deviation=0.01, heartbeat=10 * HOUR)
    prices = [r.price for r in rounds]
    assert min(prices) < 91.0, "the wick's low is published"
    assert all(r.reason == "deviation" for r in rounds)
    # every round is `deviation` away from the one before it
    last = 100.0
    for price in prices:
        assert abs(abs(price - last) / last - 0.01) < 1e-9
        last = price


def test_a_flat_price_publishes_only_heartbeats():
    candles = [Candle(h * HOUR, 50.0, 50.0, 50.0, 50.0) for h in range(5)]
    rounds = feed_rounds(candles, 1, 50.0, deviation=0.005, heartbeat=HOUR - 120)
    assert [r.reason for r in rounds] == ["heartbeat"] * len(rounds)
    assert [r.time for r in rounds] == [(HOUR - 120) * (i + 1) for i in range(len(rounds))]
    assert all(r.market == 1 for r in rounds)


def test_the_nearer_extreme_comes_first_on_the_path():
    down_first = candle_path(Candle(0, 100.0, 120.0, 95.0, 110.0))
    assert [p for _, p in down_first] == [100.0, 95.0, 120.0, 110.0]
    assert down_first[-1][0] == HOUR


def test_resampling_keeps_the_open_the_extremes_and_the_close():
    minutes = [Candle(60 * i, 10.0 + i, 11.0 + i, 9.0 - i, 10.5 + i, 60) for i in range(10)]
    (merged,) = resample(minutes, 600)
    assert (merged.open, merged.high, merged.low, merged.close, merged.duration) == (10.0, 20.0, 0.0, 19.5, 600)
