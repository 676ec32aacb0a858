"""The liquidity vault's two-step flows: requests, execution at the first round after the delay,
cancellation after expiry, the deposit cooldown, deficit-aware pricing, and the atomic flash
theft from LPs (deposit, push the skew, redeem, take it back, withdraw) shown failing.

Every step runs on the contracts and on the reference model (perpdex/lp_flows.py) and is
compared to the wei; a refusal must come with the same reason on both sides and change nothing."""

from __future__ import annotations

from dataclasses import replace

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.keeper.lp_decisions import CANCEL, EXECUTE, decide_lp_requests
from perpdex.keeper.orders import WAIT_NO_ROUND, Feed, FeedRound, MarketFeeds
from perpdex.lp_flows import REASON_PREVIEW, REASON_SYNC_DEPOSIT, REASON_SYNC_REDEEM, LiquidityFlowsMixin
from perpdex.model import ExchangeModel, ModelRevert
from system import LpRequestCancelled, System, fresh

BTC, ETH = 0, 1
ZERO = "0x" + "00" * 20
USDC = 10**6

pytestmark = pytest.mark.ignore_isolation


LpModel = ExchangeModel
LpSystem = System  # System carries the two-step LP flows (tests/system.py)


@pytest.fixture(scope="module")
def lp_world():
    """BTC-USD at 40,000 and ETH-USD at 2,000, an honest LP's 1,000,000 USD seeded by the owner."""
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = LpSystem()
        s.list_market(BTC, "BTC-USD", 40_000)
        s.list_market(ETH, "ETH-USD", 2_000)
        honest = boa.env.generate_address("honest_lp")
        s.fund_lp(s.owner, 1_000_000)
        s.mirror(s.owner, lambda: s.model._transaction(s.model.lp_deposit, honest, 1_000_000 * USDC),
                 lambda: s.liquidity_vault.deposit(1_000_000 * USDC, honest))
        s.honest = honest
        yield s
    boa.env.eoa = eoa


@pytest.fixture
def s(lp_world, request):
    with fresh(lp_world) as system:
        yield system
        if not getattr(request.node, "rep_call_failed", False):
            system.check_invariants()
            system.assert_system_matches()
            system.assert_lp_matches()


def named(s, name: str) -> list:
    return [e for e in s.last_logs if type(e).__name__ == name]


def share_price(s) -> int:
    """Assets (token units) of 1e18 shares at the current index."""
    return s.liquidity_vault.convertToAssets(WAD)


# ============================================================================================
# deposits
# ============================================================================================


def test_a_deposit_request_escrows_the_tokens_outside_the_vaults_value(s, lp):
    s.fund_lp(lp, 50_000)
    value = s.liquidity_vault.totalAssets()
    request_id = s.request_deposit(lp, 50_000 * USDC)
    assert s.usdc.balanceOf(lp) == 0 and s.usdc.balanceOf(s.liquidity_vault.address) == 50_000 * USDC
    assert s.liquidity_vault.totalAssets() == value  # not in the value until executed
    assert s.liquidity_vault.balanceOf(lp) == 0
    [event] = named(s, "DepositRequested")
    assert (event.request_id, event.requester, event.assets, event.not_before) == (request_id, lp, 50_000 * USDC, s.now + 1)


def test_a_deposit_executes_at_the_first_round_after_the_delay_and_pays_the_executor(s, lp):
    s.set_lp_params(execution_fee=2 * USDC)
    s.fund_lp(lp, 10_002)
    request_id = s.request_deposit(lp, 10_000 * USDC)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    price = share_price(s)
    result = s.execute_lp(request_id)
    assert result.executed and s.liquidity_vault.balanceOf(lp) == result.amount
    assert s.liquidity_vault.convertToAssets(result.amount) in (10_000 * USDC - 1, 10_000 * USDC)
    assert share_price(s) == price  # the honest LP's share is worth what it was
    assert s.usdc.balanceOf(s.executor) == 2 * USDC
    [event] = named(s, "DepositExecuted")
    assert (event.assets, event.shares, event.executor, event.fee) == (10_000 * USDC, result.amount, s.executor, 2 * USDC)
    assert s.usdc.balanceOf(s.liquidity_vault.address) == 0  # nothing left behind


