"""A client that is not ours: plain web3.py, the manifest's addresses and ABIs, its own keys
(tests/manifest_client.py), on ape's embedded chain. tests/anvil runs the same client against
a real anvil node."""

import json

from manifest_client import deposit_and_trade

from perpdex.deploy import Deployer


def test_plain_web3_client_deposits_and_trades_from_the_manifest(accounts, chain, tmp_path):
    Deployer(accounts[0], manifest_dir=tmp_path).run()
    manifest = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())
    w3 = chain.provider.web3  # only the RPC connection is borrowed
    deposit_and_trade(w3, manifest, lambda address: accounts[0].transfer(address, 10**18))
