"""`history`: what happened to a sub-account, from the contracts' events, in USD.

Deposits and withdrawals (Vault), orders committed, executed and cancelled (OrderBook), fills
with their fee, realized PnL and funding (Exchange.Trade), liquidations with their penalty
(Liquidator.Liquidation), bad debt (Liquidator.BadDebt: what the insurance fund covered, and
DeficitRecorded: what it could not), its write-off by the liquidity vault
(Liquidator.DeficitWrittenOff), auto-deleveraging with its haircut (Liquidator.AutoDeleveraged),
and the wallet's liquidity vault requests, executions and cancellations (LiquidityVault; they
belong to the wallet, so every sub-account's history shows them). Two eth_getLogs in one batch
(the owner as the first or second topic), then one batch for the blocks' times.
"""

from __future__ import annotations

from dataclasses import dataclass

from perpdex.orders import KIND_NAMES
from perpdex.wallet.client import Wallet
from perpdex.wallet.rpc import Event, Failure
from perpdex.wallet.units import CliError, base_amount, price, tokens, usd, utc_time

SOURCES = ("vault", "exchange", "order_book", "liquidator", "liquidity_vault")
ADL_TRIGGERS = {0: "PnL factor above the cap", 1: "a deficit to cover"}


@dataclass(frozen=True)
class Entry:
    block: int
    index: int
    time: int
    kind: str
    text: str


def _describe(w: Wallet, e: Event, decimals: int) -> tuple[str, str] | None:
    a = e.args
    symbol = w.symbol(a.market_id) if hasattr(a, "market_id") else ""
    if e.name == "Deposit" and e.address.lower() == w.vault.address.lower():
        return "deposit", f"+{tokens(a.amount, decimals)} USD"
    if e.name == "Withdraw" and e.address.lower() == w.vault.address.lower():
        return "withdraw", f"-{tokens(a.amount, decimals)} USD"
    if e.name == "OrderCommitted":
        side = "buy" if a.size_delta > 0 else "sell"
        trigger = f" at {price(a.trigger_price)}" if a.trigger_price else ""
        return "order", (f"{a.order_id:#x} committed: {KIND_NAMES.get(a.kind, a.kind)} {side} {base_amount(a.size_delta)} "
                         f"{symbol}{trigger}; execution fee {usd(a.fee)} escrowed")
    if e.name == "OrderExecuted":
        return "order", f"{a.order_id:#x} executed at {price(a.fill_price)} (index {price(a.index_price)})"
    if e.name == "OrderCancelled":
        refund = "refunded" if a.fee_to.lower() == a.owner.lower() else "to the canceller"
        return "order", f"{a.order_id:#x} cancelled ({a.reason}); execution fee {usd(a.fee)} {refund}"
    if e.name == "Trade":
        side = "bought" if a.size_delta > 0 else "sold"
        return "fill", (f"{side} {base_amount(a.size_delta)} {symbol} at {price(a.fill_price)}; fee {usd(a.fee)}, "
                        f"realized PnL {usd(a.realized_pnl)}, funding paid {usd(a.funding_paid)}; "
                        f"position {base_amount(a.new_size) if a.new_size >= 0 else '-' + base_amount(a.new_size)}")
    if e.name == "Liquidation":
        closed = "fully" if a.fully_closed else "partly"
        return "liquidation", (f"{closed} liquidated: {usd(a.closed_notional)} USD of notional closed, penalty "
                               f"{usd(a.penalty)} (keeper {usd(a.keeper_reward)}, insurance {usd(a.to_insurance)}); "
                               f"equity after {usd(a.equity_after)}")
    if e.name == "BadDebt":
        return "bad debt", (f"bad debt {usd(a.deficit)} USD: {usd(a.covered_by_insurance)} covered by the insurance "
                            f"fund, {usd(a.uncovered)} uncovered")
    if e.name == "DeficitRecorded":
        return "bad debt", (f"uncovered deficit {usd(a.amount)} USD recorded in {symbol}: auto-deleveraging or, "
                            "failing that, a write-off pays it back")
    if e.name == "DeficitWrittenOff":
        return "write-off", (f"deficit in {symbol} written off: the liquidity vault paid {usd(a.amount)} USD "
                             "to bring the cash back to zero")
    lp = _describe_lp(e, decimals)
    if lp is not None:
        return "LP", lp
    if e.name == "AutoDeleveraged":
        return "ADL", (f"auto-deleveraged ({ADL_TRIGGERS.get(a.trigger, a.trigger)}): {base_amount(a.size_closed)} "
                       f"{symbol} closed at {price(a.price)}, realized PnL {usd(a.realized_pnl)}, haircut {usd(a.haircut)}")
    return None


