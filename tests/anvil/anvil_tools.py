"""A real anvil node for the session, and the operator's tools as separate processes
(fixtures `node` and `tools`, imported by conftest.py; helpers for the tests).

The node is started on a free port with interval mining (`--block-time 1`), so blocks are
meaningful ("liquidated within 2 blocks"), and killed when the module that uses it ends, also
when a test fails or the run is interrupted (SIGINT, or SIGTERM, which tests/conftest.py turns
into an interrupt so that every fixture's teardown runs); so are the tool processes
(tests/anvil/test_process_cleanup.py checks both). Our tools run as `ape run ...` subprocesses connected to it through
`APE_FOUNDRY_HOST`; the tests themselves read and write the chain with plain web3.py and the
deployment manifest's ABIs (anvil's unlocked dev accounts sign), never through ape, so nothing
here touches the ape test session of the rest of the suite.

anvil must be on PATH (the Makefile puts node_modules/.bin there): without it these tests fail,
they do not skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.logs import DISCARD

REPO = Path(__file__).resolve().parents[2]
NETWORK = "ethereum:local:foundry"
BLOCK_TIME = 1  # seconds
# keepers pass twice per block: a price block is seen within half a block, and the transaction
# it calls for is in the next block (a faster poll only burns CPU between blocks)
KEEPER_INTERVAL = BLOCK_TIME / 2
# every timeout below is multiplied by this: on a loaded machine a keeper's pass or an
# `ape run` can take several times its usual time, and a wait that succeeds returns at once
TIMEOUT_FACTOR = float(os.environ.get("PERPDEX_TEST_TIMEOUT_FACTOR", "3"))
CHAIN_ID = 31337
APE = str(Path(sys.executable).with_name("ape"))
USDC = 10**6
WAD = 10**18
FEED_DECIMALS = 8
GAS = 3_000_000  # explicit: no estimation against a state the earlier transactions of a batch change
# figures printed at the end of the session (conftest.pytest_terminal_summary)
REPORT: dict[str, Any] = {}


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s
    (times TIMEOUT_FACTOR)."""
    timeout *= TIMEOUT_FACTOR
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Signal the process group we started (anvil's npm wrapper has a child), then SIGKILL
    whatever is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout)


# =============================================================================================
# The node
# =============================================================================================


