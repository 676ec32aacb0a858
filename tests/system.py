"""A perpdex deployment on titanoboa with its reference-model twin.

Every operation goes to both the contracts and `perpdex.model`, and the results are compared
to the wei, so every test that uses `System` is a differential test. `check_invariants`
asserts DESIGN.md's invariants 1-3 from on-chain state.

Two depths of comparison:
- `assert_state_matches` compares everything the contracts store (cash, open-market masks,
  positions, open interest, funding accumulators, system balances, deficits, LP shares) with
  the model, read straight from storage (tests/raw_state.py): cheap enough for every step of
  a fuzz run. `check_invariants` reads storage the same way.
- `assert_system_matches` also runs every view (equity, margin requirements, withdrawable,
  liquidity vault value, ERC-4626 totals...) and compares it with the model.
After each action, an account is compared through its views, unless `compare_views` is False
(the fuzzers' setting: they run the views every few steps instead).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass, field, replace

import boa

from perpdex.fixed_point import WAD
from perpdex.orders import (
    KIND_MARKET,
    ORDER_ESCROW,
    ExecutionResult,
    OrderParams,
    RoundPrice,
)
from perpdex.model import (
    FEE_RECEIVER,
    FUNDING_POOL,
    INSURANCE_FUND,
    LIQUIDITY_VAULT,
    ExchangeModel,
    MarketParams,
    ModelRevert,
    Position,
)
from perpdex.lp_flows import LpParams
from perpdex.sim.chain import CONTRACTS as CONTRACTS_DIR
from raw_state import RawState

# the simulator's absolute path: the tests run from any directory, and each contract is found
# in what `make compile` compiled (perpdex/compiled.py)
CONTRACTS = str(CONTRACTS_DIR)
FEED_DECIMALS = 8
HEARTBEAT = 3600
ZERO_ADDRESS = "0x" + "00" * 20
SEQUENCER_GRACE_PERIOD = 3_600
# tests' order parameters: one-second delay, one-hour market orders, no fee unless a test sets one
TEST_ORDER_PARAMS = OrderParams(min_order_delay=1, max_order_age=3600, execution_fee=0, max_open_orders=16)
TEST_LP_PARAMS = LpParams(min_delay=1, max_age=3600, cooldown=0, execution_fee=0)


def first_round_of(feed, not_before: int) -> int:
    """A feed's first round published at or after `not_before` (the one before it earlier)."""
    round_id = feed.latestRound()
    while round_id > 1 and feed.getRoundData(round_id - 1)[3] >= not_before:
        round_id -= 1
    return round_id


class LpRequestCancelled(ModelRevert):
    """A liquidity-vault request the contract cancelled at execution (on both sides) for `reason`."""


class OrderCancelled(ModelRevert):
    """`System.trade`'s market order was cancelled at execution (on both sides) for `reason`."""


def usd(amount) -> int:
    """An exact decimal amount (USD, price or size) in WAD."""
    from decimal import Decimal

    value = Decimal(str(amount)) * WAD
    assert value == value.to_integral_value()
    return int(value)


def default_params(**overrides) -> MarketParams:
    values = dict(
        skew_scale=1_000 * WAD,
        max_funding_rate=WAD // 10,
        maker_fee=WAD // 5_000,  # 2 bp
        taker_fee=WAD // 1_000,  # 10 bp
        # 4.5 % + the 0.5 % penalty (part of the initial requirement too) = 5 %: 20x
        initial_margin_ratio=WAD * 45 // 1_000,
        maintenance_margin_ratio=WAD // 40,  # 2.5 %
        liquidation_penalty_ratio=WAD // 200,  # 0.5 %
        max_long_oi=100_000 * WAD,
        max_short_oi=100_000 * WAD,
        max_position_size=10_000 * WAD,
        max_liquidation_size=100 * WAD,
    )
    values.update(overrides)
    return MarketParams(**values)


def params_tuple(p: MarketParams) -> tuple:
    return (
        p.skew_scale,
        p.max_funding_rate,
        p.maker_fee,
        p.taker_fee,
        p.initial_margin_ratio,
        p.maintenance_margin_ratio,
        p.liquidation_penalty_ratio,
        p.max_long_oi,
        p.max_short_oi,
        p.max_position_size,
        p.max_liquidation_size,
    )


