#!/usr/bin/env bash
# `make devnet [PORT=8545] [PRICES=walk|none|march-2020|august-2024]`: a local perpdex devnet
# ready to trade (anvil, deployment, seeded liquidity vault and insurance fund, keeper, price
# pusher). Options pass through: scripts/devnet.sh --port 9545 --prices none. See perpdex/devnet.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PWD/.venv/bin:$PATH"
exec python -m perpdex.devnet "$@"
