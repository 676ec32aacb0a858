"""The trader's runbook of README.md on a real anvil node, with the wallet CLI run as a person
runs it (a process per command, the node found through $APE_FOUNDRY_HOST as the devnet
exports it) and the devnet's keeper as a process executing the orders: the README's steps
verbatim (faucet 10000, deposit 10000, open BTC-USD 0.5 --slippage 0.5, positions, history,
close BTC-USD, withdraw all).

Each step asserts what the trader reads on the screen and what the chain holds."""

from __future__ import annotations

import re

import pytest
from anvil_tools import USDC, WAD
from cli_tools import TRADER, devnet, wallet  # noqa: F401  (fixture)

pytestmark = pytest.mark.anvil
BTC = 0


def test_runbook_faucet_deposit_trade_positions_history_close_withdraw(devnet):  # noqa: F811
    chain = devnet.chain
    me = chain.account(TRADER)
    usdc, vault, exchange = chain.collateral.functions, chain.vault.functions, chain.exchange.functions

    out = wallet(devnet, "faucet", "10000").stdout
    assert "minted 10,000.00 USD of devnet collateral" in out
    assert usdc.balanceOf(me).call() == 10_000 * USDC

    out = wallet(devnet, "deposit", "10000").stdout
    assert "deposited 10,000.00 USD, sub-account 0: cash now 10,000.00 USD" in out
    assert vault.cash(me, 0).call() == 10_000 * WAD

    # a market order: committed, executed by the keeper process at the next round, printed
    out = wallet(devnet, "open", "BTC-USD", "0.5", "--slippage", "0.5").stdout
    assert "committed order 0x" in out and "waiting up to 60 s for a keeper" in out
    keeper = chain.account(1)
    assert f"executed by {keeper}" in out and "bought 0.5 BTC-USD at" in out and "position now +0.5000" in out
    size, entry, _, _ = exchange.position(me, 0, BTC).call()
    assert size == WAD // 2
    fill = re.search(r"bought 0\.5 BTC-USD at ([\d,]+\.\d+)", out).group(1)
    assert fill == f"{entry / WAD:,.2f}"

    out = wallet(devnet, "positions").stdout
    row = next(line for line in out.splitlines() if "BTC-USD" in line)
    liquidation = chain.liquidator.functions.liquidation_price(me, 0, BTC).call()
    assert "+0.5000" in row and fill in row and f"{liquidation / WAD:,.2f}" in row
    cash = vault.cash(me, 0).call()
    assert f"{cash / WAD:,.2f}" in out  # the account table: cash after the fee

    out = wallet(devnet, "history").stdout
    assert "deposit     +10,000.00 USD" in out
    assert f"bought 0.5 BTC-USD at {fill}; fee 12.00" in out  # taker 0.06 % of ~20,000 USD
    assert "committed: market buy 0.5 BTC-USD" in out and "executed at" in out

    out = wallet(devnet, "close", "BTC-USD").stdout
    assert "market sell 0.5 BTC-USD" in out and "reduce-only" in out and "position now +0.0000" in out
    assert exchange.position(me, 0, BTC).call()[0] == 0

    free = exchange.withdrawable(me, 0).call()
    out = wallet(devnet, "withdraw", "all").stdout
    assert f"withdrew {free // 10**12 / USDC:,.2f} USD" in out
    assert usdc.balanceOf(me).call() == free // 10**12
    # the round trip cost the fees: 12 to open (taker 0.06 %), 4 to close (maker 0.02 %: it
    # reduced the skew), two execution fees of 0.50
    assert 10_000 * USDC - usdc.balanceOf(me).call() == pytest.approx(17 * USDC, abs=USDC // 10)


def test_refusals_send_nothing_and_say_why_with_numbers(devnet):  # noqa: F811
    chain = devnet.chain
    me = chain.account(TRADER)
    nonce = chain.w3.eth.get_transaction_count(me)

    refused = wallet(devnet, "deposit", "-5", ok=False)
    assert refused.returncode == 1 and "AMOUNT must be positive" in refused.stderr

    refused = wallet(devnet, "withdraw", "1000000", ok=False)
    assert refused.returncode == 1
    assert "more than the free collateral of sub-account 0" in refused.stderr and "Nothing was sent" in refused.stderr

    wallet(devnet, "deposit", "100")
    refused = wallet(devnet, "open", "BTC-USD", "1", ok=False)
    assert refused.returncode == 1 and "the margin allows at most 0.0" in refused.stderr
    assert "Traceback" not in refused.stderr and "0x08c379a0" not in refused.stderr
    # the deposit's approve and deposit were the only transactions
    assert chain.w3.eth.get_transaction_count(me) == nonce + 2
