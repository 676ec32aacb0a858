"""The liquidation and ADL keeper (DESIGN.md, Keepers).

One pass (`Keeper.run_once`):
1. **Index.** Read the vault's `Deposit`, `Withdraw`, `PairSettled` and the exchange's `Trade`
   logs from the last checkpointed block + 1 to the head. `Deposit` and `Trade` reveal
   sub-accounts; every one of these events marks the sub-accounts it names as touched. Nothing
   else changes a trader's cash or positions, so the cached state of the others stays exact.
2. **Snapshot.** Read every market's parameters, index, open interest, funding state, open
   notional sum and the globals at that same head block into a `perpdex.model.ExchangeModel`,
   and re-read (cash, open-markets mask, positions) of the touched sub-accounts only.
3. **Health.** Re-evaluate every cached sub-account against the new prices and funding: pure
   Python over cached positions with the model's exact integer math (`Snapshot.evaluate`).
4. **Liquidate.** Batches of `liquidate_many`, each simulated with eth_call on the pending
   state first (another keeper's transaction already in the node's pool counts) and sent only
   when the contract agrees with the model; an account another keeper took first is logged as
   a lost race, not as an error. When both keepers send before either transaction is in the
   pool, the later one is mined anyway: `liquidate_many` skips what is no longer liquidatable,
   so it costs gas but never reverts.
5. **Auto-deleverage.** When a market has an uncovered deficit (trigger 1) or traders' profit
   above `max_pnl_factor` of the liquidity vault (trigger 2): rank the profitable positions of
   the right side by the model's ADL score, check the scores against the contract's view, size
   the closes, replay the call on the model, simulate it, and send it (ADL keeper role only).
   Several ADL keepers take turns (`adl_turn`): unlike `liquidate_many`, `auto_deleverage`
   reverts when another keeper was first, and two keepers reacting to the same block would
   both pass their simulation.
6. **Checkpoint.** `{version, chain_id, exchange, block, accounts, adl_keepers, deficit_since}`
   written atomically (tmp + rename).

Rounds 2-5 repeat while a round sent something (slices of large positions, ADL after a
bankruptcy), up to `max_rounds`. `run_forever` wraps passes with exponential backoff on RPC
errors and stops on a `threading.Event` (set by SIGINT/SIGTERM in `ape run keeper`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from perpdex.snapshot import market_params
from perpdex.fixed_point import WAD, ceil_div, sign
from perpdex.model import (
    LIQUIDITY_VAULT,
    ExchangeModel,
    GlobalParams,
    MarketState,
    ModelRevert,
    Position,
    accrued_funding_per_unit,
    apply_fill,
)

AccountKey = tuple[str, int]  # (owner address, sub-account)

MAX_BATCH = 50  # Liquidator.MAX_BATCH
LENS_BATCH = 200  # accounts per Lens.accounts eth_call (the Lens takes up to 500)
MAX_ADL_TARGETS = 20  # Liquidator.MAX_ADL_TARGETS
ZERO_ADDRESS = "0x" + "00" * 20
TRIGGER_DEFICIT, TRIGGER_PNL_FACTOR = 1, 2
# ADL reverts that mean another ADL keeper (or a price move) got there first
ADL_RACE_REASONS = (
    "liquidator: deficit already covered",
    "liquidator: no ADL trigger",
    "liquidator: PnL factor under target",
    "liquidator: account not bankrupt",
)
NONCE_ERRORS = ("nonce too low", "replacement transaction underpriced", "already known", "invalid nonce", "nonce too high")
INDEXED_EVENTS = (
    ("vault", "Deposit"), ("vault", "Withdraw"), ("vault", "PairSettled"), ("exchange", "Trade"),
    ("liquidator", "AdlKeeperSet"), ("liquidator", "DeficitRecorded"),
)
CHECKPOINT_VERSION = 2  # 2: ADL keepers and deficit blocks (for ADL turns)
ADL_TURN_BLOCKS = 4  # blocks per ADL keeper's turn
ADL_TURN_MARGIN = 2  # the last blocks of a turn: no ADL transaction is sent, the one in flight gets mined


# =============================================================================================
# Off-chain health: pure Python, no chain
# =============================================================================================


@dataclass(slots=True)
class AccountState:
    """A sub-account as the vault and exchange store it."""

    cash: int
    positions: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # market -> (size, open notional, snapshot)


class Health(NamedTuple):
    equity: int
    initial: int
    maintenance: int

    @property
    def liquidatable(self) -> bool:
        """Liquidator._is_liquidatable: maintenance != 0 and equity < maintenance."""
        return self.maintenance != 0 and self.equity < self.maintenance


class MarketTerms(NamedTuple):
    """What one account's health needs from a market, computed once per snapshot."""

    index: int
    funding_per_unit: int  # accrued to the snapshot's timestamp
    initial_margin_ratio: int
    maintenance_margin_ratio: int
    liquidation_penalty_ratio: int
    double_skew_scale: int


