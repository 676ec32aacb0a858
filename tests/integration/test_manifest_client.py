"""A client that is not ours: plain web3.py, the manifest's addresses and ABIs, its own keys."""

import json

from eth_account import Account

from perpdex.deploy import Deployer

WAD = 10**18


def test_plain_web3_client_deposits_and_trades_from_the_manifest(accounts, chain, tmp_path):
    Deployer(accounts[0], manifest_dir=tmp_path).run()
    manifest = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())
    w3 = chain.provider.web3  # only the RPC connection is borrowed
    contract = {
        name: w3.eth.contract(address=entry["address"], abi=entry["abi"])
        for name, entry in manifest["contracts"].items()
        if entry["abi"]
    }
    wallet = Account.create()
    accounts[0].transfer(wallet.address, 10**18)
    nonce = w3.eth.get_transaction_count(wallet.address)

    def send(call) -> dict:
        nonlocal nonce
        tx = call.build_transaction({"from": wallet.address, "nonce": nonce, "gas": 1_000_000, "chainId": chain.chain_id})
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
    (trade,) = exchange.events.Trade().process_receipt(receipt)
    assert trade.args.fill_price == quote and trade.args.new_size == WAD // 20
    size, entry, _, _ = exchange.functions.position(wallet.address, 0, btc).call()
    assert (size, entry) == (WAD // 20, quote)
