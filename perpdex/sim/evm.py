"""titanoboa's py-evm interpreter with the bookkeeping a replay never reads left out.

A transaction of the order book or the liquidator runs 2,000-10,000 EVM opcodes through
py-evm, in Python; what the contracts compute is all the simulation needs, yet py-evm and
titanoboa also do, at every opcode or every call:

- titanoboa appends every program counter to a trace (for coverage and gas profiling), traces
  every SSTORE slot and every 64-byte SHA3 preimage (for `contract._storage` dumps), and copies
  the opcode and precompile tables for every call frame;
- py-evm meters gas at every opcode and memory expansion (an opcode is an object whose call
  charges gas and then runs the logic function), and analyses jump destinations again for every
  call frame, as each frame gets a code stream of its own.

`fast_evm()` installs, for the `with` block, a computation class that runs the same opcode
logic functions of the same fork on the same state without those: the jump-destination
analysis is kept per bytecode across frames, the dispatch loop calls logic functions straight,
and gas is not counted (`FlatGas`: every frame has the gas it was given, as titanoboa's own
`NoGasMeter` but with the `gas_remaining` that the GAS opcode and the 63/64 rule of CALL read);
the stack holds ints only (`IntStack`) and a PUSH reads its operand straight from the code.
Every SSTORE's slot is noted (`WRITES`), so that the invariant checks read again only the
accounts whose storage may have changed.
State, return data, logs and reverts are the contracts'; only gas figures differ (reported as 0
used). The contracts never read `gas()` but to forward it. Outside the block titanoboa is as it
was, so that other users of `boa.env` (tests measuring gas) are not affected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boa
from boa.vm.py_evm import TracingCodeStream, _opcode_overrides, _precompiles as boa_precompiles
from eth.constants import STACK_DEPTH_LIMIT
from eth.exceptions import FullStack, Halt, InsufficientStack, StackDepthLimit
from eth_utils import ValidationError
from eth.validation import validate_uint256
from eth.vm.code_stream import CodeStream
from eth.vm.logic.invalid import InvalidOpcode
from eth.vm.opcode import _FastOpcode

from perpdex.sim.evm_ops import OPS as FAST_OPS


class FlatGas:
    """A gas meter that counts nothing: every frame keeps the gas it started with."""

    __slots__ = ("start_gas", "gas_remaining", "gas_refunded")

    def __init__(self, start_gas: int, *args, **kwargs) -> None:
        self.start_gas = start_gas
        self.gas_remaining = start_gas
        self.gas_refunded = 0

    def consume_gas(self, amount: int, reason: str) -> None:
        pass

    def return_gas(self, amount: int) -> None:
        pass

    def refund_gas(self, amount: int) -> None:
        pass


class IntStack:
    """py-evm's stack holding every item as an int (py-evm keeps what was pushed, bytes or int,
    and converts at every pop): a PUSH is one conversion; a pop as bytes gives the 32-byte word,
    which every consumer (MSTORE, addresses, TSTORE) pads or trims to the same value."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[int] = []

    def push_int(self, value: int) -> None:
        if len(self.values) > 1023:
            raise FullStack("Stack limit reached")
        self.values.append(value)

    def push_bytes(self, value: bytes) -> None:
        if len(self.values) > 1023:
            raise FullStack("Stack limit reached")
        if len(value) > 32:
            raise ValidationError(f"Stack item too long: {len(value)} bytes")
        self.values.append(int.from_bytes(value, "big"))

    def pop1_int(self) -> int:
        try:
            return self.values.pop()
        except IndexError:
            raise InsufficientStack("Wanted 1 stack item, had none") from None

    pop1_any = pop1_int

    def pop1_bytes(self) -> bytes:
        return self.pop1_int().to_bytes(32, "big")

    def pop_any(self, num_items: int) -> tuple[int, ...]:
        values = self.values
        if num_items > len(values):
            raise InsufficientStack(f"Wanted {num_items} stack items, only had {len(values)}")
        if num_items == 0:
            return ()
        popped = values[-num_items:]
        del values[-num_items:]
        popped.reverse()
        return tuple(popped)

    pop_ints = pop_any

    def pop_bytes(self, num_items: int) -> tuple[bytes, ...]:
        return tuple(v.to_bytes(32, "big") for v in self.pop_any(num_items))

    def swap(self, position: int) -> None:
        values, idx = self.values, -position - 1
        try:
            values[-1], values[idx] = values[idx], values[-1]
        except IndexError:
            raise InsufficientStack(f"Insufficient stack items for SWAP{position}") from None

    def dup(self, position: int) -> None:
        values = self.values
        if len(values) > 1023:
            raise FullStack("Stack limit reached")
        try:
            values.append(values[-position])
        except IndexError:
            raise InsufficientStack(f"Insufficient stack items for DUP{position}") from None


