"""`ape run trade <command> --network <network> --account <alias>`: the perpdex wallet.

    ape run trade faucet 10000                   devnet collateral to the wallet (mock USDC)
    ape run trade deposit 1000 --sub 0          USD of collateral into a sub-account
    ape run trade open BTC-USD 0.5 --slippage 0.5   buy 0.5 BTC (a negative size sells) with a
                                                 market order; waits for a keeper to execute it
    ape run trade positions                      positions, liquidation prices, margin
    ape run trade close BTC-USD                  close the whole position (reduce-only market order)
    ape run trade order limit BTC-USD 0.5 --price 39000       rests until the index is at or below
    ape run trade order stop BTC-USD -0.5 --trigger 38000     stop-loss of a long (reduce-only)
    ape run trade order take-profit BTC-USD -0.5 --trigger 42000 --expiry 7d
    ape run trade orders / cancel 0x...          open orders; cancel one
    ape run trade withdraw 500
    ape run trade lp deposit 10000 / lp redeem --all
    ape run trade markets / insurance

Contracts come from deployments/<chain_id>.json (`--deployment` to use another manifest).
The logic is in perpdex/cli.py; this file only parses the command line."""

import click
from ape.cli import ConnectedProviderCommand, account_option

from perpdex import cli as wallet
from perpdex.deploy import load_deployment

deployment_option = click.option(
    "--deployment", type=click.Path(dir_okay=False), default=None,
    help="deployment manifest [default: deployments/<chain_id>.json]",
)
sub_option = click.option("--sub", "sub_account", type=click.IntRange(0), default=0, show_default=True,
                          help="sub-account (each is margined separately)")
slippage_option = click.option("--slippage", default=str(wallet.DEFAULT_SLIPPAGE), show_default=True,
                               help="worst fill price accepted, in percent beyond the quote")
# a negative SIZE (-0.5) must not be read as an option
SIGNED_ARGS = {"ignore_unknown_options": True}


@click.group()
def cli():
    """perpdex wallet: margin, orders, positions, liquidity and market reports."""


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@sub_option
@click.argument("amount")
def deposit(account, deployment, sub_account, amount):
    """Deposit AMOUNT USD of collateral (approves the vault when needed)."""
    d = load_deployment(deployment)
    wallet.show(wallet.deposit(d, account, amount, sub_account).summary("deposited"))


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("amount")
def faucet(account, deployment, amount):
    """Mint AMOUNT USD of the devnet's mock collateral to the wallet (devnets only)."""
    wallet.show(wallet.faucet(load_deployment(deployment), account, amount))


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@sub_option
@click.argument("amount")
def withdraw(account, deployment, sub_account, amount):
    """Withdraw AMOUNT USD of free collateral to the wallet."""
    d = load_deployment(deployment)
    wallet.show(wallet.withdraw(d, account, amount, sub_account).summary("withdrew"))


def wait_options(command):
    command = click.option("--no-wait", is_flag=True, help="return once the order is committed")(command)
    return click.option(
        "--wait-timeout", type=click.FloatRange(0), default=wallet.DEFAULT_WAIT_SECONDS, show_default=True,
        help="seconds to wait for a keeper's execution",
    )(command)


@cli.command("open", cls=ConnectedProviderCommand, context_settings=SIGNED_ARGS)
@account_option()
@deployment_option
@sub_option
@slippage_option
@wait_options
@click.argument("market")
@click.argument("size")
def open_(account, deployment, sub_account, slippage, no_wait, wait_timeout, market, size):
    """Trade SIZE base units of MARKET (symbol or id): positive buys, negative (-0.5) sells.

    Commits a market order and waits for a keeper to execute it at the next price."""
    d = load_deployment(deployment)
    committed = wallet.open_position(d, account, market, size, sub_account, slippage)
    wallet.follow_order(d, committed, not no_wait, wait_timeout)


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@sub_option
@slippage_option
@wait_options
@click.argument("market")
def close(account, deployment, sub_account, slippage, no_wait, wait_timeout, market):
    """Close the whole position in MARKET (a reduce-only market order), waiting for a keeper."""
    d = load_deployment(deployment)
    committed = wallet.close_position(d, account, market, sub_account, slippage)
    wallet.follow_order(d, committed, not no_wait, wait_timeout)


