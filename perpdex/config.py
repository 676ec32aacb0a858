"""Markets configuration: human units in config/markets.json, WAD integers on-chain."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from perpdex.fixed_point import WAD
from perpdex.model import GlobalParams, MarketParams
from perpdex.orders import OrderParams

DEFAULT_MARKETS_FILE = Path(__file__).resolve().parent.parent / "config" / "markets.json"


def to_wad(value) -> int:
    """A decimal number in human units (int, float or string) to WAD, exactly for decimals."""
    return int(Decimal(str(value)) * WAD)


@dataclass(frozen=True)
class MarketConfig:
    id: int
    symbol: str
    initial_price: Decimal
    heartbeat: int
    max_deviation: int
    params: MarketParams


def load_markets(path: Path | str = DEFAULT_MARKETS_FILE) -> tuple[list[MarketConfig], GlobalParams]:
    raw = json.loads(Path(path).read_text())
    markets = []
    for m in raw["markets"]:
        params = MarketParams(
            **{name: to_wad(m[name]) for name in MarketParams.__dataclass_fields__}
        )
        markets.append(
            MarketConfig(
                id=int(m["id"]),
                symbol=m["symbol"],
                initial_price=Decimal(str(m["initial_price"])),
                heartbeat=int(m["heartbeat"]),
                max_deviation=to_wad(m["max_deviation"]),
                params=params,
            )
        )
    g = raw.get("globals", {})
    globals_ = GlobalParams(**{name: to_wad(g[name]) for name in GlobalParams.__dataclass_fields__ if name in g})
    return markets, globals_


def params_tuple(p: MarketParams) -> tuple:
    """The on-chain MarketParams struct, field order as in Exchange.vy."""
    return tuple(getattr(p, name) for name in MarketParams.__dataclass_fields__)


def load_order_params(path: Path | str = DEFAULT_MARKETS_FILE) -> OrderParams:
    """The "orders" block: delays and ages in seconds, the execution fee in USD (to WAD here),
    the most open orders per sub-account. Missing keys keep OrderParams' defaults."""
    raw = json.loads(Path(path).read_text()).get("orders", {})
    unknown = set(raw) - set(OrderParams.__dataclass_fields__) - {"_doc"}
    if unknown:
        raise ValueError(f"{path}: unknown order parameter(s) {', '.join(sorted(unknown))}")
    values = {}
    for name in ("min_order_delay", "max_order_age", "max_open_orders"):
        if name in raw:
            values[name] = int(raw[name])
    if "execution_fee" in raw:
        values["execution_fee"] = to_wad(raw["execution_fee"])
    return OrderParams(**values)
