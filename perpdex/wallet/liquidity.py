"""Liquidity vault shares, in two steps (contracts/LiquidityVault.vy, the request shape of
ERC-7540): the wallet requests a deposit (the tokens wait in the liquidity vault) or a
redemption (the shares wait there), a keeper executes the request at the first oracle round of
every market published at least `min_delay` later, at that round's share price. A request not
executed by its expiry can only be cancelled, by anyone, from then on.

`request_deposit` / `request_redeem` check and send one; `wait_for` follows it (a bounded wait)
to its execution or cancellation; `open_requests` lists the wallet's; `cancel` cancels an
expired one. Assets are token units (6 decimals), shares WAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from perpdex.wallet.abi import to_checksum
from perpdex.wallet.client import Wallet
from perpdex.wallet.funds import approve, decimals
from perpdex.wallet.rpc import Event, Reverted
from perpdex.wallet.simulate import plain, refuse
from perpdex.wallet.trading import poll
from perpdex.wallet.units import CliError, base_amount, relative, scale_exact, tokens, utc_time

ZERO_ADDRESS = "0x" + "00" * 20
REQUESTED = ("DepositRequested", "RedeemRequested")
OUTCOMES = ("DepositExecuted", "RedeemExecuted", "RequestCancelled")


@dataclass(frozen=True)
class LpRequest:
    request_id: int
    requester: str
    receiver: str
    redemption: bool
    amount: int  # token units (a deposit) or shares, WAD (a redemption)
    fee: int  # token units
    not_before: int
    expiry: int

    def what(self, d: int) -> str:
        if self.redemption:
            return f"redemption of {base_amount(self.amount)} LP shares"
        return f"deposit of {tokens(self.amount, d)} USD"

    def status(self, now: int) -> str:
        if now >= self.expiry:
            return "expired: anyone may cancel it (`lp cancel`), the assets or shares back to you"
        if now < self.not_before:
            return f"waiting for its delay (prices from {utc_time(self.not_before)} on)"
        return "pending: a keeper executes it at the first price of every market published since its delay"


def _from_event(e: Event) -> LpRequest:
    a = e.args
    redemption = e.name == "RedeemRequested"
    return LpRequest(a.request_id, to_checksum(a.requester), to_checksum(a.receiver), redemption,
                     a.shares if redemption else a.assets, a.fee, a.not_before, a.expiry)


def _from_view(request_id: int, r) -> LpRequest | None:
    if r.requester.lower() == ZERO_ADDRESS:
        return None  # executed or cancelled
    return LpRequest(request_id, to_checksum(r.requester), to_checksum(r.receiver), r.redemption, r.amount, r.fee,
                     r.not_before, r.expiry)


def _requested(w: Wallet, receipt) -> LpRequest:
    (event,) = [e for e in receipt.events if e.name in REQUESTED
                and e.address.lower() == w.liquidity_vault.address.lower()]
    return _from_event(event)


def _fee_text(fee: int, d: int) -> str:
    return f"; execution fee {tokens(fee, d)} USD" if fee else ""


# =============================================================================================
# Requests
# =============================================================================================


def request_deposit(w: Wallet, amount: Decimal) -> tuple[LpRequest, int]:
    """Request a deposit of `amount` USD for shares to the wallet (approving the liquidity vault
    for the amount and the execution fee when needed); returns it and its block."""
    d = decimals(w)
    units = scale_exact(amount, d, "AMOUNT")
    fee = w.read("liquidity_vault", "lp_params").execution_fee
    approve(w, w.liquidity_vault.address, units + fee, d)
    try:
        receipt = w.send("liquidity_vault", "request_deposit", units, w.address)
    except Reverted as err:
        raise refuse(err.reason) from None
    return _requested(w, receipt), receipt.block


def request_redeem(w: Wallet, shares: int | None) -> tuple[LpRequest, int]:
    """Request the redemption of `shares` LP shares (WAD; None: every share that is free) for
    collateral paid to the wallet; returns it and its block."""
    d = decimals(w)
    held, (locked, until), params = w.reads([
        ("liquidity_vault", "balanceOf", (w.address,)), ("liquidity_vault", "locked_shares", (w.address,)),
        ("liquidity_vault", "lp_params", ()),
    ])
    free = held - min(locked, held)
    amount = free if shares is None else shares
    if held == 0:
        raise CliError(f"Refused: {w.address} holds no LP shares. Nothing was sent.")
    if amount > held:
        raise CliError(f"Refused: you hold {base_amount(held)} LP shares, fewer than {base_amount(amount)}. "
                       "Nothing was sent.")
    if amount > free or amount == 0:
        raise CliError(
            f"Refused: {base_amount(locked)} of your {base_amount(held)} LP shares come from a recent deposit and "
            f"stay in place until {utc_time(until)}, so at most {base_amount(free)} can be redeemed now. "
            "Nothing was sent."
        )
    if params.execution_fee:
        approve(w, w.liquidity_vault.address, params.execution_fee, d)
    try:
        receipt = w.send("liquidity_vault", "request_redeem", amount, w.address)
    except Reverted as err:
        raise refuse(err.reason) from None
    return _requested(w, receipt), receipt.block


def requested_text(w: Wallet, r: LpRequest) -> str:
    d = decimals(w)
    return (f"requested LP {r.what(d)} (request {r.request_id})\n"
            f"  a keeper executes it at the first price of every market published from {utc_time(r.not_before)}, "
            f"at that price's share value (expires {utc_time(r.expiry)}, {relative(r.expiry, w.chain_time())})"
            f"{_fee_text(r.fee, d)}")


# =============================================================================================
# Follow
# =============================================================================================


def outcome(w: Wallet, r: LpRequest, from_block: int) -> tuple[bool, str] | None:
    """(executed, text) once the request was executed or cancelled; None while it is open."""
    lv = w.liquidity_vault
    topics = [[lv.topic(name) for name in OUTCOMES], "0x" + r.request_id.to_bytes(32, "big").hex()]
    events = w.logs(["liquidity_vault"], from_block, topics=topics)
    if not events:
        return None
    e, d = events[0], decimals(w)
    a = e.args
    if e.name == "RequestCancelled":
        back = f"{base_amount(a.amount)} LP shares" if a.redemption else f"{tokens(a.amount, d)} USD"
        reason = a.reason
        shown = plain(reason).rstrip(".") if ": " in reason else reason
        fee = f"; the execution fee {tokens(a.fee, d)} USD went to {to_checksum(a.fee_to)}" if a.fee else ""
        return False, (f"LP request {r.request_id} cancelled by {to_checksum(a.by)}: {shown};\n"
                       f"  {back} returned to {to_checksum(r.requester)}{fee}")
    held = w.read("liquidity_vault", "balanceOf", r.requester)
    deficit = f" (net of {tokens(a.deficit * 10**d // 10**18, d)} USD of outstanding bad debt)" if (
        a.deficit and e.name == "RedeemExecuted") else ""
    if e.name == "DepositExecuted":
        done = f"deposited {tokens(a.assets, d)} USD for {base_amount(a.shares)} LP shares"
    else:
        done = f"redeemed {base_amount(a.shares)} LP shares for {tokens(a.assets, d)} USD"
    return True, (f"LP request {r.request_id} executed by {to_checksum(a.executor)}: {done}, the liquidity vault "
                  f"valued at {tokens(a.total_assets, d)} USD{deficit};\n  you hold {base_amount(held)} LP shares")


def wait_for(w: Wallet, r: LpRequest, from_block: int, timeout: float) -> tuple[bool, str]:
    """Wait at most `timeout` s for the request's execution or cancellation; CliError naming
    what it waited for when neither came."""
    result = poll(lambda: outcome(w, r, from_block), timeout)
    if result is not None:
        return result
    raise CliError(
        f"no keeper executed LP request {r.request_id} within {timeout:g} s: it waits for a keeper to execute it at "
        f"the first price of every market published from {utc_time(r.not_before)}, which needs the price feeds to "
        f"publish (a devnet runs both: `make devnet`). It stays open; it expires {utc_time(r.expiry)}, then it can "
        "be cancelled. See it with `lp requests`."
    )


# =============================================================================================
# List and cancel
# =============================================================================================


def open_requests(w: Wallet, owner: str) -> list[LpRequest]:
    """The open requests made by `owner`: its request events, then each one's current state."""
    lv = w.liquidity_vault
    who = "0x" + owner.lower().removeprefix("0x").rjust(64, "0")
    made = w.logs(["liquidity_vault"], w.deploy_block, topics=[[lv.topic(n) for n in REQUESTED], None, who])
    ids = sorted({e.args.request_id for e in made})
    stored = w.reads([("liquidity_vault", "request", (i,)) for i in ids])
    return [r for i, s in zip(ids, stored) if not isinstance(s, Reverted) and (r := _from_view(i, s)) is not None]


