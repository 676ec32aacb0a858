"""Owner actions through the Timelock (contracts/Timelock.vy, snekmate's timelock_controller).

Every perpdex contract is owned by the Timelock: a parameter change, a listing or a feed change
is a *call* (a target and its calldata). A proposer **schedules** one call or a batch with a
delay of at least the timelock's minimum delay; the `CallScheduled` events show the calls to
everyone; once the delay has passed an executor **executes** them, in order, in one
transaction. A canceller can **cancel** a pending operation. docs/governance.md walks through
it with the commands of `ape run governance`.

An operation's id is `keccak256(abi_encode(target, value, payload, predecessor, salt))` for one
call and the same over arrays for a batch, computed here exactly as the contract does, so an
operator can check an id before sending anything. Scheduling the same calls twice needs a new
salt: `Governance.operation` picks the first salt whose operation is not done yet, so re-running
a tool finds its own pending operation instead of scheduling a second one.

On local networks (ape's embedded chain, anvil) `wait` moves the chain's clock to the moment an
operation is ready; elsewhere it waits for blocks, bounded by a timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

ZERO_BYTES32 = b"\x00" * 32
PROPOSER_ROLE = keccak(text="PROPOSER_ROLE")
EXECUTOR_ROLE = keccak(text="EXECUTOR_ROLE")
CANCELLER_ROLE = keccak(text="CANCELLER_ROLE")
# timelock_controller.OperationState flags
STATES = {0: "unset", 1: "unset", 2: "waiting", 4: "ready", 8: "done"}
MAX_SALTS = 256  # identical operations scheduled before on one timelock (a bound for the search)
DEFAULT_WAIT_TIMEOUT = 120.0  # seconds `wait` blocks on a non-local network before giving up


class GovernanceError(Exception):
    """An operation that cannot go ahead, with the reason and the numbers."""


@dataclass(frozen=True)
class Call:
    """One call the timelock makes: `target` with `payload` (calldata), `value` wei attached."""

    target: str
    payload: bytes
    description: str = field(default="", compare=False)  # for people; not part of the operation
    value: int = 0

    @classmethod
    def of(cls, contract, method: str, *args, description: str = "") -> Call:
        """`contract.method(*args)` as a call (an ape contract instance)."""
        payload = bytes(getattr(contract, method).encode_input(*args))
        return cls(to_checksum_address(contract.address), payload, description or f"{method}{tuple(args)}")


@dataclass(frozen=True)
class Operation:
    """One call or a batch, with the predecessor it waits for and its salt."""

    calls: tuple[Call, ...]
    predecessor: bytes = ZERO_BYTES32
    salt: bytes = ZERO_BYTES32

    @property
    def is_batch(self) -> bool:
        return len(self.calls) != 1

    @property
    def id(self) -> bytes:
        """The operation id, as `hash_operation`/`hash_operation_batch` compute it."""
        if not self.is_batch:
            (c,) = self.calls
            return keccak(encode(
                ["address", "uint256", "bytes", "bytes32", "bytes32"],
                [c.target, c.value, c.payload, self.predecessor, self.salt],
            ))
        return keccak(encode(
            ["address[]", "uint256[]", "bytes[]", "bytes32", "bytes32"],
            [[c.target for c in self.calls], [c.value for c in self.calls], [c.payload for c in self.calls],
             self.predecessor, self.salt],
        ))

    def args(self) -> tuple:
        """The arguments of schedule/execute (without the delay)."""
        if not self.is_batch:
            (c,) = self.calls
            return (c.target, c.value, c.payload, self.predecessor, self.salt)
        return ([c.target for c in self.calls], [c.value for c in self.calls], [c.payload for c in self.calls],
                self.predecessor, self.salt)

    def describe(self) -> str:
        return "; ".join(c.description or f"call to {c.target}" for c in self.calls)


def salt(n: int) -> bytes:
    return n.to_bytes(32, "big")


def utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def is_local(chain) -> bool:
    return chain.provider.network.name == "local"


class Governance:
    """Schedule, wait for, execute and cancel operations of `timelock` as `account` (ape)."""

    def __init__(self, timelock, account, chain=None):
        if chain is None:
            from ape import chain
        self.timelock, self.account, self.chain = timelock, account, chain

    # -- reading ----------------------------------------------------------------------------------

    @property
    def min_delay(self) -> int:
        return int(self.timelock.get_minimum_delay())

    def state(self, op_or_id) -> str:
        """'unset', 'waiting', 'ready' or 'done' (as of the latest block)."""
        return STATES[int(self.timelock.get_operation_state(self._id(op_or_id)))]

    def ready_at(self, op_or_id) -> int:
        """The timestamp the operation becomes ready (0 unset, 1 done)."""
        return int(self.timelock.get_timestamp(self._id(op_or_id)))

    def is_ready(self, op_or_id) -> bool:
        """Executable in the next block (pending, and its time has come by that block's clock)."""
        op_id = self._id(op_or_id)
        if self.state(op_id) not in ("waiting", "ready"):
            return False
        now = self.chain.pending_timestamp if is_local(self.chain) else self.chain.blocks.head.timestamp
        return now >= self.ready_at(op_id)

    def has_role(self, role: bytes, who=None) -> bool:
        return bool(self.timelock.hasRole(role, who or self.account))

    def operation(self, calls: list[Call] | tuple[Call, ...], predecessor: bytes = ZERO_BYTES32) -> Operation:
        """The operation for `calls` with the first salt whose operation is not done: a pending
        one scheduled earlier is found again, a done one is not repeated by mistake."""
        for n in range(MAX_SALTS):
            op = Operation(tuple(calls), predecessor, salt(n))
            if self.state(op) != "done":
                return op
        raise GovernanceError(f"{MAX_SALTS} identical operations already done: pass a salt of your own")

    # -- writing ----------------------------------------------------------------------------------

    def schedule(self, op: Operation, delay: int | None = None):
        """Schedule `op` with `delay` seconds (the minimum delay by default); the receipt."""
        delay = self.min_delay if delay is None else int(delay)
        if delay < self.min_delay:
            raise GovernanceError(f"a delay of {delay} s is below the timelock's minimum delay of {self.min_delay} s")
        self._require(PROPOSER_ROLE, "schedule")
        if self.state(op) != "unset":
            raise GovernanceError(f"operation 0x{op.id.hex()} is already {self.state(op)}")
        method = self.timelock.schedule_batch if op.is_batch else self.timelock.schedule
        return method(*op.args(), delay, sender=self.account)

    def execute(self, op: Operation):
        """Execute a ready operation; refuses, with the time left, one that is not ready."""
        if not self.is_ready(op):
            state = self.state(op)
            detail = f" until {utc(self.ready_at(op))}" if state == "waiting" else ""
            raise GovernanceError(f"operation 0x{op.id.hex()} is {state}{detail}: nothing sent")
        if not (self.has_role(EXECUTOR_ROLE) or self.has_role(EXECUTOR_ROLE, "0x" + "00" * 20)):
            raise GovernanceError(f"{self.account.address} lacks the executor role of the timelock: nothing sent")
        method = self.timelock.execute_batch if op.is_batch else self.timelock.execute
        value = sum(c.value for c in op.calls)
        return method(*op.args(), sender=self.account, value=value)

    def cancel(self, op_or_id):
        op_id = self._id(op_or_id)
        if self.state(op_id) not in ("waiting", "ready"):
            raise GovernanceError(f"operation 0x{op_id.hex()} is {self.state(op_id)}: only a pending one can be cancelled")
        self._require(CANCELLER_ROLE, "cancel")
        return self.timelock.cancel(op_id, sender=self.account)

    def wait(self, op_or_id, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Until the operation is ready: on a local network the clock moves there at once;
        elsewhere blocks are awaited for at most `timeout` seconds."""
        op_id = self._id(op_or_id)
        if self.state(op_id) not in ("waiting", "ready"):
            raise GovernanceError(f"operation 0x{op_id.hex()} is {self.state(op_id)}, not scheduled")
        eta = self.ready_at(op_id)
        if is_local(self.chain):
            if self.chain.pending_timestamp < eta:
                self.chain.pending_timestamp = eta
            return
        deadline = time.monotonic() + timeout
        while self.chain.blocks.head.timestamp < eta:
            if time.monotonic() > deadline:
                raise GovernanceError(
                    f"operation 0x{op_id.hex()} becomes ready at {utc(eta)}; "
                    f"gave up waiting after {timeout:.0f} s: execute it then"
                )
            time.sleep(min(5.0, max(0.5, eta - time.time())))

    def enact(self, calls: list[Call] | tuple[Call, ...], wait: bool | None = None) -> tuple[Operation, str]:
        """Schedule `calls` as one operation if not yet scheduled, and execute it when it is
        ready, waiting for it on local networks (or when `wait` is True). Returns the operation
        and what happened: 'executed', or 'scheduled, ready at <time>'."""
        op = self.operation(calls)
        if self.state(op) == "unset":
            self.schedule(op)
        if wait if wait is not None else is_local(self.chain):
            self.wait(op)
        if self.is_ready(op):
            self.execute(op)
            return op, "executed"
        return op, f"scheduled as 0x{op.id.hex()}, ready at {utc(self.ready_at(op))}"

    # -- helpers ------------------------------------------------------------------------------------

    def _require(self, role: bytes, action: str) -> None:
        if not self.has_role(role):
            name = {PROPOSER_ROLE: "proposer", CANCELLER_ROLE: "canceller", EXECUTOR_ROLE: "executor"}[role]
            raise GovernanceError(f"{self.account.address} lacks the {name} role of the timelock: cannot {action}")

    @staticmethod
    def _id(op_or_id) -> bytes:
        if isinstance(op_or_id, Operation):
            return op_or_id.id
        if isinstance(op_or_id, str):
            return bytes.fromhex(op_or_id.removeprefix("0x"))
        return bytes(op_or_id)


# =============================================================================================
# Operations as the chain shows them (CallScheduled and CallSalt events)
# =============================================================================================


@dataclass(frozen=True)
class Scheduled:
    """A scheduled operation found in the timelock's events."""

    operation: Operation
    delay: int
    block: int


def scheduled_operations(timelock, start_block: int = 0) -> dict[bytes, Scheduled]:
    """Every operation ever scheduled on `timelock` from `start_block`, by id (its calls in
    index order, its predecessor, salt and delay), read back from the events."""
    from ape import chain

    stop = chain.blocks.head.number + 1
    calls: dict[bytes, dict[int, Call]] = {}
    meta: dict[bytes, tuple[bytes, int, int]] = {}
    for log in timelock.CallScheduled.range(start_block, stop):
        op_id = bytes(log.id)
        calls.setdefault(op_id, {})[int(log.index)] = Call(
            to_checksum_address(log.target), bytes(log.payload), value=int(log.amount)
        )
        meta[op_id] = (bytes(log.predecessor), int(log.delay), int(log.block_number))
    salts = {bytes(log.id): bytes(log.salt) for log in timelock.CallSalt.range(start_block, stop)}
    found = {}
    for op_id, by_index in calls.items():
        predecessor, delay, block = meta[op_id]
        op = Operation(tuple(by_index[i] for i in sorted(by_index)), predecessor, salts.get(op_id, ZERO_BYTES32))
        found[op_id] = Scheduled(op, delay, block)
    return found


def find_operation(timelock, op_id: str | bytes, start_block: int = 0) -> Operation:
    """The scheduled operation `op_id` (hex), or a GovernanceError naming what was found."""
    wanted = Governance._id(op_id)
    found = scheduled_operations(timelock, start_block)
    if wanted not in found:
        raise GovernanceError(f"no operation 0x{wanted.hex()} was scheduled on the timelock {timelock.address}")
    op = found[wanted].operation
    if op.id != wanted:  # the events and the id disagree: never execute something else
        raise GovernanceError(f"the events of operation 0x{wanted.hex()} hash to 0x{op.id.hex()}")
    return op


def describe_call(call: Call, contracts: dict[str, object]) -> str:
    """'exchange.set_market_params(0, (...))' through the deployment's ABIs (`contracts` by
    manifest name), else the target and the raw calldata."""
    for name, contract in contracts.items():
        if contract is not None and contract.address.lower() == call.target.lower():
            try:
                method, args = contract.decode_input(call.payload)
            except Exception:  # not a function of this ABI
                break
            shown = ", ".join(f"{k}={v}" for k, v in args.items())
            return f"{name}.{method.split('(')[0]}({shown})"
    return f"{call.target} 0x{call.payload.hex()}"


def market_params_call(exchange, market_id: int, changes: dict[str, int]) -> Call:
    """`exchange.set_market_params(market_id, ...)`: the market's current parameters with
    `changes` (WAD values by field name) applied."""
    current = exchange.market_params(market_id)
    fields = [name for name, _ in current.items()] if hasattr(current, "items") else list(current._fields)
    unknown = set(changes) - set(fields)
    if unknown:
        raise GovernanceError(f"unknown market parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(fields)}")
    values = tuple(changes.get(name, int(getattr(current, name))) for name in fields)
    shown = ", ".join(f"{k}={v}" for k, v in changes.items())
    return Call.of(exchange, "set_market_params", market_id, values,
                   description=f"market {market_id} parameters: {shown}")