@dataclass
class System:
    token_decimals: int = 6
    owner: str = field(default_factory=lambda: boa.env.generate_address("owner"))
    # the owner's seed of the liquidity vault (USD) and the global open-interest cap: open
    # interest notional at most max_oi_ratio x the vault's value, checked at every
    # risk-increasing execution (tests trade up to 100x the seed)
    seed_liquidity_usd: int = 100_000
    max_oi_ratio: int = 100 * WAD

    def __post_init__(self) -> None:
        boa.env.eoa = self.owner
        self.usdc = boa.load(f"{CONTRACTS}/mocks/MockUSDC.vy", "USD Coin", "USDC", self.token_decimals)
        # an L2 sequencer-uptime feed, up since the epoch's first second (the oracle's is fixed at
        # deployment; tests take the sequencer down with `sequencer.set_round`)
        self.sequencer = boa.load(f"{CONTRACTS}/mocks/MockAggregator.vy", 0, "L2 Sequencer Uptime Status Feed", 0)
        self.sequencer.set_round(1, 0, 1, 1, 1)
        self.oracle = boa.load(f"{CONTRACTS}/IndexOracle.vy", self.sequencer.address, SEQUENCER_GRACE_PERIOD)
        self.vault = boa.load(f"{CONTRACTS}/Vault.vy", self.usdc.address)
        self.exchange = boa.load(f"{CONTRACTS}/Exchange.vy", self.vault.address, self.oracle.address)
        self.oracle.set_configurator(self.exchange.address)
        self.vault.set_exchange(self.exchange.address)
        self.liquidity_vault = boa.load(
            f"{CONTRACTS}/LiquidityVault.vy", self.vault.address, self.exchange.address, "perpdex LP", "pLP"
        )
        self.vault.set_liquidity_vault(self.liquidity_vault.address)
        self.liquidator = boa.load(f"{CONTRACTS}/Liquidator.vy", self.exchange.address, self.vault.address)
        self.exchange.set_liquidator(self.liquidator.address)
        self.vault.set_liquidator(self.liquidator.address)
        self.insurance_fund = boa.load(f"{CONTRACTS}/InsuranceFund.vy", self.vault.address, 0)
        self.vault.set_insurance_fund(self.insurance_fund.address)
        self.order_book = boa.load(
            f"{CONTRACTS}/OrderBook.vy",
            self.exchange.address,
            self.vault.address,
            self.oracle.address,
            TEST_ORDER_PARAMS.as_tuple(),
        )
        self.exchange.set_order_book(self.order_book.address)
        self.vault.set_order_book(self.order_book.address)
        self.executor = boa.env.generate_address("executor")
        self.lens = boa.load(f"{CONTRACTS}/Lens.vy", self.exchange.address, self.vault.address)
        self.aggregators: dict[int, object] = {}
        self.model = ExchangeModel(token_decimals=self.token_decimals)
        self.model.now = self.now
        self.model.order_params = TEST_ORDER_PARAMS
        # tests' LP parameters: one-second delay, one-hour life, no cooldown, no fee
        self.configure_liquidity()
        # the keeper's executor holds the LP executor role, as a deployment's keeper does
        self.set_lp_executor(self.executor, True)
        self.accounts: set[tuple[str, int]] = set()

    # compare accounts through their views after each action (a class attribute, not a field)
    compare_views = True

    @functools.cached_property
    def raw(self) -> RawState:
        """Storage readers over this deployment's contracts."""
        return RawState(self)

    # -- environment ---------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return boa.env.evm.patch.timestamp

    def warp(self, seconds: int) -> None:
        boa.env.time_travel(seconds=seconds)
        self.model.now = self.now

    def list_market(self, market_id: int, symbol: str, price_usd: float | int, params: MarketParams | None = None):
        params = params or default_params()
        answer = int(price_usd * 10**FEED_DECIMALS)
        with boa.env.prank(self.owner):
            agg = boa.load(f"{CONTRACTS}/mocks/MockAggregator.vy", FEED_DECIMALS, f"{symbol} feed", answer)
            self.exchange.list_market(market_id, symbol, [(agg.address, HEARTBEAT)], 0, params_tuple(params))
        self.aggregators[market_id] = agg
        self.model.list_market(market_id, params)
        self.model.index[market_id] = answer * 10 ** (18 - FEED_DECIMALS)
        return agg

    def set_globals(self, **changes) -> None:
        """Exchange.set_global_params on both sides (keeper floor, fee shares...)."""
        from dataclasses import replace

        g = replace(self.model.globals, **changes)
        with boa.env.prank(self.owner):
            self.exchange.set_global_params(
                g.insurance_fee_share, g.protocol_fee_share, g.keeper_min_reward, g.keeper_reward_share
            )
        self.model.globals = g

    def set_market_params(self, market_id: int, **changes) -> None:
        """Exchange.set_market_params on both sides; a skew_scale more than 2x away is reached
        in steps of 2x (the most one change may move it)."""
        from dataclasses import replace

        target = replace(self.model.params[market_id], **changes)
        while True:
            old = self.model.params[market_id].skew_scale
            step = min(max(target.skew_scale, (old + 1) // 2), old * 2)
            params = replace(target, skew_scale=step)
            with boa.env.prank(self.owner):
                self.exchange.set_market_params(market_id, params_tuple(params))
            self.model._accrue(market_id)
            self.model.params[market_id] = params
            if step == target.skew_scale:
                return

    def set_price(self, market_id: int, price_usd: float | int) -> None:
        answer = int(round(price_usd * 10**FEED_DECIMALS))
        with boa.env.prank(self.owner):
            self.aggregators[market_id].update_answer(answer)
        self.model.index[market_id] = answer * 10 ** (18 - FEED_DECIMALS)

    def to_token(self, usd: float | int) -> int:
        return int(usd * 10**self.token_decimals)

    # -- trader actions (contract and model) -----------------------------------------------------

    def mirror(self, who: str, model_action, contract_action):
        """The model first: when it refuses, the contract (called as `who`) must revert with the
        same reason, and the ModelRevert is raised again; otherwise the contract runs as `who`.
        Returns (the model's result, the contract's)."""
        try:
            expected = model_action()
        except ModelRevert as revert:
            with boa.reverts(revert.reason), boa.env.prank(who):
                contract_action()
            raise
        with boa.env.prank(who):
            return expected, contract_action()

    def fund(self, who: str, usd: float | int) -> int:
        amount = self.to_token(usd)
        with boa.env.prank(self.owner):
            self.usdc.mint(who, amount)
        with boa.env.prank(who):
            self.usdc.approve(self.vault.address, 2**256 - 1)
        return amount

    def deposit(self, who: str, usd: float | int, sub_account: int = 0) -> int:
        amount = self.fund(who, usd)
        with boa.env.prank(who):
            credited = self.vault.deposit(sub_account, amount)
        assert credited == self.model.deposit((who, sub_account), amount)
        self.accounts.add((who, sub_account))
        return credited

    def donate(self, who: str, usd: float | int) -> int:
        """A donation to the insurance fund, on both sides."""
        amount = self.fund(who, usd)
        with boa.env.prank(who):
            self.usdc.approve(self.insurance_fund.address, 2**256 - 1)
            received = self.insurance_fund.donate(amount)
        self.model.token_balance += received
        self.model._credit(INSURANCE_FUND, received * 10 ** (18 - self.token_decimals))
        return received

    def liquidate(self, keeper: str, who: str, sub_account: int = 0):
        """Liquidate on both sides; compare the account, the keeper and the insurance fund."""
        self.accounts.add((keeper, 0))
        expected, _ = self.mirror(
            keeper,
            lambda: self.model.liquidate((who, sub_account), keeper),
            lambda: self.liquidator.liquidate(who, sub_account),
        )
        self.last_logs = self.liquidator.get_logs()
        self.assert_account_matches(who, sub_account)
        self.assert_account_matches(keeper, 0)
        assert self.vault.insurance_cash() == self.model.cash_of(INSURANCE_FUND)
        return expected

    def liquidate_many(self, keeper: str, accounts: list[tuple[str, int]]) -> int:
        self.accounts.add((keeper, 0))
        expected = self.model.liquidate_many(accounts, keeper)
        with boa.env.prank(keeper):
            count = self.liquidator.liquidate_many(accounts)
        self.last_logs = self.liquidator.get_logs()
        assert count == expected
        for who, sub in accounts:
            self.assert_account_matches(who, sub)
        return count

    def auto_deleverage(self, adl_keeper: str, market_id: int, targets, bankrupt=(None, 0)):
        """targets: [((owner, sub), size)]; ADL on both sides, compared."""
        bankrupt_owner = bankrupt[0] or "0x0000000000000000000000000000000000000000"
        bankrupt_account = (bankrupt_owner, bankrupt[1])
        onchain_targets = [(a[0], a[1], size) for a, size in targets]
        expected, _ = self.mirror(
            adl_keeper,
            lambda: self.model.auto_deleverage(market_id, targets, bankrupt_account),
            lambda: self.liquidator.auto_deleverage(market_id, onchain_targets, bankrupt_owner, bankrupt[1]),
        )
        self.last_logs = self.liquidator.get_logs()
        for account, _ in targets:
            self.assert_account_matches(*account)
        assert self.liquidator.uncovered_deficit(market_id) == self.model.uncovered_deficit.get(market_id, 0)
        return expected

    def write_off(self, caller: str, who: str, market_id: int, sub_account: int = 0) -> int:
        """Liquidator.write_off on both sides; the amount paid back to the bankrupt account."""
        self.accounts.add((who, sub_account))
        expected, paid = self.mirror(
            caller,
            lambda: self.model.write_off((who, sub_account), market_id),
            lambda: self.liquidator.write_off(who, sub_account, market_id),
        )
        assert paid == expected
        self.last_logs = self.liquidator.get_logs()
        self.assert_account_matches(who, sub_account)
        return paid

    def withdraw(self, who: str, amount: int, sub_account: int = 0) -> None:
        """Vault.withdraw of `amount` token units on both sides (a refusal: the same reason)."""
        # the model checks before it changes anything
        self.mirror(who, lambda: self.model.withdraw((who, sub_account), amount), lambda: self.vault.withdraw(sub_account, amount))

    # -- orders (contract and model) ---------------------------------------------------------

    def set_order_params(self, **changes) -> None:
        from dataclasses import replace

        params = replace(self.model.order_params, **changes)
        with boa.env.prank(self.owner):
            self.order_book.set_order_params(params.as_tuple())
        self.model.set_order_params(params)

    def publish(self, market_id: int) -> int:
        """Publish the feed's current answer again as a new round (a heartbeat); its round id."""
        agg = self.aggregators[market_id]
        with boa.env.prank(self.owner):
            agg.update_answer(agg.latestAnswer())
        return agg.latestRound()

    def round_price(self, market_id: int, round_id: int) -> RoundPrice:
        """The market's single feed at `round_id` and the round before it, read from the
        aggregator and normalised here (not through IndexOracle): the model's input."""
        agg = self.aggregators[market_id]
        _, answer, _, updated, _ = agg.getRoundData(round_id)
        _, previous, _, previous_updated, _ = agg.getRoundData(round_id - 1)
        scale = 10 ** (18 - FEED_DECIMALS)
        return RoundPrice(answer * scale, previous * scale, updated, previous_updated)

    def commit_order(
        self,
        who: str,
        market_id: int,
        size_delta: int,
        acceptable_price: int | None = None,
        kind: int = KIND_MARKET,
        trigger_price: int = 0,
        reduce_only: bool = False,
        expiry: int = 0,
        sub_account: int = 0,
    ) -> int:
        """OrderBook.commit_order on both sides; the order ids and the escrow must agree."""
        if acceptable_price is None:
            acceptable_price = 2**256 - 1 if size_delta > 0 else 0
        self.accounts.add((who, sub_account))
        expected, order_id = self.mirror(
            who,
            lambda: self.model.commit_order(
                (who, sub_account), market_id, size_delta, acceptable_price, kind, trigger_price, reduce_only, expiry
            ),
            lambda: self.order_book.commit_order(
                sub_account, market_id, size_delta, acceptable_price, kind, trigger_price, reduce_only, expiry
            ),
        )
        assert order_id == expected
        self.last_logs = self.order_book.get_logs()
        self.assert_order_matches(order_id)
        return order_id

    def execute_order(self, order_id: int, round_id: int | None = None, executor: str | None = None) -> ExecutionResult:
        """OrderBook.execute_order at `round_id` (default: the feed's latest round) on both sides."""
        executor = executor or self.executor
        self.accounts.add((executor, 0))
        order = self.model.order(order_id)
        agg = self.aggregators[order.market_id]
        round_id = agg.latestRound() if round_id is None else round_id
        rp = self.round_price(order.market_id, round_id)
        expected, filled = self.mirror(
            executor,
            lambda: self.model.execute_order(order_id, executor, rp),
            lambda: self.order_book.execute_order(order_id, [round_id]),
        )
        self.last_logs = self.order_book.get_logs()
        assert filled == expected.filled
        self.assert_order_matches(order_id)
        self.assert_account_matches(*order.account)
        self.assert_account_matches(executor, 0)
        return expected

    def cancel_order(self, who: str, order_id: int) -> None:
        self.accounts.add((who, 0))
        self.mirror(who, lambda: self.model.cancel_order(order_id, who), lambda: self.order_book.cancel_order(order_id))
        self.last_logs = self.order_book.get_logs()
        self.assert_order_matches(order_id)

    def assert_order_matches(self, order_id: int) -> None:
        o = self.model.order(order_id)
        assert tuple(self.order_book.order(order_id)) == (
            o.owner,
            o.sub_account,
            o.market_id,
            o.size_delta,
            o.acceptable_price,
            o.kind,
            o.trigger_price,
            o.reduce_only,
            o.not_before,
            o.expiry,
            o.fee,
            o.state,
            o.cancelled_at,
        ), f"order {order_id:#x}"
        assert self.vault.order_escrow_cash() == self.model.cash_of(ORDER_ESCROW)
        assert self.order_book.pending_market_orders(o.owner, o.sub_account) == self.model.pending_market_orders(o.account)

    def trade(self, who: str, market_id: int, size_delta: int, acceptable_price: int | None = None, sub_account: int = 0):
        """A market order as a trader and a keeper make it, filled at the current price and time:
        committed `min_order_delay` seconds ago (the chain clock is set back for the commit,
        which writes nothing that depends on time), executed now at the first round published
        since (a round at the current price is published if none was). Compares the fill and
        the account exactly; a cancellation at execution raises OrderCancelled with the
        exchange's reason. When the commit cannot be placed in the past (a round already
        published this second after another one, or an escrowed fee whose margin check would
        read a round from the future), it is committed now and executed a delay later."""
        if market_id not in self.aggregators:  # an unlisted market: the commit refuses it
            return self.commit_order(who, market_id, size_delta, acceptable_price, sub_account=sub_account)
        delay = self.model.order_params.min_order_delay
        now = self.now
        agg = self.aggregators[market_id]
        latest = agg.latestRound()
        latest_at = agg.latestRoundData()[3]
        fresh_round = latest_at < now
        rewind = fresh_round or (latest > 1 and agg.getRoundData(latest - 1)[3] < now - delay + 1)
        if self.model.order_params.execution_fee and self.model.open_markets((who, sub_account)):
            rewind = rewind and latest_at <= now - delay
        if rewind:
            self._set_time(now - delay)
            try:
                order_id = self.commit_order(who, market_id, size_delta, acceptable_price, sub_account=sub_account)
            finally:
                self._set_time(now)
            if fresh_round:
                self.publish(market_id)
        else:
            order_id = self.commit_order(who, market_id, size_delta, acceptable_price, sub_account=sub_account)
            self.warp(delay)
            self.publish(market_id)
        result = self.execute_order(order_id)
        if not result.filled:
            raise OrderCancelled(result.reason)
        return self.model.last_trade  # the fill's TradeResult (the contract's matched above)

    # -- the liquidity vault's two-step flows (perpdex/lp_flows.py) ----------------------------

    def set_lp_params(self, **changes) -> None:
        params = replace(self.model.lp.params, **changes)
        with boa.env.prank(self.owner):
            self.liquidity_vault.set_lp_params(params.as_tuple())
        self.model.set_lp_params(params)

    def configure_liquidity(self) -> None:
        """The tests' LP parameters, the open-interest cap and the owner's seed."""
        self.set_lp_params(**TEST_LP_PARAMS.__dict__)
        self.set_max_oi_ratio(self.max_oi_ratio)
        if self.seed_liquidity_usd:
            self.seed_liquidity(self.seed_liquidity_usd)

    def refresh_open_interest_room(self) -> int:
        """OrderBook.refresh_open_interest_room (as the keeper), on both sides: the room."""
        with boa.env.prank(self.executor):
            room = self.order_book.refresh_open_interest_room()
        assert room == self.model.refresh_open_interest_room()
        return room

    def set_max_oi_ratio(self, ratio: int) -> None:
        with boa.env.prank(self.owner):
            self.liquidity_vault.set_max_oi_ratio(ratio)
        self.model.max_oi_ratio = ratio

    def seed_liquidity(self, usd) -> int:
        """The owner's synchronous seeding deposit (shares to the owner): the shares."""
        amount = self.fund_lp(self.owner, usd)
        expected, shares = self.mirror(
            self.owner,
            lambda: self.model.lp_deposit(self.owner, amount),
            lambda: self.liquidity_vault.deposit(amount, self.owner),
        )
        assert shares == expected
        return shares

    def fund_lp(self, who: str, usd) -> int:
        amount = self.fund(who, usd)
        with boa.env.prank(who):
            self.usdc.approve(self.liquidity_vault.address, 2**256 - 1)
        return amount

    def request_deposit(self, who: str, assets: int, receiver: str | None = None) -> int:
        receiver = receiver or who
        expected, request_id = self.mirror(
            who,
            lambda: self.model.request_deposit(who, assets, receiver),
            lambda: self.liquidity_vault.request_deposit(assets, receiver),
        )
        self.last_logs = self.liquidity_vault.get_logs()
        assert request_id == expected
        self.assert_lp_matches()
        return request_id

    def request_redeem(self, who: str, shares: int, receiver: str | None = None) -> int:
        receiver = receiver or who
        expected, request_id = self.mirror(
            who,
            lambda: self.model.request_redeem(who, shares, receiver),
            lambda: self.liquidity_vault.request_redeem(shares, receiver),
        )
        self.last_logs = self.liquidity_vault.get_logs()
        assert request_id == expected
        self.assert_lp_matches()
        return request_id

    def first_round(self, market_id: int, not_before: int) -> int:
        """The market's first round published at or after `not_before` (the previous one before)."""
        return first_round_of(self.aggregators[market_id], not_before)

    def feeds_of(self, market_id: int) -> list:
        """The market's feeds, in configuration order (a test listing several sets `market_feeds`)."""
        return getattr(self, "market_feeds", {}).get(market_id) or [self.aggregators[market_id]]

    def round_price_at(self, market_id: int, round_ids: list[int]) -> RoundPrice:
        """IndexOracle.round_price's answer computed from the feeds: the medians of the named
        rounds and of the rounds before them, the earliest publication of the former and the
        latest of the latter."""
        prices, previous, published, previous_published = [], [], [], []
        for feed, round_id in zip(self.feeds_of(market_id), round_ids, strict=True):
            scale = 10 ** (18 - feed.decimals())
            _, answer, _, updated, _ = feed.getRoundData(round_id)
            _, answer_before, _, updated_before, _ = feed.getRoundData(round_id - 1)
            prices.append(answer * scale)
            previous.append(answer_before * scale)
            published.append(updated)
            previous_published.append(updated_before)

        def median(values: list[int]) -> int:
            ordered, n = sorted(values), len(values)
            return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2

        return RoundPrice(median(prices), median(previous), min(published), max(previous_published))

    def set_lp_executor(self, who: str, allowed: bool) -> None:
        """LiquidityVault.set_lp_executor (as the owner) on both sides."""
        with boa.env.prank(self.owner):
            self.liquidity_vault.set_lp_executor(who, allowed)
        self.last_logs = self.liquidity_vault.get_logs()
        self.model.set_lp_executor(who, allowed)

    def execute_lp(self, request_id: int, round_ids: dict[int, int] | None = None, executor: str | None = None):
        """execute_deposit/execute_redeem on both sides at `round_ids` (default: each market's
        first round after the request's delay); the LpExecution."""
        executor = executor or self.executor
        r = self.model.lp.requests.get(request_id)
        if round_ids is None:
            not_before = r.not_before if r else self.now
            round_ids = {m: [first_round_of(f, not_before) for f in self.feeds_of(m)] for m in self.model.markets}
        round_ids = {m: ids if isinstance(ids, list) else [ids] for m, ids in round_ids.items()}
        rounds = {m: self.round_price_at(m, ids) for m, ids in round_ids.items()}
        onchain = [round_ids[m] for m in self.model.markets]
        redemption = r.redemption if r else False
        model_fn = self.model.execute_redeem if redemption else self.model.execute_deposit
        contract_fn = self.liquidity_vault.execute_redeem if redemption else self.liquidity_vault.execute_deposit
        expected, executed = self.mirror(
            executor, lambda: model_fn(request_id, rounds, executor), lambda: contract_fn(request_id, onchain)
        )
        self.last_logs = self.liquidity_vault.get_logs()
        assert executed == expected.executed
        self.assert_lp_matches()
        return expected

    def cancel_lp(self, who: str, request_id: int) -> None:
        self.mirror(who, lambda: self.model.cancel_lp_request(request_id, who),
                    lambda: self.liquidity_vault.cancel_request(request_id))
        self.last_logs = self.liquidity_vault.get_logs()
        self.assert_lp_matches()

    def assert_lp_matches(self) -> None:
        lv, state = self.liquidity_vault, self.model.lp
        assert self.usdc.balanceOf(lv.address) == state.escrow_tokens, "tokens escrowed by requests"
        assert lv.balanceOf(lv.address) == state.locked_shares, "shares locked by redemption requests"
        assert lv.last_request_id() == state.last_request_id
        for request_id in range(1, state.last_request_id + 1):
            r = state.requests.get(request_id)
            assert tuple(lv.request(request_id)) == (r.as_tuple() if r else (ZERO_ADDRESS, ZERO_ADDRESS, False, 0, 0, 0, 0))
        for who in self.model.lv_shares:
            assert tuple(lv.locked_shares(who)) == self.model.lp_locked(who)

    # -- the two-step replacements of System.lp_deposit / System.lp_redeem --------------------

    def _request_in_the_past(self, request):
        """Place `request` `min_delay` seconds ago when every market's latest round is older than
        now (a round published now is then the first after the delay); else request now and
        wait the delay. Then publish a round in every market and return the request id."""
        delay, now = self.model.lp.params.min_delay, self.now
        feeds = [f for m in self.model.markets for f in self.feeds_of(m)]
        if all(feed.latestRoundData()[3] < now for feed in feeds):
            self._set_time(now - delay)
            try:
                request_id = request()
            finally:
                self._set_time(now)
        else:
            request_id = request()
            self.warp(delay)
        with boa.env.prank(self.owner):
            for feed in feeds:
                feed.update_answer(feed.latestAnswer())
        if getattr(self, "after_publish", None):
            self.after_publish()  # a fuzz machine that keeps the round history
        return request_id

    def lp_deposit(self, who: str, usd) -> int:
        """Request a deposit of `usd`, publish a round in every market, execute: the shares."""
        amount = self.fund_lp(who, usd)
        request_id = self._request_in_the_past(lambda: self.request_deposit(who, amount))
        result = self.execute_lp(request_id)
        if not result.executed:
            raise LpRequestCancelled(result.reason)
        assert self.liquidity_vault.balanceOf(who) == self.model.lv_shares[who]
        return result.amount

    def lp_redeem(self, who: str, shares: int) -> int:
        """Request the redemption of `shares`, publish a round in every market, execute: the
        assets paid (LpRequestCancelled with the reason when the vault refused it)."""
        request_id = self._request_in_the_past(lambda: self.request_redeem(who, shares))
        result = self.execute_lp(request_id)
        if not result.executed:
            raise LpRequestCancelled(result.reason)
        return result.amount

    def _set_time(self, timestamp: int) -> None:
        boa.env.evm.patch.timestamp = timestamp
        self.model.now = timestamp

    # -- comparisons -----------------------------------------------------------------------------

    def assert_account_matches(self, who: str, sub_account: int = 0) -> None:
        if not self.compare_views:
            self.assert_account_state_matches(who, sub_account)
            return
        account = (who, sub_account)
        for market_id in self.model.params:
            p: Position = self.model.position(account, market_id)
            assert tuple(self.exchange.position_state(who, sub_account, market_id)) == (
                p.size,
                p.open_notional,
                p.funding_snapshot if p.size else 0,
            ), f"position of {account} in market {market_id}"
        assert self.vault.cash(who, sub_account) == self.model.cash_of(account)
        view = self.model.account_view(account)
        cash, equity, initial, maintenance = self.exchange.account_state(who, sub_account)
        assert (cash, equity, initial, maintenance) == (view.cash, view.equity, view.initial, view.maintenance)
        assert self.exchange.withdrawable(who, sub_account) == view.withdrawable

    def assert_account_state_matches(self, who: str, sub_account: int = 0) -> None:
        """The sub-account's stored cash, open-market mask and positions equal the model's."""
        account = (who, sub_account)
        mask = sum(1 << m for m in self.model.open_markets(account))
        assert self.raw.account(who, sub_account) == (self.model.cash_of(account), mask), f"cash/mask of {account}"
        for market_id in self.model.params:
            p: Position = self.model.position(account, market_id)
            expected = (p.size, p.open_notional, p.funding_snapshot if p.size else 0)
            assert self.raw.position(who, sub_account, market_id) == expected, f"{account} in market {market_id}"

    def known_accounts(self) -> set[tuple[str, int]]:
        """Every sub-account the tests touched or the model holds cash or a position for."""
        accounts = set(self.accounts)
        accounts.update(a for a in self.model.cash if isinstance(a, tuple))
        accounts.update(a for a, _ in self.model.positions)
        return accounts

    def assert_state_matches(self) -> None:
        """Everything the contracts store equals the model, to the wei (storage reads only)."""
        raw, model = self.raw, self.model
        for market_id, m in model.markets.items():
            assert raw.open_interest(market_id) == (m.long_oi, m.short_oi), f"open interest of {market_id}"
            assert raw.funding(market_id) == (m.funding_per_unit, m.last_funding_time), f"funding of {market_id}"
            assert raw.open_notional_sum(market_id) == m.open_notional_sum, f"open notional of {market_id}"
            assert raw.uncovered_deficit(market_id) == model.uncovered_deficit.get(market_id, 0)
            if model.uncovered_deficit.get(market_id, 0):
                assert raw.deficit_side(market_id) == model.deficit_side[market_id]
        assert raw.system_cash() == (
            model.cash_of(LIQUIDITY_VAULT),
            model.cash_of(INSURANCE_FUND),
            model.cash_of(FEE_RECEIVER),
            model.cash_of(FUNDING_POOL),
        ), "system cash (liquidity vault, insurance fund, fees, funding pool)"
        assert raw.lv_supply() == model.lv_supply
        for lp, shares in model.lv_shares.items():
            assert raw.lv_shares(lp) == shares, f"liquidity vault shares of {lp}"
        for who, sub in self.known_accounts():
            self.assert_account_state_matches(who, sub)

    def assert_system_matches(self) -> None:
        """The stored state and every view equal the model."""
        self.assert_state_matches()
        for market_id, m in self.model.markets.items():
            assert tuple(self.exchange.open_interest(market_id)) == (m.long_oi, m.short_oi)
            assert tuple(self.exchange.funding_state(market_id)) == (m.funding_per_unit, m.last_funding_time)
            assert self.exchange.open_notional_sum(market_id) == m.open_notional_sum
        assert self.vault.liquidity_cash() == self.model.cash_of(LIQUIDITY_VAULT)
        assert self.vault.insurance_cash() == self.model.cash_of(INSURANCE_FUND)
        assert self.vault.fee_cash() == self.model.cash_of(FEE_RECEIVER)
        assert self.vault.funding_pool_cash() == self.model.cash_of(FUNDING_POOL)
        assert self.exchange.liquidity_vault_value() == self.model.liquidity_vault_value(), (
            self.exchange.liquidity_vault_value(), self.model.liquidity_vault_value(),
            self.liquidator.total_uncovered_deficit(), self.model.total_uncovered_deficit,
        )
        assert self.liquidity_vault.totalAssets() == self.model.lv_total_assets()
        assert self.liquidity_vault.totalSupply() == self.model.lv_supply
        assert self.exchange.open_interest_notional() == self.model.open_interest_notional()
        room, stamp = self.order_book.open_interest_room()
        assert (stamp, room) == self.model.oi_room_cache
        for market_id in self.model.params:
            assert self.liquidator.uncovered_deficit(market_id) == self.model.uncovered_deficit.get(market_id, 0)
        compare_views, self.compare_views = self.compare_views, True
        try:
            for who, sub in self.accounts:
                self.assert_account_matches(who, sub)
        finally:
            self.compare_views = compare_views

    # -- invariants (DESIGN.md 1-3), from on-chain state (storage) ----------------------------------

    def ledger_total(self) -> int:
        total = sum(self.raw.account(who, sub)[0] for who, sub in self.known_accounts())
        return total + sum(self.raw.system_cash()) + self.raw.order_escrow()

    def check_invariants(self, gifts: int = 0) -> None:
        """Invariants 1-3 over every known sub-account, from the contracts' storage.

        Funding is valued at each market's stored accumulator: the accrual since the last touch
        adds (sum of the traders' sizes - skew) x the accrued amount, which is zero exactly when
        invariant 2 holds, so nothing is lost by not accruing."""
        raw, accounts = self.raw, list(self.known_accounts())
        # 1. the ledger balances exactly against the token balance (gifts only add to it)
        scale = 10 ** (18 - self.token_decimals)
        assert self.ledger_total() + gifts * scale == self.usdc.balanceOf(self.vault.address) * scale
        unsettled = 0
        for market_id in self.model.params:
            # 2. zero-sum positions: traders' sizes and bases add up to the market's totals;
            # the liquidity vault holds exactly the opposite.
            positions = [raw.position(w, s, market_id) for w, s in accounts]
            long_oi, short_oi = raw.open_interest(market_id)
            assert sum(max(p[0], 0) for p in positions) == long_oi, f"long open interest of {market_id}"
            assert sum(max(-p[0], 0) for p in positions) == short_oi, f"short open interest of {market_id}"
            assert sum(p[1] for p in positions) == raw.open_notional_sum(market_id)
            # every sub-account's open-market mask says exactly which positions are open
            for (who, sub), p in zip(accounts, positions):
                assert bool(raw.account(who, sub)[1] >> market_id & 1) == (p[0] != 0), f"mask of {(who, sub)}"
            stored, _ = raw.funding(market_id)
            unsettled += sum(size * (stored - snapshot) for size, _, snapshot in positions)
        # 3. zero-sum funding: what the pool holds is what the holders still have to collect,
        # plus less than one wei of dust per rounded settlement, never less.
        dust = raw.system_cash()[3] * WAD + unsettled
        assert 0 <= dust <= self.model.funding_settlements * WAD, (dust, self.model.funding_settlements)


@contextlib.contextmanager
def fresh(base: System):
    """A copy of `base` (EVM snapshot + model copy) that vanishes on exit: deploying costs
    seconds, a snapshot nothing."""
    timestamp = boa.env.evm.patch.timestamp  # the anchor restores state, not the clock
    try:
        with boa.env.anchor():
            s = copy.copy(base)
            s.model = copy.deepcopy(base.model)
            s.model.now = s.now
            s.accounts = set(base.accounts)
            s.aggregators = dict(base.aggregators)
            boa.env.eoa = s.owner
            yield s
    finally:
        boa.env.evm.patch.timestamp = timestamp
