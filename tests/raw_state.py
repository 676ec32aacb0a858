"""The storage readers live in perpdex/raw_state.py (the simulator reads them too); the tests
import them from here as before."""

from perpdex.raw_state import CASH_OFFSET, HALF_OFFSET, MASK64, MASK128, RawState, mapping_slot, storage_slots

__all__ = ["CASH_OFFSET", "HALF_OFFSET", "MASK64", "MASK128", "RawState", "mapping_slot", "storage_slots"]
