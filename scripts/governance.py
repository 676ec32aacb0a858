"""`ape run governance <command> --network <network> [--account <alias>]`: owner actions through
the timelock that owns every perpdex contract (docs/governance.md).

    status                       the timelock's delay and every scheduled operation
    schedule CONTRACT METHOD ARGS  schedule one call (ARGS as JSON: 5, true, "0xab...", [1, 2])
    market-params SYMBOL FIELD=VALUE...  schedule a market's parameter change in human units
    execute ID                   execute a ready operation (--wait: until it is ready)
    cancel ID                    cancel a pending operation (a canceller)

Nothing is sent that would be refused: a missing role, a delay below the minimum or an
operation that is not ready stop the command with the reason. The logic is perpdex.governance."""

import json
from pathlib import Path

import click
from ape.cli import ConnectedProviderCommand, account_option

from perpdex.config import to_wad
from perpdex.deploy import load_deployment
from perpdex.governance import (
    Call,
    Governance,
    GovernanceError,
    describe_call,
    find_operation,
    market_params_call,
    scheduled_operations,
    utc,
)

deployment_option = click.option(
    "--deployment", "manifest", type=click.Path(dir_okay=False, path_type=Path),
    help="the manifest [default: deployments/<chain_id>.json]",
)


def _timelocked(manifest):
    d = load_deployment(manifest)
    if d.timelock is None:
        raise click.ClickException("this deployment has no timelock: its owner acts directly (`ape run deploy` hands over)")
    return d


def _argument(text: str):
    """A JSON value (numbers, true/false, lists for structs), else the text itself (an address)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _schedule(d, account, call: Call, delay: int | None) -> None:
    gov = Governance(d.timelock, account)
    op = gov.operation([call])
    try:
        gov.schedule(op, delay)
    except GovernanceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"scheduled 0x{op.id.hex()}: {describe_call(call, d.contracts)}")
    click.echo(f"ready at {utc(gov.ready_at(op))}; then: ape run governance execute 0x{op.id.hex()}")


@click.group()
def cli():
    """Owner actions through the timelock: schedule, wait the delay, execute."""


@cli.command(cls=ConnectedProviderCommand)
@deployment_option
def status(manifest):
    """The timelock, its delay and every operation scheduled since the deployment."""
    d = _timelocked(manifest)
    gov = Governance(d.timelock, None)
    click.echo(f"timelock {d.timelock.address}, minimum delay {gov.min_delay:,} s")
    found = scheduled_operations(d.timelock, d.block or 0)
    if not found:
        click.echo("no operation scheduled")
    for op_id, s in sorted(found.items(), key=lambda item: item[1].block):
        state = gov.state(op_id)
        when = f", ready at {utc(gov.ready_at(op_id))}" if state in ("waiting", "ready") else ""
        click.echo(f"0x{op_id.hex()}  {state}{when}  (scheduled in block {s.block}, delay {s.delay:,} s)")
        for call in s.operation.calls:
            click.echo(f"    {describe_call(call, d.contracts)}")


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("contract")
@click.argument("method")
@click.argument("args", nargs=-1)
@click.option("--delay", type=int, help="seconds [default: the timelock's minimum delay]")
def schedule(account, manifest, contract, method, args, delay):
    """Schedule CONTRACT.METHOD(ARGS) (CONTRACT by manifest name: exchange, liquidator, ...)."""
    d = _timelocked(manifest)
    target = d.contracts.get(contract)
    if target is None:
        raise click.ClickException(f"no contract {contract!r} in the deployment: one of {', '.join(d.contracts)}")
    if not hasattr(target, method):
        raise click.ClickException(f"{contract} has no method {method!r}")
    try:
        call = Call.of(target, method, *[_argument(a) for a in args])
    except Exception as err:  # wrong arity or types: ape's message names them
        raise click.ClickException(f"cannot encode {contract}.{method}{tuple(args)}: {err}") from None
    _schedule(d, account, call, delay)


@cli.command("market-params", cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("symbol")
@click.argument("changes", nargs=-1, required=True)
@click.option("--delay", type=int, help="seconds [default: the timelock's minimum delay]")
def market_params(account, manifest, symbol, changes, delay):
    """Schedule new parameters for market SYMBOL: FIELD=VALUE in the units of
    config/markets.json (fractions for ratios and fees, base units for sizes)."""
    d = _timelocked(manifest)
    market = next((m for m in d.markets if m.symbol == symbol), None)
    if market is None:
        raise click.ClickException(f"no market {symbol}: one of {', '.join(m.symbol for m in d.markets)}")
    wanted = {}
    for change in changes:
        name, sep, value = change.partition("=")
        if not sep:
            raise click.ClickException(f"{change!r}: expected FIELD=VALUE, e.g. maintenance_margin_ratio=0.03")
        wanted[name] = to_wad(value)
    try:
        call = market_params_call(d.exchange, market.id, wanted)
    except GovernanceError as err:
        raise click.ClickException(str(err)) from None
    _schedule(d, account, call, delay)


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("operation_id")
@click.option("--wait", "wait_seconds", type=float, default=0, help="wait up to this many seconds for it to be ready")
def execute(account, manifest, operation_id, wait_seconds):
    """Execute the ready operation OPERATION_ID (its calls are read back from the events)."""
    d = _timelocked(manifest)
    gov = Governance(d.timelock, account)
    try:
        op = find_operation(d.timelock, operation_id, d.block or 0)
        if wait_seconds:
            gov.wait(op, timeout=wait_seconds)
        gov.execute(op)
    except GovernanceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"executed 0x{op.id.hex()}:")
    for call in op.calls:
        click.echo(f"    {describe_call(call, d.contracts)}")


@cli.command(cls=ConnectedProviderCommand)
@account_option()
@deployment_option
@click.argument("operation_id")
def cancel(account, manifest, operation_id):
    """Cancel the pending operation OPERATION_ID."""
    d = _timelocked(manifest)
    try:
        Governance(d.timelock, account).cancel(operation_id)
    except GovernanceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"cancelled {operation_id}")
