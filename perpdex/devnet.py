"""`make devnet`: a local perpdex devnet ready to trade, as separate processes.

    python -m perpdex.devnet [--port 8545] [--prices walk|none|march-2020|august-2024] [--block-time S]

Starts anvil on 127.0.0.1:PORT, deploys with `ape run deploy` (anvil account 0), seeds the
liquidity vault and the insurance fund (perpdex.devnet_seed), then runs the keeper
(`ape run keeper`, account 1, with the ADL role: executes orders, liquidates, auto-deleverages)
and the price pusher (`ape run pusher`, account 9, the updater of every mock feed, so it never
shares a nonce with the deployer, the keeper or a wallet). Every tool reaches the node through
APE_FOUNDRY_HOST; the logs go to devnet-logs/. Ctrl-C (or SIGTERM) stops everything.

Price sources (`--prices`): `walk` (default) a seeded random walk from the feeds' answers, one
round of every market every 2 s; `march-2020` and `august-2024` replay a crash from data/prices
(an hour, resp. a minute, of the path every 2 s), then continue with a random walk from the
last prices; `none` starts no pusher, for a pusher of your own (the feeds' answers go stale
after the heartbeat, an hour). Market orders execute at the first round published at least
min_order_delay (1 s) after their commit, so they fill within a few seconds while rounds come.

`Devnet` is the same thing for a program or a test: `with Devnet(options) as d: ...` starts it
all and stops every process it started on the way out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NETWORK = "ethereum:local:foundry"
CHAIN_ID = 31337
DEPLOYER, KEEPER, PUSHER = 0, 1, 9  # anvil's test accounts = ape's TEST::<n>
DEFAULT_PORT = 8545
PUSH_EVERY = 2.0  # wall seconds between rounds
WALK = ("--random-walk", "--seed", "7", "--volatility", "0.001", "--interval", "60", "--speed", str(60 / PUSH_EVERY))
START_TIMEOUT = 30.0  # seconds for anvil to answer
DEPLOY_TIMEOUT = 300.0


@dataclass(frozen=True)
class CsvWindow:
    """A replay of data/prices files (by market symbol) from `start`, `step` path seconds per round."""

    files: dict[str, str]
    start: str
    step: int

    def pusher_args(self) -> list[str]:
        args = [arg for symbol, name in self.files.items() for arg in ("--csv", f"{symbol}={name}")]
        return [*args, "--start", self.start, "--speed", str(self.step / PUSH_EVERY)]


WINDOWS = {
    "march-2020": CsvWindow(
        {"BTC-USD": "btc-usdt_2020-03_1h.csv", "ETH-USD": "eth-usdt_2020-03_1h.csv"}, "2020-03-12", 3600
    ),
    "august-2024": CsvWindow(
        {"BTC-USD": "btc-usdt_2024-08-05_1m.csv", "ETH-USD": "eth-usdt_2024-08-05_1m.csv"}, "2024-08-05T00:00", 60
    ),
}
PRICE_SOURCES = ("walk", "none", *WINDOWS)


@dataclass(frozen=True)
class DevnetOptions:
    port: int = DEFAULT_PORT
    prices: str = "walk"
    block_time: float | None = None  # None: a block per transaction
    logs: Path = REPO / "devnet-logs"
    deployments: Path = REPO / "deployments"

    def __post_init__(self):
        if self.prices not in PRICE_SOURCES:
            raise ValueError(f"unknown price source {self.prices!r}: one of {', '.join(PRICE_SOURCES)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def manifest(self) -> Path:
        return self.deployments / f"{CHAIN_ID}.json"


def shown(path: Path) -> str:
    """A path as a person in the repository would type it."""
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_group(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM to the process group we started (anvil's npm wrapper has a child), then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout)


@dataclass
class Service:
    """A long-running process of the devnet, its output in logs/<name>.log."""

    name: str
    args: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Devnet:
    options: DevnetOptions = field(default_factory=DevnetOptions)
    say: callable = print
    services: dict[str, Service] = field(default_factory=dict)
    seeded: object = None  # the SeedReport
    _logs_opened: set[str] = field(default_factory=set)

    # -- environment -----------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """What every tool needs to reach this node (ape-foundry would otherwise start its own)."""
        bin_dirs = [str(Path(sys.executable).parent), str(REPO / "node_modules" / ".bin")]
        return {
            **os.environ,
            "APE_FOUNDRY_HOST": self.options.url,
            "PATH": os.pathsep.join([*bin_dirs, os.environ.get("PATH", "")]),
            "PYTHONWARNINGS": "ignore",
        }

    def _ape(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("ape")), "run", *args, "--network", NETWORK]

    def _log(self, name: str):
        """logs/<name>.log: a fresh file for this devnet, appended to by a restart."""
        self.options.logs.mkdir(parents=True, exist_ok=True)
        mode = "a" if name in self._logs_opened else "w"
        self._logs_opened.add(name)
        return open(self.options.logs / f"{name}.log", mode)

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        with self._log(name) as log:
            return subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> Devnet:
        """Node, deployment, seeding, keeper and pusher; on any failure everything started stops."""
        try:
            self._start_node()
            self._deploy()
            self._seed()
            self._start_service("keeper", "keeper", "--account", f"TEST::{KEEPER}",
                                "--deployments", str(self.options.deployments), "--checkpoint", str(self.checkpoint))
            if self.options.prices != "none":
                self._start_service("pusher", *self._pusher_args(self.options.prices))
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def checkpoint(self) -> Path:
        """The keeper's checkpoint, of this devnet's chain only: a new anvil deploys at the same
        addresses, and a checkpoint of an earlier chain would make the keeper skip this one's
        first blocks."""
        return self.options.logs / "keeper-checkpoint.json"

    def _start_node(self) -> None:
        o = self.options
        self.checkpoint.unlink(missing_ok=True)
        anvil = shutil.which("anvil", path=self.env["PATH"])
        if anvil is None:
            raise RuntimeError("anvil not found: run `make devnet` (it installs node_modules/.bin/anvil)")
        if port_in_use(o.port):
            raise RuntimeError(f"port {o.port} is in use (another devnet?): choose another, e.g. `make devnet PORT=9545`")
        self.say(f"starting anvil on {o.url}…")
        command = [anvil, "--host", "127.0.0.1", "--port", str(o.port), "--silent"]
        if o.block_time:
            command += ["--block-time", str(o.block_time)]
        self.services["anvil"] = Service("anvil", command, self._spawn(command, "anvil"))
        deadline = time.monotonic() + START_TIMEOUT
        while not port_in_use(o.port):
            if not self.services["anvil"].alive:
                raise RuntimeError(f"anvil exited: see {o.logs / 'anvil.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not answer on {o.url} within {START_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def _deploy(self) -> None:
        o = self.options
        self.say("deploying (ape run deploy)…")
        keeper = self.w3.eth.accounts[KEEPER]
        # the liquidity vault's capital and the insurance fund's target are set before the
        # handover to the timelock (the owner's seeding is the only synchronous LP deposit)
        command = self._ape(
            "deploy", "--account", f"TEST::{DEPLOYER}", "--adl-keeper", keeper, "--out", str(o.deployments),
            "--seed-liquidity", "1000000", "--insurance-target", "100000",
        )
        with self._log("deploy") as log:
            result = subprocess.run(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=DEPLOY_TIMEOUT)
        if result.returncode != 0:
            tail = (o.logs / "deploy.log").read_text().splitlines()[-15:]
            raise RuntimeError("deployment failed:\n" + "\n".join(tail))

    def _seed(self) -> None:
        from perpdex.devnet_seed import seed

        self.say("seeding the liquidity vault and the insurance fund…")
        accounts = self.w3.eth.accounts
        self.seeded = seed(self.w3, self.options.manifest, accounts[DEPLOYER], accounts[PUSHER])

    def _pusher_args(self, source: str) -> list[str]:
        common = ["pusher", "--account", f"TEST::{PUSHER}", "--deployment", str(self.options.manifest)]
        return [*common, *(WINDOWS[source].pusher_args() if source in WINDOWS else WALK)]

    def _start_service(self, name: str, *args: str) -> Service:
        service = Service(name, list(args))
        service.process = self._spawn(self._ape(*args), name)
        self.services[name] = service
        return service

    @property
    def w3(self):
        from web3 import Web3

        if not hasattr(self, "_w3"):
            self._w3 = Web3(Web3.HTTPProvider(self.options.url, request_kwargs={"timeout": 30}))
        return self._w3

    # -- running ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Restart a keeper or pusher that exited (a CSV replay that ended continues as a
        random walk); raises when the node itself is gone."""
        if "anvil" in self.services and not self.services["anvil"].alive:
            raise RuntimeError(f"anvil exited: see {self.options.logs / 'anvil.log'}")
        for name in ("keeper", "pusher"):
            service = self.services.get(name)
            if service is None or service.alive:
                continue
            code = service.process.returncode
            if name == "pusher" and code == 0 and self.options.prices in WINDOWS and "--random-walk" not in service.args:
                self.say("the price path ended: the pusher continues with a random walk from the last prices")
                self._start_service("pusher", *self._pusher_args("walk"))
                continue
            service.restarts += 1
            self.say(f"the {name} exited with code {code} (see {self.options.logs / (name + '.log')}): restarting")
            self._start_service(name, *service.args).restarts = service.restarts

    def run(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Watch the processes until `stop` is set."""
        while not stop.wait(poll):
            self.check()

    def stop(self) -> None:
        """Stop every process this devnet started: the tools first, the node last."""
        for name in [n for n in self.services if n != "anvil"] + ["anvil"]:
            service = self.services.get(name)
            if service is not None and service.process is not None:
                stop_group(service.process)

    def __enter__(self) -> Devnet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what to tell the user -------------------------------------------------------------------

    def next_steps(self) -> list[str]:
        o = self.options
        lines = [f"devnet up on {o.url} (chain {CHAIN_ID}); manifest {shown(o.manifest)}; logs in {shown(o.logs)}/"]
        if self.seeded is not None:
            lines += ["  " + line for line in self.seeded.lines()]
        source = {"walk": "a random walk", "none": "none: push your own (see below)"}.get(o.prices, f"{o.prices} from data/prices, then a random walk")
        lines += [f"  prices           {source}", "", "In another terminal (from this directory):", ""]
        lines += [f"  {command}" for command in runbook(o)]
        if o.prices == "none":
            lines += ["", "  # nothing publishes prices: push your own, e.g. the March 2020 crash from data/prices",
                      f"  {csv_pusher_command()}"]
        lines += ["", "The trader's page (in another terminal), then open http://127.0.0.1:8000/:", "", f"  {web_command(o)}"]
        lines += ["", "Ctrl-C stops the devnet."]
        return lines


def runbook(options: DevnetOptions) -> list[str]:
    """The commands a newcomer runs against this devnet (README.md shows the same)."""
    commands = ["export PATH=$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"]
    if options.port != DEFAULT_PORT:
        commands.append(f"export APE_FOUNDRY_HOST={options.url}")
    suffix = " --account TEST::2"
    if options.manifest != DevnetOptions().manifest:
        suffix += f" --deployment {options.manifest}"
    steps = ["faucet 10000", "deposit 10000", "open BTC-USD 0.5 --slippage 0.5", "positions", "history",
             "close BTC-USD", "withdraw all"]
    return commands + [f"python -m perpdex.cli {step}{suffix}" for step in steps]


def web_command(options: DevnetOptions) -> str:
    """`make web` for this devnet: the page served on port 8000, reading this node and manifest."""
    command = "make web"
    if options.port != DEFAULT_PORT:
        command += f" PORT={options.port}"
    if options.manifest != DevnetOptions().manifest:
        command += f" MANIFEST={options.manifest}"
    return command


def csv_pusher_command() -> str:
    return (f"ape run pusher --network {NETWORK} --account TEST::{DEPLOYER} --csv BTC-USD=btc-usdt_2020-03_1h.csv "
            "--csv ETH-USD=eth-usdt_2020-03_1h.csv --start 2020-03-12 --speed 1800")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make devnet", description="A local perpdex devnet ready to trade.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PERPDEX_DEVNET_PORT", DEFAULT_PORT)),
                        help=f"anvil's port [default: $PERPDEX_DEVNET_PORT, else {DEFAULT_PORT}]")
    parser.add_argument("--prices", default="walk", choices=PRICE_SOURCES, help="the price source [default: walk]")
    parser.add_argument("--block-time", type=float, default=None,
                        help="seconds per block [default: a block per transaction]")
    args = parser.parse_args(argv)
    try:
        devnet = Devnet(DevnetOptions(port=args.port, prices=args.prices, block_time=args.block_time))
    except ValueError as err:
        parser.error(str(err))
    stop = threading.Event()
    try:
        devnet.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print("\n".join(devnet.next_steps()), flush=True)
        devnet.run(stop)
    except RuntimeError as err:
        print(f"devnet: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the devnet…", flush=True)
        devnet.stop()

if __name__ == "__main__":
    main()
