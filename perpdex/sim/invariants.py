"""DESIGN.md's invariants 1-5, checked from the contracts' storage during a simulation.

Every check reads the state itself (perpdex.raw_state; a few views for what has no packed
reader), never the keeper's cache, and the accounts' health is valued with the keeper's own
`Snapshot` (the reference model's integer math) over what storage holds.

1. the ledger balances exactly against the vault's token balance;
2. positions are zero-sum (traders' sizes and bases add up to the markets' totals, the masks
   name exactly the open positions);
3. funding is zero-sum (the pool holds what holders still have to collect, plus less than one
   wei per rounded settlement);
4. after the keeper acted: no account at negative equity (but one the keeper cannot touch
   because every market it holds has used up its liquidation capacity at the current index:
   counted, never hidden), no deficit outstanding past its grace period, the deficit records
   add up, the liquidity vault's value nets them, every positive claim is payable;
5. no wrongful action: every liquidated account was liquidatable just before the keeper's
   transaction, ADL took only profit, every fill is within its order's acceptable price at a
   round published no earlier than the order's delay.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from perpdex.fixed_point import WAD
from perpdex.keeper.chain import LogEntry
from perpdex.keeper.core import AccountKey, AccountState, Snapshot
from perpdex.orders import KIND_MARKET
from perpdex.raw_state import RawState, mapping_slot
from perpdex.sim.evm import WRITES

# Liquidator.vy's packing of a deficit record
RECORD_AMOUNT_MASK = 2**192 - 1
RECORD_LONG_BIT = 2**192
RECORD_TIME_SHIFT = 200


class InvariantBroken(AssertionError):
    """An invariant failed at `step` (the simulation's step index)."""

    def __init__(self, step: int, name: str, detail: str):
        super().__init__(f"step {step}: invariant broken: {name} ({detail})")
        self.step, self.name, self.detail = step, name, detail


@dataclass
class InvariantChecker:
    """The checks of one simulation; `checked` counts each passed check by name."""

    deployment: object
    raw: RawState
    token_scale: int = 10**12
    checked: Counter = field(default_factory=Counter)
    settlements: int = 0  # rounded funding settlements so far (Trade and FundingAccrued events)
    capacity_waits: int = 0  # account-checks at negative equity waiting for liquidation capacity
    deficit_accounts: set = field(default_factory=set)  # (owner, sub, market) ever recorded
    commits: dict = field(default_factory=dict)  # order id -> OrderCommitted args
    step: int = 0
    # accounts as last read, and which storage slot belongs to which account (see read_states)
    _states: dict = field(default_factory=dict)
    _slots_of: dict = field(default_factory=dict)
    _slot_owner: dict = field(default_factory=dict)
    _epoch: int = -1

    def ok(self, name: str, condition: bool, detail: str = "") -> None:
        if not condition:
            raise InvariantBroken(self.step, name, detail)
        self.checked[name] += 1

    def read_states(self, accounts: list[AccountKey]) -> dict[AccountKey, AccountState]:
        """The accounts' states from storage, and invariant 2's mask check on each. Inside
        perpdex.sim.evm's interpreter, an account is read again only when a slot of its own
        was written since it was last read (storage that nothing wrote holds what was read, so
        the check's outcome is the same); else, or after `forget`, every account is read."""
        markets = [m.id for m in self.deployment.markets]
        if self._epoch != WRITES.epoch or not WRITES.active:
            self.forget()
            self._epoch = WRITES.epoch
        cache, owner_of = self._states, self._slot_owner
        for written in WRITES.take():
            key = owner_of.get(written)
            if key is not None:
                cache.pop(key, None)
        states = {}
        for key in accounts:
            state = cache.get(key)
            if state is None:
                state = cache[key] = self._read_state(key, markets)
            states[key] = state
        self.checked["2 the open-market mask names the open positions"] += len(accounts) * len(markets)
        return states

    def forget(self) -> None:
        """Read every account again at the next check (its storage may have changed unseen)."""
        self._states.clear()
        WRITES.take()

    def _read_state(self, key: AccountKey, markets: list[int]) -> AccountState:
        raw, (owner, sub) = self.raw, key
        if key not in self._slots_of:
            slots = [(raw.vault, mapping_slot(raw.v["_accounts"], owner, sub))]
            for m in markets:
                slots.append((raw.exchange, mapping_slot(raw.x["_position"], owner, sub, m)))
                slots.append((raw.exchange, mapping_slot(raw.x["_open_notional"], owner, sub, m)))
            self._slots_of[key] = slots
            for slot in slots:
                self._slot_owner[slot] = key
        cash, mask = raw.account(owner, sub)
        state = AccountState(cash)
        for m in markets:
            p = raw.position(owner, sub, m)
            if bool(mask >> m & 1) != (p[0] != 0):
                self.ok("2 the open-market mask names the open positions", False, f"{owner}/{sub} market {m}")
            if p[0] or p[1]:
                state.positions[m] = p
        return state

    # -- 1-3 -------------------------------------------------------------------------------------

    def check_ledger(self, states: dict[AccountKey, AccountState]) -> None:
        d, raw = self.deployment, self.raw
        total = sum(s.cash for s in states.values()) + sum(raw.system_cash()) + raw.order_escrow()
        balance = d.collateral.balanceOf(d.vault.address) * self.token_scale
        self.ok("1 ledger balances exactly", total == balance, f"ledger {total} vs balance {balance}")

    def check_positions_and_funding(self, states: dict[AccountKey, AccountState]) -> None:
        raw, unsettled = self.raw, 0
        for m in (c.id for c in self.deployment.markets):
            positions = [s.positions[m] for s in states.values() if m in s.positions]
            long_oi, short_oi = raw.open_interest(m)
            self.ok("2 zero-sum positions", sum(p[0] for p in positions if p[0] > 0) == long_oi
                    and -sum(p[0] for p in positions if p[0] < 0) == short_oi
                    and sum(p[1] for p in positions) == raw.open_notional_sum(m), f"market {m}")
            stored, _ = raw.funding(m)
            unsettled += sum(size * (stored - snapshot) for size, _, snapshot in positions)
        dust = raw.system_cash()[3] * WAD + unsettled
        self.ok("3 zero-sum funding", 0 <= dust <= self.settlements * WAD, f"dust {dust}, settlements {self.settlements}")

    # -- 4 ---------------------------------------------------------------------------------------

    def check_solvency(self, states: dict[AccountKey, AccountState], snapshot: Snapshot, lv_value: int) -> int:
        """Invariant 4 once the keeper acted; the uncovered deficit outstanding."""
        d, lq = self.deployment, self.deployment.liquidator
        balance = d.collateral.balanceOf(d.vault.address) * self.token_scale
        claims, shortfall = 0, 0
        capacity: dict[int, int] = {}  # market -> liquidation capacity left (one state: read once)

        def exhausted(market_id: int) -> bool:
            if market_id not in capacity:
                capacity[market_id] = lq.liquidation_capacity(market_id)
            return capacity[market_id] == 0

        for key, state in states.items():
            health = snapshot.health(state) if state.positions else None
            equity = health.equity if health is not None else state.cash
            if equity < 0 and state.positions and health.liquidatable and all(exhausted(m) for m in state.positions):
                self.capacity_waits += 1
                shortfall -= equity
                continue
            self.ok("4 no negative equity after the keeper", equity >= 0 or self._recorded_bankrupt(key, state),
                    f"{key}: equity {equity / WAD:,.2f} USD")
            claims += max(equity, 0)
        grace, outstanding, now = lq.deficit_grace_period(), 0, snapshot.timestamp
        for owner, sub, market_id in sorted(self.deficit_accounts):
            amount, _, recorded_at = self.deficit_record(owner, sub, market_id)
            outstanding += amount
            self.ok("4 no deficit outstanding past its grace period", amount == 0 or now < recorded_at + grace,
                    f"{owner}/{sub} market {market_id}")
        total = lq.total_uncovered_deficit()
        per_market = sum(self.raw.uncovered_deficit(m.id) for m in d.markets)
        self.ok("4 deficit records add up", outstanding == total == per_market, f"{outstanding}/{total}/{per_market}")
        indices = [snapshot.model.index[m.id] for m in d.markets]
        self.ok("4 the liquidity vault's value nets the outstanding deficits",
                lv_value == d.exchange.liquidity_vault_value_at(indices) - total, f"{lv_value}")
        system = self.raw.system_cash()
        claims += max(lv_value, 0) + max(system[1], 0) + max(system[2], 0)
        self.ok("4 every positive claim is payable", claims <= balance + shortfall,
                f"{claims / WAD:,.2f} vs {balance / WAD:,.2f} USD")
        return total

    def _recorded_bankrupt(self, key: AccountKey, state: AccountState) -> bool:
        """A bankrupt account (no position, negative cash) whose debt is recorded as a deficit
        that ADL or a write-off is still to settle within its grace period."""
        if state.positions:
            return False
        recorded = sum(self.deficit_record(key[0], key[1], m.id)[0] for m in self.deployment.markets)
        return recorded >= -state.cash

    def deficit_record(self, owner: str, sub: int, market_id: int) -> tuple[int, int, int]:
        """`Liquidator.deficit_record` read from storage: (amount, losing side, recorded at)."""
        raw = self.raw
        record = raw._get(raw.liquidator, mapping_slot(raw.q["_deficits"], owner, sub, market_id))
        amount = record & RECORD_AMOUNT_MASK
        if amount == 0:
            return 0, 0, 0
        return amount, 1 if record & RECORD_LONG_BIT else -1, record >> RECORD_TIME_SHIFT

    # -- 5 ---------------------------------------------------------------------------------------

    def check_actions(self, logs: list[LogEntry], liquidatable_before: set) -> None:
        """Invariant 5 over the events since the last check (and note what later checks need)."""
        for log in logs:
            a = log.args
            if log.event in ("Trade", "FundingAccrued"):
                self.settlements += 1
            elif log.event == "OrderCommitted":
                self.commits[int(a["order_id"])] = a
            elif log.event == "DeficitRecorded":
                self.deficit_accounts.add((a["owner"], int(a["sub_account"]), int(a["market_id"])))
            elif log.event == "Liquidation":
                self.ok("5 no wrongful liquidation", (a["owner"], int(a["sub_account"])) in liquidatable_before,
                        f"{a['owner']}/{a['sub_account']}")
            elif log.event == "AutoDeleveraged":
                self.ok("5 ADL takes only profit", a["realized_pnl"] > 0 and a["haircut"] <= a["realized_pnl"],
                        f"{a['owner']} market {a['market_id']}")
            elif log.event == "OrderExecuted":
                order = self.commits.pop(int(a["order_id"]), None)
                if order is None:
                    continue
                bound = order["acceptable_price"]
                within = a["fill_price"] <= bound if order["size_delta"] > 0 else a["fill_price"] >= bound
                self.ok("5 fills within the acceptable price", within, f"order {a['order_id']:#x}")
                if order["kind"] == KIND_MARKET:
                    self.ok("5 no fill at a round published before the order's delay",
                            a["round_published"] >= order["not_before"], f"order {a['order_id']:#x}")
