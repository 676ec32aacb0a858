"""The contracts' state read straight from EVM storage, without executing any code.

A view call runs the contract (the exchange's account views read the oracle and value every
market); a storage read is a dictionary lookup. The stateful fuzzers compare the whole state
with `perpdex.model` and check the ledger invariants after every step, so they read storage
here and run the views every few steps only (tests/system.py, tests/fuzz/test_stateful.py); the
crash-replay simulator (perpdex/sim) checks its invariants the same way.

Slots come from the compiler's storage layout of each deployed contract, so a reordered or
added storage variable cannot silently shift what is read; the packings are the contracts'
(see the STORAGE sections of contracts/Vault.vy and contracts/Exchange.vy), and
tests/unit/test_raw_state.py checks every reader against the matching view.
"""

from __future__ import annotations

from functools import lru_cache

import boa
from eth_utils import keccak, to_canonical_address
from vyper.compiler.output import build_layout_output

MASK64 = 2**64 - 1
MASK128 = 2**128 - 1
CASH_OFFSET = 2**191  # Vault: cash is an int192 stored as cash + 2**191
HALF_OFFSET = 2**127  # Vault system balances and Exchange packings: int128 + 2**127


def storage_slots(contract) -> dict[str, int]:
    """Storage variable name -> slot; variables of initialized modules as "module.name"."""
    layout = build_layout_output(contract.compiler_data)["storage_layout"]
    slots = {}
    for name, entry in layout.items():
        if "slot" in entry:
            slots[name] = entry["slot"]
        else:  # a module's variables
            for inner, sub in entry.items():
                slots[f"{name}.{inner}"] = sub["slot"]
    return slots


def _word(key) -> bytes:
    if isinstance(key, str):
        return bytes(12) + to_canonical_address(key)
    if hasattr(key, "canonical_address"):
        return bytes(12) + key.canonical_address
    return int(key).to_bytes(32, "big")


@lru_cache(maxsize=65_536)
def mapping_slot(slot: int, *keys) -> int:
    """The slot of `mapping[k0][k1]...` for a mapping at `slot`: Vyper hashes the slot first,
    keccak256(slot ++ key), then the key (Solidity puts the key first)."""
    for key in keys:
        slot = int.from_bytes(keccak(slot.to_bytes(32, "big") + _word(key)), "big")
    return slot


def _signed128(word: int) -> int:
    return word - HALF_OFFSET


class RawState:
    """Readers over a deployment's contracts (anything with `vault`, `exchange`, `liquidator` and
    `liquidity_vault` attributes: tests/system.py's System, perpdex.sim's SimDeployment), decoded
    as the contracts pack them."""

    def __init__(self, system) -> None:
        self.vault = system.vault.address.canonical_address
        self.exchange = system.exchange.address.canonical_address
        self.liquidator = system.liquidator.address.canonical_address
        self.liquidity_vault = system.liquidity_vault.address.canonical_address
        self.v = storage_slots(system.vault)
        self.x = storage_slots(system.exchange)
        self.q = storage_slots(system.liquidator)
        self.lv = storage_slots(system.liquidity_vault)

    @staticmethod
    def _get(address: bytes, slot: int) -> int:
        return boa.env.evm.vm.state.get_storage(address, slot)

    # -- Vault -------------------------------------------------------------------------------

    def account(self, owner, sub_account: int) -> tuple[int, int]:
        """(cash, bitmask of the markets with an open position) of a sub-account."""
        packed = self._get(self.vault, mapping_slot(self.v["_accounts"], owner, sub_account))
        if packed == 0:
            return 0, 0
        return (packed >> 64) - CASH_OFFSET, packed & MASK64

    def order_escrow(self) -> int:
        """Execution fees escrowed for committed orders (WAD)."""
        return self._get(self.vault, self.v["_exchange_escrow"]) >> 160

    def system_cash(self) -> tuple[int, int, int, int]:
        """(liquidity vault, insurance fund, fee receiver, funding pool) cash."""
        a = self._get(self.vault, self.v["_system_a"])
        b = self._get(self.vault, self.v["_system_b"])
        return _signed128(a >> 128), _signed128(a & MASK128), _signed128(b >> 128), _signed128(b & MASK128)

    # -- Exchange ----------------------------------------------------------------------------

    def position(self, owner, sub_account: int, market_id: int) -> tuple[int, int, int]:
        """(size, signed cost basis, funding snapshot) as `Exchange.position_state` returns them."""
        packed = self._get(self.exchange, mapping_slot(self.x["_position"], owner, sub_account, market_id))
        basis = self._get(self.exchange, mapping_slot(self.x["_open_notional"], owner, sub_account, market_id))
        if basis >= 2**255:
            basis -= 2**256
        if packed == 0:
            return 0, basis, 0
        return _signed128(packed >> 128), basis, _signed128(packed & MASK128)

    def open_interest(self, market_id: int) -> tuple[int, int]:
        packed = self._get(self.exchange, mapping_slot(self.x["_oi"], market_id))
        return packed >> 128, packed & MASK128

    def funding(self, market_id: int) -> tuple[int, int]:
        """(funding per unit as last stored, timestamp of that accrual): `Exchange.funding_state`."""
        packed = self._get(self.exchange, mapping_slot(self.x["_funding"], market_id))
        return (packed >> 144) - 2**111, (packed >> 104) & (2**40 - 1)

    def open_notional_sum(self, market_id: int) -> int:
        """The traders' summed signed cost bases, packed in the low 104 bits of `_funding`."""
        packed = self._get(self.exchange, mapping_slot(self.x["_funding"], market_id))
        return (packed & (2**104 - 1)) - 2**103

    # -- Liquidator --------------------------------------------------------------------------

    def uncovered_deficit(self, market_id: int) -> int:
        return self._get(self.liquidator, mapping_slot(self.q["uncovered_deficit"], market_id))

    def deficit_side(self, market_id: int) -> int:
        value = self._get(self.liquidator, mapping_slot(self.q["deficit_side"], market_id))
        return value - 2**256 if value >= 2**255 else value

    # -- LiquidityVault ----------------------------------------------------------------------

    def lv_supply(self) -> int:
        return self._get(self.liquidity_vault, self.lv["erc20.totalSupply"])

    def lv_shares(self, owner) -> int:
        return self._get(self.liquidity_vault, mapping_slot(self.lv["erc20.balanceOf"], owner))
