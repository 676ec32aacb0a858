"""`ape run trade` and `ape run pusher` on ape's embedded chain, driven like a person would:
the click commands of scripts/trade.py and scripts/pusher.py run under CliRunner against a
deployment written to a manifest by `perpdex.deploy.Deployer`.

Trades are orders: `open`/`close` commit a market order and wait for a keeper. Here the keeper
acts while the CLI waits: the `keeper` fixture replaces the CLI's pause between two looks at
the order with what a keeper and the price pusher do on a devnet (a new oracle round a second
later, then `execute_order` at the round that qualifies, simulated first)."""

import importlib.util
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from web3 import Web3

import perpdex.cli as wallet
from perpdex.cli import usd
from perpdex.deploy import Deployer
from perpdex.fixed_point import WAD
from perpdex.pusher import DATA_DIR, from_answer, load_prices, parse_timestamp, random_walk, to_answer

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BTC, ETH = 0, 1
USDC = 10**6
HOUR = 3600


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"perpdex_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest(accounts, chain, tmp_path_factory):
    directory = tmp_path_factory.mktemp("deployments")
    Deployer(accounts[0], manifest_dir=directory).run()
    return directory / f"{chain.chain_id}.json"


@pytest.fixture(scope="module")
def d(manifest):
    from perpdex.deploy import load_deployment

    return load_deployment(manifest)


@pytest.fixture(scope="module")
def trade_cli():
    return load_script("trade").cli


@pytest.fixture(scope="module")
def pusher_cli():
    return load_script("pusher").cli


@pytest.fixture
def owner(accounts):
    return accounts[0]


@pytest.fixture
def trader(accounts, d, owner):
    d.collateral.mint(accounts[1], 10_000 * USDC, sender=owner)
    return accounts[1]


@pytest.fixture
def keeper(accounts, d, owner, chain, monkeypatch):
    """A keeper and a price pusher acting while the CLI waits (each pause of its wait loop):
    a new round of every market's feed a second later, then every open order of the traders
    it watches executed at the latest round if the order book accepts that round (simulated
    first, as the keeper does). Returns the keeper's account."""
    account = accounts[4]
    watched = {(accounts[i].address, sub) for i in (1, 2, 3) for sub in (0, 2)}

    def act(_seconds: float) -> None:
        chain.pending_timestamp += 1
        for feeds in d.aggregators.values():
            feeds[0].update_answer(feeds[0].latestAnswer(), sender=owner)
        execute_ready_orders(d, account, watched)

    monkeypatch.setattr(wallet, "_sleep", act)
    return account


def execute_ready_orders(d, keeper, accounts: set) -> int:
    """execute_order for every open order of `accounts` at its market's latest round, when the
    order book accepts that round (a simulation that reverts means: not this round)."""
    from ape.exceptions import ContractLogicError

    executed = 0
    for owner, sub in sorted(accounts):
        for order_id in d.order_book.open_orders(owner, sub):
            market = d.order_book.order(order_id).market_id
            rounds = [agg.latestRound() for agg in d.aggregators[market]]
            try:
                d.order_book.execute_order.call(order_id, rounds, sender=keeper)
            except ContractLogicError:
                continue
            d.order_book.execute_order(order_id, rounds, sender=keeper)
            executed += 1
    return executed


@pytest.fixture
def lp(accounts, d, owner):
    d.collateral.mint(accounts[2], 50_000 * USDC, sender=owner)
    return accounts[2]


@pytest.fixture
def run_command(chain):
    """Invoke a click command as `ape run` would; returns click's Result.

    A ConnectedProviderCommand connects a second provider instance to the embedded chain to
    read its chain id and disconnects it, which makes ape forget the session's snapshots;
    putting them back keeps ape's per-test isolation working."""

    def invoke(command, argv):
        snapshots = list(chain._snapshots[chain.chain_id])
        try:
            return CliRunner().invoke(command, argv)
        finally:
            chain._snapshots[chain.chain_id] = snapshots

    return invoke


