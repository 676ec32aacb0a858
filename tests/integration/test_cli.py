"""The wallet CLI (`python -m perpdex.cli`, perpdex/wallet/) on a real anvil node, driven like a
person would: the click commands run in-process under CliRunner (fast) against one anvil per
module (mining on demand), deployed by `ape run deploy` with a 1,000,000 USD liquidity-vault
seed. Outcomes are read with web3.py from the chain; refusals are checked to have sent nothing
(the wallet's nonce).

Trades are orders: `open`/`close` commit a market order and wait for a keeper. Here the keeper
acts while the CLI waits: the `keeper` fixture replaces the CLI's pause between two looks at the
order with what a keeper and the price pusher do on a devnet (a new oracle round a second
later, then `execute_order` at that round when the order book accepts it).

The last sections drive the manifest loader of the ape tools on ape's embedded chain, then
`ape run pusher` (scripts/pusher.py, on the wallet's JSON-RPC client) on the anvil node.
"""

import importlib.util
import itertools
import json
import random
from decimal import Decimal
from pathlib import Path

import eth_abi
import pytest
from click.testing import CliRunner
from web3 import Web3

import perpdex.wallet.trading as trading
from perpdex.bench import anvil_node
from perpdex.cli import cli as wallet_cli
from perpdex.cli_bench import deploy
from perpdex.deploy import Deployer
from perpdex.fixed_point import WAD
from perpdex.pusher import DATA_DIR, from_answer, load_prices, parse_timestamp, random_walk, to_answer
from perpdex.wallet import abi

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BTC, ETH = 0, 1
USDC = 10**6
HOUR = 3600
KEEPER = 4


# --------------------------------------------------------------------------- the node


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with anvil_node() as url:
        manifest = deploy(url, tmp_path_factory.mktemp("deployments"))
        w3 = Web3(Web3.HTTPProvider(url))
        yield url, manifest, w3


@pytest.fixture(scope="module")
def c(node):
    """The deployment's contracts through web3.py and the manifest."""
    _, manifest, w3 = node
    m = json.loads(manifest.read_text())
    contracts = {n: w3.eth.contract(address=e["address"], abi=e["abi"]) for n, e in m["contracts"].items() if e["abi"]}
    contracts["markets"] = m["markets"]
    return contracts


@pytest.fixture
def snapshot(node):
    """Each test on the state the module started with (anvil's snapshot and revert)."""
    w3 = node[2]
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    w3.provider.make_request("evm_revert", [snap])


@pytest.fixture
def trader(node, c, snapshot):
    """TEST::5 holding 10,000 USD of collateral (each test starts from the module's state)."""
    w3 = node[2]
    index = 5
    address = w3.eth.accounts[index]
    c["collateral"].functions.faucet(10_000 * USDC).transact({"from": address})
    return index, address


@pytest.fixture
def run(node):
    """`perpdex ARGS` as TEST::<account> (None: no wallet); returns click's Result."""
    url, manifest, _ = node

    def invoke(*args, account=None):
        argv = [*args, "--deployment", str(manifest), "--rpc-url", url]
        if account is not None:
            argv += ["--account", f"TEST::{account}"]
        return CliRunner().invoke(wallet_cli, argv)

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def refused(result) -> str:
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


def nonce(node, address) -> int:
    return node[2].eth.get_transaction_count(address)


def publish(node, c, market_ids=(BTC, ETH), answers: dict | None = None) -> None:
    """A new round of each market's feed a second later (the same answer unless given)."""
    w3 = node[2]
    w3.provider.make_request("evm_increaseTime", [1])
    for market in c["markets"]:
        if market["id"] not in market_ids:
            continue
        feed = w3.eth.contract(address=market["aggregators"][0], abi=c[f"aggregator_{market['symbol']}"].abi)
        answer = (answers or {}).get(market["id"], feed.functions.latestAnswer().call())
        feed.functions.update_answer(answer).transact({"from": w3.eth.accounts[0]})


def execute_ready(node, c, owners) -> int:
    """execute_order for every open order of `owners` (sub-accounts 0 and 2) at its market's
    latest round, when the order book accepts that round (simulated first)."""
    w3 = node[2]
    book, keeper, executed = c["order_book"].functions, w3.eth.accounts[KEEPER], 0
    for owner in owners:
        for sub in (0, 2):
            for order_id in book.open_orders(owner, sub).call():
                market = book.order(order_id).call()[2]
                feed = c["markets"][market]["aggregators"][0]
                rounds = [w3.eth.contract(address=feed, abi=c["aggregator_BTC-USD"].abi).functions.latestRound().call()]
                try:
                    book.execute_order(order_id, rounds).call({"from": keeper})
                except Exception:
                    continue
                book.execute_order(order_id, rounds).transact({"from": keeper, "gas": 3_000_000})
                executed += 1
    return executed


@pytest.fixture
def keeper(node, c, trader, monkeypatch):
    """A keeper and a pusher acting at each pause of the CLI's wait; returns the keeper's address."""
    def act(_seconds: float) -> None:
        publish(node, c)
        execute_ready(node, c, [trader[1]])

    monkeypatch.setattr(trading, "_sleep", act)
    return node[2].eth.accounts[KEEPER]


