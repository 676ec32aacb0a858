"""The replay loop: oracle rounds, the population's orders and the keeper, in time order.

`Simulation(config).run()` deploys perpdex on titanoboa (perpdex.sim.chain), seeds the liquidity
vault and the insurance fund, draws the population (perpdex.sim.population) and walks one
timeline, at a fixed clock, of:

- **rounds** the feeds publish along the candles (perpdex.sim.publication), each followed
  `keeper_latency_blocks` blocks later by a pass of the keeper (`perpdex.keeper.Keeper` on the
  titanoboa transport, perpdex.sim.transport): liquidations, ADL, write-offs, order and LP
  request executions, all decided by the keeper's decision core;
- **trader actions**: a deposit and a market order at each trader's entry (the keeper executes
  it at the next round), its stop-loss and take-profit committed once the opening order has
  filled, a reduce-only market order at its exit; LP deposit requests at the start;
- **step ends** (each candle's end): the state recorded for the report and DESIGN.md's
  invariants checked from storage (perpdex.sim.invariants); invariant 4 ("after keepers
  act") right after the keeper's pass when a round is still waiting for it.
"""

from __future__ import annotations

import gc
import heapq
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import boa

from perpdex.fixed_point import WAD
from perpdex.keeper import Keeper
from perpdex.model import NO_CAPACITY_REASON
from perpdex.orders import KIND_MARKET, KIND_STOP_LOSS, KIND_TAKE_PROFIT
from perpdex.raw_state import RawState
from perpdex.sim.chain import FEED_DECIMALS, TOKEN_DECIMALS, Chain, SimDeployment, SimRevert, deploy
from perpdex.sim.config import SimConfig, max_leverage
from perpdex.sim.evm import fast_evm
from perpdex.sim.invariants import InvariantChecker
from perpdex.sim.population import Population, Trader, address_of, sample_population
from perpdex.sim.publication import Round, feed_rounds, load_candles, merged_rounds, resample
from perpdex.sim.transport import BoaClient, SimAccount

ROUND, ACTION, KEEPER, STEP = 0, 1, 2, 3  # the order of events in one second
SETUP_SECONDS = 600  # the deployment happens this long before the window opens
WATCHED = ("vault", "exchange", "liquidator", "order_book", "oracle", "liquidity_vault")


@dataclass
class StepRecord:
    """The state at a step's end, for the report's series."""

    time: int
    prices: dict[int, float]
    long_oi: dict[int, float]  # base units
    short_oi: dict[int, float]
    insurance_fund: float  # USD
    lv_value: float
    lp_pnl: float
    uncovered_deficit: float
    funding: dict[int, float]  # USD owed by traders during the step (negative: received)
    liquidations: int
    adl_targets: int
    transactions: int


class KeeperErrors(logging.Handler):
    """The keeper's error lines during a replay, counted by event and reason. An ADL plan the
    keeper's model refuses because the liquidation capacity at the current index is used up is
    what a crash brings (the plan waits for the next price): it is only counted. Any other error
    is printed to stderr the first time it happens, then counted."""

    EXPECTED = frozenset({NO_CAPACITY_REASON})

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None) or record.getMessage()
        reason = getattr(record, "fields", {}).get("reason")
        key = f"{event}: {reason}" if reason else event
        if key not in self.counts and reason not in self.EXPECTED:
            sys.stderr.write(f"keeper error (later ones of this kind only counted): {record.getMessage()}\n")
        self.counts[key] = self.counts.get(key, 0) + 1


@dataclass
class Timing:
    setup: float = 0.0
    replay: float = 0.0
    keeper: float = 0.0
    checks: float = 0.0
    actions: float = 0.0
    publication: float = 0.0


