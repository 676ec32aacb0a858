"""The crash-replay simulator: any price path replayed against the compiled contracts on
titanoboa, a seeded population trading through the order book, the keeper's decision core acting
after every oracle round, DESIGN.md's invariants checked from storage at every step, a report.

- `publication`: candles to Chainlink-style rounds (deviation and heartbeat along each candle).
- `population`: the seeded traders, LPs and whales.
- `chain`: the deployment on titanoboa, the fixed clock, transactions and their events.
- `evm`: titanoboa's interpreter without the bookkeeping a replay never reads (docs/sim.md).
- `transport`: the keeper's transport on that chain (the keeper itself is perpdex.keeper's).
- `config`: what a run is; `runner`: the replay loop; `invariants`: the checks.
- `report`, `charts`: report.json, report.md, report.png in a run directory of its own.
- `sweep`: parameter grids in local processes or on a Dask cluster.
- `demo`: `make demo`'s preset, one replay of the crash told as a short story.
Run it with `python -m perpdex.sim --help`; `make sim-bench` measures it (docs/sim.md).
"""
