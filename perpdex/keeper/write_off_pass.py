"""The keeper's write-off pass (DESIGN.md, Insurance fund): once ADL can no longer cover a
bankrupt account's recorded deficit in a market (no position left on the side it would be taken
from) or its grace period is over, anyone may write it off and the liquidity vault's cash pays
the account back to zero. The decision is `adl.plan_write_offs` over the model; this mixin reads
the records the decision needs and sends `Liquidator.write_off`."""

from __future__ import annotations

import logging

from perpdex.keeper.adl import plan_write_offs
from perpdex.keeper.core import Evaluation
from perpdex.keeper.log import Usd

# write-off reverts that mean another keeper (or an ADL) got there first
WRITE_OFF_RACE_REASONS = ("liquidator: no deficit recorded for this account in this market",)


class WriteOffPass:
    """Mixed into perpdex.keeper.runner.Keeper."""

    def _read_deficit_records(self, evaluation: Evaluation, block: int) -> None:
        """The deficit records of the bankrupt accounts, into the snapshot's model (bankruptcies
        are rare: a read per bankrupt account and market with a deficit)."""
        model = self.snapshot.model
        for key in evaluation.bankrupt:
            for market_id, deficit in model.uncovered_deficit.items():
                if deficit == 0:
                    continue
                amount, side, recorded_at = self.client.deficit_record(key, market_id, block)
                if amount:
                    model.deficit_records[(key, market_id)] = [int(amount), int(side), int(recorded_at)]

    def _write_offs(self, evaluation: Evaluation, report) -> bool:
        """Send every write-off the model accepts; True if any was sent."""
        sent = False
        for key, market_id in plan_write_offs(self.snapshot, evaluation):
            try:
                receipt = self.client.write_off(key, market_id)
            except Exception as err:
                reason = self.client.revert_reason(err)
                if reason is None:
                    raise
                if reason in WRITE_OFF_RACE_REASONS:
                    report.lost_races += 1
                    self._emit(logging.INFO, "write_off.lost_race", market=market_id, owner=key[0], reason=reason)
                else:
                    report.errors += 1
                    self._emit(logging.ERROR, "write_off.reverted", market=market_id, owner=key[0], reason=reason)
                self.stale.add(key)
                continue
            report.transactions += 1
            sent = True
            for event in self.client.write_off_events(receipt):
                self._emit(
                    logging.INFO, "write_off.done", market=event.market_id, owner=event.owner,
                    sub_account=event.sub_account, amount=Usd(event.amount), tx=receipt.txn_hash,
                )
            self.stale.add(key)
        return sent
