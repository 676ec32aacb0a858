# pragma version ~=0.4.3
"""
@title fixed_point
@custom:contract-name fixed_point
@license GNU Affero General Public License v3.0 only
@notice Signed fixed-point division with explicit rounding. Vyper's signed `//` truncates
        toward zero; every signed division in perpdex goes through `_floor_div` or `_ceil_div`
        instead, mirrored exactly by `perpdex/fixed_point.py`.
"""

WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18


@internal
@pure
def _floor_div(a: int256, b: int256) -> int256:
    """
    @notice Largest integer <= a / b, for b > 0.
    """
    q: int256 = a // b
    if a % b != 0 and a < 0:
        q -= 1
    return q


@internal
@pure
def _ceil_div(a: int256, b: int256) -> int256:
    """
    @notice Smallest integer >= a / b, for b > 0.
    """
    q: int256 = a // b
    if a % b != 0 and a > 0:
        q += 1
    return q


@internal
@pure
def _ceil_div_u(a: uint256, b: uint256) -> uint256:
    """
    @notice Smallest integer >= a / b for unsigned a and b > 0.
    """
    q: uint256 = a // b
    if q * b != a:
        q += 1
    return q


@internal
@pure
def _abs(a: int256) -> uint256:
    if a < 0:
        return convert(-a, uint256)
    return convert(a, uint256)


@internal
@pure
def _sign(a: int256) -> int256:
    if a > 0:
        return 1
    if a < 0:
        return -1
    return 0