def _push(size: int):
    """PUSH`size`: the next `size` code bytes as one int (zeros past the code's end)."""

    def push(computation) -> None:
        code = computation.code
        start = code.program_counter
        data = code._raw_code_bytes[start:start + size]
        code.program_counter = start + size
        values = computation._stack.values
        if len(values) > 1023:
            raise FullStack("Stack limit reached")
        values.append(int.from_bytes(data, "big") << (8 * (size - len(data))))

    return push


PUSH0 = 0x5F
SSTORE = 0x55


class StorageWrites:
    """The storage slots written while the lean interpreter runs (every SSTORE, reverted or not:
    a superset of what changed), for readers that keep what they read and read again only what
    may have changed. `epoch` changes whenever the interpreter is installed: a reader that saw
    another epoch cannot know what happened in between."""

    def __init__(self) -> None:
        self.slots: set[tuple[bytes, int]] = set()  # (storage address, slot)
        self.epoch = 0
        self.active = False  # the interpreter is installed: writes are being noted

    def take(self) -> set[tuple[bytes, int]]:
        """The slots written since the last call."""
        slots, self.slots = self.slots, set()
        return slots


WRITES = StorageWrites()


def _tracked_sstore(sstore):
    def tracked(computation) -> None:
        values = computation._stack.values
        if values:
            WRITES.slots.add((computation.msg.storage_address, values[-1]))  # SSTORE pops the slot first
        sstore(computation)

    return tracked

_JUMPDESTS: dict[bytes, tuple[set[int], set[int]]] = {}  # bytecode -> (valid, invalid) positions


class SharedCodeStream(CodeStream):
    """A code stream whose jump-destination analysis is shared by every frame of one bytecode
    (it depends on the bytes only)."""

    __slots__ = ()
    # titanoboa reads the program counters a frame ran to name the source line of a revert;
    # none are kept here, so a revert is reported by its reason alone
    _trace = ()

    def __init__(self, code_bytes: bytes) -> None:
        self.program_counter = 0
        self._raw_code_bytes = code_bytes
        self._length_cache = len(code_bytes)
        cached = _JUMPDESTS.get(code_bytes)
        if cached is None:
            cached = _JUMPDESTS[code_bytes] = (set(), set())
        self.valid_positions, self.invalid_positions = cached


def _dispatch_table(opcodes: dict) -> list:
    """The 256 entries of an opcode table: logic functions for the plain opcodes (their fixed
    gas charge is all `_FastOpcode.__call__` adds), the opcode objects for the others (calls,
    storage, copies: their gas is charged to `FlatGas`), InvalidOpcode for the unassigned; the
    most frequent plain opcodes are `perpdex.sim.evm_ops`'s."""
    table = []
    for value in range(256):
        fn = opcodes.get(value)
        if fn is None:
            fn = InvalidOpcode(value)
        elif PUSH0 <= value <= PUSH0 + 32:
            fn = _push(value - PUSH0)
        elif value in FAST_OPS:
            fn = FAST_OPS[value]
        elif isinstance(fn, _FastOpcode):
            fn = fn.logic_fn
        if value == SSTORE:
            fn = _tracked_sstore(fn)
        table.append(fn)
    return table