def usd(wad: int) -> str:
    return f"{Decimal(wad) / WAD:,.2f}"


# --------------------------------------------------------------------------- the ABI coding


def test_abi_coding_matches_eth_abi_on_the_manifests_types():
    """perpdex/wallet/abi.py against eth_abi on random values of the types the contracts use."""
    rng = random.Random(7)
    params = [
        {"type": "uint256"}, {"type": "int256"}, {"type": "address"}, {"type": "bool"}, {"type": "string"},
        {"type": "uint80[]"}, {"type": "uint80[][]"}, {"type": "uint8"},
        {"type": "tuple[]", "components": [{"name": "owner", "type": "address"}, {"name": "sub", "type": "uint256"}]},
        {"type": "tuple", "components": [{"name": "a", "type": "int256"}, {"name": "b", "type": "uint256[]"},
                                         {"name": "c", "type": "string"}]},
    ]
    types = [abi.type_string(p) for p in params]
    for _ in range(50):
        address = abi.to_checksum("0x" + rng.randbytes(20).hex())
        values = [
            rng.randrange(2**256), rng.randrange(-(2**255), 2**255), address, rng.random() < 0.5,
            "exchange: " + "é" * rng.randrange(40), [rng.randrange(2**80) for _ in range(rng.randrange(4))],
            [[rng.randrange(2**80) for _ in range(rng.randrange(3))] for _ in range(rng.randrange(3))],
            rng.randrange(256), [(address, rng.randrange(9)) for _ in range(rng.randrange(3))],
            (rng.randrange(-(2**255), 2**255), [rng.randrange(2**256) for _ in range(rng.randrange(3))], "x" * 33),
        ]
        encoded = abi.encode(params, values)
        assert encoded == eth_abi.encode(types, values)
        decoded = abi.decode(params, encoded)
        expected = eth_abi.decode(types, encoded)
        # the same values (eth_abi spells addresses in lower case, the wallet checksums them)
        assert json.dumps(decoded, default=str).lower() == json.dumps(
            [list(v) if isinstance(v, tuple) else v for v in expected], default=str).lower()
    assert abi.to_checksum("0x5fc8d32690cc91d4c39d9d3abcbd16989f875707") == "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"


# --------------------------------------------------------------------------- before any connection