@dataclass
class Evaluation:
    health: dict[AccountKey, Health]
    liquidatable: list[AccountKey]
    bankrupt: list[AccountKey]  # negative cash, no position
    unpriced: list[AccountKey]  # a position in a market without a valid index


class Snapshot:
    """The exchange at one block, as an ExchangeModel without trader positions, plus per-market
    terms precomputed for the health of many accounts."""

    def __init__(self, model: ExchangeModel, block: int = 0):
        self.model = model
        self.block = block
        self.timestamp = model.now
        self.keeper_min_reward = model.globals.keeper_min_reward
        self.terms: dict[int, MarketTerms] = {m: self._terms(m) for m in model.params if m in model.index}

    def _terms(self, market_id: int) -> MarketTerms:
        params, index = self.model.params[market_id], self.model.index[market_id]
        fpu = accrued_funding_per_unit(self.model.markets[market_id], params, index, self.model.now)
        return MarketTerms(
            index,
            fpu,
            params.initial_margin_ratio,
            params.maintenance_margin_ratio,
            params.liquidation_penalty_ratio,
            2 * params.skew_scale,
        )

    def health(self, state: AccountState) -> Health | None:
        """ExchangeModel.account_view, inlined: None when a market of the account has no price."""
        equity, initial, maintenance = state.cash, 0, 0
        terms = self.terms
        for market_id, (size, basis, snapshot) in state.positions.items():
            t = terms.get(market_id)
            if t is None:
                return None
            index = t.index
            abs_size = size if size > 0 else -size
            equity += size * index // WAD - basis  # unrealized PnL, floored
            equity -= -((size * (snapshot - t.funding_per_unit)) // WAD)  # funding owed, rounded up
            notional = -((-abs_size * index) // WAD)
            initial += -((-notional * t.initial_margin_ratio) // WAD)
            maintenance += (
                -((-notional * t.maintenance_margin_ratio) // WAD)
                - ((-notional * abs_size) // t.double_skew_scale)
                - ((-notional * t.liquidation_penalty_ratio) // WAD)
            )
        if state.positions:
            maintenance += self.keeper_min_reward
        return Health(equity, initial, maintenance)

    def evaluate(self, states: Mapping[AccountKey, AccountState]) -> Evaluation:
        """Health of every account; liquidatable ones in a deterministic order."""
        health: dict[AccountKey, Health] = {}
        liquidatable: list[AccountKey] = []
        bankrupt: list[AccountKey] = []
        unpriced: list[AccountKey] = []
        evaluate = self.health
        for key, state in states.items():
            if not state.positions:
                if state.cash < 0:
                    bankrupt.append(key)
                continue
            h = evaluate(state)
            if h is None:
                unpriced.append(key)
                continue
            health[key] = h
            if h.maintenance and h.equity < h.maintenance:
                liquidatable.append(key)
        liquidatable.sort()
        bankrupt.sort(key=lambda k: (states[k].cash, k))  # deepest first
        return Evaluation(health, liquidatable, bankrupt, unpriced)

    def account_model(self, accounts: Mapping[AccountKey, AccountState], writable: bool = True) -> ExchangeModel:
        """An ExchangeModel holding only `accounts` (and the liquidity vault's cash): every model
        view of these accounts is exact, at the cost of their own positions only. When
        `writable`, market state is copied so that transactions on the returned model leave the
        snapshot untouched; read-only views can share it."""
        model = copy.copy(self.model)
        if writable:
            model.markets = copy.deepcopy(self.model.markets)
            model.uncovered_deficit = dict(self.model.uncovered_deficit)
            model.deficit_side = dict(self.model.deficit_side)
        model.cash = {LIQUIDITY_VAULT: self.model.cash_of(LIQUIDITY_VAULT)}
        model.positions = {}
        for key, state in accounts.items():
            model.cash[key] = state.cash
            for market_id, (size, basis, snapshot) in state.positions.items():
                model.positions[(key, market_id)] = Position(size, basis, snapshot)
        return model

    def priced(self, state: AccountState) -> bool:
        return all(m in self.terms for m in state.positions)

    def lv_priced(self) -> bool:
        """The liquidity vault's value (hence the PnL factor) needs the index of every market
        with a skew."""
        return all(m in self.model.index for m, s in self.model.markets.items() if s.skew != 0)



def states_from_model(model: ExchangeModel) -> dict[AccountKey, AccountState]:
    """The trader sub-accounts of a model as the keeper caches them (tests, benchmarks)."""
    states: dict[AccountKey, AccountState] = {}
    for account, cash in model.cash.items():
        if isinstance(account, tuple):
            states[account] = AccountState(cash)
    for (account, market_id), p in model.positions.items():
        if p.size != 0:
            state = states.setdefault(account, AccountState(0))
            state.positions[market_id] = (p.size, p.open_notional, p.funding_snapshot)
    return states


# =============================================================================================
# ADL planning: pure Python over a snapshot
# =============================================================================================


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
    """Trigger 1: take what `bankrupt` still owes of the market's uncovered deficit out of the
    profit of the top-ranked positions opposite the losing side."""
    model = snapshot.model
    deficit = model.uncovered_deficit.get(market_id, 0)
    owed = min(deficit, -states[bankrupt].cash)
    if owed <= 0:
        return None
    side = -model.deficit_side[market_id]
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
    """Trigger 2: close the top-ranked profitable positions on the skew's side until traders'
    profit is back under `target_pnl_factor` of the liquidity vault's value."""
    model = snapshot.model
    if not snapshot.lv_priced() or model.pnl_factor(market_id) <= model.max_pnl_factor:
        return None
    market, index = model.markets[market_id], model.index[market_id]
    traders_pnl = market.skew * index // WAD - market.open_notional_sum
    value = model.liquidity_vault_value()
    # factor = pnl * WAD // value <= target  <=>  pnl <= ceil((target + 1) * value / WAD) - 1
    excess = traders_pnl - (ceil_div((model.target_pnl_factor + 1) * value, WAD) - 1)
    targets: list[AdlTarget] = []
    remaining = excess + 2  # closing moves the market's PnL by the realized profit +-1 wei
    for score, _, key in rank_adl_candidates(snapshot, states, market_id, sign(market.skew))[:MAX_ADL_TARGETS]:
        size, basis, _ = states[key].positions[market_id]
        amount = smallest_close(size, basis, index, remaining)
        targets.append(AdlTarget(key, amount, score))
        remaining -= realized_at_index(size, basis, amount, index)
        if remaining <= 0:
            break
    return AdlPlan(market_id, TRIGGER_PNL_FACTOR, targets) if targets else None


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
    the first one starting at `since`, so the first keeper acts at once and the others only if
    the trigger still holds when their turn comes (a role holder that runs no keeper leaves its
    turns idle). A keeper sends only in the first `length - margin` blocks of its turn: its
    transaction has `margin` blocks to be mined before the next keeper, which simulates first,
    can act. Every keeper derives the same turns from chain data (roles and, for a deficit, the
    block it was recorded in)."""
    ranked = sorted({k.lower() for k in keepers})
    me = keeper.lower()
    if me not in ranked:
        return False, -1
    if len(ranked) == 1:
        return True, block
    rank, cycle = ranked.index(me), length * len(ranked)
    elapsed = max(0, block - since)
    offset = elapsed % cycle - rank * length  # blocks into our turn (negative: before it)
    if 0 <= offset < length - margin:
        return True, block
    wait = -offset if offset < 0 else cycle - offset
    return False, block + wait


# =============================================================================================
# Structured logging
# =============================================================================================


def _format_value(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if " " in text or not text else text


class KeyValueFormatter(logging.Formatter):
    """`time level logger event key=value ...` (the message already carries the pairs)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", record.getMessage()),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(json_logs: bool = False, level: int = logging.INFO) -> logging.Logger:
    """A stderr handler on the `perpdex.keeper` logger, key=value or JSON lines."""
    logger = logging.getLogger("perpdex.keeper")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else KeyValueFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


# =============================================================================================
# Errors
# =============================================================================================


def revert_reason(err: Exception) -> str | None:
    """The contract's reason string when `err` is a revert, else None."""
    from ape.exceptions import ContractLogicError

    if isinstance(err, ContractLogicError):
        return str(err.revert_message or err)
    return None


def is_rpc_error(err: Exception) -> bool:
    """Transient provider trouble (logged as a warning before the backoff), as opposed to a
    revert or a bug (logged with its traceback). A provider lacking an API is a bug, not
    trouble: it is not listed."""
    from ape.exceptions import ContractLogicError, ProviderError, TransactionError
    from web3.exceptions import ContractLogicError as Web3ContractLogicError
    from web3.exceptions import Web3Exception

    if isinstance(err, (ContractLogicError, Web3ContractLogicError)):
        return False
    return isinstance(err, (ConnectionError, TimeoutError, OSError, ProviderError, TransactionError, Web3Exception))


def is_nonce_error(err: Exception) -> bool:
    text = str(err).lower()
    return any(marker in text for marker in NONCE_ERRORS)


# =============================================================================================
# The keeper
# =============================================================================================


@dataclass
class PassReport:
    block: int = 0
    accounts: int = 0
    liquidatable: int = 0  # distinct accounts found liquidatable during the pass
    liquidated: int = 0  # liquidations by this keeper
    keeper_reward: int = 0  # WAD credited to this keeper
    adl_targets: int = 0  # positions auto-deleveraged by this keeper
    errors: int = 0
    lost_races: int = 0  # accounts another keeper acted on first
    transactions: int = 0
    new_accounts: int = 0
    refreshed: int = 0
    unpriced: int = 0
    rounds: int = 0
    duration: float = 0.0
    liquidatable_accounts: set[AccountKey] = field(default_factory=set, repr=False)


class Keeper:
    """Liquidation and ADL keeper over a perpdex.deploy.Deployment (ape contract handles)."""

    def __init__(
        self,
        deployment,
        account,
        checkpoint_path: Path | None = None,
        batch_size: int = 20,
        logger: logging.Logger | None = None,
        *,
        start_block: int | None = None,
        log_chunk: int = 2000,
        max_rounds: int = 6,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        adl_turn_blocks: int = ADL_TURN_BLOCKS,
    ):
        from ape import chain

        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.address = account.address
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.log = logger or logging.getLogger("perpdex.keeper")
        self.log_chunk = log_chunk
        self.max_rounds = max_rounds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        if adl_turn_blocks <= ADL_TURN_MARGIN:
            raise ValueError(f"an ADL turn needs more than {ADL_TURN_MARGIN} blocks")
        self.adl_turn_blocks = adl_turn_blocks

        self.accounts: set[AccountKey] = set()
        self.states: dict[AccountKey, AccountState] = {}
        self.stale: set[AccountKey] = set()  # accounts to re-read at the next sync
        self.snapshot: Snapshot | None = None
        self.evaluation: Evaluation | None = None
        self.last_report: PassReport | None = None
        self._warned: set[str] = set()
        self.adl_keepers: dict[str, bool] = {}  # ADL role by address, from AdlKeeperSet events
        self.deficit_since: dict[int, int] = {}  # market -> block of its last DeficitRecorded event
        self._pnl_trigger_since: dict[int, int] = {}  # market -> first block we saw trigger 2 hold
        self._turn_logged: dict[int, int] = {}  # market -> the next turn last logged
        self._market_ids: list[int] = []
        self._stop = threading.Event()
        first = start_block if start_block is not None else getattr(deployment, "block", None) or 0
        self.block = first - 1  # the last block indexed
        self._load_checkpoint()

    # -- logging ---------------------------------------------------------------------------------

    def _emit(self, level: int, event: str, **fields: Any) -> None:
        message = " ".join([event, *(f"{k}={_format_value(v)}" for k, v in fields.items())])
        self.log.log(level, message, extra={"event": event, "fields": fields})

    def _warn_once(self, key: str, event: str, **fields: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._emit(logging.WARNING, event, **fields)

    # -- checkpoint ------------------------------------------------------------------------------

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        exchange = self.deployment.exchange.address
        if data.get("chain_id") != self.chain.chain_id or data.get("exchange", exchange) != exchange:
            self._emit(logging.WARNING, "checkpoint.ignored", path=path, reason="other chain or deployment")
            return
        if data.get("version") != CHECKPOINT_VERSION:  # lacks what ADL turns need: index from the start
            self._emit(logging.WARNING, "checkpoint.ignored", path=path, reason="older format")
            return
        self.block = int(data["block"])
        self.accounts = {(owner, int(sub)) for owner, sub in data["accounts"]}
        self.adl_keepers = {k: True for k in data["adl_keepers"]}
        self.deficit_since = {int(m): int(b) for m, b in data["deficit_since"].items()}
        self.stale = set(self.accounts)  # nothing is cached yet: read everyone once
        self._emit(logging.INFO, "checkpoint.loaded", path=path, block=self.block, accounts=len(self.accounts))

    def save_checkpoint(self) -> None:
        """Atomically replace the checkpoint: a crash leaves the old or the new one, whole."""
        path = self.checkpoint_path
        if path is None:
            return
        data = {
            "version": CHECKPOINT_VERSION,
            "chain_id": self.chain.chain_id,
            "exchange": self.deployment.exchange.address,
            "block": self.block,
            "accounts": sorted([owner, sub] for owner, sub in self.accounts),
            "adl_keepers": sorted(k for k, allowed in self.adl_keepers.items() if allowed),
            "deficit_since": {str(m): b for m, b in sorted(self.deficit_since.items())},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- indexing --------------------------------------------------------------------------------

    def _fetch_logs(self, start: int, stop: int) -> list:
        from ape.types import LogFilter
        from eth_utils import encode_hex, keccak

        d = self.deployment
        events = [getattr(getattr(d, contract), name).abi for contract, name in INDEXED_EVENTS]
        log_filter = LogFilter(
            addresses=[d.vault.address, d.exchange.address, d.liquidator.address],
            events=events,
            topic_filter=[[encode_hex(keccak(text=abi.selector)) for abi in events]],
            start_block=start,
            stop_block=stop,
        )
        return list(self.chain.provider.get_contract_logs(log_filter))

    def _apply_log(self, log, report: PassReport) -> None:
        args = log.event_arguments
        if log.event_name == "AdlKeeperSet":
            self.adl_keepers[args["keeper"]] = bool(args["allowed"])
            return
        if log.event_name == "DeficitRecorded":
            self.deficit_since[int(args["market_id"])] = int(log.block_number)
            return
        key = (args["owner"], int(args["sub_account"]))
        if log.event_name in ("Deposit", "Trade") and key not in self.accounts:
            self.accounts.add(key)
            report.new_accounts += 1
        if key in self.accounts:
            self.stale.add(key)
        if log.event_name == "PairSettled":
            counterparty = (args["counterparty"], int(args["counterparty_sub_account"]))
            if counterparty in self.accounts:
                self.stale.add(counterparty)

    def _index(self, head: int, report: PassReport) -> None:
        """Logs from the last indexed block + 1 to `head`, in chunks of `log_chunk` blocks."""
        start = self.block + 1
        while start <= head:
            stop = min(start + self.log_chunk - 1, head)
            logs = self._fetch_logs(start, stop)
            for log in logs:
                self._apply_log(log, report)
            self._emit(logging.DEBUG, "index.range", start=start, stop=stop, logs=len(logs))
            start = stop + 1

    # -- chain reads at one block ----------------------------------------------------------------

    def _market_list(self, block: int) -> list[int]:
        exchange = self.deployment.exchange
        count = exchange.market_count(block_id=block)
        if count != len(self._market_ids):
            self._market_ids = [exchange.market_ids(i, block_id=block) for i in range(count)]
        return self._market_ids

    def _read_snapshot(self, block: int, timestamp: int) -> Snapshot:
        d = self.deployment
        ex, lq = d.exchange, d.liquidator
        model = ExchangeModel(
            globals=GlobalParams(
                insurance_fee_share=ex.insurance_fee_share(block_id=block),
                protocol_fee_share=ex.protocol_fee_share(block_id=block),
                keeper_min_reward=ex.keeper_min_reward(block_id=block),
                keeper_reward_share=ex.keeper_reward_share(block_id=block),
            ),
            now=timestamp,
            max_pnl_factor=lq.max_pnl_factor(block_id=block),
            target_pnl_factor=lq.target_pnl_factor(block_id=block),
        )
        model.cash[LIQUIDITY_VAULT] = d.vault.liquidity_cash(block_id=block)
        if not self._read_markets_with_lens(model, block):
            for m in self._market_list(block):
                self._read_market(model, m, block)
        for m in model.params:
            model.uncovered_deficit[m] = lq.uncovered_deficit(m, block_id=block)
            model.deficit_side[m] = lq.deficit_side(m, block_id=block)
        return Snapshot(model, block)

    def _read_markets_with_lens(self, model: ExchangeModel, block: int) -> bool:
        """Every market in one eth_call; False (read market by market) without a Lens or when
        a market has no valid price (the Lens reverts with the oracle's reason)."""
        lens = getattr(self.deployment, "lens", None)
        if lens is None:
            return False
        try:
            snapshots = lens.markets(block_id=block)
        except Exception as err:
            if revert_reason(err) is None:
                raise
            return False
        for m in snapshots:
            market_id = int(m.market_id)
            model.params[market_id] = market_params(m.params)
            model.markets[market_id] = MarketState(
                int(m.long_oi), int(m.short_oi), int(m.funding_per_unit), int(m.last_funding_time), int(m.open_notional_sum)
            )
            model.index[market_id] = int(m.index_price)
            self._warned.discard(f"unpriced:{market_id}")
        return True

    def _read_market(self, model: ExchangeModel, market_id: int, block: int) -> None:
        ex = self.deployment.exchange
        model.params[market_id] = market_params(ex.market_params(market_id, block_id=block))
        long_oi, short_oi = ex.open_interest(market_id, block_id=block)
        fpu, last = ex.funding_state(market_id, block_id=block)
        model.markets[market_id] = MarketState(long_oi, short_oi, fpu, last, ex.open_notional_sum(market_id, block_id=block))
        try:
            model.index[market_id] = ex.index_price(market_id, block_id=block)
            self._warned.discard(f"unpriced:{market_id}")
        except Exception as err:
            reason = revert_reason(err)
            if reason is None:
                raise
            self._warn_once(f"unpriced:{market_id}", "market.unpriced", market=market_id, reason=reason)

    def read_account(self, key: AccountKey, block: int | str = "latest") -> AccountState:
        """One account's cash and raw positions, from the vault and the exchange."""
        owner, sub = key
        cash, mask = self.deployment.vault.account(owner, sub, block_id=block)
        state = AccountState(cash)
        market_id = 0
        while mask >> market_id:
            if (mask >> market_id) & 1:
                size, basis, snapshot = self.deployment.exchange.position_state(owner, sub, market_id, block_id=block)
                if size != 0:
                    state.positions[market_id] = (size, basis, snapshot)
            market_id += 1
        return state

    def read_accounts(self, keys: list[AccountKey], block: int | str = "latest") -> dict[AccountKey, AccountState]:
        """Many accounts: through the Lens (LENS_BATCH per eth_call) when deployed, else one by one."""
        lens = getattr(self.deployment, "lens", None)
        if lens is None:
            return {key: self.read_account(key, block) for key in keys}
        states: dict[AccountKey, AccountState] = {}
        for i in range(0, len(keys), LENS_BATCH):
            for a in lens.accounts([(o, s) for o, s in keys[i : i + LENS_BATCH]], block_id=block):
                positions = {
                    int(p.market_id): (int(p.size), int(p.open_notional), int(p.funding_snapshot))
                    for p in a.positions
                    if p.size
                }
                states[(a.owner, int(a.sub_account))] = AccountState(int(a.cash), positions)
        return states

    def _refresh(self, block: int, report: PassReport) -> None:
        keys = sorted(self.stale)
        self.states.update(self.read_accounts(keys, block))
        self.stale.difference_update(keys)
        report.refreshed += len(keys)

    def sync(self, report: PassReport | None = None) -> Evaluation:
        """Index new logs, snapshot the markets and refresh touched accounts, all at the head
        block; then evaluate every account's health."""
        report = report if report is not None else PassReport()
        head = self.chain.blocks.head
        if head.number < self.block:
            # the node went back (restarted devnet, reorg deeper than our head): re-read everyone
            self._emit(logging.WARNING, "chain.rewound", head=head.number, indexed=self.block)
            self.block = head.number
            self.stale.update(self.accounts)
        self._index(head.number, report)
        snapshot = self._read_snapshot(head.number, head.timestamp)
        self._refresh(head.number, report)
        self.block = head.number
        self.snapshot = snapshot
        self.evaluation = snapshot.evaluate(self.states)
        report.block = head.number
        report.accounts = len(self.accounts)
        report.unpriced = len(self.evaluation.unpriced)
        return self.evaluation

    def health(self, key: AccountKey) -> Health | None:
        """Off-chain health of an indexed account at the last synced block."""
        state = self.states.get(key)
        return None if state is None or self.snapshot is None else self.snapshot.health(state)

    # -- transactions ----------------------------------------------------------------------------

    def _send(self, method: Callable, *args):
        """Send with ape's nonce management; on a nonce error (a gap after a restart, a
        replacement) refresh and retry once."""
        try:
            return method(*args, sender=self.account)
        except Exception as err:
            if revert_reason(err) is not None or not is_nonce_error(err):
                raise
            self._emit(logging.WARNING, "tx.nonce_retry", error=str(err)[:200], nonce=self.account.nonce)
            return method(*args, sender=self.account)

    # -- liquidation -----------------------------------------------------------------------------

    def simulate_liquidations(self, batch: list[AccountKey]) -> int:
        """eth_call `liquidate_many(batch)` from this keeper on the pending state: how many it
        would liquidate now, after the transactions already waiting in the node's pool."""
        return self.deployment.liquidator.liquidate_many.call(
            [(o, s) for o, s in batch], sender=self.account, block_id="pending"
        )

    def _still_liquidatable(self, batch: list[AccountKey], report: PassReport) -> list[AccountKey]:
        """The accounts of `batch` the contract would liquidate now. For the others: if the
        account changed since our snapshot, someone acted first (a lost race); if not, the
        price or funding moved since the snapshot block and it is healthy again."""
        still = []
        for key in batch:
            if self.deployment.liquidator.is_liquidatable(*key, block_id="pending"):
                still.append(key)
                continue
            self.stale.add(key)
            if self.read_account(key, "pending") != self.states.get(key):
                report.lost_races += 1
                self._emit(logging.INFO, "liquidation.lost_race", owner=key[0], sub_account=key[1], stage="simulation")
            else:
                self._emit(logging.INFO, "liquidation.healthy_at_head", owner=key[0], sub_account=key[1])
        return still

    def _liquidate_batch(self, batch: list[AccountKey], report: PassReport) -> bool:
        """Simulate, drop what is no longer liquidatable, send. True when a transaction went out."""
        try:
            simulated = self.simulate_liquidations(batch)
            if simulated < len(batch):
                batch = self._still_liquidatable(batch, report)
                simulated = self.simulate_liquidations(batch) if batch else 0
            if simulated == 0:
                return False
            receipt = self._send(self.deployment.liquidator.liquidate_many, [(o, s) for o, s in batch])
        except Exception as err:
            reason = revert_reason(err)
            if reason is None:
                raise
            report.errors += 1
            self._emit(logging.ERROR, "liquidation.reverted", batch=len(batch), reason=reason)
            return False
        report.transactions += 1
        self._record_liquidations(receipt, batch, report)
        return True

    def _record_liquidations(self, receipt, batch: list[AccountKey], report: PassReport) -> None:
        done: set[AccountKey] = set()
        for event in receipt.decode_logs(self.deployment.liquidator.Liquidation):
            if event.keeper != self.address:
                continue
            key = (event.owner, int(event.sub_account))
            done.add(key)
            report.liquidated += 1
            report.keeper_reward += event.keeper_reward
            self._emit(
                logging.INFO, "liquidation.done", owner=key[0], sub_account=key[1], keeper_reward=event.keeper_reward,
                closed_notional=event.closed_notional, fully_closed=event.fully_closed, tx=receipt.txn_hash,
            )
        for key in batch:
            self.stale.add(key)
            if key not in done:
                report.lost_races += 1
                self._emit(logging.INFO, "liquidation.lost_race", owner=key[0], sub_account=key[1], stage="block")

    def _liquidate(self, evaluation: Evaluation, report: PassReport) -> bool:
        candidates = evaluation.liquidatable
        report.liquidatable_accounts.update(candidates)
        sent = False
        for i in range(0, len(candidates), self.batch_size):
            if self._stop.is_set():
                break
            sent |= self._liquidate_batch(candidates[i : i + self.batch_size], report)
        return sent

    # -- auto-deleveraging -----------------------------------------------------------------------

    def _adl_plans(self, evaluation: Evaluation) -> list[AdlPlan]:
        snapshot = self.snapshot
        plans = []
        for market_id in sorted(snapshot.terms):
            if snapshot.model.uncovered_deficit.get(market_id, 0) > 0:
                if not evaluation.bankrupt:
                    self._warn_once(f"nobankrupt:{market_id}", "adl.no_bankrupt_account", market=market_id)
                    continue
                plan = plan_deficit_adl(snapshot, self.states, market_id, evaluation.bankrupt[0])
            else:
                plan = plan_pnl_factor_adl(snapshot, self.states, market_id)
            if plan is not None:
                plans.append(plan)
        return plans

    def _verify_adl(self, plan: AdlPlan, report: PassReport) -> bool:
        """The plan replays on the model and the contract's views agree with the model."""
        lq, block = self.deployment.liquidator, self.snapshot.block
        try:
            replay_adl(self.snapshot, self.states, plan)
        except ModelRevert as err:
            report.errors += 1
            self._emit(logging.ERROR, "adl.plan_rejected", market=plan.market_id, reason=err.reason)
            return False
        if plan.trigger == TRIGGER_PNL_FACTOR:
            onchain = lq.pnl_factor(plan.market_id, block_id=block)
            model = self.snapshot.model.pnl_factor(plan.market_id)
            if onchain != model:
                report.errors += 1
                self._emit(logging.ERROR, "adl.pnl_factor_mismatch", market=plan.market_id, model=model, chain=onchain)
                return False
        for t in plan.targets:
            onchain = lq.adl_score(t.account[0], t.account[1], plan.market_id, block_id=block)
            if onchain != t.score:
                report.errors += 1
                self._emit(
                    logging.ERROR, "adl.score_mismatch", market=plan.market_id, owner=t.account[0],
                    sub_account=t.account[1], model=t.score, chain=onchain,
                )
                return False
        return True

    def _execute_adl(self, plan: AdlPlan, report: PassReport) -> bool:
        if not self._verify_adl(plan, report):
            return False
        lq = self.deployment.liquidator
        try:
            # right before sending: still our turn (the pass may have outlasted it), and the call
            # succeeds on the pending state (transactions already in the node's pool included)
            if not self._adl_turn(plan, self.chain.blocks.head.number)[0]:
                self._emit(logging.INFO, "adl.turn_over", market=plan.market_id)
                return False
            closed = lq.auto_deleverage.call(*plan.call_args(), sender=self.account, block_id="pending")
            if closed != plan.total_size:
                report.errors += 1
                self._emit(
                    logging.ERROR, "adl.simulation_mismatch", market=plan.market_id, expected=plan.total_size, simulated=closed
                )
                return False
            receipt = self._send(lq.auto_deleverage, *plan.call_args())
        except Exception as err:
            reason = revert_reason(err)
            if reason is None:
                raise
            if reason in ADL_RACE_REASONS:
                report.lost_races += 1
                self._emit(logging.INFO, "adl.lost_race", market=plan.market_id, reason=reason)
            else:
                report.errors += 1
                self._emit(logging.ERROR, "adl.reverted", market=plan.market_id, reason=reason)
            self.stale.update(t.account for t in plan.targets)
            return False
        report.transactions += 1
        for event in receipt.decode_logs(lq.AutoDeleveraged):
            report.adl_targets += 1
            self._emit(
                logging.INFO, "adl.done", market=event.market_id, owner=event.owner, sub_account=event.sub_account,
                trigger=event.trigger, score=event.score, size_closed=event.size_closed, price=event.price,
                realized_pnl=event.realized_pnl, haircut=event.haircut,
                tx=receipt.txn_hash,
            )
        self.stale.update(t.account for t in plan.targets)
        if plan.trigger == TRIGGER_DEFICIT:
            self.stale.add(plan.bankrupt)
        return True

    def _trigger_since(self, plan: AdlPlan, block: int) -> int:
        """The block since which the plan's trigger holds: for a deficit, the block it was
        recorded in (the same for every keeper); for the PnL factor, which no event marks, the
        first block at which this keeper saw it hold."""
        if plan.trigger == TRIGGER_DEFICIT:
            return self.deficit_since.get(plan.market_id, block)
        return self._pnl_trigger_since.setdefault(plan.market_id, block)

    def _adl_turn(self, plan: AdlPlan, block: int) -> tuple[bool, int]:
        """`adl_turn` among the indexed ADL keepers (and this one: its role is checked on chain,
        its grant may predate the indexed blocks)."""
        keepers = {k for k, allowed in self.adl_keepers.items() if allowed} | {self.address}
        return adl_turn(self.address, keepers, self._trigger_since(plan, block), block, self.adl_turn_blocks)

    def _deleverage(self, evaluation: Evaluation, report: PassReport) -> bool:
        plans = self._adl_plans(evaluation)
        pnl_markets = {p.market_id for p in plans if p.trigger == TRIGGER_PNL_FACTOR}
        for market_id in set(self._pnl_trigger_since) - pnl_markets:
            del self._pnl_trigger_since[market_id]  # trigger 2 no longer holds there
        if not plans:
            return False
        if not self.deployment.liquidator.adl_keeper(self.address):
            self._warn_once("adl_role", "adl.no_role", keeper=self.address, markets=[p.market_id for p in plans])
            return False
        head = self.chain.blocks.head.number
        sent = False
        for plan in plans:
            if self._stop.is_set():
                break
            ours, next_turn = self._adl_turn(plan, head)
            if not ours:
                if self._turn_logged.get(plan.market_id) != next_turn:
                    self._turn_logged[plan.market_id] = next_turn
                    self._emit(
                        logging.INFO, "adl.waiting_turn", market=plan.market_id, trigger=plan.trigger, block=head,
                        next_turn=next_turn,
                    )
                continue
            sent |= self._execute_adl(plan, report)
        return sent

    # -- passes ----------------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """Index new events, refresh state, liquidate, ADL, checkpoint. Lost races are logged,
        never raised; RPC errors propagate (run_forever backs off and retries)."""
        started = time.perf_counter()
        report = PassReport()
        for _ in range(self.max_rounds):
            report.rounds += 1
            evaluation = self.sync(report)
            if self._stop.is_set():
                break
            if self._liquidate(evaluation, report):
                continue  # re-sync: slices left, or a bankruptcy to deleverage
            if not self._deleverage(evaluation, report):
                break
        self.save_checkpoint()
        report.liquidatable = len(report.liquidatable_accounts)
        report.duration = time.perf_counter() - started
        self.last_report = report
        self._emit(
            logging.INFO, "pass", block=report.block, accounts=report.accounts, liquidatable=report.liquidatable,
            liquidated=report.liquidated, keeper_reward=report.keeper_reward, adl_targets=report.adl_targets,
            lost_races=report.lost_races, errors=report.errors, transactions=report.transactions,
            new_accounts=report.new_accounts, refreshed=report.refreshed, unpriced=report.unpriced, rounds=report.rounds,
            duration=round(report.duration, 3),
        )
        return report

    def _backoff(self, err: Exception, delay: float) -> None:
        if is_rpc_error(err):
            self._emit(logging.WARNING, "rpc.error", error=f"{type(err).__name__}: {err}"[:300], retry_in=delay)
        else:
            self.log.exception("pass failed", extra={"event": "pass.failed", "fields": {"retry_in": delay}})

    def run_with_retry(self, attempts: int = 5, stop: threading.Event | None = None) -> PassReport | None:
        """One pass for cron: retried with backoff on errors; None if every attempt failed."""
        self._stop = stop or self._stop
        delay = self.backoff_initial
        for _ in range(attempts):
            try:
                return self.run_once()
            except Exception as err:
                self._backoff(err, delay)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.backoff_max)
        return None

    def run_forever(self, interval: float = 2.0, stop: threading.Event | None = None) -> None:
        """Passes every `interval` seconds until `stop` is set; exponential backoff (capped at
        `backoff_max`) while passes fail. A pass in flight completes before stopping."""
        self._stop = stop = stop or threading.Event()
        delay = self.backoff_initial
        self._emit(logging.INFO, "keeper.start", keeper=self.address, block=self.block, accounts=len(self.accounts))
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                    delay, wait = self.backoff_initial, interval
                except Exception as err:
                    self._backoff(err, delay)
                    wait, delay = delay, min(delay * 2, self.backoff_max)
                stop.wait(wait)
        except KeyboardInterrupt:
            self._emit(logging.INFO, "keeper.interrupted")
        finally:
            self._emit(logging.INFO, "keeper.stopped", block=self.block, accounts=len(self.accounts))


def install_signal_handlers(stop: threading.Event, logger: logging.Logger | None = None) -> dict:
    """SIGINT and SIGTERM set `stop` (the keeper finishes its pass and exits). Returns the
    previous handlers. Main thread only."""
    log = logger or logging.getLogger("perpdex.keeper")

    def handler(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        log.info(f"keeper.signal signal={name}", extra={"event": "keeper.signal", "fields": {"signal": name}})
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def default_checkpoint_path(chain_id: int, directory: Path | str) -> Path:
    return Path(directory) / f"keeper-{chain_id}.json"
