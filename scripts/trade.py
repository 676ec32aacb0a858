"""`ape run trade COMMAND ...`: the perpdex wallet through ape's script runner.

The wallet itself is `python -m perpdex.cli` (perpdex/wallet/, docs/cli.md): it needs no ape and
answers in well under a second. This entry point keeps `ape run trade ... --network
ethereum:local:foundry --account TEST::2` working: the node is then $APE_FOUNDRY_HOST (or
--rpc-url, or http://127.0.0.1:8545), `--network` is accepted and otherwise unused.
"""

from perpdex.wallet.commands import cli

__all__ = ["cli"]
