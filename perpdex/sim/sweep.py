"""Parameter sweeps: a grid of runs, one summary table.

`run_sweep(base, {"max_leverage": [10, 25, 50], "insurance_seed_usd": [0, 1e6]})` runs every
combination (any name `SimConfig.replace` takes: market or global parameters, population,
oracle deviation, keeper latency...), each in its own process (a titanoboa chain per process),
on local processes by default or on an existing Dask distributed cluster given its scheduler
address. Each run writes its own run directory; the table (sweep.json, sweep.md) holds one row
per run with its parameters and outcomes.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from perpdex.sim.config import SimConfig

OUTCOMES = ("liquidations", "bankruptcies", "bad_debt_usd", "bad_debt_covered_usd", "adl_targets", "write_offs",
            "deficit_peak_usd", "deficit_end_usd", "insurance_in_usd", "insurance_out_usd", "insurance_end_usd",
            "lp_pnl_usd", "invariants")


def grid_points(grid: dict[str, list]) -> list[dict]:
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def run_point(base: SimConfig, point: dict, run_dir: str) -> dict:
    """One grid point, in whatever process runs it: its row of the table."""
    import warnings

    warnings.filterwarnings("ignore")
    from perpdex.sim.__main__ import run_one
    from perpdex.sim.invariants import InvariantBroken

    row = dict(point)
    try:
        run_one(base.replace(**point), Path(run_dir))
    except InvariantBroken as err:
        return {**row, "run": run_dir, "invariants": f"broken at step {err.step}: {err.name}"}
    except Exception as err:  # noqa: BLE001 - a point that cannot run (parameters the contracts refuse...)
        # is a row of its own: the other points' rows are kept (and the error, unlike titanoboa's
        # exceptions, can be sent back from a worker process)
        lines = [line.strip() for line in str(err).splitlines()]
        reason = [line for line in lines if line and not line.startswith(("=", "[", "<"))]  # not a call trace
        why = f"not run: {type(err).__name__}: {reason[-1] if reason else ''}"
        return {**row, "run": run_dir, "invariants": why[:300]}
    return {**row, "run": run_dir, **outcomes(json.loads((Path(run_dir) / "report.json").read_text()))}


def outcomes(s: dict) -> dict:
    """A run's row of the table from its report (report.json), invariants held."""
    return {
        "liquidations": s["liquidations"], "bankruptcies": s["bankruptcies"], "bad_debt_usd": s["bad_debt_usd"],
        "bad_debt_covered_usd": s["bad_debt_covered_by_insurance_usd"], "adl_targets": s["adl"]["targets"],
        "write_offs": s["write_offs"]["count"], "deficit_peak_usd": s["uncovered_deficit"]["peak_usd"],
        "deficit_end_usd": s["uncovered_deficit"]["end_usd"], "insurance_in_usd": s["insurance_fund"]["in_usd"],
        "insurance_out_usd": s["insurance_fund"]["out_usd"], "insurance_end_usd": s["insurance_fund"]["end_usd"],
        "lp_pnl_usd": s["liquidity_vault"]["lp_pnl_usd"], "invariants": "held",
    }


def run_sweep(base: SimConfig, grid: dict[str, list], runs: Path, name: str, scheduler: str | None = None,
              workers: int = 2, client=None) -> list[dict]:
    """Every grid point run (Dask when `scheduler` or `client` is given, else local processes);
    the table, also written to runs/<name>/sweep.json and sweep.md."""
    from perpdex.sim.report import new_run_dir

    root = new_run_dir(name, runs)
    points = grid_points(grid)
    dirs = []
    for i, point in enumerate(points):
        label = "-".join(f"{k}={v}" for k, v in point.items()) or f"run{i}"
        dirs.append(str(new_run_dir(label, root)))
    if scheduler is not None or client is not None:
        from distributed import Client

        own = client is None
        client = client or Client(scheduler)
        try:
            futures = client.map(run_point, [base] * len(points), points, dirs, pure=False)
            rows = client.gather(futures)
        finally:
            if own:
                client.close()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(run_point, [base] * len(points), points, dirs))
    (root / "sweep.json").write_text(json.dumps(rows, indent=1))
    (root / "sweep.md").write_text(table_markdown(rows, sorted(grid)))
    return rows


def table_markdown(rows: list[dict], names: list[str]) -> str:
    columns = [*names, *OUTCOMES]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row.get(c):,.2f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
