#!/usr/bin/env bash
# perpdex with cast (foundry) and the deployment manifest only: faucet, deposit, a market order
# executed by the devnet's keeper, the position, then a withdrawal of what is free (less 1 %).
#
#   RPC_URL=http://127.0.0.1:8545 MANIFEST=deployments/31337.json PRIVATE_KEY=0x... \
#       bash examples/cast_walkthrough.sh
#
# Needs cast and jq. Units: token units (6 decimals) into faucet/approve/deposit/withdraw;
# sizes and prices in WAD (18 decimals); cash, withdrawable and prices come out in WAD.
set -euo pipefail
RPC_URL="${RPC_URL:-http://127.0.0.1:8545}"
MANIFEST="${MANIFEST:-deployments/31337.json}"
: "${PRIVATE_KEY:?set PRIVATE_KEY to the key of the wallet, e.g. a devnet test key}"
export ETH_RPC_URL="$RPC_URL"
addr() { jq -r ".contracts.$1.address" "$MANIFEST"; }
USDC=$(addr collateral); VAULT=$(addr vault); EX=$(addr exchange); BOOK=$(addr order_book)
ME=$(cast wallet address --private-key "$PRIVATE_KEY")
SEND=(--private-key "$PRIVATE_KEY")
echo "wallet $ME"

# 1,000 USD = 1000 * 10^6 token units
cast send "$USDC" "faucet(uint256)" 1000000000 "${SEND[@]}" > /dev/null
cast send "$USDC" "approve(address,uint256)" "$VAULT" 1000000000 "${SEND[@]}" > /dev/null
cast send "$VAULT" "deposit(uint256,uint256)" 0 1000000000 "${SEND[@]}" > /dev/null
echo "cash (WAD): $(cast call "$VAULT" "cash(address,uint256)(int256)" "$ME" 0)"

# buy 0.01 BTC (market 0) within 1 % of the quote: size and prices in WAD
SIZE=10000000000000000
QUOTE=$(cast call "$EX" "fill_price(uint256,int256)(uint256)" 0 "$SIZE" | cut -d' ' -f1)
BOUND=$(python3 -c "print($QUOTE * 101 // 100)")
echo "quote (WAD): $QUOTE, acceptable up to $BOUND"
# commit_order(sub_account, market_id, size_delta, acceptable_price, kind 0 = market, trigger 0, reduce_only, expiry 0)
cast send "$BOOK" "commit_order(uint256,uint256,int256,uint256,uint256,uint256,bool,uint256)" \
  0 0 "$SIZE" "$BOUND" 0 0 false 0 "${SEND[@]}" > /dev/null
ORDER=$(cast call "$BOOK" "open_orders(address,uint256)(uint256[])" "$ME" 0 | tr -d '[]' | cut -d' ' -f1)
echo "order $ORDER committed; waiting for a keeper to execute it at the next price"
for _ in $(seq 120); do
  [ "$(cast call "$BOOK" "pending_market_orders(address,uint256)(uint256)" "$ME" 0)" = "0" ] && break
  sleep 0.5
done
[ "$(cast call "$BOOK" "pending_market_orders(address,uint256)(uint256)" "$ME" 0)" = "0" ] \
  || { echo "no keeper executed the order within 60 s (is the devnet running?)" >&2; exit 1; }
echo "position (size, entry, unrealized PnL, funding; WAD):"
cast call "$EX" "position(address,uint256,uint256)(int256,uint256,int256,int256)" "$ME" 0 0

# withdraw what is free, less 1 % (WAD -> whole token units): funding accrues and the price
# moves between this read and the block the withdrawal lands in, so exactly the limit can revert
FREE=$(cast call "$EX" "withdrawable(address,uint256)(uint256)" "$ME" 0 | cut -d' ' -f1)
UNITS=$(python3 -c "print($FREE * 99 // 100 // 10**12)")
# the gas limit: the estimate plus half, as wallets do (the estimate is made on the latest block,
# the transaction runs in the next one)
GAS=$(cast estimate "$VAULT" "withdraw(uint256,uint256)" 0 "$UNITS" --from "$ME")
RECEIPT=$(cast send "$VAULT" "withdraw(uint256,uint256)" 0 "$UNITS" "${SEND[@]}" --gas-limit $((GAS * 3 / 2)) --json)
STATUS=$(jq -r .status <<< "$RECEIPT")
if [ "$STATUS" != "0x1" ]; then
  echo "the withdrawal reverted (receipt status $STATUS, gas used $(jq -r .gasUsed <<< "$RECEIPT") of" \
    "$((GAS * 3 / 2)), block $(jq -r .blockNumber <<< "$RECEIPT")); the same call now says:" >&2
  cast call "$VAULT" "withdraw(uint256,uint256)" 0 "$UNITS" --from "$ME" >&2 || true
  exit 1
fi
echo "withdrew $UNITS token units; wallet balance: $(cast call "$USDC" "balanceOf(address)(uint256)" "$ME")"
