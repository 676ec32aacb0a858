"""The demo's checks of DESIGN.md's invariants, from on-chain state after every keeper pass.

Invariants 1-4 and 6 after each pass (`check_invariants`), invariant 5 over the whole replay
(`check_actions`). Invariant 4 is checked as DESIGN.md states it, with one exception that is
counted and reported, never hidden (`CapacityWaits`): an account with negative equity whose
every market with a position has no liquidation capacity left at the current index. The
keeper cannot touch it until a market's index changes (docs/DECISIONS.md, "Crash replay").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perpdex.fixed_point import WAD
from perpdex.model import ExchangeModel
from perpdex.snapshot import apply_accounts, apply_markets


def usd(wad: int) -> float:
    return wad / WAD


@dataclass
class InvariantLog:
    checked: dict[str, int] = field(default_factory=dict)

    def ok(self, name: str, condition: bool, detail: str = "") -> None:
        if not condition:
            raise AssertionError(f"invariant broken: {name} {detail}")
        self.checked[name] = self.checked.get(name, 0) + 1


@dataclass
class CapacityWaits:
    """Accounts left with negative equity after a keeper pass because every market they hold a
    position in has used up its liquidation capacity at the current index. An episode lasts
    from the first check that finds the account so to the first that finds it at equity >= 0
    (or the replay's end, which the final strict check refuses)."""

    active: dict = field(default_factory=dict)  # account -> [since, worst equity, checks]
    episodes: list = field(default_factory=list)  # (account, since, until, worst equity, checks)

    def wait(self, account, equity: int, now: int) -> None:
        since, worst, checks = self.active.get(account, (now, equity, 0))
        self.active[account] = [since, min(worst, equity), checks + 1]

    def settle(self, waiting: set, now: int) -> None:
        """Close the episodes of the accounts no longer waiting at this check."""
        for account in [a for a in self.active if a not in waiting]:
            since, worst, checks = self.active.pop(account)
            self.episodes.append((account, since, now, worst, checks))

    def summary(self) -> dict:
        episodes = self.episodes + [(a, s, None, w, c) for a, (s, w, c) in self.active.items()]
        durations = [until - since for _, since, until, _, _ in episodes if until is not None]
        return {
            "episodes": len(episodes),
            "accounts": len({e[0] for e in episodes}),
            "checks_waiting": sum(e[4] for e in episodes),
            "worst_equity_usd": usd(min((e[3] for e in episodes), default=0)),
            "longest_wait_seconds": max(durations, default=0),
            "total_wait_seconds": sum(durations),
            "open_at_end": len(self.active),
        }


def capacity_bound(d, model: ExchangeModel, account) -> bool:
    """The one exception to "no negative equity once the keepers acted": the account is
    liquidatable and every market it holds a position in has no liquidation capacity left at
    its current index."""
    markets = [m for (a, m), p in model.positions.items() if a == account and p.size != 0]
    return (
        bool(markets)
        and d.liquidator.is_liquidatable(*account)
        and all(d.liquidator.liquidation_capacity(m) == 0 for m in markets)
    )


@dataclass
class DeficitLog:
    """The accounts and markets with a deficit ever recorded (their records are read back)."""

    recorded: set = field(default_factory=set)
    written_off: list = field(default_factory=list)

    def collect(self, logs: dict[str, list]) -> None:
        self.recorded |= {(e.owner, e.sub_account, e.market_id) for e in logs["DeficitRecorded"]}
        self.written_off += logs["DeficitWrittenOff"]


@dataclass
class CheckResult:
    settlements: int  # the bound on rounded funding settlements so far
    lv_value: int  # the liquidity vault's value
    liquidatable: list  # the known accounts still liquidatable after the pass
    waiting: int  # of them, those waiting for capacity with negative equity
    deficit: int  # the uncovered deficit outstanding


def check_invariants(
    d, known, invariants: InvariantLog, settlements: int, logs: dict[str, list], now: int, globals_, escrowed: int,
    deficits: DeficitLog, waits: CapacityWaits, strict: bool = False,
) -> CheckResult:
    """DESIGN.md invariants 1-4 and 6 from on-chain state after the keeper acted. `escrowed`:
    the fees of the open orders; `strict`: no capacity exception (the replay's last check)."""
    accounts = d.lens.accounts(known)
    system = [d.vault.liquidity_cash(), d.vault.insurance_cash(), d.vault.fee_cash(), d.vault.funding_pool_cash()]
    escrow = d.vault.order_escrow_cash()
    balance = d.collateral.balanceOf(d.vault.address) * 10**12
    invariants.ok("1 ledger balances exactly", sum(int(a.cash) for a in accounts) + sum(system) + escrow == balance)
    invariants.ok("6 order escrow holds the fees of the open orders", escrow == escrowed, f"{escrow}")

    markets = d.lens.markets()
    for m in markets:
        sizes = [int(p.size) for a in accounts for p in a.positions if int(p.market_id) == int(m.market_id)]
        bases = [int(p.open_notional) for a in accounts for p in a.positions if int(p.market_id) == int(m.market_id)]
        invariants.ok(
            "2 zero-sum positions",
            sum(s for s in sizes if s > 0) == m.long_oi and -sum(s for s in sizes if s < 0) == m.short_oi
            and sum(bases) == m.open_notional_sum,
        )

    settlements += len(logs["Trade"]) + len(logs["FundingAccrued"])
    unsettled = 0
    for m in markets:
        fpu = d.exchange.funding_per_unit(m.market_id)
        unsettled += -(int(m.long_oi) - int(m.short_oi)) * (fpu - int(m.funding_per_unit))
        for a in accounts:
            for p in a.positions:
                if int(p.market_id) == int(m.market_id):
                    unsettled += int(p.size) * (fpu - int(p.funding_snapshot))
    dust = system[3] * WAD + unsettled
    invariants.ok("3 zero-sum funding", 0 <= dust <= settlements * WAD, f"dust {dust}")

    model = ExchangeModel(token_decimals=6, globals=globals_, now=now)
    apply_markets(model, markets)
    apply_accounts(model, accounts)
    waiting, deficit = check_solvency(d, known, model, markets, invariants, deficits, waits, now, balance, system,
                                      strict)
    return CheckResult(settlements, d.exchange.liquidity_vault_value(),
                       [a for a in known if model.is_liquidatable(a)], waiting, deficit)


def check_solvency(d, known, model, markets, invariants: InvariantLog, deficits: DeficitLog, waits: CapacityWaits,
                   now: int, balance: int, system: list[int], strict: bool) -> tuple[int, int]:
    """DESIGN.md invariant 4 once the keeper acted: no account has negative equity (but for
    the capacity exception, unless `strict`), no uncovered deficit is outstanding past its
    grace period, the liquidity vault's value nets every outstanding deficit, and every
    positive claim is payable from the vault's balance. Returns how many accounts wait and
    the uncovered deficit outstanding."""
    waiting, shortfall = set(), 0
    for account in known:
        equity = model.account_view(account).equity
        if equity < 0 and not strict and capacity_bound(d, model, account):
            waits.wait(account, equity, now)
            waiting.add(account)
            shortfall -= equity
            continue
        invariants.ok("4 no negative equity after keepers", equity >= 0, f"{account}: equity {usd(equity):,.2f} USD")
    waits.settle(waiting, now)
    grace = d.liquidator.deficit_grace_period()
    outstanding = 0
    for owner, sub, market_id in sorted(deficits.recorded):
        amount, _, recorded_at = d.liquidator.deficit_record(owner, sub, market_id)
        outstanding += amount
        invariants.ok("4 no deficit outstanding past its grace period", amount == 0 or now < recorded_at + grace,
                      f"{owner}/{sub} market {market_id}: {usd(amount):,.2f} USD since {recorded_at}")
    total_deficit = d.liquidator.total_uncovered_deficit()
    per_market = sum(d.liquidator.uncovered_deficit(int(m.market_id)) for m in markets)
    invariants.ok("4 deficits recorded per account add up", outstanding == total_deficit == per_market,
                  f"{outstanding} / {total_deficit} / {per_market}")
    indices = [int(m.index_price) for m in markets]
    lv_value = d.exchange.liquidity_vault_value()
    invariants.ok("4 the LP vault's value nets the outstanding deficits",
                  lv_value == d.exchange.liquidity_vault_value_at(indices) - total_deficit, f"{lv_value}")
    # every positive claim: traders' equity, the liquidity vault's value, the insurance fund and
    # the fee receiver, out of the vault's token balance alone. A waiting account's shortfall
    # is a loss the liquidity vault has already booked as its gain: the claims may exceed the
    # balance by that much, and by no more, until the account is liquidated
    claims = sum(max(model.account_view(a).equity, 0) for a in known)
    claims += max(lv_value, 0) + max(system[1], 0) + max(system[2], 0)
    invariants.ok("4 every positive claim is payable", claims <= balance + shortfall,
                  f"{usd(claims):,.2f} vs {usd(balance):,.2f} (+ {usd(shortfall):,.2f} waiting)")
    return len(waiting), total_deficit


def accounts_at_risk(d, known, block: int, timestamp: int, globals_) -> set:
    """The known accounts that were liquidatable at `block` (its eth_call clock `timestamp`)."""
    model = ExchangeModel(token_decimals=6, globals=globals_, now=timestamp)
    apply_markets(model, d.lens.markets(block_id=block))
    apply_accounts(model, d.lens.accounts(known, block_id=block))
    return {a for a in known if model.is_liquidatable(a)}


DEMO_EVENTS = (
    ("liquidator", "Liquidation"), ("liquidator", "BadDebt"), ("liquidator", "AutoDeleveraged"),
    ("liquidator", "DeficitRecorded"), ("liquidator", "DeficitWrittenOff"),
    ("exchange", "Trade"), ("exchange", "FundingAccrued"), ("vault", "Settled"),
    ("order_book", "OrderCommitted"), ("order_book", "OrderExecuted"), ("order_book", "OrderCancelled"),
)


def fetch_events(d, first: int, last: int) -> dict[str, list]:
    """The DEMO_EVENTS of blocks first..last by name, in one eth_getLogs."""
    from ape import chain
    from ape.types import LogFilter
    from eth_utils import encode_hex, keccak

    abis = [getattr(getattr(d, contract), name).abi for contract, name in DEMO_EVENTS]
    log_filter = LogFilter(
        addresses=sorted({getattr(d, contract).address for contract, _ in DEMO_EVENTS}),
        events=abis,
        topic_filter=[[encode_hex(keccak(text=abi.selector)) for abi in abis]],
        start_block=first,
        stop_block=last,
    )
    by_name: dict[str, list] = {name: [] for _, name in DEMO_EVENTS}
    for log in chain.provider.get_contract_logs(log_filter):
        by_name[log.event_name].append(log)
    return by_name


@dataclass
class EventLog:
    """The replay's money-moving events, gathered pass by pass over the few new blocks."""

    liquidations: list = field(default_factory=list)
    bad_debt: list = field(default_factory=list)
    adl: list = field(default_factory=list)
    trades: list = field(default_factory=list)
    accruals: list = field(default_factory=list)
    insurance_in: int = 0

    def collect(self, logs: dict[str, list]) -> None:
        self.liquidations += logs["Liquidation"]
        self.bad_debt += logs["BadDebt"]
        self.adl += logs["AutoDeleveraged"]
        self.trades += logs["Trade"]
        self.accruals += logs["FundingAccrued"]
        self.insurance_in += sum(e.insurance for e in logs["Settled"] if e.insurance > 0)


def check_actions(events: EventLog, risk_log, invariants: InvariantLog) -> None:
    """Invariant 5 over the whole replay: every liquidation hit an account that was unhealthy
    when the keeper's pass began; no ADL took a loss-maker or more than the profit."""
    for first, last, at_risk in risk_log:
        for event in events.liquidations:
            if first <= event.block_number <= last:
                invariants.ok("5 no wrongful liquidation", (event.owner, event.sub_account) in at_risk)
    for event in events.adl:
        invariants.ok("5 ADL never takes principal", event.realized_pnl > 0 and event.haircut <= event.realized_pnl)
