"""`make demo` (perpdex.sim.demo): the preset replayed on a short window tells what happened with
the report's figures, names the report and the chart it wrote, and never writes over an earlier
run."""

import json

import boa
import pytest

from perpdex.sim.demo import PRESET, demo_config, narrative, run_demo

# the preset's population and oracle on 12 March 2020 08:00-12:00 UTC, BTC only: the first leg
SHORT = demo_config(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1584000000, end=1584014400,
                    traders=16, whales=2, lps=1, lp_seed_usd=300_000.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    earlier = runs / "demo"
    earlier.mkdir()
    (earlier / "report.json").write_text("an earlier run")
    with boa.env.anchor():
        run_dir, summary, timing = run_demo(SHORT, runs, "demo")
    return runs, run_dir, summary, timing


def test_the_preset_replays_both_legs_of_the_crash_with_a_crowd():
    assert PRESET.start < 1584007200 < 1584082800 < PRESET.end, "12 March 10:00 and 13 March 01:00 UTC"
    assert {m for m, _ in PRESET.prices} == {0, 1}
    assert 200 <= PRESET.population.traders <= 500
    assert PRESET.population.stop_loss_share > 0 and PRESET.population.take_profit_share > 0


def test_the_crash_liquidates_and_every_invariant_holds(demo):
    _, run_dir, summary, _ = demo
    assert summary["liquidations"] > 0
    assert summary["invariants"]["broken"] is None
    assert sum(summary["invariants"]["checked"].values()) > 0
    assert json.loads((run_dir / "report.json").read_text()) == summary
    assert (run_dir / "report.png").stat().st_size > 10_000, "the chart"


def test_the_story_gives_the_reports_figures_and_where_the_report_is(demo):
    _, run_dir, summary, timing = demo
    story = narrative(summary, run_dir, {0: "BTC-USD"}, timing)
    assert f"liquidated {summary['liquidations']:,} times" in story
    assert f"{summary['bankruptcies']:,} accounts went bankrupt" in story
    assert f"ADL took {summary['adl']['haircut_usd']:,.0f} USD from {summary['adl']['targets']:,} profitable" in story
    assert f"{summary['write_offs']['count']:,} write-offs ({summary['write_offs']['usd']:,.0f} USD)" in story
    assert f"LP PnL {summary['liquidity_vault']['lp_pnl_usd']:+,.0f} USD" in story
    assert f"{sum(summary['invariants']['checked'].values()):,} checks" in story and "all held" in story
    assert f"Report: {run_dir / 'report.md'}" in story
    assert f"Chart:  {run_dir / 'report.png'}" in story


def test_a_run_never_writes_over_an_earlier_one(demo):
    runs, run_dir, _, _ = demo
    assert run_dir == runs / "demo-2"
    assert (runs / "demo" / "report.json").read_text() == "an earlier run"
