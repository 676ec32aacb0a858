"""`make demo`: perpdex end to end on ape's embedded chain.

Deploys everything, lets an LP seed the liquidity vault, opens a BTC long and a BTC short and
an ETH position, lets a day pass with the index moving, and prints positions, PnL and the
funding each side paid or received.
"""

from __future__ import annotations

import logging
import warnings

from rich.console import Console
from rich.table import Table

from perpdex.fixed_point import WAD

console = Console(width=120)
DAY = 24 * 3600


def usd(wad: int) -> str:
    return f"{wad / WAD:,.2f}"


def run() -> None:
    warnings.filterwarnings("ignore")
    from ape import accounts, chain, networks
    from ape.logging import logger

    logger.set_level(logging.WARNING)

    from perpdex.deploy import FEED_DECIMALS, deploy_local

    with networks.parse_network_choice("ethereum:local:test"):
        owner, lp, long_trader, short_trader = accounts.test_accounts[:4]
        console.rule("[bold]perpdex demo: embedded chain")
        d = deploy_local(owner)
        console.print(f"deployed: exchange {d.exchange.address}, vault {d.vault.address}")

        def fund(who, amount_usd: int):
            amount = amount_usd * 10**6
            d.collateral.mint(who, amount, sender=owner)
            d.collateral.approve(d.vault.address, 2**256 - 1, sender=who)
            d.collateral.approve(d.liquidity_vault.address, 2**256 - 1, sender=who)
            return amount

        d.liquidity_vault.deposit(fund(lp, 2_000_000), lp, sender=lp)
        console.print(f"LP seeded the liquidity vault: {d.liquidity_vault.totalAssets() / 1e6:,.0f} USDC")

        d.vault.deposit(0, fund(long_trader, 50_000), sender=long_trader)
        d.vault.deposit(0, fund(short_trader, 50_000), sender=short_trader)
        trades = [
            (long_trader, 0, 5 * WAD, "BTC long 5 (4x)"),
            (short_trader, 0, -2 * WAD, "BTC short 2"),
            (short_trader, 1, -20 * WAD, "ETH short 20"),
        ]
        for who, market, size, label in trades:
            bound = 2**256 - 1 if size > 0 else 0
            receipt = d.exchange.trade(0, market, size, bound, sender=who)
            event = receipt.decode_logs(d.exchange.Trade)[0]
            console.print(f"{label:<16} filled at {usd(event.fill_price)}  fee {usd(event.fee)}  gas {receipt.gas_used:,}")

        console.print(
            f"BTC skew {d.exchange.skew(0) / WAD:+.2f}, mark {usd(d.exchange.mark_price(0))}, "
            f"funding rate {d.exchange.funding_rate(0) / WAD * 100:+.4f} % per 8 h"
        )

        # a day passes; the oracle publishes new prices
        lv_before = d.vault.liquidity_cash()
        chain.pending_timestamp += DAY
        for market, price in ((0, 41_200), (1, 1_950)):
            d.aggregators[market][0].update_answer(price * 10**FEED_DECIMALS, sender=owner)
        d.exchange.touch_market(0, sender=owner)
        d.exchange.touch_market(1, sender=owner)
        lv_funding = d.vault.liquidity_cash() - lv_before

        table = Table(title="positions after one day")
        for col in ("trader", "market", "size", "entry", "index", "unrealized PnL", "funding owed", "equity"):
            table.add_column(col, justify="right")
        for name, who in (("long", long_trader), ("short", short_trader)):
            for market, symbol in ((0, "BTC-USD"), (1, "ETH-USD")):
                size, entry, pnl, funding = d.exchange.position(who, 0, market)
                if size == 0:
                    continue
                table.add_row(
                    name, symbol, f"{size / WAD:+.2f}", usd(entry), usd(d.exchange.index_price(market)),
                    usd(pnl), usd(funding), usd(d.exchange.equity(who, 0)),
                )
        console.print(table)

        # the long closes: its funding settles into cash
        cash_before = d.vault.cash(long_trader, 0)
        receipt = d.exchange.trade(0, 0, -5 * WAD, 0, sender=long_trader)
        event = receipt.decode_logs(d.exchange.Trade)[0]
        console.print(
            f"long closed at {usd(event.fill_price)}: realized PnL {usd(event.realized_pnl)}, "
            f"funding paid {usd(event.funding_paid)}, fee {usd(event.fee)}, "
            f"cash {usd(cash_before)} -> {usd(d.vault.cash(long_trader, 0))}"
        )
        console.print(f"liquidity vault received {usd(lv_funding)} USD of funding on its -skew position")
        console.print(
            f"insurance fund {usd(d.vault.insurance_cash())}, LP share value "
            f"{d.liquidity_vault.totalAssets() / 1e6:,.2f} USDC"
        )
        console.rule("[green]done")


if __name__ == "__main__":
    run()
