"""The world, the actions and the accounting of the invariant-7 machine
(tests/fuzz/test_invariant7.py).

A *round* is what the machine replays twice: orders and liquidity-vault requests committed
before an oracle round, then, at that round (one index, one timestamp), their executions,
liquidations and ADL in an order the attacker chooses. The attacker is the executor of every
order, the liquidation keeper and an ADL keeper, and trades from several sub-accounts. It may
try to execute LP requests too, and is refused: only the LP executor role places LP flows
before `OPEN_EXECUTION_AFTER` (docs/SECURITY.md, finding 9). The keeper holding that role
executes the round's LP requests in one step after the round's honest orders and liquidations
(where its pass puts them); the attacker's own orders and ADL may still come after it. The same round is replayed on a snapshot without the attacker's own orders and
requests (the honest round, executed in the same relative order), and the two outcomes are
measured with `Ledger`:

- the attacker's wealth: cash and equity of its sub-accounts, its positions valued at the price
  that closing their net would fill at (a position that only looks profitable at the index is
  worth what it fetches), its liquidity-vault shares at the share price, its pending requests
  and its wallet;
- each honest LP's wealth (shares at the share price, pending requests, wallet);
- the insurance fund's cash and the fee receiver's;
- the equity, at the index, of every account liquidated in either replay.

Every action goes through `System` (tests/system.py): contracts and reference model, compared
to the wei; a refused action must be refused by both with the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import boa

from perpdex.config import load_markets
from perpdex.fixed_point import WAD, sign
from perpdex.model import FEE_RECEIVER, INSURANCE_FUND, ModelRevert, fill_price, trade_fee
from system import System

BTC, ETH = 0, 1
MAX_UINT = 2**256 - 1
SCALE = 10**12  # token units -> WAD
ATTACKER_SUBS = (0, 1, 2)
N_HONEST = 4
# ADL trigger 2 at 2 % of the liquidity vault's value (traders' profit of ~200,000 USD against
# the 10M USD vault), back under 1 %: reachable by the price moves the machine makes
MAX_PNL_FACTOR, TARGET_PNL_FACTOR = WAD // 50, WAD // 100
SEED_LIQUIDITY = 10_000_000  # USD, the honest seed LP's deposit
MAX_ADL_TARGETS = 3

Account = tuple[str, int]

# ============================================================================================
# the world, deployed once per chain (each test module has its own, tests/conftest.py)
# ============================================================================================

_WORLD: tuple[object, System] | None = None  # (the titanoboa chain it is on, the deployment)


def invariant7_world() -> System:
    """config/markets.json's BTC and ETH markets and globals, a 10M USD liquidity vault from an
    honest seed LP, PnL factors that ADL can reach, and the cast: honest traders, a second
    honest LP, a donor, and the attacker (an ADL keeper too: the role is the attacker's worst
    case, DESIGN.md finding 4)."""
    global _WORLD
    if _WORLD is None or _WORLD[0] is not boa.env:
        eoa = boa.env.eoa
        markets, globals_ = load_markets()
        s = System()
        for m in markets:
            s.list_market(m.id, m.symbol, int(m.initial_price), m.params)
        s.set_globals(**globals_.__dict__)
        s.seed_lp = boa.env.generate_address("inv7_seed_lp")
        s.honest_lp = boa.env.generate_address("inv7_honest_lp")
        s.honest = [boa.env.generate_address(f"inv7_trader{i}") for i in range(N_HONEST)]
        s.donor = boa.env.generate_address("inv7_donor")
        s.attacker = boa.env.generate_address("inv7_attacker")
        s.lp_deposit(s.seed_lp, SEED_LIQUIDITY)
        with boa.env.prank(s.owner):
            s.liquidator.set_pnl_factors(MAX_PNL_FACTOR, TARGET_PNL_FACTOR)
            s.liquidator.set_adl_keeper(s.attacker, True)
        s.model.max_pnl_factor, s.model.target_pnl_factor = MAX_PNL_FACTOR, TARGET_PNL_FACTOR
        for who in (s.honest_lp, s.attacker):
            s.fund_lp(who, 0)  # the approval only
        boa.env.eoa = eoa
        _WORLD = (boa.env, s)
    return _WORLD[1]


# ============================================================================================
# actions of a round
# ============================================================================================


@dataclass(frozen=True)
class Action:
    """One step of a round: "order" (an order id), "lp" (a request id the attacker tries to
    execute itself), "keeper_lp" (the LP executor executes the requests `key`: (request id,
    the attacker's) pairs, oldest first), "liquidate" (an account) or "adl" (a market).
    `attacker` marks the attacker's own orders and requests, which the honest replay leaves
    out."""

    kind: str
    key: object
    attacker: bool = False


@dataclass
class Outcome:
    """What one replay of a round did."""

    fills: dict = field(default_factory=dict)  # order id -> ExecutionResult
    rewards: dict = field(default_factory=dict)  # liquidated account -> keeper rewards paid
    liquidated: set = field(default_factory=set)
    refused: int = 0  # actions refused (on both sides, with the same reason)
    adl_calls: int = 0
    steps: int = 0
    # the attacker's LP flows executed: (redemption, shares, assets in WAD)
    lp_flows: list = field(default_factory=list)
    lp_executed: int = 0  # LP requests the LP executor executed (or the vault cancelled)


def run_round(s: System, actions: list[Action], rounds: dict[int, int], honest_only: bool) -> Outcome:
    """Execute `actions` in order at the oracle rounds `rounds` (market -> round id), as the
    attacker (executor, liquidation keeper, ADL keeper); the honest replay skips the attacker's
    own orders and requests."""
    out = Outcome()
    for action in actions:
        if honest_only and action.attacker:
            continue
        out.steps += 1
        try:
            if action.kind == "order":
                market_id = s.model.order(action.key).market_id
                out.fills[action.key] = s.execute_order(action.key, rounds[market_id], executor=s.attacker)
            elif action.kind == "lp":
                s.execute_lp(action.key, executor=s.attacker)  # refused: the attacker has no LP executor role
                raise AssertionError(f"the attacker executed LP request {action.key} without the role")
            elif action.kind == "keeper_lp":
                for request_id, mine in action.key:
                    if honest_only and mine:
                        continue
                    request = s.model.lp.requests.get(request_id)
                    if request is None:
                        continue
                    result = s.execute_lp(request_id, executor=s.executor)  # amount: assets or shares
                    out.lp_executed += 1
                    if result.executed and mine:
                        if request.redemption:
                            flow = (True, request.amount, result.amount * SCALE)
                        else:
                            flow = (False, result.amount, request.amount * SCALE)
                        out.lp_flows.append(flow)
            elif action.kind == "liquidate":
                result = s.liquidate(s.attacker, *action.key)
                out.liquidated.add(action.key)
                out.rewards[action.key] = out.rewards.get(action.key, 0) + result.keeper_reward
            elif action.kind == "adl":
                plan = adl_plan(s, action.key)
                if plan is not None:
                    out.adl_calls += 1
                    s.auto_deleverage(s.attacker, action.key, *plan)
        except ModelRevert:
            out.refused += 1
    return out


def adl_plan(s: System, market_id: int):
    """(targets, bankrupt) of an ADL the trigger allows now, ranked by score, each target closed
    whole within the remaining liquidation capacity; None without a trigger."""
    m = s.model
    bankrupt = (None, 0)
    if m.uncovered_deficit.get(market_id, 0) > 0:
        records = [a for (a, mk), r in m.deficit_records.items() if mk == market_id and r[0] > 0 and m.cash_of(a) < 0]
        if not records:
            return None
        bankrupt = records[0]
        side = -m.deficit_record(bankrupt, market_id)[1]
    elif m.pnl_factor(market_id) > m.max_pnl_factor:
        side = sign(m.markets[market_id].skew)
    else:
        return None
    ranked = []
    for account in sorted(s.known_accounts()):
        size = m.position(account, market_id).size
        if size and sign(size) == side:
            score, pnl = m.adl_score(account, market_id)
            if pnl > 0:
                ranked.append((score, account, abs(size)))
    ranked.sort(key=lambda r: -r[0])
    capacity, targets = m.liquidation_capacity(market_id), []
    for _, account, size in ranked[:MAX_ADL_TARGETS]:
        amount = min(size, capacity)
        if amount == 0:
            break
        targets.append((account, amount))
        capacity -= amount
    return (targets, bankrupt) if targets else None


# ============================================================================================
# accounting
# ============================================================================================


def exit_value(s: System, accounts: list[Account]) -> tuple[int, int]:
    """What `accounts` together are worth if they closed every position now, and the trading
    fees that close would pay: their equity at the index, corrected per market from the index
    to the fill price of closing their net size, less the fee of that close (path-independent
    fills: the order of the closes does not matter; the fee of a close split over several
    accounts can only be higher)."""
    m = s.model
    total, fees = sum(m.account_view(a).equity for a in accounts), 0
    for market_id in m.markets:
        net = sum(m.position(a, market_id).size for a in accounts)
        if net:
            p = m.params[market_id]
            skew = m.markets[market_id].skew
            close = fill_price(m.index[market_id], skew, p.skew_scale, -net)
            fee = trade_fee(skew, -net, close, p)
            total += net * (close - m.index[market_id]) // WAD - fee
            fees += fee
    return total, fees


def share_value(s: System, shares: int) -> int:
    """`shares` of the liquidity vault at the current share price, WAD."""
    m = s.model
    return m.lv_to_assets(shares, m.lv_total_assets()) * SCALE


def lp_wealth(s: System, who: str) -> int:
    """An LP's wallet, shares (at the share price) and pending requests, WAD."""
    m = s.model
    pending_assets = sum(r.amount for r in m.lp.requests.values() if r.requester == who and not r.redemption)
    pending_shares = sum(r.amount for r in m.lp.requests.values() if r.requester == who and r.redemption)
    shares = m.lv_shares.get(who, 0) + pending_shares
    return s.usdc.balanceOf(who) * SCALE + pending_assets * SCALE + share_value(s, shares)


@dataclass(frozen=True)
class Ledger:
    """The wealth of every party invariant 7 protects, and the attacker's, at one moment."""

    attacker: int
    # the trading fees the attacker's valuation assumes it pays to close: when it does, they go
    # to the liquidity vault, the insurance fund and the fee receiver (at one index a close
    # moves the vault's closing-price value by nothing else)
    attacker_exit_fees: int
    lps: dict[str, int]
    insurance: int
    fee_receiver: int
    equity: dict[Account, int]

    @classmethod
    def of(cls, s: System, watched: set[Account]) -> "Ledger":
        attacker_accounts = [(s.attacker, sub) for sub in ATTACKER_SUBS]
        value, exit_fees = exit_value(s, attacker_accounts)
        return cls(
            attacker=value + lp_wealth(s, s.attacker),
            attacker_exit_fees=exit_fees,
            lps={lp: lp_wealth(s, lp) for lp in (s.seed_lp, s.honest_lp)},
            insurance=s.model.cash_of(INSURANCE_FUND),
            fee_receiver=s.model.cash_of(FEE_RECEIVER),
            equity={a: s.model.account_view(a).equity for a in watched},
        )


def lp_ordering_edge(s: System, attack: Outcome) -> int:
    """What the attacker's own LP flows gained from their place in the round: a deposit's
    shares worth more at the end of the round than the assets paid (it shared the fees and
    liquidation gains booked after it), a redemption paid more than its shares are worth at the
    end (it left before a loss). With the LP executor placing flows after the round's honest
    orders and liquidations, only a share of the fees of the attacker's own later orders, which
    it paid in full (tests/unit/test_invariant7_found.py)."""
    edge = 0
    for redemption, shares, assets in attack.lp_flows:
        worth = share_value(s, shares)
        edge += max(0, assets - worth) if redemption else max(0, worth - assets)
    return edge


def slippage_allowance(orders: dict[int, tuple[int, int, int]], index: dict[int, int], attack: Outcome, honest: Outcome) -> int:
    """What honest orders' own acceptable prices let anyone take from them in the attacked
    round (`orders`: id -> market, size, acceptable price): for each honest order filled there, |size| x how much worse than its honest fill
    (or, when only the attacked round filled it, than the index) its acceptable price allowed."""
    allowance = 0
    for order_id, (market_id, size, acceptable) in orders.items():
        fill = attack.fills.get(order_id)
        if fill is None or not fill.filled:
            continue
        honest_fill = honest.fills.get(order_id)
        reference = honest_fill.fill_price if honest_fill and honest_fill.filled else index[market_id]
        allowance += abs(size) * max(0, sign(size) * (acceptable - reference)) // WAD
    return allowance
