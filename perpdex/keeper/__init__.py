"""The keeper (DESIGN.md, Keepers and Orders): liquidates, auto-deleverages, executes and
cancels orders.

The decisions are plain Python over the reference model, with no chain client, so that ape,
web3 or titanoboa can drive them and tests need no chain:
- `core`: the exchange at one block (`Snapshot`) and every account's health.
- `adl`: which positions to auto-deleverage, and the turns between ADL keepers.
- `orders`: which orders to execute at which oracle rounds, which to cancel.
- `log`: the structured log (key=value for people, JSON for machines).
The transport and the loop:
- `chain`: ape reads and sends (indexing, state, simulate-then-send, checkpoint file).
- `runner`: `Keeper`, one pass after another.
"""

from perpdex.keeper.adl import (
    ADL_RACE_REASONS,
    ADL_TURN_BLOCKS,
    ADL_TURN_MARGIN,
    MAX_ADL_TARGETS,
    TRIGGER_DEFICIT,
    TRIGGER_PNL_FACTOR,
    ZERO_ADDRESS,
    AdlPlan,
    AdlTarget,
    adl_turn,
    plan_adl,
    plan_deficit_adl,
    plan_pnl_factor_adl,
    rank_adl_candidates,
    realized_at_index,
    replay_adl,
    smallest_close,
)
from perpdex.keeper.chain import (
    ChainClient,
    default_checkpoint_path,
    is_nonce_error,
    is_rpc_error,
    revert_reason,
)
from perpdex.keeper.core import (
    MAX_BATCH,
    AccountKey,
    AccountState,
    Evaluation,
    Health,
    MarketTerms,
    Snapshot,
    states_from_model,
    take_turn,
)
from perpdex.keeper.log import JsonFormatter, KeyValueFormatter, configure_logging
from perpdex.keeper.runner import CHECKPOINT_VERSION, Keeper, PassReport, install_signal_handlers

__all__ = [
    "ADL_RACE_REASONS", "ADL_TURN_BLOCKS", "ADL_TURN_MARGIN", "CHECKPOINT_VERSION", "MAX_ADL_TARGETS", "MAX_BATCH",
    "TRIGGER_DEFICIT", "TRIGGER_PNL_FACTOR", "ZERO_ADDRESS", "AccountKey", "AccountState", "AdlPlan", "AdlTarget",
    "ChainClient", "Evaluation", "Health", "JsonFormatter", "Keeper", "KeyValueFormatter", "MarketTerms",
    "PassReport", "Snapshot", "adl_turn", "configure_logging", "default_checkpoint_path", "install_signal_handlers",
    "is_nonce_error", "is_rpc_error", "plan_adl", "plan_deficit_adl", "plan_pnl_factor_adl", "rank_adl_candidates",
    "realized_at_index", "replay_adl", "revert_reason", "smallest_close", "states_from_model", "take_turn",
]
