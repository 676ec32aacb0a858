"""`make bench`: gas per operation on a throwaway anvil node -> bench/gas.json and a table.

Each figure is the gas used by one transaction (receipt.gasUsed), in a warmed-up system: the
markets have traded before, so the numbers are what a trader pays day to day, not the one-off
cost of initialising a market's storage. One oracle feed per market. Time advances a minute
before each operation so every trade also accrues funding (the realistic, costlier path).

Trades are two-step orders: `commit_order` by the trader, a new oracle round, then
`execute_order` by a keeper naming that round (the first published after the order's delay).
`open`, `modify`, `close` and the other trade keys are the gas of the *execution*.
`commit_order` is a steady trader's commit (its order slot was used before) on a sub-account
without positions; `commit_order_with_position` the same with a position open (escrowing the
fee from free collateral then values the account at the oracle); `commit_order_first` a
trader's first-ever order (fresh storage). `execute_open` and `execute_close` are the issue's
names for the `open` and `close` executions; `open_commit_plus_execute` is the whole open.

Deterministic: the node starts at a fixed time (`anvil --timestamp`) and mines every block
exactly one second after the previous one (`anvil_setBlockTimestampInterval`), jumps in time
are explicit (`evm_setNextBlockTimestamp`), the keeper's ledger account exists before
anything is measured, and a limit order rests throughout (so the vault's order escrow is never
re-created from zero, as on a live exchange), so the same code gives the same figures on every
run. (Before, blocks
took the wall clock's time: whether two transactions landed in the same second decided
whether a market's funding was accrued and written again, which moved the liquidation and
ADL figures by about 10,000 gas between runs; and the keeper's first reward created its
ledger account inside the first measured liquidation.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.table import Table

from perpdex.fixed_point import WAD
from perpdex.orders import KIND_LIMIT, KIND_MARKET

OUT = Path(__file__).resolve().parent.parent / "bench" / "gas.json"
START_TIME = 1_700_000_000  # the node's genesis time (2023-11-14 22:13:20 UTC)
MAX_PRICE = 2**128 - 1
BUDGETS = {
    "deposit": 80_000,
    "withdraw": 100_000,
    "commit_order": 90_000,
    # +10,000 each for the global open-interest cap's O(1) check (docs/DECISIONS.md, Gas)
    "open": 200_000,
    "execute_open": 200_000,
    "modify": 170_000,
    "close": 140_000,
    "execute_close": 140_000,
    "cancel_expired": 60_000,
    "liquidate": 200_000,
    "liquidate_many_per_account": 150_000,
    "adl_per_target": 150_000,
}
console = Console(width=120)


# =============================================================================================
# THE NODE
# =============================================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def anvil_node(start_time: int = START_TIME) -> Iterator[str]:
    """A throwaway anvil on a free port, its genesis at `start_time`; yields its URL."""
    from web3 import Web3

    anvil = shutil.which("anvil")
    if anvil is None:
        raise SystemExit("anvil is not on PATH: run `make bench` (it puts node_modules/.bin on PATH)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [anvil, "--host", "127.0.0.1", "--port", str(port), "--timestamp", str(start_time), "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        w3 = Web3(Web3.HTTPProvider(url))
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"anvil exited with {process.returncode}")
            try:
                w3.eth.chain_id
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit(f"anvil did not answer on {url} within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


# =============================================================================================
# THE MEASUREMENTS
# =============================================================================================


class Bench:
    """The deployment, the cast, the clock and the two-step trade of the measurements."""

    def __init__(self, d, owner, keeper):
        from ape import chain

        self.d, self.owner, self.keeper, self.chain = d, owner, keeper, chain
        self.gas: dict[str, int] = {}

    # -- time and prices --------------------------------------------------------------------------

    def jump(self, seconds: int) -> None:
        """The next block comes `seconds` after the latest one (then one second per block again)."""
        self.chain.provider.make_request("evm_setNextBlockTimestamp", [self.chain.blocks.head.timestamp + seconds])

    def publish(self, market_id: int, price: int | None = None) -> int:
        """A new round of the market's feed (the same answer unless `price`, USD); its round id."""
        from perpdex.deploy import FEED_DECIMALS

        agg = self.d.aggregators[market_id][0]
        answer = agg.latestAnswer() if price is None else price * 10**FEED_DECIMALS
        agg.update_answer(answer, sender=self.owner)
        return agg.latestRound()

    def tick(self) -> None:
        """A minute passes; every market gets a fresh round."""
        self.jump(60)
        for market in self.d.markets:
            self.publish(market.id)

    # -- orders -----------------------------------------------------------------------------------

    def commit(self, who, market_id: int, size: int, reduce_only: bool = False, sub: int = 0):
        """A market order accepting any price; returns (order id, gas)."""
        acceptable = MAX_PRICE if size > 0 else 0
        receipt = self.d.order_book.commit_order(sub, market_id, size, acceptable, KIND_MARKET, 0, reduce_only, 0,
                                                 sender=who)
        (event,) = receipt.decode_logs(self.d.order_book.OrderCommitted)
        return event.order_id, receipt.gas_used

    def execute(self, order_id: int, round_id: int) -> int:
        receipt = self.d.order_book.execute_order(order_id, [round_id], sender=self.keeper)
        executed = receipt.decode_logs(self.d.order_book.OrderExecuted)
        assert executed, f"order {order_id:#x} was cancelled: {receipt.decode_logs(self.d.order_book.OrderCancelled)}"
        return receipt.gas_used

    def refresh_room(self) -> int:
        """A refresh of the global open-interest room (`refresh_open_interest_room`): its gas."""
        return self.d.order_book.refresh_open_interest_room(sender=self.keeper).gas_used

    def trade(self, who, market_id: int, size: int, reduce_only: bool = False) -> tuple[int, int]:
        """Commit, publish the next round, refresh the open-interest room (so that the measured
        execution only consumes it, the O(1) path) and execute there as a keeper:
        (commit gas, execute gas). `measure_refresh_growth` measures the refresh itself."""
        order_id, commit_gas = self.commit(who, market_id, size, reduce_only)
        round_id = self.publish(market_id)
        self.refresh_room()
        return commit_gas, self.execute(order_id, round_id)

    def trades(self, orders: list[tuple], market_id: int) -> None:
        """Several traders' orders committed one after the other and executed at one round."""
        ids = [self.commit(who, market_id, size)[0] for who, size in orders]
        round_id = self.publish(market_id)
        for order_id in ids:
            self.execute(order_id, round_id)


