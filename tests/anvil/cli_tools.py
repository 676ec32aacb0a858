"""What the wallet's real-node tests share (test_runbook.py, test_examples.py, and the page's
tests/web/test_page.py): a deployment by `ape run deploy` (once per session, then loaded into
each new node), the devnet's keeper as a process, a price publisher, and the wallet CLI run as
a person runs it (`python -m perpdex.cli ...`, a process per command).

The publisher stands in for the devnet's price pusher: a thread that publishes a new round of
every market's mock feed (the same answer) every second, as the deployer, so the keeper
executes market orders at the first round after their delay. Everything started here ends
with the test module (fixtures with finally), also on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from anvil_tools import CHAIN_ID, KEEPER_INTERVAL, REPO, Chain, Node, ToolProcess, ape_run, wait_until

DEPLOYER, KEEPER, TRADER = 0, 1, 2
CLI_TIMEOUT = 120  # seconds for one wallet command (open/close wait for the keeper within it)


@dataclass
class Devnet:
    node: Node
    chain: Chain
    keeper: ToolProcess

    @property
    def manifest(self) -> Path:
        return self.chain.path


# the chain right after the session's first `deploy` (anvil_dumpState) and its manifest
_DEPLOYED: dict[str, str] = {}


def deploy(node: Node) -> Chain:
    """`ape run deploy` into the node's temporary directory, with the keeper's ADL role.

    The modules that call this deploy the same contracts with the same accounts onto a new
    node: the first one runs `ape run deploy` (about 40 one-second blocks and 4 s of CPU), the
    others load the chain it left (`anvil_loadState`: its blocks, logs and state, the same
    addresses) and its manifest. tests/anvil/test_operator.py and test_devnet.py run the
    deployer themselves."""
    out = node.tmp / "deployments"
    path = out / f"{CHAIN_ID}.json"
    if _DEPLOYED:
        assert node.w3.provider.make_request("anvil_loadState", [_DEPLOYED["state"]]).get("result") is True
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(_DEPLOYED["manifest"])
    else:
        keeper = node.w3.eth.accounts[KEEPER]
        ape_run(node, "deploy", "--account", f"TEST::{DEPLOYER}", "--out", str(out), "--adl-keeper", keeper,
                "--seed-liquidity", "1000000")
        state = node.w3.provider.make_request("anvil_dumpState", [])
        assert "result" in state, f"anvil_dumpState failed: {state}"
        _DEPLOYED.update(state=state["result"], manifest=path.read_text())
    return Chain(node.w3, json.loads(path.read_text()), path)


class Publisher:
    """A thread publishing a round of every market each `interval` seconds (as the deployer)."""

    def __init__(self, chain: Chain, interval: float = 1.0):
        self.chain, self.interval = chain, interval
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sender = self.chain.account(DEPLOYER)
        symbols = [m["symbol"] for m in self.chain.manifest["markets"]]
        while not self.stop_event.wait(self.interval):
            try:
                for symbol in symbols:
                    feed = self.chain.aggregator(symbol).functions
                    feed.update_answer(self._answer(symbol, feed)).transact({"from": sender, "gas": 200_000})
            except Exception as err:  # the node went away at the end of the module
                self.errors.append(repr(err))

    def _answer(self, symbol: str, feed) -> int:
        """The answer of the market's next round: its latest one again."""
        return feed.latestAnswer().call()

    def __enter__(self) -> Publisher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def devnet(node, tools):
    """A deployment, the keeper process (`ape run keeper`, anvil account 1) and rounds every
    second: what `make devnet` runs. The liquidity vault is seeded so profits are paid."""
    chain = deploy(node)  # the liquidity vault seeded by the deployer before the handover
    keeper = tools("keeper", "keeper", "--account", f"TEST::{KEEPER}", "--json-logs", "--interval", str(KEEPER_INTERVAL),
                   "--deployments", str(chain.path.parent), "--checkpoint", str(node.tmp / "keeper.json"))
    with Publisher(chain) as publisher:
        keeper.wait_for(lambda: keeper.records("pass"), 120, "the keeper's first pass")
        yield Devnet(node, chain, keeper)
        assert not publisher.errors, f"the price publisher failed: {publisher.errors}"


def wallet(devnet: Devnet, *args: str, account: str | None = f"TEST::{TRADER}", ok: bool = True,
           timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m perpdex.cli ARGS --deployment M [--account A]` as a separate process, the node
    found through $APE_FOUNDRY_HOST (as `make devnet` exports it); with `ok`, fails with its
    output unless it exited 0."""
    argv = [sys.executable, "-m", "perpdex.cli", *args, "--deployment", str(devnet.manifest)]
    if account:
        argv += ["--account", account]
    result = subprocess.run(argv, cwd=REPO, env=devnet.node.env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert result.returncode == 0, f"perpdex {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


__all__ = ["Devnet", "Publisher", "devnet", "deploy", "wallet", "wait_until", "TRADER", "KEEPER", "DEPLOYER"]