@cli.command(cls=ConnectedProviderCommand, context_settings=SIGNED_ARGS)
@account_option()
@deployment_option
@sub_option
@click.argument("kind", type=click.Choice(sorted(wallet.ORDER_KINDS), case_sensitive=False))
@click.argument("market")
@click.argument("size")
@click.option("--price", "--trigger", "trigger", default=None,
              help="limit price (limit) or trigger price (stop, take-profit), USD")
@click.option("--slippage", default=None,
              help=f"acceptable price this far beyond the quote (market) or the trigger, in percent "
                   f"(0.5) or basis points (50bps) [default: {wallet.DEFAULT_SLIPPAGE} %]")
@click.option("--acceptable", default=None, help="the worst fill price itself, USD ('any': no bound)")
@click.option("--reduce-only", is_flag=True, help="never increase the position (stop and take-profit always are)")
@click.option("--expiry", default=None,
              help="90s, 30m, 12h, 7d, unix seconds or ISO time (UTC) [default: the longest allowed]")
@click.option("--wait", is_flag=True, help="wait for a keeper's execution (market orders)")
@click.option("--wait-timeout", type=click.FloatRange(0), default=wallet.DEFAULT_WAIT_SECONDS, show_default=True)
def order(account, deployment, sub_account, kind, market, size, trigger, slippage, acceptable, reduce_only, expiry,
          wait, wait_timeout):
    """Commit a KIND order (market, limit, stop, take-profit) of SIZE base units of MARKET.

    A keeper executes it: a market order at the next price, a limit order when the index is
    at or better than --price, a stop-loss or take-profit when the index crosses --trigger."""
    d = load_deployment(deployment)
    committed = wallet.commit_order(
        d, account, kind.lower(), market, size, sub_account, trigger=trigger, slippage=slippage,
        acceptable=acceptable, reduce_only=reduce_only, expiry=expiry,
    )
    wallet.follow_order(d, committed, wait, wait_timeout)


@cli.command(cls=ConnectedProviderCommand)
@account_option(prompt=False)
@deployment_option
@sub_option
@click.option("--owner", default=None, help="show another address's orders [default: --account]")
def orders(account, deployment, sub_account, owner):
    """Open orders: state, kind, size, trigger, acceptable price, not-before, expiry and fee."""
    if owner is None and account is None:
        raise wallet.CliError("give --account or --owner")
    wallet.show(*wallet.orders_report(load_deployment(deployment), owner or account.address, sub_account))


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("order_id")
def cancel(account, deployment, order_id):
    """Cancel ORDER_ID (as `orders` shows it): your trigger order, or anyone's expired order."""
    d = load_deployment(deployment)
    wallet.show(wallet.cancel_order(d, account, order_id).summary())


@cli.command(cls=ConnectedProviderCommand)
@account_option(prompt=False)
@deployment_option
@sub_option
@click.option("--owner", default=None, help="show another address's account [default: --account]")
def positions(account, deployment, sub_account, owner):
    """Positions with PnL, funding and liquidation prices, and the account's margin."""
    if owner is None and account is None:
        raise wallet.CliError("give --account or --owner")
    wallet.show(*wallet.positions_report(load_deployment(deployment), owner or account.address, sub_account))


@cli.group()
def lp():
    """Liquidity vault shares (the market maker's capital)."""


@lp.command("deposit", cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("amount")
def lp_deposit(account, deployment, amount):
    """Deposit AMOUNT USD into the liquidity vault for shares."""
    d = load_deployment(deployment)
    wallet.show(wallet.lp_deposit(d, account, amount).summary("deposited"))


@lp.command("redeem", cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("shares", required=False)
@click.option("--all", "redeem_all", is_flag=True, help="redeem every share held")
def lp_redeem(account, deployment, shares, redeem_all):
    """Redeem SHARES liquidity vault shares (or --all) for collateral."""
    if (shares is None) == (not redeem_all):
        raise wallet.CliError("give either SHARES or --all")
    d = load_deployment(deployment)
    wallet.show(wallet.lp_redeem(d, account, None if redeem_all else shares).summary("redeemed"))


@cli.command(cls=ConnectedProviderCommand)
@account_option(prompt=False)
@deployment_option
def insurance(account, deployment):
    """The insurance fund: balance, target, surplus and uncovered deficits per market."""
    wallet.show(*wallet.insurance_report(load_deployment(deployment)))


@cli.command(cls=ConnectedProviderCommand)
@account_option(prompt=False)
@deployment_option
def markets(account, deployment):
    """Per market: index, mark, skew, open interest, funding rate, PnL factor and parameters."""
    wallet.show(*wallet.markets_report(load_deployment(deployment)))
