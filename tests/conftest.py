"""Shared fixtures. Actors are named by role. Tests that move money use `system`, whose
teardown checks DESIGN.md's invariants 1-3 and the contracts against the reference model."""

import signal
import sys
import threading
from pathlib import Path

import boa
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import cpu_report  # noqa: E402
from system import System, fresh  # noqa: E402

from perpdex import compiled  # noqa: E402
from perpdex.sim.evm import fast_evm  # noqa: E402

compiled.install()  # the contracts as `make compile` compiled them, once per process

BTC, ETH = 0, 1


@pytest.fixture
def owner():
    return boa.env.generate_address("owner")


@pytest.fixture
def trader():
    return boa.env.generate_address("trader")


@pytest.fixture
def other_trader():
    return boa.env.generate_address("other_trader")


@pytest.fixture
def lp():
    return boa.env.generate_address("lp")


@pytest.fixture
def keeper():
    return boa.env.generate_address("keeper")


@pytest.fixture
def attacker():
    return boa.env.generate_address("attacker")


@pytest.fixture(scope="module", autouse=True)
def chain_per_module():
    """Each test module runs on a titanoboa chain of its own. py-evm keeps every account a
    transaction ever touched in its set of dirty accounts until a block is persisted, which
    titanoboa never does, and walks that whole set at every call frame's snapshot and commit:
    on one chain for the session, a module's transactions cost three times what they cost alone
    once the 1,000 accounts of test_scale and the simulator's populations had been touched."""
    from boa.environment import Env

    with boa.swap_env(Env()):
        yield


@pytest.fixture(scope="module")
def world(chain_per_module):
    """One deployment per test module: BTC-USD at 40,000 and ETH-USD at 2,000."""
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = System()
        s.list_market(BTC, "BTC-USD", 40_000)
        s.list_market(ETH, "ETH-USD", 2_000)
        yield s
    boa.env.eoa = eoa


@pytest.fixture
def system(world, request):
    """A fresh copy of `world` per test; invariants and model parity asserted on teardown."""
    with fresh(world) as s:
        yield s
        if not getattr(request.node, "rep_call_failed", False):
            s.check_invariants(gifts=getattr(s, "gifts", 0))
            s.assert_system_matches()


@pytest.fixture(autouse=True)
def interpreter(request):
    """Tests run the contracts on the simulator's interpreter (perpdex.sim.evm): the same
    opcodes of the same fork on the same state, without gas metering or titanoboa's
    per-opcode tracing, so state, return values, revert reasons and events are the contracts'
    (tests/unit/test_sim_speed.py compares them). A test that measures gas is marked `metered`
    and runs on titanoboa's own interpreter; so do the ape and anvil tests, which run on other
    EVMs. A revert is named by its reason; the source line is not traced."""
    if request.node.get_closest_marker("metered"):
        yield
        return
    with fast_evm():
        yield


def pytest_collection_modifyitems(items):
    """The `system` fixture isolates each test with its own boa anchor and checks invariants at
    teardown; boa's per-call snapshot would undo the test's transactions before that check."""
    for item in items:
        if "system" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ignore_isolation)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.rep_call_failed = True


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def pytest_configure(config):
    """SIGTERM ends the run as Ctrl-C (SIGINT) does: pytest stops and every fixture's teardown
    runs, so the nodes and tool processes the anvil tests started are killed (by default
    SIGTERM would end Python at once and leave them running)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    cpu_report.configure(config)


def pytest_addoption(parser):
    cpu_report.add_option(parser)
