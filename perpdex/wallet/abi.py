"""The Solidity ABI encoding, for the types the manifest's ABIs use, driven by the ABI's own
parameter descriptions ({"type": "uint256"}, {"type": "tuple[]", "components": [...]}).

The wallet needs a command to start in about the time `cast` takes; eth_abi alone (with
eth_utils) takes about 0.15 s to import. This module is the standard head/tail encoding in
plain Python (checked against eth_abi by tests/integration/test_cli.py); keccak comes from
pycryptodome, which the project already installs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from Crypto.Hash import keccak as _keccak

WORD = 32


def keccak(data: bytes | str) -> bytes:
    return _keccak.new(digest_bits=256, data=data.encode() if isinstance(data, str) else data).digest()


def to_checksum(address: str) -> str:
    """EIP-55 mixed-case spelling of an address."""
    plain = address.lower().removeprefix("0x")
    digest = keccak(plain).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(plain))


def is_address(text: str) -> bool:
    raw = text.removeprefix("0x")
    return len(raw) == 40 and all(c in "0123456789abcdefABCDEF" for c in raw)


def type_string(param: dict) -> str:
    """Canonical type of a parameter: tuples spelled out, '(uint256,int256)[]'."""
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(type_string(c) for c in param["components"]) + ")" + kind[len("tuple"):]
    return kind


def _array(param: dict) -> tuple[dict, int | None] | None:
    """(element parameter, length or None) of an array type; None for a non-array."""
    kind = param["type"]
    if not kind.endswith("]"):
        return None
    base, _, size = kind[:-1].rpartition("[")
    return {**param, "type": base}, (int(size) if size else None)


def is_dynamic(param: dict) -> bool:
    kind = param["type"]
    array = _array(param)
    if array:
        return array[1] is None or is_dynamic(array[0])
    if kind == "tuple":
        return any(is_dynamic(c) for c in param["components"])
    return kind in ("string", "bytes")


def _static_size(param: dict) -> int:
    array = _array(param)
    if array:
        return array[1] * _static_size(array[0])
    if param["type"] == "tuple":
        return sum(_static_size(c) for c in param["components"])
    return WORD


# =============================================================================================
# Encoding
# =============================================================================================


def encode(params: Sequence[dict], values: Sequence[Any]) -> bytes:
    if len(params) != len(values):
        raise ValueError(f"{len(params)} ABI values expected, {len(values)} given")
    heads, tails = [], []
    head_size = sum(WORD if is_dynamic(p) else _static_size(p) for p in params)
    for param, value in zip(params, values):
        if is_dynamic(param):
            heads.append((head_size + sum(len(t) for t in tails)).to_bytes(WORD, "big"))
            tails.append(_encode_one(param, value))
        else:
            heads.append(_encode_one(param, value))
    return b"".join(heads + tails)


def _encode_one(param: dict, value: Any) -> bytes:
    kind = param["type"]
    array = _array(param)
    if array:
        element, size = array
        items = list(value)
        if size is not None and len(items) != size:
            raise ValueError(f"{kind} takes {size} items, not {len(items)}")
        body = encode([element] * len(items), items)
        return body if size is not None else len(items).to_bytes(WORD, "big") + body
    if kind == "tuple":
        components = param["components"]
        items = [value[c["name"]] for c in components] if isinstance(value, dict) else list(value)
        return encode(components, items)
    if kind.startswith("uint"):
        if not 0 <= int(value) < 2 ** int(kind[4:] or 256):
            raise ValueError(f"{value} does not fit {kind}")
        return int(value).to_bytes(WORD, "big")
    if kind.startswith("int"):
        bits = int(kind[3:] or 256)
        if not -(2 ** (bits - 1)) <= int(value) < 2 ** (bits - 1):
            raise ValueError(f"{value} does not fit {kind}")
        return (int(value) % 2**256).to_bytes(WORD, "big")
    if kind == "address":
        if not is_address(str(value)):
            raise ValueError(f"{value!r} is not an address")
        return bytes(12) + bytes.fromhex(str(value).removeprefix("0x"))
    if kind == "bool":
        return (1 if value else 0).to_bytes(WORD, "big")
    if kind in ("string", "bytes"):
        raw = value.encode() if isinstance(value, str) and kind == "string" else bytes(value)
        padded = raw + bytes(-len(raw) % WORD)
        return len(raw).to_bytes(WORD, "big") + padded
    if kind.startswith("bytes"):
        raw = bytes(value)
        return raw + bytes(WORD - len(raw))
    raise ValueError(f"ABI type {kind} is not supported")


# =============================================================================================
# Decoding
# =============================================================================================


def decode(params: Sequence[dict], data: bytes, start: int = 0) -> list[Any]:
    values, head = [], start
    for param in params:
        if is_dynamic(param):
            values.append(decode_one(param, data, start + _uint(data, head)))
            head += WORD
        else:
            values.append(decode_one(param, data, head))
            head += _static_size(param)
    return values


def _uint(data: bytes, at: int) -> int:
    if at + WORD > len(data):
        raise ValueError("ABI data too short")
    return int.from_bytes(data[at:at + WORD], "big")


def decode_one(param: dict, data: bytes, at: int) -> Any:
    kind = param["type"]
    array = _array(param)
    if array:
        element, size = array
        if size is None:
            return decode([element] * _uint(data, at), data, at + WORD)
        return decode([element] * size, data, at)
    if kind == "tuple":
        return tuple(decode(param["components"], data, at))
    word = _uint(data, at)
    if kind.startswith("uint"):
        return word
    if kind.startswith("int"):
        return word - 2**256 if word >= 2**255 else word
    if kind == "address":
        return to_checksum(data[at + 12:at + WORD].hex())
    if kind == "bool":
        return word != 0
    if kind in ("string", "bytes"):
        raw = data[at + WORD:at + WORD + word]
        return raw.decode() if kind == "string" else raw
    if kind.startswith("bytes"):
        return data[at:at + int(kind[5:])]
    raise ValueError(f"ABI type {kind} is not supported")
