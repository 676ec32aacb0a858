#!/usr/bin/env bash
# `make devnet`: a local perpdex devnet. Starts anvil, deploys (idempotently), then runs the
# keeper (executes orders, liquidates, auto-deleverages) and the oracle price pusher as separate
# processes. Ctrl-C stops all.
#
# Trades are two-step orders: a market order executes at the first price round published at
# least min_order_delay (1 s, config/markets.json) after its commit. The pusher publishes a
# round of every market every 2 s (a random walk, 0.1 % per step), so the keeper executes a
# market order within a few seconds of its commit.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PERPDEX_DEVNET_PORT:-8545}"
NETWORK="ethereum:local:foundry"
LOGS=devnet-logs
mkdir -p "$LOGS"
pids=()
cleanup() {
  echo "stopping devnet"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

anvil --port "$PORT" --silent > "$LOGS/anvil.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  sleep 0.2
done
# ape-foundry connects to 127.0.0.1:8545 unless told otherwise (and would start its own anvil)
export APE_FOUNDRY_HOST="http://127.0.0.1:$PORT"
KEEPER=0x70997970C51812dc3A010C7d01b50e0d17dc79C8  # anvil test account 1
ape run deploy --network "$NETWORK" --account TEST::0 --adl-keeper "$KEEPER"
# the liquidity vault's capital: without it any trader's profit is above the PnL cap and the
# keeper auto-deleverages it within seconds
ape run trade faucet 1000000 --network "$NETWORK" --account TEST::0
ape run trade lp deposit 1000000 --network "$NETWORK" --account TEST::0
ape run keeper --network "$NETWORK" --account TEST::1 > "$LOGS/keeper.log" 2>&1 &
pids+=($!)
ape run pusher --network "$NETWORK" --account TEST::0 --random-walk --seed 7 --volatility 0.001 \
  --interval 60 --speed 30 > "$LOGS/pusher.log" 2>&1 &
pids+=($!)
echo "devnet up on http://127.0.0.1:$PORT (chain 31337); manifest deployments/31337.json"
echo "logs in $LOGS/ ; trade with (APE_FOUNDRY_HOST=$APE_FOUNDRY_HOST unless on port 8545):"
echo "  ape run trade faucet 10000 --network $NETWORK --account TEST::2    (mock USDC to the wallet)"
echo "  ape run trade deposit 10000 --network $NETWORK --account TEST::2"
echo "  ape run trade open BTC-USD 0.1 --network $NETWORK --account TEST::2   (a market order; waits for the keeper)"
wait
