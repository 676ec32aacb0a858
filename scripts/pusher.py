"""`ape run pusher --account <alias> ...`: feed prices to the mock aggregators.

    ape run pusher --account dev --csv BTC-USD=btc-usdt_2020-03_1h.csv --csv ETH-USD=eth-usdt_2020-03_1h.csv
    ape run pusher --account dev --csv BTC-USD=btc-usdt_2024-08-05_1m.csv --resample 300 --speed 600 --warp
    ape run pusher --account TEST::9 --random-walk --seed 7 --volatility 0.01 --steps 100

CSV paths may name a file of the repository's data/prices directly. The account (TEST::<n>, an
ape account alias, or --private-key) must own the aggregators (the deployer does) or hold their
updater role. The node is --rpc-url, else $PERPDEX_RPC_URL, else $APE_FOUNDRY_HOST, else
http://127.0.0.1:8545; `--network` is accepted and otherwise unused. Ctrl-C (SIGINT) or SIGTERM
stops after the step in flight. The logic is in perpdex/pusher.py; like the wallet
(scripts/trade.py) it talks JSON-RPC itself instead of through ape's provider."""

import click

from perpdex import pusher
from perpdex.wallet.commands import connection_options, open_wallet


@click.command()
@connection_options
@click.option("--csv", "csv", multiple=True, metavar="SYMBOL=PATH", help="price file of a market (repeatable)")
@click.option("--column", type=click.Choice(pusher.PRICE_COLUMNS), default="close", show_default=True)
@click.option("--start", default=None, help="first timestamp replayed (unix seconds or ISO date, UTC)")
@click.option("--end", default=None, help="last timestamp replayed (unix seconds or ISO date, UTC)")
@click.option("--resample", type=click.IntRange(1), default=None, help="one price per this many seconds")
@click.option("--speed", type=click.FloatRange(0), default=3600.0, show_default=True,
              help="path seconds per wall-clock second (3600: one CSV hour per second; 0: no waiting)")
@click.option("--steps", type=click.IntRange(1), default=None, help="stop after this many updates")
@click.option("--once", is_flag=True, help="push one step and exit")
@click.option("--random-walk", is_flag=True, help="push a seeded random walk from the current answers")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--volatility", type=click.FloatRange(0), default=0.01, show_default=True,
              help="standard deviation of each step's log return")
@click.option("--interval", type=click.IntRange(1), default=3600, show_default=True,
              help="path seconds per random-walk step")
@click.option("--warp", is_flag=True, help="dev nodes (anvil): advance chain time by the path's time deltas")
def cli(rpc_url, deployment, account, private_key, network, **options):
    """Push prices from CSV files or a random walk into the devnet's mock aggregators."""
    pusher.configure_logging()
    wallet, _ = open_wallet({"rpc_url": rpc_url, "deployment": deployment, "account": account,
                             "private_key": private_key})
    pusher.push_prices(wallet, pusher.PusherOptions(**options))
