"""The keeper's order passes: which orders to execute or cancel now (decided in
`perpdex.keeper.orders`), simulated, then sent in batches through the transport; a mixin of
`perpdex.keeper.runner.Keeper`, which holds the state these methods use (`orders`, `snapshot`,
`states`, `client`, `order_params`, `order_keepers`...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from perpdex.fixed_point import WAD
from perpdex.keeper.core import take_turn
from perpdex.keeper.log import Size, Usd
from perpdex.keeper.orders import CANCEL, OrderAction, apply_execution, choose_execution, decide_orders
from perpdex.orders import KIND_NAMES, ROOM_MAX_AGE, Order

if TYPE_CHECKING:
    from perpdex.keeper.runner import PassReport

OPEN_INTEREST_CAP = "order: open interest cap"  # the start of the cap's cancellation reason
ORDER_TURN_MARGIN = 2  # the last seconds of a turn: nothing is sent, what is in flight gets mined
# execute/cancel reverts that mean another keeper (or the owner) got there first
ORDER_RACE_REASONS = ("order: not open", "order: unknown order")
MAX_ORDER_BATCH = 20  # OrderBook.MAX_BATCH: orders executed in one transaction


class OrderPasses:
    def _order_turn(self, action: OrderAction, now: int) -> bool:
        """Whether this keeper may act on the order now: always when it knows of no other
        order keeper; else in its turn, the keepers rotating from one derived from the order."""
        keepers = self.order_keepers
        ours, next_turn = take_turn(
            self.address, keepers, action.due_since, now, self.order_turn_seconds, ORDER_TURN_MARGIN,
            first=action.order_id % len(keepers),
        )
        if not ours and self._order_turn_logged.get(action.order_id) != next_turn:
            self._order_turn_logged[action.order_id] = next_turn
            self._emit(logging.DEBUG, "order.waiting_turn", order=action.order_id, next_turn=next_turn)
        return ours

    def _log_waiting(self, waiting: dict[int, str]) -> None:
        for order_id, reason in waiting.items():
            if self._waiting.get(order_id) != reason:
                self._emit(logging.DEBUG, "order.waiting", order=order_id, reason=reason)
        self._waiting = dict(waiting)

    def _order_fields(self, order_id: int, order: Order) -> dict[str, Any]:
        return {
            "order": order_id, "kind": KIND_NAMES[order.kind], "owner": order.owner, "sub_account": order.sub_account,
            "market": order.market_id,
        }

    def _order_refused(self, err: Exception, order_id: int, event: str, report: PassReport, **fields: Any) -> None:
        """A simulated or sent order transaction was refused: a lost race (another keeper
        acted first) or an error logged once; anything but a revert is raised again."""
        reason = self.client.revert_reason(err)
        if reason is None:
            raise err
        if reason in ORDER_RACE_REASONS:
            self._order_lost(order_id, reason, report)
            return
        report.errors += 1
        self._warn_once(f"order:{order_id}:{reason}", event, logging.ERROR, order=order_id, reason=reason, **fields)

    def _order_lost(self, order_id: int, reason: str, report: PassReport) -> None:
        report.lost_races += 1
        self._emit(logging.INFO, "order.lost_race", order=order_id, reason=reason)
        self.orders.pop(order_id, None)  # its OrderExecuted or OrderCancelled arrives with the next logs

    def _record_order_receipt(self, receipt, order_id: int, order: Order, report: PassReport) -> None:
        executed, cancelled = self.client.order_events(receipt)
        fields = self._order_fields(order_id, order)
        for e in executed:
            if e.executor != self.address or e.order_id != order_id:
                continue
            report.orders_executed += 1
            report.order_fees += e.fee
            self._emit(
                logging.INFO, "order.executed", **fields, size=Size(e.size_delta), fill_price=Usd(e.fill_price),
                index_price=Usd(e.index_price), round_published=e.round_published, fee=Usd(e.fee), tx=receipt.txn_hash,
            )
        for e in cancelled:
            if e.by != self.address or e.order_id != order_id:
                continue
            report.orders_cancelled += 1
            report.cancel_reasons[e.reason] += 1
            if e.fee_to == self.address:
                report.order_fees += e.fee
            self._emit(logging.INFO, "order.cancelled", **fields, reason=e.reason, fee=Usd(e.fee), tx=receipt.txn_hash)
        self.orders.pop(order_id, None)
        self._touch(order.account, report)
        self._touch((self.address, 0), report)

    def _prepare_execution(self, action: OrderAction, now: int, report: PassReport, first: bool = True):
        """The rounds to execute `action`'s order at, chosen on the model and simulated on the
        pending state; None when nothing should be sent for it (it keeps waiting, or another
        keeper took it). The model snapshot is advanced as if it executed, so the next order of
        the same pass is chosen against it."""
        order_id = action.order_id
        order = self.orders[order_id]
        execution, result, model = choose_execution(
            self.snapshot, self.states, order, action, self.address, now, self.order_params
        )
        if (
            execution is not None
            and result.reason.startswith(OPEN_INTEREST_CAP)
            and self._refresh_room(now, report, abs(order.size_delta) * self.snapshot.model.index[order.market_id] // WAD)
        ):
            execution, result, model = choose_execution(
                self.snapshot, self.states, order, action, self.address, now, self.order_params
            )
        if execution is None:  # e.g. a trigger order beyond its acceptable price: it keeps resting
            self._warn_once(
                f"order:{order_id}:{result}", "order.not_executable", logging.INFO, order=order_id, reason=result
            )
            return None
        try:
            filled = bool(self.client.simulate_execute_order(order_id, execution.round_ids))
        except Exception as err:
            self._order_refused(err, order_id, "order.execution_refused", report, rounds=list(execution.round_ids))
            return None
        if filled != result.filled:  # the contract decides: logged, sent anyway
            # the eth_call sees the pending state without the orders batched before this one,
            # which the model has applied: only the first order's simulation is exact
            self._emit(
                logging.WARNING if first else logging.DEBUG, "order.simulation_mismatch", order=order_id,
                model_filled=result.filled, chain_filled=filled, model_reason=result.reason,
            )
        else:
            apply_execution(self.snapshot, self.states, order, self.address, model)
        return order_id, order, tuple(execution.round_ids)

    def _refresh_room(self, now: int, report: PassReport, need: int) -> bool:
        """The cached room of the global open-interest cap would cancel an order that needs
        about `need` (WAD USD): recompute it on chain (`refresh_open_interest_room`, O(markets))
        when a fresh room would fit it, so that reductions and LP deposits since the last
        refresh count. Whether it was sent."""
        m = self.snapshot.model
        stamp, cached = m.oi_room_cache
        if now > stamp + ROOM_MAX_AGE:
            return False  # the execution recomputes it itself
        fresh = m.fresh_open_interest_room()
        if fresh <= cached or fresh < need:
            return False
        try:
            self.client.refresh_open_interest_room()
        except Exception as err:
            if self.client.revert_reason(err) is None:
                raise
            report.errors += 1
            self._emit(logging.ERROR, "open_interest_room.refresh_refused", reason=self.client.revert_reason(err))
            return False
        report.transactions += 1
        m.oi_room_cache = (now, fresh)
        self._emit(logging.INFO, "open_interest_room.refreshed", room=Usd(fresh), was=Usd(cached))
        return True

    def _send_executions(self, batch: list, report: PassReport) -> bool:
        """One transaction for the orders of a pass: `execute_order` for one, `execute_orders`
        (which skips an order another keeper took meanwhile, never reverting) for several."""
        try:
            if len(batch) == 1:
                order_id, _, round_ids = batch[0]
                receipt = self.client.execute_order(order_id, round_ids)
            else:
                receipt = self.client.execute_orders([b[0] for b in batch], [list(b[2]) for b in batch])
        except Exception as err:
            reason = self.client.revert_reason(err)
            if reason is None:
                raise
            if len(batch) == 1 and reason in ORDER_RACE_REASONS:
                self._order_lost(batch[0][0], reason, report)
            else:
                report.errors += 1
                self._emit(logging.ERROR, "order.execution_refused", orders=[b[0] for b in batch], reason=reason)
            return False
        report.transactions += 1
        executed, cancelled = self.client.order_events(receipt)
        acted = {e.order_id for e in executed} | {e.order_id for e in cancelled}
        for order_id, order, _ in batch:
            if order_id in acted:
                self._record_order_receipt(receipt, order_id, order, report)
            else:  # skipped by the batch (another keeper took it meanwhile): the logs will say
                self._emit(logging.INFO, "order.skipped_in_batch", order=order_id, tx=receipt.txn_hash)
        return True

    def _cancel_order(self, action: OrderAction, report: PassReport) -> bool:
        order_id = action.order_id
        order = self.orders[order_id]
        try:
            self.client.simulate_cancel_order(order_id)
            receipt = self.client.cancel_order(order_id)
        except Exception as err:
            self._order_refused(err, order_id, "order.cancel_refused", report)
            return False
        report.transactions += 1
        self._record_order_receipt(receipt, order_id, order, report)
        return True

    def _execute_orders(self, report: PassReport) -> bool:
        """Execute every order whose round has come, cancel every expired one (see orders)."""
        if not self.executes_orders or not self.orders:
            return False
        head_time = self.snapshot.timestamp
        now = head_time + 1  # the earliest timestamp of the block our transactions land in
        decisions = decide_orders(self.orders, self.order_markets, now, self.order_params)
        for order_id in decisions.finished:
            self.orders.pop(order_id, None)
        for order_id in set(self._order_turn_logged) - set(self.orders):
            del self._order_turn_logged[order_id]
        self._log_waiting(decisions.waiting)
        sent = False
        batch = []
        for action in decisions.actions:
            if self._stop.is_set():
                break
            if action.order_id not in self.orders or not self._order_turn(action, head_time):
                continue
            if action.action == CANCEL:
                sent |= self._cancel_order(action, report)
                continue
            prepared = self._prepare_execution(action, now, report, first=not batch)
            if prepared is not None:
                batch.append(prepared)
            if len(batch) == MAX_ORDER_BATCH:
                sent |= self._send_executions(batch, report)
                batch = []
        if batch and not self._stop.is_set():
            sent |= self._send_executions(batch, report)
        return sent

