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
