"""Each contract compiled (or read from titanoboa's disk cache) once per test process.

titanoboa answers every `boa.load` by parsing and analysing the source and its imports to
fingerprint it, then unpickling the compiled contract from its disk cache: about a second per
contract, paid again by every deployment (a `System` deploys ten contracts). The sources do not
change while the tests run, so `install()` keeps each result in memory, keyed by everything
titanoboa's own cache key is made of (the source itself instead of its fingerprint: the
imported modules are the repository's, unchanged for the whole run).

A compiled contract is a large graph of Python objects (the AST, the IR) that lives until the
process ends; each new one is moved out of the garbage collector's reach (`gc.freeze`), so the
collections that py-evm's many short-lived objects trigger do not walk it again and again.
"""

from __future__ import annotations

import gc

import boa.interpret

_compiled: dict = {}


def _cached_compiler_data(source_code, contract_name, filename, deployer=None, **kwargs):
    key = (source_code, contract_name, str(filename), deployer, tuple(sorted(kwargs.items())))
    data = _compiled.get(key)
    if data is None:
        data = _compiled[key] = _compiler_data(source_code, contract_name, filename, deployer, **kwargs)
        gc.freeze()
    return data


_compiler_data = boa.interpret.compiler_data


def install() -> None:
    """Route titanoboa's compilation through the in-memory cache (idempotent)."""
    boa.interpret.compiler_data = _cached_compiler_data
