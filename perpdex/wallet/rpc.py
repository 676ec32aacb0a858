"""A small Ethereum client: JSON-RPC over one kept-alive HTTP connection, batched requests, and
ABI coding driven by the deployment manifest's ABIs.

Why not web3.py here: importing it takes about half a second, several times a whole `cast call`;
the wallet CLI must answer in about the time cast does. This module needs only the standard
library and `abi` (eth_account is imported by `client` only to sign with a private key).
Everything a command reads goes out as one JSON-RPC batch (one HTTP round trip).
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from perpdex.wallet.abi import decode_one, decode, encode, keccak, type_string

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


class RpcError(Exception):
    """The node answered with an error (not a revert), or could not be reached."""


class Reverted(Exception):
    """A call or transaction the contract refused; `reason` is its reason string."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def revert_reason(error: dict) -> str:
    """The reason string of a JSON-RPC error for a reverted call ('' when it carries none)."""
    data = error.get("data")
    if isinstance(data, dict):  # some nodes nest it
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        raw = bytes.fromhex(data[2:])
        if raw[:4] == ERROR_SELECTOR:
            return decode([{"type": "string"}], raw[4:])[0]
        if raw[:4] == PANIC_SELECTOR:
            return f"panic {decode([{'type': 'uint256'}], raw[4:])[0]:#x} (arithmetic or bounds error)"
    message = str(error.get("message", ""))
    return message.removeprefix("execution reverted").lstrip(": ").strip()


def is_revert(error: dict) -> bool:
    return error.get("code") == 3 or "revert" in str(error.get("message", "")).lower()


class Rpc:
    """JSON-RPC to one node: `call` for one request, `batch` for many in one round trip."""

    def __init__(self, url: str, timeout: float = 15.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RpcError(f"RPC URL {url!r} is not an http(s) URL")
        self.url, self.timeout = url, timeout
        self._host, self._port, self._https = parts.hostname, parts.port, parts.scheme == "https"
        self._path = parts.path or "/"
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload)
        for attempt in (0, 1):  # a kept-alive connection the node closed: reconnect once
            try:
                conn = self._connection()
                conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                text = response.read()
                break
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as err:
                self.close()
                if attempt:
                    raise RpcError(f"no answer from the node at {self.url}: {err}") from None
        if response.status != 200:
            raise RpcError(f"the node at {self.url} answered HTTP {response.status}: {text[:200]!r}")
        return json.loads(text)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def batch(self, requests: list[tuple[str, list]]) -> list[Any]:
        """Results in the order of `requests`; a failed request's slot holds its error dict
        wrapped in `Failure`."""
        if not requests:
            return []
        first = self._id + 1
        self._id += len(requests)
        payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(requests)]
        answers = self._post(payload)
        if isinstance(answers, dict):  # a node that refuses batches answers with one error
            raise RpcError(f"the node refused a batch request: {answers.get('error')}")
        by_id = {a.get("id"): a for a in answers}
        results = []
        for i in range(len(requests)):
            answer = by_id.get(first + i, {"error": {"message": "no answer"}})
            results.append(Failure(answer["error"]) if "error" in answer else answer.get("result"))
        return results

    def call(self, method: str, params: list | None = None) -> Any:
        (result,) = self.batch([(method, params or [])])
        if isinstance(result, Failure):
            result.raise_()
        return result


@dataclass
class Failure:
    """A failed request of a batch."""

    error: dict

    @property
    def reverted(self) -> bool:
        return is_revert(self.error)

    def exception(self) -> Exception:
        if self.reverted:
            return Reverted(revert_reason(self.error) or "reverted without a reason")
        return RpcError(str(self.error.get("message", self.error)))

    def raise_(self):
        raise self.exception()


# =============================================================================================
# ABI
# =============================================================================================


def _shape(param: dict, value: Any) -> Any:
    """Decoded value -> named records for structs (attribute access), lists for arrays."""
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = {**param, "type": "tuple" + kind[len("tuple"):].rsplit("[", 1)[0]} if kind.endswith("]") else None
        if inner is not None:
            return [_shape(inner, v) for v in value]
        return SimpleNamespace(**{c["name"]: _shape(c, v) for c, v in zip(param["components"], value)})
    if kind.endswith("]"):
        return list(value)
    return value


@dataclass(frozen=True)
class Event:
    """A decoded log."""

    name: str
    address: str
    args: SimpleNamespace
    block: int
    tx: str
    index: int


class Contract:
    """Calldata and results of one contract, from its ABI (as the manifest records it)."""

    def __init__(self, address: str, abi: list[dict]):
        self.address = address
        self.functions: dict[str, list[dict]] = {}
        self.events: dict[str, dict] = {}
        self.topics: dict[bytes, dict] = {}
        for item in abi:
            if item.get("type") == "function":
                self.functions.setdefault(item["name"], []).append(item)
            elif item.get("type") == "event":
                self.events[item["name"]] = item
                signature = f"{item['name']}({','.join(type_string(i) for i in item['inputs'])})"
                self.topics[keccak(signature)] = item

    def _function(self, name: str, args: tuple) -> dict:
        candidates = [f for f in self.functions.get(name, []) if len(f["inputs"]) == len(args)]
        if not candidates:
            raise RpcError(f"the manifest's ABI of {self.address} has no function {name} of {len(args)} arguments")
        return candidates[0]

    def calldata(self, name: str, *args: Any) -> str:
        fn = self._function(name, args)
        types = [type_string(i) for i in fn["inputs"]]
        selector = keccak(f"{name}({','.join(types)})")[:4]
        return "0x" + (selector + encode(fn["inputs"], list(args))).hex()

    def result(self, name: str, args: tuple, data: str) -> Any:
        fn = self._function(name, args)
        outputs = fn.get("outputs", [])
        raw = bytes.fromhex(data[2:])
        if not raw and outputs:
            raise RpcError(f"{self.address} returned nothing for {name}: no contract there (a stale manifest?)")
        values = decode(outputs, raw)
        shaped = [_shape(o, v) for o, v in zip(outputs, values)]
        return shaped[0] if len(shaped) == 1 else tuple(shaped)

    def topic(self, event: str) -> str:
        item = self.events[event]
        return "0x" + keccak(f"{event}({','.join(type_string(i) for i in item['inputs'])})").hex()

    def decode_log(self, log: dict) -> Event | None:
        """The event of a raw log emitted by this contract, None for an event not in the ABI."""
        topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
        item = self.topics.get(topics[0]) if topics else None
        if item is None:
            return None
        indexed = [i for i in item["inputs"] if i["indexed"]]
        plain = [i for i in item["inputs"] if not i["indexed"]]
        values = {}
        for param, topic in zip(indexed, topics[1:]):
            values[param["name"]] = decode_one(param, topic, 0)
        decoded = decode(plain, bytes.fromhex(log["data"][2:]))
        for param, value in zip(plain, decoded):
            values[param["name"]] = _shape(param, value)
        ordered = {i["name"]: values[i["name"]] for i in item["inputs"]}
        return Event(
            item["name"], log["address"], SimpleNamespace(**ordered), int(log["blockNumber"], 16),
            log["transactionHash"], int(log["logIndex"], 16),
        )
