"""A fresh devnet deployment made ready to trade: the liquidity vault's capital, the insurance
fund's reserve and target, and the price pusher's updater role.

Without capital in the liquidity vault every trader's profit is above the PnL cap and the keeper
auto-deleverages it within seconds; without a target the whole insurance fund is surplus the
owner may withdraw. The price pusher gets its own account (the updater role on every mock
aggregator) so that it never shares a nonce with the deployer, the keeper or a wallet.

Plain web3.py and the manifest; the deployer is one of anvil's unlocked test accounts. Each step
is skipped when the chain already shows it done, so seeding twice changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from web3 import Web3

WAD = 10**18
FAUCET_CAP_TOKENS = 1_000_000  # MockUSDC.faucet mints at most this many whole tokens per call
GAS = 1_000_000  # explicit: the steps go out together, before the earlier ones are mined
RECEIPT_TIMEOUT = 60


@dataclass(frozen=True)
class SeedPlan:
    """What a devnet starts with (USD)."""

    liquidity_usd: Decimal = Decimal(1_000_000)
    insurance_usd: Decimal = Decimal(100_000)
    insurance_target_usd: Decimal = Decimal(100_000)


@dataclass
class SeedReport:
    """What the chain holds after seeding, in USD, and what this run sent."""

    liquidity_vault_usd: Decimal
    insurance_fund_usd: Decimal
    insurance_target_usd: Decimal
    insurance_surplus_usd: Decimal
    pusher: str
    actions: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"liquidity vault  {self.liquidity_vault_usd:>14,.2f} USD",
            f"insurance fund   {self.insurance_fund_usd:>14,.2f} USD (target {self.insurance_target_usd:,.2f} USD, "
            f"owner-withdrawable surplus {self.insurance_surplus_usd:,.2f} USD)",
            f"price pusher     {self.pusher} (updater of every mock aggregator)",
        ]


class Seeder:
    """The deployment of `manifest` on the node `w3`, seeded from `deployer`'s account."""

    def __init__(self, w3: Web3, manifest: dict, deployer: str):
        self.w3, self.deployer = w3, Web3.to_checksum_address(deployer)
        self.c = {
            name: w3.eth.contract(address=entry["address"], abi=entry["abi"])
            for name, entry in manifest["contracts"].items()
            if entry.get("abi")
        }
        self.aggregators = [self.c[name] for name in sorted(self.c) if name.startswith("aggregator_")]
        self.pending: list[tuple[str, bytes]] = []
        self.actions: list[str] = []

    def send(self, description: str, call) -> None:
        self.pending.append((description, call.transact({"from": self.deployer, "gas": GAS})))
        self.actions.append(description)

    def settle(self) -> None:
        """Wait for every transaction sent; a failed one stops the seeding with its step."""
        for description, tx in self.pending:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx, timeout=RECEIPT_TIMEOUT, poll_latency=0.1)
            if receipt.status != 1:
                raise RuntimeError(f"devnet seeding failed at '{description}' (transaction {tx.hex()})")
        self.pending.clear()

    def token_units(self, usd: Decimal) -> int:
        return int(usd * 10 ** self.c["collateral"].functions.decimals().call())

    def faucet(self, usd: Decimal) -> None:
        remaining = self.token_units(usd)
        cap = self.token_units(Decimal(FAUCET_CAP_TOKENS))
        while remaining > 0:
            amount = min(remaining, cap)
            self.send(f"faucet {amount} token units", self.c["collateral"].functions.faucet(amount))
            remaining -= amount

    def run(self, plan: SeedPlan, pusher: str) -> SeedReport:
        pusher = Web3.to_checksum_address(pusher)
        lv, fund, usdc = self.c["liquidity_vault"], self.c["insurance_fund"], self.c["collateral"]
        seed_lv = lv.functions.totalSupply().call() == 0 and plan.liquidity_usd > 0
        seed_fund = fund.functions.fund_balance().call() <= 0 and plan.insurance_usd > 0
        needed = (plan.liquidity_usd if seed_lv else 0) + (plan.insurance_usd if seed_fund else 0)
        if needed:
            self.faucet(Decimal(needed))
        if seed_lv:
            amount = self.token_units(plan.liquidity_usd)
            self.send("approve the liquidity vault", usdc.functions.approve(lv.address, amount))
            self.send(f"liquidity vault deposit {plan.liquidity_usd:,} USD",
                      lv.functions.deposit(amount, self.deployer))
        if seed_fund:
            amount = self.token_units(plan.insurance_usd)
            self.send("approve the insurance fund", usdc.functions.approve(fund.address, amount))
            self.send(f"insurance fund donation {plan.insurance_usd:,} USD", fund.functions.donate(amount))
        target = int(plan.insurance_target_usd * WAD)
        if fund.functions.target().call() != target:
            self.send(f"insurance fund target {plan.insurance_target_usd:,} USD", fund.functions.set_target(target))
        for agg in self.aggregators:
            if not agg.functions.is_updater(pusher).call():
                self.send(f"updater {pusher} on {agg.functions.description().call()}",
                          agg.functions.set_updater(pusher, True))
        self.settle()
        scale = self.c["vault"].functions.token_scale().call()
        decimals = usdc.functions.decimals().call()
        return SeedReport(
            liquidity_vault_usd=Decimal(lv.functions.totalAssets().call()) / 10**decimals,
            insurance_fund_usd=Decimal(fund.functions.fund_balance().call()) / WAD,
            insurance_target_usd=Decimal(fund.functions.target().call()) / WAD,
            insurance_surplus_usd=Decimal(fund.functions.surplus().call() * scale) / WAD,
            pusher=pusher,
            actions=self.actions,
        )


def seed(w3: Web3, manifest_path: Path, deployer: str, pusher: str, plan: SeedPlan = SeedPlan()) -> SeedReport:
    """Seed the deployment recorded in `manifest_path` (see the module docstring)."""
    manifest = json.loads(Path(manifest_path).read_text())
    return Seeder(w3, manifest, deployer).run(plan, pusher)
