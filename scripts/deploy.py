"""`ape run deploy --network ethereum:local:test`: deploy perpdex with mocks on a local chain."""

import click
from ape.cli import ConnectedProviderCommand, account_option

from perpdex.config import DEFAULT_MARKETS_FILE
from perpdex.deploy import deploy_local


@click.command(cls=ConnectedProviderCommand)
@account_option()
@click.option("--markets", default=str(DEFAULT_MARKETS_FILE), show_default=True, help="markets config file")
def cli(account, markets):
    """Deploy the contracts, the mock USDC and mock feeds, and list the configured markets."""
    d = deploy_local(account, markets)
    for name, contract in d.contracts.items():
        click.echo(f"{name:16} {contract.address}")