def test_only_an_lp_executor_executes_until_the_open_time_then_anyone_does(s, lp):
    """The LP executor role places LP flows (after a round's trades and liquidations, see
    tests/unit/test_invariant7_found.py); anyone else may execute a request from
    OPEN_EXECUTION_AFTER after its `not_before`, so a dead keeper delays flows, never traps
    them. Granting the role is the owner's (behind the timelock); a stranger cannot."""
    stranger = boa.env.generate_address("stranger")
    s.set_lp_params(execution_fee=2 * USDC)
    s.fund_lp(lp, 10_002)
    request_id = s.request_deposit(lp, 10_000 * USDC)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    open_at = s.model.lp_request(request_id).not_before + s.liquidity_vault.OPEN_EXECUTION_AFTER()
    assert s.liquidity_vault.OPEN_EXECUTION_AFTER() == 300
    with pytest.raises(ModelRevert, match=f"only an LP executor may execute before {open_at}"):
        s.execute_lp(request_id, executor=stranger)
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(stranger):
        s.liquidity_vault.set_lp_executor(stranger, True)
    s.warp(open_at - s.now - 1)
    with pytest.raises(ModelRevert, match="only an LP executor"):
        s.execute_lp(request_id, executor=stranger)  # one second early
    assert s.model.lp_request(request_id).amount == 10_000 * USDC and s.liquidity_vault.balanceOf(lp) == 0
    s.warp(1)
    result = s.execute_lp(request_id, executor=stranger)
    assert result.executed and s.liquidity_vault.balanceOf(lp) == result.amount
    assert s.usdc.balanceOf(stranger) == 2 * USDC  # the fee goes to whoever executed
    # revoking the role puts its holder with everyone else
    s.set_lp_executor(s.executor, False)
    [event] = named(s, "LpExecutorSet")
    assert (event.executor, event.allowed) == (s.executor, False)
    s.fund_lp(lp, 1_002)
    second = s.request_deposit(lp, 1_000 * USDC)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    with pytest.raises(ModelRevert, match="only an LP executor"):
        s.execute_lp(second)


def test_a_deposit_is_priced_at_its_execution_round_not_at_the_request(s, lp, trader):
    """The index moves between request and execution: the shares follow the execution round."""
    s.deposit(trader, 100_000)
    s.trade(trader, BTC, 10 * WAD)
    s.fund_lp(lp, 100_000)
    request_id = s.request_deposit(lp, 100_000 * USDC)
    at_request = s.liquidity_vault.convertToShares(100_000 * USDC)
    s.warp(1)
    s.set_price(BTC, 36_000)  # the long loses, the vault gains: shares cost more
    s.publish(ETH)
    result = s.execute_lp(request_id)
    assert 0 < result.amount < at_request


@pytest.mark.parametrize("which", ["before the delay", "a later round", "too few markets", "unknown id"])
def test_execution_at_a_wrong_round_is_refused_with_its_reason_and_changes_nothing(s, lp, which):
    s.fund_lp(lp, 10_000)
    request_id = s.request_deposit(lp, 10_000 * USDC)
    early = {m: s.publish(m) for m in (BTC, ETH)}  # published in the request's second
    s.warp(1)
    first = {m: s.publish(m) for m in (BTC, ETH)}
    s.warp(1)
    later = {m: s.publish(m) for m in (BTC, ETH)}
    if which == "too few markets":
        with boa.reverts("liquidity vault: one list of round ids per listed market expected (2)"), \
                boa.env.prank(s.executor):
            s.liquidity_vault.execute_deposit(request_id, [[first[BTC]]])
    else:
        rounds, rid, reason = {
            "before the delay": (early, request_id, "published before the delay ended"),
            "a later round": ({BTC: first[BTC], ETH: later[ETH]}, request_id, "not the first round of market 1"),
            "unknown id": (first, 99, "no open request with this id"),
        }[which]
        with pytest.raises(ModelRevert, match=reason):
            s.execute_lp(rid, rounds)
    assert s.model.lp_request(request_id).amount == 10_000 * USDC
    assert s.liquidity_vault.balanceOf(lp) == 0
    assert s.execute_lp(request_id, first).executed  # the first round still works


