"""A short crash replay on titanoboa (perpdex/sim): it runs through the order book with the
keeper acting, two runs of one seed give identical reports, and a planted invariant break is
caught at the step it happens."""

import json

import boa
import pytest

from perpdex.sim.config import SimConfig
from perpdex.sim.invariants import InvariantBroken
from perpdex.sim.report import new_run_dir, write_report
from perpdex.sim.runner import Simulation

# 12 March 2020 06:00-10:00 UTC, BTC only: the crash's first hours
SHORT = SimConfig(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1583992800, end=1584007200).replace(
    traders=12, lps=1, whales=1, whale_usd=50_000.0, entry_span=0.5, lp_seed_usd=300_000.0,
)


def replay(config=SHORT, on_step=None) -> dict:
    with boa.env.anchor():
        return Simulation(config, on_step=on_step).run()


@pytest.fixture(scope="module")
def report():
    return replay()


def test_traders_trade_through_the_order_book_and_every_invariant_holds(report, tmp_path):
    assert report["window"]["steps"] == 4
    assert report["orders"]["executed"] >= 10, "opening market orders filled by the keeper"
    assert report["rounds"]["deviation"] > 0
    checked = report["invariants"]["checked"]
    for number in "12345":
        assert any(name.startswith(number) for name in checked), f"invariant {number} checked"
    run_dir = new_run_dir("replay", tmp_path)
    write_report(report, run_dir, symbols={0: "BTC-USD"})
    assert {p.name for p in run_dir.iterdir()} == {"report.json", "report.md", "report.png"}
    assert new_run_dir("replay", tmp_path).name == "replay-2", "a run never overwrites another"
    with pytest.raises(FileExistsError):
        write_report(report, run_dir)


def test_two_runs_of_one_seed_give_identical_reports(report):
    assert json.dumps(replay(), sort_keys=True, default=str) == json.dumps(report, sort_keys=True, default=str)


def test_a_planted_ledger_break_is_caught_at_its_step():
    def gift(sim, step):
        if step == 2:  # tokens sent to the vault behind the ledger's back
            with boa.env.prank(sim.owner):
                sim.d.collateral.mint(sim.d.vault.address, 1)

    with pytest.raises(InvariantBroken) as caught:
        replay(on_step=gift)
    assert caught.value.step == 2
    assert caught.value.name == "1 ledger balances exactly"