@dataclass
class Node:
    url: str
    process: subprocess.Popen
    w3: Web3
    env: dict[str, str]
    tmp: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    anvil = shutil.which("anvil")
    if anvil is None:
        pytest.fail(
            "anvil is not on PATH: run `make test` (it installs node_modules/.bin/anvil and puts it on PATH) "
            "or export PATH=$PWD/node_modules/.bin:$PATH",
            pytrace=False,
        )
    tmp = tmp_path_factory.mktemp("anvil")
    started = time.monotonic()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "anvil.log", "w")
    process = subprocess.Popen(
        [anvil, "--host", "127.0.0.1", "--port", str(port), "--block-time", str(BLOCK_TIME), "--accounts", "20"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"anvil exited with {process.returncode}: {(tmp / 'anvil.log').read_text()[-2000:]}")
            try:
                return w3.eth.chain_id == CHAIN_ID
            except Exception:
                return False

        wait_until(up, 30, f"anvil to answer on {url}")
        env = {
            **os.environ,
            "APE_FOUNDRY_HOST": url,
            "PATH": os.pathsep.join([str(Path(APE).parent), str(REPO / "node_modules" / ".bin"), os.environ["PATH"]]),
            "PYTHONWARNINGS": "ignore",
        }
        yield Node(url, process, w3, env, tmp)
    finally:
        stop_group(process)
        log.close()
        REPORT["anvil node up (s)"] = round(time.monotonic() - started, 1)
        REPORT["logs"] = str(tmp)


# =============================================================================================
# Our tools, as an operator runs them
# =============================================================================================


def ape_run(node: Node, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`ape run ARGS --network ethereum:local:foundry` against the node; fails with its output."""
    assert node.alive(), "anvil died"
    result = subprocess.run(
        [APE, "run", *args, "--network", NETWORK], cwd=REPO, env=node.env, capture_output=True, text=True,
        timeout=timeout * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, f"ape run {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


class ToolProcess:
    """A long-running `ape run ...` process (keeper) with its output in a file; JSON log lines
    parsed on demand. `command` replaces `ape run ARGS --network ...` with any other program."""

    def __init__(self, node: Node, name: str, args: list[str], command: list[str] | None = None):
        self.node, self.name, self.args = node, name, args
        self.command = command or [APE, "run", *args, "--network", NETWORK]
        self.log_path = node.tmp / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> ToolProcess:
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            self.command, cwd=REPO, env=self.node.env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def records(self, event: str | None = None) -> list[dict]:
        records = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written
                if event is None or record.get("event") == event:
                    records.append(record)
        return records

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        def alive_and(check=check):
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.output()[-3000:]}")
            return check()

        return wait_until(alive_and, timeout, f"{self.name}: {what}")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or saved."""
        stop_group(self.process, signal.SIGKILL)

    def stop(self) -> None:
        stop_group(self.process, signal.SIGTERM, timeout=20)

    def close(self) -> None:
        if self.process is not None:
            stop_group(self.process, signal.SIGKILL)
        if self._log:
            self._log.close()


@pytest.fixture(scope="module")
def tools(node):
    """Start long-running tool processes; every one is killed when the module that started it
    ends (before its node)."""
    started: list[ToolProcess] = []

    def start(name: str, *args: str, command: list[str] | None = None) -> ToolProcess:
        tool = ToolProcess(node, name, list(args), command).start()
        started.append(tool)
        return tool

    try:
        yield start
    finally:
        for tool in started:
            tool.close()


# =============================================================================================
# The chain as any client sees it: web3.py and the manifest
# =============================================================================================


@dataclass
class Chain:
    """The deployment through web3.py and the manifest's ABIs; dev accounts are unlocked."""

    w3: Web3
    manifest: dict
    path: Path
    c: dict = field(default_factory=dict)

    def __post_init__(self):
        self.c = {
            name: self.w3.eth.contract(address=entry["address"], abi=entry["abi"])
            for name, entry in self.manifest["contracts"].items()
            if entry["abi"]
        }

    def __getattr__(self, name: str):
        try:
            return self.__dict__["c"][name]
        except KeyError:
            raise AttributeError(name) from None

    def account(self, index: int) -> str:
        return self.w3.eth.accounts[index]

    def aggregator(self, symbol: str):
        return self.c[f"aggregator_{symbol}"]

    def market_id(self, symbol: str) -> int:
        return next(m["id"] for m in self.manifest["markets"] if m["symbol"] == symbol)

    def send(self, call, sender: str) -> bytes:
        """Submit without waiting (the node assigns the nonce); see `mined`."""
        return call.transact({"from": sender, "gas": GAS})

    def mined(self, hashes: list[bytes], timeout: float = 30) -> list:
        """Receipts of `hashes`, each required to have succeeded."""
        receipts = []
        for h in hashes:
            receipt = self.w3.eth.wait_for_transaction_receipt(h, timeout=timeout * TIMEOUT_FACTOR, poll_latency=0.2)
            assert receipt.status == 1, f"transaction {h.hex()} reverted"
            receipts.append(receipt)
        return receipts

    def transact(self, call, sender: str):
        return self.mined([self.send(call, sender)])[0]

    def open_position(self, who: str, sub: int, symbol: str, size: int, collateral_usd: int) -> list[bytes]:
        """Faucet, approve, deposit and commit a market order in one block (no waiting);
        returns the hashes. The order fills once a round is published after its delay and a
        keeper executes it: see `fill`."""
        market = self.market_id(symbol)
        limit = 2**256 - 1 if size > 0 else 0
        return [
            self.send(self.collateral.functions.faucet(collateral_usd * USDC), who),
            self.send(self.collateral.functions.approve(self.vault.address, collateral_usd * USDC), who),
            self.send(self.vault.functions.deposit(sub, collateral_usd * USDC), who),
            self.send(self.order_book.functions.commit_order(sub, market, size, limit, 0, 0, False, 0), who),
        ]

    def committed(self, receipts: list) -> list:
        """The OrderCommitted events of `receipts`."""
        events = []
        for receipt in receipts:
            events += self.order_book.events.OrderCommitted().process_receipt(receipt, errors=DISCARD)
        return events

    def heartbeat(self, symbols: list[str], sender: str) -> dict[str, int]:
        """Publish each market's current answer again as a new round (as a Chainlink heartbeat
        would), in the same block; returns the block of each round."""
        hashes = {
            symbol: self.send(self.aggregator(symbol).functions.update_answer(
                self.aggregator(symbol).functions.latestAnswer().call()), sender)
            for symbol in symbols
        }
        return {symbol: r.blockNumber for symbol, r in zip(hashes, self.mined(list(hashes.values())))}

    def round_after(self, not_before: int, sender: str, symbols: list[str]) -> dict[str, int]:
        """Wait for a block at or after `not_before`, then publish a round there: the first
        round the orders committed before can execute at."""
        wait_until(lambda: self.w3.eth.get_block("latest").timestamp + BLOCK_TIME >= not_before, 30,
                   f"chain time {not_before} (the orders' delay)")
        return self.heartbeat(symbols, sender)

    def executed(self, order_ids: set[int], start: int) -> dict[int, Any]:
        """OrderExecuted events of `order_ids` since block `start`, by order id."""
        return {e.args.order_id: e for e in self.events("order_book", "OrderExecuted", start)
                if e.args.order_id in order_ids}

    def fill(self, hashes: list[bytes], sender: str, executor: str | None = None, timeout: float = 30) -> dict:
        """Mine `hashes` (which commit market orders), publish the next round of their markets
        as `sender`, and have the orders executed: by `executor` if given (acting as any keeper
        may), else by the keeper processes running. Returns {order_id: OrderExecuted}."""
        receipts = self.mined(hashes)
        commits = self.committed(receipts)
        ids = {e.args.order_id for e in commits}
        start = min(r.blockNumber for r in receipts)
        symbols = sorted({m["symbol"] for m in self.manifest["markets"]
                          for e in commits if e.args.market_id == m["id"]})
        rounds = self.round_after(max(e.args.not_before for e in commits), sender, symbols)
        if executor is not None:
            for e in commits:
                symbol = next(m["symbol"] for m in self.manifest["markets"] if m["id"] == e.args.market_id)
                round_id = self.aggregator(symbol).functions.latestRound().call()
                self.transact(self.order_book.functions.execute_order(e.args.order_id, [round_id]), executor)
        executed = wait_until(lambda: (found := self.executed(ids, start)) and len(found) == len(ids) and found,
                              timeout, f"the execution of orders {sorted(hex(i) for i in ids)}")
        self.last_rounds = rounds
        return executed

    def size(self, key: tuple[str, int], symbol: str) -> int:
        return self.exchange.functions.position_state(key[0], key[1], self.market_id(symbol)).call()[0]

    def liquidatable(self, key: tuple[str, int], block: int | str = "latest") -> bool:
        return self.liquidator.functions.is_liquidatable(*key).call(block_identifier=block)

    def head(self) -> int:
        return self.w3.eth.block_number

    def events(self, contract: str, event: str, start: int, stop: int | str = "latest") -> list:
        return list(getattr(self.c[contract].events, event)().get_logs(from_block=start, to_block=stop))

    def liquidations(self, start: int) -> list:
        return self.events("liquidator", "Liquidation", start)

    def transactions_from(self, senders: set[str], start: int, stop: int | None = None) -> list[tuple[dict, dict]]:
        """(transaction, receipt) of every transaction by `senders` in blocks start..stop."""
        stop = self.head() if stop is None else stop
        found = []
        for number in range(start, stop + 1):
            block = self.w3.eth.get_block(number, full_transactions=True)
            for tx in block.transactions:
                if tx["from"] in senders:
                    found.append((tx, self.w3.eth.get_transaction_receipt(tx["hash"])))
        return found

    def depositors(self) -> set[tuple[str, int]]:
        """Every trader sub-account that ever deposited."""
        return {(e.args.owner, e.args.sub_account) for e in self.events("vault", "Deposit", self.manifest["block"])}

    def ledger_accounts(self) -> set[tuple[str, int]]:
        """Every trader sub-account that ever had cash: from the vault's events."""
        start = self.manifest["block"]
        keys = self.depositors()
        for e in self.events("vault", "Settled", start):
            keys.add((e.args.owner, e.args.sub_account))
            if e.args.execution_fee:
                keys.add((e.args.executor, 0))
        keys |= {(e.args.payee, e.args.sub_account) for e in self.events("vault", "EscrowReleased", start)}
        for e in self.events("vault", "PairSettled", start):
            keys.add((e.args.owner, e.args.sub_account))
            keys.add((e.args.counterparty, e.args.counterparty_sub_account))
        return keys

    def ledger_gap(self) -> int:
        """Token balance of the vault (in WAD) minus the sum of every ledger account (the order
        escrow included): 0 when DESIGN.md's invariant 1 holds."""
        v = self.vault.functions
        traders = sum(v.cash(owner, sub).call() for owner, sub in self.ledger_accounts())
        system = (
            v.liquidity_cash().call() + v.insurance_cash().call() + v.fee_cash().call() + v.funding_pool_cash().call()
            + v.order_escrow_cash().call()
        )
        balance = self.collateral.functions.balanceOf(self.vault.address).call()
        return balance * v.token_scale().call() - (traders + system)

    def transact_value(self, sender: str, to: str, wei: int):
        return self.mined([self.w3.eth.send_transaction({"from": sender, "to": to, "value": wei})])[0]


def write_price_csv(path: Path, timestamp: int, price: str) -> Path:
    path.write_text(f"timestamp,open,high,low,close\n{timestamp},{price},{price},{price},{price}\n")
    return path
