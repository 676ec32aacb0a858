"""The examples a foreign client starts from (examples/), run as they are documented against a
real anvil node with the devnet's keeper: plain web3.py, and the cast walkthrough. Each uses
the manifest alone and a key of its own; the tests check the chain afterwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from anvil_tools import REPO, USDC, WAD
from cli_tools import devnet  # noqa: F401  (fixture)
from eth_account import Account
from web3.logs import DISCARD

pytestmark = pytest.mark.anvil
BTC = 0


def fresh_wallet(devnet) -> Account:  # noqa: F811
    """A new key with 1 ETH for gas (from anvil's account 9)."""
    wallet = Account.create()
    devnet.chain.transact_value(devnet.chain.account(9), wallet.address, 10**18)
    return wallet


def finished(devnet, wallet, result: subprocess.CompletedProcess) -> None:  # noqa: F811
    """The example exited 0, left no position, and returned the collateral less the fees."""
    assert result.returncode == 0, f"exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    chain = devnet.chain
    assert chain.exchange.functions.position(wallet.address, 0, BTC).call()[0] == 0
    executed = [e for e in chain.events("order_book", "OrderExecuted", chain.manifest["block"])
                if e.args.owner == wallet.address]
    assert executed and all(e.args.executor == chain.account(1) for e in executed)  # the keeper process
    balance = chain.collateral.functions.balanceOf(wallet.address).call()
    assert 990 * USDC < balance < 1_000 * USDC  # 1,000 less the trading and execution fees


def test_plain_web3_example_deposits_trades_through_the_keeper_closes_and_withdraws(devnet):  # noqa: F811
    wallet = fresh_wallet(devnet)
    result = subprocess.run(
        [sys.executable, "examples/trade_web3.py", "--rpc-url", devnet.node.url, "--manifest", str(devnet.manifest),
         "--private-key", "0x" + wallet.key.hex()],
        cwd=REPO, env=devnet.node.env, capture_output=True, text=True, timeout=300,
    )
    finished(devnet, wallet, result)
    assert "deposited 1,000 USD: cash 1,000.00 USD" in result.stdout
    assert "bought 0.01 BTC-USD at" in result.stdout and "closed; withdrew" in result.stdout


def test_cast_walkthrough_deposits_and_trades_through_the_keeper(devnet):  # noqa: F811
    for tool in ("cast", "jq"):
        if shutil.which(tool, path=devnet.node.env["PATH"]) is None:
            pytest.fail(f"{tool} is not on PATH: the walkthrough needs it (`make test` installs cast in "
                        "node_modules/.bin)", pytrace=False)
    wallet = fresh_wallet(devnet)
    env = {**devnet.node.env, "RPC_URL": devnet.node.url, "MANIFEST": str(devnet.manifest),
           "PRIVATE_KEY": "0x" + wallet.key.hex()}
    result = subprocess.run(["bash", "examples/cast_walkthrough.sh"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert f"wallet {wallet.address}" in result.stdout and "cash (WAD): 1000000000000000000000" in result.stdout
    chain = devnet.chain
    # the walkthrough leaves its position open (it shows it) and withdraws what is free, less 1 %
    # (a withdrawal of exactly the limit read a block earlier can revert: funding accrues)
    size = chain.exchange.functions.position(wallet.address, 0, BTC).call()[0]
    assert size == WAD // 100
    withdrawn = int(re.search(r"withdrew (\d+) token units", result.stdout).group(1))
    assert chain.collateral.functions.balanceOf(wallet.address).call() == withdrawn > 900 * 10**6
    left = chain.exchange.functions.withdrawable(wallet.address, 0).call()
    assert left < withdrawn * 10**12 * 2 // 100, f"{left / WAD:.2f} USD still free after withdrawing {withdrawn / 1e6:.2f}"


def test_keeper_process_executes_an_lp_deposit_request(devnet):  # noqa: F811
    """The keeper's LP request pass against the node: a deposit request (tokens pulled at once)
    executed by the keeper process at the first round of every market after the vault's delay;
    the shares reach the receiver at the price the execution reports."""
    chain, lp = devnet.chain, devnet.chain.account(8)
    vault = chain.liquidity_vault.functions
    assets = 5_000 * USDC
    fee = vault.lp_params().call()[3]
    chain.transact(chain.collateral.functions.faucet(assets + fee), lp)
    chain.transact(chain.collateral.functions.approve(chain.liquidity_vault.address, assets + fee), lp)
    start = chain.head()
    receipt = chain.transact(vault.request_deposit(assets, lp), lp)
    (requested,) = chain.liquidity_vault.events.DepositRequested().process_receipt(receipt, errors=DISCARD)
    assert chain.collateral.functions.balanceOf(lp).call() == 0  # the assets wait in the vault

    def executed():
        return [e for e in chain.events("liquidity_vault", "DepositExecuted", start)
                if e.args.request_id == requested.args.request_id]

    (done,) = devnet.keeper.wait_for(executed, 60, f"the execution of LP deposit request {requested.args.request_id}")
    assert done.args.executor == chain.account(1)  # the keeper process, not the test
    assert done.args.assets == assets and done.args.shares > 0
    assert vault.balanceOf(lp).call() == done.args.shares
    assert vault.request(requested.args.request_id).call()[0] == "0x" + "00" * 20  # no longer open
