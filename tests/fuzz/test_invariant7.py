"""Stateful fuzzing of DESIGN.md invariant 7, no free lunch from ordering.

`Invariant7Machine` drives one deployment (config/markets.json's markets, a 10M USD liquidity
vault, tests/fuzz/invariant7_actions.py) through rounds. In each round honest traders and LPs
and the attacker commit orders and liquidity-vault requests; a new oracle round is published
(the price moves); then, at that one index and timestamp, the attacker — executor of every
order, liquidation keeper and ADL keeper, trading from three sub-accounts — runs every
execution, the liquidations of the accounts liquidatable at that index (twice each, for the
slices the capacity leaves) and ADL in the order it likes (a drawn permutation). It tries to
execute the LP requests too and is refused (it lacks the LP executor role); the keeper that
holds the role executes them in one step, drawn anywhere after the round's last honest order
and liquidation (its pass runs liquidations and orders before LP flows), so the attacker's own
orders and ADL may follow it.

The same round is replayed on a snapshot without the attacker's own orders and requests (the
honest round, same relative order), and after every round the machine asserts:
1. the attacker's accounts together gain no more than in the honest round, beyond the keeper
   rewards of accounts that were liquidatable at the round's index and what honest orders' own
   acceptable prices allowed (`slippage_allowance`): DESIGN.md invariant 7, with no allowance
   for where its LP flows sit in the round (docs/SECURITY.md finding 9: the LP executor places
   them). Its wealth counts its LP shares, so a deposit that takes back part of the fees of the
   attacker's own later orders is no gain; `lp_ordering_edge` only reports that figure;
2. the honest LPs, the insurance fund, the fee receiver and every account liquidated in either
   replay are together no worse off than the honest round leaves them, once the attacker pays
   the fees of the close its wealth is valued at (they go to these parties; at one index the
   close moves the vault's closing-price value by nothing else). One of them alone can
   be: a griefing attacker can pay fees to move the skew a liquidation closes into (the
   liquidated account loses, the fees land in the liquidity vault and the insurance fund), or
   the insurance fund's share of a sandwich's fees can exceed the liquidity vault's loss to it;
   DESIGN.md does not forbid either as long as the attacker does not profit (check 1). The
   machine counts those rounds and keeps the largest such shortfall in its figures;
3. invariants 1-3 and model parity of everything the contracts store (tests/system.py).

The attacker's wealth values its positions at the price closing their net would fill at, so a
position that only looks profitable at the index counts for what it fetches. Between rounds
the attacker closes its positions with ordinary orders (rounds are about one index; what
happens across prices is the other machines' subject).

Profiles: the quick one (part of `make test`) runs QUICK_EXAMPLES examples of QUICK_ROUNDS
rounds; the long one (`make fuzz`, tests/fuzz/run_long.py) examples of LONG_ROUNDS rounds. A
step, in the figures, is one action executed in either replay.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

import boa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from perpdex.fixed_point import WAD, sign
from perpdex.model import ModelRevert
from system import LpRequestCancelled, OrderCancelled, fresh

from .base import FEED_TO_WAD
from .conftest import MAX_EXAMPLES_ENV, STEP_COUNT_ENV, profile_name
from .invariant7_actions import (
    ATTACKER_SUBS,
    BTC,
    ETH,
    N_HONEST,
    SCALE,
    Action,
    Ledger,
    invariant7_world,
    lp_ordering_edge,
    run_round,
    slippage_allowance,
)

QUICK_EXAMPLES, QUICK_ROUNDS = 4, 5
LONG_ROUNDS = 12
TOLERANCE = 1_000  # wei of rounding per action (every division rounds against the party paid)
MAX_POSITION = 100  # BTC, scale of honest positions
MOVE_BPS = st.one_of(st.integers(-150, 150), st.sampled_from([-800, -500, -300, 300, 500, 800]))
HONEST_ORDER = st.tuples(st.integers(0, N_HONEST - 1), st.integers(-1_000, 1_000), st.integers(0, 300))
# (sub-account, tenths of BTC, the sub-account that takes it back or None): a round trip is the
# sandwich's shape (sell before a forced close, buy back after, from any of its accounts)
ATTACKER_ORDER = st.tuples(
    st.sampled_from(ATTACKER_SUBS), st.integers(-2_000, 2_000), st.one_of(st.none(), st.sampled_from(ATTACKER_SUBS))
)
LP_REQUEST = st.one_of(
    st.none(), st.tuples(st.just("deposit"), st.integers(1_000, 1_000_000)), st.tuples(st.just("redeem"), st.integers(1, 1_000))
)


def usd(amount: int) -> str:
    return f"{amount / WAD:,.2f} USD"


class Invariant7Machine(RuleBasedStateMachine):
    """Rounds of orders, LP flows, liquidations and ADL at one index, attacked and honest."""

    stats: dict = {}

    def __init__(self):
        super().__init__()
        self.started = time.perf_counter()
        self.steps = 0
        self.events = Counter()
        self.largest_shortfall = 0  # WAD, one protected party against the honest round
        self.largest_lp_edge = 0  # WAD, the attacker's deposits' share of its own later fees
        self._eoa = boa.env.eoa
        self._fresh = fresh(invariant7_world())
        self.s = self._fresh.__enter__()
        self.s.compare_views = False  # accounts through storage; every view at the end

    def teardown(self):
        try:
            if sys.exc_info()[0] is None:
                self.s.assert_system_matches()
            stats = self.stats.setdefault(type(self).__name__, {"steps": 0, "examples": 0, "seconds": 0.0, "events": {}})
            stats["steps"] += self.steps
            stats["examples"] += 1
            stats["seconds"] += time.perf_counter() - self.started
            for name, count in self.events.items():
                stats["events"][name] = stats["events"].get(name, 0) + count
            largest = max(stats.get("largest_single_shortfall_usd", 0.0), self.largest_shortfall / WAD)
            stats["largest_single_shortfall_usd"] = largest
            edge = max(stats.get("largest_lp_ordering_edge_usd", 0.0), self.largest_lp_edge / WAD)
            stats["largest_lp_ordering_edge_usd"] = edge
        finally:
            self._fresh.__exit__(None, None, None)
            boa.env.eoa = self._eoa

    # -- set-up --------------------------------------------------------------------------------

    @initialize(
        positions=st.lists(st.tuples(st.integers(-1_000, 1_000), st.integers(3, 24)), min_size=N_HONEST, max_size=N_HONEST),
        insurance=st.sampled_from([0, 20_000, 1_000_000]),
        attacker_lp=st.sampled_from([0, 0, 500_000]),
        honest_lp=st.sampled_from([0, 300_000]),
    )
    def set_up(self, positions, insurance, attacker_lp, honest_lp):
        """The insurance fund, the LPs besides the seed, the attacker's capital, and one levered
        BTC position per honest trader."""
        s = self.s
        if insurance:
            s.donate(s.donor, insurance)
        if attacker_lp:
            s.lp_deposit(s.attacker, attacker_lp)
        if honest_lp:
            s.lp_deposit(s.honest_lp, honest_lp)
        for sub, capital in zip(ATTACKER_SUBS, (5_000_000, 1_000_000, 300_000)):
            s.deposit(s.attacker, capital, sub)
        for trader, (per_mille, leverage) in zip(s.honest, positions):
            self.open_levered(trader, per_mille, leverage)

    def open_levered(self, trader: str, per_mille: int, leverage: int) -> None:
        s = self.s
        size = per_mille * MAX_POSITION * WAD // 1_000 or WAD
        s.deposit(trader, abs(size) * s.model.index[BTC] // WAD // WAD // leverage + 1)
        try:
            s.trade(trader, BTC, size)
        except ModelRevert as refused:  # margin or caps: refused by both sides alike
            self.events[f"set-up trade refused: {refused.reason}"] += 1

    @rule(i=st.integers(0, N_HONEST - 1), per_mille=st.integers(-1_000, 1_000), leverage=st.integers(3, 24))
    def honest_trader_reopens(self, i, per_mille, leverage):
        """A liquidated (or cautious) honest trader opens a new levered position."""
        self.steps += 1
        if not self.s.model.open_markets((self.s.honest[i], 0)):
            self.open_levered(self.s.honest[i], per_mille, leverage)

    # -- a round -------------------------------------------------------------------------------

    @rule(
        move=MOVE_BPS,
        honest_orders=st.lists(HONEST_ORDER, max_size=3),
        attacker_orders=st.lists(ATTACKER_ORDER, max_size=5),
        honest_lp=LP_REQUEST,
        attacker_lp=LP_REQUEST,
        data=st.data(),
    )
    def attacked_round(self, move, honest_orders, attacker_orders, honest_lp, attacker_lp, data):
        s = self.s
        actions: list[Action] = []
        committed: dict[int, tuple[int, int, int]] = {}  # honest order id -> market, size, acceptable
        for i, per_mille, slippage_bps in honest_orders:
            self.commit_honest(s.honest[i], per_mille, slippage_bps, actions, committed)
        for sub, tenths, back in attacker_orders:
            if tenths:
                self.commit(actions, True, s.attacker, tenths * WAD // 10, sub_account=sub)
                if back is not None:
                    self.commit(actions, True, s.attacker, -tenths * WAD // 10, sub_account=back)
        for who, request, mine in ((s.honest_lp, honest_lp, False), (s.attacker, attacker_lp, True)):
            if request is not None:
                self.request_lp(who, *request, actions=actions, attacker=mine)

        # the round every action executes at: one index, one timestamp
        s.warp(max(s.model.order_params.min_order_delay, s.model.lp.params.min_delay))
        index = s.model.index[BTC] * (10_000 + move) // 10_000 // FEED_TO_WAD * FEED_TO_WAD
        with boa.env.prank(s.owner):
            s.aggregators[BTC].update_answer(index // FEED_TO_WAD)
        s.model.index[BTC] = index
        s.publish(ETH)
        rounds = {m: s.aggregators[m].latestRound() for m in (BTC, ETH)}

        liquidatable = {a for a in s.known_accounts() if s.model.open_markets(a) and s.model.is_liquidatable(a)}
        for account in sorted(liquidatable):
            actions += [Action("liquidate", account), Action("liquidate", account)]
        actions += [Action("adl", BTC)]
        actions = data.draw(st.permutations(actions), label="the attacker's order")
        requests = tuple((a.key, a.attacker) for a in actions if a.kind == "lp")
        if requests:
            # the LP executor's step: after the round's last honest order and liquidation
            earliest = 1 + max((i for i, a in enumerate(actions)
                                if (a.kind == "order" and not a.attacker) or a.kind == "liquidate"), default=-1)
            at = data.draw(st.integers(earliest, len(actions)), label="the LP executor's step")
            actions.insert(at, Action("keeper_lp", tuple(sorted(requests))))
        start = Ledger.of(s, liquidatable)

        with fresh(s) as h:
            honest = run_round(h, actions, rounds, honest_only=True)
            h.check_invariants()
            honest_ledger = Ledger.of(h, liquidatable)
        attack = run_round(s, actions, rounds, honest_only=False)
        s.check_invariants()
        s.assert_state_matches()
        attacked_ledger = Ledger.of(s, liquidatable)
        self.steps += honest.steps + attack.steps
        self.count(attack, honest)

        tolerance = TOLERANCE * (attack.steps + 1)
        allowance = slippage_allowance(committed, s.model.index, attack, honest)
        # what the attacker's deposits took back of the fees its own later orders paid (no gain:
        # check 1 counts its LP shares in its wealth); a figure, not an allowance
        self.largest_lp_edge = max(self.largest_lp_edge, lp_ordering_edge(s, attack))
        gain = attacked_ledger.attacker - start.attacker - sum(attack.rewards.values())
        honest_gain = honest_ledger.attacker - start.attacker - sum(honest.rewards.values())
        assert gain <= honest_gain + allowance + tolerance, (
            f"the attacker gained {usd(gain)} besides keeper rewards, {usd(honest_gain)} in the honest round; "
            f"honest orders' acceptable prices allowed {usd(allowance)}"
        )
        self.check_protected(
            honest_ledger, attacked_ledger, tolerance,
            f"; the attacker's edge over the honest round {usd(gain - honest_gain)}, honest slippage allowed "
            f"{usd(allowance)}",
        )
        self.close_attacker_positions()

    def check_protected(self, honest: Ledger, attacked: Ledger, tolerance: int, context: str) -> None:
        """The protected parties together against the honest round, within `tolerance` (the
        rounding); one of them alone worse off is counted
        (with the largest shortfall seen) but allowed, see check 2."""
        changes = {f"LP {lp}": attacked.lps[lp] - honest.lps[lp] for lp in honest.lps}
        changes["insurance fund"] = attacked.insurance - honest.insurance
        changes["fee receiver"] = attacked.fee_receiver - honest.fee_receiver
        # the close the attacker's valuation assumes pays its fees to these parties
        changes["the attacker's exit fees, to come"] = attacked.attacker_exit_fees - honest.attacker_exit_fees
        changes.update({f"liquidated {a}": attacked.equity[a] - honest.equity[a] for a in honest.equity})
        assert sum(changes.values()) >= -tolerance, (
            f"the protected parties together are {usd(-sum(changes.values()))} worse off than in the honest round: "
            + ", ".join(f"{n}: {usd(v)}" for n, v in changes.items() if v) + context
        )
        worst = min(changes.values())
        if worst < -tolerance:
            self.events["rounds with one protected party worse off (the others gained more)"] += 1
            self.largest_shortfall = max(self.largest_shortfall, -worst)

    # -- helpers -------------------------------------------------------------------------------

    def commit(self, actions: list[Action], attacker: bool, who: str, size: int, **kwargs) -> int | None:
        try:
            order_id = self.s.commit_order(who, BTC, size, **kwargs)
        except ModelRevert as refused:
            self.events[f"commit refused: {refused.reason}"] += 1
            return None
        actions.append(Action("order", order_id, attacker))
        return order_id

    def commit_honest(self, trader: str, per_mille: int, slippage_bps: int, actions, committed) -> None:
        """A market order whose acceptable price is the quote at commit, `slippage_bps` worse."""
        s = self.s
        size = per_mille * MAX_POSITION * WAD // 2_000 or WAD
        if not s.model.open_markets((trader, 0)) and s.model.cash_of((trader, 0)) <= 0:
            s.deposit(trader, abs(size) * s.model.index[BTC] // WAD // WAD // 10 + 1)
        try:
            quote = s.model.fill_price(BTC, size)
        except ModelRevert:
            return
        acceptable = quote * (10_000 + sign(size) * slippage_bps) // 10_000
        order_id = self.commit(actions, False, trader, size, acceptable_price=acceptable)
        if order_id is not None:
            committed[order_id] = (BTC, size, acceptable)

    def request_lp(self, who: str, kind: str, amount: int, actions: list[Action], attacker: bool) -> None:
        s = self.s
        try:
            if kind == "deposit":
                request_id = s.request_deposit(who, s.fund_lp(who, amount))
            else:
                shares = s.model.lv_shares.get(who, 0) * amount // 1_000
                request_id = s.request_redeem(who, shares)
        except ModelRevert as refused:
            self.events[f"LP request refused: {refused.reason}"] += 1
            return
        actions.append(Action("lp", request_id, attacker))

    def close_attacker_positions(self) -> None:
        """Between rounds the attacker closes whatever it holds (closing is always allowed)."""
        s = self.s
        for sub in ATTACKER_SUBS:
            size = s.model.position((s.attacker, sub), BTC).size
            if size:
                try:
                    s.trade(s.attacker, BTC, -size, sub_account=sub)
                except (OrderCancelled, LpRequestCancelled, ModelRevert) as refused:
                    raise AssertionError(f"closing the attacker's {size / WAD} BTC was refused: {refused}") from None

    def count(self, attack, honest) -> None:
        e = self.events
        e["rounds"] += 1
        e["liquidations"] += len(attack.rewards)
        e["ADL calls"] += attack.adl_calls
        e["orders filled"] += sum(1 for f in attack.fills.values() if f.filled)
        e["orders cancelled at execution"] += sum(1 for f in attack.fills.values() if not f.filled)
        e["actions refused"] += attack.refused
        e["LP requests executed by the LP executor"] += attack.lp_executed


def test_no_free_lunch_from_ordering(fuzz_settings, fuzz_stats):
    """DESIGN.md invariant 7 over random rounds (see the module docstring)."""
    Invariant7Machine.stats = fuzz_stats
    overrides = {"stateful_step_count": QUICK_ROUNDS if profile_name() == "quick" else LONG_ROUNDS}
    if profile_name() == "quick" and not os.environ.get(MAX_EXAMPLES_ENV):
        overrides["max_examples"] = QUICK_EXAMPLES
    if os.environ.get(STEP_COUNT_ENV):
        overrides.pop("stateful_step_count")
    invariant7_world()  # deploy once, outside the timed run
    started = time.perf_counter()
    try:
        run_state_machine_as_test(Invariant7Machine, settings=settings(fuzz_settings, **overrides))
    finally:
        stats = fuzz_stats.get(Invariant7Machine.__name__)
        if stats is not None:
            stats["wall_seconds"] = stats.get("wall_seconds", 0.0) + time.perf_counter() - started
