"""A client that is not ours: plain web3.py, the manifest's addresses and ABIs, its own keys
(tests/manifest_client.py), on ape's embedded chain. tests/anvil runs the same client against
a real anvil node."""

import json

from manifest_client import deposit_and_trade

from perpdex.deploy import Deployer
from perpdex.fixed_point import WAD


def test_plain_web3_client_deposits_commits_and_executes_from_the_manifest(accounts, chain, tmp_path):
    owner = accounts[0]
    d = Deployer(owner, manifest_dir=tmp_path, seed_liquidity_usd=1_000_000).run()
    manifest = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())
    w3 = chain.provider.web3  # only the RPC connection is borrowed
    btc_feed = d.aggregators[0][0]
    published = []

    def publish_round() -> None:  # what the devnet pusher does: the next round, a second later
        chain.pending_timestamp += 1
        btc_feed.update_answer(btc_feed.latestAnswer(), sender=owner)
        published.append(btc_feed.latestRound())

    quote = d.exchange.fill_price(0, WAD // 20)
    fill = deposit_and_trade(w3, manifest, lambda address: owner.transfer(address, 10**18), publish_round)
    assert published and fill["fill_price"] == quote  # the same answer, the same skew: the quoted price
    assert fill["executor"] == fill["owner"]  # nobody else executed: the client did, and earned the fee
    assert d.vault.cash(fill["owner"], 0) > 0 and d.vault.order_escrow_cash() == 0
