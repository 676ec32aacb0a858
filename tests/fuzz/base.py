"""What every stateful fuzz machine shares: the deployment, the actions on contracts and model,
the oracle's round history, trades through two-step orders, and the checks after every step.

Every action runs on the contracts and on `perpdex.model` and is compared to the wei (that is
what `System` does, tests/system.py); a reverting action must revert with the model's reason.
After every step `PerpdexMachine` checks DESIGN.md invariants 1-3 (`System.check_invariants`),
compares everything the contracts store with the model (`System.assert_state_matches`) and
every stored order and order book with the model's (tests/fuzz/order_actions.py), all from
storage reads (tests/raw_state.py); every VIEW_CHECK_EVERY steps and at the end of each example
it compares every view as well (`System.assert_system_matches` and the order book's views).

Trades are market orders, as traders and keepers make them: committed, executed by a keeper at
the first oracle round published `min_order_delay` later (the price pusher publishes it at the
current price if no round came meanwhile). Every fill and every cancellation at execution is
audited from its event: never at a round published before the order could execute, never
beyond `acceptable_price`, at the first round after the delay (market) or at a crossing round
(trigger orders), the fee paid to the executor.

The model knows no oracle freshness; the machines track it (a feed is stale once HEARTBEAT has
passed since its last round) and expect "oracle: stale price" wherever the contracts read a
stale answer, with the model left untouched.

The system is deployed once per process; each example works on a `fresh` snapshot of it (an
EVM anchor plus a model copy) that is rolled back in `teardown`. The machines are in
tests/fuzz/test_stateful.py (trading, liquidation, liquidity vault) and
tests/fuzz/test_orders_stateful.py (orders); profiles and step counts in tests/fuzz/conftest.py.
"""

from __future__ import annotations

import bisect
import functools
import os
import sys
import time
from collections import Counter

import boa
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from perpdex.fixed_point import WAD, mul_div_up
from perpdex.model import LIQUIDITY_VAULT, ModelRevert
from perpdex.orders import RoundPrice
from system import FEED_DECIMALS, HEARTBEAT, LpRequestCancelled, System, fresh

from .order_actions import STALE, OrderActions, OrderStorage, brief

BTC, ETH = 0, 1
MARKETS = (BTC, ETH)
INITIAL_PRICE = {BTC: 40_000, ETH: 2_000}
FEED_TO_WAD = 10 ** (18 - FEED_DECIMALS)
TOKEN = 10**6  # one USDC in token units
SCALE = 10**12  # token units -> WAD
MAX_UINT = 2**256 - 1
INT256_MAX = 2**255 - 1
SIZE_LIMIT = {BTC: 5 * WAD, ETH: 100 * WAD}  # scale of random trade sizes

PENDING = "vault: a market order is pending; withdraw after it executes or expires"
# every view is compared with the model this often (and at the end of each example); the state
# behind them, and the invariants, after every step. A failure that only a view shows shrinks
# to an example padded up to the next view check; PERPDEX_FUZZ_VIEW_EVERY=1 (views after every
# step, ~4x slower) lets the re-run, which replays the saved example, shrink it all the way.
VIEW_CHECK_EVERY = int(os.environ.get("PERPDEX_FUZZ_VIEW_EVERY", "10"))

# ============================================================================================
# the deployment, built once per process
# ============================================================================================

_BASE: tuple[object, System] | None = None  # (the titanoboa chain it is on, the deployment)


