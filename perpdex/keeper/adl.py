"""Auto-deleveraging decisions (DESIGN.md, Auto-deleveraging): which profitable positions to
close, and how much, when a market has an uncovered deficit (trigger 1) or traders' profit above
`max_pnl_factor` of the liquidity vault (trigger 2). Plain Python over a `Snapshot`; the plan
replays on the model before the transport simulates and sends it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from perpdex.fixed_point import WAD, ceil_div, sign
from perpdex.keeper.core import AccountKey, AccountState, Evaluation, Snapshot, take_turn
from perpdex.model import MODE_ADL_FILL, Position, apply_fill, closing_price

MAX_ADL_TARGETS = 20  # Liquidator.MAX_ADL_TARGETS
ZERO_ADDRESS = "0x" + "00" * 20
TRIGGER_DEFICIT, TRIGGER_PNL_FACTOR = 1, 2
# ADL reverts that mean another ADL keeper (or a price move) got there first
ADL_RACE_REASONS = (
    "liquidator: deficit already covered",
    "liquidator: no ADL trigger",
    "liquidator: PnL factor under target",
    "liquidator: account not bankrupt",
    "liquidator: liquidation capacity at this index used up; retry at the next price",
)
ADL_TURN_BLOCKS = 4  # blocks per ADL keeper's turn
ADL_TURN_MARGIN = 2  # the last blocks of a turn: no ADL transaction is sent, the one in flight gets mined


@dataclass
class AdlTarget:
    account: AccountKey
    size: int  # base units to close
    score: int


@dataclass
class AdlPlan:
    market_id: int
    trigger: int
    targets: list[AdlTarget]
    bankrupt: AccountKey = (ZERO_ADDRESS, 0)

    @property
    def total_size(self) -> int:
        return sum(t.size for t in self.targets)

    def call_args(self) -> tuple:
        return (
            self.market_id,
            [(t.account[0], t.account[1], t.size) for t in self.targets],
            self.bankrupt[0],
            self.bankrupt[1],
        )


def realized_at_index(size: int, basis: int, amount: int, index: int) -> int:
    """Profit realized by closing `amount` of a position at the index (Exchange._apply_fill)."""
    _, realized = apply_fill(Position(size, basis), -sign(size) * amount, index)
    return realized


def smallest_close(size: int, basis: int, index: int, wanted: int) -> int:
    """The smallest amount whose close at the index realizes at least `wanted` (or |size|)."""
    low, high = 1, abs(size)
    if realized_at_index(size, basis, high, index) < wanted:
        return high
    while low < high:
        middle = (low + high) // 2
        if realized_at_index(size, basis, middle, index) >= wanted:
            high = middle
        else:
            low = middle + 1
    return low


def rank_adl_candidates(
    snapshot: Snapshot, states: Mapping[AccountKey, AccountState], market_id: int, side: int
) -> list[tuple[int, int, AccountKey]]:
    """(score, unrealized PnL, account) of the profitable positions on `side`, best first."""
    ranked = []
    for key, state in states.items():
        position = state.positions.get(market_id)
        if position is None or sign(position[0]) != side or not snapshot.priced(state):
            continue
        score, pnl = snapshot.account_model({key: state}, writable=False).adl_score(key, market_id)
        if pnl > 0:
            ranked.append((score, pnl, key))
    ranked.sort(key=lambda r: (-r[0], r[2]))
    return ranked


def plan_deficit_adl(
    snapshot: Snapshot, states: Mapping[AccountKey, AccountState], market_id: int, bankrupt: AccountKey
) -> AdlPlan | None:
    """Trigger 1: take what `bankrupt` still owes of its recorded deficit in the market out of
    the profit of the top-ranked positions opposite its losing side (never more than the record,
    which is all the contract lets ADL credit)."""
    model = snapshot.model
    recorded, losing_side, _ = model.deficit_record(bankrupt, market_id)
    owed = min(recorded, -states[bankrupt].cash)
    if owed <= 0:
        return None
    side = -losing_side
    index = model.index[market_id]
    targets: list[AdlTarget] = []
    remaining = owed
    for score, _, key in rank_adl_candidates(snapshot, states, market_id, side)[:MAX_ADL_TARGETS]:
        size, basis, _ = states[key].positions[market_id]
        amount = smallest_close(size, basis, index, remaining)
        profit = realized_at_index(size, basis, amount, index)
        if profit <= 0:
            continue
        targets.append(AdlTarget(key, amount, score))
        remaining -= min(profit, remaining)
        if remaining == 0:
            break
    return AdlPlan(market_id, TRIGGER_DEFICIT, targets, bankrupt) if targets else None


def plan_pnl_factor_adl(
    snapshot: Snapshot, states: Mapping[AccountKey, AccountState], market_id: int
) -> AdlPlan | None:
    """Trigger 2: close the top-ranked profitable positions on the skew's side (at the ordinary
    fill price) until traders' profit, at the closing price, is back under `target_pnl_factor`
    of the liquidity vault's value. Each target is sized at the index and then replayed on the
    model, so the plan stops as soon as the factor is under target (the contract refuses a
    target once it is)."""
    model = snapshot.model
    if not snapshot.lv_priced() or model.pnl_factor(market_id) <= model.max_pnl_factor:
        return None
    side, index = sign(model.markets[market_id].skew), model.index[market_id]
    candidates = rank_adl_candidates(snapshot, states, market_id, side)[:MAX_ADL_TARGETS]
    trial = snapshot.account_model({key: states[key] for _, _, key in candidates})
    targets: list[AdlTarget] = []
    for score, _, key in candidates:
        if trial.pnl_factor(market_id) <= trial.target_pnl_factor:
            break
        market = trial.markets[market_id]
        closing = closing_price(index, market.skew, trial.params[market_id].skew_scale)
        traders_pnl = market.skew * closing // WAD - market.open_notional_sum
        value = trial.liquidity_vault_value()
        # factor = pnl * WAD // value <= target  <=>  pnl <= ceil((target + 1) * value / WAD) - 1
        excess = traders_pnl - (ceil_div((trial.target_pnl_factor + 1) * value, WAD) - 1) + 2
        position = trial.position(key, market_id)
        amount = smallest_close(position.size, position.open_notional, index, excess)
        targets.append(AdlTarget(key, amount, score))
        trial._execute(key, market_id, -side * amount, 0, MODE_ADL_FILL)
    return AdlPlan(market_id, TRIGGER_PNL_FACTOR, targets) if targets else None


def plan_adl(
    snapshot: Snapshot, states: Mapping[AccountKey, AccountState], evaluation: Evaluation
) -> tuple[list[AdlPlan], list[int]]:
    """The plan of every market whose trigger holds, and the markets with a deficit but no
    bankrupt account to take it from (the deficit is covered by a later bankruptcy's ADL)."""
    plans: list[AdlPlan] = []
    orphaned: list[int] = []
    for market_id in sorted(snapshot.terms):
        if snapshot.model.uncovered_deficit.get(market_id, 0) > 0:
            recorded = [k for k in evaluation.bankrupt if snapshot.model.deficit_record(k, market_id)[0] > 0]
            if not recorded:
                orphaned.append(market_id)
                continue
            plan = plan_deficit_adl(snapshot, states, market_id, recorded[0])
        else:
            plan = plan_pnl_factor_adl(snapshot, states, market_id)
        if plan is not None:
            plans.append(plan)
    return plans, orphaned


def replay_adl(snapshot: Snapshot, states: Mapping[AccountKey, AccountState], plan: AdlPlan) -> list:
    """Run the plan on the model (raises ModelRevert with the contract's reason if it would
    revert); returns the model's [(score, fill, haircut)] per target."""
    involved = {t.account: states[t.account] for t in plan.targets}
    if plan.trigger == TRIGGER_DEFICIT:
        involved[plan.bankrupt] = states[plan.bankrupt]
    model = snapshot.account_model(involved)
    return model.auto_deleverage(plan.market_id, [(t.account, t.size) for t in plan.targets], plan.bankrupt)


def adl_turn(
    keeper: str, keepers: Iterable[str], since: int, block: int, length: int = ADL_TURN_BLOCKS,
    margin: int = ADL_TURN_MARGIN,
) -> tuple[bool, int]:
    """Whether `keeper` may send an ADL transaction at `block` for a trigger that holds since
    block `since`, and the first block >= `block` at which it may.

    The ADL keepers (every holder of the role, in address order) take turns of `length` blocks,
    the first one starting at `since` (`take_turn`). Unlike `liquidate_many`, `auto_deleverage`
    reverts when another keeper was first, and two keepers reacting to the same block would
    both pass their simulation. Every keeper derives the same turns from chain data (roles and,
    for a deficit, the block it was recorded in)."""
    return take_turn(keeper, keepers, since, block, length, margin)


def plan_write_offs(snapshot: Snapshot, evaluation: Evaluation) -> list[tuple[AccountKey, int]]:
    """The recorded deficits of bankrupt accounts that `Liquidator.write_off` accepts now (no
    position left on the side ADL would take it from, or its grace period over)."""
    model = snapshot.model
    return [
        (key, market_id)
        for key in evaluation.bankrupt
        for market_id in sorted(model.uncovered_deficit)
        if model.can_write_off(key, market_id)
    ]
