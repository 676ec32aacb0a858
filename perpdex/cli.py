"""`python -m perpdex.cli COMMAND ...`: the perpdex wallet (see perpdex/wallet/ and docs/cli.md).

    python -m perpdex.cli faucet 10000 --account TEST::2
    python -m perpdex.cli deposit 10000 --account TEST::2
    python -m perpdex.cli open BTC-USD 0.5 --account TEST::2
    python -m perpdex.cli positions --account TEST::2
"""

from perpdex.wallet.commands import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    main()
