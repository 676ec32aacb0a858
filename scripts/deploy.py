"""`ape run deploy --network <network> --account <alias>`: deploy or complete perpdex.

Idempotent: re-running against an existing deployment (found in deployments/<chain_id>.json
and verified on chain) does nothing twice."""

from pathlib import Path

import click
from ape.cli import ConnectedProviderCommand, account_option

from perpdex.config import DEFAULT_MARKETS_FILE
from perpdex.deploy import DEPLOYMENTS_DIR, Deployer


@click.command(cls=ConnectedProviderCommand)
@account_option()
@click.option("--markets", default=str(DEFAULT_MARKETS_FILE), show_default=True, help="markets config file")
@click.option("--out", default=str(DEPLOYMENTS_DIR), show_default=True, help="where deployments/<chain_id>.json goes")
@click.option("--adl-keeper", "adl_keepers", multiple=True, help="also grant the ADL keeper role to this address")
def cli(account, markets, out, adl_keepers):
    """Deploy the contracts (and mocks on local networks), wire them, list the markets."""
    deployer = Deployer(account, markets, manifest_dir=Path(out), adl_keepers=tuple(adl_keepers))
    d = deployer.run()
    for action in deployer.actions or ["nothing to do: the deployment is complete"]:
        click.echo(action)
    for name, contract in d.contracts.items():
        click.echo(f"{name:16} {contract.address}")
    click.echo(f"manifest: {deployer.path}")
