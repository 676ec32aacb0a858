"""`make compile` (perpdex/build.py) compiles each contract once and writes it for ape's tools
and for titanoboa's: what either deploys is what vyper's standard-JSON compiler (ape-vyper's
way) gives, and a store compiled from other sources is never used."""

import importlib.util
import json
from pathlib import Path

from ethpm_types import ContractType
from vyper.cli.vyper_json import compile_json

from perpdex import build, compiled

AGGREGATOR = "contracts/mocks/MockAggregator.vy"


def ape_manifest() -> dict:
    assert build.APE_MANIFEST.exists(), "no .build/__local__.json: run `make compile` (make test does)"
    return json.loads(build.APE_MANIFEST.read_text())


def test_ape_manifest_holds_what_vyper_standard_json_compiles_with_ape_vypers_settings():
    manifest = ape_manifest()
    (compiler,) = manifest["compilers"]
    settings = {k: v for k, v in compiler["settings"].items() if k != "search_paths"}
    settings["outputSelection"] = {AGGREGATOR: ["abi", "evm.bytecode", "evm.deployedBytecode", "userdoc", "devdoc"]}
    source = (compiled.REPO / AGGREGATOR).read_text()
    # as ape-vyper sends it: the contract and what it may import (ours, and snekmate's, installed)
    sources = {str(p.relative_to(compiled.REPO)): {"content": p.read_text()} for p in compiled.CONTRACTS.rglob("*.vy*")}
    snekmate = Path(next(iter(importlib.util.find_spec("snekmate").submodule_search_locations)))
    for module in snekmate.rglob("*.vy*"):
        sources[str(module.relative_to(snekmate.parent))] = {"content": module.read_text()}
    out = compile_json({"language": "Vyper", "sources": sources, "settings": settings})
    expected = out["contracts"][AGGREGATOR]["MockAggregator"]
    ours = manifest["contractTypes"]["MockAggregator"]
    assert ours["deploymentBytecode"]["bytecode"] == "0x" + expected["evm"]["bytecode"]["object"].removeprefix("0x")
    assert ours["runtimeBytecode"]["bytecode"] == "0x" + expected["evm"]["deployedBytecode"]["object"].removeprefix("0x")
    # the ABI as ape's ContractType keeps it (its field order, its defaults)
    assert ours["abi"] == ContractType(abi=expected["abi"]).model_dump(mode="json", by_alias=True)["abi"]
    assert ours["userdoc"] == expected["userdoc"] and ours["devdoc"] == expected["devdoc"]
    assert ours["sourceId"] == AGGREGATOR and manifest["sources"][AGGREGATOR]["content"] == source


def test_titanoboa_deploys_the_bytecode_ape_deploys():
    manifest = ape_manifest()
    stored = compiled.load()
    assert len(stored) == len(compiled.deployable_sources()) == len(manifest["contractTypes"]) == 11
    by_name = {Path(key[1]).stem: data for key, data in stored.items()}
    for name, contract_type in manifest["contractTypes"].items():
        assert "0x" + by_name[name].bytecode.hex() == contract_type["deploymentBytecode"]["bytecode"], name
        assert "0x" + by_name[name].bytecode_runtime.hex() == contract_type["runtimeBytecode"]["bytecode"], name


def test_a_store_compiled_from_other_sources_is_not_used(tmp_path, monkeypatch):
    store = tmp_path / "titanoboa.pickle"
    path = compiled.CONTRACTS / "mocks" / "MockAggregator.vy"
    compiled.save({path: compiled.compile_contract(path)}, store)
    assert len(compiled.load(store)) == 1
    monkeypatch.setattr(compiled, "fingerprint", lambda: "a contract changed since")
    assert compiled.load(store) == {}
    store.write_bytes(b"cut short")
    assert compiled.load(store) == {}
