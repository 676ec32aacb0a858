"""A clone works anywhere on its own: no tracked file names a path outside the repository, every
data file the code and the docs name is in data/ with its provenance, and every relative link
in the docs leads to a file of the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
# absolute paths of one machine: a home, a shared or scratch directory
ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:work|home|root|Users|mnt|tmp|srv|opt|var)/[\w.-]+")
# relative paths that climb out of the directory they are written in
CLIMBING = re.compile(r"(?:\.\./)+[\w.-]+(?:/[\w.-]+)*")
# the data files' naming scheme: <asset>-<quote>_<window>.csv
DATA_FILE = re.compile(r"\b[a-z]+-[a-z]+_[\w.-]+?\.csv\b")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def tracked_files() -> list[Path]:
    """The repository's tracked files (every file outside the generated directories when the
    tree is not a git checkout, e.g. an unpacked archive)."""
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout.split("\0")
        files = [REPO / n for n in names if n]
    except (OSError, subprocess.CalledProcessError):
        generated = {".git", ".venv", "node_modules", ".build", "reports", "deployments", "devnet-logs"}
        files = [p for p in REPO.rglob("*") if p.is_file() and not generated & set(p.relative_to(REPO).parts)]
    return [f for f in files if f.is_file()]


def text_files() -> dict[Path, str]:
    texts = {}
    for path in tracked_files():
        if path.name in ("LICENSE", "package-lock.json") or path.is_relative_to(DATA) or path == Path(__file__):
            continue  # no paths; the data itself; this file's examples of what is refused
        try:
            texts[path] = path.read_text()
        except UnicodeDecodeError:
            continue  # binary
    return texts


TEXTS = text_files()


def test_the_scan_sees_the_project():
    """The checks below read the code, the scripts, the tests and the docs."""
    names = {p.relative_to(REPO).as_posix() for p in TEXTS}
    assert {"README.md", "Makefile", "perpdex/pusher.py", "perpdex/demo.py", "docs/oracle.md",
            "tests/unit/test_oracle.py", "scripts/devnet.sh"} <= names


def outside_paths(path: Path, text: str) -> list[str]:
    """`file:line: path` for every path in `text` that leaves the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if number == 1 and line.startswith("#!"):
            continue  # the interpreter of a script
        for match in ABSOLUTE.finditer(line):
            found.append(f"{path.relative_to(REPO)}:{number}: {match.group()}")
        for match in CLIMBING.finditer(line):
            target = (path.parent / match.group()).resolve()
            if not target.is_relative_to(REPO):
                found.append(f"{path.relative_to(REPO)}:{number}: {match.group()}")
    return found


def test_no_tracked_file_names_a_path_outside_the_repository():
    offenders = [hit for path, text in TEXTS.items() for hit in outside_paths(path, text)]
    assert offenders == [], "paths outside the repository:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "where, text, expected",
    [
        # a machine path, spelt in two parts so that this file does not name one itself
        ("perpdex/x.py", 'DATA_DIR = Path("' + "/work" + '/shared/data/prices")', ["/work" + "/shared"]),
        ("README.md", "the design is [here](../shared/DESIGN.md)", ["../shared/DESIGN.md"]),
        ("docs/x.md", "see ../../outside/file.csv", ["../../outside/file.csv"]),
        ("docs/x.md", "see [the oracle](../docs/oracle.md) and http://127.0.0.1:8545/ and /dev/null", []),
    ],
)
def test_the_scan_finds_outside_paths(where, text, expected):
    """The checker itself: paths out of the repository are found, paths inside it are not."""
    hits = outside_paths(REPO / where, text)
    assert [hit.split(": ", 1)[1] for hit in hits] == expected


def test_every_data_file_named_by_the_project_is_in_data():
    present = {p.name for p in DATA.rglob("*.csv")}
    missing = sorted(
        f"{path.relative_to(REPO)}: {name}"
        for path, text in TEXTS.items()
        for name in set(DATA_FILE.findall(text))
        if name not in present
    )
    assert missing == [], "data files named but not in data/:\n" + "\n".join(missing)


def test_every_data_path_named_by_the_project_exists():
    named = {
        (path, match.rstrip(".,;:"))
        for path, text in TEXTS.items()
        for match in re.findall(r"(?<![\w/.-])data/[\w./-]+", text)
    }
    missing = sorted(f"{path.relative_to(REPO)}: {name}" for path, name in named if not (REPO / name).exists())
    assert missing == [], "data paths that do not exist:\n" + "\n".join(missing)


def test_the_data_the_code_reads_is_in_the_repository():
    from perpdex import demo, pusher

    assert pusher.DATA_DIR == DATA / "prices"
    assert demo.DATA == DATA / "prices"
    for name in ("btc-usdt_2020-03_1h.csv", "eth-usdt_2020-03_1h.csv"):
        assert (demo.DATA / name).stat().st_size > 10_000, f"{name}: the demo's price path"
    assert (DATA / "chainlink" / "eth-usd_mainnet_rounds_2023-04_2024-01.csv").stat().st_size > 100_000


def test_every_data_file_has_its_provenance():
    readme = (DATA / "README.md").read_text()
    undocumented = sorted(
        p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.name != "README.md"
        if f"`{p.relative_to(DATA).as_posix()}`" not in readme
    )
    assert undocumented == [], f"data files missing from data/README.md: {undocumented}"
    assert "## Licences" in readme


def test_every_relative_link_in_the_docs_leads_to_a_file_of_the_repository():
    broken = []
    for path, text in TEXTS.items():
        if path.suffix != ".md":
            continue
        for target in MARKDOWN_LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == [], "links to nowhere or outside the repository:\n" + "\n".join(broken)
