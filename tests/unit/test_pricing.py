"""Differential tests of the pure formulas: contracts/modules/pricing.vy and fixed_point.vy,
compiled into a small harness, against perpdex/model.py and perpdex/fixed_point.py, to the wei.

Vyper's signed `//` truncates toward zero while Python's floors: the module's `_floor_div` and
`_ceil_div` must give Python's answer for every sign, so the inputs cover negative numbers and
the int256 extremes.
"""

import boa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from perpdex import fixed_point as fp
from perpdex import model
from perpdex.model import ModelRevert, Position
from system import default_params

WAD = 10**18
INT256_MIN, INT256_MAX = -(2**255), 2**255 - 1
UINT256_MAX = 2**256 - 1
MAX_SIZE = 2**120  # the exchange's bound on sizes, open interest and skew scale
MAX_PRICE = 10**36  # the oracle's bound on an index price
MAX_FEE = 10**16
MAX_FUNDING_RATE = 10**17

HARNESS = """
# pragma version ~=0.4.3
from contracts.modules import fixed_point as fp
from contracts.modules import pricing

@external
@pure
def floor_div(a: int256, b: int256) -> int256:
    return fp._floor_div(a, b)

@external
@pure
def ceil_div(a: int256, b: int256) -> int256:
    return fp._ceil_div(a, b)

@external
@pure
def ceil_div_u(a: uint256, b: uint256) -> uint256:
    return fp._ceil_div_u(a, b)

@external
@pure
def abs_(a: int256) -> uint256:
    return fp._abs(a)

@external
@pure
def sign(a: int256) -> int256:
    return fp._sign(a)

@external
@pure
def premium(skew: int256, skew_scale: uint256) -> int256:
    return pricing._premium(skew, skew_scale)

@external
@pure
def funding_rate(skew: int256, skew_scale: uint256, max_funding_rate: uint256) -> int256:
    return pricing._funding_rate(skew, skew_scale, max_funding_rate)

@external
@pure
def mark_price(index: uint256, skew: int256, skew_scale: uint256) -> uint256:
    return pricing._mark_price(index, skew, skew_scale)

@external
@pure
def fill_price(index: uint256, skew: int256, skew_scale: uint256, size_delta: int256) -> uint256:
    return pricing._fill_price(index, skew, skew_scale, size_delta)

@external
@pure
def funding_per_unit_delta(rate: int256, index: uint256, elapsed: uint256) -> int256:
    return pricing._funding_per_unit_delta(rate, index, elapsed)

@external
@pure
def funding_charge(size: int256, funding_per_unit: int256, snapshot: int256) -> int256:
    return pricing._funding_charge(size, funding_per_unit, snapshot)

@external
@pure
def trade_fee(skew: int256, size_delta: int256, price: uint256, maker_fee: uint256, taker_fee: uint256) -> uint256:
    return pricing._trade_fee(skew, size_delta, price, maker_fee, taker_fee)

@external
@pure
def notional(size: int256, index: uint256) -> uint256:
    return pricing._notional(size, index)

@external
@pure
def unrealized_pnl(size: int256, open_notional: int256, index: uint256) -> int256:
    return pricing._unrealized_pnl(size, open_notional, index)
"""

FUZZ = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def pricing():
    return boa.loads(HARNESS, name="PricingHarness")


# ---------------------------------------------------------------- strategies

