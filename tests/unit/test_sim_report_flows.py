"""The report's insurance fund figures account for its whole balance: what was donated, plus
its fee share and the liquidation penalties it received, minus the bad debt it paid, is what it
holds at the end (a short crash replay on titanoboa)."""

import boa
import pytest

from perpdex.sim.config import SimConfig
from perpdex.sim.runner import Simulation

# 12 March 2020 08:00-14:00 UTC, BTC only: the crash's first leg, traders at up to 40x
CRASH = SimConfig(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1584000000, end=1584021600).replace(
    traders=16, lps=1, entry_span=0.3, leverage_min=10.0, long_share=0.9, stop_loss_share=0.0,
    lp_seed_usd=300_000.0, insurance_seed_usd=1_000.0, max_leverage=40,
)


@pytest.fixture(scope="module")
def report():
    with boa.env.anchor():
        return Simulation(CRASH).run()


def test_the_insurance_funds_flows_add_up_to_its_balance_at_the_end(report):
    fund = report["insurance_fund"]
    assert report["liquidations"] > 0, "the crash liquidates some of the traders"
    assert fund["donated_usd"] == 1_000.0
    assert fund["in_penalties_usd"] > 0, "liquidation penalties reach the fund"
    assert fund["in_fee_share_usd"] > 0, "its share of the trading fees reaches the fund"
    assert fund["in_usd"] == pytest.approx(fund["in_fee_share_usd"] + fund["in_penalties_usd"], abs=1e-6)
    assert fund["out_usd"] == pytest.approx(report["bad_debt_covered_by_insurance_usd"], abs=1e-6)
    assert fund["end_usd"] == pytest.approx(fund["donated_usd"] + fund["in_usd"] - fund["out_usd"], abs=1e-5)


def test_the_report_says_how_close_the_liquidations_came_to_bankruptcy(report):
    margin = report["margin"]
    # the feed publishes on every 0.5 % move along the candles, and at gaps between candles
    assert set(margin["max_round_move_pct"]) == {0}
    assert margin["max_round_move_pct"][0] >= 0.5
    assert (margin["min_equity_after_pct_of_notional"] < 0) == (report["bankruptcies"] > 0)
    assert len(report["bankrupt_accounts"]) == report["bankruptcies"]


# 12 March 2020 06:00-11:00 UTC, BTC only, a 2 % feed: a crowd long at up to 22x and two whales,
# no shorts to deleverage, so the uncovered deficit is written off within the hour it arose
CROWDED = SimConfig(prices=((0, "btc-usdt_2020-03_1h.csv"),), start=1583992800, end=1584010800,
                    deviation=0.02).replace(
    traders=60, whales=2, whale_usd=35_000.0, long_share=0.9, entry_span=0.4, lps=1, lp_median_usd=100_000.0,
    lp_seed_usd=300_000.0, max_leverage=25, stop_loss_share=0.0, take_profit_share=0.0, exit_share=0.0,
)


def test_the_uncovered_deficit_peak_counts_a_deficit_cleared_before_the_steps_end():
    with boa.env.anchor():
        report = Simulation(CROWDED).run()
    deficit = report["uncovered_deficit"]
    assert deficit["recorded_usd"] > 0, "bankruptcies the insurance fund could not pay"
    assert deficit["end_usd"] == 0, "written off before the replay ends"
    assert max(s["uncovered_deficit"] for s in report["series"]) == 0, "cleared before every step's end"
    assert deficit["peak_at_step_end_usd"] == 0
    # one market: right after a bankruptcy's record at least that account's uncovered part is
    # outstanding, and never more than every record together
    largest = max(b["uncovered_usd"] for b in report["bankrupt_accounts"])
    assert largest > 0
    assert largest - 1e-6 <= deficit["peak_usd"] <= deficit["recorded_usd"] + 1e-6
