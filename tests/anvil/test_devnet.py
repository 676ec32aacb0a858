"""`make devnet` on a real node: perpdex.devnet.Devnet starts anvil, deploys, seeds, runs the
keeper and the pusher as separate processes, and stops them all. Each devnet lives on a free
port with its manifest and logs in a temporary directory; a fixture or a `with` block stops it,
also when a test fails. The chain is read with web3.py and the manifest (anvil_tools.Chain)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from anvil_tools import APE, NETWORK, REPO, USDC, WAD, Chain, free_port, wait_until
from perpdex.devnet import DEPLOYER, KEEPER, PUSH_EVERY, PUSHER, Devnet, DevnetOptions, port_in_use

pytestmark = pytest.mark.anvil
TRADER = 2
FEED_DECIMALS = 8


def devnet_in(tmp: Path, prices: str) -> Devnet:
    """A devnet on a free port, its manifest and logs in `tmp` (not started)."""
    options = DevnetOptions(port=free_port(), prices=prices, logs=tmp / "logs", deployments=tmp / "deployments")
    return Devnet(options, say=lambda *_: None)


def chain_of(devnet: Devnet) -> Chain:
    return Chain(devnet.w3, json.loads(devnet.options.manifest.read_text()), devnet.options.manifest)


def answer(chain: Chain, symbol: str) -> tuple[int, Decimal]:
    """(round id, price in USD) of the market's feed."""
    round_id, value, *_ = chain.aggregator(symbol).functions.latestRoundData().call()
    return round_id, Decimal(value) / 10**FEED_DECIMALS


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    """The default devnet: random-walk prices."""
    d = devnet_in(tmp_path_factory.mktemp("devnet"), "walk")
    try:
        yield d.start()
    finally:
        d.stop()


@pytest.fixture(scope="module")
def chain(devnet):
    return chain_of(devnet)


def test_the_liquidity_vault_and_the_insurance_fund_start_funded(chain):
    lv, fund = chain.liquidity_vault.functions, chain.insurance_fund.functions
    assert lv.totalAssets().call() == 1_000_000 * USDC
    assert fund.fund_balance().call() == 100_000 * WAD
    assert fund.target().call() == 100_000 * WAD  # not all of it is the owner's to withdraw
    assert fund.surplus().call() == 0


def test_the_pusher_publishes_from_its_own_account(devnet, chain):
    accounts = chain.w3.eth.accounts
    pusher = accounts[PUSHER]
    assert pusher not in (accounts[DEPLOYER], accounts[KEEPER], accounts[TRADER])
    for symbol in ("BTC-USD", "ETH-USD"):
        assert chain.aggregator(symbol).functions.is_updater(pusher).call()
    start = chain.head() + 1
    first, _ = answer(chain, "BTC-USD")
    wait_until(lambda: answer(chain, "BTC-USD")[0] >= first + 2, 30, "two rounds of the random walk")
    senders = {tx["from"] for tx, _ in chain.transactions_from({pusher, accounts[DEPLOYER]}, start)}
    assert senders == {pusher}


def test_a_csv_pusher_on_the_deployer_account_runs_beside_the_devnets_pusher(devnet, chain):
    """The README's CSV pusher (TEST::0) shares no nonce with the devnet's (TEST::9)."""
    deployer = chain.w3.eth.accounts[DEPLOYER]
    nonce = chain.w3.eth.get_transaction_count(deployer)
    result = subprocess.run(
        [APE, "run", "pusher", "--network", NETWORK, "--account", f"TEST::{DEPLOYER}",
         "--deployment", str(devnet.options.manifest), "--csv", "BTC-USD=btc-usdt_2020-03_1h.csv",
         "--start", "2020-03-12", "--steps", "5", "--speed", "7200"],
        cwd=REPO, env=devnet.env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: 5 step(s) pushed" in result.stderr + result.stdout
    assert chain.w3.eth.get_transaction_count(deployer) == nonce + 5
    assert devnet.services["pusher"].alive


def test_the_keeper_executes_a_market_order(chain):
    trader = chain.account(TRADER)
    start = chain.head()
    receipts = chain.mined(chain.open_position(trader, 0, "BTC-USD", WAD // 10, 10_000))
    ids = {e.args.order_id for e in chain.committed(receipts)}
    executed = wait_until(lambda: chain.executed(ids, start), 30, "the devnet keeper to execute the market order")
    (event,) = executed.values()
    assert chain.size((trader, 0), "BTC-USD") == WAD // 10
    tx = chain.w3.eth.get_transaction(event.transactionHash)
    assert tx["from"] == chain.account(KEEPER)


def test_a_keeper_that_dies_is_restarted_and_executes_the_next_order(devnet, chain):
    keeper = devnet.services["keeper"]
    keeper.process.send_signal(signal.SIGKILL)
    keeper.process.wait(10)
    devnet.check()
    assert devnet.services["keeper"].alive and devnet.services["keeper"].restarts == 1
    trader = chain.account(TRADER)
    start = chain.head()
    receipts = chain.mined(chain.open_position(trader, 1, "ETH-USD", -WAD, 5_000))
    ids = {e.args.order_id for e in chain.committed(receipts)}
    wait_until(lambda: chain.executed(ids, start), 60, "the restarted keeper to execute the order")
    assert chain.size((trader, 1), "ETH-USD") == -WAD


def test_march_2020_replays_the_crash_from_data(tmp_path):
    with devnet_in(tmp_path, "march-2020") as d:
        chain = chain_of(d)
        _, price = wait_until(
            lambda: (a := answer(chain, "BTC-USD")) and a[1] != Decimal(40_000) and a, 30,
            "the first round of the March 2020 replay",
        )
        assert price == Decimal("7913.42")  # the close of 12 March 2020, 00:00 UTC (data/prices)
        _, eth = wait_until(lambda: (a := answer(chain, "ETH-USD")) and a[1] != Decimal(2_000) and a, 30,
                            "the first ETH-USD round of the replay")
        assert Decimal(100) < eth < Decimal(300)  # ETH near 194 USD on 12 March 2020


def test_without_a_price_source_a_users_own_prices_stay(tmp_path):
    with devnet_in(tmp_path, "none") as d:
        assert "pusher" not in d.services
        chain = chain_of(d)
        deployer = chain.account(DEPLOYER)
        chain.transact(chain.aggregator("BTC-USD").functions.update_answer(12_345 * 10**FEED_DECIMALS), deployer)
        round_id, _ = answer(chain, "BTC-USD")
        head = chain.head()
        # a block per transaction and nothing to act on: the keeper polls but sends nothing, so
        # the chain stands still; over three pusher intervals a pusher would have published
        time.sleep(3 * PUSH_EVERY)
        assert answer(chain, "BTC-USD") == (round_id, Decimal(12_345))
        assert chain.head() == head, "no process sent anything"
        assert d.services["keeper"].alive
    assert all(not s.alive for s in d.services.values())
    wait_until(lambda: not port_in_use(d.options.port), 10, "the stopped node's port to close")