@pytest.fixture
def cli(manifest, trade_cli, accounts, run_command):
    """`ape run trade ARGS` as `account` (TEST::<index>)."""

    def invoke(*args: str, account=None):
        argv = [*args, "--deployment", str(manifest)]
        if account is not None:
            argv += ["--account", f"TEST::{list(accounts).index(account)}"]
        return run_command(trade_cli, argv)

    return invoke


@pytest.fixture
def pusher(manifest, pusher_cli, run_command):
    """`ape run pusher ARGS` as the deployer (the aggregators' owner unless told otherwise)."""

    def invoke(*args: str, account: str = "TEST::0"):
        return run_command(pusher_cli, [*args, "--account", account, "--deployment", str(manifest)])

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def usd_units(units: int) -> str:
    return str(Decimal(units) / USDC)


# --------------------------------------------------------------------------- the manifest


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


# --------------------------------------------------------------------------- trading


def test_trader_deposits_opens_checks_closes_and_withdraws(cli, d, trader, keeper):
    exchange, vault, usdc = d.exchange, d.vault, d.collateral
    fee = d.order_book.order_params().execution_fee
    assert usdc.allowance(trader, vault) == 0  # the CLI approves by itself

    out = ok(cli("deposit", "10000", "--sub", "2", account=trader))
    assert "deposited 10,000.00 USD, sub-account 2" in out
    assert vault.cash(trader, 2) == 10_000 * WAD and usdc.balanceOf(trader) == 0

    quote = exchange.fill_price(BTC, WAD // 2)
    limit = quote * 1005 // 1000
    out = ok(cli("open", "BTC-USD", "0.5", "--sub", "2", "--slippage", "0.5", account=trader))
    size, entry, _, _ = exchange.position(trader, 2, BTC)
    assert (size, entry) == (WAD // 2, quote)
    assert "committed order 0x" in out and f"acceptable price <= {usd(limit)}" in out
    assert "waiting up to 60 s for a keeper" in out
    assert f"executed by {keeper.address}" in out
    assert f"bought 0.5 BTC-USD at {usd(quote)} (limit {usd(limit)})" in out
    assert f"execution fee {usd(fee)}" in out
    assert vault.cash(keeper, 0) == fee  # the keeper earned the execution fee

    out = ok(cli("positions", "--sub", "2", account=trader))
    liquidation = d.liquidator.liquidation_price(trader, 2, BTC)
    assert 0 < liquidation < entry
    row = next(line for line in out.splitlines() if "BTC-USD" in line)
    for shown in ("+0.5000", usd(entry), "40,000.00", usd(exchange.mark_price(BTC)), usd(liquidation)):
        assert shown in row
    cash, equity, initial, maintenance = exchange.account_state(trader, 2)
    account_row = next(line for line in out.splitlines() if usd(cash) in line)
    for shown in (usd(equity), usd(initial), usd(maintenance), usd(exchange.withdrawable(trader, 2))):
        assert shown in account_row

    # margin is checked at execution: the keeper cancels the order with the exchange's reason
    cash = vault.cash(trader, 2)
    refused = cli("open", "BTC-USD", "100", "--sub", "2", account=trader)
    assert refused.exit_code == 1
    assert f"cancelled by {keeper.address}: Rejected by the exchange: insufficient margin" in refused.output
    assert f"the execution fee {usd(fee)} USD went to {keeper.address}" in refused.output
    assert exchange.position(trader, 2, BTC)[0] == WAD // 2
    assert vault.cash(trader, 2) == cash - fee and vault.cash(keeper, 0) == 2 * fee

    out = ok(cli("close", "BTC", "--sub", "2", account=trader))
    assert "market sell 0.5 BTC-USD" in out and "reduce-only" in out
    assert "position now +0.0000" in out
    assert exchange.position(trader, 2, BTC)[0] == 0

    free_units = exchange.withdrawable(trader, 2) // 10**12
    ok(cli("withdraw", usd_units(free_units), "--sub", "2", account=trader))
    assert usdc.balanceOf(trader) == free_units
    # the round trip cost the fees: taker 0.06 % to open, maker 0.02 % to close (it reduced the
    # skew), and three execution fees of 0.50 (the cancelled order's too)
    assert 10_000 * USDC - free_units == pytest.approx(16 * USDC + 3 * USDC // 2, abs=USDC // 100)


def test_negative_size_opens_a_short_at_the_quote_with_zero_slippage(cli, d, trader, keeper):
    ok(cli("deposit", "5000", account=trader))
    quote = d.exchange.fill_price(ETH, -3 * WAD)
    out = ok(cli("open", "ETH-USD", "-3", "--slippage", "0", account=trader))
    assert f"sold 3 ETH-USD at {usd(quote)} (limit {usd(quote)})" in out
    assert d.exchange.position(trader, 0, ETH)[:2] == (-3 * WAD, quote)


def test_withdrawing_margin_in_use_is_refused_with_the_vaults_reason(cli, d, trader, keeper):
    ok(cli("deposit", "1000", account=trader))
    ok(cli("open", "0", "0.5", account=trader))  # BTC-USD by id: 800 USD initial margin on 20,000
    refused = cli("withdraw", "500", account=trader)
    assert refused.exit_code != 0
    assert "Rejected by the vault: insufficient free collateral" in refused.output
    assert d.collateral.balanceOf(trader) == 9_000 * USDC


@pytest.mark.parametrize(
    "args, message",
    [
        (("open", "DOGE-USD", "1"), "unknown market 'DOGE-USD'; listed markets: BTC-USD (0), ETH-USD (1)"),
        (("open", "BTC-USD", "0"), "SIZE must not be zero"),
        (("deposit", "1.0000001"), "AMOUNT 1.0000001 has more than 6 decimals"),
        (("deposit", "20000"), "holds 10,000.00 USD of collateral, less than 20,000.00"),
        (("close", "BTC-USD"), "no open BTC-USD position in sub-account 0"),
    ],
)
def test_mistakes_are_explained_and_exit_non_zero(cli, d, trader, args, message):
    result = cli(*args, account=trader)
    assert result.exit_code == 1
    assert message in result.output
    assert d.vault.cash(trader, 0) == 0


# --------------------------------------------------------------------------- orders


def order_fields(out: str) -> dict[str, str]:
    """The fields of the one order `orders` printed, by name."""
    (start,) = [i for i, line in enumerate(out.splitlines()) if line.startswith("order 0x")]
    fields = {"id": out.splitlines()[start].removeprefix("order ")}
    for line in out.splitlines()[start + 1:]:
        if not line.startswith("  "):
            break
        name, value = line[2:13].strip(), line[14:]
        fields[name] = value
    return fields


def test_limit_order_rests_is_listed_with_its_terms_and_is_cancelled_with_the_fee_refunded(cli, d, trader, chain):
    fee = d.order_book.order_params().execution_fee
    ok(cli("deposit", "10000", account=trader))
    out = ok(cli("order", "limit", "BTC-USD", "0.5", "--price", "39000", "--slippage", "50bps", account=trader))
    (order_id,) = d.order_book.open_orders(trader, 0)
    assert f"committed order {order_id:#x}: limit buy 0.5 BTC-USD triggered at 39,000.00" in out
    assert "acceptable price <= 39,195.00" in out  # 39,000 + 0.5 %
    assert "it rests until a BTC-USD price crosses 39,000.00" in out and "waiting" not in out
    assert d.vault.cash(trader, 0) == 10_000 * WAD - fee and d.vault.order_escrow_cash() == fee
    order = d.order_book.order(order_id)
    assert (order.kind, order.size_delta, order.trigger_price) == (1, WAD // 2, 39_000 * WAD)
    assert order.acceptable_price == 39_195 * WAD and not order.reduce_only

    out = ok(cli("orders", account=trader))
    now = chain.blocks.head.timestamp
    assert f"open orders of {trader.address}, sub-account 0 (chain time {wallet.utc_time(now)})" in out
    assert order_fields(out) == {
        "id": f"{order_id:#x}",
        "state": "resting until the index crosses its trigger",
        "kind": "limit buy",
        "size": "+0.5000 BTC-USD",
        "trigger": "39,000.00",
        "acceptable": "<= 39,195.00",
        "not before": f"{wallet.utc_time(order.not_before)} (in 1s)",
        "expiry": f"{wallet.utc_time(order.expiry)} ({wallet.relative(order.expiry, now)})",
        "fee": "0.50 USD",
    }
    assert order.expiry - now == 365 * 86400 and wallet.relative(order.expiry, now) == "in 365d"

    nonce = trader.nonce
    out = ok(cli("cancel", hex(order_id), account=trader))
    assert f"cancelled order {order_id:#x} (cancelled by owner); execution fee 0.50 USD refunded" in out
    assert trader.nonce == nonce + 1
    assert d.vault.cash(trader, 0) == 10_000 * WAD and d.vault.order_escrow_cash() == 0
    assert "no open orders in sub-account 0" in ok(cli("orders", account=trader))


def test_stop_loss_of_a_long_fires_when_the_price_crosses_it(cli, d, trader, keeper, owner, chain):
    ok(cli("deposit", "10000", account=trader))
    ok(cli("open", "BTC", "0.5", account=trader))
    out = ok(cli("order", "stop", "BTC", "-0.5", "--trigger", "39000", "--expiry", "7d", account=trader))
    (order_id,) = d.order_book.open_orders(trader, 0)
    assert "stop-loss sell 0.5 BTC-USD triggered at 39,000.00, acceptable price >= 38,805.00, reduce-only" in out
    shown = order_fields(ok(cli("orders", account=trader)))
    assert shown["kind"] == "stop-loss sell, reduce-only" and shown["size"] == "-0.5000 BTC-USD"
    assert shown["trigger"] == "39,000.00" and shown["acceptable"] == ">= 38,805.00"
    expiry = d.order_book.order(order_id).expiry
    assert shown["expiry"].startswith(wallet.utc_time(expiry))
    assert 7 * 86400 - 10 <= expiry - chain.blocks.head.timestamp <= 7 * 86400  # 7 days from the commit

    # the same price again: not triggered, the keeper leaves it resting
    assert execute_ready_orders(d, keeper, {(trader.address, 0)}) == 0
    d.aggregators[BTC][0].update_answer(38_900 * 10**8, sender=owner)  # the crossing round
    assert execute_ready_orders(d, keeper, {(trader.address, 0)}) == 1
    assert d.exchange.position(trader, 0, BTC)[0] == 0
    assert d.order_book.order(order_id).state == 2  # executed
    assert "no open orders" in ok(cli("orders", account=trader))


def test_pending_market_order_blocks_withdrawals_and_cannot_be_cancelled_before_it_expires(cli, d, trader, accounts,
                                                                                          chain):
    other = accounts[3]
    ok(cli("deposit", "10000", account=trader))
    out = ok(cli("order", "market", "ETH", "-2", "--acceptable", "any", account=trader))
    (order_id,) = d.order_book.open_orders(trader, 0)
    assert "market sell 2 ETH-USD, acceptable price any" in out and "waiting" not in out
    assert d.order_book.order(order_id).acceptable_price == 0
    shown = order_fields(ok(cli("orders", account=trader)))
    assert shown["state"] == "pending: executes at the first price published from its not-before time"
    assert shown["kind"] == "market sell" and shown["trigger"] == "-" and shown["acceptable"] == "any"
    assert shown["expiry"].endswith("(in 1h)")  # max_order_age after the commit

    nonce = trader.nonce
    refused = cli("withdraw", "100", account=trader)
    assert refused.exit_code == 1
    assert "Rejected by the vault: a market order is pending; withdraw after it executes or expires" in refused.output
    refused = cli("cancel", str(order_id), account=trader)
    assert refused.exit_code == 1
    assert "Rejected by the order book: a market order cannot be cancelled before it expires at" in refused.output
    assert trader.nonce == nonce  # simulated, refused, nothing sent

    # nobody executed it; once expired, anyone cancels it and takes the fee
    chain.pending_timestamp += 3600
    chain.mine()
    shown = order_fields(ok(cli("orders", "--owner", trader.address, account=other)))
    assert shown["state"] == "expired: anyone may cancel it for the fee"
    out = ok(cli("cancel", hex(order_id), account=other))
    assert f"cancelled order {order_id:#x} (expired); execution fee 0.50 USD paid to {other.address}" in out
    assert d.vault.cash(other, 0) == WAD // 2
    ok(cli("withdraw", "100", account=trader))


def test_open_without_a_keeper_stops_waiting_and_says_what_it_waited_for(cli, d, trader):
    ok(cli("deposit", "10000", account=trader))
    result = cli("open", "BTC-USD", "0.5", "--wait-timeout", "0", account=trader)
    assert result.exit_code == 1
    (order_id,) = d.order_book.open_orders(trader, 0)
    order = d.order_book.order(order_id)
    assert f"no keeper executed order {order_id:#x} within 0 s" in result.output
    assert f"to execute it at the first BTC-USD price published from {wallet.utc_time(order.not_before)}" in result.output
    assert f"It stays open; it expires {wallet.utc_time(order.expiry)}" in result.output
    assert order.state == 1 and d.exchange.position(trader, 0, BTC)[0] == 0


def test_open_no_wait_returns_once_committed_and_the_keeper_fills_it_later(cli, d, trader, keeper):
    ok(cli("deposit", "10000", account=trader))
    out = ok(cli("open", "BTC-USD", "0.25", "--no-wait", account=trader))
    assert "committed order" in out and "waiting" not in out
    assert d.exchange.position(trader, 0, BTC)[0] == 0
    wallet._sleep(0)  # the keeper's next pass
    assert d.exchange.position(trader, 0, BTC)[0] == WAD // 4


def test_open_and_close_wait_for_the_keeper_of_perpdex_keeper(cli, d, trader, accounts, owner, chain, monkeypatch,
                                                              tmp_path):
    """The keeper the devnet runs (perpdex.keeper.Keeper, one pass per pause of the wait) and
    a pusher publishing a round a second: open and close each print the keeper's fill."""
    from perpdex.keeper import Keeper

    keeper_account = accounts[5]
    start = chain.blocks.head.number
    keeper = Keeper(d, keeper_account, tmp_path / "keeper.json", start_block=start)

    def keeper_pass(_seconds: float) -> None:
        chain.pending_timestamp += 1
        for feeds in d.aggregators.values():
            feeds[0].update_answer(feeds[0].latestAnswer(), sender=owner)
        keeper.run_once()

    monkeypatch.setattr(wallet, "_sleep", keeper_pass)
    ok(cli("deposit", "10000", account=trader))
    quote = d.exchange.fill_price(ETH, 4 * WAD)
    out = ok(cli("open", "ETH", "4", account=trader))
    assert f"executed by {keeper_account.address}" in out and f"bought 4 ETH-USD at {usd(quote)}" in out
    out = ok(cli("close", "ETH", account=trader))
    assert f"executed by {keeper_account.address}" in out and "position now +0.0000" in out
    assert d.exchange.position(trader, 0, ETH)[0] == 0
    assert d.vault.cash(keeper_account, 0) == 2 * d.order_book.order_params().execution_fee


@pytest.mark.parametrize(
    "args, message",
    [
        (("order", "limit", "BTC", "1"), "a limit order needs its --price"),
        (("order", "take-profit", "BTC", "-1"), "a take-profit order needs its --trigger"),
        (("order", "market", "BTC", "1", "--price", "40000"), "a market order takes no --price/--trigger"),
        (("order", "market", "BTC", "1", "--slippage", "1", "--acceptable", "41000"),
         "give either --slippage or --acceptable, not both"),
        (("order", "limit", "BTC", "1", "--price", "41000"),
         "Rejected by the order book: trigger already reached at the index 40000000000000000000000 (WAD)"),
        (("order", "market", "BTC", "1", "--expiry", "2h"), "Rejected by the order book: expiry after the latest allowed"),
        (("order", "market", "BTC", "1", "--expiry", "2001-01-01"), "is not in the future"),
        (("order", "market", "BTC", "1", "--expiry", "soon"), "give a duration (90s, 30m, 12h, 7d)"),
        (("order", "market", "BTC", "1", "--slippage", "150"), "--slippage is a percentage in [0, 100)"),
        (("order", "market", "BTC", "300"), "Rejected by the order book: size above the market's max position size"),
        (("cancel", "0xdead"), "Rejected by the order book: unknown order"),
        (("cancel", "next"), "ORDER_ID must be the id `orders` shows"),
    ],
)
def test_order_mistakes_are_explained_and_send_nothing(cli, d, trader, args, message):
    ok(cli("deposit", "1000", account=trader))
    nonce = trader.nonce
    result = cli(*args, account=trader)
    assert result.exit_code == 1
    assert message in result.output
    assert trader.nonce == nonce and d.order_book.open_orders(trader, 0) == []


def test_a_stop_loss_must_reduce_the_position(cli, d, trader, keeper):
    ok(cli("deposit", "10000", account=trader))
    ok(cli("open", "BTC", "0.5", account=trader))
    result = cli("order", "stop", "BTC", "0.5", "--trigger", "39000", account=trader)
    assert result.exit_code == 1
    assert "your BTC-USD position is long, so its SIZE must be negative" in result.output
    assert d.order_book.open_orders(trader, 0) == []


def test_execution_fee_above_the_cash_is_refused_at_commit(cli, d, trader):
    nonce = trader.nonce
    result = cli("order", "market", "BTC", "0.1", account=trader)  # nothing deposited
    assert result.exit_code == 1
    assert "Rejected by the vault: execution fee above cash" in result.output
    assert trader.nonce == nonce


def test_faucet_mints_devnet_collateral_to_the_wallet(cli, d, accounts):
    newcomer = accounts[7]
    before = d.collateral.balanceOf(newcomer)
    out = ok(cli("faucet", "2500.5", account=newcomer))
    assert d.collateral.balanceOf(newcomer) - before == 2_500_500_000
    assert "minted 2,500.50 USD of devnet collateral" in out
    refused = cli("faucet", "2000000", account=newcomer)  # above the mock's cap of 1,000,000 per call
    assert refused.exit_code == 1 and "Rejected by the devnet collateral token: faucet cap" in refused.output


# --------------------------------------------------------------------------- liquidity


def test_lp_deposits_then_redeems_part_and_then_all(cli, d, lp):
    lv, usdc = d.liquidity_vault, d.collateral
    out = ok(cli("lp", "deposit", "50000", account=lp))
    shares = lv.balanceOf(lp)
    assert shares > 0 and usdc.balanceOf(lp) == 0
    assert lv.totalAssets() == 50_000 * USDC
    assert f"deposited 50,000.00 USD for {Decimal(shares) / WAD:,f} LP shares" in out

    ok(cli("lp", "redeem", str(Decimal(shares // 4) / WAD), account=lp))
    assert lv.balanceOf(lp) == shares - shares // 4
    assert usdc.balanceOf(lp) == pytest.approx(12_500 * USDC, abs=1)

    ok(cli("lp", "redeem", "--all", account=lp))
    assert lv.balanceOf(lp) == 0
    assert usdc.balanceOf(lp) == pytest.approx(50_000 * USDC, abs=2)


def test_lp_redeem_needs_shares_or_all(cli, lp):
    result = cli("lp", "redeem", account=lp)
    assert result.exit_code == 1 and "give either SHARES or --all" in result.output


# --------------------------------------------------------------------------- reports


def test_insurance_shows_fee_income_target_surplus_and_no_deficit(cli, d, trader, owner, keeper):
    ok(cli("deposit", "10000", account=trader))
    ok(cli("open", "BTC-USD", "0.5", account=trader))  # fee 12 USD, 20 % to the insurance fund
    d.insurance_fund.set_target(WAD, sender=owner)
    balance = d.insurance_fund.fund_balance()
    assert balance // 10**16 == 240  # 2.40 USD
    out = ok(cli("insurance"))
    fund_row = next(line for line in out.splitlines() if usd(balance) in line)
    assert "1.00" in fund_row and "1.40" in fund_row  # the target, and the surplus above it
    for symbol in ("BTC-USD", "ETH-USD"):
        assert any(symbol in line and "0.00" in line for line in out.splitlines())


def test_markets_shows_prices_skew_open_interest_funding_and_parameters(cli, d, trader, keeper):
    ok(cli("deposit", "10000", account=trader))
    ok(cli("open", "BTC-USD", "2", account=trader))
    rate = d.exchange.funding_rate(BTC)
    assert rate > 0  # longs pay while the skew is long
    out = ok(cli("markets"))
    btc = next(line for line in out.splitlines() if "BTC-USD (0)" in line)
    for shown in ("40,000.00", usd(d.exchange.mark_price(BTC)), "+2.0000", "2.0000", "0.0000",
                  f"{Decimal(rate) / WAD * 100:+.4f} %", f"{Decimal(rate * 1095) / WAD * 100:+.2f} %"):
        assert shown in btc
    params = next(line for line in out.splitlines() if "BTC-USD" in line and "10,000" in line)
    for shown in ("4 %", "2 %", "0.5 %", "0.02 %", "0.06 %", "2,000", "200", "50"):
        assert shown in params


# --------------------------------------------------------------------------- pusher (last: it warps time)


def test_pusher_replays_the_march_2020_crash_into_the_index(pusher, cli, d, chain):
    start = parse_timestamp("2020-03-12T10:00")
    before = chain.pending_timestamp
    btc_file = DATA_DIR / "btc-usdt_2020-03_1h.csv"
    ok(pusher("--csv", f"BTC-USD={btc_file}", "--start", "2020-03-12T10:00", "--steps", "3", "--speed", "0", "--warp"))
    third = next(p for p in load_prices(btc_file) if p.timestamp == start + 2 * HOUR)
    assert d.aggregators[BTC][0].latestAnswer() == to_answer(third.price)
    assert d.exchange.index_price(BTC) == int(third.price * WAD)
    assert chain.pending_timestamp - before >= 2 * HOUR  # chain time followed the CSV
    out = ok(cli("markets"))
    assert usd(int(third.price * WAD)) in next(line for line in out.splitlines() if "BTC-USD (0)" in line)
    # ETH got no price for two hours of chain time: its 1 h heartbeat expired
    assert "oracle: stale price" in next(line for line in out.splitlines() if "ETH-USD (1)" in line)


def test_pusher_random_walk_is_the_seeded_path(pusher, d):
    ok(pusher("--random-walk", "--seed", "7", "--volatility", "0.02", "--steps", "2", "--speed", "0"))
    start = {"BTC-USD": Decimal(40_000), "ETH-USD": Decimal(2_000)}
    second = list(itertools.islice(random_walk(start, seed=7, volatility=0.02), 2))[1].prices
    for market, symbol in ((BTC, "BTC-USD"), (ETH, "ETH-USD")):
        assert from_answer(d.aggregators[market][0].latestAnswer()) == second[symbol]
        assert d.exchange.index_price(market) == int(second[symbol] * WAD)


def test_pusher_refuses_an_account_that_cannot_update_the_feeds(pusher, d):
    answer = d.aggregators[BTC][0].latestAnswer()
    result = pusher("--random-walk", "--once", "--speed", "0", account="TEST::3")
    assert result.exit_code == 1
    assert "may not update BTC-USD's aggregator" in result.output and "set_updater" in result.output
    assert d.aggregators[BTC][0].latestAnswer() == answer