def requests_text(w: Wallet, owner: str) -> list[str]:
    rows = open_requests(w, owner)
    if not rows:
        return [f"no open LP requests of {owner}"]
    d, now = decimals(w), w.chain_time()
    lines = [f"open LP requests of {owner} (chain time {utc_time(now)}):"]
    for r in rows:
        lines.append(f"  {r.request_id:>5}  {r.what(d)}{_fee_text(r.fee, d)}")
        lines.append(f"         prices from {utc_time(r.not_before)}; expires {utc_time(r.expiry)} "
                     f"({relative(r.expiry, now)}); {r.status(now)}")
    return lines


def cancel(w: Wallet, request_id: int) -> str:
    """Cancel an expired request (anyone's: the assets or shares go back to its requester, the
    fee to the wallet); a request that has not expired is refused with its expiry."""
    d = decimals(w)
    stored = w.read("liquidity_vault", "request", request_id)
    r = _from_view(request_id, stored)
    if r is None:
        raise CliError(f"Refused: LP request {request_id} is not open (never made, already executed or cancelled; "
                       "see `history`). Nothing was sent.")
    now = w.chain_time()
    if now < r.expiry:
        raise CliError(
            f"Refused: LP request {request_id} ({r.what(d)}) can be cancelled only once it expires at "
            f"{utc_time(r.expiry)} ({relative(r.expiry, now)}); until then a keeper executes it at the first price "
            f"published from {utc_time(r.not_before)}. Nothing was sent."
        )
    try:
        receipt = w.send("liquidity_vault", "cancel_request", request_id)
    except Reverted as err:
        raise refuse(err.reason) from None
    (e,) = receipt.find("RequestCancelled")
    back = f"{base_amount(e.args.amount)} LP shares" if e.args.redemption else f"{tokens(e.args.amount, d)} USD"
    fee = f"; its execution fee {tokens(e.args.fee, d)} USD paid to you" if e.args.fee else ""
    return f"cancelled LP request {request_id} ({e.args.reason}): {back} returned to {r.requester}{fee}"
