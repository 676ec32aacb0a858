"""The report's chart (report.png): one panel per question a risk person asks.

1. Index prices (first step = 100) with every liquidation, bankruptcy (bad debt), ADL target and
   write-off marked where it happened, each market's low annotated, legend on the panel.
2. Those events counted per step, by kind.
3. The insurance fund's balance and the uncovered deficit outstanding.
4. The liquidity vault's value; 5. the LPs' PnL (value less what they put in), on its own axis.
6. Open interest per market and side, in USD at the index.
7. The funding traders owed per step.
Times in UTC, amounts in USD; a dashed line across every panel marks the first bankruptcy.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

# event -> (marker, colour, label)
MARKERS = {
    "Liquidation": ("v", "tab:red", "liquidation"),
    "BadDebt": ("X", "black", "bankruptcy (bad debt)"),
    "AutoDeleveraged": ("D", "tab:purple", "ADL target"),
    "DeficitWrittenOff": ("s", "tab:brown", "write-off"),
}


def _at(mapping: dict, market: int, default=None):
    if market in mapping:
        return mapping[market]
    return mapping.get(str(market), default)


def _utc(t: int) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _usd_axis(ax, label: str) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_ylabel(label)


def draw(summary: dict, path: Path, symbols: dict[int, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    series = summary["series"]
    step_times = [r["time"] for r in series]
    times = [_utc(t) for t in step_times]
    markets = sorted({int(m) for r in series for m in r["prices"]})
    name = {m: symbols.get(m, f"market {m}") for m in markets}
    events = summary.get("events", [])
    fig, axes = plt.subplots(7, 1, figsize=(12, 21), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.4, 1.6, 1.4, 1.4, 1.6, 1.4]})

    # 1. prices and where the events happened
    ax = axes[0]
    first = {m: _at(series[0]["prices"], m) or 1 for m in markets}
    index = {m: [100 * _at(r["prices"], m) / first[m] for r in series] for m in markets}
    colours = {}
    for m in markets:
        (line,) = ax.plot(times, index[m], linewidth=1.8, label=f"{name[m]} index (100 = {first[m]:,.2f} USD)")
        colours[m] = line.get_color()
        low = min(range(len(series)), key=index[m].__getitem__)
        price = _at(series[low]["prices"], m)
        ax.annotate(f"{name[m]} low {price:,.2f} USD ({index[m][low] - 100:+.1f} %)", (times[low], index[m][low]),
                    xytext=(14, -4 - 12 * markets.index(m)), textcoords="offset points", fontsize=8,
                    color=colours[m], arrowprops={"arrowstyle": "-", "color": colours[m], "linewidth": 0.6})

    def level(e) -> float:  # the market's index at the event's time, between the two step ends around it
        values, t = index[int(e["market"])], e["time"]
        if t <= step_times[0]:
            return values[0]
        for i in range(1, len(step_times)):
            if t <= step_times[i]:
                share = (t - step_times[i - 1]) / (step_times[i] - step_times[i - 1])
                return values[i - 1] + share * (values[i] - values[i - 1])
        return values[-1]

    for kind, (marker, colour, label) in MARKERS.items():
        points = [e for e in events if e["event"] == kind and int(e["market"]) in index]
        if points:
            ax.scatter([_utc(e["time"]) for e in points], [level(e) for e in points], marker=marker, color=colour,
                       s=36 if kind == "Liquidation" else 46, alpha=0.75, edgecolors="white", linewidths=0.4,
                       label=f"{label} ({len(points):,})", zorder=3)
    lowest = min(min(v) for v in index.values())
    ax.set_ylim(bottom=lowest - 4 - 3 * len(markets))  # room for the lows' notes
    ax.set_ylabel("index price\n(first step = 100)")
    w = summary["window"]
    inv = summary["invariants"]
    held = "all held" if inv.get("broken") is None else "one broken"
    ax.set_title(f"Crash replay {w['start_utc']} - {w['end_utc']} UTC: {summary['population']['traders']:,} traders, "
                 f"{summary['population']['whales']} whales, seed {summary['config']['seed']}; "
                 f"invariants checked {sum(inv['checked'].values()):,} times, {held}", fontsize=11)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)

    # 2. the events per step
    ax = axes[1]
    step_of = _step_index(step_times)
    kinds = [k for k in MARKERS if any(e["event"] == k for e in events)]
    step = step_times[1] - step_times[0] if len(step_times) > 1 else 3600
    width = step / 86400 * 0.8 / max(1, len(kinds))  # in days, matplotlib's date unit
    middles = [mdates.date2num(t) - step / 86400 / 2 for t in times]  # a step's events at its middle
    for j, kind in enumerate(kinds):
        counts = [0] * len(series)
        for e in events:
            if e["event"] == kind:
                counts[step_of(e["time"])] += 1
        offset = (j - (len(kinds) - 1) / 2) * width
        ax.bar([x + offset for x in middles], counts, width=width, color=MARKERS[kind][1],
               label=MARKERS[kind][2])
    ax.set_ylabel("events per step\n(count)")
    if kinds:
        ax.legend(loc="upper right", fontsize=8, ncol=len(kinds))

    # 3. the insurance fund and the uncovered deficit
    ax = axes[2]
    fund, deficit = summary["insurance_fund"], summary["uncovered_deficit"]
    ax.plot(times, [r["insurance_fund"] for r in series], color="tab:green",
            label=f"insurance fund balance (in {fund['in_usd']:,.0f}, paid out "
                  f"{summary['bad_debt_covered_by_insurance_usd']:,.0f})")
    outstanding = [r["uncovered_deficit"] for r in series]
    ax.fill_between(times, outstanding, color="tab:red", alpha=0.35, step=None,
                    label=f"uncovered deficit outstanding (recorded {deficit['recorded_usd']:,.0f}: "
                          f"ADL {summary['adl']['haircut_usd']:,.0f}, written off {summary['write_offs']['usd']:,.0f})")
    ax.plot(times, outstanding, color="tab:red", linewidth=1)
    _usd_axis(ax, "insurance fund,\ndeficit (USD)")
    ax.legend(loc="upper right", fontsize=8)

    # 4. the liquidity vault's value; 5. the LPs' PnL
    ax = axes[3]
    lv = summary["liquidity_vault"]
    ax.plot(times, [r["lv_value"] for r in series], color="tab:blue",
            label=f"liquidity vault value ({lv['value_start_usd']:,.0f} -> {lv['value_end_usd']:,.0f})")
    _usd_axis(ax, "liquidity vault\nvalue (USD)")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[4]
    pnl = [r["lp_pnl"] for r in series]
    ax.plot(times, pnl, color="tab:cyan", label=f"LP PnL (value less deposits; {lv['lp_pnl_usd']:+,.0f} at the end)")
    ax.fill_between(times, pnl, 0, color="tab:cyan", alpha=0.2)
    ax.axhline(0, color="grey", linewidth=0.6)
    _usd_axis(ax, "LP PnL (USD)")
    ax.legend(loc="upper left", fontsize=8)

    # 6. open interest
    ax = axes[5]
    for m in markets:
        prices = [_at(r["prices"], m) for r in series]
        ax.plot(times, [_at(r["long_oi"], m) * p for r, p in zip(series, prices)], color=colours[m],
                label=f"{name[m]} long")
        ax.plot(times, [_at(r["short_oi"], m) * p for r, p in zip(series, prices)], color=colours[m],
                linestyle="--", label=f"{name[m]} short")
    _usd_axis(ax, "open interest\n(USD at the index)")
    ax.legend(loc="upper right", fontsize=8, ncol=2)

    # 7. funding
    ax = axes[6]
    for m in markets:
        ax.plot(times, [_at(r["funding"], m, 0.0) for r in series], color=colours[m], label=name[m])
    ax.axhline(0, color="grey", linewidth=0.6)
    _usd_axis(ax, "funding owed by traders\n(USD per step; < 0: received)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("time (UTC)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %H:%M", tz=timezone.utc))

    bankruptcies = sorted(e["time"] for e in events if e["event"] == "BadDebt")
    for ax in axes:
        ax.grid(alpha=0.3)
        if bankruptcies:
            ax.axvline(_utc(bankruptcies[0]), color="black", linestyle=":", linewidth=0.9)
    if bankruptcies:
        axes[0].annotate(f"first bankruptcy\n{_utc(bankruptcies[0]):%d %b %H:%M}", (_utc(bankruptcies[0]), 1.0),
                         xycoords=("data", "axes fraction"), xytext=(4, -4), textcoords="offset points",
                         va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _step_index(step_times: list[int]):
    """The step an event at time t belongs to: the first whose end is at or after t."""
    import bisect

    def of(t: int) -> int:
        return min(bisect.bisect_left(step_times, t), len(step_times) - 1)

    return of
