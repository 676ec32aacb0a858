"""`python -m perpdex.build` (`make compile`): compile the contracts once for every tool.

Each deployable contract of contracts/ is compiled once, with vyper through titanoboa, and the
result written twice:

- `.build/__local__.json`, ape's project manifest, with what `ape compile` writes there under
  our ape-config.yaml (ABI, deployment and runtime bytecode, NatSpec, `# dev:` lines; the
  compiler and its settings; the sources). ape's tools (`ape run deploy`, the keeper, the
  integration tests) find every contract compiled and compile nothing.
- `.build/titanoboa.pickle`, the compiled contracts themselves, for the processes that deploy
  on titanoboa (perpdex/compiled.py).

Before, `ape compile` and titanoboa each compiled every contract (about 18 s each); the
bytecode is the same (vyper 0.4.3, `optimize: gas`, no EVM version pinned), which
tests/unit/test_build.py checks. `ape compile` still works and writes the same manifest.
"""

from __future__ import annotations

import re
import sysconfig
import time
from pathlib import Path
from typing import Any

from perpdex import compiled

BUILD = compiled.REPO / ".build"
APE_MANIFEST = BUILD / "__local__.json"
# ape-vyper's pattern for a revert's developer message on the line that reverts
DEV_MESSAGE = re.compile(r"#\s*(dev:.+)")


def _dev_messages(source: str) -> dict[int, str]:
    """{line number: "dev: ..."} as ape-vyper finds them (ethpm_types' Content: lines from 1,
    trailing white space dropped)."""
    messages = {}
    for number, line in enumerate(source.rstrip().splitlines(), start=1):
        if match := DEV_MESSAGE.search(line):
            messages[number] = match.group(1).strip()
    return messages


def contract_type(path: Path, data: Any) -> dict:
    """ape's ContractType of a compiled contract, as ape-vyper builds it."""
    from vyper.compiler import output

    source = path.read_text()
    return {
        "contractName": path.stem,
        "sourceId": str(path.relative_to(compiled.REPO)),
        "deploymentBytecode": {"bytecode": "0x" + data.bytecode.hex()},
        "runtimeBytecode": {"bytecode": "0x" + data.bytecode_runtime.hex()},
        "abi": output.build_abi_output(data),
        "userdoc": output.build_userdoc(data),
        "devdoc": output.build_devdoc(data),
        "dev_messages": _dev_messages(source),
    }


def ape_manifest(built: dict[Path, Any]) -> str:
    """The JSON of ape's project manifest for the compiled contracts `built`."""
    from ethpm_types import Compiler, ContractType, PackageManifest, Source
    from vyper import __version__ as vyper_version

    sources = sorted(built)
    source_ids = [str(path.relative_to(compiled.REPO)) for path in sources]
    types = {path.stem: ContractType.model_validate(contract_type(path, built[path])) for path in sources}
    settings = {
        "enable_decimals": False,
        "optimize": "gas",
        "outputSelection": {source_id: ["*"] for source_id in source_ids},
        "search_paths": [sysconfig.get_paths()["purelib"], "."],
    }
    manifest = PackageManifest(
        manifest="ethpm/3",
        compilers=[Compiler(name="vyper", version=vyper_version, settings=settings, contractTypes=sorted(types))],
        contractTypes=types,
        sources={source_id: Source(content=path.read_text()) for source_id, path in zip(source_ids, sources)},
    )
    return manifest.model_dump_json(by_alias=True)


def build(quiet: bool = False) -> dict[Path, Any]:
    """Compile every deployable contract; write ape's manifest and titanoboa's store."""
    built = {}
    for path in compiled.deployable_sources():
        started = time.process_time()
        built[path] = compiled.compile_contract(path)
        if not quiet:
            print(f"compiled {path.relative_to(compiled.REPO)} ({time.process_time() - started:.1f} s)")
    APE_MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    tmp = APE_MANIFEST.with_name(APE_MANIFEST.name + ".tmp")
    tmp.write_text(ape_manifest(built), encoding="utf8")
    tmp.replace(APE_MANIFEST)
    compiled.save(built)
    return built


if __name__ == "__main__":
    build()
