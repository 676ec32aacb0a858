"""Deploying twice does nothing twice; the manifest is usable without this repository."""

import json

import pytest

from perpdex.config import DEFAULT_MARKETS_FILE
from perpdex.deploy import Deployer


def test_second_run_does_nothing_and_manifest_is_complete(accounts, chain, tmp_path):
    first = Deployer(accounts[0], manifest_dir=tmp_path)
    deployment = first.run()
    assert any(a.startswith("deployed exchange") for a in first.actions)
    manifest = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())
    assert manifest["chain_id"] == chain.chain_id and manifest["block"] is not None
    for name in (
        "vault", "exchange", "oracle", "liquidity_vault", "insurance_fund", "collateral", "liquidator", "order_book",
    ):
        entry = manifest["contracts"][name]
        assert entry["address"] == getattr(deployment, name).address
        assert any(item.get("name") for item in entry["abi"])  # a real ABI
    assert [m["symbol"] for m in manifest["markets"]] == ["BTC-USD", "ETH-USD"]
    assert all(len(m["aggregators"]) == 1 for m in manifest["markets"])

    nonce = accounts[0].nonce
    second = Deployer(accounts[0], manifest_dir=tmp_path)
    again = second.run()
    assert second.actions == []
    assert accounts[0].nonce == nonce  # not a single transaction
    assert again.exchange.address == deployment.exchange.address


def test_interrupted_deployment_resumes(accounts, chain, tmp_path, monkeypatch):
    """A deployment that died after some contracts completes without redeploying them."""
    original = Deployer._contract

    def dies_at_liquidator(self, name, contract_type, *args):
        if name == "liquidator":
            raise ConnectionError("RPC went away")
        return original(self, name, contract_type, *args)

    monkeypatch.setattr(Deployer, "_contract", dies_at_liquidator)
    with pytest.raises(ConnectionError):
        Deployer(accounts[0], manifest_dir=tmp_path).run()
    kept = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())["contracts"]
    assert "exchange" in kept and "liquidator" not in kept

    monkeypatch.setattr(Deployer, "_contract", original)
    resumed = Deployer(accounts[0], manifest_dir=tmp_path)
    d = resumed.run()
    assert d.exchange.address == kept["exchange"]["address"]  # not deployed again
    assert not any(a.startswith("deployed exchange") for a in resumed.actions)
    assert any(a.startswith("deployed liquidator") for a in resumed.actions)
    assert d.vault.liquidator() == d.exchange.liquidator() == d.liquidator.address


def test_deployment_interrupted_before_the_order_book_resumes_and_wires_it(accounts, chain, tmp_path, monkeypatch):
    """The order book is the last contract: a run that died there leaves a deployment without
    it (the exchange cannot execute trades yet); the next run deploys and wires it."""
    original = Deployer._contract

    def dies_at_order_book(self, name, contract_type, *args):
        if name == "order_book":
            raise ConnectionError("RPC went away")
        return original(self, name, contract_type, *args)

    monkeypatch.setattr(Deployer, "_contract", dies_at_order_book)
    with pytest.raises(ConnectionError):
        Deployer(accounts[0], manifest_dir=tmp_path).run()
    monkeypatch.setattr(Deployer, "_contract", original)
    resumed = Deployer(accounts[0], manifest_dir=tmp_path)
    d = resumed.run()
    assert [a for a in resumed.actions if a.startswith("deployed")] == [f"deployed order_book at {d.order_book.address}"]
    assert "exchange order book" in resumed.actions and "vault order book" in resumed.actions
    assert d.exchange.order_book() == d.vault.order_book() == d.order_book.address
    assert d.order_book.ORACLE() == d.oracle.address and d.order_book.EXCHANGE() == d.exchange.address


def test_changed_order_parameters_are_applied_on_the_next_run(accounts, chain, tmp_path):
    config = tmp_path / "markets.json"
    raw = json.loads(DEFAULT_MARKETS_FILE.read_text())
    config.write_text(json.dumps(raw))
    Deployer(accounts[0], config, manifest_dir=tmp_path).run()
    raw["orders"].update(execution_fee=1.25, min_order_delay=2)
    config.write_text(json.dumps(raw))
    again = Deployer(accounts[0], config, manifest_dir=tmp_path)
    d = again.run()
    assert again.actions == ["order parameters"]
    assert tuple(d.order_book.order_params()) == (2, 3600, 1_250_000_000_000_000_000, 16)


def test_inconsistent_manifest_is_refused(accounts, chain, tmp_path):
    Deployer(accounts[0], manifest_dir=tmp_path).run()
    manifest_file = tmp_path / f"{chain.chain_id}.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["contracts"]["insurance_fund"]  # the vault is wired to a fund the manifest forgot
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="inconsistent deployment"):
        Deployer(accounts[0], manifest_dir=tmp_path).run()


def test_a_forgotten_order_book_is_refused_not_wired_twice(accounts, chain, tmp_path):
    Deployer(accounts[0], manifest_dir=tmp_path).run()
    manifest_file = tmp_path / f"{chain.chain_id}.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["contracts"]["order_book"]  # a second order book cannot be wired in
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="exchange order book already points to .*: inconsistent deployment"):
        Deployer(accounts[0], manifest_dir=tmp_path).run()
