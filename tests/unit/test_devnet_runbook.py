"""`make devnet` without a node: its options, the pusher each price source starts, and the
commands it prints, which README.md's runbook must show verbatim. (The devnet itself runs in
tests/anvil/test_devnet.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from perpdex.devnet import (
    DEPLOYER,
    PUSHER,
    WINDOWS,
    Devnet,
    DevnetOptions,
    csv_pusher_command,
    runbook,
)
from perpdex.pusher import DATA_DIR, load_prices, parse_timestamp

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prices": "random"}, "unknown price source 'random': one of walk, none, march-2020, august-2024"),
        ({"port": 0}, "port 0 out of range"),
        ({"port": 70000}, "port 70000 out of range"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(options, message):
    with pytest.raises(ValueError) as err:
        DevnetOptions(**options)
    assert str(err.value) == message


def test_the_random_walk_publishes_every_2_seconds_from_the_pushers_account():
    args = Devnet(DevnetOptions(prices="walk"))._pusher_args("walk")
    assert args[:3] == ["pusher", "--account", f"TEST::{PUSHER}"]
    assert "--random-walk" in args
    interval, speed = float(args[args.index("--interval") + 1]), float(args[args.index("--speed") + 1])
    assert interval / speed == 2.0  # path seconds per step / path seconds per wall second


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_each_csv_window_replays_files_of_data_from_its_crash(window):
    w = WINDOWS[window]
    args = Devnet(DevnetOptions(prices=window))._pusher_args(window)
    assert args[:3] == ["pusher", "--account", f"TEST::{PUSHER}"]
    start = parse_timestamp(w.start)
    for symbol, name in w.files.items():
        assert f"{symbol}={name}" in args
        points = load_prices(DATA_DIR / name)
        assert points[0].timestamp <= start < points[-1].timestamp, f"{name} does not cover {w.start}"
        assert points[1].timestamp - points[0].timestamp == w.step  # one bar of the file per round
    assert float(args[args.index("--speed") + 1]) == w.step / 2.0


def test_the_default_runbook_is_the_readmes():
    commands = runbook(DevnetOptions())
    assert not any("APE_FOUNDRY_HOST" in c for c in commands)  # 8545 is every tool's default
    missing = [c for c in commands if c not in README]
    assert missing == []
    steps = [c.split(" --account")[0].removeprefix("python -m perpdex.cli ") for c in commands[1:]]
    assert [s.split()[0] for s in steps] == ["faucet", "deposit", "open", "positions", "history", "close", "withdraw"]


def test_on_another_port_the_runbook_exports_ape_foundry_host_first():
    commands = runbook(DevnetOptions(port=9545))
    assert commands[1] == "export APE_FOUNDRY_HOST=http://127.0.0.1:9545"
    assert "export APE_FOUNDRY_HOST=http://127.0.0.1:9545" in README
    assert "make devnet PORT=9545" in README or "`PORT=9545`" in README


def test_a_manifest_elsewhere_is_named_in_every_wallet_command(tmp_path):
    commands = runbook(DevnetOptions(deployments=tmp_path))
    wallet = [c for c in commands if c.startswith("python -m perpdex.cli")]
    assert wallet and all(c.endswith(f"--deployment {tmp_path / '31337.json'}") for c in wallet)


def test_the_readme_shows_the_csv_pusher_for_prices_none():
    assert csv_pusher_command() in README
    assert "make devnet PRICES=none" in README
    assert f"--account TEST::{DEPLOYER}" in csv_pusher_command()  # the feeds' owner, not the devnet's pusher


def test_the_printed_next_steps_name_the_port_the_seeding_and_the_price_source():
    devnet = Devnet(DevnetOptions(port=9545, prices="none"))
    text = "\n".join(devnet.next_steps())
    assert "devnet up on http://127.0.0.1:9545" in text
    assert "export APE_FOUNDRY_HOST=http://127.0.0.1:9545" in text
    assert "none: push your own" in text and csv_pusher_command() in text


def test_the_printed_next_steps_name_the_web_page_for_this_node():
    text = "\n".join(Devnet(DevnetOptions(port=9545)).next_steps())
    assert "make web PORT=9545" in text and "http://127.0.0.1:8000/" in text
    assert "  make web\n" in "\n".join(Devnet(DevnetOptions()).next_steps()) + "\n"
