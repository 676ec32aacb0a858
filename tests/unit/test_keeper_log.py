"""The keeper's log lines: amounts in USD for people, raw WAD integers for machines."""

import json
import logging

from perpdex.fixed_point import WAD
from perpdex.keeper.log import JsonFormatter, KeyValueFormatter, Ratio, Size, Usd, emit, format_size, format_usd


def record_of(**fields) -> logging.LogRecord:
    logger = logging.getLogger("perpdex.keeper.test")
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        emit(logger, logging.INFO, "order.executed", **fields)
    finally:
        logger.removeHandler(handler)
    return captured[0]


def test_usd_amounts_read_with_sensible_decimals():
    assert format_usd(12_345_678 * WAD // 1000) == "$12,345.68"
    assert format_usd(-31 * WAD // 10) == "-$3.10"
    assert format_usd(WAD // 2) == "$0.50"
    assert format_usd(412 * WAD // 1_000_000) == "$0.000412"  # would round to $0.00
    assert format_usd(0) == "$0.00"
    assert format_size(WAD // 4) == "0.25" and format_size(-1_200 * WAD) == "-1,200" and format_size(10**12) == "0.000001"


def test_key_value_lines_show_usd_and_json_lines_keep_the_raw_integers():
    fee, price, size = WAD // 2, 40_012_500 * WAD // 1000, -WAD // 4
    record = record_of(order=7, fill_price=Usd(price), fee=Usd(fee), size=Size(size), factor=Ratio(WAD // 8),
                       reason="exchange: insufficient margin")
    line = KeyValueFormatter().format(record)
    assert line.endswith(
        'order.executed order=7 fill_price=$40,012.50 fee=$0.50 size=-0.25 factor=12.50% '
        'reason="exchange: insufficient margin"'
    )
    payload = json.loads(JsonFormatter().format(record))
    assert payload["event"] == "order.executed"
    assert (payload["fill_price"], payload["fee"], payload["size"]) == (price, fee, size)
    assert payload["reason"] == "exchange: insufficient margin"