def measure() -> dict[str, int]:
    warnings.filterwarnings("ignore")
    from ape import accounts, chain, networks
    from ape.logging import logger

    logger.set_level(logging.WARNING)

    from perpdex.deploy import deploy_local

    with anvil_node() as url:
        os.environ["APE_FOUNDRY_HOST"] = url
        with networks.parse_network_choice("ethereum:local:foundry"):
            chain.provider.make_request("anvil_setBlockTimestampInterval", [1])
            owner, lp, trader, other, keeper, *_ = accounts.test_accounts
            d = deploy_local(owner)
            b = Bench(d, owner, keeper)
            measure_trading(b, lp, trader, other)
            measure_liquidation(b)
            measure_refresh_growth(b, owner, keeper, accounts.test_accounts[8], accounts.test_accounts[9])
            return b.gas


def measure_refresh_growth(b: Bench, owner, keeper, two_market_trader, four_market_trader) -> None:
    """The open-interest room's refresh and an LP deposit's execution (both O(listed markets))
    with every listed market open: at 2 markets (config/markets.json) and at 4 (the same two
    again under new ids, a deployment of their own), and the growth per listed market."""
    import tempfile

    from perpdex.config import DEFAULT_MARKETS_FILE
    from perpdex.deploy import deploy_local

    config = json.loads(Path(DEFAULT_MARKETS_FILE).read_text())
    config["markets"] += [dict(m, id=m["id"] + 2, symbol=f"X{m['symbol']}") for m in config["markets"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "markets.json"
        path.write_text(json.dumps(config))
        wide = Bench(deploy_local(owner, path), owner, keeper)
    refresh = {}
    for bench, trader in ((b, two_market_trader), (wide, four_market_trader)):
        d = bench.d
        if d.liquidity_vault.totalSupply() == 0:
            d.liquidity_vault.deposit(fund(bench, owner, 5_000_000), owner, sender=owner)
        d.vault.deposit(0, fund(bench, trader, 1_000_000), sender=trader)
        for market in d.markets:
            bench.trade(trader, market.id, WAD // 10)
        refresh[len(d.markets)] = bench.refresh_room()
    b.gas["refresh_open_interest_room"] = refresh[2]
    b.gas["refresh_open_interest_room_4_markets"] = refresh[4]
    b.gas["refresh_open_interest_room_per_market"] = (refresh[4] - refresh[2]) // 2
    # an LP execution values the vault at one round of every listed market: the same deposit
    # request on both deployments, every market open, measures its growth per listed market
    lp_execute = {}
    for bench, lp in ((b, two_market_trader), (wide, four_market_trader)):
        bench.tick()
        fund(bench, lp, 100_000)
        lp_execute[len(bench.d.markets)] = lp_request_execute(bench, lp, assets=100_000 * 10**6)[1]
    b.gas["lp_execute_deposit_2_markets_open"] = lp_execute[2]
    b.gas["lp_execute_deposit_4_markets_open"] = lp_execute[4]
    b.gas["lp_execute_deposit_per_market"] = (lp_execute[4] - lp_execute[2]) // 2


def fund(b: Bench, who, usd: int) -> int:
    amount = usd * 10**6
    b.d.collateral.mint(who, amount, sender=b.owner)
    b.d.collateral.approve(b.d.vault.address, 2**256 - 1, sender=who)
    b.d.collateral.approve(b.d.liquidity_vault.address, 2**256 - 1, sender=who)
    return amount


def measure_trading(b: Bench, lp, trader, other) -> None:
    d, gas = b.d, b.gas
    # warm-up: the LP seeds, another trader makes both markets active; the keeper executes
    # those orders, which creates its ledger account (sub-account 0) before any measurement
    fund(b, lp, 10_000_000)
    fund(b, b.owner, 5_000_000)  # the owner seeds the vault (the only synchronous deposit)
    gas["lp_deposit_first"] = d.liquidity_vault.deposit(5_000_000 * 10**6, lp, sender=b.owner).gas_used
    d.vault.deposit(0, fund(b, other, 1_000_000), sender=other)
    for market in d.markets:
        b.trade(other, market.id, WAD)
    assert d.vault.cash(b.keeper, 0) > 0
    # a limit order rests far below the market all along, as some order always does on a live
    # exchange: the vault's order escrow never returns to zero, so no commit pays for
    # re-creating it (17,100 gas more on an idle exchange, where the escrow was empty)
    d.order_book.commit_order(0, 0, WAD, 1_000 * WAD, KIND_LIMIT, 1_000 * WAD, False, 0, sender=other)
    b.tick()

    fund(b, trader, 1_000_000)
    gas["deposit"] = d.vault.deposit(0, 100_000 * 10**6, sender=trader).gas_used
    gas["deposit_again"] = d.vault.deposit(0, 100_000 * 10**6, sender=trader).gas_used
    b.tick()
    gas["withdraw"] = d.vault.withdraw(0, 1_000 * 10**6, sender=trader).gas_used
    b.tick()
    gas["commit_order_first"], gas["open"] = b.trade(trader, 0, WAD)  # the trader's first order ever
    b.tick()
    gas["commit_order_with_position"], gas["modify"] = b.trade(trader, 0, WAD // 2)
    b.tick()
    _, gas["close"] = b.trade(trader, 0, -(WAD + WAD // 2), reduce_only=True)
    gas["execute_open"], gas["execute_close"] = gas["open"], gas["close"]
    b.tick()
    # a steady trader without a position: its order slot was used before
    gas["commit_order"], _ = b.trade(trader, 0, WAD)
    gas["open_commit_plus_execute"] = gas["commit_order"] + gas["open"]
    b.tick()
    # cross margin: a second position makes every trade value both markets
    _, gas["open_second_market"] = b.trade(trader, 1, 10 * WAD)
    b.tick()
    gas["withdraw_with_positions"] = d.vault.withdraw(0, 1_000 * 10**6, sender=trader).gas_used
    b.tick()
    _, gas["flip"] = b.trade(trader, 1, -20 * WAD)
    b.tick()
    _, gas["close_with_other_position"] = b.trade(trader, 0, -WAD, reduce_only=True)
    b.tick()
    # an execution that finds the room older than a minute recomputes it itself (O(markets))
    order_id, _ = b.commit(trader, 0, WAD // 10)
    round_id = b.publish(0)
    b.jump(61)
    gas["execute_open_stale_room"] = b.execute(order_id, round_id)
    gas["lp_request_deposit"], gas["lp_execute_deposit"] = lp_request_execute(b, lp, assets=1_000_000 * 10**6)
    b.jump(d.liquidity_vault.lp_params().cooldown)  # the deposit's shares are locked for the cooldown
    b.tick()
    shares = d.liquidity_vault.balanceOf(lp) // 10
    gas["lp_request_redeem"], gas["lp_execute_redeem"] = lp_request_execute(b, lp, shares=shares)

    # a market order nobody executed: from its expiry anyone cancels it and takes the fee
    b.tick()
    order_id, _ = b.commit(trader, 0, WAD)
    max_age = d.order_book.order_params().max_order_age
    b.jump(max_age)
    gas["cancel_expired"] = d.order_book.cancel_order(order_id, sender=b.keeper).gas_used
    b.tick()


def lp_request_execute(b: Bench, lp, assets: int | None = None, shares: int | None = None) -> tuple[int, int]:
    """A two-step LP deposit (`assets`) or redemption (`shares`): the request, then its
    execution by an LP executor at every market's first round after the delay: (request gas,
    execution gas)."""
    lv = b.d.liquidity_vault
    if assets:
        receipt = lv.request_deposit(assets, lp, sender=lp)
    else:
        receipt = lv.request_redeem(shares, lp, sender=lp)
    request_id = lv.last_request_id()
    b.jump(lv.lp_params().min_delay)
    rounds = [[b.publish(m.id)] for m in b.d.markets]
    execute = lv.execute_deposit if assets else lv.execute_redeem
    executed = execute(request_id, rounds, sender=b.owner)  # the deployer holds the LP executor role
    return receipt.gas_used, executed.gas_used


def measure_liquidation(b: Bench) -> None:
    """Liquidations (one account, batches of 1 and 5) and ADL (1 and 3 targets) on BTC."""
    from ape import accounts

    d, gas, owner, keeper = b.d, b.gas, b.owner, b.keeper
    wallets = [accounts.test_accounts.generate_test_account() for _ in range(9)]
    for w in wallets:
        owner.transfer(w, 10**18)

    at_risk = wallets[:7]  # ~19x longs
    for w in at_risk:
        d.vault.deposit(0, fund(b, w, 2_200), sender=w)
    b.trades([(w, WAD) for w in at_risk], 0)
    b.publish(0, 38_500)  # 2 % maintenance in config/markets.json: these ~19x longs are now unhealthy
    gas["liquidate"] = d.liquidator.liquidate(wallets[0], 0, sender=keeper).gas_used
    one = d.liquidator.liquidate_many([(wallets[1], 0)], sender=keeper).gas_used
    five = d.liquidator.liquidate_many([(w, 0) for w in wallets[2:7]], sender=keeper).gas_used
    gas["liquidate_many_1"] = one
    gas["liquidate_many_5"] = five
    gas["liquidate_many_per_account"] = (five - one) // 4
    b.publish(0, 40_000)
    b.tick()

    # ADL: profitable shorts, an empty insurance fund, a long gapping through bankruptcy
    shorts = wallets[7:9] + [accounts.test_accounts[5]]
    victim = accounts.test_accounts[6]
    for w in shorts:
        d.vault.deposit(0, fund(b, w, 20_000), sender=w)
    d.vault.deposit(0, fund(b, victim, 2_200), sender=victim)
    b.trades([(w, -WAD) for w in shorts] + [(victim, WAD)], 0)
    surplus = d.insurance_fund.surplus()
    if surplus:
        d.insurance_fund.withdraw_surplus(owner, surplus, sender=owner)
    b.publish(0, 36_000)
    d.liquidator.liquidate(victim, 0, sender=keeper)

    def ranked() -> list:  # the contract checks this order; scores move as positions shrink
        return sorted(shorts, key=lambda w: d.liquidator.adl_score(w, 0, 0), reverse=True)

    tenth = WAD // 10
    one = d.liquidator.auto_deleverage(0, [(ranked()[0], 0, tenth)], victim, 0, sender=owner).gas_used
    three = d.liquidator.auto_deleverage(0, [(w, 0, tenth) for w in ranked()], victim, 0, sender=owner).gas_used
    gas["adl_1_target"] = one
    gas["adl_3_targets"] = three
    gas["adl_per_target"] = (three - one) // 2


# =============================================================================================
# REPORT
# =============================================================================================


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
