"""The operator's path on a real node: every tool is a separate process talking RPC to anvil.

`ape run deploy` writes a manifest (to a temporary directory, not the repository's
deployments/); a trader deposits and commits a market order with `ape run trade`, which waits
for a keeper to execute it; `ape run pusher` drops the price; `ape run keeper` (long-running,
JSON logs) executes orders at the first round after their delay and liquidates. Traders that
are not the CLI commit orders with web3.py; the test publishes the round that executes them
(the aggregators' heartbeat, as the deployer who owns the mock feeds). The tests read outcomes from the
chain (events, receipts, views) and from the keeper's structured log.

The tests of this module build on each other, in order, on one deployment: liquidation in the
keeper's first pass after the price drop (a block count would be a race a loaded machine loses),
then a keeper killed (SIGKILL) and restarted, then two keepers at once, then a
client that is not ours. Prices only fall along the way (BTC 40,000 -> 38,700 -> 37,400 ->
36,000 -> 34,500 -> 33,000); each step is chosen so that exactly the accounts named in the
test become liquidatable (asserted on chain before the keeper acts).

config/markets.json: 4 % initial and 2 % maintenance margin, 0.5 % penalty, 5 USD keeper floor.
A 1 BTC long opened with collateral C at price P0 becomes liquidatable below about
(P0 - C + 5) / 0.975.
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from anvil_tools import (
    APE,
    CHAIN_ID,
    KEEPER_INTERVAL,
    NETWORK,
    REPO,
    REPORT,
    TIMEOUT_FACTOR,
    USDC,
    WAD,
    Chain,
    ToolProcess,
    ape_run,
    wait_until,
    write_price_csv,
)
from manifest_client import deposit_and_trade
from web3 import Web3
from web3.logs import DISCARD

pytestmark = pytest.mark.anvil

BTC, ETH = "BTC-USD", "ETH-USD"
KEEPER_FLOOR = 5 * WAD
LIQUIDATE_MANY = Web3.keccak(text="liquidate_many((address,uint256)[])")[:4]
AUTO_DELEVERAGE = Web3.keccak(text="auto_deleverage(uint256,(address,uint256,uint256)[],address,uint256)")[:4]
EXECUTE_ORDER = Web3.keccak(text="execute_order(uint256,uint80[])")[:4]
EXECUTE_ORDERS = Web3.keccak(text="execute_orders(uint256[],uint80[][])")[:4]
CANCEL_ORDER = Web3.keccak(text="cancel_order(uint256)")[:4]
# anvil dev accounts = ape's TEST::<n>
DEPLOYER, KEEPER_1, KEEPER_2, CLI_TRADER = 0, 1, 2, 3
ONCE_TRADER, ONCE_KEEPER = 14, 15  # accounts no other test here uses


class Scenario:
    """What the tests of this module share: the deployment, the keeper processes, the log."""

    def __init__(self, node, tools, chain: Chain, deployments: Path):
        self.node, self.tools, self.chain, self.deployments = node, tools, chain, deployments
        self.keepers: dict[str, ToolProcess] = {}
        self.distances = REPORT.setdefault("liquidation block - price-drop block", [])
        self.drops = 0

    def start_keeper(self, name: str, account: int, checkpoint: str, *others: int) -> ToolProcess:
        """`ape run keeper` as TEST::<account>, JSON logs, two passes per block; `others`: the
        accounts of the other keepers executing orders (they take turns per order)."""
        peers = [arg for other in others for arg in ("--order-keeper", self.chain.account(other))]
        keeper = self.tools(
            name, "keeper", "--account", f"TEST::{account}", "--json-logs", "--interval", str(KEEPER_INTERVAL),
            "--deployments", str(self.deployments), "--checkpoint", str(self.deployments / checkpoint), *peers,
        )
        self.keepers[name] = keeper
        return keeper

    def push(self, **prices: str) -> dict[str, int]:
        """`ape run pusher` publishes one step from CSV files; returns the block of each
        market's update (from the aggregators' AnswerUpdated events)."""
        start = self.chain.head() + 1
        self.drops += 1
        args = []
        for symbol, price in prices.items():
            path = write_price_csv(self.node.tmp / f"drop{self.drops}-{symbol}.csv", 1_700_000_000, price)
            args += ["--csv", f"{symbol}={path}"]
        ape_run(
            self.node, "pusher", "--account", f"TEST::{DEPLOYER}", *args, "--speed", "0", "--once",
            "--deployment", str(self.chain.path),
        )
        blocks = {}
        for symbol, price in prices.items():
            (update,) = self.chain.events(f"aggregator_{symbol}", "AnswerUpdated", start)
            assert update.args.current == int(price) * 10**8
            blocks[symbol] = update.blockNumber
        return blocks


@pytest.fixture(scope="module")
def scenario(node, tools):
    """`ape run deploy` into a temporary directory; the deployer seeds the liquidity vault."""
    deployments = node.tmp / "deployments"
    repo_manifests = sorted((REPO / "deployments").glob("*"))
    before = {p: p.stat().st_mtime_ns for p in repo_manifests}
    keepers = [node.w3.eth.accounts[KEEPER_1], node.w3.eth.accounts[KEEPER_2]]
    out = ape_run(
        node, "deploy", "--account", f"TEST::{DEPLOYER}", "--out", str(deployments),
        "--adl-keeper", keepers[0], "--adl-keeper", keepers[1], "--seed-liquidity", "1000000",
    ).stdout
    path = deployments / f"{CHAIN_ID}.json"
    assert f"manifest: {path}" in out
    # the repository's deployments/ is not touched
    assert {p: p.stat().st_mtime_ns for p in sorted((REPO / "deployments").glob("*"))} == before

    manifest = json.loads(path.read_text())
    chain = Chain(node.w3, manifest, path)
    assert "seeded the liquidity vault with 1,000,000 USD" in out  # before the timelock took over
    return Scenario(node, tools, chain, deployments)


def assert_no_failed_transactions(chain: Chain, senders: set[str], start: int) -> list:
    """Every transaction of `senders` since `start` succeeded and called liquidate_many or
    auto_deleverage on the liquidator, or execute_order(s) / cancel_order on the order book (a
    keeper never calls `liquidate`, which reverts on a healthy account). Returns them."""
    sent = chain.transactions_from(senders, start)
    for tx, receipt in sent:
        assert receipt.status == 1, f"keeper transaction {tx['hash'].hex()} in block {receipt.blockNumber} reverted"
        selector = bytes(tx["input"][:4])
        if tx["to"] == chain.order_book.address:
            assert selector in (EXECUTE_ORDER, EXECUTE_ORDERS, CANCEL_ORDER)
        else:
            assert tx["to"] == chain.liquidator.address
            assert selector in (LIQUIDATE_MANY, AUTO_DELEVERAGE)
    return sent


def order_execution_counts(chain: Chain, start: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for e in chain.events("order_book", "OrderExecuted", start):
        counts[e.args.order_id] = counts.get(e.args.order_id, 0) + 1
    return counts


def acted_in_first_pass(keeper: ToolProcess, block: int, event: str, **fields) -> None:
    """Assert that `keeper` logged `event` (with `fields`) in its first pass that synced at or
    after `block`: it acted as soon as it could see that block, however many blocks a loaded
    machine mined meanwhile (a block count alone is a race a slow machine loses). Waits, bounded,
    for the record of that pass (a pass logs its block after its actions)."""
    def same(record: dict) -> bool:
        return record.get("event") == event and all(str(record.get(k)).lower() == str(v).lower()
                                                     for k, v in fields.items())

    def find():
        records = keeper.records()
        for i, record in enumerate(records):
            if same(record):
                own = next((r for r in records[i + 1:] if r.get("event") == "pass"), None)
                return (records[:i], own) if own else None
        return None

    before, own = keeper.wait_for(find, 60, f"the pass that logged {event} {fields}")
    earlier = [r["block"] for r in before if r.get("event") == "pass" and r["block"] >= block]
    assert not earlier and own["block"] >= block, (
        f"{keeper.name}: {event} {fields} came in its pass at block {own['block']}, not in its first pass at or "
        f"after block {block} (earlier passes at {earlier})"
    )


def record_order_distances(chain: Chain, executed: dict, keeper: ToolProcess | None = None) -> None:
    """Blocks between the round that made the orders executable and their execution (for the
    report); with `keeper`, the one keeper running, each execution came in its first pass
    that saw the round."""
    distances = REPORT.setdefault("order execution block - round block", [])
    round_block = max(chain.last_rounds.values())
    for e in executed.values():
        distances.append(e.blockNumber - round_block)
        assert e.blockNumber >= round_block, f"order {e.args.order_id:#x} executed before its round"
        if keeper is not None:
            acted_in_first_pass(keeper, round_block, "order.executed", order=e.args.order_id)


def liquidation_count(chain: Chain, start: int) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for e in chain.liquidations(start):
        key = (e.args.owner, e.args.sub_account)
        counts[key] = counts.get(key, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------


def test_deploy_script_writes_a_manifest_any_client_can_use(scenario):
    chain = scenario.chain
    m = chain.manifest
    assert m["chain_id"] == CHAIN_ID and m["block"] is not None
    for name, entry in m["contracts"].items():
        assert len(chain.w3.eth.get_code(entry["address"])) > 0, f"{name} has no code"
        assert entry["abi"], f"{name} has no ABI"
    # the first contract was created in the recorded block: the keeper indexes events from there
    first = min(chain.w3.eth.get_transaction_receipt(tx["hash"]).blockNumber
                for tx, _ in chain.transactions_from({chain.account(DEPLOYER)}, m["block"], m["block"]))
    assert first == m["block"]
    assert [x["symbol"] for x in m["markets"]] == [BTC, ETH]
    # deploying again finds everything in place and sends nothing
    nonce = chain.w3.eth.get_transaction_count(chain.account(DEPLOYER))
    out = ape_run(scenario.node, "deploy", "--account", f"TEST::{DEPLOYER}", "--out", str(scenario.deployments)).stdout
    assert "nothing to do: the deployment is complete" in out
    assert chain.w3.eth.get_transaction_count(chain.account(DEPLOYER)) == nonce
    assert chain.exchange.functions.index_price(chain.market_id(BTC)).call() == 40_000 * WAD
    for k in (KEEPER_1, KEEPER_2):
        assert chain.liquidator.functions.adl_keeper(chain.account(k)).call()
    assert chain.liquidity_vault.functions.totalAssets().call() == 1_000_000 * USDC


def test_a_keeper_run_once_as_cron_runs_it_executes_the_waiting_order_and_exits(scenario):
    """`ape run keeper --once --json-logs`: one pass over the deployment from its first block,
    the market order waiting for it executed, its checkpoint written, exit 0."""
    chain, node = scenario.chain, scenario.node
    trader, keeper = chain.account(ONCE_TRADER), chain.account(ONCE_KEEPER)
    receipts = chain.mined(chain.open_position(trader, 0, BTC, WAD // 100, 5_000))
    (commit,) = chain.committed(receipts)
    chain.round_after(commit.args.not_before, chain.account(DEPLOYER), [BTC])
    checkpoint = scenario.deployments / "keeper-once.json"
    result = subprocess.run(
        [APE, "run", "keeper", "--once", "--json-logs", "--account", f"TEST::{ONCE_KEEPER}", "--deployments",
         str(scenario.deployments), "--checkpoint", str(checkpoint), "--network", NETWORK],
        cwd=REPO, env=node.env, capture_output=True, text=True, timeout=120 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    (summary,) = [line for line in lines if line["event"] == "pass"]
    assert (summary["orders_executed"], summary["errors"]) == (1, 0)
    (executed,) = chain.executed({commit.args.order_id}, receipts[0].blockNumber).values()
    assert executed.args.executor == keeper and chain.size((trader, 0), BTC) == WAD // 100
    saved = json.loads(checkpoint.read_text())
    assert saved["block"] == summary["block"] and [trader, 0] in saved["accounts"]


def test_cli_trader_liquidated_by_the_keeper_process_in_its_first_pass_after_the_drop(scenario):
    s, chain = scenario, scenario.chain
    keeper = s.start_keeper("keeper-a", KEEPER_1, "keeper-a.json")  # starts while the traders trade
    start = chain.head() + 1  # this test's blocks
    owner = chain.account(DEPLOYER)
    keeper_address = chain.account(KEEPER_1)

    # a trader with the wallet CLI: 2,200 USD, then a ~18x long
    trader = chain.account(CLI_TRADER)
    chain.transact(chain.collateral.functions.faucet(2_200 * USDC), trader)
    # more traders, straight from web3.py: a BTC and an ETH long at ~18x, and two that are safe
    w = [chain.account(i) for i in (4, 5, 6)]
    risky_btc, risky_eth = (w[0], 0), (w[1], 1)
    safe_long, safe_short = (w[2], 0), (w[2], 1)
    pending = [
        *chain.open_position(*risky_btc, BTC, WAD, 2_200),
        *chain.open_position(*risky_eth, ETH, 20 * WAD, 2_200),
        *chain.open_position(*safe_long, BTC, WAD, 10_000),
        *chain.open_position(*safe_short, BTC, -WAD, 2_200),
    ]
    executed = chain.fill(pending, owner)  # executed by the keeper process
    assert {e.args.executor for e in executed.values()} == {keeper_address}
    record_order_distances(chain, executed, keeper)

    out = ape_run(s.node, "trade", "deposit", "2200", "--account", f"TEST::{CLI_TRADER}",
                  "--deployment", str(chain.path)).stdout
    assert "deposited 2,200.00 USD, sub-account 0: cash now 2,200.00 USD" in out
    # the CLI commits and waits for a keeper; the round after its delay is published meanwhile
    committed_from = chain.head()
    cli_open = s.tools("cli-open", "trade", "open", "BTC-USD", "1", "--slippage", "1",
                       "--account", f"TEST::{CLI_TRADER}", "--deployment", str(chain.path))
    (commit,) = cli_open.wait_for(
        lambda: [e for e in chain.events("order_book", "OrderCommitted", committed_from) if e.args.owner == trader],
        60, "the CLI's order commit")
    rounds = chain.round_after(commit.args.not_before, owner, [BTC])
    wait_until(lambda: not cli_open.alive, 60, "the CLI to report the execution")
    assert cli_open.process.returncode == 0, cli_open.output()
    out = cli_open.output()
    assert "bought 1 BTC-USD at" in out and "position now +1.0000" in out, out
    (cli_fill,) = chain.executed({commit.args.order_id}, committed_from).values()
    assert cli_fill.args.executor == keeper_address and cli_fill.blockNumber >= rounds[BTC]
    acted_in_first_pass(keeper, rounds[BTC], "order.executed", order=commit.args.order_id)
    REPORT.setdefault("order execution block - round block", []).append(cli_fill.blockNumber - rounds[BTC])
    cli = (trader, 0)
    assert chain.size(cli, BTC) == WAD

    everyone = [cli, risky_btc, risky_eth, safe_long, safe_short]
    keeper.wait_for(lambda: any(r["accounts"] == len(everyone) for r in keeper.records("pass")), 60,
                    "a pass that indexed every trader")
    assert not any(chain.liquidatable(k) for k in everyone)
    insurance_before = chain.insurance_fund.functions.fund_balance().call()
    keeper_cash_before = chain.vault.functions.cash(keeper_address, 0).call()

    drop = s.push(**{BTC: "38700", ETH: "1930"})
    risky = {cli: drop[BTC], risky_btc: drop[BTC], risky_eth: drop[ETH]}
    last = max(drop.values())
    assert all(chain.liquidatable(k, block) for k, block in risky.items())
    assert not chain.liquidatable(safe_long, last) and not chain.liquidatable(safe_short, last)
    wait_until(lambda: len(chain.liquidations(start)) >= len(risky), 20, "three liquidations")

    events = chain.liquidations(start)
    assert {(e.args.owner, e.args.sub_account) for e in events} == set(risky)
    assert len(events) == len(risky)  # one each
    for e in events:
        key = (e.args.owner, e.args.sub_account)
        distance = e.blockNumber - risky[key]
        s.distances.append(distance)
        assert distance >= 1, f"{key} liquidated before the price drop"
        acted_in_first_pass(keeper, risky[key], "liquidation.done", owner=key[0], sub_account=key[1])
        assert e.args.keeper == keeper_address and e.args.fully_closed
    assert chain.size(cli, BTC) == chain.size(risky_btc, BTC) == chain.size(risky_eth, ETH) == 0
    assert chain.size(safe_long, BTC) == WAD and chain.size(safe_short, BTC) == -WAD

    rewards = sum(e.args.keeper_reward for e in events)
    assert rewards >= len(risky) * KEEPER_FLOOR
    assert chain.vault.functions.cash(keeper_address, 0).call() - keeper_cash_before == rewards
    to_insurance = sum(e.args.to_insurance for e in events)
    assert to_insurance > 0 and not chain.events("liquidator", "BadDebt", start)
    assert chain.insurance_fund.functions.fund_balance().call() - insurance_before == to_insurance
    assert chain.ledger_gap() == 0
    assert_no_failed_transactions(chain, {keeper_address}, start)

    done = keeper.records("liquidation.done")
    assert {(r["owner"], r["sub_account"]) for r in done} == set(risky)
    assert all(r["errors"] == 0 for r in keeper.records("pass"))


def test_keeper_killed_mid_run_and_restarted_misses_nothing_and_repeats_nothing(scenario):
    s, chain = scenario, scenario.chain
    keeper = s.keepers["keeper-a"]
    keeper_address = chain.account(KEEPER_1)
    start = chain.head() + 1  # this test's blocks
    w = [chain.account(i) for i in (7, 8, 9)]
    first, second, newcomer = (w[0], 0), (w[1], 0), (w[2], 0)
    owner = chain.account(DEPLOYER)
    executed = chain.fill([*chain.open_position(*first, BTC, WAD, 2_100), *chain.open_position(*second, BTC, WAD, 3_000)],
                          owner)
    record_order_distances(chain, executed, keeper)
    depositors = len(chain.depositors())
    keeper.wait_for(lambda: any(r["accounts"] == depositors for r in keeper.records("pass")), 20,
                    "a pass that indexed the two new accounts")

    # BTC 37,400 makes `first` liquidatable: kill the keeper the moment its transaction is in
    # the node's pool (watched while the pusher runs, not after it exits)
    def sent() -> bool:
        pending = chain.w3.eth.get_transaction_count(keeper_address, "pending")
        return pending > chain.w3.eth.get_transaction_count(keeper_address, "latest") or bool(chain.liquidations(start))

    with ThreadPoolExecutor(1) as pool:
        pushing = pool.submit(s.push, **{BTC: "37400"})
        wait_until(sent, 30, "the keeper to send its liquidation", interval=0.02)
        keeper.kill()
        checkpoint = json.loads((s.deployments / "keeper-a.json").read_text())
        drop = pushing.result()
    assert keeper.process.returncode == -9
    assert chain.liquidatable(first, drop[BTC]) and not chain.liquidatable(second, drop[BTC])

    # while it is down: an account it has never seen commits a market order, the round after
    # its delay is published (at 37,400), and the price falls through both
    (newcomer_commit,) = chain.committed(chain.mined(chain.open_position(*newcomer, BTC, WAD, 2_100)))
    chain.round_after(newcomer_commit.args.not_before, owner, [BTC])
    s.push(**{BTC: "36000"})
    (in_flight,) = wait_until(lambda: chain.liquidations(start), 10, "the in-flight liquidation to be mined")
    assert (in_flight.args.owner, in_flight.args.sub_account) == first
    s.distances.append(in_flight.blockNumber - drop[BTC])
    assert in_flight.blockNumber > drop[BTC] and in_flight.args.keeper == keeper_address
    # killed mid-pass: the pass that sent it never wrote its checkpoint
    assert in_flight.blockNumber > checkpoint["block"]
    assert chain.liquidatable(second)
    assert chain.order_book.functions.order(newcomer_commit.args.order_id).call()[11] == 1  # still open
    down_until = chain.head()

    keeper = s.start_keeper("keeper-a-restarted", KEEPER_1, "keeper-a.json")
    wait_until(lambda: len(chain.liquidations(start)) >= 3, 60, "the restarted keeper's liquidations")
    keeper.wait_for(lambda: any(r["block"] >= chain.head() - 1 for r in keeper.records("pass")), 10, "a later pass")

    assert liquidation_count(chain, start) == {first: 1, second: 1, newcomer: 1}
    assert all(e.args.keeper == keeper_address for e in chain.liquidations(start))
    assert chain.size(first, BTC) == chain.size(second, BTC) == chain.size(newcomer, BTC) == 0
    # the order committed while the keeper was down was executed after its restart, once, at the
    # first round after its delay (37,400), before the newcomer was liquidated at 36,000
    (late_fill,) = chain.executed({newcomer_commit.args.order_id}, start).values()
    assert late_fill.args.executor == keeper_address and late_fill.blockNumber > down_until
    assert late_fill.args.index_price == 37_400 * WAD
    assert order_execution_counts(chain, start) == {e: 1 for e in [*executed, newcomer_commit.args.order_id]}
    (loaded,) = keeper.records("checkpoint.loaded")
    assert loaded["block"] == checkpoint["block"] and loaded["accounts"] == len(checkpoint["accounts"])
    # resumed from the checkpoint: only the account that appeared while it was down is new to it
    assert keeper.records("pass")[0]["new_accounts"] == 1
    assert {(r["owner"], r["sub_account"]) for r in keeper.records("liquidation.done")} == {second, newcomer}
    # nothing twice: every transaction since the restart liquidated something, none reverted
    for tx, receipt in assert_no_failed_transactions(chain, {keeper_address}, down_until + 1):
        if tx["to"] == chain.order_book.address:
            assert chain.order_book.events.OrderExecuted().process_receipt(receipt, errors=DISCARD)
            continue
        (batch,) = chain.liquidator.events.LiquidationBatch().process_receipt(receipt, errors=DISCARD)
        assert batch.args.liquidated > 0
    assert_no_failed_transactions(chain, {keeper_address}, start)
    assert chain.ledger_gap() == 0


def test_two_keepers_at_once_each_account_liquidated_once_no_reverted_transaction(scenario):
    s, chain = scenario, scenario.chain
    # the two keepers know of each other: they take turns per order (and per ADL trigger)
    s.keepers["keeper-a-restarted"].stop()
    keeper_1 = s.start_keeper("keeper-a-with-b", KEEPER_1, "keeper-a.json", KEEPER_2)
    keeper_2 = s.start_keeper("keeper-b", KEEPER_2, "keeper-b.json", KEEPER_1)
    for keeper in (keeper_1, keeper_2):  # both running before any order is due: each takes its turns
        keeper.wait_for(lambda k=keeper: k.records("pass"), 60, "a first pass")
    senders = {chain.account(KEEPER_1), chain.account(KEEPER_2)}
    start = chain.head() + 1  # this test's blocks
    owner = chain.account(DEPLOYER)

    # six 1 BTC longs at 36,000 with 2,000 each (liquidatable below ~34,900), and a 3 BTC whale
    # with 8,000: healthy at 34,500 (equity ~3,400, maintenance ~2,600), bankrupt after a gap
    # to 33,000 (equity ~ -1,100)
    traders = [(chain.account(10 + i // 2), i % 2) for i in range(6)]
    whale = (chain.account(13), 0)
    pending = [h for key in traders for h in chain.open_position(*key, BTC, WAD, 2_000)]
    executed = chain.fill([*pending, *chain.open_position(*whale, BTC, 3 * WAD, 8_000)], owner)
    record_order_distances(chain, executed)
    # both keepers race for the seven orders: each is executed once, by one of them, and
    # neither sends a transaction that reverts (checked for the whole test below)
    assert order_execution_counts(chain, start) == {order_id: 1 for order_id in executed}
    assert {e.args.executor for e in executed.values()} <= senders
    REPORT["two keepers: order executions by keeper"] = {
        name: sum(e.args.executor == chain.account(k) for e in executed.values())
        for name, k in (("keeper-a", KEEPER_1), ("keeper-b", KEEPER_2))
    }
    depositors = len(chain.depositors())
    for keeper in (keeper_1, keeper_2):
        keeper.wait_for(lambda k=keeper: any(r["accounts"] == depositors for r in k.records("pass")), 60,
                        "a pass that indexed every trader")

    drop = s.push(**{BTC: "34500"})
    assert all(chain.liquidatable(k, drop[BTC]) for k in traders) and not chain.liquidatable(whale, drop[BTC])
    wait_until(lambda: len(chain.liquidations(drop[BTC])) >= len(traders), 20, "six liquidations")
    assert liquidation_count(chain, start) == {k: 1 for k in traders}
    by_address = {chain.account(KEEPER_1): keeper_1, chain.account(KEEPER_2): keeper_2}
    for e in chain.liquidations(start):
        assert e.args.keeper in senders
        s.distances.append(e.blockNumber - drop[BTC])
        assert e.blockNumber > drop[BTC]
        acted_in_first_pass(by_address[e.args.keeper], drop[BTC], "liquidation.done",
                            owner=e.args.owner, sub_account=e.args.sub_account)

    # the insurance fund is emptied; a gap through the whale's bankruptcy price leaves a deficit
    # that only auto-deleveraging can cover: both keepers hold the ADL role
    fund = chain.insurance_fund.functions
    # through the timelock, the owner of every contract (2 s on a local network)
    scheduled = ape_run(
        s.node, "governance", "schedule", "insurance_fund", "withdraw_surplus", owner, str(fund.surplus().call()),
        "--account", f"TEST::{DEPLOYER}", "--deployment", str(chain.path),
    ).stdout
    operation = re.search(r"scheduled (0x[0-9a-f]{64})", scheduled).group(1)
    ape_run(s.node, "governance", "execute", operation, "--wait", "30", "--account", f"TEST::{DEPLOYER}",
            "--deployment", str(chain.path))
    assert fund.surplus().call() == 0
    gap = s.push(**{BTC: "33000"})
    wait_until(lambda: chain.events("liquidator", "AutoDeleveraged", gap[BTC]), 30, "auto-deleveraging")
    wait_until(lambda: chain.liquidator.functions.uncovered_deficit(chain.market_id(BTC)).call() == 0, 10,
               "the deficit to be covered")
    (bad_debt,) = chain.events("liquidator", "BadDebt", gap[BTC])
    assert (bad_debt.args.owner, bad_debt.args.sub_account) == whale and bad_debt.args.uncovered > 0
    assert chain.vault.functions.cash(*whale).call() == 0  # made whole by the profitable shorts
    assert liquidation_count(chain, start) == {**{k: 1 for k in traders}, whale: 1}

    # both keepers run passes past every ADL turn of this deficit (3 role holders: the deployer's
    # turn idles) without acting again, and are still running
    (recorded,) = chain.events("liquidator", "DeficitRecorded", gap[BTC])
    after_turns = recorded.blockNumber + 3 * 4
    for keeper in (keeper_1, keeper_2):
        keeper.wait_for(lambda k=keeper: any(r["block"] >= after_turns for r in k.records("pass")), 30,
                        "a pass after every ADL turn")
    assert keeper_1.alive and keeper_2.alive
    assert liquidation_count(chain, start) == {**{k: 1 for k in traders}, whale: 1}
    sent = assert_no_failed_transactions(chain, senders, start)
    adl = [(tx, r) for tx, r in sent if bytes(tx["input"][:4]) == AUTO_DELEVERAGE]
    assert len(adl) == 1  # one keeper deleveraged; the other, in its turn, found nothing left to do
    assert {e.transactionHash for e in chain.events("liquidator", "AutoDeleveraged", start)} == {adl[0][0]["hash"]}
    adl_sender = next(k for k in (keeper_1, keeper_2) if k.records("adl.done"))
    other = keeper_2 if adl_sender is keeper_1 else keeper_1
    REPORT["two keepers: ADL"] = (
        f"sent by {adl_sender.name} (block {adl[0][1].blockNumber}, deficit recorded in {recorded.blockNumber}); "
        f"{other.name} logged adl.waiting_turn: {bool(other.records('adl.waiting_turn'))}"
    )
    for keeper in (keeper_1, keeper_2):
        assert all(r["errors"] == 0 for r in keeper.records("pass"))
    assert chain.ledger_gap() == 0
    empty = sum(
        chain.liquidator.events.LiquidationBatch().process_receipt(r, errors=DISCARD)[0].args.liquidated == 0
        for tx, r in sent if bytes(tx["input"][:4]) == LIQUIDATE_MANY
    )
    batches = sum(bytes(tx["input"][:4]) == LIQUIDATE_MANY for tx, _ in sent)
    REPORT["two keepers: liquidate_many transactions that found nothing left (lost races)"] = f"{empty} of {batches}"


def test_a_client_that_is_not_ours_deposits_and_trades_from_the_manifest(scenario):
    chain = scenario.chain
    funder = chain.account(DEPLOYER)
    executed = deposit_and_trade(
        chain.w3, chain.manifest, lambda a: chain.transact_value(funder, a, 10**18),
        publish_round=lambda: chain.heartbeat([BTC], funder),
    )
    assert executed["size_delta"] > 0


def test_a_keeper_without_a_usable_account_or_node_says_why_and_sends_nothing(scenario):
    """`ape run keeper` refuses a test account the node does not have and a node it cannot
    reach, before its first pass, with what to do."""

    def keeper(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [APE, "run", "keeper", "--once", "--deployments", str(scenario.deployments), *args, "--network", NETWORK],
            cwd=REPO, env=scenario.node.env, capture_output=True, text=True, timeout=120,
        )

    refused = keeper("--account", "TEST::99")
    assert refused.returncode != 0
    assert "TEST::99: the node at" in refused.stderr and "has 20 unlocked test accounts" in refused.stderr
    unreachable = keeper("--account", "TEST::5", "--rpc-url", "http://127.0.0.1:9")
    assert unreachable.returncode != 0 and "cannot reach a node at http://127.0.0.1:9" in unreachable.stderr