def _describe_lp(e: Event, decimals: int) -> str | None:
    a = e.args
    if e.name == "DepositRequested":
        return f"request {a.request_id}: deposit of {tokens(a.assets, decimals)} USD requested"
    if e.name == "RedeemRequested":
        return f"request {a.request_id}: redemption of {base_amount(a.shares)} LP shares requested"
    if e.name == "DepositExecuted":
        return (f"request {a.request_id} executed: {tokens(a.assets, decimals)} USD deposited for "
                f"{base_amount(a.shares)} LP shares (vault valued at {tokens(a.total_assets, decimals)} USD)")
    if e.name == "RedeemExecuted":
        return (f"request {a.request_id} executed: {base_amount(a.shares)} LP shares redeemed for "
                f"{tokens(a.assets, decimals)} USD (vault valued at {tokens(a.total_assets, decimals)} USD)")
    if e.name == "RequestCancelled":
        back = f"{base_amount(a.amount)} LP shares" if a.redemption else f"{tokens(a.amount, decimals)} USD"
        return f"request {a.request_id} cancelled ({a.reason}): {back} returned"
    return None


def _sub_account(e: Event) -> int | None:
    return getattr(e.args, "sub_account", None)


def read_history(w: Wallet, owner: str, sub: int, start: int | None = None, limit: int = 50) -> list[Entry]:
    start = w.deploy_block if start is None else start
    who = "0x" + owner.lower().removeprefix("0x").rjust(64, "0")
    sources = [n for n in SOURCES if n in w.contracts]
    addresses = [w.contracts[n].address for n in sources]
    base = {"address": addresses, "fromBlock": hex(start), "toBlock": "latest"}
    answers = w.rpc.batch([("eth_getLogs", [{**base, "topics": [None] * k + [who]}]) for k in (1, 2)])
    by_address = {w.contracts[n].address.lower(): w.contracts[n] for n in sources}
    events: dict[tuple[int, int], Event] = {}
    for answer in answers:
        if isinstance(answer, Failure):
            raise CliError(f"the node refused the event query: {answer.error.get('message')}")
        for log in answer:
            event = by_address[log["address"].lower()].decode_log(log)
            if event is not None and getattr(event.args, "owner", owner).lower() == owner.lower():
                events[(event.block, event.index)] = event
    decimals = w.read("collateral", "decimals")
    described = []
    for key in sorted(events):
        e = events[key]
        if _sub_account(e) not in (None, sub):
            continue
        shown = _describe(w, e, decimals)
        if shown is not None:
            described.append((e, *shown))
    described = described[-limit:]
    blocks = sorted({e.block for e, _, _ in described})
    times = dict(zip(blocks, (int(b["timestamp"], 16) for b in w.rpc.batch(
        [("eth_getBlockByNumber", [hex(b), False]) for b in blocks]))))
    return [Entry(e.block, e.index, times[e.block], kind, text) for e, kind, text in described]


def history_lines(entries: list[Entry], owner: str, sub: int) -> list[str]:
    if not entries:
        return [f"no history for {owner}, sub-account {sub}"]
    lines = [f"history of {owner}, sub-account {sub} (amounts in USD, oldest first):"]
    for entry in entries:
        lines.append(f"  {utc_time(entry.time)}  block {entry.block:>7}  {entry.kind:<11} {entry.text}")
    return lines