int256s = st.integers(INT256_MIN, INT256_MAX)
# divisors: small ones (where truncation and flooring differ most often) and any positive int256
divisors = st.one_of(st.integers(1, 1_000), st.integers(1, INT256_MAX))
sizes = st.one_of(
    st.integers(-1_000, 1_000),  # a few wei: rounding at the smallest scale
    st.integers(-100_000 * WAD, 100_000 * WAD),  # realistic
    st.integers(-MAX_SIZE, MAX_SIZE),  # the exchange's bounds
)
nonzero_sizes = sizes.filter(lambda x: x != 0)
skew_scales = st.one_of(st.integers(1, 1_000), st.integers(WAD // 10, 10**7 * WAD), st.integers(1, MAX_SIZE))
prices = st.one_of(st.integers(1, 1_000), st.integers(WAD // 100, 10**6 * WAD), st.integers(1, MAX_PRICE))
funding_caps = st.integers(0, MAX_FUNDING_RATE)
fees = st.integers(0, MAX_FEE)
# the accumulator is stored in 128 bits around zero
accumulators = st.integers(-(2**127) + 1, 2**127 - 1)


def params(skew_scale: int, max_funding_rate: int = MAX_FUNDING_RATE, maker_fee: int = 0, taker_fee: int = 0):
    return default_params(
        skew_scale=skew_scale, max_funding_rate=max_funding_rate, maker_fee=maker_fee, taker_fee=taker_fee
    )


# ---------------------------------------------------------------- fixed_point


@pytest.mark.parametrize(
    "a, b, floor, ceil",
    [
        (7, 2, 3, 4),
        (-7, 2, -4, -3),  # Vyper's -7 // 2 is -3: the helper must floor to -4
        (-6, 2, -3, -3),
        (6, 2, 3, 3),
        (-1, WAD, -1, 0),
        (1, WAD, 0, 1),
        (0, 5, 0, 0),
        (INT256_MIN, 1, INT256_MIN, INT256_MIN),
        (INT256_MIN, 2, -(2**254), -(2**254)),
        (INT256_MIN + 1, 2, -(2**254), -(2**254) + 1),
        (INT256_MAX, INT256_MAX, 1, 1),
        (INT256_MIN + 1, INT256_MAX, -1, -1),
        (INT256_MIN, INT256_MAX, -2, -1),
    ],
)
def test_floor_and_ceil_division_known_values(pricing, a, b, floor, ceil):
    assert pricing.floor_div(a, b) == floor == fp.floor_div(a, b)
    assert pricing.ceil_div(a, b) == ceil == fp.ceil_div(a, b)


@FUZZ
@given(a=int256s, b=divisors)
@example(a=-7, b=2)
@example(a=INT256_MIN, b=3)
def test_floor_and_ceil_division_match_python(pricing, a, b):
    floor, ceil = pricing.floor_div(a, b), pricing.ceil_div(a, b)
    assert floor == fp.floor_div(a, b) == a // b
    assert ceil == fp.ceil_div(a, b) == -((-a) // b)
    # exact bracket of the rational quotient, whatever the signs
    assert floor * b <= a < (floor + 1) * b
    assert (ceil - 1) * b < a <= ceil * b


@FUZZ
@given(a=st.integers(0, UINT256_MAX), b=st.one_of(st.integers(1, 1_000), st.integers(1, UINT256_MAX)))
@example(a=UINT256_MAX, b=1)
@example(a=UINT256_MAX, b=UINT256_MAX)
@example(a=UINT256_MAX - 1, b=UINT256_MAX)
def test_unsigned_ceil_division_matches_python(pricing, a, b):
    assert pricing.ceil_div_u(a, b) == fp.ceil_div(a, b)


@FUZZ
@given(a=st.integers(INT256_MIN + 1, INT256_MAX))
@example(a=0)
@example(a=INT256_MIN + 1)
def test_abs_and_sign_match_python(pricing, a):
    assert pricing.abs_(a) == abs(a)
    assert pricing.sign(a) == fp.sign(a)


# ---------------------------------------------------------------- prices and funding


@FUZZ
@given(skew=sizes, skew_scale=skew_scales, cap=funding_caps)
@example(skew=-1, skew_scale=3, cap=MAX_FUNDING_RATE)  # -1/3: floors to -333..34, not -333..33
@example(skew=12_500 * WAD // 1_000, skew_scale=1_000 * WAD, cap=MAX_FUNDING_RATE)  # the seed: 1.25 %
def test_premium_and_funding_rate_match_model(pricing, skew, skew_scale, cap):
    assert pricing.premium(skew, skew_scale) == model.premium(skew, skew_scale)
    rate = pricing.funding_rate(skew, skew_scale, cap)
    assert rate == model.funding_rate(skew, params(skew_scale, max_funding_rate=cap))
    assert -cap <= rate <= cap


@FUZZ
@given(index=prices, skew=sizes, skew_scale=skew_scales)
@example(index=40_000 * WAD, skew=12_500 * WAD // 1_000, skew_scale=1_000 * WAD)  # mark 40,500
@example(index=3, skew=-1, skew_scale=2)  # 3 - 1.5: floors to 1
@example(index=40_000 * WAD, skew=-1_500 * WAD, skew_scale=1_000 * WAD)  # below -skew_scale
def test_mark_price_matches_model(pricing, index, skew, skew_scale):
    assert pricing.mark_price(index, skew, skew_scale) == model.mark_price(index, skew, skew_scale)


def test_seed_example_mark_and_rate(pricing):
    """DESIGN's seed: index 40,000, skew 12.5 on a 1,000 skew scale -> mark 40,500, rate +1.25 %."""
    assert pricing.mark_price(40_000 * WAD, 12_500 * WAD // 1_000, 1_000 * WAD) == 40_500 * WAD
    assert pricing.funding_rate(12_500 * WAD // 1_000, 1_000 * WAD, MAX_FUNDING_RATE) == WAD // 80
    assert pricing.funding_rate(-12_500 * WAD // 1_000, 1_000 * WAD, MAX_FUNDING_RATE) == -(WAD // 80)
    # clamped at the cap both ways
    assert pricing.funding_rate(500 * WAD, 1_000 * WAD, MAX_FUNDING_RATE) == MAX_FUNDING_RATE
    assert pricing.funding_rate(-500 * WAD, 1_000 * WAD, MAX_FUNDING_RATE) == -MAX_FUNDING_RATE


def test_mark_price_below_minus_skew_scale_floors_at_zero(pricing):
    """A skew below -skew_scale is reachable (a sell from skew 0 only needs size < 2 x
    skew_scale for a positive fill); the formula is then negative and the mark floors at 0 on
    both sides (it used to revert in the contract while the model returned a negative number)."""
    index, skew_scale = 40_000 * WAD, 1_000 * WAD
    assert pricing.mark_price(index, -1_500 * WAD, skew_scale) == 0
    assert model.mark_price(index, -1_500 * WAD, skew_scale) == 0
    assert pricing.mark_price(index, -skew_scale, skew_scale) == 0
    assert pricing.mark_price(index, -skew_scale + WAD, skew_scale) == 40 * WAD


@FUZZ
@given(index=prices, skew=sizes, skew_scale=skew_scales, size_delta=nonzero_sizes)
@example(index=40_000 * WAD, skew=0, skew_scale=1_000 * WAD, size_delta=WAD)  # 40,020
@example(index=3, skew=-1, skew_scale=2, size_delta=-1)  # negative impact numerator: floors
@example(index=3, skew=-1, skew_scale=2, size_delta=1)  # negative numerator rounded up: toward 0
def test_fill_price_matches_model(pricing, index, skew, skew_scale, size_delta):
    try:
        expected = model.fill_price(index, skew, skew_scale, size_delta)
    except ModelRevert as revert:
        with boa.reverts(revert.reason):
            pricing.fill_price(index, skew, skew_scale, size_delta)
        return
    price = pricing.fill_price(index, skew, skew_scale, size_delta)
    assert price == expected
    # rounding is against the trader: up for buys, down for sells
    exact_times_denominator = index * (2 * skew_scale + 2 * skew + size_delta)
    if size_delta > 0:
        assert price * 2 * skew_scale >= exact_times_denominator
    else:
        assert price * 2 * skew_scale <= exact_times_denominator


def test_fill_price_known_values(pricing):
    scale = 1_000 * WAD
    assert pricing.fill_price(40_000 * WAD, 0, scale, WAD) == 40_020 * WAD
    assert pricing.fill_price(40_000 * WAD, 0, scale, -WAD) == 39_980 * WAD
    # from skew +20, selling 7.5: average premium (40 - 7.5) / 2,000
    assert pricing.fill_price(40_000 * WAD, 20 * WAD, scale, -7_500 * WAD // 1_000) == 40_650 * WAD
    # a sell that would price at or below zero is refused
    with boa.reverts("exchange: fill price out of range"):
        pricing.fill_price(40_000 * WAD, 0, scale, -2 * scale)


@FUZZ
@given(
    rate=st.integers(-MAX_FUNDING_RATE, MAX_FUNDING_RATE),
    index=prices,
    elapsed=st.one_of(st.integers(0, 100), st.integers(0, 10 * 365 * 86_400)),
)
@example(rate=WAD // 80, index=40_000 * WAD, elapsed=8 * 3_600)  # 500 USD per unit
@example(rate=-1, index=1, elapsed=1)  # a tiny negative accrual floors to -1
def test_funding_per_unit_delta_matches_model(pricing, rate, index, elapsed):
    assert pricing.funding_per_unit_delta(rate, index, elapsed) == model.funding_per_unit_delta(rate, index, elapsed)


@FUZZ
@given(size=sizes, funding_per_unit=accumulators, snapshot=accumulators)
@example(size=-1, funding_per_unit=1, snapshot=0)  # a receiver of a sub-wei amount gets 0
@example(size=1, funding_per_unit=1, snapshot=0)  # a payer of a sub-wei amount pays 1
@example(size=-3, funding_per_unit=-1, snapshot=0)
def test_funding_charge_matches_model(pricing, size, funding_per_unit, snapshot):
    charge = pricing.funding_charge(size, funding_per_unit, snapshot)
    assert charge == model.funding_charge(size, funding_per_unit, snapshot)
    # rounded up: a payer never pays less, a receiver never receives more, than the exact amount
    assert charge * WAD >= size * (funding_per_unit - snapshot)


def test_funding_charge_known_values(pricing):
    assert pricing.funding_charge(1, 1, 0) == 1
    assert pricing.funding_charge(-1, 1, 0) == 0
    assert pricing.funding_charge(20 * WAD, 500 * WAD, 0) == 10_000 * WAD
    assert pricing.funding_charge(-7_500 * WAD // 1_000, 500 * WAD, 0) == -3_750 * WAD


# ---------------------------------------------------------------- fees and margin pieces


@FUZZ
@given(
    skew=sizes,
    size_delta=nonzero_sizes,
    price=st.one_of(st.integers(1, 1_000), st.integers(1, 10**6 * WAD)),
    maker_fee=fees,
    taker_fee=fees,
)
@example(skew=5 * WAD, size_delta=-8 * WAD, price=40_040 * WAD, maker_fee=WAD // 5_000, taker_fee=WAD // 1_000)
@example(skew=-5 * WAD, size_delta=8 * WAD, price=40_040 * WAD, maker_fee=WAD // 5_000, taker_fee=WAD // 1_000)
@example(skew=0, size_delta=1, price=1, maker_fee=0, taker_fee=1)  # a sub-wei fee rounds up to 1
def test_trade_fee_matches_model(pricing, skew, size_delta, price, maker_fee, taker_fee):
    maker_fee, taker_fee = min(maker_fee, taker_fee), max(maker_fee, taker_fee)
    fee = pricing.trade_fee(skew, size_delta, price, maker_fee, taker_fee)
    assert fee == model.trade_fee(skew, size_delta, price, params(WAD, maker_fee=maker_fee, taker_fee=taker_fee))


def test_trade_fee_maker_taker_split_known_values(pricing):
    maker, taker = WAD // 5_000, WAD // 1_000
    price = 40_040 * WAD
    # skew +5, sell 8: 5 reduce the skew (maker), 3 add to it (taker)
    assert pricing.trade_fee(5 * WAD, -8 * WAD, price, maker, taker) == 160_160 * WAD // 1_000
    # same size adding to the skew: all taker
    assert pricing.trade_fee(5 * WAD, 8 * WAD, price, maker, taker) == 320_320 * WAD // 1_000
    # fully reducing: all maker
    assert pricing.trade_fee(-8 * WAD, 5 * WAD, price, maker, taker) == 40_040 * WAD // 1_000


@FUZZ
@given(size=sizes, index=prices)
def test_notional_matches_model(pricing, size, index):
    assert pricing.notional(size, index) == model.notional(size, index)


@FUZZ
@given(size=sizes, open_notional=st.integers(-(2**200), 2**200), index=prices)
@example(size=-1, open_notional=0, index=1)  # -1e-18 USD of PnL floors to -1 wei
def test_unrealized_pnl_matches_model(pricing, size, open_notional, index):
    expected = model.unrealized_pnl(Position(size=size, open_notional=open_notional), index)
    assert pricing.unrealized_pnl(size, open_notional, index) == expected
