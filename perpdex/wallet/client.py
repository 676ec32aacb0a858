"""The wallet's view of a deployment: the manifest's contracts on one node, the signing key,
batched reads, and writes that are simulated before they are signed.

Nothing here imports ape or web3.py: a command starts, reads what it needs in one JSON-RPC
batch, and (for a write) simulates with eth_call, signs locally and waits for the receipt.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpdex.wallet.abi import to_checksum
from perpdex.wallet.rpc import Contract, Event, Failure, Reverted, Rpc, RpcError
from perpdex.wallet.units import CliError

DEPLOYMENTS_DIR = Path(__file__).resolve().parents[2] / "deployments"
DEFAULT_RPC_URL = "http://127.0.0.1:8545"
APE_ACCOUNTS = Path(os.environ.get("APE_DATA_FOLDER", Path.home() / ".ape")) / "accounts"
GAS_MARGIN = 1.25  # the estimate x this: the state may move between the simulation and the block
RECEIPT_TIMEOUT = 60.0
# the calls a wallet makes on the collateral, for a manifest that records no ABI for it
ERC20_ABI = [
    {"type": "function", "name": name, "stateMutability": mutability,
     "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(inputs)],
     "outputs": [{"name": "", "type": out} for out in outputs]}
    for name, mutability, inputs, outputs in (
        ("balanceOf", "view", ["address"], ["uint256"]),
        ("allowance", "view", ["address", "address"], ["uint256"]),
        ("decimals", "view", [], ["uint8"]),
        ("approve", "nonpayable", ["address", "uint256"], ["bool"]),
    )
]


def rpc_url(given: str | None) -> str:
    """--rpc-url, else $PERPDEX_RPC_URL, else $APE_FOUNDRY_HOST (what the devnet exports), else
    the default anvil port."""
    return given or os.environ.get("PERPDEX_RPC_URL") or os.environ.get("APE_FOUNDRY_HOST") or DEFAULT_RPC_URL


# =============================================================================================
# Keys
# =============================================================================================


@dataclass
class Signer:
    """The wallet: a local key (signs here), or a dev node's unlocked test account (the node
    signs: `TEST::<n>` is the node's n-th account, as anvil and ape number them)."""

    address: str | None
    key: Any = None  # an eth_account LocalAccount
    test_index: int | None = None

    def sign(self, tx: dict) -> str:
        return "0x" + self.key.sign_transaction(tx).raw_transaction.hex()


def load_signer(account: str | None, private_key: str | None) -> Signer | None:
    """The wallet's key: `--private-key` (or $PERPDEX_PRIVATE_KEY), `--account TEST::<n>` (the
    dev node's n-th unlocked test account) or `--account ALIAS` (an ape keystore; its passphrase
    from $APE_ACCOUNTS_<ALIAS>_PASSPHRASE or a prompt). None when none is given. Checked before
    any connection."""
    private_key = private_key or os.environ.get("PERPDEX_PRIVATE_KEY")
    if private_key:
        from eth_account import Account

        try:
            local = Account.from_key(private_key)
        except (ValueError, TypeError):
            raise CliError("the private key is not 32 bytes of hex") from None
        return Signer(local.address, local)
    if not account:
        return None
    if account.upper().startswith("TEST::"):
        index = account[6:]
        if not index.isdigit():
            raise CliError(f"--account {account!r}: TEST::<n> takes a number, e.g. TEST::2")
        return Signer(None, test_index=int(index))
    keystore = APE_ACCOUNTS / f"{account}.json"
    if not keystore.exists():
        raise CliError(
            f"--account {account!r}: no keystore {keystore}; use TEST::<n> on a devnet, an ape account alias "
            "(`ape accounts import`), or --private-key"
        )
    from eth_account import Account

    passphrase = os.environ.get(f"APE_ACCOUNTS_{account}_PASSPHRASE")
    if passphrase is None:
        import getpass

        passphrase = getpass.getpass(f"passphrase of {account}: ")
    try:
        local = Account.from_key(Account.decrypt(json.loads(keystore.read_text()), passphrase))
    except ValueError:
        raise CliError(f"wrong passphrase for {account}") from None
    return Signer(local.address, local)


# =============================================================================================
# The deployment on a node
# =============================================================================================


@dataclass(frozen=True)
class Market:
    id: int
    symbol: str
    aggregators: tuple[str, ...]


@dataclass
class Receipt:
    tx: str
    block: int
    gas_used: int
    events: list[Event] = field(default_factory=list)

    def find(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]


