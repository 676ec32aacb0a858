"""The keeper's transport over JSON-RPC: what `ape run keeper` runs on a node.

`RpcClient` gives `perpdex.keeper.chain.ChainClient`'s methods over the wallet's client
(perpdex.wallet: one kept-alive HTTP connection, the deployment manifest's ABIs, keys signed
locally or a dev node's unlocked test account). It reads and sends; it decides nothing.

Why not ape's provider: an `ape` process that connects to a network spends about 1.7 s of CPU
before our code runs (its plugins, network and account managers, pandas), and every
transaction through ape builds and validates several objects. The keeper needs eth_call at a
block, eth_getLogs, and sending a transaction it has just simulated; ape stays the transport of
the keeper on ape's own test chain (tests/integration), which speaks no JSON-RPC.

Every transaction is simulated first (the keeper's passes call `simulate_*`, and `send`
estimates its gas on the pending state in the same batch as its nonce); a transaction mined
but reverted (the state moved between the simulation and the block) raises `Reverted`, which
the passes count as a lost race or a refusal like any other revert.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from perpdex.deploy import manifest_path
from perpdex.keeper.chain import INDEXED_EVENTS, ORDER_EVENTS, ChainClient, LogEntry, is_nonce_error
from perpdex.lp_flows import LpRequest
from perpdex.wallet.client import Signer, Wallet, connect
from perpdex.wallet.rpc import Contract, Event, Failure, Reverted, Rpc, RpcError

RECEIPT_TIMEOUT = 120.0  # seconds a sent transaction may take to be mined before the pass fails
ZERO_ADDRESS = "0x" + "00" * 20


class RpcViews:
    """`views.name(*args, block_id=B)`: one eth_call of the view at block B, answered as the
    wallet decodes it (one output as itself, several as a tuple, structs with attributes)."""

    def __init__(self, rpc: Rpc, contract: Contract, sender: str):
        self._rpc, self._contract, self._sender = rpc, contract, sender

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, block_id: int | str = "latest"):
            return _call(self._rpc, self._contract, name, args, self._sender, block_id)

        call.__name__ = name
        return call


def _block(block: int | str) -> str:
    return hex(block) if isinstance(block, int) else block


def _call(rpc: Rpc, contract: Contract, fn: str, args: tuple, sender: str, block: int | str) -> Any:
    tx = {"from": sender, "to": contract.address, "data": contract.calldata(fn, *args)}
    (answer,) = rpc.batch([("eth_call", [tx, _block(block)])])
    if isinstance(answer, Failure):
        answer.raise_()
    return contract.result(fn, args, answer)


def _event(event: Event) -> SimpleNamespace:
    """A decoded event as the passes read it: its arguments as attributes, and `event_name`."""
    return SimpleNamespace(event_name=event.name, **vars(event.args))


class SentReceipt:
    """A mined transaction: its hash and its decoded events."""

    def __init__(self, txn_hash: str, block: int, events: list[Event]):
        self.txn_hash, self.block, self.events = txn_hash, block, events

    def find(self, address: str, *names: str) -> list[SimpleNamespace]:
        return [_event(e) for e in self.events if e.name in names and e.address.lower() == address.lower()]


class RpcClient(ChainClient):
    """The keeper's reads and sends on a node, for the wallet's deployment and signer."""

    def __init__(self, wallet: Wallet):
        self.wallet = wallet
        self.rpc = wallet.rpc
        self.address = wallet.address
        self.account = SimpleNamespace(address=self.address)
        # the keeper reads `exchange.address` and the deployment block; the Lens and the order
        # book are optional (a manifest from before them)
        self.deployment = SimpleNamespace(block=wallet.deploy_block, **wallet.contracts)
        self.order_book = wallet.contracts.get("order_book")
        self._market_ids: list[int] = []
        self._views: dict[str, RpcViews] = {}
        self._aggregators: dict[str, RpcViews] = {}
        self._aggregator_abi = next(
            (entry["abi"] for name, entry in wallet.manifest["contracts"].items()
             if name.startswith("aggregator_") and entry.get("abi")), None)
        self.on_nonce_retry = None
        self.lp_client = RpcLpClient(self)

    @staticmethod
    def revert_reason(err: Exception) -> str | None:
        return err.reason if isinstance(err, Reverted) else None

    @staticmethod
    def is_rpc_error(err: Exception) -> bool:
        return isinstance(err, (RpcError, ConnectionError, TimeoutError, OSError))

    @property
    def chain_id(self) -> int:
        return self.wallet.chain_id

    def view(self, name: str) -> RpcViews:
        views = self._views.get(name)
        if views is None:
            views = self._views[name] = RpcViews(self.rpc, self.wallet.contracts[name], self.address)
        return views

    def head(self) -> tuple[int, int]:
        block = self.rpc.call("eth_getBlockByNumber", ["latest", False])
        return int(block["number"], 16), int(block["timestamp"], 16)

    @property
    def nonce(self) -> int:
        return int(self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), 16)

    # -- indexing --------------------------------------------------------------------------------

    def fetch_logs(self, start: int, stop: int) -> list[LogEntry]:
        wanted = INDEXED_EVENTS + (ORDER_EVENTS if self.order_book is not None else ())
        contracts = {name: self.wallet.contracts[name] for name, _ in wanted}
        topics = sorted({contracts[name].topic(event) for name, event in wanted})
        names = {(contracts[name].address.lower(), event) for name, event in wanted}
        params = {"address": sorted({c.address for c in contracts.values()}), "fromBlock": hex(start),
                  "toBlock": hex(stop), "topics": [topics]}
        by_address = {c.address.lower(): c for c in contracts.values()}
        entries = []
        for log in self.rpc.call("eth_getLogs", [params]):
            contract = by_address.get(log["address"].lower())
            event = contract.decode_log(log) if contract else None
            if event is not None and (event.address.lower(), event.name) in names:
                entries.append(LogEntry(event.name, dict(vars(event.args)), event.block, event.index))
        return entries

    # -- simulations and transactions -------------------------------------------------------------

    def _simulate(self, contract: str, fn: str, *args: Any) -> Any:
        c = self.wallet.contracts[contract]
        return _call(self.rpc, c, fn, args, self.address, "pending")

    def send(self, contract: str, fn: str, *args: Any) -> SentReceipt:
        """Sign and send (gas estimated on the pending state, the pending nonce), then wait for
        the receipt; on a nonce error retry once."""
        try:
            return self._send(contract, fn, args)
        except Exception as err:
            if self.revert_reason(err) is not None or not is_nonce_error(err):
                raise
            if self.on_nonce_retry is not None:
                self.on_nonce_retry(err)
            return self._send(contract, fn, args)

    def _send(self, contract: str, fn: str, args: tuple) -> SentReceipt:
        tx_hash = self.wallet.submit(contract, fn, *args)
        receipt = self.wallet.mined(tx_hash, RECEIPT_TIMEOUT)
        what = f"{contract}.{fn}"
        if receipt is None:
            raise RpcError(f"{what}: transaction {tx_hash} not mined within {RECEIPT_TIMEOUT:g} s")
        block = int(receipt["blockNumber"], 16)
        if int(receipt["status"], 16) != 1:
            raise Reverted(f"{what}: transaction {tx_hash} reverted in block {block} (the state moved after the simulation)")
        return SentReceipt(tx_hash, block, self.wallet.events_of(receipt["logs"]))

    # -- liquidation, ADL, deficits ---------------------------------------------------------------

    def simulate_liquidations(self, batch) -> int:
        return self._simulate("liquidator", "liquidate_many", [(o, s) for o, s in batch])

    def liquidate_many(self, batch):
        return self.send("liquidator", "liquidate_many", [(o, s) for o, s in batch])

    def liquidations(self, receipt: SentReceipt) -> list:
        return receipt.find(self.wallet.liquidator.address, "Liquidation")

    def is_adl_keeper(self, address: str | None = None) -> bool:
        return bool(self.view("liquidator").adl_keeper(address or self.address))

    def simulate_adl(self, call_args: tuple) -> int:
        return self._simulate("liquidator", "auto_deleverage", *call_args)

    def auto_deleverage(self, call_args: tuple):
        return self.send("liquidator", "auto_deleverage", *call_args)

    def adl_events(self, receipt: SentReceipt) -> list:
        return receipt.find(self.wallet.liquidator.address, "AutoDeleveraged")

    def write_off(self, key, market_id: int):
        return self.send("liquidator", "write_off", key[0], key[1], market_id)

    def write_off_events(self, receipt: SentReceipt) -> list:
        return receipt.find(self.wallet.liquidator.address, "DeficitWrittenOff")

    # -- orders ----------------------------------------------------------------------------------

    def _aggregator(self, address: str) -> RpcViews:
        views = self._aggregators.get(address)
        if views is None:
            if self._aggregator_abi is None:
                raise RpcError(f"the manifest {self.wallet.path} records no aggregator ABI")
            views = self._aggregators[address] = RpcViews(self.rpc, Contract(address, self._aggregator_abi), self.address)
        return views

    def simulate_execute_order(self, order_id: int, round_ids: Iterable[int]) -> bool:
        return self._simulate("order_book", "execute_order", order_id, list(round_ids))

    def execute_order(self, order_id: int, round_ids: Iterable[int]):
        return self.send("order_book", "execute_order", order_id, list(round_ids))

    def execute_orders(self, order_ids: list[int], round_ids: list[list[int]]):
        return self.send("order_book", "execute_orders", order_ids, round_ids)

    def simulate_cancel_order(self, order_id: int) -> None:
        self._simulate("order_book", "cancel_order", order_id)

    def cancel_order(self, order_id: int):
        return self.send("order_book", "cancel_order", order_id)

    def refresh_open_interest_room(self):
        return self.send("order_book", "refresh_open_interest_room")

    def order_events(self, receipt: SentReceipt) -> tuple[list, list]:
        address = self.order_book.address
        return receipt.find(address, "OrderExecuted"), receipt.find(address, "OrderCancelled")


class RpcLpClient:
    """`perpdex.keeper.lp_pass.LpClient`'s methods over an `RpcClient`."""

    def __init__(self, client: RpcClient):
        self.client = client

    @property
    def views(self) -> RpcViews:
        return self.client.view("liquidity_vault")

    def last_request_id(self, block: int) -> int:
        return int(self.views.last_request_id(block_id=block))

    def is_lp_executor(self, block: int) -> bool:
        return bool(self.views.lp_executor(self.client.address, block_id=block))

    def request(self, request_id: int, block: int | str) -> LpRequest | None:
        r = self.views.request(request_id, block_id=block)
        if str(r.requester).lower() == ZERO_ADDRESS:
            return None
        return LpRequest(
            str(r.requester), str(r.receiver), bool(r.redemption), int(r.amount), int(r.fee),
            int(r.not_before), int(r.expiry),
        )

    @staticmethod
    def _method(redemption: bool) -> str:
        return "execute_redeem" if redemption else "execute_deposit"

    def simulate_execute(self, action) -> bool:
        rounds = [list(ids) for ids in action.round_ids]
        return self.client._simulate("liquidity_vault", self._method(action.redemption), action.request_id, rounds)

    def execute(self, action):
        rounds = [list(ids) for ids in action.round_ids]
        return self.client.send("liquidity_vault", self._method(action.redemption), action.request_id, rounds)

    def simulate_cancel(self, request_id: int) -> None:
        self.client._simulate("liquidity_vault", "cancel_request", request_id)

    def cancel(self, request_id: int):
        return self.client.send("liquidity_vault", "cancel_request", request_id)

    def events(self, receipt: SentReceipt) -> list:
        return receipt.find(self.client.wallet.liquidity_vault.address, "DepositExecuted", "RedeemExecuted",
                            "RequestCancelled")


def connect_keeper(url: str | None, deployments: str, signer: Signer) -> Wallet:
    """The keeper's wallet: the node at `url` (default as the wallet's), the manifest
    <deployments>/<chain_id>.json of that node's chain."""
    from perpdex.wallet.client import rpc_url
    from perpdex.wallet.units import CliError

    url = rpc_url(url)
    rpc = Rpc(url)
    try:
        chain_id = int(rpc.call("eth_chainId"), 16)
    except RpcError as err:
        raise CliError(f"cannot reach a node at {url} ({err}); start one (`make devnet`) or give --rpc-url") from None
    finally:
        rpc.close()
    return connect(url, str(manifest_path(chain_id, deployments)), signer)