def _fast_class(base: type) -> type:
    """A subclass of titanoboa's computation class `base` with the lean frame set-up and loop."""
    from eth.vm.computation import BaseComputation

    plain_opcodes = {
        # titanoboa wraps SHA3 and SSTORE with preimage and slot tracers: the wrapped originals
        k: getattr(v, "sha3", None) or getattr(v, "sstore", None) or v
        for k, v in {**base.opcodes, **_opcode_overrides}.items()
    }
    precompiles = {**base.get_precompiles(), **boa_precompiles}
    table = _dispatch_table(plain_opcodes)

    class FastComputation(base):
        opcodes = plain_opcodes
        _precompiles = precompiles
        _gas_meter_class = FlatGas

        def __init__(self, state, message, transaction_context) -> None:
            BaseComputation.__init__(self, state, message, transaction_context)
            start_pc = getattr(message, "_start_pc", 0)
            fake_codesize = getattr(message, "_fake_codesize", None)
            if start_pc or fake_codesize is not None:
                self.code = TracingCodeStream(message.code, fake_codesize=fake_codesize, start_pc=start_pc)
            else:
                self.code = SharedCodeStream(message.code)
            self._gas_meter = FlatGas(message.gas)
            self._stack = IntStack()
            self._child_pcs = []
            self._contract_repr_before_revert = None

        def _configure_gas_meter(self):
            return FlatGas(self.msg.gas)

        def extend_memory(self, start_position: int, size: int) -> None:
            validate_uint256(start_position, title="Memory start position")
            validate_uint256(size, title="Memory size")
            if size:
                self._memory.extend(start_position, size)

        @classmethod
        def apply_message(cls, state, message, transaction_context, parent_computation=None):
            if not message.is_static:
                return super().apply_message(state, message, transaction_context, parent_computation)
            # A static frame cannot change state (the EVM refuses SSTORE, TSTORE, LOG, CREATE,
            # SELFDESTRUCT and value in it), so there is nothing to snapshot and revert: what
            # py-evm's snapshot would undo is the frame's warm-account marks, which only gas reads.
            # A snapshot records a checkpoint in the journal of every account with written
            # storage, a commit merges it back: most frames of a transaction are views.
            if message.depth > STACK_DEPTH_LIMIT:
                raise StackDepthLimit("Stack depth limit reached")
            state.touch_account(message.storage_address)
            return cls.apply_computation(state, message, transaction_context, parent_computation)

        @classmethod
        def apply_computation(cls, state, message, transaction_context, parent_computation=None):
            with cls(state, message, transaction_context) as computation:
                if computation.is_origin_computation:
                    computation.contracts_created = []
                if parent_computation is not None:
                    computation.contracts_created = parent_computation.contracts_created
                if message.is_create:
                    computation.contracts_created.append(message.storage_address)
                precompile = precompiles.get(message.code_address)
                if precompile is not None:
                    if not message.is_delegation:
                        precompile(computation)
                    return computation
                code = computation.code
                raw = code._raw_code_bytes
                end = len(raw)
                try:
                    while True:
                        pc = code.program_counter
                        if pc >= end:
                            break  # running off the end is a STOP
                        code.program_counter = pc + 1
                        table[raw[pc]](computation)
                except Halt:
                    pass
            if computation.is_error:
                # titanoboa puts repr(contract), a dump of its whole storage, into the revert's
                # message: the address names it (refused transactions are common in a crash)
                computation._contract_repr_before_revert = f"<contract 0x{message.code_address.hex()}>"
            return computation

    FastComputation.__name__ = FastComputation.__qualname__ = f"Fast{base.__name__}"
    return FastComputation


_CLASSES: dict[type, type] = {}


@contextlib.contextmanager
def fast_evm() -> Iterator[None]:
    """titanoboa's current environment runs on the lean interpreter inside the block."""
    state = boa.env.evm.vm.state
    base = state.computation_class
    if base in _CLASSES.values():  # already inside
        yield
        return
    fast = _CLASSES.get(base)
    if fast is None:
        fast = _CLASSES[base] = _fast_class(base)
    state.computation_class = fast
    WRITES.epoch += 1
    WRITES.slots.clear()
    WRITES.active = True
    try:
        yield
    finally:
        state.computation_class = base
        WRITES.active = False
