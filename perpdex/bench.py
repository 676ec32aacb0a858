"""`make bench`: gas per operation on a throwaway anvil node -> bench/gas.json and a table.

Each figure is the gas used by one transaction (receipt.gasUsed), in a warmed-up system: the
markets have traded before, so the numbers are what a trader pays day to day, not the one-off
cost of initialising a market's storage. One oracle feed per market. Time advances a minute
before each operation so every trade also accrues funding (the realistic, costlier path).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from perpdex.fixed_point import WAD

OUT = Path(__file__).resolve().parent.parent / "bench" / "gas.json"
BUDGETS = {
    "deposit": 80_000,
    "withdraw": 100_000,
    "open": 180_000,
    "modify": 140_000,
    "close": 120_000,
    "liquidate": 200_000,
    "liquidate_many_per_account": 150_000,
    "adl_per_target": 150_000,
}
console = Console(width=120)


def measure(network: str = "ethereum:local:foundry") -> dict[str, int]:
    warnings.filterwarnings("ignore")
    from ape import accounts, chain, networks
    from ape.logging import logger

    logger.set_level(logging.WARNING)

    from perpdex.deploy import FEED_DECIMALS, deploy_local

    gas: dict[str, int] = {}
    with networks.parse_network_choice(network):
        owner, lp, trader, other, *_ = accounts.test_accounts
        d = deploy_local(owner)

        def fund(who, usd: int) -> int:
            amount = usd * 10**6
            d.collateral.mint(who, amount, sender=owner)
            d.collateral.approve(d.vault.address, 2**256 - 1, sender=who)
            d.collateral.approve(d.liquidity_vault.address, 2**256 - 1, sender=who)
            return amount

        def tick() -> None:
            chain.pending_timestamp += 60
            for market in d.markets:
                agg = d.aggregators[market.id][0]
                agg.update_answer(int(market.initial_price) * 10**FEED_DECIMALS, sender=owner)

        # warm-up: the LP seeds, another trader makes both markets active
        fund(lp, 10_000_000)
        gas["lp_deposit_first"] = d.liquidity_vault.deposit(5_000_000 * 10**6, lp, sender=lp).gas_used
        d.vault.deposit(0, fund(other, 1_000_000), sender=other)
        for market in d.markets:
            d.exchange.trade(0, market.id, WAD, 2**256 - 1, sender=other)
        tick()

        fund(trader, 1_000_000)
        gas["deposit"] = d.vault.deposit(0, 100_000 * 10**6, sender=trader).gas_used
        gas["deposit_again"] = d.vault.deposit(0, 100_000 * 10**6, sender=trader).gas_used
        tick()
        gas["withdraw"] = d.vault.withdraw(0, 1_000 * 10**6, sender=trader).gas_used
        tick()
        gas["open"] = d.exchange.trade(0, 0, WAD, 2**256 - 1, sender=trader).gas_used
        tick()
        gas["modify"] = d.exchange.trade(0, 0, WAD // 2, 2**256 - 1, sender=trader).gas_used
        tick()
        gas["close"] = d.exchange.trade(0, 0, -(WAD + WAD // 2), 0, sender=trader).gas_used
        tick()
        # cross margin: a second position makes every trade value both markets
        d.exchange.trade(0, 0, WAD, 2**256 - 1, sender=trader)
        tick()
        gas["open_second_market"] = d.exchange.trade(0, 1, 10 * WAD, 2**256 - 1, sender=trader).gas_used
        tick()
        gas["withdraw_with_positions"] = d.vault.withdraw(0, 1_000 * 10**6, sender=trader).gas_used
        tick()
        gas["flip"] = d.exchange.trade(0, 1, -20 * WAD, 0, sender=trader).gas_used
        tick()
        gas["close_with_other_position"] = d.exchange.trade(0, 0, -WAD, 0, sender=trader).gas_used
        tick()
        gas["lp_deposit"] = d.liquidity_vault.deposit(1_000_000 * 10**6, lp, sender=lp).gas_used
        tick()
        shares = d.liquidity_vault.balanceOf(lp) // 10
        gas["lp_redeem"] = d.liquidity_vault.redeem(shares, lp, lp, sender=lp).gas_used
        gas.update(measure_liquidation(d, owner, fund, tick))
    return gas


def measure_liquidation(d, owner, fund, tick) -> dict[str, int]:
    """Liquidations (one account, batches of 1 and 5) and ADL (1 and 3 targets) on BTC."""
    from ape import accounts

    from perpdex.deploy import FEED_DECIMALS

    gas: dict[str, int] = {}
    keeper = accounts.test_accounts[4]
    btc = d.aggregators[0][0]
    wallets = [accounts.test_accounts.generate_test_account() for _ in range(9)]
    for w in wallets:
        owner.transfer(w, 10**18)

    def open_at_risk(who) -> None:  # ~19x long
        d.vault.deposit(0, fund(who, 2_200), sender=who)
        d.exchange.trade(0, 0, WAD, 2**256 - 1, sender=who)

    def set_btc(price: int) -> None:
        btc.update_answer(price * 10**FEED_DECIMALS, sender=owner)

    for w in wallets[:7]:
        open_at_risk(w)
    set_btc(38_500)  # 2 % maintenance in config/markets.json: these ~19x longs are now unhealthy
    gas["liquidate"] = d.liquidator.liquidate(wallets[0], 0, sender=keeper).gas_used
    one = d.liquidator.liquidate_many([(wallets[1], 0)], sender=keeper).gas_used
    five = d.liquidator.liquidate_many([(w, 0) for w in wallets[2:7]], sender=keeper).gas_used
    gas["liquidate_many_1"] = one
    gas["liquidate_many_5"] = five
    gas["liquidate_many_per_account"] = (five - one) // 4
    set_btc(40_000)
    tick()

    # ADL: profitable shorts, an empty insurance fund, a long gapping through bankruptcy
    shorts = wallets[7:9] + [accounts.test_accounts[5]]
    for w in shorts:
        d.vault.deposit(0, fund(w, 20_000), sender=w)
        d.exchange.trade(0, 0, -WAD, 0, sender=w)
    surplus = d.insurance_fund.surplus()
    if surplus:
        d.insurance_fund.withdraw_surplus(owner, surplus, sender=owner)
    victim = accounts.test_accounts[6]
    d.vault.deposit(0, fund(victim, 2_200), sender=victim)
    d.exchange.trade(0, 0, WAD, 2**256 - 1, sender=victim)
    set_btc(36_000)
    d.liquidator.liquidate(victim, 0, sender=keeper)
    def ranked() -> list:  # the contract checks this order; scores move as positions shrink
        return sorted(shorts, key=lambda w: d.liquidator.adl_score(w, 0, 0), reverse=True)

    tenth = WAD // 10
    one = d.liquidator.auto_deleverage(0, [(ranked()[0], 0, tenth)], victim, 0, sender=owner).gas_used
    three = d.liquidator.auto_deleverage(0, [(w, 0, tenth) for w in ranked()], victim, 0, sender=owner).gas_used
    gas["adl_1_target"] = one
    gas["adl_3_targets"] = three
    gas["adl_per_target"] = (three - one) // 2
    return gas


def report(gas: dict[str, int]) -> None:
    table = Table(title="perpdex gas per transaction (anvil)")
    table.add_column("operation")
    table.add_column("gas", justify="right")
    table.add_column("budget", justify="right")
    table.add_column("", justify="left")
    for op, used in gas.items():
        budget = BUDGETS.get(op)
        verdict = "" if budget is None else ("[green]within" if used <= budget else "[red]OVER")
        table.add_row(op, f"{used:,}", f"{budget:,}" if budget else "", verdict)
    console.print(table)


def main() -> None:
    gas = measure()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(gas, indent=2) + "\n")
    report(gas)
    console.print(f"written {OUT}")
    over = [op for op, budget in BUDGETS.items() if gas.get(op, 0) > budget]
    if over:
        raise SystemExit(f"over budget: {', '.join(over)}")


if __name__ == "__main__":
    main()
