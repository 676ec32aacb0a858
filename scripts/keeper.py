"""`ape run keeper --network <network> --account <alias>`: the liquidation, ADL and order keeper.

Loads the deployment from <deployments>/<chain_id>.json, resumes from its checkpoint
(<deployments>/keeper-<chain_id>.json by default) and runs passes until SIGINT/SIGTERM, or one
pass with `--once` (for cron; exit code 1 when the pass could not complete). Several keepers
may run at once (each with its own account and checkpoint): they compete for liquidations
(a lost race never reverts), take turns for auto-deleveraging, and, given each other's
addresses with `--order-keeper`, take turns per order (without, two keepers reacting to the
same oracle round in the same block would both send, and one transaction would revert). The
logic is perpdex.keeper."""

from pathlib import Path

import click

from perpdex.deploy import DEPLOYMENTS_DIR
from perpdex.keeper import (
    ADL_TURN_BLOCKS,
    ADL_TURN_MARGIN,
    MAX_BATCH,
    Keeper,
    configure_logging,
    default_checkpoint_path,
    install_signal_handlers,
)
from perpdex.keeper.rpc_client import RpcClient, connect_keeper
from perpdex.wallet.client import load_signer
from perpdex.wallet.units import CliError


@click.command()
@click.option("--rpc-url", default=None,
              help="the node [default: $PERPDEX_RPC_URL, else $APE_FOUNDRY_HOST, else http://127.0.0.1:8545]")
@click.option("--account", default=None, help="TEST::<n> (a dev node's test account) or an ape account alias")
@click.option("--private-key", default=None, help="the keeper's key [default: $PERPDEX_PRIVATE_KEY]")
@click.option("--network", default=None, hidden=True, help="accepted for `ape run keeper`; the node is --rpc-url")
@click.option("--once", is_flag=True, help="run one pass and exit (cron)")
@click.option("--interval", default=2.0, show_default=True, type=float,
              help="seconds between polls of the head block; a pass runs when it moved")
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="default: <deployments>/keeper-<chain_id>.json"
)
@click.option(
    "--batch-size", default=20, show_default=True, type=click.IntRange(1, MAX_BATCH), help="accounts per liquidate_many"
)
@click.option(
    "--adl-turn-blocks", default=ADL_TURN_BLOCKS, show_default=True, type=click.IntRange(ADL_TURN_MARGIN + 1),
    help="blocks per turn when several ADL keepers run (the same value for all of them)",
)
@click.option("--orders/--no-orders", default=True, show_default=True, help="execute and cancel trader orders")
@click.option(
    "--order-keeper", "order_keepers", multiple=True, metavar="ADDRESS",
    help="another keeper executing orders (repeat for each): the keepers take turns per order",
)
@click.option("--json-logs", is_flag=True, help="one JSON object per log line")
@click.option("--deployments", default=str(DEPLOYMENTS_DIR), show_default=True, help="directory of the manifests")
def cli(rpc_url, account, private_key, network, once, interval, checkpoint, batch_size, adl_turn_blocks, orders,
        order_keepers, json_logs, deployments):
    """Liquidate unhealthy sub-accounts, auto-deleverage when a trigger holds, execute orders
    at their oracle round and cancel expired ones."""
    import threading

    configure_logging(json_logs)
    try:
        signer = load_signer(account, private_key)
        if signer is None:
            raise CliError("give the keeper's account: --account TEST::<n> (a devnet's test account) or an ape "
                           "account alias, or --private-key")
        wallet = connect_keeper(rpc_url, deployments, signer)
    except CliError as err:
        raise click.ClickException(str(err)) from None
    client = RpcClient(wallet)
    keeper = Keeper(
        client.deployment,
        client.account,
        client=client,
        checkpoint_path=checkpoint or default_checkpoint_path(wallet.chain_id, deployments),
        batch_size=batch_size,
        adl_turn_blocks=adl_turn_blocks,
        execute_orders=orders,
        order_keepers=tuple(order_keepers),
    )
    stop = threading.Event()
    install_signal_handlers(stop)
    if once:
        report = keeper.run_with_retry(stop=stop)
        raise SystemExit(0 if report is not None else 1)
    keeper.run_forever(interval=interval, stop=stop)