class Wallet:
    """A deployment (from its manifest) on a node, and optionally a signer."""

    def __init__(self, rpc: Rpc, manifest: dict, path: Path, signer: Signer | None = None):
        self.rpc, self.manifest, self.path, self.signer = rpc, manifest, path, signer
        self.chain_id = int(manifest["chain_id"])
        self.contracts: dict[str, Contract] = {}
        for name, entry in manifest["contracts"].items():
            abi = entry.get("abi") or (ERC20_ABI if name == "collateral" else [])
            self.contracts[name] = Contract(entry["address"], abi)
        self.markets = [Market(int(m["id"]), m["symbol"], tuple(m.get("aggregators", []))) for m in manifest["markets"]]
        self.deploy_block = int(manifest.get("block") or 0)

    def __getattr__(self, name: str) -> Contract:
        try:
            return self.__dict__["contracts"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def address(self) -> str:
        if self.signer is None:
            raise CliError("this command needs a wallet: give --account (TEST::<n> on a devnet, or an ape alias) "
                           "or --private-key")
        return self.signer.address

    def symbol(self, market_id: int) -> str:
        return next((m.symbol for m in self.markets if m.id == market_id), str(market_id))

    # -- reads -----------------------------------------------------------------------------

    def reads(self, calls: list[tuple[str, str, tuple]], block: str = "latest", sender: str | None = None) -> list:
        """Each (contract, function, args) in one batch; a refused call's slot holds its
        `Reverted` exception (the caller decides), a node error raises."""
        requests = []
        for contract, fn, args in calls:
            tx = {"to": self.contracts[contract].address, "data": self.contracts[contract].calldata(fn, *args)}
            if sender:
                tx["from"] = sender
            requests.append(("eth_call", [tx, block]))
        results = []
        for (contract, fn, args), answer in zip(calls, self.rpc.batch(requests)):
            if isinstance(answer, Failure):
                error = answer.exception()
                if not isinstance(error, Reverted):
                    raise CliError(f"the node refused a call to {contract}.{fn}: {error}")
                results.append(error)
            else:
                results.append(self.contracts[contract].result(fn, args, answer))
        return results

    def read(self, contract: str, fn: str, *args: Any) -> Any:
        """One view; a refusal raises `Reverted`."""
        (value,) = self.reads([(contract, fn, args)])
        if isinstance(value, Reverted):
            raise value
        return value

    def chain_time(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def logs(self, names: list[str], start: int, stop: int | str = "latest", topics: list | None = None) -> list[Event]:
        """Decoded events of the named contracts in blocks start..stop, in chain order."""
        by_address = {self.contracts[n].address.lower(): self.contracts[n] for n in names}
        params = {"address": [self.contracts[n].address for n in names], "fromBlock": hex(start),
                  "toBlock": stop if isinstance(stop, str) else hex(stop)}
        if topics:
            params["topics"] = topics
        events = []
        for log in self.rpc.call("eth_getLogs", [params]):
            contract = by_address.get(log["address"].lower())
            event = contract.decode_log(log) if contract else None
            if event is not None:
                events.append(event)
        return events

    # -- writes ----------------------------------------------------------------------------

    def simulate(self, contract: str, fn: str, *args: Any) -> tuple[dict, list]:
        """eth_call of the transaction on the pending state with the wallet as sender, with what
        the transaction needs (gas estimate, nonce, gas price) in the same batch. Raises
        `Reverted` with the contract's reason when it would fail."""
        c = self.contracts[contract]
        tx = {"from": self.address, "to": c.address, "data": c.calldata(fn, *args)}
        answers = self.rpc.batch([
            ("eth_call", [tx, "pending"]), ("eth_estimateGas", [tx, "pending"]),
            ("eth_getTransactionCount", [self.address, "pending"]), ("eth_gasPrice", []),
        ])
        for answer in answers:
            if isinstance(answer, Failure):
                answer.raise_()
        return tx, answers

    def send(self, contract: str, fn: str, *args: Any, timeout: float = RECEIPT_TIMEOUT) -> Receipt:
        """Simulate, then sign and send, then wait (at most `timeout` s) for the receipt. A
        refusal raises `Reverted` before anything is signed."""
        return self.wait_receipt(self.submit(contract, fn, *args), f"{contract}.{fn}", timeout)

    def submit(self, contract: str, fn: str, *args: Any) -> str:
        """Simulate, then sign and send; the transaction's hash. A refusal raises `Reverted`
        before anything is signed."""
        tx, (_, gas, nonce, gas_price) = self.simulate(contract, fn, *args)
        gas = int(int(gas, 16) * GAS_MARGIN)
        if self.signer.key is None:  # the node's unlocked test account: the node signs
            tx_hash = self.rpc.call("eth_sendTransaction", [{**tx, "gas": hex(gas), "gasPrice": gas_price, "nonce": nonce}])
        else:
            tx_hash = self.rpc.call("eth_sendRawTransaction", [self.signer.sign({
                "to": tx["to"], "data": tx["data"], "value": 0, "chainId": self.chain_id, "nonce": int(nonce, 16),
                "gas": gas, "gasPrice": int(gas_price, 16),
            })])
        return tx_hash

    def mined(self, tx_hash: str, timeout: float) -> dict | None:
        """The transaction's raw receipt once mined; None after `timeout` s without one."""
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            receipt = self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None and receipt.get("blockNumber"):
                return receipt
            if time.monotonic() > deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def events_of(self, logs: list[dict]) -> list[Event]:
        """The deployment's events among raw logs (a receipt's)."""
        by_address = {c.address.lower(): c for c in self.contracts.values()}
        events = []
        for log in logs:
            contract = by_address.get(log["address"].lower())
            event = contract.decode_log(log) if contract else None
            if event is not None:
                events.append(event)
        return events

    def wait_receipt(self, tx_hash: str, what: str, timeout: float) -> Receipt:
        receipt = self.mined(tx_hash, timeout)
        if receipt is None:
            raise CliError(f"{what}: transaction {tx_hash} sent, but not mined within {timeout:g} s; "
                           "check it later (the node may not be mining)")
        if int(receipt["status"], 16) != 1:
            raise CliError(f"{what}: transaction {tx_hash} was mined but reverted (the state moved after the "
                           "simulation); nothing changed but the gas")
        return Receipt(tx_hash, int(receipt["blockNumber"], 16), int(receipt["gasUsed"], 16), self.events_of(receipt["logs"]))


def connect(url: str | None, deployment: str | None, signer: Signer | None) -> Wallet:
    """The wallet on the node at `url` with the manifest `deployment` (default
    deployments/<chain_id>.json of that node); refuses a manifest of another chain or one whose
    contracts are not on this node (a restarted devnet)."""
    url = rpc_url(url)
    rpc = Rpc(url)
    try:
        answers = rpc.batch([("eth_chainId", []), ("eth_accounts", [])])
    except RpcError as err:
        raise CliError(f"cannot reach a node at {url} ({err}); start one (`make devnet`) or give --rpc-url") from None
    if isinstance(answers[0], Failure):
        raise CliError(f"the node at {url} did not give its chain id: {answers[0].error.get('message')}")
    chain_id = int(answers[0], 16)
    if signer is not None and signer.test_index is not None:
        unlocked = answers[1] if isinstance(answers[1], list) else []
        if signer.test_index >= len(unlocked):
            raise CliError(f"TEST::{signer.test_index}: the node at {url} has {len(unlocked)} unlocked test accounts "
                           "(TEST::<n> is for a dev node such as anvil); elsewhere use an ape alias or --private-key")
        signer.address = to_checksum(unlocked[signer.test_index])
    path = Path(deployment) if deployment else DEPLOYMENTS_DIR / f"{chain_id}.json"
    if not path.exists():
        raise CliError(f"no deployment manifest at {path}: deploy first (`make devnet` or `ape run deploy`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CliError(f"{path} is not a JSON manifest: {err}") from None
    if int(manifest.get("chain_id", -1)) != chain_id:
        raise CliError(f"{path} is for chain {manifest.get('chain_id')}, the node at {url} is chain {chain_id}")
    missing = [n for n in ("collateral", "vault", "exchange", "liquidator", "order_book") if n not in manifest.get("contracts", {})]
    if missing:
        raise CliError(f"{path} is incomplete (missing {', '.join(missing)}): deploy again")
    wallet = Wallet(rpc, manifest, path, signer)
    codes = rpc.batch([("eth_getCode", [wallet.contracts[n].address, "latest"]) for n in ("exchange", "order_book")])
    if any(isinstance(c, Failure) or c in (None, "0x") for c in codes):
        raise CliError(f"no perpdex contracts at the addresses of {path} on the node at {url}: the manifest is stale "
                       "(a restarted devnet?); deploy again")
    return wallet