def base_system() -> System:
    """BTC-USD at 40,000 and ETH-USD at 2,000 with the default parameters, plus the fuzzers'
    actors (approvals given once). Nothing else: each machine sets itself up per example.
    Built once per chain (each test module has its own, tests/conftest.py)."""
    global _BASE
    if _BASE is None or _BASE[0] is not boa.env:
        eoa = boa.env.eoa
        s = System()
        for market_id in MARKETS:
            s.list_market(market_id, ("BTC-USD", "ETH-USD")[market_id], INITIAL_PRICE[market_id])
        s.traders = [boa.env.generate_address(f"fuzz_trader{i}") for i in range(3)]
        s.lps = [boa.env.generate_address(f"fuzz_lp{i}") for i in range(2)]
        s.keeper = boa.env.generate_address("fuzz_keeper")
        s.adl_keeper = boa.env.generate_address("fuzz_adl_keeper")
        s.attacker = boa.env.generate_address("fuzz_attacker")
        s.donor = boa.env.generate_address("fuzz_donor")
        for who in [*s.traders, *s.lps, s.donor, s.attacker]:
            with boa.env.prank(who):
                s.usdc.approve(s.vault.address, MAX_UINT)
                s.usdc.approve(s.liquidity_vault.address, MAX_UINT)
                s.usdc.approve(s.insurance_fund.address, MAX_UINT)
        with boa.env.prank(s.owner):
            s.liquidator.set_adl_keeper(s.adl_keeper, True)
        s.order_storage = OrderStorage(s)  # the storage layout is read once
        boa.env.eoa = eoa
        _BASE = (boa.env, s)
    return _BASE[1]


# ============================================================================================
# actions on contracts and model that System does not provide (token-unit amounts, reverts)
# ============================================================================================


def mint(s: System, who, amount: int) -> None:
    if amount > 0:
        with boa.env.prank(s.owner):
            s.usdc.mint(who, amount)


