# pragma version ~=0.4.3
"""
@title pricing
@custom:contract-name pricing
@license GNU Affero General Public License v3.0 only
@notice The pure price, funding, fee and margin formulas of DESIGN.md, mirrored function by
        function in `perpdex/model.py`. No storage: the exchange passes everything in.
"""

from . import fixed_point as fp

FUNDING_PERIOD: constant(int256) = 8 * 3600
IWAD: constant(int256) = 10**18
WAD: constant(uint256) = 10**18


@internal
@pure
def _premium(skew: int256, skew_scale: uint256) -> int256:
    return fp._floor_div(skew * IWAD, convert(skew_scale, int256))


@internal
@pure
def _funding_rate(skew: int256, skew_scale: uint256, max_funding_rate: uint256) -> int256:
    """
    @notice Funding rate per 8 hours: the premium clamped to +-max_funding_rate.
    """
    rate: int256 = self._premium(skew, skew_scale)
    cap: int256 = convert(max_funding_rate, int256)
    return max(-cap, min(cap, rate))


@internal
@pure
def _mark_price(index: uint256, skew: int256, skew_scale: uint256) -> uint256:
    """
    @notice index x (1 + skew / skew_scale), floored at zero (a skew below -skew_scale is
            reachable by sells; the mark is informational and funding uses the clamped rate).
    """
    i: int256 = convert(index, int256)
    return convert(max(i + fp._floor_div(i * skew, convert(skew_scale, int256)), 0), uint256)


@internal
@pure
def _liquidation_price(index: uint256, skew: int256, skew_scale: uint256, size_delta: int256) -> uint256:
    """
    @notice A liquidation's price for the slice `size_delta` (which reduces the position): the
            worse, for the account, of the index moved by the slice's own close impact, index x
            (1 + size_delta / (2 skew_scale)), and the ordinary fill price. A skew pushed in
            the account's favour does not make liquidation a better exit than closing.
    """
    fill: uint256 = self._fill_price(index, skew, skew_scale, size_delta)
    own: uint256 = self._fill_price(index, 0, skew_scale, size_delta)
    if size_delta < 0:
        return min(fill, own)
    return max(fill, own)


@internal
@pure
def _closing_price(index: uint256, skew: int256, skew_scale: uint256) -> uint256:
    """
    @notice The fill price at which the traders' whole skew would close, index x (1 + skew /
            (2 skew_scale)) rounded as that fill (down when the traders are long and would
            sell), and 0 rather than negative for a short skew of 2 x skew_scale or more.
    """
    if skew == 0:
        return index
    i: int256 = convert(index, int256)
    numerator: int256 = i * skew
    denominator: int256 = 2 * convert(skew_scale, int256)
    impact: int256 = 0
    if skew < 0:
        impact = fp._ceil_div(numerator, denominator)
    else:
        impact = fp._floor_div(numerator, denominator)
    return convert(max(i + impact, 0), uint256)


@internal
@pure
def _fill_price(index: uint256, skew: int256, skew_scale: uint256, size_delta: int256) -> uint256:
    """
    @notice index x (1 + (2 skew + delta) / (2 skew_scale)): up for buys, down for sells.
    """
    i: int256 = convert(index, int256)
    numerator: int256 = i * (2 * skew + size_delta)
    denominator: int256 = 2 * convert(skew_scale, int256)
    impact: int256 = 0
    if size_delta > 0:
        impact = fp._ceil_div(numerator, denominator)
    else:
        impact = fp._floor_div(numerator, denominator)
    price: int256 = i + impact
    assert price > 0, "exchange: fill price out of range"
    return convert(price, uint256)


@internal
@pure
def _funding_per_unit_delta(rate: int256, index: uint256, elapsed: uint256) -> int256:
    return fp._floor_div(
        rate * convert(index, int256) * convert(elapsed, int256), IWAD * FUNDING_PERIOD
    )


@internal
@pure
def _funding_charge(size: int256, funding_per_unit: int256, snapshot: int256) -> int256:
    """
    @notice What a holder of `size` pays (positive) or receives (negative), rounded up.
    """
    return fp._ceil_div(size * (funding_per_unit - snapshot), IWAD)


@internal
@pure
def _trade_fee(
    skew: int256, size_delta: int256, price: uint256, maker_fee: uint256, taker_fee: uint256
) -> uint256:
    """
    @notice Maker fee on the part of a trade that reduces |skew|, taker fee on the rest.
    """
    size: uint256 = fp._abs(size_delta)
    maker_size: uint256 = 0
    if (skew > 0 and size_delta < 0) or (skew < 0 and size_delta > 0):
        maker_size = min(size, fp._abs(skew))
    taker_size: uint256 = size - maker_size
    return fp._ceil_div_u((maker_size * maker_fee + taker_size * taker_fee) * price, WAD * WAD)


@internal
@pure
def _notional(size: int256, index: uint256) -> uint256:
    return fp._ceil_div_u(fp._abs(size) * index, WAD)


@internal
@pure
def _unrealized_pnl(size: int256, open_notional: int256, index: uint256) -> int256:
    return fp._floor_div(size * convert(index, int256), IWAD) - open_notional
