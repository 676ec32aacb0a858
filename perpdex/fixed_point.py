"""Integer fixed-point helpers with the exact rounding of contracts/modules/fixed_point.vy.

Vyper's signed `//` truncates toward zero; Python's floors. The contracts never use a bare
signed division: they call `floor_div`/`ceil_div`, and so does this module, so both sides give
the same wei.
"""

WAD = 10**18
INT256_MAX = 2**255 - 1
UINT256_MAX = 2**256 - 1


def floor_div(a: int, b: int) -> int:
    """Largest integer <= a / b, for b > 0."""
    assert b > 0
    return a // b


def ceil_div(a: int, b: int) -> int:
    """Smallest integer >= a / b, for b > 0."""
    assert b > 0
    return -((-a) // b)


def mul_div_down(a: int, b: int, d: int) -> int:
    return floor_div(a * b, d)


def mul_div_up(a: int, b: int, d: int) -> int:
    return ceil_div(a * b, d)


def sign(x: int) -> int:
    return (x > 0) - (x < 0)
