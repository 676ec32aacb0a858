"""`ape run deploy --network <network> --account <alias>`: deploy or complete perpdex.

Idempotent: re-running against an existing deployment (found in deployments/<chain_id>.json
and verified on chain) does nothing twice. Every contract ends owned by the Timelock; settings
changed after that go through it (docs/governance.md)."""

from decimal import Decimal
from pathlib import Path

import click
from ape.cli import ConnectedProviderCommand, account_option

from perpdex.config import DEFAULT_MARKETS_FILE, to_wad
from perpdex.deploy import DEPLOYMENTS_DIR, LOCAL_TIMELOCK_DELAY, NETWORK_TIMELOCK_DELAY, Deployer, TimelockPlan


@click.command(cls=ConnectedProviderCommand)
@account_option()
@click.option("--markets", default=str(DEFAULT_MARKETS_FILE), show_default=True, help="markets config file")
@click.option("--out", default=str(DEPLOYMENTS_DIR), show_default=True, help="where deployments/<chain_id>.json goes")
@click.option("--adl-keeper", "adl_keepers", multiple=True, help="also grant the ADL keeper and LP executor roles to this address (a keeper's account)")
@click.option("--timelock-delay", type=click.IntRange(min=1), default=None,
              help=f"seconds every owner action waits [default: {NETWORK_TIMELOCK_DELAY} (24 h) on non-local "
                   f"networks, {LOCAL_TIMELOCK_DELAY} on local ones]")
@click.option("--proposer", "proposers", multiple=True,
              help="may schedule and cancel owner actions (a multisig) [default: the deploying account]")
@click.option("--executor", "executors", multiple=True,
              help="may execute ready actions (0x0000000000000000000000000000000000000000: anyone) "
                   "[default: the proposers]")
@click.option("--canceller", "cancellers", multiple=True, help="may also cancel scheduled actions (a guardian)")
@click.option("--guardian", help="may pause new risk at once (a fast multisig) [default: the deploying account]")
@click.option("--insurance-target", type=Decimal, default=None,
              help="insurance fund target in USD, set before the handover")
@click.option("--seed-liquidity", type=Decimal, default=Decimal(0),
              help="USD the deploying account deposits into the liquidity vault before the handover "
                   "(minted on local networks); later LP capital arrives through two-step requests")
def cli(account, markets, out, adl_keepers, timelock_delay, proposers, executors, cancellers, guardian,
        insurance_target, seed_liquidity):
    """Deploy the contracts (and mocks on local networks), wire them, list the markets, and hand
    ownership over to the timelock."""
    plan = TimelockPlan(timelock_delay, tuple(proposers), tuple(executors), tuple(cancellers))
    target = None if insurance_target is None else to_wad(insurance_target)
    deployer = Deployer(account, markets, manifest_dir=Path(out), adl_keepers=tuple(adl_keepers), timelock=plan,
                        insurance_target=target, guardian=guardian, seed_liquidity_usd=seed_liquidity)
    d = deployer.run()
    for action in deployer.actions or ["nothing to do: the deployment is complete"]:
        click.echo(action)
    for name, contract in d.contracts.items():
        click.echo(f"{name:16} {contract.address}")
    click.echo(f"timelock delay   {int(d.timelock.get_minimum_delay()):,} s")
    click.echo(f"manifest: {deployer.path}")
