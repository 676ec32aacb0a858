"""Trade on perpdex with plain web3.py and the deployment manifest, nothing else.

    python examples/trade_web3.py --rpc-url http://127.0.0.1:8545 --manifest deployments/31337.json \
        --private-key 0x...   (a devnet's test key: anvil prints them; the devnet mints via the faucet)

Takes 1,000 USD from the devnet token's faucet, deposits it, commits a market order buying
0.01 BTC within 1 % of the quote, waits (at most 60 s) for a keeper to execute it at the next
oracle round, prints the position, then closes it the same way and withdraws everything.

Units: collateral amounts going in (faucet, approve, deposit, withdraw) are token units
(USDC: 6 decimals); sizes and prices going in, and every amount coming out (cash,
withdrawable, fill prices, PnL), are WAD (18 decimals). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from eth_account import Account
from web3 import Web3

WAD = 10**18
MARKET_ORDER, STATE_OPEN = 0, 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    parser.add_argument("--manifest", default="deployments/31337.json")
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each execution")
    args = parser.parse_args()

    w3 = Web3(Web3.HTTPProvider(args.rpc_url))
    manifest = json.load(open(args.manifest))
    assert w3.eth.chain_id == manifest["chain_id"], "the manifest is for another chain"
    c = {name: w3.eth.contract(address=e["address"], abi=e["abi"]) for name, e in manifest["contracts"].items()}
    usdc, vault, exchange, book = c["collateral"], c["vault"], c["exchange"], c["order_book"]
    me = Account.from_key(args.private_key)
    decimals = usdc.functions.decimals().call()

    def send(call):
        """Simulate (eth_call: a refusal raises with the contract's reason), sign, send, wait."""
        call.call({"from": me.address})
        tx = call.build_transaction({"from": me.address, "nonce": w3.eth.get_transaction_count(me.address)})
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(me.sign_transaction(tx).raw_transaction), timeout=60)
        assert receipt.status == 1
        return receipt

    def trade(size: int, reduce_only: bool) -> dict:
        """Commit a market order of `size` (WAD) and wait for the keeper's execution."""
        quote = exchange.functions.fill_price(0, size).call()  # market 0: BTC-USD
        bound = quote * 101 // 100 if size > 0 else quote * 99 // 100
        receipt = send(book.functions.commit_order(0, 0, size, bound, MARKET_ORDER, 0, reduce_only, 0))
        order_id = book.events.OrderCommitted().process_receipt(receipt)[0].args.order_id
        deadline = time.monotonic() + args.timeout
        while book.functions.order(order_id).call()[11] == STATE_OPEN:  # field 11: state
            if time.monotonic() > deadline:
                sys.exit(f"no keeper executed order {order_id:#x} within {args.timeout} s (is the devnet running?)")
            time.sleep(0.5)
        executed = book.events.OrderExecuted().get_logs(from_block=receipt.blockNumber,
                                                        argument_filters={"order_id": order_id})
        if not executed:
            sys.exit(f"order {order_id:#x} was cancelled (see its OrderCancelled event)")
        return dict(executed[0].args)

    amount = 1_000 * 10**decimals  # 1,000 USD in token units
    send(usdc.functions.faucet(amount))
    send(usdc.functions.approve(vault.address, amount))
    send(vault.functions.deposit(0, amount))
    print(f"deposited 1,000 USD: cash {vault.functions.cash(me.address, 0).call() / WAD:,.2f} USD")

    fill = trade(WAD // 100, reduce_only=False)  # buy 0.01 BTC
    size, entry, pnl, _ = exchange.functions.position(me.address, 0, 0).call()
    print(f"bought 0.01 BTC-USD at {fill['fill_price'] / WAD:,.2f}; position {size / WAD} at {entry / WAD:,.2f}, "
          f"PnL {pnl / WAD:,.2f} USD")

    trade(-size, reduce_only=True)
    free = exchange.functions.withdrawable(me.address, 0).call()  # WAD
    units = free * 10**decimals // WAD  # whole token units
    send(vault.functions.withdraw(0, units))
    print(f"closed; withdrew {units / 10**decimals:,.2f} USD; wallet {usdc.functions.balanceOf(me.address).call() / 10**decimals:,.2f} USD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
