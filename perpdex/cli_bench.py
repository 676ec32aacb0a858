"""`make cli-bench`: the wallet CLI against `cast`, command by command -> bench/cli.json.

Starts its own anvil (mining on demand, so no block time is in the figures), deploys with
`ape run deploy`, then times each wallet command (`python -m perpdex.cli ...`, a fresh process
each time, as a person runs it) and the same work done with `cast`: the same calls, one cast
process per call, as someone with only the manifest would type them (a `positions` reads what
the CLI shows: the account, the margin views and each open market's position, prices and
liquidation price). The wallet is anvil's account 2 (`--account TEST::2`), the cast user
account 3 (`cast send --unlocked --from`): the node signs for both, so both act alike on the
same kind of state. Each figure is the median of REPEATS runs, in seconds:

    {"command": {"perpdex": seconds, "cast": seconds}, ...}

Targets (see docs/cli.md): reads <= 2 s, writes <= 3 s plus block time, within 3x of cast.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perpdex.bench import anvil_node

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "cli.json"
REPEATS = 3
READ_LIMIT, WRITE_LIMIT, RATIO_LIMIT = 2.0, 3.0, 3.0
READS = ("markets", "positions", "orders", "history", "insurance", "lp requests")
MARKET, STATE_OPEN = 0, 1


class CliBench:
    def __init__(self, url: str, manifest_path: Path):
        from web3 import Web3

        self.url, self.path = url, manifest_path
        self.manifest = json.loads(manifest_path.read_text())
        self.w3 = Web3(Web3.HTTPProvider(url))
        self.c = {n: self.w3.eth.contract(address=e["address"], abi=e["abi"])
                  for n, e in self.manifest["contracts"].items() if e["abi"]}
        self.addr = {n: e["address"] for n, e in self.manifest["contracts"].items()}
        self.me = self.w3.eth.accounts[2]  # the CLI's wallet (TEST::2)
        self.other = self.w3.eth.accounts[3]  # the cast user's
        self.cast = shutil.which("cast")
        if self.cast is None:
            raise SystemExit("cast is not on PATH: `make cli-bench` installs it (node_modules/.bin/cast)")
        self.env = {**os.environ, "PERPDEX_RPC_URL": url, "PYTHONWARNINGS": "ignore"}
        self.times: dict[str, dict[str, list[float]]] = {}

    # -- running ---------------------------------------------------------------------------

    def _timed(self, argv_list: list[list[str]]) -> float:
        start = time.perf_counter()
        for argv in argv_list:
            result = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return time.perf_counter() - start

    def perpdex(self, name: str, *args: str) -> None:
        argv = [sys.executable, "-m", "perpdex.cli", *args, "--deployment", str(self.path)]
        if name not in ("markets", "insurance"):
            argv += ["--account", "TEST::2"]
        self.times.setdefault(name, {"perpdex": [], "cast": []})["perpdex"].append(self._timed([argv]))

    def with_cast(self, name: str, *calls: list[str]) -> None:
        argv_list = []
        for call in calls:
            extra = ["--unlocked", "--from", self.other] if call[0] == "send" else []
            argv_list.append([self.cast, *call, "--rpc-url", self.url, *extra])
        self.times.setdefault(name, {"perpdex": [], "cast": []})["cast"].append(self._timed(argv_list))

    # -- chain helpers (not timed) ---------------------------------------------------------

    def execute_pending(self) -> None:
        """Publish a BTC round after the orders' delay and execute every open market order of
        both wallets as anvil's account 1 (a keeper)."""
        book = self.c["order_book"]
        agg = self.w3.eth.contract(address=self.manifest["markets"][MARKET]["aggregators"][0],
                                   abi=self.c[f"aggregator_{self.manifest['markets'][MARKET]['symbol']}"].abi)
        self.w3.provider.make_request("evm_increaseTime", [2])
        deployer, keeper = self.w3.eth.accounts[0], self.w3.eth.accounts[1]
        agg.functions.update_answer(agg.functions.latestAnswer().call()).transact({"from": deployer})
        round_id = agg.functions.latestRound().call()
        for owner in (self.me, self.other):
            for order_id in book.functions.open_orders(owner, 0).call():
                if book.functions.order(order_id).call()[5] == 0:  # kind: market
                    book.functions.execute_order(order_id, [round_id]).transact({"from": keeper, "gas": 3_000_000})

    def open_order_of(self, owner: str) -> int:
        return self.c["order_book"].functions.open_orders(owner, 0).call()[-1]

    # -- the rounds ------------------------------------------------------------------------

    def round(self) -> None:
        a, other = self.addr, self.other
        usdc, vault, book, ex, lv = a["collateral"], a["vault"], a["order_book"], a["exchange"], a["liquidity_vault"]
        self.perpdex("faucet", "faucet", "10000")
        self.with_cast("faucet", ["send", usdc, "faucet(uint256)", "10000000000"],
                       ["call", usdc, "balanceOf(address)(uint256)", other])
        self.perpdex("deposit", "deposit", "4000")
        self.with_cast("deposit", ["call", usdc, "balanceOf(address)(uint256)", other],
                       ["send", usdc, "approve(address,uint256)", vault, "4000000000"],
                       ["send", vault, "deposit(uint256,uint256)", "0", "4000000000"],
                       ["call", vault, "cash(address,uint256)(int256)", other, "0"])
        self.perpdex("withdraw", "withdraw", "100")
        self.with_cast("withdraw", ["send", vault, "withdraw(uint256,uint256)", "0", "100000000"],
                       ["call", vault, "cash(address,uint256)(int256)", other, "0"])
        self.perpdex("lp deposit --no-wait", "lp", "deposit", "1000", "--no-wait")
        self.with_cast("lp deposit --no-wait", ["call", lv, "lp_params()((uint256,uint256,uint256,uint256))"],
                       ["send", usdc, "approve(address,uint256)", lv, "1000000000"],
                       ["send", lv, "request_deposit(uint256,address)", "1000000000", other])
        limit = ["send", book, "commit_order(uint256,uint256,int256,uint256,uint256,uint256,bool,uint256)",
                 "0", "0", "100000000000000000", "30150000000000000000000", "1", "30000000000000000000000", "false", "0"]
        self.perpdex("order limit", "order", "limit", "BTC-USD", "0.1", "--price", "30000")
        self.with_cast("order limit", ["call", ex, "index_price(uint256)(uint256)", "0"], limit)
        self.perpdex("cancel", "cancel", hex(self.open_order_of(self.me)))
        self.with_cast("cancel", ["send", book, "cancel_order(uint256)", str(self.open_order_of(other))])
        fill = ["call", ex, "fill_price(uint256,int256)(uint256)", "0", "100000000000000000"]
        market = ["send", book, "commit_order(uint256,uint256,int256,uint256,uint256,uint256,bool,uint256)",
                  "0", "0", "100000000000000000", "40300000000000000000000", "0", "0", "false", "0"]
        self.perpdex("open --no-wait", "open", "BTC-USD", "0.1", "--no-wait")
        self.with_cast("open --no-wait", fill, market)
        self.execute_pending()
        # a resting order for `orders` to list (not timed)
        subprocess.run([sys.executable, "-m", "perpdex.cli", "order", "limit", "BTC", "0.1", "--price", "30000",
                        "--account", "TEST::2", "--deployment", str(self.path)], cwd=REPO, env=self.env,
                       capture_output=True, check=True)
        self.reads()
        close = ["send", book, "commit_order(uint256,uint256,int256,uint256,uint256,uint256,bool,uint256)",
                 "0", "0", "-100000000000000000", "39700000000000000000000", "0", "0", "true", "0"]
        self.perpdex("close --no-wait", "close", "BTC-USD", "--no-wait")
        self.with_cast("close --no-wait", ["call", ex, "position_state(address,uint256,uint256)(int256,int256,int256)",
                                           other, "0", "0"],
                       ["call", ex, "fill_price(uint256,int256)(uint256)", "0", "-100000000000000000"], close)
        self.execute_pending()

    def reads(self) -> None:
        a, other = self.addr, self.other
        ex, liq, book, vault, fund = a["exchange"], a["liquidator"], a["order_book"], a["vault"], a["insurance_fund"]
        per_market = ["index_price", "mark_price", "skew", "open_interest", "funding_rate", "market_params"]
        returns = {"open_interest": "(uint256,uint256)", "skew": "(int256)", "funding_rate": "(int256)",
                   "market_params": "((uint256,uint256,uint256,uint256,uint256,uint256,uint256,uint256,uint256,"
                                    "uint256,uint256))"}
        calls = []
        for m in self.manifest["markets"]:
            for fn in per_market:
                calls.append(["call", ex, f"{fn}(uint256){returns.get(fn, '(uint256)')}", str(m["id"])])
            calls.append(["call", liq, "pnl_factor(uint256)(uint256)", str(m["id"])])
        self.perpdex("markets", "markets")
        self.with_cast("markets", *calls)

        pos = [["call", vault, "account(address,uint256)(int256,uint256)", other, "0"],
               ["call", book, "open_orders(address,uint256)(uint256[])", other, "0"],
               ["call", ex, "account_state(address,uint256)(int256,int256,uint256,uint256)", other, "0"],
               ["call", ex, "withdrawable(address,uint256)(uint256)", other, "0"],
               ["call", liq, "is_liquidatable(address,uint256)(bool)", other, "0"],
               ["call", ex, "position(address,uint256,uint256)(int256,uint256,int256,int256)", other, "0", "0"],
               ["call", ex, "index_price(uint256)(uint256)", "0"], ["call", ex, "mark_price(uint256)(uint256)", "0"],
               ["call", liq, "liquidation_price(address,uint256,uint256)(uint256)", other, "0", "0"]]
        self.perpdex("positions", "positions")
        self.with_cast("positions", *pos)

        order_sig = "order(uint256)((address,uint256,uint256,int256,uint256,uint256,uint256,bool,uint256,uint256," \
                    "uint256,uint256,uint256))"
        self.perpdex("orders", "orders")
        self.with_cast("orders", ["call", book, "open_orders(address,uint256)(uint256[])", other, "0"],
                       ["call", book, order_sig, str(self.open_order_of(self.me))],
                       ["call", book, "order_params()((uint256,uint256,uint256,uint256))"],
                       ["block", "latest", "--field", "timestamp"])

        topic = "0x" + other.lower()[2:].rjust(64, "0")
        addresses = [a[n] for n in ("vault", "exchange", "order_book", "liquidator")]
        logs = [["rpc", "eth_getLogs", json.dumps({"address": addresses, "fromBlock": "0x0", "topics": [None] * k + [topic]})]
                for k in (1, 2)]
        self.perpdex("history", "history")
        self.with_cast("history", *logs, ["block", "latest", "--field", "timestamp"])

        lv = a["liquidity_vault"]
        self.perpdex("lp requests", "lp", "requests")
        self.with_cast("lp requests", ["rpc", "eth_getLogs", json.dumps({"address": lv, "fromBlock": "0x0",
                                                                          "topics": [None, None, topic]})],
                       ["call", lv, "request(uint256)((address,address,bool,uint256,uint256,uint256,uint256))", "2"],
                       ["block", "latest", "--field", "timestamp"])

        self.perpdex("insurance", "insurance")
        self.with_cast("insurance", ["call", fund, "fund_balance()(int256)"], ["call", fund, "target()(uint256)"],
                       ["call", fund, "surplus()(uint256)"],
                       *[["call", liq, f"{fn}(uint256)({t})", str(m["id"])] for m in self.manifest["markets"]
                         for fn, t in (("uncovered_deficit", "uint256"), ("deficit_side", "int256"))])


