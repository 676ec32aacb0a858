"""Refusals before anything is sent, each one sentence with the numbers a trader needs.

Every write is simulated first (eth_call with the wallet as sender, `client.Wallet.simulate`).
A market or limit order is also tried as its execution: `Exchange.execute_trade` simulated as
the order book calls it, at the current index (market) or at the trigger price (limit), so an
order whose margin or price bound would fail at execution is refused before its fee is
escrowed. A refusal is turned into words here, with what the contracts' views say: free
collateral (`withdrawable`), the largest size the margin allows, the market's size cap
(`max_position_size`), the price bound against the quote (`fill_price`).
"""

from __future__ import annotations

import re

from perpdex.wallet.client import Wallet
from perpdex.wallet.rpc import Reverted
from perpdex.wallet.units import WAD, CliError, base_amount, price, tokens, usd

# reason-string namespace ("exchange: ...") -> who refused it, in words
REJECTERS = {
    "liquidity vault": "the liquidity vault",
    "insurance fund": "the insurance fund",
    "exchange": "the exchange",
    "vault": "the vault",
    "oracle": "the price oracle",
    "liquidator": "the liquidator",
    "order": "the order book",
    "erc20": "the collateral token",
    "mock": "the devnet collateral token",
}
WAD_NUMBER = re.compile(r"(\d{19,}) \(WAD\)")
SEARCH_STEPS = 24  # candidate sizes per round trip when searching the largest size the margin allows


def plain(reason: str) -> str:
    """'exchange: insufficient margin' -> 'Refused by the exchange: insufficient margin.', with
    any WAD figure in it shown in USD."""
    reason = WAD_NUMBER.sub(lambda m: usd(int(m.group(1))), reason)
    namespace, _, detail = reason.partition(": ")
    if detail and namespace in REJECTERS:
        return f"Refused by {REJECTERS[namespace]}: {detail}."
    return f"Refused: {reason}."


def refuse(reason: str) -> CliError:
    return CliError(f"{plain(reason)} Nothing was sent.")


# =============================================================================================
# Cash
# =============================================================================================


def withdraw_refusal(w: Wallet, sub: int, units: int, decimals: int, reason: str) -> CliError:
    if "market order is pending" in reason:
        return CliError(
            f"Refused: a market order of sub-account {sub} is pending, and collateral cannot leave while it "
            "waits for its price; withdraw after it executes or expires (see `orders`). Nothing was sent."
        )
    if "insufficient free collateral" in reason:
        free, state = w.reads([("exchange", "withdrawable", (w.address, sub)), ("exchange", "account_state", (w.address, sub))])
        if isinstance(free, Reverted) or isinstance(state, Reverted):
            return refuse(reason)
        cash, equity, initial, _ = state
        return CliError(
            f"Refused: {tokens(units, decimals)} USD is more than the free collateral of sub-account {sub}, "
            f"{usd(free)} USD (cash {usd(cash)}, equity {usd(equity)}, initial margin in use {usd(initial)}); "
            f"withdraw at most {tokens(free * 10**decimals // WAD, decimals)} USD, or close positions first. "
            "Nothing was sent."
        )
    return refuse(reason)


def balance_refusal(address: str, balance: int, units: int, decimals: int, local: bool) -> CliError:
    hint = " (get devnet collateral with `faucet`)" if local else ""
    return CliError(
        f"Refused: the wallet {address} holds {tokens(balance, decimals)} USD of collateral, less than "
        f"{tokens(units, decimals)}{hint}. Nothing was sent."
    )


# =============================================================================================
# Orders
# =============================================================================================


def order_refusal(w: Wallet, sub: int, market_id: int, size_delta: int, reason: str) -> CliError:
    """The order book's refusal of a commit, with the numbers behind it."""
    symbol = w.symbol(market_id)
    if "execution fee above cash" in reason:
        fee, cash = w.reads([("order_book", "order_params", ()), ("vault", "cash", (w.address, sub))])
        return CliError(
            f"Refused: an order escrows an execution fee of {usd(fee.execution_fee)} USD from the cash of "
            f"sub-account {sub}, which holds {usd(cash)} USD; deposit first. Nothing was sent."
        )
    if "max position size" in reason:
        cap = w.read("exchange", "max_position_size", market_id)
        return CliError(
            f"Refused: {base_amount(size_delta)} {symbol} is above the market's largest position, "
            f"{base_amount(cap)} {symbol}. Nothing was sent."
        )
    if "trigger already reached" in reason:
        index = WAD_NUMBER.search(reason)
        at = f" (the index is {price(int(index.group(1)))})" if index else ""
        return CliError(
            f"Refused: the trigger price is already reached{at}, so the order would fill at once; use a market "
            "order, or a trigger on the other side of the index. Nothing was sent."
        )
    return refuse(reason)


