"""Which liquidity-vault requests to execute or cancel now, in plain Python (no chain client).

A request executes at the first round of every listed market published at least `min_delay`
after it (each feed's first round at or after the request's `not_before`, in the exchange's
`market_ids` order), while it has not expired; an expired request can only be cancelled, by
anyone, for its fee. The rounds come from the same `MarketFeeds` the order executor reads
(perpdex/keeper/orders.py), and the same `round_price` says whether the oracle would accept
them now; a request whose first round the oracle would refuse (stale by now, feeds disagreeing)
can never execute and waits for its expiry. The contract decides fill or cancel at execution
(the open-interest cap, an insolvent vault): the executor earns the fee either way.

Only an LP executor (`LiquidityVault.lp_executor`) executes from the request's `not_before`; a
keeper without the role waits `OPEN_EXECUTION_AFTER` more, as the contract asks. The keeper runs
this pass after its liquidations and order executions, so the flows it places come after what
the round's trades and liquidations book (docs/SECURITY.md, finding 9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from perpdex.keeper.orders import WAIT_NO_FEEDS, MarketFeeds, round_price
from perpdex.lp_flows import LpRequest, open_execution_at
from perpdex.orders import RoundPrice

EXECUTE = "execute"
CANCEL = "cancel"


@dataclass(frozen=True)
class LpAction:
    action: str  # EXECUTE or CANCEL
    request_id: int
    redemption: bool
    round_ids: tuple[tuple[int, ...], ...] = ()  # EXECUTE: per listed market, one round id per feed
    rounds: Mapping[int, RoundPrice] = field(default_factory=dict)  # EXECUTE: market -> what the oracle returns
    due_since: int = 0  # when the action became possible: turns between keepers start there


@dataclass
class LpDecisions:
    actions: list[LpAction] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)  # request -> why not now


def execution_rounds(
    request: LpRequest, markets: Mapping[int, MarketFeeds], market_ids: Sequence[int], now: int
) -> tuple[tuple[tuple[int, ...], ...], dict[int, RoundPrice]] | str:
    """The request's execution rounds (per market in `market_ids` order, one id per feed) and
    their RoundPrice, or why there are none yet ("market <id>: <reason>")."""
    round_ids: list[tuple[int, ...]] = []
    rounds: dict[int, RoundPrice] = {}
    for market_id in market_ids:
        market = markets.get(market_id)
        if market is None or not market.feeds:
            return f"market {market_id}: {WAIT_NO_FEEDS}"
        ids = []
        for feed in market.feeds:
            first = feed.first_round_since(request.not_before)
            if isinstance(first, str):
                return f"market {market_id}: {first}"
            ids.append(first)
        rp = round_price(market, tuple(ids), now)
        if isinstance(rp, str):
            return f"market {market_id}: {rp}"
        round_ids.append(tuple(ids))
        rounds[market_id] = rp
    return tuple(round_ids), rounds


def decide_lp_requests(
    requests: Mapping[int, LpRequest], markets: Mapping[int, MarketFeeds], market_ids: Sequence[int], now: int,
    lp_executor: bool = True,
) -> LpDecisions:
    """What to do with every open request at `now` (the timestamp the transactions land at):
    cancel the expired ones, execute those whose rounds have all been published (a keeper
    without the LP executor role only from `open_execution_at`), and say why the others wait.
    Oldest requests first."""
    decisions = LpDecisions()
    for request_id in sorted(requests):
        r = requests[request_id]
        if now >= r.expiry:
            decisions.actions.append(LpAction(CANCEL, request_id, r.redemption, due_since=r.expiry))
            continue
        if not lp_executor and now < open_execution_at(r):
            decisions.waiting[request_id] = f"only an LP executor may execute before {open_execution_at(r)}"
            continue
        chosen = execution_rounds(r, markets, market_ids, now)
        if isinstance(chosen, str):
            decisions.waiting[request_id] = chosen
            continue
        round_ids, rounds = chosen
        due = max((rp.published for rp in rounds.values()), default=r.not_before)
        if not lp_executor:
            due = max(due, open_execution_at(r))
        decisions.actions.append(LpAction(EXECUTE, request_id, r.redemption, round_ids, rounds, due))
    return decisions


def walk_anchors(requests: Mapping[int, LpRequest], market_ids: Sequence[int]) -> dict[int, int]:
    """Market -> the oldest publication time the open requests need read back to (their
    earliest `not_before`): what the feed walk of every listed market must reach."""
    if not requests:
        return {}
    oldest = min(r.not_before for r in requests.values())
    return {market_id: oldest for market_id in market_ids}