def test_bad_requests_are_refused_with_their_reason(s, lp):
    s.fund_lp(lp, 10)
    with pytest.raises(ModelRevert, match="zero amount"):
        s.request_deposit(lp, 0)
    with pytest.raises(ModelRevert, match="zero receiver"):
        s.request_deposit(lp, 10 * USDC, ZERO)
    with pytest.raises(ModelRevert, match="zero amount"):
        s.request_redeem(lp, 0)
    with pytest.raises(ModelRevert, match="transfer amount exceeds balance"):
        s.request_redeem(lp, WAD)
    assert s.liquidity_vault.last_request_id() == 0
    request_id = s.request_deposit(lp, 10 * USDC)
    with boa.reverts("liquidity vault: not a redemption request"):
        s.liquidity_vault.execute_redeem(request_id, [[1], [1]])


# ============================================================================================
# expiry and cancellation: no free option
# ============================================================================================


def test_nobody_cancels_before_expiry_and_anyone_after_it(s, lp, keeper):
    s.set_lp_params(execution_fee=3 * USDC)
    s.fund_lp(lp, 5_003)
    request_id = s.request_deposit(lp, 5_000 * USDC)
    expiry = s.model.lp_request(request_id).expiry
    for who in (lp, keeper):
        with pytest.raises(ModelRevert, match=f"cannot be cancelled before it expires at {expiry}"):
            s.cancel_lp(who, request_id)
    s.warp(3600)
    s.publish(BTC), s.publish(ETH)
    with pytest.raises(ModelRevert, match="request expired"):
        s.execute_lp(request_id)
    s.cancel_lp(keeper, request_id)
    assert s.usdc.balanceOf(lp) == 5_000 * USDC and s.usdc.balanceOf(keeper) == 3 * USDC
    [event] = named(s, "RequestCancelled")
    assert (event.requester, event.by, event.amount, event.reason, event.fee_to) == (lp, keeper, 5_000 * USDC, "expired", keeper)
    with pytest.raises(ModelRevert, match="no open request"):
        s.cancel_lp(keeper, request_id)


