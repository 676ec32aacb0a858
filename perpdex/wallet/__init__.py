"""The perpdex wallet: a command line for traders that needs only a node and the deployment
manifest (`python -m perpdex.cli`, docs/cli.md).

    rpc.py       JSON-RPC (batched) and ABI coding from the manifest's ABIs
    client.py    the manifest on a node, the signing key, reads, simulated writes
    units.py     what a person types -> the chain's integers; integers -> USD
    simulate.py  refusals before sending, in one sentence with the numbers
    funds.py     faucet, deposit, withdraw
    liquidity.py liquidity vault shares: deposit and redemption requests, follow, list, cancel
    trading.py   orders: commit, follow to the fill or cancellation, cancel, list
    views.py     positions (also on a stale feed), markets, insurance
    history.py   a sub-account's events in USD
    format.py    tables
    commands.py  the command line
"""