@pytest.mark.parametrize(
    "args, message",
    [
        (("deposit", "-5"), "AMOUNT must be positive, not -5"),
        (("deposit", "ten"), "AMOUNT must be a number, not 'ten'"),
        (("open", "BTC-USD", "0"), "SIZE must not be zero"),
        (("order", "limit", "BTC", "1"), "a limit order needs its --price"),
        (("order", "take-profit", "BTC", "-1"), "a take-profit order needs its --trigger"),
        (("order", "market", "BTC", "1", "--price", "40000"), "a market order takes no --price/--trigger"),
        (("order", "market", "BTC", "1", "--slippage", "1", "--acceptable", "41000"),
         "give either --slippage or --acceptable, not both"),
        (("order", "market", "BTC", "1", "--expiry", "soon"), "give a duration (90s, 30m, 12h, 7d)"),
        (("order", "market", "BTC", "1", "--slippage", "150"), "--slippage is a percentage in [0, 100)"),
        (("cancel", "next"), "ORDER_ID must be the id `orders` shows"),
        (("lp", "redeem"), "give either SHARES or --all"),
        (("lp", "cancel", "first"), "REQUEST_ID must be the number `lp requests` shows"),
        (("deposit", "5", "--account", "TEST::x"), "TEST::<n> takes a number"),
        (("deposit", "5"), "give the wallet: --account TEST::<n>"),
    ],
)
def test_arguments_are_checked_before_any_connection(args, message):
    """The node URL answers nothing (a closed port): every message comes before a connection."""
    result = CliRunner().invoke(wallet_cli, [*args, "--rpc-url", "http://127.0.0.1:9"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "cannot reach a node" not in result.output


def test_an_unreachable_node_and_a_foreign_manifest_are_explained(node, run, tmp_path):
    result = CliRunner().invoke(wallet_cli, ["markets", "--rpc-url", "http://127.0.0.1:9"])
    assert "cannot reach a node at http://127.0.0.1:9" in refused(result)
    other = json.loads(node[1].read_text())
    other["chain_id"] = 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    result = CliRunner().invoke(wallet_cli, ["markets", "--rpc-url", node[0], "--deployment", str(tmp_path / "other.json")])
    assert "is for chain 1, the node at" in refused(result)
    stale = json.loads(node[1].read_text())
    stale["contracts"]["exchange"]["address"] = "0x" + "12" * 20
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    result = CliRunner().invoke(wallet_cli, ["markets", "--rpc-url", node[0], "--deployment", str(tmp_path / "stale.json")])
    assert "the manifest is stale" in refused(result)


# --------------------------------------------------------------------------- trading


def test_trader_deposits_opens_checks_closes_and_withdraws(run, node, c, trader, keeper):
    index, me = trader
    ex, vault, usdc = c["exchange"].functions, c["vault"].functions, c["collateral"].functions
    fee = c["order_book"].functions.order_params().call()[2]

    out = ok(run("deposit", "10000", "--sub", "2", account=index))
    assert "deposited 10,000.00 USD, sub-account 2: cash now 10,000.00 USD" in out
    assert vault.cash(me, 2).call() == 10_000 * WAD and usdc.balanceOf(me).call() == 0

    quote = ex.fill_price(BTC, WAD // 2).call()
    limit = quote * 1005 // 1000
    out = ok(run("open", "BTC-USD", "0.5", "--sub", "2", "--slippage", "0.5", account=index))
    size, entry, _, _ = ex.position(me, 2, BTC).call()
    assert (size, entry) == (WAD // 2, quote)
    assert "committed order 0x" in out and f"acceptable price <= {usd(limit)}" in out
    assert f"executed by {keeper}" in out and f"bought 0.5 BTC-USD at {usd(quote)} (limit {usd(limit)})" in out
    assert f"execution fee {usd(fee)}" in out and "position now +0.5000" in out
    assert vault.cash(keeper, 0).call() == fee

    out = ok(run("positions", "--sub", "2", account=index))
    liquidation = c["liquidator"].functions.liquidation_price(me, 2, BTC).call()
    assert 0 < liquidation < entry
    row = next(line for line in out.splitlines() if "BTC-USD" in line)
    for shown in ("+0.5000", usd(entry), "40,000.00", usd(ex.mark_price(BTC).call()), usd(liquidation)):
        assert shown in row
    cash, equity, initial, maintenance = ex.account_state(me, 2).call()
    account_row = next(line for line in out.splitlines() if usd(cash) in line)
    for shown in (usd(equity), usd(initial), usd(maintenance), usd(ex.withdrawable(me, 2).call())):
        assert shown in account_row

    # an order the margin cannot carry is refused before its fee is escrowed, with the numbers
    sent = nonce(node, me)
    out = refused(run("open", "BTC-USD", "100", "--sub", "2", account=index))
    free = ex.withdrawable(me, 2).call()
    assert f"a buy of 100 BTC-USD at the BTC-USD index 40,000.00 needs more margin than sub-account 2 has " \
           f"(free collateral {usd(free)} USD" in out
    largest = Decimal(out.split("the margin allows at most ")[1].split(" ")[0])
    # under free / (price x 4 %): the initial requirement adds the close's impact, the penalty and the fees
    assert 4 < largest < Decimal(free) / WAD / 40_000 / Decimal("0.04")
    assert nonce(node, me) == sent

    out = ok(run("close", "BTC", "--sub", "2", account=index))
    assert "market sell 0.5 BTC-USD" in out and "reduce-only" in out and "position now +0.0000" in out
    assert ex.position(me, 2, BTC).call()[0] == 0

    free_units = ex.withdrawable(me, 2).call() // 10**12
    out = ok(run("withdraw", "all", "--sub", "2", account=index))
    assert f"withdrew {Decimal(free_units) / USDC:,.2f} USD" in out
    assert usdc.balanceOf(me).call() == free_units
    # taker 0.06 % to open, maker 0.02 % to close, two execution fees of 0.50
    assert 10_000 * USDC - free_units == pytest.approx(16 * USDC + USDC, abs=USDC // 100)


def test_negative_size_opens_a_short_at_the_quote_with_zero_slippage(run, c, trader, keeper):
    index, me = trader
    ok(run("deposit", "5000", account=index))
    quote = c["exchange"].functions.fill_price(ETH, -3 * WAD).call()
    out = ok(run("open", "ETH-USD", "-3", "--slippage", "0", account=index))
    assert f"sold 3 ETH-USD at {usd(quote)} (limit {usd(quote)})" in out
    assert c["exchange"].functions.position(me, 0, ETH).call()[:2] == [-3 * WAD, quote]


@pytest.mark.parametrize(
    "args, message",
    [
        (("open", "DOGE-USD", "1"), "unknown market 'DOGE-USD'; listed markets: BTC-USD (0), ETH-USD (1)"),
        (("deposit", "1.0000001"), "AMOUNT 1.0000001 has more than 6 decimals"),
        (("deposit", "20000"), "holds 10,000.00 USD of collateral, less than 20,000.00 (get devnet collateral with "
                               "`faucet`). Nothing was sent."),
        (("close", "BTC-USD"), "no open BTC-USD position in sub-account 0"),
        (("withdraw", "5"), "5.00 USD is more than the free collateral of sub-account 0, 0.00 USD"),
        (("order", "market", "BTC", "0.1"), "an order escrows an execution fee of 0.50 USD from the cash of "
                                            "sub-account 0, which holds 0.00 USD; deposit first"),
        (("order", "market", "BTC", "300"), "300 BTC-USD is above the market's largest position, 200 BTC-USD"),
        (("cancel", "0xdead"), "Refused by the order book: unknown order"),
    ],
)
def test_mistakes_are_explained_and_send_nothing(run, node, trader, args, message):
    index, me = trader
    sent = nonce(node, me)
    out = refused(run(*args, account=index))
    assert message in out
    assert nonce(node, me) == sent


@pytest.mark.parametrize(
    "args, message",
    [
        (("order", "limit", "BTC", "1", "--price", "41000"),
         "the trigger price is already reached (the index is 40,000.00), so the order would fill at once"),
        (("order", "market", "BTC", "1", "--acceptable", "39000"),
         "the order would fill at 40,000.20, above its price bound (at most 39,000.00)"),
        (("order", "market", "BTC", "1", "--expiry", "2h"), "Refused by the order book: expiry after the latest allowed"),
        (("order", "market", "BTC", "1", "--expiry", "2001-01-01"), "is not in the future"),
        (("order", "limit", "BTC", "10", "--price", "39000"),
         "a buy of 10 BTC-USD at the trigger price 39,000.00 needs more margin"),
    ],
)
def test_order_refusals_carry_the_numbers_and_send_nothing(run, node, c, trader, args, message):
    index, me = trader
    ok(run("deposit", "10000", account=index))
    sent = nonce(node, me)
    out = refused(run(*args, account=index))
    assert message in out and "Nothing was sent" in out or "is not in the future" in out
    assert nonce(node, me) == sent and c["order_book"].functions.open_orders(me, 0).call() == []


def test_a_market_order_beyond_the_open_interest_cap_is_refused_before_its_fee_is_at_stake(run, node, c, trader):
    """The liquidity vault (1,000,000 USD) allows 5x its value of open interest: a 2,600 ETH
    buy (5.2M USD) would be cancelled at execution and its fee lost, so the wallet refuses it
    with the room and sends nothing."""
    index, me = trader
    ok(run("faucet", "1000000", account=index))
    ok(run("deposit", "400000", account=index))
    room = c["order_book"].functions.refresh_open_interest_room().call()
    sent = nonce(node, me)
    out = refused(run("order", "market", "ETH", "2600", account=index))
    assert "the exchange's open interest is at its cap" in out and "Nothing was sent" in out
    assert f"room for {room // WAD:,}." in out.replace("\n", " ")
    assert nonce(node, me) == sent and c["order_book"].functions.open_orders(me, 0).call() == []


def test_a_stop_loss_must_reduce_the_position(run, c, trader, keeper):
    index, me = trader
    ok(run("deposit", "10000", account=index))
    ok(run("open", "BTC", "0.5", account=index))
    out = refused(run("order", "stop", "BTC", "0.5", "--trigger", "39000", account=index))
    assert "your BTC-USD position is long, so its SIZE must be negative" in out
    assert c["order_book"].functions.open_orders(me, 0).call() == []


# --------------------------------------------------------------------------- orders


def order_fields(out: str) -> dict[str, str]:
    """The fields of the one order `orders` printed, by name."""
    lines = out.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("order 0x")]
    fields = {"id": lines[start].removeprefix("order ")}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        fields[line[2:13].strip()] = line[14:]
    return fields


def test_limit_order_rests_is_listed_and_is_cancelled_with_the_fee_refunded(run, node, c, trader):
    index, me = trader
    book, vault = c["order_book"].functions, c["vault"].functions
    ok(run("deposit", "10000", account=index))
    out = ok(run("order", "limit", "BTC-USD", "0.5", "--price", "39000", "--slippage", "50bps", account=index))
    (order_id,) = book.open_orders(me, 0).call()
    assert f"committed order {order_id:#x}: limit buy 0.5 BTC-USD triggered at 39,000.00" in out
    assert "acceptable price <= 39,195.00" in out and "it rests until a BTC-USD price crosses 39,000.00" in out
    assert vault.cash(me, 0).call() == 10_000 * WAD - WAD // 2
    order = book.order(order_id).call()
    assert (order[5], order[3], order[6], order[4]) == (1, WAD // 2, 39_000 * WAD, 39_195 * WAD)

    shown = order_fields(ok(run("orders", account=index)))
    assert shown["id"] == f"{order_id:#x}" and shown["state"] == "resting until the index crosses its trigger"
    assert (shown["kind"], shown["size"], shown["trigger"]) == ("limit buy", "+0.5000 BTC-USD", "39,000.00")
    assert (shown["acceptable"], shown["fee"]) == ("<= 39,195.00", "0.50 USD")

    out = ok(run("cancel", hex(order_id), account=index))
    assert f"cancelled order {order_id:#x} (cancelled by owner); execution fee 0.50 USD refunded" in out
    assert vault.cash(me, 0).call() == 10_000 * WAD
    assert "no open orders in sub-account 0" in ok(run("orders", account=index))


def test_stop_loss_of_a_long_fires_when_the_price_crosses_it(run, node, c, trader, keeper):
    index, me = trader
    ok(run("deposit", "10000", account=index))
    ok(run("open", "BTC", "0.5", account=index))
    out = ok(run("order", "stop", "BTC", "-0.5", "--trigger", "39000", "--expiry", "7d", account=index))
    assert "stop-loss sell 0.5 BTC-USD triggered at 39,000.00, acceptable price >= 38,805.00, reduce-only" in out
    assert execute_ready(node, c, [me]) == 0  # the same price: not triggered
    publish(node, c, (BTC,), {BTC: 38_900 * 10**8})
    assert execute_ready(node, c, [me]) == 1
    assert c["exchange"].functions.position(me, 0, BTC).call()[0] == 0


def test_pending_market_order_blocks_withdrawals_and_cannot_be_cancelled_before_it_expires(run, node, c, trader):
    index, me = trader
    other = 6
    ok(run("deposit", "10000", account=index))
    out = ok(run("order", "market", "ETH", "-2", "--acceptable", "any", account=index))
    (order_id,) = c["order_book"].functions.open_orders(me, 0).call()
    assert "market sell 2 ETH-USD, acceptable price any" in out and "waiting" not in out
    sent = nonce(node, me)
    assert "a market order of sub-account 0 is pending" in refused(run("withdraw", "100", account=index))
    assert "a market order cannot be cancelled before it expires at" in refused(run("cancel", str(order_id), account=index))
    assert nonce(node, me) == sent

    node[2].provider.make_request("evm_increaseTime", [3600])
    node[2].provider.make_request("evm_mine", [])
    shown = order_fields(ok(run("orders", "--owner", me)))
    assert shown["state"] == "expired: anyone may cancel it for the fee"
    out = ok(run("cancel", hex(order_id), account=other))
    assert f"cancelled order {order_id:#x} (expired); execution fee 0.50 USD paid to {node[2].eth.accounts[other]}" in out
    ok(run("withdraw", "100", account=index))


def test_open_without_a_keeper_stops_waiting_and_says_what_it_waited_for(run, c, trader):
    index, me = trader
    ok(run("deposit", "10000", account=index))
    out = refused(run("open", "BTC-USD", "0.5", "--wait-timeout", "0", account=index))
    (order_id,) = c["order_book"].functions.open_orders(me, 0).call()
    assert f"no keeper executed order {order_id:#x} within 0 s" in out and "It stays open" in out


def test_keeper_cancellation_is_printed_with_its_reason(run, node, c, trader, keeper, monkeypatch):
    """The margin is checked again at execution: the price rose between the commit and the
    round (0.5 BTC needs 800 USD of margin at 40,000, 1,200 at 60,000; 1,000 deposited)."""
    index, me = trader
    ok(run("deposit", "1000", account=index))

    def jump_then_keep(_seconds):
        publish(node, c, (BTC,), {BTC: 60_000 * 10**8})
        execute_ready(node, c, [me])

    monkeypatch.setattr(trading, "_sleep", jump_then_keep)
    out = refused(run("order", "market", "BTC", "0.5", "--acceptable", "any", "--wait", account=index))
    assert f"cancelled by {keeper}: Refused by the exchange: insufficient margin" in out
    assert f"the execution fee 0.50 USD went to {keeper}" in out


# --------------------------------------------------------------------------- reports


def test_positions_survive_a_stale_feed(run, node, c, trader, keeper):
    index, me = trader
    ok(run("deposit", "10000", account=index))
    ok(run("open", "ETH", "-2", account=index))
    node[2].provider.make_request("evm_increaseTime", [2 * HOUR])  # past the 1 h heartbeat
    node[2].provider.make_request("evm_mine", [])
    out = ok(run("positions", account=index))
    row = next(line for line in out.splitlines() if line.startswith("│ ETH-USD"))
    assert "-2.0000" in row and "price unavailable" in row
    assert "ETH-USD: price unavailable (oracle: stale price)" in out
    cash = c["vault"].functions.cash(me, 0).call()
    assert usd(cash) in out  # the cash is shown all the same
    markets = ok(run("markets"))
    assert "n/a (oracle: stale price)" in next(line for line in markets.splitlines() if "ETH-USD (1)" in line)


def test_no_liquidation_price_is_explained(run, trader, keeper):
    index, _ = trader
    ok(run("deposit", "10000", account=index))
    ok(run("open", "ETH", "1", account=index))  # 2,000 USD long on 10,000: no price liquidates it
    out = ok(run("positions", account=index))
    assert "none (no price liquidates it)" in out
    assert "ETH-USD: no liquidation price: the collateral covers the position even at a price of zero" in out


def test_history_shows_deposits_orders_fills_liquidation_and_write_off(run, node, c, trader, keeper):
    index, me = trader
    ok(run("deposit", "1000", account=index))
    ok(run("open", "BTC", "0.45", "--slippage", "1", account=index))
    publish(node, c, (BTC,), {BTC: 30_000 * 10**8})  # far below the bankruptcy price
    c["liquidator"].functions.liquidate(me, 0).transact({"from": node[2].eth.accounts[KEEPER], "gas": 3_000_000})
    out = ok(run("history", account=index))
    lines = out.splitlines()
    assert "deposit     +1,000.00 USD" in out
    assert any("order" in line and "committed: market buy 0.45 BTC-USD" in line for line in lines)
    assert any("fill" in line and "bought 0.45 BTC-USD at 40," in line and "fee 10.8" in line for line in lines)
    assert any("liquidation" in line and "fully liquidated" in line for line in lines)
    (bad_debt,) = c["liquidator"].events.BadDebt().get_logs(from_block=0)
    assert any("bad debt" in line and f"bad debt {usd(bad_debt.args.deficit)} USD:" in line for line in lines)
    (recorded,) = c["liquidator"].events.DeficitRecorded().get_logs(from_block=0)
    assert any(f"uncovered deficit {usd(recorded.args.amount)} USD recorded in BTC-USD" in line for line in lines)
    # no short is left to auto-deleverage: the deficit may be written off at once
    c["liquidator"].functions.write_off(me, 0, BTC).transact({"from": node[2].eth.accounts[KEEPER], "gas": 1_000_000})
    assert c["vault"].functions.cash(me, 0).call() == 0
    lines = ok(run("history", account=index)).splitlines()
    assert any("write-off" in line and f"deficit in BTC-USD written off: the liquidity vault paid "
               f"{usd(recorded.args.amount)} USD" in line for line in lines)


def test_faucet_mints_devnet_collateral_and_refuses_above_its_cap(run, node, c, trader):
    index, me = trader
    out = ok(run("faucet", "2500.5", account=index))
    assert c["collateral"].functions.balanceOf(me).call() == 12_500_500_000
    assert "minted 2,500.50 USD of devnet collateral; the wallet holds 12,500.50 USD" in out
    out = refused(run("faucet", "2000000", account=index))
    assert "the devnet faucet gives at most 1,000,000.00 USD per call" in out


# --------------------------------------------------------------------------- liquidity


def execute_lp_ready(node, c) -> int:
    """execute_deposit/execute_redeem of every open LP request at each market's latest round,
    when the liquidity vault accepts those rounds (simulated first), as the deployer (the
    deployment grants it the LP executor role, as it does a keeper's account)."""
    w3, lv, ex = node[2], c["liquidity_vault"].functions, c["exchange"].functions
    keeper, executed = w3.eth.accounts[0], 0
    assert lv.lp_executor(keeper).call()
    feeds = {m["id"]: m["aggregators"][0] for m in c["markets"]}
    rounds = []
    for i in range(ex.market_count().call()):
        feed = feeds[ex.market_ids(i).call()]
        rounds.append([w3.eth.contract(address=feed, abi=c["aggregator_BTC-USD"].abi).functions.latestRound().call()])
    for request_id in range(1, lv.last_request_id().call() + 1):
        request = lv.request(request_id).call()
        if int(request[0], 16) == 0:
            continue  # executed or cancelled
        execute = lv.execute_redeem if request[2] else lv.execute_deposit
        try:
            execute(request_id, rounds).call({"from": keeper})
        except Exception:
            continue
        execute(request_id, rounds).transact({"from": keeper, "gas": 3_000_000})
        executed += 1
    return executed


@pytest.fixture
def lp_keeper(node, c, monkeypatch):
    """A keeper and a pusher executing LP requests at each pause of the CLI's wait."""
    def act(_seconds: float) -> None:
        publish(node, c)
        execute_lp_ready(node, c)

    monkeypatch.setattr(trading, "_sleep", act)
    return node[2].eth.accounts[0]


def shares_text(shares: int) -> str:
    return f"{(Decimal(shares) / WAD).normalize():,f}"


def test_lp_deposit_and_redemptions_wait_for_the_keeper(run, node, c, trader, lp_keeper):
    """A deposit request is executed at the next round; its shares stay in place for the
    cooldown (a redemption is refused with the numbers, nothing sent), then a part and the rest
    are redeemed, each at the next round."""
    index, me = trader
    lv, usdc = c["liquidity_vault"].functions, c["collateral"].functions
    out = ok(run("lp", "deposit", "10000", account=index))
    shares = lv.balanceOf(me).call()
    assert shares > 0 and usdc.balanceOf(me).call() == 0
    assert "requested LP deposit of 10,000.00 USD (request" in out
    assert f"executed by {lp_keeper}: deposited 10,000.00 USD for {shares_text(shares)} LP shares" in out

    sent = nonce(node, me)
    _, until = lv.locked_shares(me).call()
    out = refused(run("lp", "redeem", "--all", account=index))
    assert f"{shares_text(shares)} of your {shares_text(shares)} LP shares come from a recent deposit" in out
    assert "at most 0 can be redeemed now" in out and nonce(node, me) == sent

    node[2].provider.make_request("evm_increaseTime", [until - node[2].eth.get_block("latest").timestamp + 1])
    node[2].provider.make_request("evm_mine", [])
    quarter = shares // 4
    out = ok(run("lp", "redeem", str(Decimal(quarter) / WAD), account=index))
    assert lv.balanceOf(me).call() == shares - quarter
    (redeemed,) = c["liquidity_vault"].events.RedeemExecuted().get_logs(from_block=0)
    assert redeemed.args.assets == pytest.approx(2_500 * USDC, abs=2)
    assert f"redeemed {shares_text(quarter)} LP shares for {Decimal(redeemed.args.assets) / USDC:,.2f} USD" in out
    ok(run("lp", "redeem", "--all", account=index))
    assert lv.balanceOf(me).call() == 0 and usdc.balanceOf(me).call() == pytest.approx(10_000 * USDC, abs=2)
    history = ok(run("history", account=index))
    assert "LP          request" in history and "10,000.00 USD deposited for" in history
    assert sum("LP shares redeemed for" in line for line in history.splitlines()) == 2


def test_lp_request_without_a_keeper_is_listed_and_cancelled_only_after_expiry(run, node, c, trader):
    index, me = trader
    other = 6
    lv, usdc = c["liquidity_vault"].functions, c["collateral"].functions
    out = refused(run("lp", "deposit", "500", "--wait-timeout", "0", account=index))
    request_id = lv.last_request_id().call()
    assert f"no keeper executed LP request {request_id} within 0 s" in out and "It stays open" in out
    assert usdc.balanceOf(me).call() == 9_500 * USDC

    listed = ok(run("lp", "requests", "--owner", me))
    assert f"{request_id:>5}  deposit of 500.00 USD" in listed and "waiting for its delay" in listed
    sent = nonce(node, me)
    out = refused(run("lp", "cancel", str(request_id), account=index))
    assert f"LP request {request_id} (deposit of 500.00 USD) can be cancelled only once it expires at" in out
    assert "Nothing was sent" in out and nonce(node, me) == sent

    node[2].provider.make_request("evm_increaseTime", [lv.lp_params().call()[1]])
    node[2].provider.make_request("evm_mine", [])
    assert "expired: anyone may cancel it" in ok(run("lp", "requests", "--owner", me))
    out = ok(run("lp", "cancel", str(request_id), account=other))
    assert f"cancelled LP request {request_id} (expired): 500.00 USD returned to {me}" in out
    assert usdc.balanceOf(me).call() == 10_000 * USDC
    assert f"no open LP requests of {me}" in ok(run("lp", "requests", "--owner", me))
    assert f"LP request {request_id} is not open" in refused(run("lp", "cancel", str(request_id), account=index))
    history = ok(run("history", account=index))
    assert f"request {request_id}: deposit of 500.00 USD requested" in history
    assert f"request {request_id} cancelled (expired): 500.00 USD returned" in history


def test_lp_cancellation_while_waiting_is_printed_with_its_reason(run, node, c, trader, monkeypatch):
    """No keeper executed the request before it expired: the wait ends with the cancellation."""
    index, me = trader
    lv, w3 = c["liquidity_vault"].functions, node[2]
    canceller = w3.eth.accounts[KEEPER]

    def expire_then_cancel(_seconds):
        w3.provider.make_request("evm_increaseTime", [lv.lp_params().call()[1]])
        w3.provider.make_request("evm_mine", [])
        lv.cancel_request(lv.last_request_id().call()).transact({"from": canceller, "gas": 1_000_000})

    monkeypatch.setattr(trading, "_sleep", expire_then_cancel)
    out = refused(run("lp", "deposit", "700", account=index))
    request_id = lv.last_request_id().call()
    assert f"LP request {request_id} cancelled by {canceller}: expired" in out
    assert f"700.00 USD returned to {me}" in out
    assert c["collateral"].functions.balanceOf(me).call() == 10_000 * USDC


def test_markets_and_insurance_reports(run, c, trader, keeper):
    index, _ = trader
    ok(run("deposit", "10000", account=index))
    ok(run("open", "BTC-USD", "2", account=index))
    rate = c["exchange"].functions.funding_rate(BTC).call()
    out = ok(run("markets"))
    btc = next(line for line in out.splitlines() if "BTC-USD (0)" in line)
    for shown in ("40,000.00", "+2.0000", f"{Decimal(rate) / WAD * 100:+.4f} %", f"{Decimal(rate * 1095) / WAD * 100:+.2f} %"):
        assert shown in btc
    params = next(line for line in out.splitlines() if "BTC-USD" in line and "100,000" in line)
    for shown in ("4 %", "2 %", "0.5 %", "0.02 %", "0.06 %", "2,000", "200", "50"):
        assert shown in params
    balance = c["insurance_fund"].functions.fund_balance().call()
    out = ok(run("insurance"))
    assert balance > 0 and usd(balance) in out
    assert any("BTC-USD" in line and "0.00" in line for line in out.splitlines())


def test_ape_run_trade_still_reaches_the_wallet(run):
    """`ape run trade` loads scripts/trade.py: the same command group, `--network` accepted."""
    spec = importlib.util.spec_from_file_location("perpdex_script_trade", SCRIPTS / "trade.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.cli is wallet_cli
    out = ok(run("markets", "--network", "ethereum:local:foundry"))
    assert "BTC-USD (0)" in out


# --------------------------------------------------------------------------- the ape tools on ape's embedded chain


@pytest.fixture(scope="module")
def manifest(accounts, chain, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ape-deployments")
    Deployer(accounts[0], manifest_dir=directory).run()
    return directory / f"{chain.chain_id}.json"


@pytest.fixture(scope="module")
def d(manifest):
    from perpdex.deploy import load_deployment

    return load_deployment(manifest)


def test_the_loader_carries_the_deployment_block_and_refuses_unusable_manifests(manifest, d, chain, tmp_path):
    from perpdex.deploy import ManifestError, load_deployment

    recorded = json.loads(manifest.read_text())
    assert d.block == recorded["block"] and d.exchange.address == recorded["contracts"]["exchange"]["address"]
    assert [m.symbol for m in d.markets] == ["BTC-USD", "ETH-USD"]

    def refused(edit) -> str:
        broken = json.loads(manifest.read_text())
        edit(broken)
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ManifestError) as refusal:
            load_deployment(path)
        return refusal.value.message

    assert "is for chain 1, connected to chain" in refused(lambda m: m.update(chain_id=1))
    assert "missing liquidator" in refused(lambda m: m["contracts"].pop("liquidator"))
    assert "missing order_book" in refused(lambda m: m["contracts"].pop("order_book"))
    stale = "0x" + "12" * 20
    assert f"no vault contract at {Web3.to_checksum_address(stale)}" in refused(
        lambda m: m["contracts"]["vault"].update(address=Web3.to_checksum_address(stale))
    )
    assert "the manifest is stale" in refused(lambda m: m["markets"][0].update(aggregators=[stale]))
    with pytest.raises(ManifestError, match="no deployment manifest"):
        load_deployment(tmp_path / "none.json")


# --------------------------------------------------------------------------- `ape run pusher` on the node (last: it warps time)


@pytest.fixture(scope="module")
def pusher_cli():
    spec = importlib.util.spec_from_file_location("perpdex_script_pusher", SCRIPTS / "pusher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cli


@pytest.fixture
def pusher(node, pusher_cli, snapshot):
    """`ape run pusher ARGS` (scripts/pusher.py) as the deployer, the aggregators' owner unless
    told otherwise, on the module's anvil node."""
    url, manifest, _ = node

    def invoke(*args: str, account: str = "TEST::0"):
        return CliRunner().invoke(
            pusher_cli, [*args, "--account", account, "--deployment", str(manifest), "--rpc-url", url,
                         "--network", "ethereum:local:foundry"],
        )

    return invoke


def answer_of(c, symbol: str) -> int:
    return c[f"aggregator_{symbol}"].functions.latestAnswer().call()


def test_pusher_replays_the_march_2020_crash_into_the_index(pusher, node, c):
    w3 = node[2]
    start = parse_timestamp("2020-03-12T10:00")
    before = w3.eth.get_block("pending").timestamp
    btc_file = DATA_DIR / "btc-usdt_2020-03_1h.csv"
    out = ok(pusher("--csv", f"BTC-USD={btc_file}", "--start", "2020-03-12T10:00", "--steps", "3", "--speed", "0",
                    "--warp"))
    assert "done: 3 step(s) pushed" in out
    third = next(p for p in load_prices(btc_file) if p.timestamp == start + 2 * HOUR)
    assert answer_of(c, "BTC-USD") == to_answer(third.price)
    assert c["exchange"].functions.index_price(BTC).call() == int(third.price * WAD)
    assert w3.eth.get_block("latest").timestamp - before >= 2 * HOUR  # chain time followed the CSV
    # ETH got no price for two hours of chain time: its 1 h heartbeat expired
    from web3.exceptions import ContractLogicError

    with pytest.raises(ContractLogicError, match="oracle: stale price"):
        c["exchange"].functions.index_price(ETH).call()


def test_pusher_random_walk_is_the_seeded_path(pusher, c):
    start = {symbol: from_answer(answer_of(c, symbol)) for symbol in ("BTC-USD", "ETH-USD")}
    ok(pusher("--random-walk", "--seed", "7", "--volatility", "0.02", "--steps", "2", "--speed", "0"))
    second = list(itertools.islice(random_walk(start, seed=7, volatility=0.02), 2))[1].prices
    for market, symbol in ((BTC, "BTC-USD"), (ETH, "ETH-USD")):
        assert from_answer(answer_of(c, symbol)) == second[symbol]
        assert c["exchange"].functions.index_price(market).call() == int(second[symbol] * WAD)


def test_pusher_refuses_an_account_that_cannot_update_the_feeds_and_sends_nothing(pusher, node, c):
    w3 = node[2]
    answer, nonce = answer_of(c, "BTC-USD"), w3.eth.get_transaction_count(w3.eth.accounts[3])
    result = pusher("--random-walk", "--once", "--speed", "0", account="TEST::3")
    assert result.exit_code == 1
    assert "may not update BTC-USD's aggregator" in result.output and "set_updater" in result.output
    assert answer_of(c, "BTC-USD") == answer and w3.eth.get_transaction_count(w3.eth.accounts[3]) == nonce


def test_pusher_warp_is_refused_where_chain_time_cannot_be_set(pusher, monkeypatch):
    """On a node that is not a dev node the chain's clock is not ours to move: refused before
    anything is sent."""
    from perpdex import pusher as pusher_module

    monkeypatch.setattr(pusher_module, "is_dev_node", lambda wallet: False)
    result = pusher("--random-walk", "--once", "--speed", "0", "--warp")
    assert result.exit_code == 1 and "--warp moves chain time: only on a dev node" in result.output
