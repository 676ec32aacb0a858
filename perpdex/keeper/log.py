"""The keeper's structured log: one event name and its fields per line.

Key=value lines are for people: amounts in USD with sensible decimals (`keeper_reward=$12.35`,
`fill_price=$40,012.50`), sizes in base units (`size=0.25`). JSON lines are for machines: every
field raw (WAD integers, exact), as the contracts' events carry them. Fields are tagged with
`Usd`, `Size` or `Ratio` (int subclasses: JSON writes the integer) by the code that emits them.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

from perpdex.fixed_point import WAD

LOGGER = "perpdex.keeper"


class Usd(int):
    """A WAD amount or price in USD."""


class Size(int):
    """A WAD amount of a market's base asset (signed for positions and orders)."""


class Ratio(int):
    """A WAD fraction, shown as a percentage."""


def format_decimal(wad: int, places: int = 2) -> str:
    """A WAD number with thousands separators and `places` decimals; six significant digits
    for what would round to nothing (sub-cent fees, tiny sizes)."""
    value = Decimal(int(wad)) / WAD
    if value != 0 and abs(value) < Decimal(10) ** -places:
        return f"{value:.6g}"
    return f"{value:,.{places}f}"


def format_usd(wad: int) -> str:
    """`$1,234.57`, `-$3.10`, `$0.000412`."""
    text = format_decimal(abs(int(wad)))
    return f"-${text}" if wad < 0 else f"${text}"


def format_size(wad: int) -> str:
    """Base units without trailing zeros: `0.25`, `-1,200`, `0.000001`."""
    value = Decimal(int(wad)) / WAD
    text = f"{value:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_value(value: Any) -> str:
    if isinstance(value, Usd):
        return format_usd(value)
    if isinstance(value, Size):
        return format_size(value)
    if isinstance(value, Ratio):
        return format_decimal(value * 100) + "%"
    text = str(value)
    return f'"{text}"' if " " in text or not text else text


def message(event: str, fields: dict[str, Any]) -> str:
    return " ".join([event, *(f"{k}={format_value(v)}" for k, v in fields.items())])


def emit(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` with its fields: the human message, and the raw fields for JSON lines."""
    logger.log(level, message(event, fields), extra={"event": event, "fields": fields})


class KeyValueFormatter(logging.Formatter):
    """`time level logger event key=value ...` (the message already carries the pairs)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")


def _raw(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the event's raw fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", record.getMessage()),
        }
        payload.update({k: _raw(v) for k, v in getattr(record, "fields", {}).items()})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(json_logs: bool = False, level: int = logging.INFO) -> logging.Logger:
    """A stderr handler on the `perpdex.keeper` logger, key=value or JSON lines."""
    logger = logging.getLogger(LOGGER)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else KeyValueFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger
