"""Reference model of the liquidity vault's two-step flows (contracts/LiquidityVault.vy).

Mixed into `perpdex.model.ExchangeModel`, like `perpdex.orders.OrderBookMixin`. An LP requests a
deposit (its tokens wait in the liquidity vault contract: `LpState.escrow_tokens`) or a redemption
(its shares wait there: `LpState.locked_shares`); a keeper executes the request at the first
round of every listed market published `min_delay` after it, given here as a `RoundPrice` per
market (what `IndexOracle.round_price` returns for the rounds the keeper names). Deposits are
priced at the vault's value at those rounds without netting outstanding deficits, redemptions
with them netted (the larger and the smaller value). Every method checks everything before it
changes anything, so a refusal (`ModelRevert`) leaves the model as it was, as on-chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perpdex.fixed_point import WAD
from perpdex.orders import RoundPrice

MAX_MIN_DELAY = 600
MAX_MAX_AGE = 12 * 3600
MAX_COOLDOWN = 3600
MAX_EXECUTION_FEE = 50 * 10**6  # asset units (50 USD of a 6-decimal stablecoin)
OPEN_EXECUTION_AFTER = 300  # seconds after `not_before` from which anyone may execute a request

REASON_SYNC_DEPOSIT = "liquidity vault: deposits are two-step, use request_deposit"
REASON_SYNC_REDEEM = "liquidity vault: redemptions are two-step, use request_redeem"
REASON_PREVIEW = "liquidity vault: two-step flows are priced at execution; see convertToShares"


@dataclass(frozen=True)
class LpParams:
    min_delay: int = 1
    max_age: int = 7200
    cooldown: int = 900
    execution_fee: int = 0  # asset units

    def as_tuple(self) -> tuple[int, int, int, int]:
        """The contract's LpParams struct, in field order."""
        return (self.min_delay, self.max_age, self.cooldown, self.execution_fee)


@dataclass(frozen=True)
class LpRequest:
    requester: str
    receiver: str
    redemption: bool
    amount: int  # assets (a deposit, asset units) or shares (a redemption)
    fee: int  # asset units
    not_before: int
    expiry: int

    def as_tuple(self) -> tuple:
        """`LiquidityVault.request(id)`, in field order."""
        return (self.requester, self.receiver, self.redemption, self.amount, self.fee, self.not_before, self.expiry)


@dataclass(frozen=True)
class LpExecution:
    executed: bool
    amount: int = 0  # shares minted (deposit) or assets paid (redemption)
    total_assets: int = 0  # the value the request was priced at, asset units
    deficit: int = 0  # outstanding uncovered deficit at execution (WAD)
    reason: str = ""  # why it was cancelled instead
    fee: int = 0


@dataclass
class LpState:
    params: LpParams = field(default_factory=LpParams)
    requests: dict[int, LpRequest] = field(default_factory=dict)
    last_request_id: int = 0
    escrow_tokens: int = 0  # tokens the liquidity vault contract holds: pending deposits and fees
    locked_shares: int = 0  # shares the liquidity vault contract holds: pending redemptions
    locks: dict[str, tuple[int, int]] = field(default_factory=dict)  # LP -> (shares, cooldown end)
    executors: set[str] = field(default_factory=set)  # `LiquidityVault.lp_executor`


def open_execution_at(request: LpRequest) -> int:
    """When anyone, not only an LP executor, may execute `request`."""
    return request.not_before + OPEN_EXECUTION_AFTER


def _require(condition: bool, reason: str) -> None:
    from perpdex.model import ModelRevert

    if not condition:
        raise ModelRevert(reason)


class LiquidityFlowsMixin:
    """contracts/LiquidityVault.vy's requests over the exchange model (mixed into ExchangeModel)."""

    @property
    def lp(self) -> LpState:
        """This model's request state (created on first use; copied with the model)."""
        state = self.__dict__.get("lp_state")
        if state is None:
            state = self.__dict__["lp_state"] = LpState()
        return state

    # -- parameters and views --------------------------------------------------------------

    def set_lp_params(self, p: LpParams) -> None:
        _require(1 <= p.min_delay <= MAX_MIN_DELAY, "liquidity vault: min delay out of bounds")
        _require(p.min_delay < p.max_age <= MAX_MAX_AGE, "liquidity vault: max age out of bounds")
        _require(0 <= p.cooldown <= MAX_COOLDOWN, "liquidity vault: cooldown out of bounds")
        _require(0 <= p.execution_fee <= MAX_EXECUTION_FEE, "liquidity vault: execution fee above the cap")
        self.lp.params = p

    def set_lp_executor(self, executor: str, allowed: bool) -> None:
        if allowed:
            self.lp.executors.add(executor)
        else:
            self.lp.executors.discard(executor)

    def _check_executor(self, executor: str, r: LpRequest) -> None:
        """LiquidityVault._check_executor: an LP executor from the request's `not_before`,
        anyone from `open_execution_at`."""
        opens = open_execution_at(r)
        _require(executor in self.lp.executors or self.now >= opens,
                 f"liquidity vault: only an LP executor may execute before {opens}")

    def lp_request(self, request_id: int) -> LpRequest:
        request = self.lp.requests.get(request_id)
        _require(request is not None, "liquidity vault: no open request with this id")
        return request

    def lp_locked(self, who: str) -> tuple[int, int]:
        """`LiquidityVault.locked_shares`: shares still in their deposit cooldown and its end."""
        shares, end = self.lp.locks.get(who, (0, 0))
        return (shares, end) if self.now < end else (0, 0)

    def lv_value_at(self, indices: dict[int, int]) -> int:
        """`Exchange.liquidity_vault_value_at`: the vault's value (WAD) at `indices` (market ->
        index), outstanding deficits not netted."""
        saved = self.index
        self.index = {**saved, **indices}
        try:
            return self.liquidity_vault_value() + self.total_uncovered_deficit
        finally:
            self.index = saved

    def lv_free_assets(self) -> int:
        """`LiquidityVault.free_assets`: what could leave now within the cash and the OI cap."""
        from perpdex.fixed_point import mul_div_up
        from perpdex.model import LIQUIDITY_VAULT

        cash = self.cash_of(LIQUIDITY_VAULT)
        if cash <= 0:
            return 0
        total = self.lv_total_assets()
        locked = mul_div_up(self.open_interest_notional(), WAD, self.max_oi_ratio * self.scale)
        return 0 if locked >= total else min(cash // self.scale, total - locked)

    # -- requests ------------------------------------------------------------------------------

    def request_deposit(self, requester: str, assets: int, receiver: str) -> int:
        _require(assets > 0, "liquidity vault: zero amount")
        _require(int(receiver, 16) != 0, "liquidity vault: zero receiver")
        p = self.lp.params
        self.lp.escrow_tokens += assets + p.execution_fee
        return self._store_request(requester, receiver, False, assets, p)

    def request_redeem(self, requester: str, shares: int, receiver: str) -> int:
        _require(shares > 0, "liquidity vault: zero amount")
        _require(int(receiver, 16) != 0, "liquidity vault: zero receiver")
        self._check_unlocked(requester, shares)
        balance = self.lv_shares.get(requester, 0)
        _require(balance >= shares, "erc20: transfer amount exceeds balance")
        p = self.lp.params
        self.lv_shares[requester] = balance - shares
        self.lp.locked_shares += shares
        self.lp.escrow_tokens += p.execution_fee
        return self._store_request(requester, receiver, True, shares, p)

    def _store_request(self, requester: str, receiver: str, redemption: bool, amount: int, p: LpParams) -> int:
        self.lp.last_request_id += 1
        request_id = self.lp.last_request_id
        self.lp.requests[request_id] = LpRequest(
            requester, receiver, redemption, amount, p.execution_fee, self.now + p.min_delay, self.now + p.max_age
        )
        return request_id

    def cancel_lp_request(self, request_id: int, caller: str) -> LpRequest:
        """Anyone, from the request's expiry: assets or shares to the requester, the fee to the caller."""
        r = self.lp_request(request_id)
        _require(self.now >= r.expiry, f"liquidity vault: a request cannot be cancelled before it expires at {r.expiry}")
        self._refund(request_id, r)
        return r

    def _refund(self, request_id: int, r: LpRequest) -> None:
        del self.lp.requests[request_id]
        if r.redemption:
            self.lp.locked_shares -= r.amount
            self.lv_shares[r.requester] = self.lv_shares.get(r.requester, 0) + r.amount
            self.lp.escrow_tokens -= r.fee
        else:
            self.lp.escrow_tokens -= r.amount + r.fee

    # -- execution -----------------------------------------------------------------------------

    def execute_deposit(self, request_id: int, rounds: dict[int, RoundPrice], executor: str) -> LpExecution:
        """Execute at `rounds` (market -> the execution round of each listed market), sent by
        `executor`."""
        from perpdex.model import LIQUIDITY_VAULT

        r = self.lp_request(request_id)
        _require(not r.redemption, "liquidity vault: not a deposit request")
        self._check_executor(executor, r)
        gross = self.lv_value_at(self._round_indices(r, rounds))
        deficit = self.total_uncovered_deficit
        total = max(gross, 0) // self.scale
        shares = self.lv_to_shares(r.amount, total)
        reason = ""
        if total == 0 and self.lv_supply > 0:
            reason = "liquidity vault: insolvent, deposits refused"
        elif shares == 0:
            reason = "liquidity vault: zero shares"
        if reason:
            self._refund(request_id, r)
            return LpExecution(False, 0, total, deficit, reason, r.fee)
        del self.lp.requests[request_id]
        self.lp.escrow_tokens -= r.amount + r.fee
        self.token_balance += r.amount
        self._credit(LIQUIDITY_VAULT, r.amount * self.scale)
        self.lv_supply += shares
        self.lv_shares[r.receiver] = self.lv_shares.get(r.receiver, 0) + shares
        self._lock(r.receiver, shares)
        return LpExecution(True, shares, total, deficit, "", r.fee)

    def execute_redeem(self, request_id: int, rounds: dict[int, RoundPrice], executor: str) -> LpExecution:
        from perpdex.model import LIQUIDITY_VAULT

        r = self.lp_request(request_id)
        _require(r.redemption, "liquidity vault: not a redemption request")
        self._check_executor(executor, r)
        gross = self.lv_value_at(self._round_indices(r, rounds))
        deficit = self.total_uncovered_deficit
        total = max(gross - deficit, 0) // self.scale
        assets = self.lv_to_assets(r.amount, total)
        reason = self._redeem_refusal(assets, total)
        if reason:
            self._refund(request_id, r)
            return LpExecution(False, 0, total, deficit, reason, r.fee)
        del self.lp.requests[request_id]
        self.lp.locked_shares -= r.amount
        self.lp.escrow_tokens -= r.fee
        self.lv_supply -= r.amount
        self.token_balance -= assets
        self._credit(LIQUIDITY_VAULT, -assets * self.scale)
        return LpExecution(True, assets, total, deficit, "", r.fee)

    def _round_indices(self, r: LpRequest, rounds: dict[int, RoundPrice]) -> dict[int, int]:
        """LiquidityVault._value_at's checks: unexpired, one round per listed market, each the
        first published `min_delay` after the request. Market -> the round's index."""
        _require(self.now < r.expiry, "liquidity vault: request expired")
        count = len(self.markets)
        _require(len(rounds) == count,
                 f"liquidity vault: one list of round ids per listed market expected ({count})")
        indices = {}
        for market_id in self.markets:  # listing order, as Exchange.market_ids
            rp = rounds[market_id]
            _require(rp.published >= r.not_before,
                     f"liquidity vault: round of market {market_id} published before the delay ended at {r.not_before}")
            _require(rp.previous_published < r.not_before,
                     f"liquidity vault: not the first round of market {market_id} after the delay")
            indices[market_id] = rp.price
        return indices

    def _redeem_refusal(self, assets: int, total: int) -> str:
        from perpdex.model import LIQUIDITY_VAULT

        if assets == 0:
            return "liquidity vault: zero assets"
        if assets * self.scale > self.cash_of(LIQUIDITY_VAULT):
            return "vault: insufficient liquidity cash"
        if assets > self.token_balance:
            return "vault: insufficient token balance"
        if self.open_interest_notional() * WAD > self.max_oi_ratio * (total - min(total, assets)) * self.scale:
            return "liquidity vault: open interest cap"
        return ""

    # -- cooldown ------------------------------------------------------------------------------

    def _lock(self, receiver: str, shares: int) -> None:
        cooldown = self.lp.params.cooldown
        if cooldown == 0:
            return
        locked, end = self.lp.locks.get(receiver, (0, 0))
        total = shares + (locked if self.now < end else 0)
        self.lp.locks[receiver] = (min(total, 2**216 - 1), self.now + cooldown)

    def _check_unlocked(self, owner: str, amount: int) -> None:
        locked, end = self.lp.locks.get(owner, (0, 0))
        if self.now >= end:
            return
        _require(self.lv_shares.get(owner, 0) >= amount + locked,
                 f"liquidity vault: {locked} shares from a recent deposit are locked until {end}")

    def lp_transfer(self, owner: str, to: str, shares: int) -> None:
        """An ERC-20 transfer of shares (cooldown respected)."""
        self._check_unlocked(owner, shares)
        _require(self.lv_shares.get(owner, 0) >= shares, "erc20: transfer amount exceeds balance")
        self.lv_shares[owner] -= shares
        self.lv_shares[to] = self.lv_shares.get(to, 0) + shares

