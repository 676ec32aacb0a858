"""Collateral in and out: the devnet faucet, deposits and withdrawals of a sub-account (liquidity
vault shares: liquidity.py). Amounts go in as token units (6 decimals); the vault reports WAD.

Each function takes a connected `Wallet` and already validated amounts (token units), simulates
every transaction before signing it, and returns the line to print.
"""

from __future__ import annotations

from decimal import Decimal

from perpdex.wallet.client import Wallet
from perpdex.wallet.rpc import Reverted
from perpdex.wallet.simulate import balance_refusal, refuse, withdraw_refusal
from perpdex.wallet.units import WAD, CliError, scale_exact, tokens, usd

LOCAL_CHAINS = {31337, 1337}


def decimals(w: Wallet) -> int:
    return int(w.read("collateral", "decimals"))


def faucet(w: Wallet, amount: Decimal) -> str:
    """Mint devnet collateral to the wallet (the mock token's faucet)."""
    if "faucet" not in w.collateral.functions:
        raise CliError("this deployment's collateral has no faucet: it is a real token, not the devnet mock")
    d = decimals(w)
    units = scale_exact(amount, d, "AMOUNT")
    try:
        w.send("collateral", "faucet", units)
    except Reverted as err:
        if "faucet cap" in err.reason:
            raise CliError(f"Refused: the devnet faucet gives at most 1,000,000.00 USD per call, not "
                           f"{tokens(units, d)}. Nothing was sent.") from None
        raise refuse(err.reason) from None
    balance = w.read("collateral", "balanceOf", w.address)
    return f"minted {tokens(units, d)} USD of devnet collateral; the wallet holds {tokens(balance, d)} USD"


def approve(w: Wallet, spender: str, units: int, d: int) -> None:
    """Approve `spender` for exactly `units` when the allowance is short; refuse a short balance."""
    balance, allowance = w.reads([("collateral", "balanceOf", (w.address,)),
                                  ("collateral", "allowance", (w.address, spender))])
    if balance < units:
        raise balance_refusal(w.address, balance, units, d, w.chain_id in LOCAL_CHAINS)
    if allowance < units:
        try:
            w.send("collateral", "approve", spender, units)
        except Reverted as err:
            raise refuse(err.reason) from None


def deposit(w: Wallet, amount: Decimal, sub: int) -> str:
    """Deposit `amount` USD into sub-account `sub` (approving the vault when needed)."""
    d = decimals(w)
    units = scale_exact(amount, d, "AMOUNT")
    approve(w, w.vault.address, units, d)
    try:
        w.send("vault", "deposit", sub, units)
    except Reverted as err:
        raise refuse(err.reason) from None
    cash = w.read("vault", "cash", w.address, sub)
    return f"deposited {tokens(units, d)} USD, sub-account {sub}: cash now {usd(cash)} USD"


def withdrawable_units(w: Wallet, sub: int, d: int) -> int:
    """The free collateral of a sub-account in whole token units (WAD below a unit stays)."""
    return w.read("exchange", "withdrawable", w.address, sub) * 10**d // WAD


def withdraw(w: Wallet, amount: Decimal | None, sub: int) -> str:
    """Withdraw `amount` USD (None: all the free collateral, in whole token units) from
    sub-account `sub`."""
    d = decimals(w)
    units = None if amount is None else scale_exact(amount, d, "AMOUNT")
    if units is None:
        units = withdrawable_units(w, sub, d)
        if units == 0:
            cash = w.read("vault", "cash", w.address, sub)
            raise CliError(f"Refused: sub-account {sub} has no free collateral to withdraw (cash {usd(cash)} USD). "
                           "Nothing was sent.")
    try:
        w.send("vault", "withdraw", sub, units)
    except Reverted as err:
        raise withdraw_refusal(w, sub, units, d, err.reason) from None
    cash, wallet_balance = w.reads([("vault", "cash", (w.address, sub)), ("collateral", "balanceOf", (w.address,))])
    dust = "" if cash <= 0 or cash >= 10**(18 - d) else " (less than one token unit, which cannot be withdrawn)"
    return (f"withdrew {tokens(units, d)} USD, sub-account {sub}: cash now {usd(cash)} USD{dust}; "
            f"the wallet holds {tokens(wallet_balance, d)} USD")
