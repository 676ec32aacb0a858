"""Deploying twice does nothing twice; the manifest is usable without this repository; the
handover to the timelock resumes like any other step, and settings changed after it go
through the timelock."""

import json

import pytest

from perpdex.config import DEFAULT_MARKETS_FILE
from perpdex.deploy import OWNED_CONTRACTS, Deployer, TimelockPlan, exit_queue


def test_second_run_does_nothing_and_manifest_is_complete(accounts, chain, tmp_path):
    first = Deployer(accounts[0], manifest_dir=tmp_path)
    deployment = first.run()
    assert any(a.startswith("deployed exchange") for a in first.actions)
    manifest = json.loads((tmp_path / f"{chain.chain_id}.json").read_text())
    assert manifest["chain_id"] == chain.chain_id and manifest["block"] is not None
    for name in (
        "vault", "exchange", "oracle", "liquidity_vault", "insurance_fund", "collateral", "liquidator", "order_book",
        "timelock",
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
    assert [a for a in resumed.actions if a.startswith("deployed")] == [
        f"deployed order_book at {d.order_book.address}", f"deployed timelock at {d.timelock.address}",
    ]
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
    # the timelock owns the order book now: the change went through it (2 s on a local network)
    assert again.actions == ["through the timelock (executed): order parameters"]
    assert tuple(d.order_book.order_params()) == (2, 3600, 1_250_000_000_000_000_000, 16)


def test_a_market_added_after_the_handover_is_listed_through_the_timelock(accounts, chain, tmp_path):
    config = tmp_path / "markets.json"
    raw = json.loads(DEFAULT_MARKETS_FILE.read_text())
    config.write_text(json.dumps({**raw, "markets": raw["markets"][:1]}))
    first = Deployer(accounts[0], config, manifest_dir=tmp_path).run()
    assert first.exchange.market_count() == 1 and first.exchange.owner() == first.timelock.address
    config.write_text(json.dumps(raw))
    again = Deployer(accounts[0], config, manifest_dir=tmp_path)
    d = again.run()
    assert again.actions[-1] == "through the timelock (executed): listed ETH-USD"
    assert d.exchange.market_count() == 2 and d.exchange.market_symbol(1) == "ETH-USD"
    (listing,) = [e for e in d.timelock.CallExecuted.range(chain.blocks.head.number, chain.blocks.head.number + 1)]
    assert listing.target == d.exchange.address


def test_interrupted_handover_resumes(accounts, chain, tmp_path, monkeypatch):
    """A run that died after offering some ownerships: the next run offers the rest and the
    timelock accepts them all in one operation."""
    original = Deployer._contract

    def dies_after_timelock(self, name, contract_type, *args):
        instance = original(self, name, contract_type, *args)
        if name == "timelock":  # the exchange offered, then the connection is lost
            exchange = self.project.Exchange.at(self.manifest["contracts"]["exchange"]["address"])
            exchange.transfer_ownership(instance.address, sender=self.account)
            raise ConnectionError("RPC went away")
        return instance

    monkeypatch.setattr(Deployer, "_contract", dies_after_timelock)
    with pytest.raises(ConnectionError):
        Deployer(accounts[0], manifest_dir=tmp_path).run()
    monkeypatch.setattr(Deployer, "_contract", original)
    resumed = Deployer(accounts[0], manifest_dir=tmp_path)
    d = resumed.run()
    assert "exchange ownership offered to the timelock" not in resumed.actions
    assert "vault ownership offered to the timelock" in resumed.actions
    assert all(getattr(d, name).owner() == d.timelock.address for name in OWNED_CONTRACTS)
    assert d.timelock.get_minimum_delay() == 2


def test_roles_of_the_plan_replace_the_deploying_account(accounts, chain, tmp_path):
    deployer, multisig, guardian = accounts[0], accounts[4], accounts[5]
    plan = TimelockPlan(delay=60, proposers=(multisig.address,), cancellers=(guardian.address,))
    d = Deployer(deployer, manifest_dir=tmp_path, timelock=plan).run()
    tl = d.timelock
    assert tl.get_minimum_delay() == 60
    assert tl.hasRole(tl.PROPOSER_ROLE(), multisig) and tl.hasRole(tl.EXECUTOR_ROLE(), multisig)
    assert tl.hasRole(tl.CANCELLER_ROLE(), guardian) and not tl.hasRole(tl.PROPOSER_ROLE(), guardian)
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE", "DEFAULT_ADMIN_ROLE"):
        assert not tl.hasRole(getattr(tl, role)(), deployer), role
    # a later setting cannot be sent by the deploying account: it lists the calls for a proposer
    config = tmp_path / "markets.json"
    raw = json.loads(DEFAULT_MARKETS_FILE.read_text())
    raw["orders"]["execution_fee"] = 2
    config.write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match="(?s)is not a proposer of the timelock .*order parameters"):
        Deployer(deployer, config, manifest_dir=tmp_path, timelock=plan).run()


def test_a_short_delay_is_refused_off_local_networks(accounts, chain, tmp_path):
    """On a non-local network the delay must be at least 24 h and longer than the longest exit
    queue (an LP's cooldown + request lifetime under the hard bounds: 13 h)."""
    deployer = Deployer(accounts[0], manifest_dir=tmp_path, timelock=TimelockPlan(delay=12 * 3600))
    d = deployer.run()  # a local network: any delay of at least 1 s is accepted
    queues = exit_queue(d.contracts, deployer.markets)
    assert queues["LP redemption"] == 13 * 3600 and queues["trader close"] == 600 + 3600
    deployer.local = False
    with pytest.raises(SystemExit, match=r"timelock delay 43,200 s is too short .* 86,400 s \(24 h\) .* the LP "
                                         r"redemption \(46,800 s"):
        deployer.check_delay(d)
    deployer.plan = TimelockPlan()
    assert deployer.timelock_delay() == 86_400
    deployer.check_delay(d)  # the default passes


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