def test_an_expired_redemption_returns_the_shares_to_the_requester(s, lp, keeper):
    shares = s.lp_deposit(lp, 20_000)
    request_id = s.request_redeem(lp, shares // 2)
    assert s.liquidity_vault.balanceOf(lp) == shares - shares // 2
    s.warp(3600)
    s.cancel_lp(lp, request_id)
    assert s.liquidity_vault.balanceOf(lp) == shares


# ============================================================================================
# redemptions
# ============================================================================================


def test_a_redemption_locks_the_shares_then_pays_at_the_execution_round(s, lp):
    shares = s.lp_deposit(lp, 100_000)
    supply = s.liquidity_vault.totalSupply()
    request_id = s.request_redeem(lp, shares)
    assert s.liquidity_vault.totalSupply() == supply  # still outstanding while pending
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    expected = s.liquidity_vault.convertToAssets(shares)
    result = s.execute_lp(request_id)
    assert result.executed and result.amount == expected
    assert s.usdc.balanceOf(lp) == expected and s.liquidity_vault.totalSupply() == supply - shares
    [event] = named(s, "RedeemExecuted")
    assert (event.shares, event.assets) == (shares, expected)


def test_a_redemption_beyond_the_open_interest_cap_is_cancelled_and_the_shares_returned(s, lp, trader):
    with boa.env.prank(s.owner):
        s.liquidity_vault.set_max_oi_ratio(WAD // 10)
    s.model.max_oi_ratio = WAD // 10
    shares = s.liquidity_vault.balanceOf(s.honest)
    s.deposit(trader, 100_000)
    s.trade(trader, BTC, 2 * WAD)  # 80,000 of open interest: 800,000 of value must stay
    with pytest.raises(LpRequestCancelled, match="open interest cap"):
        s.lp_redeem(s.honest, shares // 2)
    assert s.liquidity_vault.balanceOf(s.honest) == shares
    assert [e.reason for e in named(s, "RequestCancelled")] == ["liquidity vault: open interest cap"]
    assert s.lp_redeem(s.honest, shares // 10) > 0  # within the cap it goes through


# ============================================================================================
# cooldown
# ============================================================================================


def test_shares_of_a_fresh_deposit_cannot_be_redeemed_or_moved_during_the_cooldown(s, lp, attacker):
    s.set_lp_params(cooldown=600)
    shares = s.lp_deposit(lp, 10_000)
    end = s.model.lp_locked(lp)[1]
    reason = f"{shares} shares from a recent deposit are locked until {end}"
    with pytest.raises(ModelRevert, match=reason):
        s.request_redeem(lp, 1)
    with boa.reverts(f"liquidity vault: {reason}"), boa.env.prank(lp):
        s.liquidity_vault.transfer(attacker, 1)
    s.warp(600)
    s.request_redeem(lp, shares // 2)
    with boa.env.prank(lp):
        s.liquidity_vault.transfer(attacker, 1)
    s.model.lp_transfer(lp, attacker, 1)


def test_a_deposit_for_someone_else_locks_only_the_new_shares(s, attacker):
    """A deposit made for an LP cannot freeze the shares it already holds."""
    s.set_lp_params(cooldown=600)
    held = s.liquidity_vault.balanceOf(s.honest)
    s.fund_lp(attacker, 1)
    request_id = s.request_deposit(attacker, USDC, s.honest)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    gift = s.execute_lp(request_id).amount
    assert s.model.lp_locked(s.honest)[0] == gift
    s.request_redeem(s.honest, held)  # everything but the gift


# ============================================================================================
# the synchronous ERC-4626 functions
# ============================================================================================


def test_synchronous_flows_point_to_the_requests_and_the_views_stay_truthful(s, lp):
    s.fund_lp(lp, 1_000)
    lv = s.liquidity_vault
    with boa.reverts(REASON_SYNC_DEPOSIT), boa.env.prank(lp):
        lv.deposit(1_000 * USDC, lp)
    with boa.reverts(REASON_SYNC_DEPOSIT), boa.env.prank(lp):
        lv.mint(WAD, lp)
    for who in (lp, s.owner):
        with boa.reverts(REASON_SYNC_REDEEM), boa.env.prank(who):
            lv.redeem(WAD, who, s.honest)
        with boa.reverts(REASON_SYNC_REDEEM), boa.env.prank(who):
            lv.withdraw(USDC, who, s.honest)
    assert (lv.maxDeposit(lp), lv.maxMint(lp), lv.maxWithdraw(s.honest), lv.maxRedeem(s.honest)) == (0, 0, 0, 0)
    for preview in (lv.previewDeposit, lv.previewMint, lv.previewWithdraw, lv.previewRedeem):
        with boa.reverts(REASON_PREVIEW):
            preview(USDC)
    assert lv.totalAssets() == s.model.lv_total_assets()
    assert lv.convertToAssets(lv.balanceOf(s.honest)) == s.model.lv_to_assets(lv.balanceOf(s.honest), lv.totalAssets())


def test_lp_parameters_are_bounded_and_owned(s, attacker):
    lv = s.liquidity_vault
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(attacker):
        lv.set_lp_params((1, 3600, 0, 0))
    for params, reason in [
        ((0, 3600, 0, 0), "min delay out of bounds"),
        ((601, 3600, 0, 0), "min delay out of bounds"),
        ((10, 10, 0, 0), "max age out of bounds"),
        ((1, 12 * 3600 + 1, 0, 0), "max age out of bounds"),
        ((1, 3600, 3601, 0), "cooldown out of bounds"),
        ((1, 3600, 0, 50 * USDC + 1), "execution fee above the cap"),
    ]:
        with pytest.raises(ModelRevert, match=reason):
            s.model.set_lp_params(type(s.model.lp.params)(*params))
        with boa.reverts(f"liquidity vault: {reason}"), boa.env.prank(s.owner):
            lv.set_lp_params(params)
    assert tuple(lv.lp_params()) == s.model.lp.params.as_tuple()


# ============================================================================================
# deficits: deposits at the larger value, redemptions at the smaller
# ============================================================================================


def bankrupt_long(s, victim: str, keeper: str) -> int:
    """A 1 BTC long gaps through its bankruptcy price; the insurance fund cannot cover it (a deep
    market, so one liquidation closes the whole position: its capacity is 2 x maker fee x
    skew_scale = 100 BTC)."""
    s.set_market_params(BTC, skew_scale=250_000 * WAD)
    s.deposit(victim, 2_500)
    s.trade(victim, BTC, WAD)
    s.set_price(BTC, 36_000)
    s.liquidate(keeper, victim)
    return s.liquidator.total_uncovered_deficit()


def test_a_deposit_made_while_a_deficit_is_netted_does_not_gain_from_its_recovery(s, lp, keeper):
    victim = boa.env.generate_address("victim")
    deficit = bankrupt_long(s, victim, keeper)
    assert deficit > 0
    s.fund_lp(lp, 100_000)
    request_id = s.request_deposit(lp, 100_000 * USDC)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    result = s.execute_lp(request_id)
    assert result.deficit == deficit
    # priced at the value without the deficit netted: even if all of it came back...
    recovered = s.model.lv_to_assets(result.amount, (s.model.liquidity_vault_value() + deficit) // s.model.scale)
    assert recovered <= 100_000 * USDC
    # ...while shares priced at the netted value would have gained exactly that recovery
    netted_shares = s.model.lv_to_shares(100_000 * USDC, result.total_assets - deficit // s.model.scale)
    assert netted_shares > result.amount


def test_a_redemption_cannot_leave_ahead_of_an_outstanding_deficit(s, keeper):
    victim = boa.env.generate_address("victim")
    deficit = bankrupt_long(s, victim, keeper)
    shares = s.liquidity_vault.balanceOf(s.honest) // 10
    request_id = s.request_redeem(s.honest, shares)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    gross = s.model.lv_value_at(s.model.index)
    result = s.execute_lp(request_id)
    assert result.total_assets == (gross - deficit) // s.model.scale
    assert result.amount < s.model.lv_to_assets(shares, gross // s.model.scale)


# ============================================================================================
# finding 2: flash theft from LPs with no prior stake
# ============================================================================================


def test_deposit_push_redeem_unpush_withdraw_takes_nothing_from_the_honest_lp(s, attacker):
    """The review took 13 % of an honest LP's 10M in one transaction: deposit, push the skew,
    redeem at the inflated share price, take the skew back, withdraw. Now the deposit waits for
    the next round and the value is at the closing price, so the attacker's best sequence at one
    index ends with less than it started, and the honest LP's share is worth no less."""
    s.set_market_params(BTC, skew_scale=10_000 * WAD)
    honest_before = s.liquidity_vault.convertToAssets(s.liquidity_vault.balanceOf(s.honest))
    start = s.fund_lp(attacker, 2_000_000)
    # the same transaction is impossible: a request executes only at a later round
    request_id = s.request_deposit(attacker, 1_000_000 * USDC)
    same_block = {m: s.publish(m) for m in (BTC, ETH)}
    with pytest.raises(ModelRevert, match="published before the delay ended"):
        s.execute_lp(request_id, same_block)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    shares = s.execute_lp(request_id).amount
    with boa.env.prank(attacker):
        s.usdc.approve(s.vault.address, 2**256 - 1)
        s.vault.deposit(0, 1_000_000 * USDC)
    s.model.deposit((attacker, 0), 1_000_000 * USDC)
    s.accounts.add((attacker, 0))
    s.trade(attacker, BTC, 100 * WAD)  # the push: 4M USD, a 1 % premium
    redeem_id = s.request_redeem(attacker, shares)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    paid = s.execute_lp(redeem_id).amount
    s.trade(attacker, BTC, -100 * WAD)  # and back
    s.withdraw(attacker, s.exchange.withdrawable(attacker, 0) // 10**12)
    end = s.usdc.balanceOf(attacker)
    assert paid > 0
    assert end <= start, f"the attacker gained {(end - start) / USDC:,.2f} USD"
    assert s.liquidity_vault.convertToAssets(s.liquidity_vault.balanceOf(s.honest)) >= honest_before


# ============================================================================================
# the keeper's decision (perpdex/keeper/lp_decisions.py), executed on contracts and model
# ============================================================================================


def feeds_of(s) -> dict[int, MarketFeeds]:
    """Every market's rounds as the keeper reads them (one feed per market here)."""
    markets = {}
    for market_id, agg in s.aggregators.items():
        latest = agg.latestRound()
        rounds = {}
        for rid in range(1, latest + 1):
            _, answer, _, updated, _ = agg.getRoundData(rid)
            rounds[rid] = FeedRound(rid, answer * 10**10, updated)
        markets[market_id] = MarketFeeds([Feed(3600, rounds, latest)])
    return markets


def test_the_keeper_waits_for_every_market_then_executes_at_the_rounds_it_chose(s, lp):
    s.fund_lp(lp, 10_000)
    request_id = s.request_deposit(lp, 10_000 * USDC)
    requests = dict(s.model.lp.requests)
    decide = lambda: decide_lp_requests(requests, feeds_of(s), [BTC, ETH], s.now + 1)  # noqa: E731
    assert decide().waiting == {request_id: f"market {BTC}: {WAIT_NO_ROUND}"}
    s.warp(1)
    btc_round = s.publish(BTC)
    assert decide().waiting == {request_id: f"market {ETH}: {WAIT_NO_ROUND}"}
    s.warp(5)
    eth_round = s.publish(ETH)
    s.publish(BTC)  # a later BTC round: the keeper keeps the first one
    [action] = decide().actions
    assert (action.action, action.round_ids) == (EXECUTE, ((btc_round,), (eth_round,)))
    result = s.execute_lp(request_id, {BTC: btc_round, ETH: eth_round})
    assert result.executed and s.liquidity_vault.balanceOf(lp) == result.amount


def test_a_keeper_without_the_lp_executor_role_waits_for_the_open_time_and_then_executes(s, lp, keeper):
    """The decision core never sends what the contract would refuse: a keeper without the role
    says why a ready request waits, and executes it (its turn starting there) from the time
    anyone may; the keeper with the role executes at once."""
    s.fund_lp(lp, 10_000)
    request_id = s.request_deposit(lp, 10_000 * USDC)
    s.warp(1)
    s.publish(BTC), s.publish(ETH)
    requests = dict(s.model.lp.requests)
    open_at = requests[request_id].not_before + s.liquidity_vault.OPEN_EXECUTION_AFTER()
    without = decide_lp_requests(requests, feeds_of(s), [BTC, ETH], s.now + 1, lp_executor=False)
    assert without.actions == [] and without.waiting == {request_id: f"only an LP executor may execute before {open_at}"}
    [at_once] = decide_lp_requests(requests, feeds_of(s), [BTC, ETH], s.now + 1, lp_executor=True).actions
    assert at_once.action == EXECUTE and at_once.due_since < open_at
    s.warp(open_at - s.now)
    [later] = decide_lp_requests(requests, feeds_of(s), [BTC, ETH], s.now, lp_executor=False).actions
    assert (later.action, later.due_since) == (EXECUTE, open_at)
    result = s.execute_lp(request_id, {m: ids[0] for m, ids in zip((BTC, ETH), later.round_ids)}, executor=keeper)
    assert result.executed and s.liquidity_vault.balanceOf(lp) == result.amount


def test_the_keeper_cancels_an_expired_request_for_its_fee(s, lp, keeper):
    s.set_lp_params(execution_fee=USDC)
    s.fund_lp(lp, 101)
    request_id = s.request_deposit(lp, 100 * USDC)
    s.warp(3600)
    [action] = decide_lp_requests(dict(s.model.lp.requests), feeds_of(s), [BTC, ETH], s.now).actions
    assert (action.action, action.request_id) == (CANCEL, request_id)
    s.cancel_lp(keeper, request_id)
    assert s.usdc.balanceOf(keeper) == USDC and s.usdc.balanceOf(lp) == 100 * USDC