def execution_check(
    w: Wallet, sub: int, market_id: int, size_delta: int, acceptable: int, index: int, fee: int, at_trigger: bool
) -> None:
    """Simulate the order's execution now (at `index`); raise a CliError with the numbers when
    the exchange would refuse it for margin or for its price bound."""
    args = (w.address, sub, market_id, size_delta, acceptable, index, w.address, 0)
    (result,) = w.reads([("exchange", "execute_trade", args)], block="pending", sender=w.order_book.address)
    if not isinstance(result, Reverted):
        return
    symbol = w.symbol(market_id)
    where = f"at the trigger price {price(index)}" if at_trigger else f"at the {symbol} index {price(index)}"
    if "insufficient margin" in result.reason:
        largest = largest_size(w, sub, market_id, size_delta, index)
        free, state = w.reads([("exchange", "withdrawable", (w.address, sub)), ("exchange", "account_state", (w.address, sub))])
        side = "buy" if size_delta > 0 else "sell"
        raise CliError(
            f"Refused: a {side} of {base_amount(size_delta)} {symbol} {where} needs more margin than sub-account "
            f"{sub} has (free collateral {usd(free)} USD, equity {usd(state[1])}, execution fee {usd(fee)}); "
            f"the margin allows at most {base_amount(largest)} {symbol} now. Nothing was sent."
        )
    if "price beyond acceptable" in result.reason:
        quote = w.read("exchange", "fill_price", market_id, size_delta)
        bound, word = ("at most", "above") if size_delta > 0 else ("at least", "below")
        raise CliError(
            f"Refused: the order would fill at {price(quote)}, {word} its price bound ({bound} {price(acceptable)}); "
            "raise --slippage or give --acceptable. Nothing was sent."
        )
    if at_trigger and "bankrupt" not in result.reason:
        return  # e.g. an open-interest cap: it may have room by the time the trigger is reached
    raise refuse(result.reason)


def room_check(w: Wallet, market_id: int, growth: int, index: int) -> None:
    """Raise a CliError when the global open-interest cap would cancel a market order at its
    execution (and its fee go to the executor): `growth` (WAD, what the order adds to the
    position's size) at `index` against the room a refresh would give now, which is what a
    keeper executes against."""
    (room,) = w.reads([("order_book", "refresh_open_interest_room", ())], block="pending")
    if isinstance(room, Reverted):
        return  # e.g. a stale market: the order waits for a fresh price either way
    need = -(-growth * index // WAD)
    if need > room:
        symbol = w.symbol(market_id)
        raise CliError(
            f"Refused: the exchange's open interest is at its cap (max_oi_ratio x the liquidity vault's value): "
            f"room for {usd(room)} USD more, and {base_amount(growth)} {symbol} more at the index {price(index)} "
            f"is {usd(need)} USD; the order would be cancelled at execution and its fee lost. Nothing was sent."
        )


def largest_size(w: Wallet, sub: int, market_id: int, size_delta: int, index: int) -> int:
    """The largest size (WAD, same sign as `size_delta`, 4 decimals) the exchange accepts now,
    by simulated executions: geometric candidates, then twice linear ones between the last
    accepted and the first refused, one batch each."""
    sign = 1 if size_delta > 0 else -1
    target = abs(size_delta)

    def accepted(sizes: list[int]) -> list[bool]:
        calls = [("exchange", "execute_trade", (w.address, sub, market_id, sign * s, 0 if sign < 0 else 2**128 - 1,
                                                index, w.address, 0)) for s in sizes]
        return [not isinstance(r, Reverted) for r in w.reads(calls, block="pending", sender=w.order_book.address)]

    candidates = [target >> k for k in range(SEARCH_STEPS, 0, -1) if target >> k]
    low, high = 0, target
    for size, ok in zip(candidates, accepted(candidates)):
        if ok:
            low = size
        else:
            high = size
            break
    for _ in range(2):  # two linear refinements: within 1/576 of the bracket
        step = max((high - low) // SEARCH_STEPS, 1)
        linear = list(range(low + step, high, step))[:SEARCH_STEPS]
        for size, ok in zip(linear, accepted(linear)):
            if not ok:
                high = size
                break
            low = size
    return low // 10**14 * 10**14  # 4 decimals, rounded down
