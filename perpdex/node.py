"""What our tools need from the node they are connected to, beyond what ape does by itself.

Interval mining. An anvil node started with `--block-time N` mines a block every N seconds and
reports `anvil_getAutomine` = false. Ape 0.8 has two defaults for local networks that only
suit a node that mines one block per transaction:

- It reads "no automine" as *manual* mining: every `send_transaction` returns at once with an
  unmined receipt (block -1, no logs, no contract address), so `ContractContainer.deploy`
  fails with "did not create a contract" and a receipt's events are empty.
- It declares the block gas limit as every transaction's gas limit (`gas_limit: max`). Blocks
  then hold one such transaction each: a keeper's liquidation that arrives after a price push
  waits a whole block for the next one.

`follow_interval_mining` fixes both for the connected provider, on such a node only: ape waits
for receipts (the blocks come by themselves) and estimates each transaction's gas (with a 20 %
margin, as on live networks). A node on manual mining (no automine, no interval) is left alone:
there nobody would mine the block we would wait for.
"""

from __future__ import annotations

import logging

log = logging.getLogger("perpdex.node")
GAS_MARGIN = 1.2  # estimated gas x this, the state may move between estimate and inclusion


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
    """Adapt ape to a node that mines on an interval; True if the node does (idempotent).

    The provider instance gets a subclass of its class whose `auto_mine` reads True (setting it
    still calls the node), and the network's transactions get an estimated gas limit."""
    if provider is None:
        from ape import chain

        provider = chain.provider
    cls = type(provider)
    if getattr(cls, "_perpdex_interval_mining", False):
        return True
    seconds = interval_mining_seconds(provider)
    if seconds <= 0:
        return False
    from ape.types.gas import AutoGasLimit

    setter = getattr(cls, "auto_mine").fset
    provider.__class__ = type(
        f"{cls.__name__}OnIntervalMining",
        (cls,),
        {"auto_mine": property(lambda self: True, setter), "_perpdex_interval_mining": True},
    )
    network = provider.network
    network_config = getattr(network.ecosystem_config, network.name.replace("-", "_"), None)
    if network_config is not None:  # `network.config` is rebuilt on each access: set it at the source
        network_config.gas_limit = AutoGasLimit(multiplier=GAS_MARGIN)
    log.info("the node mines a block every %s s: waiting for receipts, estimating gas", seconds)
    return True
