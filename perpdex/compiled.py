"""The contracts compiled once, for every titanoboa process (the tests, the simulator, the demo).

`make compile` (`python -m perpdex.build`) compiles every contract of contracts/ with vyper,
through titanoboa, and keeps the result in `.build/titanoboa.pickle` beside ape's manifest
(perpdex/build.py). A process that calls `install()` answers `boa.load` of those contracts
from that file: about 1.2 s for all of them, against 18 s to compile them again. The file is
used only while it matches what it was compiled from (`fingerprint()`: every file of contracts/,
the vyper, titanoboa and snekmate versions); otherwise, and for any other source (a test's
probe contract), titanoboa compiles as usual, with its disk cache in `.build/titanoboa-cache`
(instead of `~/.cache/titanoboa`, outside the repository).

titanoboa answers every `boa.load` by parsing and analysing the source and its imports to
fingerprint it: about a second per contract, paid again by every deployment (a test deployment
is ten contracts). Here each answer is kept in memory, keyed by the source itself.

titanoboa also assembles a contract's deployment bytecode again for every deployment, to map a
failing constructor's program counter to its source line (`VyperContract._deployment_source_map`,
cached per deployed contract): about 30 ms each, and the unit tests deploy some 800 contracts.
The map depends on the compiled contract only, so `install()` keeps one per compiled contract.

A compiled contract is a large graph of Python objects (the AST, the IR) that lives until the
process ends: it is moved out of the garbage collector's reach (`gc.freeze`), so the collections
that py-evm's many short-lived objects trigger do not walk it again and again.
"""

from __future__ import annotations

import gc
import hashlib
import pickle
from importlib.metadata import version
from pathlib import Path
from typing import Any

import boa.interpret
import vyper
from boa.contracts.vyper.vyper_contract import VyperContract, VyperDeployer

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"
STORE = REPO / ".build" / "titanoboa.pickle"
DISK_CACHE = REPO / ".build" / "titanoboa-cache"
# modules declare `uses:` and interfaces are not deployable: neither compiles on its own
NOT_DEPLOYABLE = ("modules", "interfaces")

_compiled: dict = {}
_deployment_source_maps: dict = {}
_installed = False


def deployable_sources() -> list[Path]:
    """Every contract of contracts/ that compiles on its own, sorted."""
    return sorted(
        path for path in CONTRACTS.rglob("*.vy") if not set(path.relative_to(CONTRACTS).parts) & set(NOT_DEPLOYABLE)
    )


def fingerprint() -> str:
    """What the compiled contracts depend on: every file of contracts/ and the compilers'
    versions (snekmate's modules are imported from the installed package)."""
    h = hashlib.sha256()
    for tool in ("vyper", "titanoboa", "snekmate"):
        h.update(f"{tool} {version(tool)}\n".encode())
    h.update(f"vyper commit {vyper.__commit__}\n".encode())
    for path in sorted(p for p in CONTRACTS.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(CONTRACTS)}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _store_key(source_code: str, filename, deployer, kwargs: dict) -> tuple:
    """What a compiled contract depends on (titanoboa names a contract by its file's stem or
    its whole path, depending on the call: the name is only a label)."""
    return (source_code, str(Path(filename).resolve()), repr(deployer), tuple(sorted(kwargs.items())))


def compile_contract(path: Path) -> Any:
    """One contract's CompilerData as titanoboa's `boa.load(path)` compiles it, with the
    bytecode, the runtime bytecode and the source map computed (what its disk cache keeps).
    titanoboa's disk cache is left out: the store replaces it."""
    disk_cache = boa.interpret._disk_cache
    boa.interpret._disk_cache = None
    try:
        data = _compiler_data(path.read_text(), path.stem, str(path), VyperDeployer)
    finally:
        boa.interpret._disk_cache = disk_cache
    return _complete(data)


def _complete(data: Any) -> Any:
    """The bytecode, the runtime bytecode and the source map computed (titanoboa computes the
    latter only when its disk cache is on)."""
    _ = data.bytecode, data.bytecode_runtime
    if not hasattr(data, "source_map"):
        data.source_map = boa.interpret._compute_source_map(data)
    return data


def save(compiled: dict[Path, Any], store: Path = STORE) -> None:
    """Keep `compiled` ({path: CompilerData}, every deployable contract) in `store`."""
    entries = {_store_key(path.read_text(), path, VyperDeployer, {}): data for path, data in compiled.items()}
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(store.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"fingerprint": fingerprint(), "contracts": entries}, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(store)


def load(store: Path = STORE) -> dict:
    """The store's compiled contracts by key, or {} when it is missing or compiled from other
    sources or compilers."""
    if not store.exists():
        return {}
    enabled = gc.isenabled()
    gc.disable()  # unpickling a large graph of new objects triggers collection after collection
    try:
        with open(store, "rb") as f:
            data = pickle.load(f)
    except Exception:  # a file of another titanoboa or vyper version, or cut short: compile instead
        return {}
    finally:
        if enabled:
            gc.enable()
    if data.get("fingerprint") != fingerprint():
        return {}
    gc.freeze()
    return data["contracts"]


_stored: dict | None = None


def _cached_compiler_data(source_code, contract_name, filename, deployer=None, **kwargs):
    global _stored
    key = (source_code, contract_name, str(filename), deployer, tuple(sorted(kwargs.items())))
    data = _compiled.get(key)
    if data is None:
        if _stored is None:
            _stored = load()
        data = _stored.get(_store_key(source_code, filename, deployer, kwargs))
        if data is None:
            data = _complete(_compiler_data(source_code, contract_name, filename, deployer, **kwargs))
            gc.freeze()
        _compiled[key] = data
    return data


_compiler_data = boa.interpret.compiler_data
_source_map_of_deployment = VyperContract._deployment_source_map.func


def _shared_deployment_source_map(contract):
    data = contract.compiler_data  # hashed by identity, one per compiled contract
    source_map = _deployment_source_maps.get(data)
    if source_map is None:
        source_map = _deployment_source_maps[data] = _source_map_of_deployment(contract)
    return source_map


def install() -> None:
    """Route titanoboa's compilation through the store and the in-memory cache, and its
    deployment source maps through one per compiled contract (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    boa.interpret.set_cache_dir(str(DISK_CACHE))
    boa.interpret.compiler_data = _cached_compiler_data
    VyperContract._deployment_source_map = property(_shared_deployment_source_map)
