"""Deploying twice does nothing twice; the manifest is usable without this repository."""

import json

import pytest

from perpdex.deploy import Deployer


def test_second_run_does_nothing_and_manifest_is_complete(accounts, chain, tmp_path):
    first = Deployer(accounts[0], manifest_dir=tmp_path)
    deployment = first.run()
    assert any(a.startswith("deployed exchange") for a in first.actions)
    manifest = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())
    assert manifest["chain_id"] == chain.chain_id and manifest["block"] is not None
    for name in ("vault", "exchange", "oracle", "liquidity_vault", "insurance_fund", "collateral", "liquidator"):
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


def test_inconsistent_manifest_is_refused(accounts, chain, tmp_path):
    Deployer(accounts[0], manifest_dir=tmp_path).run()
    manifest_file = tmp_path / f"{chain.chain_id}.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["contracts"]["insurance_fund"]  # the vault is wired to a fund the manifest forgot
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="inconsistent deployment"):
        Deployer(accounts[0], manifest_dir=tmp_path).run()
