"""`ape run trade <command> --network <network> --account <alias>`: the perpdex wallet.

    ape run trade deposit 1000 --sub 0          USD of collateral into a sub-account
    ape run trade open BTC-USD 0.5 --slippage 0.5   buy 0.5 BTC (a negative size sells)
    ape run trade positions                      positions, liquidation prices, margin
    ape run trade close BTC-USD                  close the whole position
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
    """perpdex wallet: margin, trades, positions, liquidity and market reports."""


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
@sub_option
@click.argument("amount")
def withdraw(account, deployment, sub_account, amount):
    """Withdraw AMOUNT USD of free collateral to the wallet."""
    d = load_deployment(deployment)
    wallet.show(wallet.withdraw(d, account, amount, sub_account).summary("withdrew"))


@cli.command("open", cls=ConnectedProviderCommand, context_settings=SIGNED_ARGS)
@account_option()
@deployment_option
@sub_option
@slippage_option
@click.argument("market")
@click.argument("size")
def open_(account, deployment, sub_account, slippage, market, size):
    """Trade SIZE base units of MARKET (symbol or id): positive buys, negative (-0.5) sells."""
    d = load_deployment(deployment)
    wallet.show(wallet.open_position(d, account, market, size, sub_account, slippage).summary())


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@sub_option
@slippage_option
@click.argument("market")
def close(account, deployment, sub_account, slippage, market):
    """Close the whole position in MARKET."""
    d = load_deployment(deployment)
    wallet.show(wallet.close_position(d, account, market, sub_account, slippage).summary())


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
