"""The command line of the wallet (`python -m perpdex.cli COMMAND ...`).

Every command validates its arguments before it connects (a typo costs nothing), then
connects to the node (--rpc-url, else $PERPDEX_RPC_URL, else $APE_FOUNDRY_HOST, else
http://127.0.0.1:8545) with the manifest (--deployment, else deployments/<chain_id>.json).
The wallet is --account TEST::<n> (a dev node's test account), --account ALIAS (an ape keystore)
or --private-key / $PERPDEX_PRIVATE_KEY. Read commands take --owner ADDRESS instead.
"""

from __future__ import annotations

import click

from perpdex.wallet import format, units
from perpdex.wallet.client import Wallet, connect, load_signer
from perpdex.wallet.units import CliError

# a negative SIZE or AMOUNT (-0.5) is an argument, not an unknown option
ARGS = {"ignore_unknown_options": True}
DEFAULT_WAIT_SECONDS = 60.0


def connection_options(command):
    options = [
        click.option("--rpc-url", default=None,
                     help="the node [default: $PERPDEX_RPC_URL, else $APE_FOUNDRY_HOST, else http://127.0.0.1:8545]"),
        click.option("--deployment", default=None, type=click.Path(dir_okay=False),
                     help="deployment manifest [default: deployments/<chain_id>.json]"),
        click.option("--account", default=None, help="TEST::<n> (a dev node's test account) or an ape account alias"),
        click.option("--private-key", default=None, help="the wallet's key [default: $PERPDEX_PRIVATE_KEY]"),
        click.option("--network", default=None, hidden=True, help="accepted for `ape run trade`; the node is --rpc-url"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def owner_option(command):
    return click.option("--owner", default=None, help="read another address [default: the wallet]")(command)


def open_wallet(conn: dict, owner: str | None = None, read_only: bool = False) -> tuple[Wallet, str | None]:
    """The key (checked before connecting), then the connection; returns the wallet and the
    address a read command reads for."""
    signer = load_signer(conn.get("account"), conn.get("private_key"))
    if owner is not None:
        from perpdex.wallet.abi import is_address, to_checksum

        if not is_address(owner):
            raise CliError(f"--owner {owner!r} is not an address")
        owner = to_checksum(owner)
    if signer is None and not read_only:
        raise CliError("give the wallet: --account TEST::<n> (a devnet's test account) or an ape account alias, "
                       "or --private-key")
    w = connect(conn.get("rpc_url"), conn.get("deployment"), signer)
    return w, owner or (signer.address if signer else None)


def read_for(conn: dict, owner: str | None) -> tuple[Wallet, str]:
    w, who = open_wallet(conn, owner, read_only=True)
    if who is None:
        raise CliError("give --account or --owner ADDRESS")
    return w, who


sub_option = click.option("--sub", "sub", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
                          help="sub-account (each is margined separately)")
slippage_option = click.option("--slippage", default=None,
                               help=f"worst fill price accepted beyond the quote, in percent (0.5) or basis points "
                                    f"(50bps) [default: {units.DEFAULT_SLIPPAGE} %]")


def waiting(what: str):
    """--no-wait and --wait-timeout for a command that sends `what` to a keeper."""
    def decorate(command):
        command = click.option("--no-wait", is_flag=True, help=f"return once the {what} is sent")(command)
        return click.option("--wait-timeout", type=click.FloatRange(0), default=DEFAULT_WAIT_SECONDS,
                            show_default=True, help="seconds to wait for a keeper's execution")(command)
    return decorate


wait_options = waiting("order")
request_wait_options = waiting("request")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """perpdex wallet: collateral, orders, positions, history, liquidity and market reports.

    Amounts are USD of collateral (6 decimals); sizes are base units (BTC for BTC-USD),
    positive to buy, negative to sell. Every transaction is simulated first: a refusal sends
    nothing and says why, with the numbers."""


# =============================================================================================
# Collateral
# =============================================================================================


@cli.command(context_settings=ARGS)
@click.argument("amount")
@connection_options
def faucet(amount, **conn):
    """Mint AMOUNT USD of the devnet's mock collateral to the wallet (local networks)."""
    from perpdex.wallet import funds

    value = units.positive_decimal(amount)
    w, _ = open_wallet(conn)
    format.show(funds.faucet(w, value))


@cli.command(context_settings=ARGS)
@click.argument("amount")
@sub_option
@connection_options
def deposit(amount, sub, **conn):
    """Deposit AMOUNT USD of collateral into a sub-account (approves the vault when needed)."""
    from perpdex.wallet import funds

    value = units.positive_decimal(amount)
    w, _ = open_wallet(conn)
    format.show(funds.deposit(w, value, sub))


@cli.command(context_settings=ARGS)
@click.argument("amount")
@sub_option
@connection_options
def withdraw(amount, sub, **conn):
    """Withdraw AMOUNT USD, or `all` the free collateral, from a sub-account to the wallet."""
    from perpdex.wallet import funds

    value = None if amount.strip().lower() == "all" else units.positive_decimal(amount)
    w, _ = open_wallet(conn)
    format.show(funds.withdraw(w, value, sub))


# =============================================================================================
# Orders
# =============================================================================================


def order_spec(kind, market, size, trigger=None, slippage=None, acceptable=None, reduce_only=False, expiry=None):
    from perpdex.wallet.trading import ORDER_KINDS, order_spec

    if kind not in ORDER_KINDS:
        raise CliError(f"unknown order kind {kind!r}: market, limit, stop or take-profit")
    units.check_expiry(expiry)
    return order_spec(ORDER_KINDS[kind], market, units.signed_size(size), trigger, units.parse_slippage(slippage),
                      acceptable, reduce_only, slippage is not None, expiry)


def commit_and_follow(conn: dict, spec, sub: int, wait: bool, timeout: float) -> None:
    from perpdex.wallet import trading

    w, _ = open_wallet(conn)
    order, block = trading.commit(w, spec, sub)
    format.show(trading.committed_text(order, w.chain_time()))
    if not wait:
        return
    format.show(f"waiting up to {timeout:g} s for a keeper to execute it ...")
    filled, text = trading.wait_for(w, order, block, timeout)
    if not filled:
        raise CliError(text)
    format.show(text)


@cli.command("open", context_settings=ARGS)
@click.argument("market")
@click.argument("size")
@sub_option
@slippage_option
@wait_options
@connection_options
def open_(market, size, sub, slippage, no_wait, wait_timeout, **conn):
    """Trade SIZE base units of MARKET (symbol or id): positive buys, negative (-0.5) sells.

    Commits a market order and waits for a keeper to execute it at the next price."""
    commit_and_follow(conn, order_spec("market", market, size, slippage=slippage), sub, not no_wait, wait_timeout)


@cli.command(context_settings=ARGS)
@click.argument("market")
@sub_option
@slippage_option
@wait_options
@connection_options
def close(market, sub, slippage, no_wait, wait_timeout, **conn):
    """Close the whole position in MARKET (a reduce-only market order), waiting for a keeper."""
    from perpdex.wallet import trading

    slippage_value = units.parse_slippage(slippage)
    w, _ = open_wallet(conn)
    spec = trading.close_spec(w, market, sub, slippage_value)
    order, block = trading.commit(w, spec, sub)
    format.show(trading.committed_text(order, w.chain_time()))
    if no_wait:
        return
    format.show(f"waiting up to {wait_timeout:g} s for a keeper to execute it ...")
    filled, text = trading.wait_for(w, order, block, wait_timeout)
    if not filled:
        raise CliError(text)
    format.show(text)


@cli.command(context_settings=ARGS)
@click.argument("kind", type=click.Choice(["market", "limit", "stop", "stop-loss", "take-profit", "tp"],
                                          case_sensitive=False))
@click.argument("market")
@click.argument("size")
@sub_option
@click.option("--price", "--trigger", "trigger", default=None,
              help="limit price (limit) or trigger price (stop, take-profit), USD")
@slippage_option
@click.option("--acceptable", default=None, help="the worst fill price itself, USD ('any': no bound)")
@click.option("--reduce-only", is_flag=True, help="never increase the position (stop and take-profit always are)")
@click.option("--expiry", default=None, help="90s, 30m, 12h, 7d, unix seconds or ISO time (UTC) "
                                             "[default: the longest allowed]")
@click.option("--wait", is_flag=True, help="wait for a keeper's execution (market orders)")
@click.option("--wait-timeout", type=click.FloatRange(0), default=DEFAULT_WAIT_SECONDS, show_default=True)
@connection_options
def order(kind, market, size, sub, trigger, slippage, acceptable, reduce_only, expiry, wait, wait_timeout, **conn):
    """Commit a KIND order (market, limit, stop, take-profit) of SIZE base units of MARKET.

    A keeper executes it: a market order at the next price, a limit order when the index is
    at or better than --price, a stop-loss or take-profit when the index crosses --trigger."""
    spec = order_spec(kind.lower(), market, size, trigger, slippage, acceptable, reduce_only, expiry)
    commit_and_follow(conn, spec, sub, wait, wait_timeout)


@cli.command()
@sub_option
@owner_option
@connection_options
def orders(sub, owner, **conn):
    """Open orders: state, kind, size, trigger, acceptable price, not-before, expiry and fee."""
    from perpdex.wallet import trading

    w, who = read_for(conn, owner)
    rows = trading.open_orders(w, who, sub)
    if not rows:
        format.show(f"no open orders in sub-account {sub}")
        return
    params = w.read("order_book", "order_params")
    now = w.chain_time()
    format.show(f"open orders of {who}, sub-account {sub} (chain time {units.utc_time(now)}):",
                *(format.order_block(o, now, params.max_order_age) for o in rows))


@cli.command()
@click.argument("order_id")
@connection_options
def cancel(order_id, **conn):
    """Cancel ORDER_ID (as `orders` shows it): your trigger order, or anyone's expired order."""
    from perpdex.wallet import trading

    oid = units.parse_order_id(order_id)
    w, _ = open_wallet(conn)
    format.show(trading.cancel(w, oid))


# =============================================================================================
# Reports
# =============================================================================================


@cli.command()
@sub_option
@owner_option
@connection_options
def positions(sub, owner, **conn):
    """Positions (size, entry, PnL, funding, liquidation price) and the account's margin; works
    with a stale price feed (what needs a price is shown as unavailable)."""
    from perpdex.wallet import views

    w, who = read_for(conn, owner)
    rows, account = views.read_positions(w, who, sub)
    first = format.positions_table(rows, who, sub) if rows else f"no open positions in sub-account {sub}"
    format.show(first, *format.position_notes(rows), format.account_table(account))


@cli.command()
@sub_option
@owner_option
@click.option("--from-block", type=click.IntRange(0), default=None, help="first block [default: the deployment's]")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="the latest N entries")
@connection_options
def history(sub, owner, from_block, limit, **conn):
    """Deposits, withdrawals, orders, fills (fee, PnL, funding), liquidations, ADL haircuts and
    write-offs of a sub-account, from the contracts' events, in USD."""
    from perpdex.wallet.history import history_lines, read_history

    w, who = read_for(conn, owner)
    format.show(*history_lines(read_history(w, who, sub, from_block, limit), who, sub))


@cli.command()
@connection_options
def markets(**conn):
    """Per market: index, mark, skew, open interest, funding rate, PnL factor and parameters."""
    from perpdex.wallet import views

    w, _ = open_wallet(conn, read_only=True)
    rows = views.read_markets(w)
    format.show(format.markets_table(rows), format.params_table(rows))


@cli.command()
@connection_options
def insurance(**conn):
    """The insurance fund: balance, target, surplus and uncovered deficits per market."""
    from perpdex.wallet import views

    w, _ = open_wallet(conn, read_only=True)
    format.show(*format.insurance_tables(views.read_insurance(w)))


# =============================================================================================
# Liquidity
# =============================================================================================


@cli.group()
def lp():
    """Liquidity vault shares (the market maker's capital), in two steps: a request, then a
    keeper's execution at the next price."""


def follow_request(w: Wallet, request, block: int, wait: bool, timeout: float) -> None:
    from perpdex.wallet import liquidity

    format.show(liquidity.requested_text(w, request))
    if not wait:
        return
    format.show(f"waiting up to {timeout:g} s for a keeper to execute it ...")
    executed, text = liquidity.wait_for(w, request, block, timeout)
    if not executed:
        raise CliError(text)
    format.show(text)


@lp.command("deposit", context_settings=ARGS)
@click.argument("amount")
@request_wait_options
@connection_options
def lp_deposit(amount, no_wait, wait_timeout, **conn):
    """Request a deposit of AMOUNT USD into the liquidity vault for shares, and wait for a
    keeper to execute it at the next price (approves the liquidity vault when needed)."""
    from perpdex.wallet import liquidity

    value = units.positive_decimal(amount)
    w, _ = open_wallet(conn)
    request, block = liquidity.request_deposit(w, value)
    follow_request(w, request, block, not no_wait, wait_timeout)


@lp.command("redeem", context_settings=ARGS)
@click.argument("shares", required=False)
@click.option("--all", "redeem_all", is_flag=True, help="redeem every share that is free (not in a deposit's cooldown)")
@request_wait_options
@connection_options
def lp_redeem(shares, redeem_all, no_wait, wait_timeout, **conn):
    """Request the redemption of SHARES liquidity vault shares (or --all) for collateral, and
    wait for a keeper to execute it at the next price."""
    from perpdex.wallet import liquidity

    if (shares is None) == (not redeem_all):
        raise CliError("give either SHARES or --all")
    amount = None if redeem_all else units.positive_amount(shares, 18, "SHARES")
    w, _ = open_wallet(conn)
    request, block = liquidity.request_redeem(w, amount)
    follow_request(w, request, block, not no_wait, wait_timeout)


@lp.command("requests")
@owner_option
@connection_options
def lp_requests(owner, **conn):
    """Open deposit and redemption requests: amount, fee, delay, expiry and state."""
    from perpdex.wallet import liquidity

    w, who = read_for(conn, owner)
    format.show("\n".join(liquidity.requests_text(w, who)))


@lp.command("cancel")
@click.argument("request_id")
@connection_options
def lp_cancel(request_id, **conn):
    """Cancel REQUEST_ID (as `lp requests` shows it) once it has expired unexecuted: the assets
    or shares go back to its requester, its execution fee to you."""
    from perpdex.wallet import liquidity

    rid = units.parse_request_id(request_id)
    w, _ = open_wallet(conn)
    format.show(liquidity.cancel(w, rid))


def main() -> None:
    cli(prog_name="perpdex")
