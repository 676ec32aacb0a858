"""Numbers in and out of the wallet: what a person types (USD, base units, percentages, times)
converted exactly to the chain's integers, and the chain's integers shown in USD.

Units on chain: collateral amounts going in (deposit, withdraw, faucet, LP deposit) are token
units (6 decimals for USDC); sizes, prices and every amount the contracts report (cash, equity,
margins, PnL, fees) are WAD (18 decimals). Conversions never go through floats; an amount with
more decimals than the chain represents is refused, not rounded.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

import click

WAD = 10**18
DEFAULT_SLIPPAGE = Decimal("0.5")  # percent
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CliError(click.ClickException):
    """A failure explained to a person: one message, no traceback, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


# =============================================================================================
# In
# =============================================================================================


def parse_decimal(text: str | Decimal, what: str) -> Decimal:
    """A decimal number typed by a person ('1,000.5', '1_000'); refuses NaN, infinities, garbage."""
    try:
        value = Decimal(str(text).strip().replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise CliError(f"{what} must be a number, not {text!r}") from None
    if not value.is_finite():
        raise CliError(f"{what} must be a finite number, not {text!r}")
    return value


def scale_exact(value: Decimal, decimals: int, what: str) -> int:
    """`value` x 10^decimals as an integer; refuses digits beyond the representable ones."""
    with localcontext() as exact:
        exact.prec = 100  # no rounding below 10^100: every uint256 fits
        scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise CliError(f"{what} {value} has more than {decimals} decimals")
    return int(scaled)


def positive_decimal(text: str | Decimal, what: str = "AMOUNT") -> Decimal:
    value = parse_decimal(text, what)
    if value <= 0:
        raise CliError(f"{what} must be positive, not {text}")
    return value


def positive_amount(text: str | Decimal, decimals: int, what: str = "AMOUNT") -> int:
    """A positive amount in human units as an integer of `decimals` decimals."""
    return scale_exact(positive_decimal(text, what), decimals, what)


def signed_size(text: str | Decimal) -> int:
    """A signed size in base units (positive buys, negative sells) in WAD."""
    size = scale_exact(parse_decimal(text, "SIZE"), 18, "SIZE")
    if size == 0:
        raise CliError("SIZE must not be zero: positive to buy (long), negative to sell (short)")
    return size


def parse_slippage(text: str | Decimal | None) -> Decimal:
    """A slippage tolerance in percent: '0.5' or '0.5%' is half a percent, '50bps' the same."""
    raw = str(DEFAULT_SLIPPAGE if text is None else text).strip().lower()
    if raw.endswith("bps"):
        value = parse_decimal(raw[:-3], "--slippage") / 100
    else:
        value = parse_decimal(raw.removesuffix("%"), "--slippage")
    if not 0 <= value < 100:
        raise CliError("--slippage is a percentage in [0, 100) (or basis points: 50bps)")
    return value


def acceptable_price(reference: int, size_delta: int, slippage_percent: Decimal) -> int:
    """The worst fill price a trade accepts: `reference` moved against the trader by the
    slippage. Buys accept at most ref x (1 + s), rounded down; sells at least ref x (1 - s),
    rounded up, so the bound never tolerates more than asked for."""
    tolerance = Fraction(slippage_percent) / 100
    if size_delta > 0:
        return math.floor(reference * (1 + tolerance))
    return math.ceil(reference * (1 - tolerance))


def parse_order_id(text: str | int) -> int:
    """An order id as `orders` shows it (0x...) or in decimal."""
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        raise CliError(f"ORDER_ID must be the id `orders` shows (0x...), not {text!r}") from None
    if value <= 0 or value >= 2**256:
        raise CliError(f"ORDER_ID {text!r} is out of range")
    return value


def parse_request_id(text: str | int) -> int:
    """An LP request id as `lp requests` shows it (decimal)."""
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        raise CliError(f"REQUEST_ID must be the number `lp requests` shows, not {text!r}") from None
    if value <= 0 or value >= 2**256:
        raise CliError(f"REQUEST_ID {text!r} is out of range")
    return value


def check_expiry(text: str | None) -> None:
    """Refuse a malformed --expiry before connecting (its value needs the chain's clock)."""
    parse_expiry(text, 0, check_future=False)


def parse_expiry(text: str | None, now: int, check_future: bool = True) -> int:
    """--expiry as the contract takes it: 0 (none given: the longest allowed), a duration from
    `now` ('90s', '30m', '12h', '7d'), unix seconds, or an ISO date/time in UTC."""
    if text is None or not str(text).strip():
        return 0
    raw = str(text).strip().lower()
    if raw[-1:] in DURATION_UNITS and raw[:-1].replace(".", "", 1).isdigit():
        return now + int(Decimal(raw[:-1]) * DURATION_UNITS[raw[-1]])
    if raw.isdigit():
        moment = int(raw)
    else:
        try:
            parsed = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise CliError(
                f"--expiry {text!r}: give a duration (90s, 30m, 12h, 7d), unix seconds or an ISO date/time (UTC)"
            ) from None
        moment = int((parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp())
    if check_future and moment <= now:
        raise CliError(f"--expiry {text!r} is not in the future (chain time is {utc_time(now)})")
    return moment


# =============================================================================================
# Out
# =============================================================================================


def wad_to_decimal(value: int) -> Decimal:
    return Decimal(value) / WAD


def usd(wad: int) -> str:
    """An amount in USD with cents: '12,345.68'; below a cent but not zero, to 1/10,000."""
    value = wad_to_decimal(wad)
    if value and abs(value) < Decimal("0.0001"):
        return "-<0.0001" if value < 0 else "<0.0001"
    if value and abs(value) < Decimal("0.01"):
        return f"{value:,.4f}"
    return f"{value:,.2f}"


def price(wad: int) -> str:
    """A price: cents above 10 USD, more digits below (an altcoin's 0.1234)."""
    value = wad_to_decimal(wad)
    if value >= 10 or value == 0:
        return f"{value:,.2f}"
    return f"{value:,.6f}".rstrip("0").rstrip(".")


def tokens(units: int, decimals: int) -> str:
    return f"{Decimal(units).scaleb(-decimals):,.2f}"


def size_text(wad: int) -> str:
    return f"{wad_to_decimal(wad):+,.4f}"


def base_amount(wad: int) -> str:
    """An unsigned size with the digits it has: '0.5', '1,000'."""
    return f"{wad_to_decimal(abs(wad)).normalize():,f}"


def percent(wad: int, places: int = 4) -> str:
    return f"{wad_to_decimal(wad) * 100:+.{places}f} %"


def ratio_percent(wad: int) -> str:
    """An unsigned parameter ratio (fees, margins) in percent, trailing zeros dropped."""
    return f"{(wad_to_decimal(wad) * 100).normalize():f} %"


def utc_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(timestamp: int, now: int) -> str:
    """'in 59m 59s' / '12s ago' / 'now', against the chain's clock."""
    delta = timestamp - now
    if delta == 0:
        return "now"
    seconds = abs(delta)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    text = " ".join(parts[:2])
    return f"in {text}" if delta > 0 else f"{text} ago"
