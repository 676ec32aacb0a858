"""`make sim-bench`: the simulator's speed, written to bench/sim.json.

Measurements in one process, on the same contracts:
- **raw**: titanoboa's rate for plain trades, a loop of commit_order + execute_order market
  orders with nothing else (no keeper, no checks): `raw_tx_per_s` on titanoboa as installed,
  `raw_tx_per_s_lean` on the lean interpreter the simulation runs on (perpdex.sim.evm);
- **simulation**: the March 2020 window (216 hourly steps) with `--accounts` traders, the
  keeper acting after every round and the invariants checked every step: `tx_per_s` over the
  replay (setup, i.e. compilation, deployment and sampling, in `setup_seconds`);
  `ratio_to_raw` and `ratio_to_lean_raw` divide it by the two raw rates.

    python -m perpdex.sim.bench [--accounts 5000] [--out bench/sim.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import boa

from perpdex.fixed_point import WAD
from perpdex.orders import KIND_MARKET
from perpdex.sim.config import SimConfig
from perpdex.sim.evm import fast_evm
from perpdex.sim.runner import Simulation

OUT = Path(__file__).resolve().parent.parent.parent / "bench" / "sim.json"


def raw_rate(sim: Simulation, trades: int = 200) -> float:
    """Transactions per second of bare commit + execute pairs on the simulation's deployment
    (run as a simulation: the replay's state and event log are left as they were)."""
    d, chain = sim.d, sim.chain
    with chain.simulation():
        traders = [boa.env.generate_address(f"raw-{i}") for i in range(trades)]
        for who in traders:
            sim._mint(who, 10_000, d.vault)
            chain.transact(who, d.vault.deposit, 0, 10_000 * 10**6)
        price = sim.answers[0] * 10**10
        started, sent = time.perf_counter(), 0
        ids = []
        for i, who in enumerate(traders):
            side = 1 if i % 2 else -1
            receipt = chain.transact(who, d.order_book.commit_order, 0, 0, side * WAD // 100,
                                     price * 2 if side > 0 else 0, KIND_MARKET, 0, False, 0)
            ids.append(int(receipt.result))
            sent += 1
        chain.set_time(chain.now + 2)
        chain.transact(sim.owner, d.aggregators[0].update_answer, sim.answers[0])
        round_id = d.aggregators[0].latestRound()
        for order_id in ids:
            chain.transact(sim.keeper_address, d.order_book.execute_order, order_id, [round_id])
            sent += 1
        return sent / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    sim = Simulation(SimConfig().replace(traders=args.accounts), progress=True)
    with fast_evm():
        sim.prepare()
    raw = raw_rate(sim)
    with fast_evm():
        lean = raw_rate(sim)
        started = time.perf_counter()
        sim.replay()
        seconds = time.perf_counter() - started
    sim.timing.replay = seconds
    rate = sim.chain.transactions / seconds
    result = {
        "accounts": args.accounts, "steps": len(sim.steps), "transactions": sim.chain.transactions,
        "seconds": round(seconds, 2), "tx_per_s": round(rate, 2),
        "raw_tx_per_s": round(raw, 2), "raw_tx_per_s_lean": round(lean, 2),
        "ratio_to_raw": round(rate / raw, 3), "ratio_to_lean_raw": round(rate / lean, 3),
        "setup_seconds": round(sim.timing.setup, 2),
        "seconds_by_phase": {k: round(v, 2) for k, v in asdict(sim.timing).items()},
        "seconds_per_step": round(seconds / len(sim.steps), 3),
        "rounds": len(sim.rounds),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
