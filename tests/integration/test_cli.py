"""`ape run trade` and `ape run pusher` on ape's embedded chain, driven like a person would:
the click commands of scripts/trade.py and scripts/pusher.py run under CliRunner against a
deployment written to a manifest by `perpdex.deploy.Deployer`."""

import importlib.util
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from web3 import Web3

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
    stale = "0x" + "12" * 20
    assert f"no vault contract at {Web3.to_checksum_address(stale)}" in refused(
        lambda m: m["contracts"]["vault"].update(address=Web3.to_checksum_address(stale))
    )
    assert "the manifest is stale" in refused(lambda m: m["markets"][0].update(aggregators=[stale]))
    with pytest.raises(ManifestError, match="no deployment manifest"):
        load_deployment(tmp_path / "none.json")


# --------------------------------------------------------------------------- trading


def test_trader_deposits_opens_checks_closes_and_withdraws(cli, d, trader):
    exchange, vault, usdc = d.exchange, d.vault, d.collateral
    assert usdc.allowance(trader, vault) == 0  # the CLI approves by itself

    out = ok(cli("deposit", "10000", "--sub", "2", account=trader))
    assert "deposited 10,000.00 USD, sub-account 2" in out
    assert vault.cash(trader, 2) == 10_000 * WAD and usdc.balanceOf(trader) == 0

    quote = exchange.fill_price(BTC, WAD // 2)
    limit = quote * 1005 // 1000
    out = ok(cli("open", "BTC-USD", "0.5", "--sub", "2", "--slippage", "0.5", account=trader))
    size, entry, _, _ = exchange.position(trader, 2, BTC)
    assert (size, entry) == (WAD // 2, quote)
    assert f"bought 0.5 BTC-USD at {usd(quote)} (limit {usd(limit)})" in out

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

    refused = cli("open", "BTC-USD", "100", "--sub", "2", account=trader)
    assert refused.exit_code != 0
    assert "Rejected by the exchange: insufficient margin" in refused.output
    assert exchange.position(trader, 2, BTC)[0] == WAD // 2

    out = ok(cli("close", "BTC", "--sub", "2", account=trader))
    assert "position now +0.0000" in out
    assert exchange.position(trader, 2, BTC)[0] == 0

    free_units = exchange.withdrawable(trader, 2) // 10**12
    ok(cli("withdraw", usd_units(free_units), "--sub", "2", account=trader))
    assert usdc.balanceOf(trader) == free_units
    # the round trip cost the fees: taker 0.06 % to open, maker 0.02 % to close (it reduced the skew)
    assert 10_000 * USDC - free_units == pytest.approx(16 * USDC, abs=USDC // 100)


def test_negative_size_opens_a_short_at_the_quote_with_zero_slippage(cli, d, trader):
    ok(cli("deposit", "5000", account=trader))
    quote = d.exchange.fill_price(ETH, -3 * WAD)
    out = ok(cli("open", "ETH-USD", "-3", "--slippage", "0", account=trader))
    assert f"sold 3 ETH-USD at {usd(quote)} (limit {usd(quote)})" in out
    assert d.exchange.position(trader, 0, ETH)[:2] == (-3 * WAD, quote)


def test_withdrawing_margin_in_use_is_refused_with_the_vaults_reason(cli, d, trader):
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


def test_insurance_shows_fee_income_target_surplus_and_no_deficit(cli, d, trader, owner):
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


def test_markets_shows_prices_skew_open_interest_funding_and_parameters(cli, d, trader):
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
