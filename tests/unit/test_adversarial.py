"""Adversarial and bad-input tests: reentrant and fee-taking tokens, oracle faults seen from
the exchange, extreme prices and sizes, out-of-range arguments, access control, skew
manipulation and keeper griefing. docs/SECURITY.md maps each threat to the tests here.

Money-moving steps go through `System` (tests/system.py), which runs them on the contracts and
on the reference model and compares the two to the wei; the `system` fixture checks DESIGN.md's
invariants 1-3 and full model parity on teardown. Every revert is checked with its exact
reason or, where the EVM gives none (overflow, ABI decoding, a reentrancy lock), with an empty
revert payload, and rejected calls are followed by a snapshot comparison: nothing changed,
nothing was lost. Tests named `test_bug_...` describe defects found here; they fail until fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

import boa
import pytest
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector as selector

from perpdex.model import ExchangeModel, ModelRevert
from perpdex.orders import KIND_MARKET, STATE_OPEN, RoundPrice
from system import (
    FEED_DECIMALS,
    HEARTBEAT,
    LpRequestCancelled,
    TEST_LP_PARAMS,
    TEST_ORDER_PARAMS,
    OrderCancelled,
    System,
    default_params,
    fresh,
    params_tuple,
)

BTC, ETH, MED = 0, 1, 2  # MED: a three-feed market (median index), listed by this module's world
WAD = 10**18
USDC = 10**6  # one token of the 6-decimal collateral
MAX_UINT = 2**256 - 1
MAX_INT = 2**255 - 1
MIN_INT = -(2**255)
ZERO_ADDRESS = "0x" + "00" * 20
MED_DEVIATION = WAD // 100  # the median market's feeds may differ by 1 %

pytestmark = pytest.mark.ignore_isolation


# ============================================================================================
# fixtures and helpers
# ============================================================================================


def list_with_feeds(s: System, market_id: int, symbol: str, feeds, price: int, max_deviation: int = 0, **params):
    """`Exchange.list_market` with any feeds [(aggregator, heartbeat)], mirrored in the model.
    `price` is the index (WAD) the feeds are expected to give."""
    p = default_params(**params)
    with boa.env.prank(s.owner):
        s.exchange.list_market(market_id, symbol, [(a.address, hb) for a, hb in feeds], max_deviation, params_tuple(p))
    s.model.list_market(market_id, p)
    s.model.index[market_id] = price
    # a new dict, not an update: `fresh` copies share the base's attributes
    s.market_feeds = {**getattr(s, "market_feeds", {}), market_id: [a for a, _ in feeds]}
    assert s.exchange.index_price(market_id) == price


def new_feed(s: System, decimals: int, answer: int):
    """A MockAggregator owned by the system's owner, deployed from the already compiled one."""
    with boa.env.prank(s.owner):
        return s.aggregators[BTC].deployer.deploy(decimals, f"feed {decimals}", answer)


def list_single_feed(s: System, market_id: int, answer: int, decimals: int = FEED_DECIMALS, **params):
    """A one-feed market whose index is `answer` (in `decimals`), registered like System.list_market."""
    feed = new_feed(s, decimals, answer)
    list_with_feeds(s, market_id, f"M{market_id}-USD", [(feed, HEARTBEAT)], answer * 10 ** (18 - decimals), **params)
    s.aggregators[market_id] = feed
    return feed


def feeds_of(s: System, market_id: int) -> list:
    """The market's feeds, in configuration order."""
    return getattr(s, "market_feeds", {}).get(market_id) or [s.aggregators[market_id]]


