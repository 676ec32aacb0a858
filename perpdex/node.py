"""What our tools need from the node they are connected to, beyond what ape does by itself.

Interval mining. An anvil node started with `--block-time N` mines a block every N seconds
and reports `anvil_getAutomine` = false. Ape 0.8 reads that as *manual* mining: every
`send_transaction` returns at once with an unmined receipt (block -1, no logs, no contract
address), so `ContractContainer.deploy` fails with "did not create a contract", and a receipt's
events are empty. On such a node the blocks come by themselves, so waiting for the receipt is
right: `follow_interval_mining` makes the connected provider report auto-mining, which puts
ape back on its normal path (wait for the receipt, then check its status). A node on manual
mining (no automine, no interval) is left alone: there nobody would mine the block we wait for.
"""

from __future__ import annotations

import logging

log = logging.getLogger("perpdex.node")


def interval_mining_seconds(provider) -> float:
    """The node's mining interval in seconds, 0 when it mines on demand (or is not anvil)."""
    try:
        if getattr(provider, "auto_mine", True):
            return 0.0
        interval = provider.make_request("anvil_getIntervalMining", [])
    except Exception:  # not anvil, or an RPC without these methods
        return 0.0
    return float(interval or 0)


def follow_interval_mining(provider=None) -> bool:
    """Make ape wait for receipts on a node that mines on an interval; True if it did.

    The provider instance gets a subclass of its class whose `auto_mine` reads True (setting it
    still calls the node). Idempotent; a no-op on every other node.
    """
    if provider is None:
        from ape import chain

        provider = chain.provider
    cls = type(provider)
    if getattr(cls, "_perpdex_interval_mining", False):
        return True
    seconds = interval_mining_seconds(provider)
    if seconds <= 0:
        return False
    setter = getattr(cls, "auto_mine").fset
    provider.__class__ = type(
        f"{cls.__name__}OnIntervalMining",
        (cls,),
        {"auto_mine": property(lambda self: True, setter), "_perpdex_interval_mining": True},
    )
    log.info("the node mines a block every %s s: waiting for receipts", seconds)
    return True
