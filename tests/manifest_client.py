"""A client that is not ours: plain web3.py, the deployment manifest's addresses and ABIs, and
its own key. Nothing from perpdex or ape. Used on ape's embedded chain
(tests/integration/test_manifest_client.py) and on a real anvil node (tests/anvil).

Trading is two-step: the wallet commits a market order to the order book, and the order
executes at the first oracle round published at least `min_order_delay` after the commit. The
client executes it itself as any keeper may (naming that round), unless a keeper was faster.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

WAD = 10**18
MARKET_ORDER, STATE_OPEN = 0, 1


def first_round_from(aggregator, not_before: int) -> int | None:
    """The id of the first round of `aggregator` published at or after `not_before` (the round
    before it published earlier), or None while there is none yet. Walks back from the latest."""
    round_id, _, _, updated, _ = aggregator.functions.latestRoundData().call()
    if updated < not_before:
        return None
    while True:
        _, _, _, previous_updated, _ = aggregator.functions.getRoundData(round_id - 1).call()
        if previous_updated < not_before:
            return round_id
        round_id -= 1


def deposit_and_trade(
    w3: Web3,
    manifest: dict,
    fund_gas: Callable[[str], None],
    publish_round: Callable[[], None] | None = None,
    timeout: float = 60.0,
) -> dict:
    """A fresh wallet takes devnet USDC from the token's faucet, deposits 5,000 into
    sub-account 0, commits a market order buying 0.05 BTC within 1 % of the quote and has it
    executed at the first round after the order's delay; asserts each outcome on chain.
    `fund_gas(address)` gives the wallet ether for gas; `publish_round()`, when given, publishes
    the next oracle round (as the devnet pusher does), else the client waits up to `timeout`
    seconds for one. Returns the OrderExecuted event's arguments."""
    chain_id = w3.eth.chain_id
    assert manifest["chain_id"] == chain_id
    contract = {
        name: w3.eth.contract(address=entry["address"], abi=entry["abi"])
        for name, entry in manifest["contracts"].items()
        if entry["abi"]
    }
    wallet = Account.create()
    fund_gas(wallet.address)
    nonce = w3.eth.get_transaction_count(wallet.address)

    def send(call) -> dict:
        nonlocal nonce
        call.call({"from": wallet.address})  # simulate first: a refusal raises with its reason
        tx = call.build_transaction({"from": wallet.address, "nonce": nonce, "gas": 1_000_000, "chainId": chain_id})
        nonce += 1
        signed = wallet.sign_transaction(tx)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        assert receipt.status == 1
        return receipt

    usdc, vault, exchange, book = (contract[n] for n in ("collateral", "vault", "exchange", "order_book"))
    send(usdc.functions.faucet(5_000 * 10**6))  # the devnet token's faucet
    send(usdc.functions.approve(vault.address, 2**256 - 1))
    send(vault.functions.deposit(0, 5_000 * 10**6))
    assert vault.functions.cash(wallet.address, 0).call() == 5_000 * WAD

    market = next(m for m in manifest["markets"] if m["symbol"] == "BTC-USD")
    btc = market["id"]
    size = WAD // 20
    quote = exchange.functions.fill_price(btc, size).call()
    acceptable = quote * 101 // 100
    fee = book.functions.order_params().call()[2]
    receipt = send(book.functions.commit_order(0, btc, size, acceptable, MARKET_ORDER, 0, False, 0))
    (committed,) = book.events.OrderCommitted().process_receipt(receipt, errors=DISCARD)
    order_id, not_before = committed.args.order_id, committed.args.not_before
    assert committed.args.fee == fee and vault.functions.cash(wallet.address, 0).call() == 5_000 * WAD - fee
    assert book.functions.open_orders(wallet.address, 0).call() == [order_id]
    assert book.functions.pending_market_orders(wallet.address, 0).call() == 1

    # the execution round: one per feed of the market, each the first published after the delay
    feeds = [w3.eth.contract(address=a, abi=contract[f"aggregator_{market['symbol']}"].abi)
             for a in market["aggregators"]]
    deadline = time.monotonic() + timeout
    while True:
        if book.functions.order(order_id).call()[11] != STATE_OPEN:  # a keeper executed it first
            break
        rounds = [first_round_from(feed, not_before) for feed in feeds]
        if None not in rounds:
            send(book.functions.execute_order(order_id, rounds))
            break
        assert time.monotonic() < deadline, f"no oracle round published at or after {not_before} within {timeout} s"
        if publish_round:
            publish_round()
        else:
            time.sleep(0.5)

    (executed,) = book.events.OrderExecuted().get_logs(
        from_block=receipt.blockNumber, argument_filters={"order_id": order_id}
    )
    assert executed.args.owner == wallet.address and executed.args.size_delta == size
    assert executed.args.fill_price <= acceptable
    assert executed.args.round_published >= not_before
    size_now, entry, _, _ = exchange.functions.position(wallet.address, 0, btc).call()
    assert size_now == size
    assert abs(entry - executed.args.fill_price) <= 20  # entry = open notional (fill x size, to the wei) / size
    assert book.functions.open_orders(wallet.address, 0).call() == []
    assert book.functions.pending_market_orders(wallet.address, 0).call() == 0
    return dict(executed.args)