def publish(s: System, market_id: int, price: int) -> None:
    """A fresh round at `price` (WAD) on every feed of the market, and in the model."""
    with boa.env.prank(s.owner):
        for feed in feeds_of(s, market_id):
            feed.update_answer(price * 10 ** feed.decimals() // WAD)
    s.model.index[market_id] = price


def deepen(s: System) -> None:
    """Every listed market's skew_scale to 250,000 units: the liquidation capacity at one index
    (2 x maker fee x skew_scale) is then a whole slice, for tests about something else."""
    for market_id in s.model.params:
        s.set_market_params(market_id, skew_scale=250_000 * WAD)


def refresh(s: System) -> None:
    """Fresh rounds at the model's prices on every feed; the sequencer up since long ago."""
    with boa.env.prank(s.owner):
        s.sequencer.set_round(s.sequencer.latestRound() + 1, 0, 1, s.now, s.sequencer.latestRound() + 1)
    for market_id in s.model.params:
        publish(s, market_id, s.model.index[market_id])


def round_price_of(s: System, market_id: int, round_ids: list[int]) -> RoundPrice:
    """The model's input for an execution at `round_ids` (one per feed, in configuration
    order), read from the feeds themselves: the median answer of those rounds and of the
    rounds before them, the earliest publication of the former and the latest of the latter."""
    prices, previous, published, previous_published = [], [], [], []
    for feed, round_id in zip(feeds_of(s, market_id), round_ids, strict=True):
        scale = 10 ** (18 - feed.decimals())
        _, answer, _, updated, _ = feed.getRoundData(round_id)
        _, answer_before, _, updated_before, _ = feed.getRoundData(round_id - 1)
        prices.append(answer * scale)
        previous.append(answer_before * scale)
        published.append(updated)
        previous_published.append(updated_before)

    def median(values: list[int]) -> int:
        assert len(values) % 2 == 1
        return sorted(values)[len(values) // 2]

    return RoundPrice(median(prices), median(previous), min(published), max(previous_published))


def trade(s: System, who: str, market_id: int, size: int, sub_account: int = 0):
    """`System.trade` on any market: System's own for a market of one 8-decimal feed; for
    other markets a market order committed now, a round published on every feed after its
    delay at the model's price and the order executed there, on both sides. The fill."""
    if market_id in s.aggregators and feeds_of(s, market_id)[0].decimals() == FEED_DECIMALS:
        return s.trade(who, market_id, size, sub_account=sub_account)
    order_id = s.commit_order(who, market_id, size, sub_account=sub_account)
    s.warp(s.model.order_params.min_order_delay)
    publish(s, market_id, s.model.index[market_id])
    round_ids = [feed.latestRound() for feed in feeds_of(s, market_id)]
    price = round_price_of(s, market_id, round_ids)
    s.accounts.add((s.executor, 0))
    expected, filled = s.mirror(
        s.executor,
        lambda: s.model.execute_order(order_id, s.executor, price),
        lambda: s.order_book.execute_order(order_id, round_ids),
    )
    assert filled and expected.filled, expected.reason
    s.assert_order_matches(order_id)
    s.assert_account_matches(who, sub_account)
    return s.model.last_trade


def usd(amount) -> int:
    """An exact decimal amount (USD, price or size) in WAD."""
    value = Decimal(str(amount)) * WAD
    assert value == value.to_integral_value()
    return int(value)


@pytest.fixture(scope="module")
def world(world):
    """The session's deployment plus the liquidity vault's capital and MED, a market priced by
    the median of three 8-decimal feeds that may differ by at most 1 %."""
    with fresh(world) as s:
        s.lp_deposit(boa.env.generate_address("lp"), 1_000_000)
        s.median_feeds = [new_feed(s, FEED_DECIMALS, 40_000 * 10**FEED_DECIMALS) for _ in range(3)]
        list_with_feeds(s, MED, "MED-USD", [(f, HEARTBEAT) for f in s.median_feeds], usd(40_000), MED_DEVIATION)
        yield s


@pytest.fixture
def guardian(system):
    who = boa.env.generate_address("guardian")
    with boa.env.prank(system.owner):
        system.exchange.set_guardian(who)
    return who


@pytest.fixture
def adl_keeper(system):
    who = boa.env.generate_address("adl_keeper")
    with boa.env.prank(system.owner):
        system.liquidator.set_adl_keeper(who, True)
    return who


def snapshot(s: System, *extra_holders) -> tuple:
    """Everything an action could change, read without the oracle: positions, cash, masks and
    open orders of every known account, markets, system balances, escrowed execution fees, LP
    shares, token balances, deficits."""
    accounts = sorted(s.accounts)
    markets = sorted(s.model.params)
    holders = sorted({w for w, _ in accounts} | set(extra_holders))
    return (
        [tuple(s.exchange.position_state(w, sub, m)) for w, sub in accounts for m in markets],
        [tuple(s.vault.account(w, sub)) for w, sub in accounts],
        [tuple(s.order_book.open_orders(w, sub)) for w, sub in accounts],
        s.vault.order_escrow_cash(),
        [tuple(s.exchange.open_interest(m)) for m in markets],
        [tuple(s.exchange.funding_state(m)) for m in markets],
        [s.exchange.open_notional_sum(m) for m in markets],
        [(s.liquidator.uncovered_deficit(m), s.liquidator.deficit_side(m)) for m in markets],
        (s.vault.liquidity_cash(), s.vault.insurance_cash(), s.vault.fee_cash(), s.vault.funding_pool_cash()),
        s.liquidity_vault.totalSupply(),
        [(s.liquidity_vault.balanceOf(w), s.usdc.balanceOf(w)) for w in holders],
        s.usdc.balanceOf(s.vault.address),
        s.usdc.balanceOf(s.liquidity_vault.address),
        s.exchange.paused(),
    )


def last_reason(error) -> str | None:
    """The reason string of a BoaError's innermost frame (None for an empty revert)."""
    frame = error.stack_trace.last_frame
    data = frame.vm_error.args[0] if frame.vm_error.args else b""
    return frame.pretty_vm_reason if data else None


def raw_revert(to: str, data: bytes, sender: str) -> bytes:
    """Send raw calldata; assert it reverts and return the revert payload."""
    computation = boa.env.execute_code(to_address=to, sender=sender, data=data)
    assert computation.is_error
    return bytes(computation.output)


def calldata(signature: str, types: list[str], args: list) -> bytes:
    return selector(signature) + abi_encode(types, args)


def lp_fund(s: System, who: str, usd_amount: int) -> int:
    """Mint tokens to an LP and approve the liquidity vault (nothing deposited yet)."""
    amount = s.fund(who, usd_amount)
    with boa.env.prank(who):
        s.usdc.approve(s.liquidity_vault.address, MAX_UINT)
    return amount


# ============================================================================================
# systems over hostile collateral tokens
# ============================================================================================

# An ERC-20 with ERC-777-style sender hooks: once armed, `transfer` or `transferFrom` calls
# `hook_target` with `hook_payload` *before* moving any balance (the dangerous moment for a
# vault that credits the balance delta) and records the outcome without failing the transfer,
# so the outer call completes and the test can see what the re-entry got; or, with
# `propagates`, lets the re-entry's revert fail the transfer.
HOOK_TOKEN = """
# pragma version ~=0.4.3

name: public(String[25])
symbol: public(String[5])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])

hook_target: public(address)
hook_payload: public(Bytes[2048])
hook_on_transfer_from: public(bool)
armed: public(bool)
hook_calls: public(uint256)
hook_success: public(bool)
hook_response: public(Bytes[256])
hook_propagates: public(bool)

@deploy
def __init__(name: String[25], symbol: String[5], decimals: uint8):
    self.name = name
    self.symbol = symbol
    self.decimals = decimals

@external
def mint(to: address, amount: uint256):
    self.balanceOf[to] += amount
    self.totalSupply += amount

@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    return True

@external
def arm(target: address, payload: Bytes[2048], on_transfer_from: bool, propagates: bool):
    self.hook_target = target
    self.hook_payload = payload
    self.hook_on_transfer_from = on_transfer_from
    self.hook_propagates = propagates
    self.armed = True

@external
def transfer(to: address, amount: uint256) -> bool:
    if not self.hook_on_transfer_from:
        self._hook()
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    return True

@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    if self.hook_on_transfer_from:
        self._hook()
    if self.allowance[owner][msg.sender] != max_value(uint256):
        self.allowance[owner][msg.sender] -= amount
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    return True

@internal
def _hook():
    if not self.armed:
        return
    self.armed = False
    self.hook_calls += 1
    if self.hook_propagates:
        raw_call(self.hook_target, self.hook_payload)
        return
    ok: bool = False
    response: Bytes[256] = b""
    ok, response = raw_call(self.hook_target, self.hook_payload, max_outsize=256, revert_on_failure=False)
    self.hook_success = ok
    self.hook_response = response
"""

# An ERC-20 that burns 1 % (rounded up) of every transfer: the recipient gets 99 %.
FEE_TOKEN = """
# pragma version ~=0.4.3

name: public(String[25])
symbol: public(String[5])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])

@deploy
def __init__(name: String[25], symbol: String[5], decimals: uint8):
    self.name = name
    self.symbol = symbol
    self.decimals = decimals

@external
def mint(to: address, amount: uint256):
    self.balanceOf[to] += amount
    self.totalSupply += amount

@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    return True

@external
def transfer(to: address, amount: uint256) -> bool:
    self._move(msg.sender, to, amount)
    return True

@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    if self.allowance[owner][msg.sender] != max_value(uint256):
        self.allowance[owner][msg.sender] -= amount
    self._move(owner, to, amount)
    return True

@internal
def _move(owner: address, to: address, amount: uint256):
    burned: uint256 = (amount + 99) // 100
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount - burned
    self.totalSupply -= burned
"""


@dataclass
class TokenSystem(System):
    """A fresh `System`, deployed from `template`'s compiled contracts (compiling takes
    seconds, deploying almost nothing), over `token_source` (Vyper source of a token with
    `mint(to, amount)`) or, without it, over a new MockUSDC."""

    template: System | None = None
    token_source: str = ""

    def __post_init__(self) -> None:
        t = self.template
        boa.env.eoa = self.owner
        if self.token_source:
            self.usdc = boa.loads(self.token_source, "USD Coin", "USDC", self.token_decimals, name="HostileToken")
        else:
            self.usdc = t.usdc.deployer.deploy("USD Coin", "USDC", self.token_decimals)
        self.oracle = t.oracle.deployer.deploy(ZERO_ADDRESS, 0)
        self.vault = t.vault.deployer.deploy(self.usdc.address)
        self.exchange = t.exchange.deployer.deploy(self.vault.address, self.oracle.address)
        self.oracle.set_configurator(self.exchange.address)
        self.vault.set_exchange(self.exchange.address)
        self.liquidity_vault = t.liquidity_vault.deployer.deploy(
            self.vault.address, self.exchange.address, "perpdex LP", "pLP"
        )
        self.vault.set_liquidity_vault(self.liquidity_vault.address)
        self.liquidator = t.liquidator.deployer.deploy(self.exchange.address, self.vault.address)
        self.exchange.set_liquidator(self.liquidator.address)
        self.vault.set_liquidator(self.liquidator.address)
        self.insurance_fund = t.insurance_fund.deployer.deploy(self.vault.address, 0)
        self.vault.set_insurance_fund(self.insurance_fund.address)
        self.order_book = t.order_book.deployer.deploy(
            self.exchange.address, self.vault.address, self.oracle.address, TEST_ORDER_PARAMS.as_tuple()
        )
        self.exchange.set_order_book(self.order_book.address)
        self.vault.set_order_book(self.order_book.address)
        self.executor = t.executor
        self.aggregators = {}
        self.model = ExchangeModel(token_decimals=self.token_decimals)
        self.model.now = self.now
        self.model.order_params = TEST_ORDER_PARAMS
        self.accounts = set()
        self.configure_liquidity()
        self.set_lp_executor(self.executor, True)


def _token_world(world, source: str = "", seed_liquidity_usd: int = 100_000):
    eoa = boa.env.eoa
    with boa.env.anchor():
        # a token that burns on transfer cannot seed the liquidity vault (its deposits refuse
        # short arrivals), so that world trades nothing: the open-interest cap leaves no room
        if source == FEE_TOKEN:
            seed_liquidity_usd = 0
        s = TokenSystem(template=world, token_source=source, seed_liquidity_usd=seed_liquidity_usd)
        s.list_market(BTC, "BTC-USD", 40_000)
        yield s
    boa.env.eoa = eoa


@pytest.fixture(scope="module")
def hooked_world(world):
    """A deployment whose collateral is HOOK_TOKEN, with an LP and the token itself funded: the
    token holds tokens, cash in its own vault sub-account 0, LP shares, and approvals, so that
    every call it makes from a hook would succeed if it were not a re-entry."""
    for s in _token_world(world, HOOK_TOKEN):
        s.lp_deposit(boa.env.generate_address("lp"), 1_000_000)
        token = s.usdc.address
        s.deposit(token, 20_000)
        s.lp_deposit(token, 1_000)
        s.fund(token, 10_000)
        with boa.env.prank(token):
            s.usdc.approve(s.liquidity_vault.address, MAX_UINT)
        yield s


def _checked_copy(base: System, request):
    """Like the `system` fixture: a snapshot copy of `base`, checked on teardown."""
    with fresh(base) as s:
        yield s
        if not getattr(request.node, "rep_call_failed", False):
            s.check_invariants(gifts=getattr(s, "gifts", 0))
            s.assert_system_matches()


@pytest.fixture
def hooked(hooked_world, request):
    yield from _checked_copy(hooked_world, request)


@pytest.fixture(scope="module")
def fee_world(world):
    """A deployment whose collateral is FEE_TOKEN (1 % burnt on every transfer)."""
    yield from _token_world(world, FEE_TOKEN)


@pytest.fixture
def fee_system(fee_world, request):
    yield from _checked_copy(fee_world, request)


@pytest.fixture(scope="module")
def empty_world(world):
    """A deployment whose liquidity vault has no shares yet: the owner has not seeded it."""
    yield from _token_world(world, seed_liquidity_usd=0)


@pytest.fixture
def empty_system(empty_world, request):
    yield from _checked_copy(empty_world, request)


# ============================================================================================
# reentrancy from token callbacks
# ============================================================================================

def _token_order_execution(s: System) -> bytes:
    """The token's own market order (0.1 BTC, from its cash), its delay passed and its round
    published: the `execute_order` calldata a keeper would send. The execution reaches the
    exchange and the vault."""
    order_id = s.commit_order(s.usdc.address, BTC, WAD // 10)
    s.warp(s.model.order_params.min_order_delay)
    return s.order_book.execute_order.prepare_calldata(order_id, [s.publish(BTC)])


def _token_order_commit(s: System) -> bytes:
    """`commit_order` calldata for a market order of the token's own, with an execution fee to
    escrow from its cash: the commit reaches the vault."""
    s.set_order_params(execution_fee=WAD)
    return s.order_book.commit_order.prepare_calldata(0, BTC, WAD // 10, MAX_UINT, KIND_MARKET, 0, False, 0)


# (outer action, re-entered call): the hook fires inside the outer action's token transfer,
# with the token itself as the caller. Each re-entered call would succeed outside the hook.
REENTRY = {
    "deposit -> vault.deposit": ("deposit", lambda s: s.vault.deposit.prepare_calldata(0, 100 * USDC), "vault"),
    "deposit -> vault.withdraw": ("deposit", lambda s: s.vault.withdraw.prepare_calldata(0, 100 * USDC), "vault"),
    "withdraw -> vault.withdraw": ("withdraw", lambda s: s.vault.withdraw.prepare_calldata(0, 100 * USDC), "vault"),
    "withdraw -> vault.deposit": ("withdraw", lambda s: s.vault.deposit.prepare_calldata(0, 100 * USDC), "vault"),
    "deposit -> order_book.execute_order": ("deposit", _token_order_execution, "order_book"),
    "withdraw -> order_book.execute_order": ("withdraw", _token_order_execution, "order_book"),
    "deposit -> order_book.commit_order (fee)": ("deposit", _token_order_commit, "order_book"),
    "withdraw -> order_book.commit_order (fee)": ("withdraw", _token_order_commit, "order_book"),
    # the liquidity vault's two-step flows: the request pulls the LP's tokens (LP -> vault
    # contract) under the liquidity vault's lock; the redemption's execution pays them under the
    # vault's lock (and the liquidity vault's)
    "lp.request_deposit -> lp.request_deposit": (
        "lp_deposit",
        lambda s: s.liquidity_vault.request_deposit.prepare_calldata(100 * USDC, s.usdc.address),
        "liquidity_vault",
    ),
    "lp.request_deposit -> lp.request_redeem": (
        "lp_deposit",
        lambda s: s.liquidity_vault.request_redeem.prepare_calldata(WAD, s.usdc.address),
        "liquidity_vault",
    ),
    "lp.execute_redeem -> vault.withdraw": (
        "lp_redeem",
        lambda s: s.vault.withdraw.prepare_calldata(0, 100 * USDC),
        "vault",
    ),
    "lp.redeem -> order_book.execute_order": ("lp_redeem", _token_order_execution, "order_book"),
}


@pytest.mark.parametrize("case", sorted(REENTRY))
def test_token_callback_cannot_reenter(hooked, trader, case):
    """A collateral token that calls back into the protocol in the middle of a transfer gets a
    revert with an empty payload (the non-reentrancy lock of the contract in the middle of
    its call), the outer action completes exactly as modelled, and the ledger stays exact.
    The same call from the same token outside the hook succeeds, so only the lock stopped it."""
    s = hooked
    token = s.usdc
    outer, payload_of, target = REENTRY[case]
    payload = payload_of(s)
    target_address = getattr(s, target).address
    lp = boa.env.generate_address("hooked_lp")
    s.deposit(trader, 5_000)
    if outer == "lp_redeem":
        s.lp_deposit(lp, 5_000)

    on_transfer_from = outer in ("deposit", "lp_deposit")
    token.arm(target_address, payload, on_transfer_from, False)
    if outer == "deposit":
        s.deposit(trader, 1_000)
    elif outer == "withdraw":
        s.withdraw(trader, 1_000 * USDC)
    elif outer == "lp_deposit":
        s.lp_deposit(lp, 1_000)
    else:
        s.lp_redeem(lp, 1_000 * WAD)

    assert token.hook_calls() == 1 and not token.armed()
    assert token.hook_success() is False
    assert token.hook_response() == b""  # a lock, not a reasoned revert such as an access check
    assert s.vault.cash(token.address, 0) == usd(20_000)
    assert s.liquidity_vault.balanceOf(token.address) == s.model.lv_shares[token.address]
    s.assert_system_matches()

    assert s.order_book.open_orders(token.address, 0) == s.model.open_orders((token.address, 0))
    with boa.env.anchor():  # the very same call, from the token, outside any hook
        computation = boa.env.execute_code(to_address=target_address, sender=token.address, data=payload)
        assert not computation.is_error
        if "execute_order" in case:  # it fills
            assert s.exchange.position_state(token.address, 0, BTC)[0] == WAD // 10


def test_token_callback_reentry_that_bubbles_up_reverts_the_outer_call(hooked, trader):
    """A token that lets the locked re-entry fail the transfer makes the whole deposit revert,
    with the lock's empty payload, and nothing changes."""
    s = hooked
    s.deposit(trader, 5_000)
    s.fund(trader, 1_000)
    before = snapshot(s)
    s.usdc.arm(s.vault.address, s.vault.withdraw.prepare_calldata(0, 100 * USDC), True, True)
    deposit = s.vault.deposit.prepare_calldata(0, 1_000 * USDC)
    assert raw_revert(s.vault.address, deposit, trader) == b""
    assert snapshot(s) == before
    s.usdc.arm(s.vault.address, b"", True, False)  # disarm: the same deposit then goes through
    s.deposit(trader, 1_000)


# ============================================================================================
# fee-on-transfer collateral
# ============================================================================================


def test_fee_on_transfer_token_cannot_mint_cash(fee_system, trader, lp, attacker):
    """Every entry credits what actually reached the vault (99 % of 99 % when the liquidity
    vault or the insurance fund passes tokens on), `mint` refuses to promise shares for assets
    that do not arrive, and the ledger equals the vault's token balance throughout."""
    s = fee_system
    scale = 10**12

    def ledger_is_exact():
        assert s.ledger_total() == s.usdc.balanceOf(s.vault.address) * scale

    # trader: 1,000 sent, 990 arrive and are credited
    s.fund(trader, 1_000)
    with boa.env.prank(trader):
        credited = s.vault.deposit(0, 1_000 * USDC)
    assert credited == 990 * USDC * scale == s.model.deposit((trader, 0), 990 * USDC)
    s.accounts.add((trader, 0))
    ledger_is_exact()

    # the liquidity vault promises shares for exact assets: a deposit whose tokens arrive short
    # (the owner's seeding, the only synchronous one) or a mint is refused, nothing changes
    lp_fund(s, s.owner, 10_010)
    before = snapshot(s, lp)
    with boa.env.prank(s.owner):
        with boa.reverts("liquidity vault: token took a transfer fee"):
            s.liquidity_vault.deposit(10_000 * USDC, lp)
        with boa.reverts("liquidity vault: token took a transfer fee"):
            s.liquidity_vault.mint(WAD, lp)
    assert snapshot(s, lp) == before
    assert s.usdc.balanceOf(s.liquidity_vault.address) == 0  # nothing rests in the LP contract

    # a donation: 100 sent, 99 reach the fund contract, 98.01 the vault
    s.fund(attacker, 100)
    with boa.env.prank(attacker):
        s.usdc.approve(s.insurance_fund.address, MAX_UINT)
        received = s.insurance_fund.donate(100 * USDC)
    assert received == 98_010_000 and s.vault.insurance_cash() == received * scale
    s.model.token_balance += received
    s.model._credit("insurance_fund", received * scale)
    ledger_is_exact()

    # no liquidity could enter, so the open-interest cap leaves no room for a trade; a
    # withdrawal debits exactly what leaves the vault
    with pytest.raises(OrderCancelled, match="order: open interest cap, room left 0 USD"):
        s.trade(trader, BTC, WAD // 100)
    s.withdraw(trader, 500 * USDC)
    assert s.usdc.balanceOf(trader) == 495 * USDC  # the token's own fee, paid by the recipient
    ledger_is_exact()


# ============================================================================================
# oracle faults, seen from the exchange
# ============================================================================================


def _next_round(s: System, market_id: int, answer: int | None = None, started=None, updated=None, answered=None):
    """A raw round on the market's first feed; defaults: the model's price, complete, now."""
    feed = feeds_of(s, market_id)[0]
    round_id = feed.latestRound() + 1
    if answer is None:
        answer = s.model.index[market_id] * 10 ** feed.decimals() // WAD
    with boa.env.prank(s.owner):
        feed.set_round(
            round_id,
            answer,
            s.now if started is None else started,
            s.now if updated is None else updated,
            round_id if answered is None else answered,
        )


def _sequencer(s: System, answer: int, started_at: int) -> None:
    """The system's sequencer-uptime feed reports `answer` (0 up, 1 down) since `started_at`
    (its grace period is one hour)."""
    round_id = s.sequencer.latestRound() + 1
    with boa.env.prank(s.owner):
        s.sequencer.set_round(round_id, answer, started_at, s.now, round_id)


ORACLE_FAULTS = {
    "stale": (BTC, "oracle: stale price", lambda s: _next_round(s, BTC, updated=s.now - HEARTBEAT - 1)),
    "zero": (BTC, "oracle: non-positive price", lambda s: _next_round(s, BTC, answer=0)),
    "negative": (BTC, "oracle: non-positive price", lambda s: _next_round(s, BTC, answer=-(39_000 * 10**8))),
    "future timestamp": (BTC, "oracle: future timestamp", lambda s: _next_round(s, BTC, updated=s.now + 60)),
    "answered in an older round": (
        BTC,
        "oracle: incomplete round",
        lambda s: _next_round(s, BTC, answered=feeds_of(s, BTC)[0].latestRound()),
    ),
    "updatedAt 0": (BTC, "oracle: incomplete round", lambda s: _next_round(s, BTC, updated=0)),
    "startedAt 0": (BTC, "oracle: incomplete round", lambda s: _next_round(s, BTC, started=0)),
    "feeds disagree": (
        MED,
        "oracle: feeds disagree",  # one feed 1.05x the others, 1 % allowed
        lambda s: _next_round(s, MED, answer=s.model.index[MED] * 105 // 100 // 10**10),
    ),
    "sequencer down": (BTC, "oracle: sequencer down", lambda s: _sequencer(s, 1, s.now - 7_200)),
    "sequencer grace period": (BTC, "oracle: sequencer grace period", lambda s: _sequencer(s, 0, s.now - 60)),
}


@pytest.mark.parametrize("fault", list(ORACLE_FAULTS))
def test_oracle_fault_blocks_every_price_dependent_action_and_changes_nothing(
    system, trader, other_trader, keeper, lp, fault
):
    """Under each oracle fault every action that needs the market's price reverts with that
    fault's own reason - executing market orders that add, reduce, close or open at the
    latest round (after their delay), a withdrawal from an account with a position,
    liquidation (single and batch), funding accrual, LP deposit and redemption while the market
    has skew, and the views - and nothing changes: the orders stay open. Accounts without
    positions keep depositing and withdrawing. A fresh round brings everything back, and the
    liquidation that was blocked then happens exactly as modelled."""
    s = system
    market_id, reason, inject = ORACLE_FAULTS[fault]
    victim, idle, newcomer = other_trader, boa.env.generate_address("idle"), boa.env.generate_address("newcomer")
    s.deposit(trader, 10_000)
    trade(s, trader, market_id, WAD)
    s.deposit(trader, 5_000, sub_account=1)
    trade(s, trader, market_id, WAD // 10, sub_account=1)  # a position and no pending order
    s.deposit(victim, 2_200)
    trade(s, victim, market_id, WAD)
    s.deposit(idle, 1_000)
    s.deposit(newcomer, 1_000)
    s.lp_deposit(lp, 10_000)
    publish(s, market_id, usd(39_000))
    assert s.liquidator.is_liquidatable(victim, 0)
    lp_fund(s, lp, 1_000)
    orders = [s.commit_order(trader, market_id, size) for size in (WAD // 10, -WAD // 2, -WAD)]  # add, reduce, close
    orders.append(s.commit_order(newcomer, market_id, WAD // 10))  # open
    s.warp(s.model.order_params.min_order_delay)

    deepen(s)  # the victim's liquidation below closes it at one index
    inject(s)
    round_ids = [feed.latestRound() for feed in feeds_of(s, market_id)]
    before = snapshot(s, lp)
    blocked = [(keeper, lambda o=order_id: s.order_book.execute_order(o, round_ids)) for order_id in orders]
    blocked += [
        (trader, lambda: s.vault.withdraw(1, USDC)),
        (keeper, lambda: s.liquidator.liquidate(victim, 0)),
        (keeper, lambda: s.liquidator.liquidate_many([(victim, 0), (trader, 0)])),
        (keeper, lambda: s.exchange.touch_market(market_id)),
        (keeper, lambda: s.exchange.fill_price(market_id, WAD)),
        (keeper, lambda: s.exchange.mark_price(market_id)),
        (keeper, lambda: s.exchange.equity(trader, 0)),
        (keeper, lambda: s.liquidator.is_liquidatable(victim, 0)),
        (keeper, lambda: s.liquidator.liquidation_price(victim, 0, market_id)),
        (keeper, lambda: s.liquidity_vault.totalAssets()),
        # (LP flows are two-step: their execution names rounds, see tests/unit/test_lp_flows.py)
    ]
    for caller, call in blocked:
        with boa.reverts(reason), boa.env.prank(caller):
            call()
    assert snapshot(s, lp) == before
    for order_id in orders:
        assert s.model.order(order_id).state == STATE_OPEN
        s.assert_order_matches(order_id)

    s.deposit(idle, 500)  # no position: no oracle needed
    s.withdraw(idle, 1_500 * USDC)
    assert s.usdc.balanceOf(idle) == 1_500 * USDC

    refresh(s)
    s.liquidate(keeper, victim)
    assert s.exchange.position_state(victim, 0, market_id)[0] == 0
    s.warp(1)  # the round a market order executes at needs a valid round before it: the fresh one
    trade(s, trader, market_id, -WAD)


def test_feeds_with_8_and_18_decimals_give_the_same_index_and_fills(system, trader, other_trader):
    """The same price published with 8 decimals, with 18, and as a median of 8-, 18- and
    6-decimal feeds prices three markets identically: same index, same fill, same account."""
    s = system
    price = usd(2_345.678901)
    eight = new_feed(s, 8, price // 10**10)
    eighteen = new_feed(s, 18, price)
    six = new_feed(s, 6, price // 10**12)
    list_with_feeds(s, 3, "M8-USD", [(eight, HEARTBEAT)], price)
    list_with_feeds(s, 4, "M18-USD", [(eighteen, HEARTBEAT)], price)
    mixed = [(new_feed(s, 8, price // 10**10), HEARTBEAT), (new_feed(s, 18, price), 60), (six, 86_400)]
    list_with_feeds(s, 5, "MIX-USD", mixed, price, MED_DEVIATION)
    assert s.exchange.index_price(3) == s.exchange.index_price(4) == s.exchange.index_price(5) == price

    third = boa.env.generate_address("third_trader")
    fills, states = [], []
    for who, market_id in ((trader, 3), (other_trader, 4), (third, 5)):
        s.deposit(who, 5_000)
        fills.append(trade(s, who, market_id, 7 * WAD).fill_price)
        states.append((s.exchange.position_state(who, 0, market_id)[:2], s.exchange.account_state(who, 0)))
    assert fills[0] == fills[1] == fills[2]
    assert states[0] == states[1] == states[2]


def test_limitation_a_stale_feed_blocks_reducing_other_markets_of_a_cross_margined_account(
    system, trader, keeper
):
    """Known limitation (docs/SECURITY.md): health needs every open market's price, so while
    ETH's feed is stale a cross-margined sub-account cannot even reduce its BTC position (the
    execution of its order reverts at a fresh BTC round, and the order stays open), and a
    liquidation batch that names it reverts as a whole. An isolated sub-account holding only
    BTC trades normally."""
    s = system
    s.deposit(trader, 20_000, sub_account=0)
    s.trade(trader, BTC, WAD, sub_account=0)
    s.trade(trader, ETH, WAD, sub_account=0)
    s.deposit(trader, 5_000, sub_account=1)
    s.trade(trader, BTC, WAD // 2, sub_account=1)

    _next_round(s, ETH, updated=s.now - HEARTBEAT - 1)
    close_btc = s.commit_order(trader, BTC, -WAD, sub_account=0)
    s.warp(s.model.order_params.min_order_delay)
    btc_round = s.publish(BTC)  # a fresh BTC round: the order's own market is priced
    before = snapshot(s)
    with boa.reverts("oracle: stale price"), boa.env.prank(keeper):
        s.order_book.execute_order(close_btc, [btc_round])
    with boa.reverts("oracle: stale price"), boa.env.prank(keeper):
        s.liquidator.liquidate_many([(trader, 1), (trader, 0)])
    assert snapshot(s) == before
    assert s.model.order(close_btc).state == STATE_OPEN
    s.trade(trader, BTC, -WAD // 2, sub_account=1)  # the isolated BTC account closes
    assert s.exchange.open_markets(trader, 1) == 0
    refresh(s)
    s.trade(trader, BTC, -WAD, sub_account=0)


# ============================================================================================
# extremes: prices, sizes at the caps, out-of-range arguments, unknown ids
# ============================================================================================


@pytest.mark.parametrize("price", ["0.000001", "0.001", "1", "1000000", "1000000000"])
def test_extreme_prices_trade_close_and_fund_like_the_model(system, trader, other_trader, price):
    """Markets priced from 1e-6 to 1e9 USD (each with a skew scale worth the same 40 M USD)
    open, accrue funding, move 10 % and close exactly as the model says, without overflow or
    precision loss that matters: the long earns ~10 % of 10,000 USD and pays the funding the
    premium implies."""
    s = system
    index = usd(price)
    size = usd(10_000) * WAD // index  # 10,000 USD of notional
    skew_scale = 4_000 * size
    list_single_feed(
        s,
        3,
        index // 10**10,
        skew_scale=skew_scale,
        max_long_oi=100 * skew_scale,
        max_short_oi=100 * skew_scale,
        max_position_size=10 * skew_scale,
        max_liquidation_size=skew_scale // 10,
    )
    s.deposit(trader, 100_000)
    s.deposit(other_trader, 100_000)
    opened = s.trade(trader, 3, size)
    s.trade(other_trader, 3, -size // 2)
    assert abs(opened.fill_price - index) * 8_000 <= index  # impact of 1/8000 at most

    s.warp(8 * 3600)
    s.model.index[3] = index * 11 // 10
    refresh(s)
    owed = s.exchange.position(trader, 0, 3)[3]  # premium 1/8000 for 8 h on 11,000 USD
    assert abs(owed - usd(1.375)) <= usd(1.375) // 10**6
    closed = s.trade(trader, 3, -size)
    assert closed.funding_paid == owed
    assert usd(990) <= closed.realized_pnl <= usd(1_000)
    s.trade(other_trader, 3, size // 2)
    assert s.exchange.open_interest(3) == (0, 0)


def test_sizes_exactly_at_the_caps_fill_and_one_wei_more_reverts(system, trader, other_trader):
    """Max position size and both open-interest caps can be reached exactly; one wei beyond
    reverts with the cap's reason and changes nothing."""
    s = system
    s.set_market_params(BTC, max_position_size=2 * WAD, max_long_oi=3 * WAD, max_short_oi=3 * WAD)
    for who in (trader, other_trader):
        for sub in (0, 1, 2):
            s.deposit(who, 50_000, sub_account=sub)

    def rejected(who, size, sub, reason):
        before = snapshot(s)
        with pytest.raises(ModelRevert, match=reason):
            s.trade(who, BTC, size, sub_account=sub)
        assert snapshot(s) == before

    s.trade(trader, BTC, 2 * WAD, sub_account=0)  # exactly the max position size
    rejected(trader, 1, 0, "exchange: position above max size")
    s.trade(trader, BTC, WAD, sub_account=1)  # long OI exactly 3
    rejected(trader, 1, 2, "exchange: long open interest cap")
    rejected(other_trader, 1, 2, "exchange: long open interest cap")

    s.trade(other_trader, BTC, -2 * WAD, sub_account=0)  # exactly the max position size, short
    rejected(other_trader, -1, 0, "exchange: position above max size")
    s.trade(other_trader, BTC, -WAD, sub_account=1)  # short OI exactly 3
    rejected(other_trader, -1, 2, "exchange: short open interest cap")
    rejected(trader, -WAD - 1, 1, "exchange: short open interest cap")  # a flip to short 1 wei
    assert tuple(s.exchange.open_interest(BTC)) == (3 * WAD, 3 * WAD)

    s.trade(trader, BTC, -1, sub_account=0)  # one wei back under the cap: open again
    s.trade(other_trader, BTC, 1, sub_account=2)
    assert tuple(s.exchange.open_interest(BTC)) == (3 * WAD, 3 * WAD)


def test_huge_sub_account_ids_are_ordinary_isolated_accounts(system, trader, keeper):
    """Sub-account ids up to max_value(uint256) deposit and withdraw like sub-account 0. Orders
    take ids up to 2**32 - 1 (an order id packs the sub-account in 32 bits; beyond, the commit
    is refused with that reason), and the largest of them trades, gets liquidated and withdraws
    like sub-account 0. Nothing leaks between them."""
    s = system
    deepen(s)  # the liquidation below closes the whole position at one index
    top = 2**32 - 1
    s.deposit(trader, 1_000, sub_account=0)
    s.deposit(trader, 2_200, sub_account=top)
    s.deposit(trader, 700, sub_account=2**255)
    s.deposit(trader, 300, sub_account=MAX_UINT)
    for sub in (top + 1, 2**255, MAX_UINT):
        with pytest.raises(ModelRevert, match=re.escape("order: sub-account above 2**32 - 1")):
            s.commit_order(trader, BTC, WAD, sub_account=sub)
    s.trade(trader, BTC, WAD, sub_account=top)
    [executed] = [e for e in s.last_logs if type(e).__name__ == "OrderExecuted"]
    assert (executed.owner, executed.sub_account, executed.order_id >> 160 & (2**32 - 1)) == (trader, top, top)
    assert s.exchange.open_markets(trader, top) == 1 << BTC
    assert [s.exchange.open_markets(trader, sub) for sub in (0, top + 1, 2**255, MAX_UINT)] == [0] * 4

    publish(s, BTC, usd(39_000))
    assert s.liquidator.is_liquidatable(trader, top)
    assert not s.liquidator.is_liquidatable(trader, 0)
    s.liquidate(keeper, trader, top)
    assert s.vault.cash(trader, 0) == usd(1_000) and s.vault.cash(trader, 2**255) == usd(700)
    assert s.vault.cash(trader, MAX_UINT) == usd(300)
    assert s.vault.cash(keeper, 0) > 0  # the keeper's reward lands in its sub-account 0
    s.withdraw(trader, s.vault.cash(trader, top) // 10**12, sub_account=top)
    s.withdraw(trader, 700 * USDC, sub_account=2**255)
    s.withdraw(trader, 300 * USDC, sub_account=MAX_UINT)
    assert s.exchange.account_state(trader, 1) == (0, 0, 0, 0)  # never used: empty, not an error


def _abi_raw(s: System, who: dict) -> dict:
    """label -> (caller role, contract, calldata) that no well-behaved client would send:
    out-of-range ABI values, too-long arrays, truncated arguments, each from a caller who may
    otherwise make the call."""
    account = (who["trader"], 0)
    return {
        "liquidate_many with 51 accounts": (
            "keeper",
            s.liquidator.address,
            calldata("liquidate_many((address,uint256)[])", ["(address,uint256)[]"], [[account] * 51]),
        ),
        "auto_deleverage with 21 targets": (
            "adl_keeper",
            s.liquidator.address,
            calldata(
                "auto_deleverage(uint256,(address,uint256,uint256)[],address,uint256)",
                ["uint256", "(address,uint256,uint256)[]", "address", "uint256"],
                [BTC, [(who["trader"], 0, WAD)] * 21, who["trader"], 0],
            ),
        ),
        "set_paused(2) (owner)": ("owner", s.exchange.address, calldata("set_paused(bool)", ["uint256"], [2])),
        "commit_order with a truncated expiry argument": (
            "trader",
            s.order_book.address,
            s.order_book.commit_order.prepare_calldata(0, BTC, WAD, MAX_UINT, KIND_MARKET, 0, False, 0)[:-40],
        ),
        "aggregator set_round with round id 2**80 (owner)": (
            "owner",
            s.aggregators[BTC].address,
            calldata(
                "set_round(uint80,int256,uint256,uint256,uint80)",
                ["uint256", "int256", "uint256", "uint256", "uint256"],
                [2**80, 1, 1, 1, 1],
            ),
        ),
    }


ABOVE_MAX_SIZE = f"order: size above the market's max position size of {10_000 * WAD} (WAD)"

# label -> (sub-account, size, acceptable price, reason): orders that commit but that the
# exchange refuses at execution, so the keeper's execution cancels them with that reason
REFUSED_AT_EXECUTION = {
    # the fill price would reach 0
    "sell of 2 x (skew_scale + skew)": (0, -2_002 * WAD, 0, "exchange: fill price out of range"),
    "sell, acceptable_price max uint256": (0, -WAD // 10, MAX_UINT, "exchange: price beyond acceptable"),
    "buy, acceptable_price 0": (0, WAD // 10, 0, "exchange: price beyond acceptable"),
    "buy in an empty sub-account 2**32 - 1": (2**32 - 1, WAD, MAX_UINT, "exchange: insufficient margin"),
}


def _bad_calls(s: System, who: dict) -> dict:
    """label -> (caller role, call, expected reason or None for a revert without one)."""
    trader, lp, owner = who["trader"], who["lp"], s.owner
    ex, vault, lv, liq, fund, ob = s.exchange, s.vault, s.liquidity_vault, s.liquidator, s.insurance_fund, s.order_book

    def commit(sub_account, market_id, size, acceptable):
        return ob.commit_order(sub_account, market_id, size, acceptable, KIND_MARKET, 0, False, 0)

    return {
        # OrderBook.commit_order (a market order) and the order book's keepers' entry points
        "commit size max int256": ("trader", lambda: commit(0, BTC, MAX_INT, MAX_UINT), ABOVE_MAX_SIZE),
        "commit size min int256": ("trader", lambda: commit(0, BTC, MIN_INT, 0), ABOVE_MAX_SIZE),
        "commit size -max int256": ("trader", lambda: commit(0, BTC, -MAX_INT, 0), ABOVE_MAX_SIZE),
        "commit size 2**120 + 1": ("trader", lambda: commit(0, BTC, 2**120 + 1, MAX_UINT), ABOVE_MAX_SIZE),
        "commit size 2**100": ("trader", lambda: commit(0, BTC, 2**100, MAX_UINT), ABOVE_MAX_SIZE),
        "commit size 0": ("trader", lambda: commit(0, BTC, 0, MAX_UINT), "order: zero size"),
        "commit market 31 (unlisted)": ("trader", lambda: commit(0, 31, WAD, MAX_UINT), "order: unknown market"),
        "commit market 32 (out of range)": ("trader", lambda: commit(0, 32, WAD, MAX_UINT), "order: unknown market"),
        "commit market max uint256": ("trader", lambda: commit(0, MAX_UINT, WAD, MAX_UINT), "order: unknown market"),
        "commit in sub-account max uint256": (
            "trader", lambda: commit(MAX_UINT, BTC, WAD, MAX_UINT), "order: sub-account above 2**32 - 1"
        ),
        "execute_order id max uint256": ("keeper", lambda: ob.execute_order(MAX_UINT, [1]), "order: unknown order"),
        "cancel_order id max uint256": ("trader", lambda: ob.cancel_order(MAX_UINT), "order: unknown order"),
        # Exchange
        "touch_market 31": ("trader", lambda: ex.touch_market(31), "exchange: unknown market"),
        "touch_market max uint256": ("trader", lambda: ex.touch_market(MAX_UINT), "exchange: unknown market"),
        "fill_price size 0": ("trader", lambda: ex.fill_price(BTC, 0), "exchange: zero size"),
        "mark_price market 31": ("trader", lambda: ex.mark_price(31), "exchange: unknown market"),
        "index_price market 32": ("trader", lambda: ex.index_price(32), "oracle: unknown market"),
        "set_market_params market 31 (owner)": (
            "owner", lambda: ex.set_market_params(31, params_tuple(default_params())), "exchange: unknown market"
        ),
        # Vault
        "deposit max uint256": ("trader", lambda: vault.deposit(0, MAX_UINT), "erc20: transfer amount exceeds balance"),
        "deposit 0": ("trader", lambda: vault.deposit(0, 0), "vault: zero amount"),
        "deposit 2**200 token units (held)": ("whale", lambda: vault.deposit(0, 2**200), "vault: cash out of range"),
        "withdraw max uint256": ("trader", lambda: vault.withdraw(0, MAX_UINT), None),
        "withdraw max uint256 // 10**12": (
            "trader", lambda: vault.withdraw(0, MAX_UINT // 10**12), "vault: insufficient free collateral"
        ),
        "withdraw 0": ("trader", lambda: vault.withdraw(0, 0), "vault: zero amount"),
        "withdraw from empty sub-account max uint256": (
            "trader", lambda: vault.withdraw(MAX_UINT, 1), "vault: insufficient free collateral"
        ),
        "withdraw_fees 0 (fee receiver)": ("owner", lambda: vault.withdraw_fees(owner, 0), "vault: zero amount"),
        "withdraw_fees max uint256 (fee receiver)": ("owner", lambda: vault.withdraw_fees(owner, MAX_UINT), None),
        "withdraw_fees to the zero address (fee receiver)": (
            "owner", lambda: vault.withdraw_fees(ZERO_ADDRESS, 1), "vault: zero address"
        ),
        # LiquidityVault
        "LP request_deposit max uint256": (
            "lp", lambda: lv.request_deposit(MAX_UINT, lp), "erc20: transfer amount exceeds balance"
        ),
        "LP request_deposit 0": ("lp", lambda: lv.request_deposit(0, lp), "liquidity vault: zero amount"),
        "LP request_deposit to the zero address": (
            "lp", lambda: lv.request_deposit(USDC, ZERO_ADDRESS), "liquidity vault: zero receiver"
        ),
        "LP request_redeem 0": ("lp", lambda: lv.request_redeem(0, lp), "liquidity vault: zero amount"),
        "LP request_redeem to the zero address": (
            "lp", lambda: lv.request_redeem(WAD, ZERO_ADDRESS), "liquidity vault: zero receiver"
        ),
        "LP deposit (synchronous: the owner's seeding only)": (
            "lp", lambda: lv.deposit(USDC, lp), "liquidity vault: deposits are two-step, use request_deposit"
        ),
        "LP share transfer to the zero address": (
            "lp", lambda: lv.transfer(ZERO_ADDRESS, 1), "erc20: transfer to the zero address"
        ),
        # Liquidator
        "liquidate empty sub-account max uint256": (
            "keeper", lambda: liq.liquidate(trader, MAX_UINT), "liquidator: account healthy"
        ),
        "liquidate the zero address": ("keeper", lambda: liq.liquidate(ZERO_ADDRESS, 0), "liquidator: account healthy"),
        "auto_deleverage market 31 (ADL keeper)": (
            "adl_keeper", lambda: liq.auto_deleverage(31, [], trader, 0), "liquidator: no ADL trigger"
        ),
        "auto_deleverage market max uint256 (ADL keeper)": (
            "adl_keeper", lambda: liq.auto_deleverage(MAX_UINT, [], trader, 0), "liquidator: no ADL trigger"
        ),
        "set_pnl_factors target 0 (owner)": (
            "owner", lambda: liq.set_pnl_factors(WAD, 0), "liquidator: target must be below max"
        ),
        "set_pnl_factors max uint256 (owner)": (
            "owner", lambda: liq.set_pnl_factors(MAX_UINT, WAD), "liquidator: max PnL factor too high"
        ),
        # InsuranceFund
        "donate 0": ("trader", lambda: fund.donate(0), "insurance fund: zero amount"),
        "donate max uint256": ("trader", lambda: fund.donate(MAX_UINT), "erc20: transfer amount exceeds balance"),
        "withdraw_surplus 0 (owner)": ("owner", lambda: fund.withdraw_surplus(owner, 0), "insurance fund: zero amount"),
        "withdraw_surplus max uint256 (owner)": ("owner", lambda: fund.withdraw_surplus(owner, MAX_UINT), None),
        "set_max_oi_ratio max uint256 (owner)": (
            "owner", lambda: lv.set_max_oi_ratio(MAX_UINT), "liquidity vault: ratio out of bounds"
        ),
    }


@pytest.fixture
def bad_input_setup(system, trader, lp, keeper, adl_keeper):
    """A trader with a BTC position, an LP, a whale holding 2**200 token units, approvals."""
    s = system
    whale = boa.env.generate_address("whale")
    s.set_globals(protocol_fee_share=WAD // 10)  # so that the fee receiver has cash
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)
    s.lp_deposit(lp, 10_000)
    lp_fund(s, lp, 1_000)
    with boa.env.prank(s.owner):
        s.usdc.mint(whale, 2**200)
    for holder in (trader, whale):
        with boa.env.prank(holder):
            s.usdc.approve(s.vault.address, MAX_UINT)
            s.usdc.approve(s.insurance_fund.address, MAX_UINT)
    who = {"trader": trader, "lp": lp, "keeper": keeper, "adl_keeper": adl_keeper, "owner": s.owner, "whale": whale}
    return s, who


def test_bad_inputs_revert_cleanly_and_change_nothing(bad_input_setup):
    """Every out-of-range, zero, maximal or nonsensical argument the wallet ABI accepts is
    refused with its exact reason (or, for arithmetic overflow, without one); an order that
    only the exchange can refuse (price, margin) is cancelled at its execution with the
    exchange's reason. After all of them every position, balance, open order and parameter is
    exactly as before: nothing moved, nothing was lost."""
    s, who = bad_input_setup
    trader = who["trader"]
    s.accounts.update({(trader, sub) for sub, *_ in REFUSED_AT_EXECUTION.values()} | {(s.executor, 0)})
    before = admin_state(s, *who.values())  # positions, balances, open orders, roles and parameters
    wrong = {}
    for label, (role, call, reason) in _bad_calls(s, who).items():
        try:
            with boa.env.prank(who[role]):
                call()
        except boa.BoaError as error:
            if last_reason(error) != reason:
                wrong[label] = last_reason(error)
        else:
            wrong[label] = "did not revert"
    assert wrong == {}
    for label, (role, to, data) in _abi_raw(s, who).items():
        assert raw_revert(to, data, who[role]) == b"", label  # ABI decoding: no reason
    for label, (sub, size, acceptable, reason) in REFUSED_AT_EXECUTION.items():
        with pytest.raises(OrderCancelled) as cancelled:
            s.trade(trader, BTC, size, acceptable, sub_account=sub)
        assert cancelled.value.reason == reason, label
    assert admin_state(s, *who.values()) == before
    assert tuple(s.exchange.market_params(BTC)) == params_tuple(s.model.params[BTC])


def test_empty_and_unknown_things_read_as_zero(system, trader, keeper):
    """Views of never-used accounts and unlisted markets answer zero instead of reverting, so
    wallets and keepers can probe them; an empty liquidation batch is a no-op."""
    s = system
    assert s.exchange.position(trader, MAX_UINT, 31) == (0, 0, 0, 0)
    assert s.exchange.position_state(trader, 0, MAX_UINT) == (0, 0, 0)
    assert s.exchange.account_state(trader, MAX_UINT) == (0, 0, 0, 0)
    assert s.exchange.withdrawable(trader, MAX_UINT) == 0
    assert s.exchange.market_params(31) == (0,) * 11
    assert s.exchange.open_interest(32) == (0, 0) and s.exchange.skew(MAX_UINT) == 0
    assert s.liquidator.liquidation_price(trader, 0, MAX_UINT) == 0
    assert s.liquidator.pnl_factor(31) == 0
    assert not s.liquidator.is_liquidatable(trader, MAX_UINT)
    assert s.liquidate_many(keeper, []) == 0


# ============================================================================================
# access control
# ============================================================================================

OWNER_ONLY = "ownable: caller is not the owner"
NOT_NEW_OWNER = "ownable_2step: caller is not the new owner"
CONTRACTS = ("vault", "exchange", "oracle", "liquidity_vault", "liquidator", "insurance_fund", "order_book")

# state-changing functions anyone may call (each has its own checks on the caller's funds)
PERMISSIONLESS = {
    "vault": {"deposit", "withdraw"},
    "exchange": {"touch_market"},
    "oracle": set(),
    "liquidity_vault": {
        "request_deposit", "request_redeem", "execute_deposit", "execute_redeem", "cancel_request",
        "transfer", "transferFrom", "approve",
    },
    "liquidator": {"liquidate", "liquidate_many", "write_off"},
    "insurance_fund": {"donate"},
    "order_book": {"commit_order", "execute_order", "execute_orders", "cancel_order", "refresh_open_interest_room"},
}


def _zero(abi_type: dict):
    """The zero value of an ABI parameter."""
    kind = abi_type["type"]
    if kind.endswith("]"):
        return []
    if kind == "tuple":
        return tuple(_zero(component) for component in abi_type["components"])
    return {"address": ZERO_ADDRESS, "bool": False, "string": "", "bytes": b""}.get(kind, 0)


def _call(function, *args):
    """Call a contract function with `args`, then zero values for any further parameters: a
    role check comes before any argument is used, so only the caller matters."""
    [abi] = [f for f in function.contract.abi if f.get("name") == function.fn_ast.name]
    return function(*args, *(_zero(p) for p in abi["inputs"][len(args):]))


def _restricted(s: System, caller: str) -> dict:
    """contract -> function -> (call, reason for a caller without the role). Every
    state-changing function outside PERMISSIONLESS must be here (checked against the ABIs)."""
    params = params_tuple(default_params(taker_fee=0, maker_fee=0))
    feed = s.aggregators[BTC].address
    ownership = {
        "transfer_ownership": (lambda c: c.transfer_ownership(caller), OWNER_ONLY),
        "accept_ownership": (lambda c: c.accept_ownership(), NOT_NEW_OWNER),
    }
    return {
        "vault": {
            "settle": (
                lambda c: _call(c.settle, caller, 0, 10 * WAD, -10 * WAD), "vault: caller is not the exchange"
            ),
            "settle_pair": (
                lambda c: c.settle_pair(s.owner, 0, caller, 0, -WAD, WAD, 0), "vault: caller is not the liquidator"
            ),
            "write_off": (lambda c: c.write_off(s.owner, 0, WAD), "vault: caller is not the liquidator"),
            "deposit_insurance": (lambda c: c.deposit_insurance(USDC), "vault: caller is not the insurance fund"),
            "withdraw_insurance": (
                lambda c: c.withdraw_insurance(caller, 1), "vault: caller is not the insurance fund"
            ),
            "deposit_liquidity": (lambda c: c.deposit_liquidity(USDC), "vault: caller is not the liquidity vault"),
            "withdraw_liquidity": (
                lambda c: c.withdraw_liquidity(caller, 1), "vault: caller is not the liquidity vault"
            ),
            "withdraw_fees": (lambda c: c.withdraw_fees(caller, 1), "vault: caller is not the fee receiver"),
            "escrow_fee": (lambda c: c.escrow_fee(s.owner, 0, WAD), "vault: caller is not the order book"),
            "release_fee": (lambda c: c.release_fee(caller, 0, WAD), "vault: caller is not the order book"),
            "set_exchange": (lambda c: c.set_exchange(caller), OWNER_ONLY),
            "set_order_book": (lambda c: c.set_order_book(caller), OWNER_ONLY),
            "set_liquidity_vault": (lambda c: c.set_liquidity_vault(caller), OWNER_ONLY),
            "set_liquidator": (lambda c: c.set_liquidator(caller), OWNER_ONLY),
            "set_insurance_fund": (lambda c: c.set_insurance_fund(caller), OWNER_ONLY),
            "set_fee_receiver": (lambda c: c.set_fee_receiver(caller), OWNER_ONLY),
            **ownership,
        },
        "exchange": {
            "list_market": (lambda c: c.list_market(3, "X-USD", [(feed, HEARTBEAT)], 0, params), OWNER_ONLY),
            "set_market_params": (lambda c: c.set_market_params(BTC, params), OWNER_ONLY),
            "set_global_params": (lambda c: c.set_global_params(0, WAD, 0, 0), OWNER_ONLY),
            "set_liquidator": (lambda c: c.set_liquidator(caller), OWNER_ONLY),
            "set_order_book": (lambda c: c.set_order_book(caller), OWNER_ONLY),
            "set_guardian": (lambda c: c.set_guardian(caller), OWNER_ONLY),
            "execute_trade": (
                lambda c: _call(c.execute_trade, s.owner, 0, BTC, WAD, MAX_UINT, usd(40_000)),
                "exchange: caller is not the order book",
            ),
            "set_paused": (lambda c: c.set_paused(True), "exchange: caller is not the guardian"),
            "close_for": (
                lambda c: c.close_for(s.owner, 0, BTC, -WAD, 1), "exchange: caller is not the liquidator"
            ),
            **ownership,
        },
        "oracle": {
            "set_configurator": (lambda c: c.set_configurator(caller), OWNER_ONLY),
            "set_feeds": (lambda c: c.set_feeds(BTC, [(feed, 1)], 0), OWNER_ONLY),
            **ownership,
        },
        "liquidity_vault": {
            "set_max_oi_ratio": (lambda c: c.set_max_oi_ratio(WAD), OWNER_ONLY),
            "set_lp_params": (lambda c: c.set_lp_params(TEST_LP_PARAMS.as_tuple()), OWNER_ONLY),
            "set_lp_executor": (lambda c: c.set_lp_executor(caller, True), OWNER_ONLY),
            # the owner's seeding is the only synchronous deposit; nobody redeems synchronously
            "deposit": (lambda c: c.deposit(USDC, caller), "liquidity vault: deposits are two-step, use request_deposit"),
            "mint": (lambda c: c.mint(WAD, caller), "liquidity vault: deposits are two-step, use request_deposit"),
            "withdraw": (
                lambda c: c.withdraw(USDC, caller, caller), "liquidity vault: redemptions are two-step, use request_redeem"
            ),
            "redeem": (
                lambda c: c.redeem(WAD, caller, caller), "liquidity vault: redemptions are two-step, use request_redeem"
            ),
            **ownership,
        },
        "liquidator": {
            "auto_deleverage": (
                lambda c: c.auto_deleverage(BTC, [], s.owner, 0), "liquidator: caller is not an ADL keeper"
            ),
            "set_adl_keeper": (lambda c: c.set_adl_keeper(caller, True), OWNER_ONLY),
            "set_pnl_factors": (lambda c: c.set_pnl_factors(WAD, WAD // 2), OWNER_ONLY),
            "set_liquidation_params": (lambda c: c.set_liquidation_params(WAD, 86_400), OWNER_ONLY),
            **ownership,
        },
        "insurance_fund": {
            "withdraw_surplus": (lambda c: c.withdraw_surplus(caller, 1), OWNER_ONLY),
            "set_target": (lambda c: c.set_target(0), OWNER_ONLY),
            **ownership,
        },
        "order_book": {
            "set_order_params": (lambda c: c.set_order_params((600, 86_400, WAD, 1)), OWNER_ONLY),
            "execute_order_in_batch": (
                lambda c: _call(c.execute_order_in_batch, 0, [1], caller), "order: only execute_orders calls this"
            ),
            **ownership,
        },
    }


def admin_state(s: System, *people) -> tuple:
    """Every role, wiring and parameter an admin call could change."""
    c = {name: getattr(s, name) for name in CONTRACTS}
    return (
        [(c[n].owner(), c[n].pending_owner()) for n in CONTRACTS],
        (s.vault.exchange(), s.vault.liquidity_vault(), s.vault.liquidator(), s.vault.insurance_fund()),
        (s.vault.fee_receiver(), s.exchange.liquidator(), s.exchange.guardian(), s.exchange.paused()),
        (s.vault.order_book(), s.exchange.order_book(), tuple(s.order_book.order_params())),
        [tuple(s.exchange.market_params(m)) for m in range(4)],
        (s.exchange.insurance_fee_share(), s.exchange.protocol_fee_share(), s.exchange.keeper_min_reward()),
        s.exchange.keeper_reward_share(),
        (s.exchange.market_count(), s.oracle.configurator(), s.oracle.sequencer_feed(), s.oracle.grace_period()),
        [tuple(tuple(f) for f in s.oracle.feeds(m)) for m in range(4)],
        (s.liquidity_vault.max_oi_ratio(), s.liquidator.max_pnl_factor(), s.liquidator.target_pnl_factor()),
        [s.liquidator.adl_keeper(p) for p in people],
        s.insurance_fund.target(),
        snapshot(s, *people),
    )


def state_changing_functions(contract) -> set[str]:
    return {
        f["name"]
        for f in contract.abi
        if f["type"] == "function" and f["stateMutability"] in ("nonpayable", "payable")
    }


@pytest.mark.parametrize("name", CONTRACTS)
def test_every_admin_and_role_function_rejects_everyone_else(
    system, name, attacker, guardian, adl_keeper, trader, lp, keeper
):
    """The ABI of each contract is enumerated: every state-changing function is either
    permissionless or in the restricted table, and every restricted one rejects, with its
    reason, every caller without the role - an outsider, the guardian, an ADL keeper, traders,
    LPs, keepers and each other protocol contract - and changes nothing. No contract exports
    `renounce_ownership`."""
    s = system
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)
    s.lp_deposit(lp, 10_000)
    contract = getattr(s, name)
    functions = state_changing_functions(contract)
    assert "renounce_ownership" not in functions
    restricted = _restricted(s, attacker)[name]
    assert functions == PERMISSIONLESS[name] | set(restricted), "unclassified function"

    # who legitimately holds each role (they are tested elsewhere, not here)
    allowed = {
        ("vault", "settle"): {s.exchange.address},
        ("vault", "settle_pair"): {s.liquidator.address},
        ("vault", "write_off"): {s.liquidator.address},
        ("vault", "deposit_insurance"): {s.insurance_fund.address},
        ("vault", "withdraw_insurance"): {s.insurance_fund.address},
        ("vault", "deposit_liquidity"): {s.liquidity_vault.address},
        ("vault", "withdraw_liquidity"): {s.liquidity_vault.address},
        ("vault", "escrow_fee"): {s.order_book.address},
        ("vault", "release_fee"): {s.order_book.address},
        ("exchange", "execute_trade"): {s.order_book.address},
        ("exchange", "set_paused"): {guardian},
        ("exchange", "close_for"): {s.liquidator.address},
        ("oracle", "set_feeds"): {s.exchange.address},
        ("liquidator", "auto_deleverage"): {adl_keeper},
        ("order_book", "execute_order_in_batch"): {s.order_book.address},
    }
    people = [attacker, guardian, adl_keeper, trader, lp, keeper]
    protocol = [getattr(s, n).address for n in CONTRACTS]
    before = admin_state(s, *people)
    calls = 0
    for caller in people + protocol:
        for function, (call, reason) in _restricted(s, caller)[name].items():
            if caller in allowed.get((name, function), ()):
                continue
            with boa.reverts(reason), boa.env.prank(caller):
                call(contract)
            calls += 1
    assert calls >= len(restricted) * (len(people) + len(protocol) - 1)
    assert admin_state(s, *people) == before


@pytest.mark.parametrize("name", CONTRACTS)
def test_ownership_transfer_is_two_step_on_every_contract(system, name, attacker, lp):
    """On every contract the owner only nominates; until the nominee accepts, the old owner is
    still in charge and nobody else (the attacker, the nominee through transfer_ownership) can
    take over; after acceptance only the new owner administers."""
    s = system
    contract = getattr(s, name)
    new_owner = lp
    with boa.env.prank(s.owner):
        contract.transfer_ownership(new_owner)
    assert (contract.owner(), contract.pending_owner()) == (s.owner, new_owner)
    with boa.reverts(NOT_NEW_OWNER), boa.env.prank(attacker):
        contract.accept_ownership()
    with boa.reverts(OWNER_ONLY), boa.env.prank(new_owner):  # nominated is not owner yet
        contract.transfer_ownership(attacker)
    with boa.env.prank(s.owner):  # the old owner may still re-nominate (here: the same one)
        contract.transfer_ownership(new_owner)

    with boa.env.prank(new_owner):
        contract.accept_ownership()
    assert (contract.owner(), contract.pending_owner()) == (new_owner, ZERO_ADDRESS)
    with boa.reverts(OWNER_ONLY), boa.env.prank(s.owner):
        contract.transfer_ownership(s.owner)
    with boa.reverts(NOT_NEW_OWNER), boa.env.prank(new_owner):  # no second acceptance
        contract.accept_ownership()
    with boa.env.prank(new_owner):  # hand it back, so the teardown's model stays valid
        contract.transfer_ownership(s.owner)
    with boa.env.prank(s.owner):
        contract.accept_ownership()
    assert contract.owner() == s.owner


def test_wiring_is_set_once_and_never_to_zero(system, attacker):
    """The contracts that can move cash are wired once: even the owner cannot re-point the
    vault's exchange, liquidity vault, liquidator, insurance fund or order book, nor the
    exchange's liquidator or order book. A fresh, unwired vault and exchange refuse the zero
    address."""
    s = system
    before = admin_state(s)
    once = [
        (s.vault.set_exchange, "vault: exchange already set"),
        (s.vault.set_liquidity_vault, "vault: liquidity vault already set"),
        (s.vault.set_liquidator, "vault: liquidator already set"),
        (s.vault.set_insurance_fund, "vault: insurance fund already set"),
        (s.vault.set_order_book, "vault: order book already set"),
        (s.exchange.set_liquidator, "exchange: liquidator already set"),
        (s.exchange.set_order_book, "exchange: order book already set"),
    ]
    for setter, reason in once:
        for target in (attacker, ZERO_ADDRESS, s.owner):
            with boa.reverts(reason), boa.env.prank(s.owner):
                setter(target)
    assert admin_state(s) == before

    with boa.env.prank(s.owner):
        vault = s.vault.deployer.deploy(s.usdc.address)
        exchange = s.exchange.deployer.deploy(vault.address, s.oracle.address)
        vault_setters = (vault.set_exchange, vault.set_liquidity_vault, vault.set_liquidator, vault.set_insurance_fund)
        for setter in (*vault_setters, vault.set_order_book, vault.set_fee_receiver):
            with boa.reverts("vault: zero address"):
                setter(ZERO_ADDRESS)
        for setter in (exchange.set_liquidator, exchange.set_order_book):
            with boa.reverts("exchange: zero address"):
                setter(ZERO_ADDRESS)
        vault.set_exchange(exchange.address)
        with boa.reverts("vault: exchange already set"):
            vault.set_exchange(attacker)
    assert vault.exchange() == exchange.address


def test_only_adl_keepers_deleverage_not_even_the_owner(system, adl_keeper, attacker):
    """The owner is not an ADL keeper by holding the keys, and a revoked keeper is out."""
    s = system
    with boa.reverts("liquidator: caller is not an ADL keeper"), boa.env.prank(s.owner):
        s.liquidator.auto_deleverage(BTC, [], attacker, 0)
    with boa.reverts("liquidator: no ADL trigger"), boa.env.prank(adl_keeper):  # past the role check
        s.liquidator.auto_deleverage(BTC, [], attacker, 0)
    with boa.env.prank(s.owner):
        s.liquidator.set_adl_keeper(adl_keeper, False)
    with boa.reverts("liquidator: caller is not an ADL keeper"), boa.env.prank(adl_keeper):
        s.liquidator.auto_deleverage(BTC, [], attacker, 0)


def test_guardian_can_pause_but_cannot_move_funds(system, guardian, trader, lp):
    """The guardian's only power is reduce-only mode. It cannot settle cash, pay itself from the
    liquidity vault, the insurance fund or the fee receiver, close anyone's position, redeem
    anyone's LP shares, or withdraw what it does not own."""
    s = system
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)
    s.lp_deposit(lp, 10_000)
    s.donate(lp, 1_000)
    with boa.env.prank(guardian):
        s.exchange.set_paused(True)
        with boa.reverts("exchange: only the owner unpauses"):  # that loosens risk
            s.exchange.set_paused(False)
    with boa.env.prank(s.owner):
        s.exchange.set_paused(False)
    before = snapshot(s, guardian)
    attempts = [
        (lambda: _call(s.vault.settle, guardian, 0, WAD, -WAD), "vault: caller is not the exchange"),
        (lambda: s.vault.settle_pair(trader, 0, guardian, 0, -WAD, WAD, 0), "vault: caller is not the liquidator"),
        (lambda: s.vault.withdraw_liquidity(guardian, USDC), "vault: caller is not the liquidity vault"),
        (lambda: s.vault.withdraw_insurance(guardian, USDC), "vault: caller is not the insurance fund"),
        (lambda: s.vault.withdraw_fees(guardian, USDC), "vault: caller is not the fee receiver"),
        (lambda: s.insurance_fund.withdraw_surplus(guardian, USDC), OWNER_ONLY),
        (lambda: s.exchange.close_for(trader, 0, BTC, -WAD, 2), "exchange: caller is not the liquidator"),
        (lambda: s.liquidity_vault.redeem(WAD, guardian, lp), "liquidity vault: redemptions are two-step, use request_redeem"),
        (lambda: s.liquidity_vault.request_redeem(WAD, guardian), "erc20: transfer amount exceeds balance"),
        (lambda: s.liquidity_vault.withdraw(USDC, guardian, lp), "liquidity vault: redemptions are two-step, use request_redeem"),
        (lambda: s.vault.withdraw(0, USDC), "vault: insufficient free collateral"),
        (lambda: s.exchange.set_guardian(guardian), OWNER_ONLY),
        (lambda: s.exchange.set_market_params(BTC, params_tuple(default_params())), OWNER_ONLY),
    ]
    for call, reason in attempts:
        with boa.reverts(reason), boa.env.prank(guardian):
            call()
    assert snapshot(s, guardian) == before


def test_pause_blocks_new_risk_but_not_liquidations_or_exits(system, guardian, trader, other_trader, keeper, lp):
    """In reduce-only mode nobody adds risk, but an unhealthy account is still liquidated,
    positions still close, free collateral and LP capital still leave, and deposits arrive."""
    s = system
    deepen(s)  # whole slices liquidate at one index
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)
    s.deposit(other_trader, 2_200)
    s.trade(other_trader, BTC, WAD)
    s.lp_deposit(lp, 10_000)
    with boa.env.prank(guardian):
        s.exchange.set_paused(True)
    s.model.paused = True

    for size in (WAD // 10, -2 * WAD):  # increase, flip
        with pytest.raises(ModelRevert, match="exchange: paused, reduce-only"):
            s.trade(trader, BTC, size)
    with pytest.raises(ModelRevert, match="exchange: paused, reduce-only"):
        s.trade(lp, ETH, WAD)  # a new position, from a fresh account

    publish(s, BTC, usd(39_000))
    s.liquidate(keeper, other_trader)
    assert s.exchange.position_state(other_trader, 0, BTC)[0] == 0
    s.trade(trader, BTC, -WAD // 2)
    s.trade(trader, BTC, -WAD // 2)
    s.withdraw(trader, s.exchange.withdrawable(trader, 0) // 10**12)
    s.deposit(trader, 100)
    s.lp_redeem(lp, s.liquidity_vault.balanceOf(lp) // 2)
    s.lp_deposit(lp, 1_000)


# ============================================================================================
# skew manipulation and keeper griefing
# ============================================================================================


def test_flash_skew_push_costs_the_fees_and_cannot_liquidate_a_healthy_account(system, trader, attacker):
    """An attacker sells 100 BTC and buys them back in the same block. The mark falls ~10 %,
    which would wipe out a 17x long valued at the mark, but health is valued at the index: the
    victim's equity and requirements do not move by a wei, it cannot be liquidated, and the
    attacker is poorer by at least the two fees (the fill price is path-independent, so the
    round trip itself realizes nothing)."""
    s = system
    victim = trader
    s.deposit(victim, 2_300)
    s.trade(victim, BTC, WAD)
    # a second later, the price that the attacker's orders fill at: both fills and the
    # liquidation attempt between them happen in that second (orders committed earlier can
    # all execute at the same round), so no funding accrues during the push
    s.warp(1)
    publish(s, BTC, usd(39_000))
    health = s.exchange.account_state(victim, 0)
    assert health[1] - health[3] < usd(100)  # equity - maintenance: close to the edge
    assert not s.liquidator.is_liquidatable(victim, 0)

    s.deposit(attacker, 600_000)
    cash_before = s.vault.cash(attacker, 0)
    push = s.trade(attacker, BTC, -100 * WAD)
    index, mark = s.exchange.index_price(BTC), s.exchange.mark_price(BTC)
    assert mark < index * 91 // 100  # the skew of -99 BTC puts the mark ~10 % under the index
    assert s.exchange.account_state(victim, 0) == health  # valued at the index: unchanged
    assert not s.liquidator.is_liquidatable(victim, 0)
    with pytest.raises(ModelRevert, match="liquidator: account healthy"):
        s.liquidate(attacker, victim)
    back = s.trade(attacker, BTC, 100 * WAD)

    assert back.fill_price == push.fill_price  # path independence: no gain from the round trip
    assert s.exchange.position_state(attacker, 0, BTC)[0] == 0
    cost = cash_before - s.vault.cash(attacker, 0)
    assert cost >= push.fee + back.fee > 0
    assert cost - (push.fee + back.fee) <= 1  # plus at most a wei of rounding
    assert s.exchange.account_state(victim, 0) == health
    assert not s.liquidator.is_liquidatable(victim, 0)


@pytest.fixture
def keeper_floor(system):
    """A 5 USD keeper reward floor (part of every maintenance requirement)."""
    system.set_globals(keeper_min_reward=5 * WAD)
    return 5 * WAD


def test_liquidate_many_with_junk_entries_never_reverts_and_pays_only_real_liquidations(
    system, keeper_floor, keeper
):
    """A 50-entry batch of duplicates, healthy accounts, never-used addresses, huge
    sub-account ids and an already-liquidated account liquidates exactly the two unhealthy
    accounts once each, pays the keeper for those two only, and a replay pays nothing."""
    s = system
    deepen(s)  # whole slices liquidate at one index
    victims = [boa.env.generate_address(f"victim{i}") for i in range(2)]
    healthy = [boa.env.generate_address(f"healthy{i}") for i in range(2)]
    for who in victims:
        s.deposit(who, 2_200)
        s.trade(who, BTC, WAD)
    s.deposit(healthy[0], 10_000)
    s.trade(healthy[0], BTC, WAD)
    s.deposit(healthy[1], 1_000)  # cash, no position
    done = boa.env.generate_address("already_liquidated")
    s.deposit(done, 2_200)
    s.trade(done, ETH, 10 * WAD)
    publish(s, ETH, usd(1_800))
    s.liquidate(keeper, done)
    keeper_cash = s.vault.cash(keeper, 0)
    publish(s, BTC, usd(39_000))
    assert [s.liquidator.is_liquidatable(w, 0) for w in victims + healthy + [done]] == [True, True, False, False, False]

    junk = [(victims[0], 0), (victims[0], 0), (healthy[0], 0), (healthy[1], 0), (done, 0), (victims[1], 0)]
    junk += [(victims[1], 0), (victims[0], MAX_UINT), (ZERO_ADDRESS, 0), (s.liquidity_vault.address, 0)]
    junk += [(boa.env.generate_address(f"nobody{i}"), i * 2**200) for i in range(40)]
    assert len(junk) == 50
    assert s.liquidate_many(keeper, junk) == 2
    liquidations = [e for e in s.last_logs if type(e).__name__ == "Liquidation"]
    [batch] = [e for e in s.last_logs if type(e).__name__ == "LiquidationBatch"]
    assert (batch.checked, batch.liquidated) == (50, 2)
    assert sorted(e.owner for e in liquidations) == sorted(victims)
    assert s.vault.cash(keeper, 0) - keeper_cash == sum(e.keeper_reward for e in liquidations)
    assert all(e.keeper_reward >= keeper_floor for e in liquidations)

    keeper_cash = s.vault.cash(keeper, 0)
    assert s.liquidate_many(keeper, junk) == 0  # a replay: nothing to do, nothing paid
    assert s.vault.cash(keeper, 0) == keeper_cash


def test_dust_position_still_pays_the_keeper(system, keeper_floor, trader, keeper):
    """Griefing with dust positions does not leave keepers unpaid: the keeper floor is part of
    every maintenance requirement, so a dust account becomes liquidatable while its equity can
    still pay (almost all of) the floor."""
    s = system
    s.deposit(trader, 6)
    s.trade(trader, BTC, WAD // 10_000)  # 4 USD of BTC
    s.withdraw(trader, 780_000)  # leaves equity just above the 5 USD floor
    _, equity, _, maintenance = s.exchange.account_state(trader, 0)
    assert maintenance > keeper_floor and equity - maintenance < usd(0.1)
    publish(s, BTC, usd(38_000))
    assert s.liquidator.is_liquidatable(trader, 0)
    result = s.liquidate(keeper, trader)
    assert result.fully_closed
    assert s.vault.cash(keeper, 0) == result.keeper_reward > keeper_floor * 9 // 10


def test_self_liquidation_earns_nothing(system, keeper_floor, trader):
    """Liquidating your own account to collect the keeper reward pays the reward out of your own
    equity back to you; the insurance fund keeps the rest of the penalty, so it ends worse than
    simply closing the position."""
    s = system
    deepen(s)  # whole slices liquidate at one index
    s.deposit(trader, 2_200)
    s.trade(trader, BTC, WAD)
    publish(s, BTC, usd(39_000))
    with fresh(s) as voluntary:
        voluntary.trade(trader, BTC, -WAD)
        cash_if_closed = voluntary.vault.cash(trader, 0)
    insurance = s.vault.insurance_cash()
    result = s.liquidate(trader, trader)
    assert s.vault.cash(trader, 0) == result.equity_after + result.keeper_reward
    assert s.vault.insurance_cash() - insurance == result.to_insurance > 0
    assert s.vault.cash(trader, 0) < cash_if_closed


def test_first_depositor_cannot_inflate_the_share_price(empty_system, attacker, lp):
    """The classic ERC-4626 attack on an empty vault: deposit one token unit, inflate the value
    per share, and let the next LP's deposit round down to nothing. A token gift to the vault
    is not the liquidity vault's value at all; losing money to the vault needs open interest,
    which the global cap allows only against real liquidity (max_oi_ratio x the value), and
    the stake that room takes dilutes the inflation: the victim keeps its deposit to within one
    token unit and the attacker loses what it put in."""
    s = empty_system
    assert s.liquidity_vault.totalSupply() == 0
    s.lp_deposit(attacker, Decimal("0.000001"))  # one token unit -> 10**12 shares
    assert s.liquidity_vault.balanceOf(attacker) == 10**12

    gift = 50_000 * USDC
    s.fund(attacker, 50_000)
    with boa.env.prank(attacker):
        s.usdc.transfer(s.vault.address, gift)  # a gift: nobody's cash, not the LP's value
    s.gifts = gift
    assert s.liquidity_vault.totalAssets() == 1

    # inflating for real means losing money to the vault through a trade; one token unit of
    # liquidity leaves no room for one
    s.deposit(attacker, 20_000)
    with pytest.raises(OrderCancelled, match="order: open interest cap, room left 0 USD"):
        s.trade(attacker, BTC, WAD)

    # the room for a 1 BTC round trip (40,000 USD at 100x) costs a 400 USD stake; then lose
    # 4,000+ USD to the liquidity vault
    s.lp_deposit(attacker, 400)
    s.refresh_open_interest_room()  # as the keeper does before executing
    s.trade(attacker, BTC, WAD)
    publish(s, BTC, usd(36_000))
    s.trade(attacker, BTC, -WAD)
    inflated = s.liquidity_vault.totalAssets()
    assert inflated > 4_400 * USDC

    deposit = 5_000 * USDC
    s.lp_deposit(lp, 5_000)
    victim_value = s.liquidity_vault.convertToAssets(s.liquidity_vault.balanceOf(lp))
    attacker_value = s.liquidity_vault.convertToAssets(s.liquidity_vault.balanceOf(attacker))
    assert deposit - 1 <= victim_value <= deposit
    assert attacker_value <= inflated  # nothing gained: it lost 4,000+ USD to get here


# ============================================================================================
# documented limitations (docs/SECURITY.md)
# ============================================================================================


def test_limitation_fee_of_an_order_crossing_zero_skew_depends_on_the_split(system, trader, other_trader):
    """Prices are path-independent, fees are not when an order crosses zero skew: selling 2 BTC
    against a skew of +1 in one order pays (maker + taker) at the average price 40,000, while
    selling 1 + 1 pays maker at 40,020 and taker at 39,980 - 0.016 USD less. The difference is
    (taker - maker) x the crossed size x the impact, at most a fraction of a basis point."""
    s = system
    s.deposit(other_trader, 10_000)
    s.trade(other_trader, BTC, WAD)
    s.deposit(trader, 10_000)
    with fresh(s) as one_order:
        whole = one_order.trade(trader, BTC, -2 * WAD)
    first = s.trade(trader, BTC, -WAD)
    second = s.trade(trader, BTC, -WAD)
    assert whole.fill_price * 2 == first.fill_price + second.fill_price == usd(80_000)  # same proceeds
    assert (whole.fee, first.fee, second.fee) == (usd(48), usd(8.004), usd(39.98))
    assert whole.fee - (first.fee + second.fee) == usd(0.016)


def test_global_open_interest_cap_binds_every_risk_increasing_execution(system, trader, other_trader, lp):
    """Finding 6: trades faced only the per-market caps (409 BTC opened past the global cap).
    Now every execution that grows a position must fit in max_oi_ratio x the liquidity
    vault's value (net of deficits) - the open interest: an order that would not is cancelled
    with the room left, in USD; reductions always execute; and LP redemptions still refuse to
    leave open interest above the cap."""
    s = system
    s.set_max_oi_ratio(WAD // 10)
    room = s.refresh_open_interest_room()
    assert room == s.exchange.liquidity_vault_value() // 10 - s.exchange.open_interest_notional() > 0
    s.deposit(trader, 200_000)
    s.deposit(other_trader, 200_000)
    too_big = room // 40_000 + WAD // 100  # just past the room at 40,000 USD
    with pytest.raises(OrderCancelled, match=f"order: open interest cap, room left {room // WAD} USD"):
        s.trade(trader, BTC, too_big)
    assert s.exchange.open_interest(BTC) == (0, 0)

    fits = room // 40_000 - WAD // 100
    s.trade(trader, BTC, fits)
    left, _ = s.order_book.open_interest_room()
    assert left == s.model.open_interest_room() < 40_000 * WAD // 100 * 2
    # the other side grows open interest too (|position| grows), so it needs room as well
    with pytest.raises(OrderCancelled, match="order: open interest cap, room left"):
        s.trade(other_trader, BTC, -WAD)
    # a reduction always executes; its room comes back at the next refresh (the keeper's, or
    # the first execution a minute after the last one)
    s.trade(trader, BTC, -fits // 2)
    assert s.order_book.open_interest_room()[0] == left
    assert s.refresh_open_interest_room() > left
    s.trade(trader, BTC, WAD // 100)
    s.warp(61)
    stale_since = s.order_book.open_interest_room()[1]
    s.trade(other_trader, BTC, -WAD // 100)  # this execution recomputed the room itself
    assert s.order_book.open_interest_room()[1] > stale_since + 60

    # redemptions keep the cap: an LP whose stake the open interest uses cannot leave
    s.lp_deposit(lp, 50_000)
    s.trade(trader, BTC, s.refresh_open_interest_room() // 40_000 - WAD // 100)
    with pytest.raises(LpRequestCancelled, match="open interest cap"):
        s.lp_redeem(lp, s.liquidity_vault.balanceOf(lp))
    s.trade(trader, BTC, -s.exchange.position_state(trader, 0, BTC)[0])
    s.lp_redeem(lp, s.liquidity_vault.balanceOf(lp))


def test_limitation_funding_dust_stays_in_the_funding_pool(system, trader, other_trader):
    """Funding is charged rounded up and paid rounded down, so after every position has closed
    a few wei stay in the funding pool's cash, which no function pays out."""
    s = system
    s.deposit(trader, 50_000)
    s.deposit(other_trader, 50_000)
    s.trade(trader, BTC, 1_234_567_891_234_567_891)
    s.trade(other_trader, BTC, -333_333_333_333_333_333)
    for _ in range(3):
        s.warp(3_333)
        refresh(s)
        s.exchange.touch_market(BTC)
        s.model._accrue(BTC)
    s.trade(trader, BTC, -1_234_567_891_234_567_891)
    s.trade(other_trader, BTC, 333_333_333_333_333_333)
    assert s.exchange.open_interest(BTC) == (0, 0)
    assert 0 < s.vault.funding_pool_cash() <= s.model.funding_settlements


def test_each_bankrupt_account_keeps_its_own_losing_side(system, trader, other_trader, keeper):
    """A long goes bankrupt, then a short in the same market. Each account's deficit record
    keeps its own losing side, so ADL takes the long's deficit only from profitable shorts and
    the short's only from profitable longs. (Before, the market kept one side, the latest, and
    the long's deficit would have been taken from the longs' profits too.)"""
    s = system
    deepen(s)
    s.set_globals(insurance_fee_share=0)  # an empty insurance fund
    s.deposit(trader, 2_200)
    s.trade(trader, BTC, WAD)
    publish(s, BTC, usd(37_000))
    s.liquidate(keeper, trader)
    long_deficit, side, _ = s.liquidator.deficit_record(trader, 0, BTC)
    assert long_deficit == -s.vault.cash(trader, 0) > 0 and side == 1

    s.deposit(other_trader, 2_200)
    s.trade(other_trader, BTC, -WAD)
    publish(s, BTC, usd(40_000))
    s.liquidate(keeper, other_trader)
    short_deficit, side, _ = s.liquidator.deficit_record(other_trader, 0, BTC)
    assert short_deficit == -s.vault.cash(other_trader, 0) > 0 and side == -1
    assert s.liquidator.deficit_record(trader, 0, BTC)[:2] == (long_deficit, 1)  # untouched
    assert s.liquidator.uncovered_deficit(BTC) == s.liquidator.total_uncovered_deficit() == long_deficit + short_deficit
    # the liquidity vault's value already nets both
    assert s.exchange.liquidity_vault_value() == s.model.liquidity_vault_value()


# ============================================================================================
# bugs found (failing until fixed)
# ============================================================================================


def test_adl_score_of_a_dust_short_with_zero_cost_basis(system, attacker):
    """Found by this file, fixed: in a market priced under 1 USD a short of a few wei has a cost basis of 0 (the
    basis of a short rounds up, i.e. toward zero, and |size x price| is under one wei), and
    `Liquidator._adl_score` divides the PnL by |basis|: `adl_score` reverts (division by
    zero) for a valid position that can never be profitable. `perpdex.model.adl_score` raises
    ZeroDivisionError the same way, so an ADL keeper that scores every position on a side
    before keeping the profitable ones can be stopped by anyone for the price of a 1-wei short.
    Now: a score (a losing position scores at most 0), on chain and in the model."""
    s = system
    list_single_feed(s, 3, 10_000_000)  # 0.10 USD, a DOGE-like market
    s.deposit(attacker, 1)
    s.trade(attacker, 3, -1)
    size, basis, _ = s.exchange.position_state(attacker, 0, 3)
    assert (size, basis) == (-1, 0)
    assert s.exchange.position(attacker, 0, 3)[2] < 0  # unrealized PnL: negative at any price
    assert s.liquidator.adl_score(attacker, 0, 3) <= 0
    assert s.model.adl_score((attacker, 0), 3)[0] == s.liquidator.adl_score(attacker, 0, 3)


def test_lp_cannot_sandwich_its_own_redemption_with_a_skew_push(system, attacker):
    """Found by this file, fixed (docs/SECURITY.md finding 2). When the liquidity vault's
    -skew position was marked at the index, the price impact a trader pays to push the skew
    counted as the vault's profit while the skew stayed pushed, and came back in full when it
    was pushed back (path-independent fills). An attacker holding half of the LP shares bought
    100 BTC, redeemed at the inflated share price, sold the 100 BTC back and ended ~96,640 USD
    richer, the other LP that much poorer. Now the vault is valued at the closing price
    `index x (1 + skew / (2 x skew_scale))`: at one index no trade moves the value, so the
    round trip pays only its fees."""
    s = system
    s.lp_deposit(attacker, 1_000_000)  # half of the shares; the world's LP holds the other half
    shares = s.liquidity_vault.balanceOf(attacker)
    s.deposit(attacker, 1_000_000)  # trading collateral (a flash loan would do)

    def wealth(lp_shares: int) -> int:
        """Tokens + free vault cash + what the LP shares redeem for, in token units."""
        lp_value = s.liquidity_vault.convertToAssets(lp_shares) if lp_shares else 0
        return s.usdc.balanceOf(attacker) + s.vault.cash(attacker, 0) // 10**12 + lp_value

    before = wealth(shares)
    value_before = s.exchange.liquidity_vault_value()
    s.trade(attacker, BTC, 100 * WAD)  # push: the impact the attacker pays
    # the vault's value moved by the fee only (its share of it), not by the impact
    assert s.exchange.liquidity_vault_value() - value_before <= s.model.last_trade.fee
    s.lp_redeem(attacker, shares)
    s.trade(attacker, BTC, -100 * WAD)  # pull back at the same average price
    assert s.exchange.skew(BTC) == 0
    assert wealth(0) <= before


def test_a_liquidation_sandwiched_by_a_skew_push_costs_the_attacker(system, attacker, trader):
    """Found by this file, fixed (docs/SECURITY.md finding 1). A 100 BTC long is under
    maintenance. An attacker sells 200 BTC (skew +100 -> -100), liquidates the long into the
    push and buys its 200 BTC back. Before, the whole long sold 15 % under the index: the
    attacker gained ~792,000 USD and the long ended bankrupt. Now a liquidation closes at most
    the capacity at one index, 2 x maker fee x skew_scale = 0.4 BTC here, so the round trip
    gains at most index x 0.4 x 200 / 1,000 = 3,200 USD against 8,000 USD of fees: the attacker
    loses money and the long is far from bankrupt (tests/unit/test_hardening.py replays the
    same on config/markets.json's markets, for every push size)."""
    s = system
    victim = trader
    s.deposit(victim, 620_000)
    s.trade(victim, BTC, 100 * WAD)
    publish(s, BTC, usd(38_900))
    assert s.liquidator.is_liquidatable(victim, 0)

    s.deposit(attacker, 2_000_000)
    cash_before = s.vault.cash(attacker, 0)
    s.trade(attacker, BTC, -200 * WAD)  # push the skew against the position to be liquidated
    result = s.liquidate(attacker, victim)  # at most the capacity closes, at the pushed price
    assert s.exchange.position_state(victim, 0, BTC)[0] == 100 * WAD - 4 * WAD // 10
    s.trade(attacker, BTC, 200 * WAD)  # pull the skew back
    assert s.exchange.skew(BTC) == 100 * WAD - 4 * WAD // 10
    gain = s.vault.cash(attacker, 0) - cash_before
    assert gain <= result.keeper_reward, f"attacker gained {gain / WAD:,.0f} USD"
    assert s.vault.cash(victim, 0) > usd(400_000)
