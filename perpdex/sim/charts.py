"""The report's chart (report.png): one panel per question a risk person asks.

Index prices with liquidation, ADL and bad-debt markers (legend on the panel); open interest;
the insurance fund; the liquidity vault's value and the LPs' PnL; the uncovered deficit
outstanding; the funding traders owed per step. Times in UTC, amounts in USD.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

MARKERS = {"Liquidation": ("v", "tab:red", "liquidation"), "AutoDeleveraged": ("D", "tab:purple", "ADL"),
           "BadDebt": ("X", "black", "bad debt")}


def draw(summary: dict, path: Path, symbols: dict[int, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = summary["series"]
    times = [datetime.fromtimestamp(r["time"], timezone.utc) for r in series]
    markets = sorted({int(m) for r in series for m in r["prices"]})
    name = {m: symbols.get(m, f"market {m}") for m in markets}
    fig, axes = plt.subplots(6, 1, figsize=(12, 18), sharex=True)
    price_ax = axes[0]
    for m in markets:
        prices = [r["prices"][m] if m in r["prices"] else r["prices"][str(m)] for r in series]
        first = prices[0] or 1
        price_ax.plot(times, [100 * p / first for p in prices], label=f"{name[m]} index ({prices[0]:,.2f} USD = 100)")
    for event, (marker, color, label) in MARKERS.items():
        points = [e for e in summary["events"] if e["event"] == event]
        if not points:
            continue
        xs, ys = [], []
        for e in points:
            x = datetime.fromtimestamp(e["time"], timezone.utc)
            step = min(range(len(series)), key=lambda i: abs(series[i]["time"] - e["time"]))
            prices = series[step]["prices"]
            p = prices.get(e["market"], prices.get(str(e["market"])))
            first = series[0]["prices"].get(e["market"], series[0]["prices"].get(str(e["market"])))
            xs.append(x)
            ys.append(100 * p / first)
        price_ax.scatter(xs, ys, marker=marker, color=color, s=30, label=f"{label} ({len(points)})", zorder=3)
    price_ax.set_ylabel("index (first step = 100)")
    price_ax.set_title(f"Crash replay {summary['window']['start_utc']} - {summary['window']['end_utc']} UTC, "
                       f"{summary['population']['traders']:,} traders, seed {summary['config']['seed']}")
    price_ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    for m in markets:
        long_oi = [r["long_oi"].get(m, r["long_oi"].get(str(m))) * r["prices"].get(m, r["prices"].get(str(m))) for r in series]
        short_oi = [r["short_oi"].get(m, r["short_oi"].get(str(m))) * r["prices"].get(m, r["prices"].get(str(m))) for r in series]
        ax.plot(times, long_oi, label=f"{name[m]} long")
        ax.plot(times, short_oi, linestyle="--", label=f"{name[m]} short")
    ax.set_ylabel("open interest (USD)")
    ax.legend(fontsize=8)
    panels = [
        (axes[2], [("insurance fund", [r["insurance_fund"] for r in series])], "insurance fund (USD)"),
        (axes[3], [("liquidity vault value", [r["lv_value"] for r in series]),
                   ("LP PnL", [r["lp_pnl"] for r in series])], "liquidity vault (USD)"),
        (axes[4], [("uncovered deficit outstanding", [r["uncovered_deficit"] for r in series])], "deficit (USD)"),
    ]
    for ax, lines, ylabel in panels:
        for label, values in lines:
            ax.plot(times, values, label=label)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    ax = axes[5]
    for m in markets:
        ax.plot(times, [r["funding"].get(m, r["funding"].get(str(m), 0.0)) for r in series], label=name[m])
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylabel("funding owed by traders\n(USD per step; < 0 received)")
    ax.set_xlabel("time (UTC)")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
