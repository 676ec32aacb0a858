"""Each contract compiled (or read from titanoboa's disk cache) once per test process.

titanoboa answers every `boa.load` by parsing and analysing the source and its imports to
fingerprint it, then unpickling the compiled contract from its disk cache: about a second per
contract, paid again by every deployment (a `System` deploys ten contracts). The sources do not
change while the tests run, so `install()` keeps each result in memory, keyed by everything
titanoboa's own cache key is made of (the source itself instead of its fingerprint: the
imported modules are the repository's, unchanged for the whole run).

titanoboa also assembles a contract's deployment bytecode again for every deployment, to map a
failing constructor's program counter to its source line (`VyperContract._deployment_source_map`,
cached per deployed contract): about 30 ms each, and the unit tests deploy some 800 contracts.
The map depends on the compiled contract only, so `install()` keeps one per compiled contract.

A compiled contract is a large graph of Python objects (the AST, the IR) that lives until the
process ends; each new one is moved out of the garbage collector's reach (`gc.freeze`), so the
collections that py-evm's many short-lived objects trigger do not walk it again and again.
"""

from __future__ import annotations

import gc

import boa.interpret
from boa.contracts.vyper.vyper_contract import VyperContract

_compiled: dict = {}
_deployment_source_maps: dict = {}


def _cached_compiler_data(source_code, contract_name, filename, deployer=None, **kwargs):
    key = (source_code, contract_name, str(filename), deployer, tuple(sorted(kwargs.items())))
    data = _compiled.get(key)
    if data is None:
        data = _compiled[key] = _compiler_data(source_code, contract_name, filename, deployer, **kwargs)
        gc.freeze()
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
    """Route titanoboa's compilation and deployment source maps through the in-memory caches
    (idempotent)."""
    boa.interpret.compiler_data = _cached_compiler_data
    VyperContract._deployment_source_map = property(_shared_deployment_source_map)