@dataclass
class Simulation:
    config: SimConfig
    on_step: Callable[[Simulation, int], None] | None = None  # called before each step's checks
    progress: bool = False
    records: list[StepRecord] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)

    # -- setup -----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Candles, rounds, the deployment, the seeds and the population."""
        started = time.perf_counter()
        cfg = self.config
        files = cfg.price_files()
        self.candles = {}
        for market, path in sorted(files.items()):
            candles = load_candles(path, cfg.start or 0, cfg.end or 2**63)
            if cfg.resample:
                candles = resample(candles, cfg.resample)
            if not candles:
                raise ValueError(f"{path}: no candles in the window")
            self.candles[market] = candles
        self.start = min(c[0].time for c in self.candles.values())
        self.steps = sorted({c.time + c.duration for cs in self.candles.values() for c in cs})
        self.end = self.steps[-1]
        self.first = {m: c[0].open for m, c in self.candles.items()}
        self.rounds: list[Round] = merged_rounds(*(
            feed_rounds(c, m, self.first[m], cfg.deviation, cfg.heartbeat) for m, c in self.candles.items()
        ))

        boa.env.enable_fast_mode()
        self.chain = Chain(self.start - SETUP_SECONDS)
        self.owner = address_of("owner", 0, cfg.seed)
        self.keeper_address = address_of("keeper", 0, cfg.seed)
        deploy_config = cfg.deploy_config()
        d = self.d = deploy(deploy_config, self.owner, {m: self._answer(p) for m, p in self.first.items()})
        self.chain.watch({name: getattr(d, name) for name in WATCHED})
        # the compiled contracts are a large graph of Python objects that lives as long as the
        # run: out of the collector's reach, py-evm's many short-lived objects do not make
        # every collection walk it again
        gc.collect()
        gc.freeze()
        self.raw = RawState(d)
        self.fee = deploy_config.order_params.execution_fee
        self.answers = {m: self._answer(p) for m, p in self.first.items()}
        self.lp_in = 0.0
        with boa.env.prank(self.owner):
            d.liquidator.set_adl_keeper(self.keeper_address, True)
            d.liquidity_vault.set_lp_executor(self.keeper_address, True)
        if cfg.lp_seed_usd:
            amount = self._mint(self.owner, cfg.lp_seed_usd, d.liquidity_vault)
            self.chain.transact(self.owner, d.liquidity_vault.deposit, amount, self.owner)
            self.lp_in += cfg.lp_seed_usd
        if cfg.insurance_seed_usd:
            amount = self._mint(self.owner, cfg.insurance_seed_usd, d.insurance_fund)
            self.chain.transact(self.owner, d.insurance_fund.donate, amount)
        self.client = BoaClient(d, self.chain, SimAccount(self.keeper_address))
        # the keeper's errors are counted (report.json's keeper_errors), not printed line by line
        keeper_log = logging.Logger("perpdex.sim.keeper", logging.ERROR)  # this run's own, not the global tree's
        self.keeper_errors = KeeperErrors()
        keeper_log.addHandler(self.keeper_errors)
        self.keeper = Keeper(d, self.client.account, client=self.client, logger=keeper_log, start_block=1)
        leverages = {m.id: max_leverage(m.params) for m in deploy_config.markets}
        self.population: Population = sample_population(
            cfg.population, cfg.seed, sorted(self.candles), leverages, self.start, self.end
        )
        self.by_address = {t.address: t for t in self.population.traders}
        self.known = [(t.address, 0) for t in self.population.traders] + [(self.keeper_address, 0)]
        self.checker = InvariantChecker(d, self.raw, 10 ** (18 - TOKEN_DECIMALS))
        self.opening: dict[int, Trader] = {}  # opening order id -> trader
        self.refusals: dict[str, int] = {}  # traders' refused transactions by reason
        self._fills_seen = 0  # the part of the event log already looked at for opening fills
        self.timing.setup = time.perf_counter() - started

    def _answer(self, price: float) -> int:
        return int(round(price * 10**FEED_DECIMALS))

    def _mint(self, who: str, usd: float, spender) -> int:
        amount = int(round(usd * 10**TOKEN_DECIMALS))
        self.chain.transact(self.owner, self.d.collateral.mint, who, amount)
        self.chain.transact(who, self.d.collateral.approve, spender.address, 2**256 - 1)
        return amount

    # -- the replay ------------------------------------------------------------------------------

    def run(self) -> dict:
        """Prepare, replay, and return the report's content (perpdex.sim.report.summarize)."""
        from perpdex.sim.report import summarize

        with fast_evm():
            self.prepare()
            started = time.perf_counter()
            self.replay()
            self.timing.replay = time.perf_counter() - started
            return summarize(self)

    def _timeline(self) -> list:
        events, seq = [], 0
        for r in self.rounds:
            events.append((r.time, ROUND, seq, "round", r))
            seq += 1
        for t in self.population.traders:
            events.append((t.entry_time, ACTION, seq, "entry", t))
            seq += 1
            if t.exit_time is not None and t.exit_time < self.end:
                events.append((t.exit_time, ACTION, seq, "exit", t))
                seq += 1
        for lp in self.population.lps:
            events.append((self.start, ACTION, seq, "lp", lp))
            seq += 1
        for i, s in enumerate(self.steps):
            events.append((s, STEP, seq, "step", i))
            seq += 1
        # the window opens with a round at the first prices (the feeds' first rounds are the setup's)
        for m in sorted(self.first):
            events.append((self.start, ROUND, -1 - m, "round", Round(self.start, m, self.first[m], "heartbeat")))
        heapq.heapify(events)
        self._seq = seq
        return events

    def replay(self) -> None:
        events = self._timeline()
        latency = self.config.keeper_latency_blocks * self.config.block_time
        pending_keeper: set[int] = set()
        self.solvency_due = False
        self.logs_checked = 0
        self.step_logs = 0
        self.step_tx = 0
        self.last_fpu = {m: 0 for m in self.candles}
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(self.steps), unit="step", desc="replaying", dynamic_ncols=True)
        try:
            while events:
                when, _, _, kind, payload = heapq.heappop(events)
                self.chain.set_time(when)
                if kind == "round":
                    t0 = time.perf_counter()
                    self.publish(payload)
                    self.timing.publication += time.perf_counter() - t0
                    if when + latency not in pending_keeper:
                        pending_keeper.add(when + latency)
                        self._seq += 1
                        heapq.heappush(events, (when + latency, KEEPER, self._seq, "keeper", None))
                elif kind == "keeper":
                    pending_keeper.discard(when)
                    self.keeper_pass()
                    if self.solvency_due and not pending_keeper:
                        self.check_solvency()
                elif kind == "step":
                    self.end_step(payload, bool(pending_keeper))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"tx {self.chain.transactions:,}", refresh=False)
                else:
                    t0 = time.perf_counter()
                    getattr(self, f"on_{kind}")(payload)
                    self.timing.actions += time.perf_counter() - t0
        finally:
            if bar is not None:
                bar.close()

    def publish(self, r: Round) -> None:
        self.answers[r.market] = self._answer(r.price)
        self.chain.transact(self.owner, self.d.aggregators[r.market].update_answer, self.answers[r.market])

    def keeper_pass(self) -> None:
        t0 = time.perf_counter()
        self.keeper.run_once()
        self.client.settle()  # simulated and never sent: undone
        self.timing.keeper += time.perf_counter() - t0
        t0 = time.perf_counter()
        self._commit_protection()
        if self.config.check_every_round:
            self.check_solvency(self.check_state())
        self.timing.checks += time.perf_counter() - t0

    # -- trader actions --------------------------------------------------------------------------

    def _try(self, sender: str, method, *args):
        """A trader's transaction; a refusal is counted by reason (the trader gives up)."""
        try:
            return self.chain.transact(sender, method, *args)
        except SimRevert as err:
            self.refusals[err.reason] = self.refusals.get(err.reason, 0) + 1
            return None

    def on_entry(self, t: Trader) -> None:
        d = self.d
        price = self.answers[t.market] / 10**FEED_DECIMALS
        amount = self._mint(t.address, t.collateral_usd + self.fee / WAD, d.vault)
        if self._try(t.address, d.vault.deposit, 0, amount) is None:
            return
        size = int(t.side * t.collateral_usd * t.leverage / price * WAD)
        if size == 0:
            return
        receipt = self._try(t.address, d.order_book.commit_order, 0, t.market, size, self._acceptable(price, t.side),
                            KIND_MARKET, 0, False, 0)
        if receipt is not None:
            self.opening[int(receipt.result)] = t

    def on_exit(self, t: Trader) -> None:
        size = self.raw.position(t.address, 0, t.market)[0]
        if size == 0:
            return
        price = self.answers[t.market] / 10**FEED_DECIMALS
        side = -1 if size > 0 else 1
        self._try(t.address, self.d.order_book.commit_order, 0, t.market, -size, self._acceptable(price, side),
                  KIND_MARKET, 0, True, 0)

    def on_lp(self, lp) -> None:
        lv = self.d.liquidity_vault
        amount = self._mint(lp.address, lp.deposit_usd, lv)
        self._try(lp.address, lv.request_deposit, amount, lp.address)

    def _acceptable(self, price: float, side: int) -> int:
        return int(price * (1 + side * self.config.slippage) * WAD)

    def _commit_protection(self) -> None:
        """Stop-losses and take-profits of the traders whose opening order filled since the
        last look, priced from the fill."""
        logs = self.chain.logs
        for log in logs[self._fills_seen:]:
            if log.event != "OrderExecuted":
                continue
            t = self.opening.pop(int(log.args["order_id"]), None)
            if t is None or (t.stop_loss is None and t.take_profit is None):
                continue
            size = int(log.args["size_delta"])
            fill = int(log.args["fill_price"])
            side = 1 if size > 0 else -1
            if t.stop_loss is not None:
                trigger = int(fill * (1 - side * t.stop_loss / t.leverage))
                self._try(t.address, self.d.order_book.commit_order, 0, t.market, -size,
                          int(trigger * (1 - side * 0.2)), KIND_STOP_LOSS, trigger, True, 0)
            if t.take_profit is not None:
                # a short's gain is at most the whole price: its trigger stays above a tenth of the fill
                trigger = int(fill * max(0.1, 1 + side * t.take_profit / t.leverage))
                self._try(t.address, self.d.order_book.commit_order, 0, t.market, -size,
                          int(trigger * (1 - side * 0.05)), KIND_TAKE_PROFIT, trigger, True, 0)
        self._fills_seen = len(logs)

    # -- steps and checks ------------------------------------------------------------------------

    def check_state(self) -> dict:
        """Invariants 1-3 and 5 from storage; the accounts' states as read."""
        new = self.chain.logs[self.logs_checked:]
        self.logs_checked = len(self.chain.logs)
        self.checker.check_actions(new, self.client.liquidatable_before)
        self.client.liquidatable_before.clear()
        states = self.checker.read_states(self.known)
        self.checker.check_ledger(states)
        self.checker.check_positions_and_funding(states)
        self.states = states
        return states

    def check_solvency(self, states: dict | None = None) -> None:
        """Invariant 4 on the current state; `states`: the accounts as just read from it."""
        snapshot = self.client.read_snapshot(self.chain.block, self.chain.now, lambda m, r: None)
        states = states if states is not None else self.checker.read_states(self.known)
        self.deficit = self.checker.check_solvency(states, snapshot, self.d.exchange.liquidity_vault_value())
        self.solvency_due = False

    def end_step(self, index: int, keeper_pending: bool) -> None:
        t0 = time.perf_counter()
        self.checker.step = index
        if self.on_step is not None:
            self.on_step(self, index)
            self.client.forget_reads()
            self.checker.forget()
        states = self.check_state()
        if keeper_pending:
            self.solvency_due = True  # checked once the keeper has acted on the latest round
        else:
            self.check_solvency(states)  # nothing happened since the accounts were read
        self.records.append(self.record(index))
        self.timing.checks += time.perf_counter() - t0

    def record(self, index: int) -> StepRecord:
        d, raw = self.d, self.raw
        snapshot = self.client.read_snapshot(self.chain.block, self.chain.now, lambda m, r: None)
        funding = {}
        for m in self.candles:
            fpu = snapshot.terms[m].funding_per_unit
            market = snapshot.model.markets[m]
            funding[m] = (market.long_oi - market.short_oi) * (fpu - self.last_fpu[m]) / WAD / WAD if index else 0.0
            self.last_fpu[m] = fpu
        logs = self.chain.logs[self.step_logs:]
        self.step_logs = len(self.chain.logs)
        scale = 10**TOKEN_DECIMALS
        for log in logs:  # LP money in and out, as executed
            if log.event == "DepositExecuted":
                self.lp_in += log.args["assets"] / scale
            elif log.event == "RedeemExecuted":
                self.lp_in -= log.args["assets"] / scale
        lv_value = d.exchange.liquidity_vault_value() / WAD
        record = StepRecord(
            time=self.steps[index],
            prices={m: a / 10**FEED_DECIMALS for m, a in self.answers.items()},
            long_oi={m: raw.open_interest(m)[0] / WAD for m in self.candles},
            short_oi={m: raw.open_interest(m)[1] / WAD for m in self.candles},
            insurance_fund=raw.system_cash()[1] / WAD,
            lv_value=lv_value,
            lp_pnl=lv_value - self.lp_in,
            uncovered_deficit=sum(raw.uncovered_deficit(m) for m in self.candles) / WAD,
            funding=funding,
            liquidations=sum(1 for log in logs if log.event == "Liquidation"),
            adl_targets=sum(1 for log in logs if log.event == "AutoDeleveraged"),
            transactions=self.chain.transactions - self.step_tx,
        )
        self.step_tx = self.chain.transactions
        return record