def deploy(url: str, out: Path) -> Path:
    env = {**os.environ, "APE_FOUNDRY_HOST": url, "PYTHONWARNINGS": "ignore"}
    ape = str(Path(sys.executable).with_name("ape"))
    result = subprocess.run([ape, "run", "deploy", "--network", "ethereum:local:foundry", "--account", "TEST::0",
                             "--out", str(out), "--seed-liquidity", "1000000"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"ape run deploy failed:\n{result.stdout}\n{result.stderr}")
    return next(out.glob("*.json"))


def measure() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp, anvil_node(start_time=int(time.time())) as url:
        print(f"anvil at {url}; deploying ...", flush=True)
        bench = CliBench(url, deploy(url, Path(tmp)))
        for i in range(REPEATS):
            print(f"round {i + 1} of {REPEATS} ...", flush=True)
            bench.round()
    return {name: {tool: round(statistics.median(t), 3) for tool, t in runs.items() if t}
            for name, runs in bench.times.items()}


def report(figures: dict[str, dict[str, float]]) -> list[str]:
    """The table, and the commands over a target."""
    over = []
    print(f"{'command':<18}{'perpdex (s)':>12}{'cast (s)':>10}{'ratio':>8}")
    for name, f in figures.items():
        ratio = f["perpdex"] / f["cast"]
        limit = READ_LIMIT if name in READS else WRITE_LIMIT
        flag = ""
        if f["perpdex"] > limit or ratio > RATIO_LIMIT:
            flag = "  over target"
            over.append(name)
        print(f"{name:<18}{f['perpdex']:>12.3f}{f['cast']:>10.3f}{ratio:>8.2f}{flag}")
    return over


def main() -> None:
    figures = measure()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    over = report(figures)
    print(f"written {OUT}")
    if over:
        raise SystemExit(f"over target (reads <= {READ_LIMIT} s, writes <= {WRITE_LIMIT} s, <= {RATIO_LIMIT}x cast): "
                         f"{', '.join(over)}")


if __name__ == "__main__":
    main()
