"""The keeper's view calls as plain eth_calls: the ape transport's reads without ape's per-call
machinery.

A keeper pass reads 20-40 views (globals, markets, deficits, feeds, rounds, accounts), every
pass, every block. Through ape each view call also fetches the contract's code (to check it is
a contract) and builds and validates a transaction object: two RPC round trips and about 5 ms
of CPU per view, most of a pass's cost on an idle chain. `Views(contract)` calls the same views
from the same ABI in one `eth_call` each, encoded and decoded with eth_abi, and answers as ape
does: one output as itself, several as a tuple, a struct as a named tuple (attributes by field
name), addresses checksummed. A revert raises `ViewReverted` with the contract's reason;
any other error answer of a node raises ape's `ProviderError` (transient RPC trouble to the
keeper). A provider without web3 gets ape's own call.
"""

from __future__ import annotations

import re
from collections import namedtuple
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from perpdex.wallet.rpc import is_revert, revert_reason

_ARRAY = re.compile(r"^(.*)\[(\d*)\]$")


class ViewReverted(Exception):
    """A view call the contract refused, with its reason string."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _shaper(abi_type):
    """A function turning eth_abi's decoded value of `abi_type` into what ape answers."""
    type_str = abi_type.type
    array = _ARRAY.match(type_str)
    if array:
        element = abi_type.model_copy(update={"type": array.group(1)})
        inner = _shaper(element)
        return lambda value: [inner(v) for v in value]
    if type_str == "tuple":
        names = [c.name or f"field_{i}" for i, c in enumerate(abi_type.components or [])]
        struct = namedtuple("Struct", names, rename=True)
        shapers = [_shaper(c) for c in abi_type.components or []]
        return lambda value: struct(*(s(v) for s, v in zip(shapers, value, strict=True)))
    if type_str == "address":
        return to_checksum_address
    return lambda value: value


class _View:
    """One view method: its selector, argument types and how to shape its answer."""

    def __init__(self, abi):
        self.name = abi.name
        self.selector = keccak(text=abi.selector)[:4]
        self.inputs = [i.canonical_type for i in abi.inputs]
        self.outputs = [o.canonical_type for o in abi.outputs]
        self.shapers = [_shaper(o) for o in abi.outputs]

    def calldata(self, args: tuple) -> str:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} arguments, {len(args)} given")
        return "0x" + (self.selector + abi_encode(self.inputs, list(args))).hex()

    def answer(self, data: bytes) -> Any:
        values = abi_decode(self.outputs, data, strict=False) if self.outputs else ()
        shaped = tuple(s(v) for s, v in zip(self.shapers, values, strict=True))
        if len(shaped) == 1:
            return shaped[0]
        return shaped


def revert_reason_of(message: str, data: Any = None) -> str | None:
    """The contract's reason when an eth_call failure (its message and revert data) is a
    revert, else None (the wallet client's reading of node errors, perpdex.wallet.rpc)."""
    error = {"message": message, "data": "0x" + bytes(data).hex() if isinstance(data, bytes) else data}
    if not is_revert(error):
        return None
    return revert_reason(error) or "revert without a reason"


class Views:
    """`Views(contract, provider, sender).name(*args, block_id=B)`: the contract's view `name` as one eth_call at
    block B (a number, "latest" or "pending"), answered as ape answers."""

    def __init__(self, contract, provider, sender: str):
        self._contract = contract
        self.address = str(contract.address)
        self._sender = sender  # eth_call's `from` (some nodes require one; views do not read it)
        self._web3 = getattr(provider, "web3", None)
        # a JSON-RPC node (HTTP, IPC, websocket) is asked directly: web3's request formatters and
        # middlewares cost as much CPU as ape's call; eth-tester goes through web3
        from web3.providers import JSONBaseProvider  # the keeper's decision core imports no chain client

        endpoint = getattr(self._web3, "provider", None)
        self._endpoint = endpoint if isinstance(endpoint, JSONBaseProvider) else None
        views: dict[tuple[str, int], _View] = {}
        for abi in contract.contract_type.view_methods:
            views[(abi.name, len(abi.inputs))] = _View(abi)
        self._views = views

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, block_id: int | str = "latest"):
            view = self._views.get((name, len(args)))
            if view is None or self._web3 is None:
                return getattr(self._contract, name)(*args, block_id=block_id)
            return view.answer(self._eth_call(view.calldata(args), block_id))

        call.__name__ = name
        return call

    def _eth_call(self, data: str, block: int | str) -> bytes:
        call = {"from": self._sender, "to": self.address, "data": data}
        if self._endpoint is not None:
            response = self._endpoint.make_request("eth_call", [call, hex(block) if isinstance(block, int) else block])
            error = response.get("error")
            if error is None and isinstance(response.get("result"), str):
                return bytes.fromhex(response["result"][2:])
            error = error if isinstance(error, dict) else {"message": f"eth_call answered {response}"}
            if is_revert(error):
                raise ViewReverted(revert_reason(error) or "revert without a reason")
            from ape.exceptions import ProviderError

            raise ProviderError(f"eth_call failed: {error.get('message', error)}")
        try:
            return bytes(self._web3.eth.call(call, block))
        except Exception as err:
            reason = revert_reason_of(getattr(err, "message", None) or str(err), getattr(err, "data", None))
            if reason is not None:
                raise ViewReverted(reason) from err
            raise
