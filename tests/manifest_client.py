"""A client that is not ours: plain web3.py, the deployment manifest's addresses and ABIs, and
its own key. Nothing from perpdex or ape. Used on ape's embedded chain
(tests/integration/test_manifest_client.py) and on a real anvil node (tests/anvil)."""

from __future__ import annotations

from collections.abc import Callable

from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

WAD = 10**18


def deposit_and_trade(w3: Web3, manifest: dict, fund_gas: Callable[[str], None]) -> None:
    """A fresh wallet takes devnet USDC from the token's faucet, deposits 5,000 into
    sub-account 0 and buys 0.05 BTC at the quoted price; asserts each outcome on chain.
    `fund_gas(address)` gives the wallet ether for gas."""
    chain_id = w3.eth.chain_id
    assert manifest["chain_id"] == chain_id
    contract = {
        name: w3.eth.contract(address=entry["address"], abi=entry["abi"])
        for name, entry in manifest["contracts"].items()
        if entry["abi"]
    }
    wallet = Account.create()
    fund_gas(wallet.address)
    nonce = w3.eth.get_transaction_count(wallet.address)

    def send(call) -> dict:
        nonlocal nonce
        tx = call.build_transaction({"from": wallet.address, "nonce": nonce, "gas": 1_000_000, "chainId": chain_id})
        nonce += 1
        signed = wallet.sign_transaction(tx)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        assert receipt.status == 1
        return receipt

    usdc, vault, exchange = contract["collateral"], contract["vault"], contract["exchange"]
    send(usdc.functions.faucet(5_000 * 10**6))  # the devnet token's faucet
    send(usdc.functions.approve(vault.address, 2**256 - 1))
    send(vault.functions.deposit(0, 5_000 * 10**6))
    assert vault.functions.cash(wallet.address, 0).call() == 5_000 * WAD

    btc = next(m for m in manifest["markets"] if m["symbol"] == "BTC-USD")["id"]
    quote = exchange.functions.fill_price(btc, WAD // 20).call()
    receipt = send(exchange.functions.trade(0, btc, WAD // 20, quote))
    (trade,) = exchange.events.Trade().process_receipt(receipt, errors=DISCARD)  # other contracts' logs
    assert trade.args.fill_price == quote and trade.args.new_size == WAD // 20
    size, entry, _, _ = exchange.functions.position(wallet.address, 0, btc).call()
    assert size == WAD // 20
    assert abs(entry - quote) <= 20  # entry = open notional (fill x size, rounded to the wei) / size