def publish(s: System, market_id: int, index: int) -> None:
    """A new oracle round at `index` (WAD, a multiple of 1e10), on the feed and the model."""
    with boa.env.prank(s.owner):
        s.aggregators[market_id].update_answer(index // FEED_TO_WAD)
    s.model.index[market_id] = index


def deposit(s: System, who, sub: int, amount: int) -> None:
    """Vault.deposit of `amount` token units; a zero amount must revert as in the model."""
    mint(s, who, amount)
    expected, credited = s.mirror(who, lambda: s.model.deposit((who, sub), amount), lambda: s.vault.deposit(sub, amount))
    assert credited == expected == amount * SCALE
    s.accounts.add((who, sub))


def lp_deposit(s: System, lp, amount: int) -> int:
    """A two-step LP deposit of `amount` token units (request, a round in every market, the
    keeper's execution), on the contracts and the model: the shares. A refused request raises
    the ModelRevert; a cancelled execution LpRequestCancelled with the vault's reason."""
    mint(s, lp, amount)
    with boa.env.prank(lp):
        s.usdc.approve(s.liquidity_vault.address, 2**256 - 1)
    before = s.liquidity_vault.balanceOf(lp)
    request_id = s._request_in_the_past(lambda: s.request_deposit(lp, amount))
    result = s.execute_lp(request_id)
    if not result.executed:
        raise LpRequestCancelled(result.reason)
    assert s.liquidity_vault.balanceOf(lp) == s.model.lv_shares[lp] == before + result.amount
    return result.amount


def lp_redeem(s: System, lp, shares: int) -> int:
    """System.lp_redeem (two-step): the assets paid, and they reached the LP."""
    before = s.usdc.balanceOf(lp)
    assets = s.lp_redeem(lp, shares)  # ModelRevert / LpRequestCancelled: refused on both sides
    assert s.usdc.balanceOf(lp) == before + assets
    assert s.liquidity_vault.balanceOf(lp) == s.model.lv_shares.get(lp, 0)
    return assets


def expected_max_redeem(s: System, lp) -> int:
    """ERC-4626 maxRedeem from the model's state: the LP's shares, capped by the vault's cash
    and by what keeps open interest within max_oi_ratio x the remaining value."""
    m = s.model
    total = m.lv_total_assets()
    cash = m.cash_of(LIQUIDITY_VAULT)
    free = 0
    if cash > 0:
        locked = mul_div_up(m.open_interest_notional(), WAD, m.max_oi_ratio * m.scale)
        free = 0 if locked >= total else min(cash // m.scale, total - locked)
    return min(m.lv_shares.get(lp, 0), m.lv_to_shares(free, total))


def refusal(action, *args) -> str:
    """Run an action that must be refused; its reason (the action has checked that the
    contract reverted with the model's reason)."""
    try:
        action(*args)
    except ModelRevert as revert:
        return revert.reason
    raise AssertionError(f"{action.__name__}{args} was not refused")


def size_of(market_id: int, per_mille: int, dust: int) -> int:
    """A trade size up to SIZE_LIMIT with wei-level dust, so that every rounding path runs."""
    size = per_mille * SIZE_LIMIT[market_id] // 1_000
    size = size + dust if size >= 0 else size - dust
    return size or 1


def worst_price(size: int) -> int:
    """The acceptable price that accepts any fill."""
    return MAX_UINT if size > 0 else 0


# ============================================================================================
# rule decorators and shared strategies
# ============================================================================================


def counted(fn):
    """Count every executed rule as one step of its machine (for steps per second)."""

    @functools.wraps(fn)
    def wrapper(self, **kwargs):
        self.steps += 1
        self.rule_counts[fn.__name__] += 1
        self.keepers_just_ran = False
        return fn(self, **kwargs)

    return wrapper


def step(**strategies):
    """@rule that counts its executions."""
    return lambda fn: rule(**strategies)(counted(fn))


def first_step(**strategies):
    """@initialize that counts its executions."""
    return lambda fn: initialize(**strategies)(counted(fn))


ACCOUNT = st.integers(0, 5)  # 3 traders x 2 sub-accounts (fewer in LiquidityVaultMachine)
MARKET = st.sampled_from(MARKETS)
PER_MILLE = st.integers(-1_000, 1_000)
DUST = st.integers(0, 10**6)
# mostly small moves, often gaps of up to +-30 %
MOVE_BPS = st.one_of(
    st.integers(-300, 300), st.sampled_from([-3_000, -2_000, -1_000, 1_000, 2_000, 3_000]), st.integers(-3_000, 3_000)
)
COLLATERAL = st.one_of(st.integers(1, 100 * TOKEN), st.integers(100 * TOKEN, 50_000 * TOKEN))


# ============================================================================================
# the base machine
# ============================================================================================


class PerpdexMachine(OrderActions, RuleBasedStateMachine):
    """Shared actions (deposit, withdraw, trade through market orders, order execution, prices,
    time, pause) and the per-step checks.

    Oracle freshness is tracked here (the model has no notion of it): a market's feed is stale
    once HEARTBEAT has passed since its last round, and every action that reads that price must
    then revert with "oracle: stale price" while the model stays put. Only TradingMachine lets
    time pass without republishing. The machine keeps every feed's round history (price and
    publication time by round id), from which the keepers name execution rounds.
    """

    N_TRADERS = 3
    SUBS = (0, 1)
    stats: dict = {}

    def __init__(self):
        super().__init__()
        self.started = time.perf_counter()
        self.steps = 0
        self.events = Counter()
        self.rule_counts = Counter()
        self._eoa = boa.env.eoa
        self._fresh = fresh(base_system())
        self.s = self._fresh.__enter__()
        self.s.compare_views = False  # accounts are compared through storage after each action
        self.order_storage = self.s.order_storage
        self.views_checked_at = 0
        self.accounts = [(who, sub) for who in self.s.traders[: self.N_TRADERS] for sub in self.SUBS]
        self.gifts = 0  # token units sent straight to the vault
        self.keepers_just_ran = False
        self.updated_at = {m: self.s.aggregators[m].latestRoundData()[3] for m in MARKETS}
        # round id -> (price in WAD, updatedAt), index 0 unused; and the updatedAt column alone
        self.rounds = {m: self.read_rounds(m) for m in MARKETS}
        self.round_times = {m: [t for _, t in self.rounds[m]] for m in MARKETS}
        self.s.after_publish = self.sync_rounds  # the LP flows publish a round in every market
        self.orders: list[int] = []  # every order id committed, in order
        self.filled: set[int] = set()

    def sync_rounds(self) -> None:
        """Rounds published outside `publish` (an LP flow's execution round) into the history."""
        for m in MARKETS:
            agg = self.s.aggregators[m]
            for round_id in range(len(self.rounds[m]), agg.latestRound() + 1):
                _, answer, _, updated_at, _ = agg.getRoundData(round_id)
                self.rounds[m].append((answer * FEED_TO_WAD, updated_at))
                self.round_times[m].append(updated_at)
                self.updated_at[m] = updated_at

    def read_rounds(self, market_id: int) -> list[tuple[int, int]]:
        agg = self.s.aggregators[market_id]
        rounds = [(0, -1)]
        for round_id in range(1, agg.latestRound() + 1):
            _, answer, _, updated_at, _ = agg.getRoundData(round_id)
            rounds.append((answer * FEED_TO_WAD, updated_at))
        return rounds

    def teardown(self):
        try:
            # the last steps' views, unless the example is already failing (or was cut short
            # by hypothesis): a second error here would hide the first from the shrinker
            if self.steps > self.views_checked_at and sys.exc_info()[0] is None:
                self.compare_views()
            empty = {"steps": 0, "examples": 0, "seconds": 0.0, "events": {}}
            stats = self.stats.setdefault(type(self).__name__, empty)
            stats["steps"] += self.steps
            stats["examples"] += 1
            stats["seconds"] += time.perf_counter() - self.started
            for name, count in self.events.items():
                stats["events"][name] = stats["events"].get(name, 0) + count
            rules = stats.setdefault("rules", {})
            for name, count in self.rule_counts.items():
                rules[name] = rules.get(name, 0) + count
        finally:
            self._fresh.__exit__(None, None, None)
            boa.env.eoa = self._eoa

    # -- the checks after every step ----------------------------------------------------------

    @invariant()
    def contracts_match_model_and_invariants_hold(self):
        """After every step: DESIGN.md invariants 1-3, everything the contracts store equal to
        the model to the wei, and the order book's invariants, all read straight from storage
        (tests/raw_state.py, OrderStorage). Every VIEW_CHECK_EVERY steps, and when the example
        ends, every view is compared as well."""
        self.s.check_invariants(gifts=self.gifts)
        self.s.assert_state_matches()
        self.check_order_book()
        if self.steps - self.views_checked_at >= VIEW_CHECK_EVERY:
            self.compare_views()

    def compare_views(self) -> None:
        """Every view against the model. While a feed is stale the views that need its price
        revert, so the comparison then runs on a throwaway snapshot in which the same prices are
        republished (state unchanged)."""
        self.views_checked_at = self.steps
        self.compare_order_views()
        stale = [m for m in MARKETS if self.is_stale(m)]
        if not stale:
            self.s.assert_system_matches()
            return
        with boa.env.anchor():
            for m in stale:
                publish(self.s, m, self.s.model.index[m])
            self.s.assert_system_matches()

    # -- oracle rounds and time ---------------------------------------------------------------

    def is_stale(self, market_id: int) -> bool:
        return self.s.now - self.updated_at[market_id] > HEARTBEAT

    def account(self, i: int):
        return self.accounts[i % len(self.accounts)]

    def publish(self, market_id: int, index: int) -> int:
        """A new round at `index` (clamped to 1/100..100x the initial price, rounded down to the
        feed's precision); its round id."""
        low, high = INITIAL_PRICE[market_id] * WAD // 100, INITIAL_PRICE[market_id] * WAD * 100
        index = min(max(index, low), high)
        index -= index % FEED_TO_WAD
        publish(self.s, market_id, index)
        self.updated_at[market_id] = self.s.now
        self.rounds[market_id].append((index, self.s.now))
        self.round_times[market_id].append(self.s.now)
        return len(self.rounds[market_id]) - 1

    def refresh_prices(self) -> None:
        for m in MARKETS:
            self.publish(m, self.s.model.index[m])

    def advance(self, seconds: int) -> None:
        """Time passes (funding accrues). A machine whose feeds must stay fresh publishes the
        heartbeat rounds on the way (OrderMachine)."""
        if seconds > 0:
            self.s.warp(seconds)

    def latest_round(self, market_id: int) -> int:
        return len(self.rounds[market_id]) - 1

    def first_round(self, market_id: int, not_before: int) -> int | None:
        """The first round published at or after `not_before` (a market order's only execution
        round), if there is one yet."""
        round_id = bisect.bisect_left(self.round_times[market_id], not_before)
        return round_id if round_id < len(self.rounds[market_id]) else None

    def round_price(self, market_id: int, round_id: int) -> RoundPrice:
        price, published = self.rounds[market_id][round_id]
        previous, previous_published = self.rounds[market_id][round_id - 1]
        return RoundPrice(price, previous, published, previous_published)

    # -- trading through market orders ----------------------------------------------------------

    def trade(self, who, sub: int, market_id: int, size: int, acceptable: int | None = None):
        """A market order as a trader and a keeper make it: committed now, executed at the
        first round published `min_order_delay` later (the pusher publishes one at the current
        price if none came). Returns the fill (the model's TradeResult, which the contract's
        matched) or None when the commit is refused, the order is cancelled at execution, or
        the execution reads a stale price (the order then stays pending for a keeper)."""
        s = self.s
        acceptable = worst_price(size) if acceptable is None else acceptable
        try:
            order_id = self.commit(who, sub, market_id, size, acceptable)
        except ModelRevert as revert:
            self.events[f"order refused: {brief(revert.reason)}"] += 1
            return None
        not_before = s.model.order(order_id).not_before
        self.advance(not_before - s.now)
        round_id = self.first_round(market_id, not_before) or self.publish(market_id, s.model.index[market_id])
        try:
            result = self.execute(order_id, round_id)
        except ModelRevert as revert:
            assert revert.reason == STALE, revert.reason
            self.events["market order left pending: stale price"] += 1
            return None
        return s.model.last_trade if result.filled else None  # the audit counted it

    def withdraw(self, who, sub: int, amount: int) -> bool:
        """Vault.withdraw of `amount` token units on both sides; a refused withdrawal reverts
        with the model's reason (a pending market order first, then the stale-price one) and
        changes nothing."""
        s, account = self.s, (who, sub)
        open_markets = s.model.open_markets(account)
        pending = s.model.pending_market_orders(account)
        if amount > 0 and not pending and any(self.is_stale(m) for m in open_markets):
            with boa.reverts(STALE), boa.env.prank(who):
                s.vault.withdraw(sub, amount)
            self.events["withdraw refused: stale price"] += 1
            return False
        try:
            s.model.withdraw(account, amount)  # checks before it changes anything
        except ModelRevert as revert:
            with boa.reverts(revert.reason), boa.env.prank(who):
                s.vault.withdraw(sub, amount)
            assert (revert.reason == PENDING) == (amount > 0 and pending > 0), revert.reason
            self.events[f"withdraw refused: {revert.reason}"] += 1
            return False
        before = s.usdc.balanceOf(who)
        with boa.env.prank(who):
            debited = s.vault.withdraw(sub, amount)
        assert debited == amount * SCALE
        assert s.usdc.balanceOf(who) == before + amount
        if open_markets:
            # DESIGN.md invariant 5: nobody withdraws below the initial requirement
            _, equity, initial, _ = s.exchange.account_state(who, sub)
            assert equity >= initial, (equity, initial)
        self.events["withdraw"] += 1
        return True

    def levered_size(self, account, market_id: int, side: int, percent: int) -> int:
        """The size that uses `percent` % of the account's free margin at the initial margin
        ratio: around 100 % it lands on both sides of "insufficient margin"."""
        view = self.s.model.account_view(account)
        free = view.equity - max(view.initial, view.maintenance)
        if free <= 0:
            return side * SIZE_LIMIT[market_id] // 100
        notional = free * WAD // self.s.model.params[market_id].initial_margin_ratio
        return side * max(notional * WAD // self.s.model.index[market_id] * percent // 100, 1)

    # -- rules --------------------------------------------------------------------------------

    @first_step(amounts=st.lists(st.integers(0, 50_000), min_size=6, max_size=6))
    def traders_fund_accounts(self, amounts):
        for (who, sub), usd in zip(self.accounts, amounts):
            if usd:
                self.s.deposit(who, usd, sub)

    @step(i=ACCOUNT, amount=st.one_of(st.just(0), COLLATERAL))
    def deposit(self, i, amount):
        who, sub = self.account(i)
        try:
            deposit(self.s, who, sub, amount)
        except ModelRevert as revert:
            assert amount == 0 and revert.reason == "vault: zero amount"

    @step(
        i=ACCOUNT,
        mode=st.sampled_from(["percent", "all", "one more", "any", "zero"]),
        percent=st.integers(1, 100),
        any_amount=st.integers(1, 10**12),
    )
    def withdraw_collateral(self, i, mode, percent, any_amount):
        who, sub = self.account(i)
        free = self.s.model.account_view((who, sub)).withdrawable // SCALE  # token units
        amount = {
            "percent": free * percent // 100,
            "all": free,
            "one more": free + 1,  # always above the free collateral: must be refused
            "any": any_amount,
            "zero": 0,
        }[mode]
        done = self.withdraw(who, sub, amount)
        if mode in ("one more", "zero"):
            assert not done

    @step(i=ACCOUNT, market_id=MARKET, per_mille=PER_MILLE, dust=DUST)
    def trade_random(self, i, market_id, per_mille, dust):
        who, sub = self.account(i)
        self.trade(who, sub, market_id, size_of(market_id, per_mille, dust))

    @step(i=ACCOUNT, market_id=MARKET, side=st.sampled_from([1, -1]), percent=st.integers(30, 130))
    def trade_levered(self, i, market_id, side, percent):
        """Open or add up to (and past) the initial margin limit."""
        account = self.account(i)
        self.trade(*account, market_id, self.levered_size(account, market_id, side, percent))

    @step(i=ACCOUNT, market_id=MARKET, per_mille=PER_MILLE, dust=DUST, slack=st.integers(-2, 2))
    def trade_with_slippage_bound(self, i, market_id, per_mille, dust, slack):
        """acceptable_price a few wei around the quoted fill: the bound is exact (the order
        executes at a round at the quoted index)."""
        who, sub = self.account(i)
        s = self.s
        size = size_of(market_id, per_mille, dust)
        try:
            quote = s.model.fill_price(market_id, size)
        except ModelRevert:
            quote = s.model.index[market_id]
        else:
            if not self.is_stale(market_id):
                assert s.exchange.fill_price(market_id, size) == quote  # the quoting view
        acceptable = max(quote + slack if size > 0 else quote - slack, 0)
        fill = self.trade(who, sub, market_id, size, acceptable)
        if fill is not None:
            assert fill.fill_price == quote
            assert slack >= 0

    @step(i=ACCOUNT, market_id=MARKET, extra=st.integers(0, 1_000))
    def close_or_flip(self, i, market_id, extra):
        """Close a position exactly or flip it to the other side (open one if there is none)."""
        who, sub = self.account(i)
        size = self.s.model.position((who, sub), market_id).size
        flip = (1 if size > 0 else -1) * extra * SIZE_LIMIT[market_id] // 1_000
        if size:
            fill = self.trade(who, sub, market_id, -size - flip)
            if fill is not None:
                assert self.s.exchange.position_state(who, sub, market_id)[0] == -flip
        else:
            self.trade(who, sub, market_id, flip or SIZE_LIMIT[market_id] // 10)

    @step(market_id=MARKET, bps=MOVE_BPS)
    def move_price(self, market_id, bps):
        self.publish(market_id, self.s.model.index[market_id] * (10_000 + bps) // 10_000)

    @step(paused=st.sampled_from([False, False, False, True]))
    def guardian_pauses(self, paused):
        """The guardian switches reduce-only mode; nobody else can."""
        s = self.s
        with boa.reverts("exchange: caller is not the guardian"), boa.env.prank(s.attacker):
            s.exchange.set_paused(not paused)
        with boa.env.prank(s.owner):  # System.owner is the guardian
            s.exchange.set_paused(paused)
        s.model.paused = paused
        assert s.exchange.paused() == paused


# ============================================================================================
# running a machine
# ============================================================================================


def run_machine(machine: type[PerpdexMachine], fuzz_settings, fuzz_stats) -> None:
    machine.stats = fuzz_stats
    base_system()  # deploy once, outside the timed run
    started = time.perf_counter()
    try:
        run_state_machine_as_test(machine, settings=fuzz_settings)
    finally:
        stats = fuzz_stats.get(machine.__name__)
        if stats is not None:
            stats["wall_seconds"] = stats.get("wall_seconds", 0.0) + time.perf_counter() - started
