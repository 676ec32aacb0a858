"""A sweep's summary table (perpdex.sim.sweep): each row carries the outcomes of its run's
report, including how much bad debt the insurance fund covered and what was left in it."""

import json

from perpdex.sim.sweep import OUTCOMES, outcomes, table_markdown


def a_report(bad_debt: float, covered: float, insurance_end: float) -> dict:
    """The parts of a report.json (perpdex.sim.report.summarize) a row is made of."""
    return {
        "liquidations": 41, "bankruptcies": 3, "bad_debt_usd": bad_debt,
        "bad_debt_covered_by_insurance_usd": covered,
        "insurance_fund": {"start_usd": 100_000.0, "end_usd": insurance_end, "in_usd": 812.5, "out_usd": covered},
        "uncovered_deficit": {"peak_usd": bad_debt - covered, "end_usd": 0.0, "recorded_usd": bad_debt - covered},
        "adl": {"targets": 7, "haircut_usd": 120.0},
        "write_offs": {"count": 2, "usd": 15.0},
        "liquidity_vault": {"value_start_usd": 3e6, "value_end_usd": 2.9e6, "lp_pnl_usd": -1_234.5},
    }


def test_a_row_says_how_much_bad_debt_the_insurance_fund_covered_and_what_is_left_in_it():
    report = json.loads(json.dumps(a_report(bad_debt=5_000.0, covered=3_500.0, insurance_end=97_312.5)))
    row = outcomes(report)
    assert set(row) == set(OUTCOMES), "every column of the table has its value"
    assert row["bad_debt_usd"] == 5_000.0
    assert row["bad_debt_covered_usd"] == 3_500.0
    assert row["insurance_end_usd"] == 97_312.5
    assert row["deficit_peak_usd"] == 1_500.0
    assert (row["adl_targets"], row["write_offs"], row["invariants"]) == (7, 2, "held")


def test_the_table_shows_each_runs_parameters_and_outcomes_in_the_columns_order():
    rows = [
        {"max_leverage": lev, **outcomes(a_report(bad_debt=b, covered=c, insurance_end=e))}
        for lev, b, c, e in ((10, 0.0, 0.0, 100_812.5), (50, 250_000.0, 100_000.0, 0.0))
    ]
    lines = table_markdown(rows, ["max_leverage"]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["max_leverage", *OUTCOMES]
    cells = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert [c["max_leverage"] for c in cells] == ["10", "50"]
    assert [c["bad_debt_covered_usd"] for c in cells] == ["0.00", "100,000.00"]
    assert [c["insurance_end_usd"] for c in cells] == ["100,812.50", "0.00"]
    assert [c["deficit_peak_usd"] for c in cells] == ["0.00", "150,000.00"]


def test_a_point_the_contracts_refuse_is_a_row_saying_why_and_the_sweep_goes_on(tmp_path):
    from perpdex.sim.config import SimConfig
    from perpdex.sim.sweep import run_sweep

    # maintenance margin + liquidation penalty at or above the initial margin: listing the market reverts
    base = SimConfig(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1583992800, end=1583996400)
    base = base.replace(traders=2, lps=1)
    rows = run_sweep(base, {"maintenance_margin_ratio": [0.04]}, tmp_path, "refused", workers=1)
    assert len(rows) == 1
    assert rows[0]["maintenance_margin_ratio"] == 0.04
    assert rows[0]["invariants"].startswith("not run: ")
    assert "maintenance + penalty must be below initial margin" in rows[0]["invariants"]
    table = (tmp_path / "refused" / "sweep.md").read_text()
    assert "maintenance + penalty must be below initial margin" in table


def test_a_sweep_runs_on_a_dask_cluster_given_its_client(tmp_path):
    """The distributed path: every point runs on the cluster's worker and its row comes back, a
    refused point as a row saying why. A one-worker local cluster stands in for a scheduler
    address; its worker runs in this process (processes=False), where the contracts are already
    compiled: a worker process would spend 15-30 s compiling them again."""
    from distributed import Client, LocalCluster

    from perpdex.sim.config import SimConfig
    from perpdex.sim.sweep import run_sweep

    base = SimConfig(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1583992800, end=1583996400)
    base = base.replace(traders=2, lps=1)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows = run_sweep(base, {"maintenance_margin_ratio": [0.04, 0.02]}, tmp_path, "dask", client=client)
        workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 1
    by_margin = {row["maintenance_margin_ratio"]: row for row in rows}
    assert by_margin[0.04]["invariants"].startswith("not run: ")
    assert by_margin[0.02]["invariants"] == "held"
    reports = sorted((tmp_path / "dask").glob("*/report.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["invariants"]["broken"] is None
    assert "| 0.02 |" in (tmp_path / "dask" / "sweep.md").read_text()
