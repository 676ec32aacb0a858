"""The opcodes the contracts run most, written against the lean interpreter's int stack.

py-evm's logic functions reach the stack through the computation's methods (a method call, a
tuple, a bytes round trip per operand) and its memory through validating wrappers. In an order
execution about two thirds of the opcodes are PUSH, DUP, SWAP, POP, JUMP/JUMPI, MLOAD/MSTORE,
comparisons and 256-bit arithmetic: here each works on `computation._stack.values` (a list of
ints, top last) and the memory's bytearray directly, with py-evm's semantics: operands in the
same order (the top of the stack first), results modulo 2**256, the same errors for a short or
full stack and a bad jump. `perpdex.sim.evm` puts these in its dispatch table in place of
py-evm's; every other opcode keeps py-evm's logic. tests/unit/test_sim_speed.py compares whole
runs against titanoboa's interpreter.
"""

from __future__ import annotations

from eth.exceptions import FullStack, InsufficientStack, InvalidInstruction, InvalidJumpDestination

MASK = 2**256 - 1
STACK_LIMIT = 1024
JUMPDEST = 0x5B


def _short(wanted: int, had: int) -> InsufficientStack:
    return InsufficientStack(f"Wanted {wanted} stack items, only had {had}")


def _binary(fn):
    """An opcode of two operands (a = top, b = next) and one result."""

    def op(computation) -> None:
        values = computation._stack.values
        if len(values) < 2:
            raise _short(2, len(values))
        a = values.pop()
        values[-1] = fn(a, values[-1])

    op.__name__ = fn.__name__
    return op


def add(a: int, b: int) -> int:
    return (a + b) & MASK


def mul(a: int, b: int) -> int:
    return (a * b) & MASK


def sub(a: int, b: int) -> int:
    return (a - b) & MASK


def div(a: int, b: int) -> int:
    return a // b if b else 0


def mod(a: int, b: int) -> int:
    return a % b if b else 0


def lt(a: int, b: int) -> int:
    return 1 if a < b else 0


def gt(a: int, b: int) -> int:
    return 1 if a > b else 0


def eq(a: int, b: int) -> int:
    return 1 if a == b else 0


def and_(a: int, b: int) -> int:
    return a & b


def or_(a: int, b: int) -> int:
    return a | b


def xor(a: int, b: int) -> int:
    return a ^ b


def shl(shift: int, value: int) -> int:
    return (value << shift) & MASK if shift < 256 else 0


def shr(shift: int, value: int) -> int:
    return value >> shift if shift < 256 else 0


def iszero(computation) -> None:
    values = computation._stack.values
    if not values:
        raise _short(1, 0)
    values[-1] = 0 if values[-1] else 1


def not_(computation) -> None:
    values = computation._stack.values
    if not values:
        raise _short(1, 0)
    values[-1] = MASK ^ values[-1]


def pop(computation) -> None:
    values = computation._stack.values
    if not values:
        raise _short(1, 0)
    values.pop()


def _extend(computation, start: int, size: int) -> bytearray:
    """The memory's bytes, grown (by py-evm's own rule) to cover start..start+size."""
    memory = computation._memory
    if start + size > len(memory._bytes):
        computation.extend_memory(start, size)
    return memory._bytes


def mload(computation) -> None:
    values = computation._stack.values
    if not values:
        raise _short(1, 0)
    start = values[-1]
    data = _extend(computation, start, 32)
    values[-1] = int.from_bytes(data[start:start + 32], "big")


def mstore(computation) -> None:
    values = computation._stack.values
    if len(values) < 2:
        raise _short(2, len(values))
    start = values.pop()
    value = values.pop()
    data = _extend(computation, start, 32)
    data[start:start + 32] = value.to_bytes(32, "big")


def calldataload(computation) -> None:
    values = computation._stack.values
    if not values:
        raise _short(1, 0)
    start = values[-1]
    word = computation.msg.data_as_bytes[start:start + 32]
    values[-1] = int.from_bytes(word, "big") << (8 * (32 - len(word)))


def _jump_to(computation, dest: int) -> None:
    code = computation.code
    code.program_counter = dest
    if code.peek() != JUMPDEST:
        raise InvalidJumpDestination("Invalid Jump Destination")
    if not code.is_valid_opcode(dest):
        raise InvalidInstruction("Jump resulted in invalid instruction")


def jump(computation) -> None:
    values = computation._stack.values
    if not values:
        raise _short(1, 0)
    _jump_to(computation, values.pop())


def jumpi(computation) -> None:
    values = computation._stack.values
    if len(values) < 2:
        raise _short(2, len(values))
    dest = values.pop()
    if values.pop():
        _jump_to(computation, dest)


def jumpdest(computation) -> None:
    pass


def _dup(position: int):
    def dup(computation) -> None:
        values = computation._stack.values
        if len(values) >= STACK_LIMIT:
            raise FullStack("Stack limit reached")
        if len(values) < position:
            raise InsufficientStack(f"Insufficient stack items for DUP{position}")
        values.append(values[-position])

    return dup


def _swap(position: int):
    index = -position - 1

    def swap(computation) -> None:
        values = computation._stack.values
        if len(values) <= position:
            raise InsufficientStack(f"Insufficient stack items for SWAP{position}")
        values[-1], values[index] = values[index], values[-1]

    return swap


OPS = {
    0x01: _binary(add), 0x02: _binary(mul), 0x03: _binary(sub), 0x04: _binary(div), 0x06: _binary(mod),
    0x10: _binary(lt), 0x11: _binary(gt), 0x14: _binary(eq), 0x15: iszero,
    0x16: _binary(and_), 0x17: _binary(or_), 0x18: _binary(xor), 0x19: not_,
    0x1B: _binary(shl), 0x1C: _binary(shr),
    0x35: calldataload,
    0x50: pop, 0x51: mload, 0x52: mstore, 0x56: jump, 0x57: jumpi, 0x5B: jumpdest,
    **{0x80 + k: _dup(k + 1) for k in range(16)},
    **{0x90 + k: _swap(k + 1) for k in range(16)},
}
