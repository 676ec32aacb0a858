"""The keeper's liquidity-vault pass: read the open LP requests and the rounds of every listed
market, decide (perpdex.keeper.lp_decisions) which to execute or cancel now, simulate each on the
pending state, then send it. A mixin of `perpdex.keeper.runner.Keeper`, which provides `client`
(its transport), `snapshot`, `order_keepers`, `order_turn_seconds`, `max_walk`, the feed caches
`_feeds`/`_rounds`, `_stop`, `_emit` and `_warn_once`.

`LpClient` is the ape transport over the deployment's `liquidity_vault`; another transport (the
titanoboa simulator's) provides the same methods. Requests are found by id, not by events: the
pass reads the ids issued since its last pass (`LiquidityVault.last_request_id`) and re-reads
the open ones, so a restart only re-reads the ids from its cursor on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from perpdex.keeper.core import take_turn
from perpdex.keeper.log import Usd
from perpdex.keeper.lp_decisions import CANCEL, LpAction, decide_lp_requests, walk_anchors
from perpdex.keeper.orders import MarketFeeds
from perpdex.lp_flows import OPEN_EXECUTION_AFTER, LpRequest

if TYPE_CHECKING:
    from perpdex.keeper.runner import PassReport

LP_TURN_MARGIN = 2  # the last seconds of a turn: nothing is sent, what is in flight gets mined
LP_RACE_REASONS = ("liquidity vault: no open request with this id",)  # another keeper was first
ZERO_ADDRESS = "0x" + "00" * 20


class LpClient:
    """Reads and sends for the LP pass over the keeper's ape `ChainClient`."""

    def __init__(self, client):
        self.client = client
        self.vault = client.deployment.liquidity_vault
        self.views = client.view("liquidity_vault")  # view calls (perpdex.keeper.reads)

    def last_request_id(self, block: int) -> int:
        return int(self.views.last_request_id(block_id=block))

    def is_lp_executor(self, block: int) -> bool:
        """Whether the keeper's account holds the LP executor role."""
        return bool(self.views.lp_executor(self.client.account.address, block_id=block))

    def request(self, request_id: int, block: int | str) -> LpRequest | None:
        """The open request, None once executed or cancelled."""
        r = self.views.request(request_id, block_id=block)
        if str(r.requester).lower() == ZERO_ADDRESS:
            return None
        return LpRequest(
            str(r.requester), str(r.receiver), bool(r.redemption), int(r.amount), int(r.fee),
            int(r.not_before), int(r.expiry),
        )

    def _execute_method(self, redemption: bool):
        return self.vault.execute_redeem if redemption else self.vault.execute_deposit

    def simulate_execute(self, action: LpAction) -> bool:
        """eth_call the execution on the pending state: True executed, False cancelled by the
        contract; raises the revert."""
        method = self._execute_method(action.redemption)
        rounds = [list(ids) for ids in action.round_ids]
        return method.call(action.request_id, rounds, sender=self.client.account, block_id="pending")

    def execute(self, action: LpAction):
        rounds = [list(ids) for ids in action.round_ids]
        return self.client.send(self._execute_method(action.redemption), action.request_id, rounds)

    def simulate_cancel(self, request_id: int) -> None:
        self.vault.cancel_request.call(request_id, sender=self.client.account, block_id="pending")

    def cancel(self, request_id: int):
        return self.client.send(self.vault.cancel_request, request_id)

    def events(self, receipt) -> list:
        """DepositExecuted, RedeemExecuted and RequestCancelled events of a receipt."""
        return [
            *receipt.decode_logs(self.vault.DepositExecuted),
            *receipt.decode_logs(self.vault.RedeemExecuted),
            *receipt.decode_logs(self.vault.RequestCancelled),
        ]


@dataclass
class LpPassState:
    client: Any
    requests: dict[int, LpRequest] = field(default_factory=dict)
    cursor: int = 0  # the last request id read
    market_ids: list[int] = field(default_factory=list)
    markets: dict[int, MarketFeeds] = field(default_factory=dict)
    lp_executor: bool = False  # this keeper holds the LP executor role (read with the requests)
    waiting: dict[int, str] = field(default_factory=dict)  # request -> why it waits, as last logged
    turn_logged: dict[int, int] = field(default_factory=dict)


class LpPasses:
    def _lp_state(self) -> LpPassState:
        state = self.__dict__.get("_lp_pass")
        if state is None:
            client = getattr(self.client, "lp_client", None) or LpClient(self.client)
            state = self.__dict__["_lp_pass"] = LpPassState(client)
        return state

    def _sync_lp_requests(self, block: int) -> None:
        """New request ids since the last pass, the open ones re-read, and the rounds of every
        listed market back to the oldest request's `not_before`."""
        st = self._lp_state()
        last = st.client.last_request_id(block)
        for request_id in range(st.cursor + 1, last + 1):
            st.requests[request_id] = None  # read below with the open ones
        st.cursor = last
        for request_id in sorted(st.requests):
            r = st.client.request(request_id, block)
            if r is None:
                del st.requests[request_id]
            else:
                st.requests[request_id] = r
        if not st.requests:
            st.markets = {}
            return
        st.lp_executor = st.client.is_lp_executor(block)
        if not st.lp_executor:
            self._warn_once("lp:no-executor-role", "lp.no_executor_role", logging.WARNING,
                            wait_seconds=OPEN_EXECUTION_AFTER)
        st.market_ids = self.client.market_list(block)
        since = walk_anchors(st.requests, st.market_ids)
        anchors = {r.not_before for r in st.requests.values()}
        st.markets = {m: self._lp_market(m, block, since[m], anchors) for m in st.market_ids}

    def _lp_market(self, market_id: int, block: int, since: int, anchors: set[int]) -> MarketFeeds:
        return self._market_feeds(market_id, block, since, anchors, False)

    def _lp_turn(self, action: LpAction, head_time: int) -> bool:
        """As orders: always with no other keeper known, else in this keeper's turn."""
        keepers = self.order_keepers
        ours, next_turn = take_turn(
            self.address, keepers, action.due_since, head_time, self.order_turn_seconds, LP_TURN_MARGIN,
            first=action.request_id % len(keepers),
        )
        st = self._lp_state()
        if not ours and st.turn_logged.get(action.request_id) != next_turn:
            st.turn_logged[action.request_id] = next_turn
            self._emit(logging.DEBUG, "lp.waiting_turn", request=action.request_id, next_turn=next_turn)
        return ours

    def _execute_lp_requests(self, report: PassReport) -> bool:
        """Execute every LP request whose rounds have come, cancel every expired one."""
        st = self._lp_state()
        if not st.requests:
            return False
        head_time = self.snapshot.timestamp
        decisions = decide_lp_requests(st.requests, st.markets, st.market_ids, head_time + 1, st.lp_executor)
        for request_id, reason in decisions.waiting.items():
            if st.waiting.get(request_id) != reason:
                self._emit(logging.DEBUG, "lp.waiting", request=request_id, reason=reason)
        st.waiting = dict(decisions.waiting)
        sent = False
        for action in decisions.actions:
            if self._stop.is_set():
                break
            if self._lp_turn(action, head_time):
                sent |= self._lp_act(action, report)
        return sent

    def _lp_act(self, action: LpAction, report: PassReport) -> bool:
        st = self._lp_state()
        request = st.requests[action.request_id]
        kind = "redemption" if action.redemption else "deposit"
        try:
            if action.action == CANCEL:
                st.client.simulate_cancel(action.request_id)
                receipt = st.client.cancel(action.request_id)
            else:
                st.client.simulate_execute(action)
                receipt = st.client.execute(action)
        except Exception as err:
            reason = self.client.revert_reason(err)
            if reason is None:
                raise
            if reason in LP_RACE_REASONS:
                report.lost_races += 1
                self._emit(logging.INFO, "lp.lost_race", request=action.request_id, reason=reason)
                st.requests.pop(action.request_id, None)
            else:
                report.errors += 1
                self._warn_once(f"lp:{action.request_id}:{reason}", f"lp.{action.action}_refused", logging.ERROR,
                                request=action.request_id, kind=kind, reason=reason)
            return False
        report.transactions += 1
        st.requests.pop(action.request_id, None)
        for e in st.client.events(receipt):
            name = getattr(e, "event_name", None) or type(e).__name__
            fee = int(e.fee)
            if name == "RequestCancelled":
                _count(report, "lp_cancelled")
                self._emit(logging.INFO, "lp.cancelled", request=action.request_id, kind=kind, reason=e.reason,
                           amount=int(e.amount), fee_units=fee, requester=request.requester)
            else:
                _count(report, "lp_executed")
                self._emit(logging.INFO, "lp.executed", request=action.request_id, kind=kind,
                           total_assets=int(e.total_assets), deficit=Usd(int(e.deficit)),
                           fee_units=fee)
            _count(report, "lp_fees", fee)
        return True


def _count(report: PassReport, name: str, amount: int = 1) -> None:
    """A PassReport counter of the LP pass (created on first use)."""
    setattr(report, name, getattr(report, name, 0) + amount)
