// The chain as the page sees it: the deployment manifest (addresses, markets), the contracts'
// ABIs from the build, a public client reading through the page server's /rpc, and the wallet:
// an injected one (window.ethereum) or, on a local devnet, one of the node's unlocked accounts.
// Every write is simulated first; a refusal becomes a `Refusal` carrying the contract's
// sentence, and nothing is sent.

import {
  BaseError, ContractFunctionRevertedError, createPublicClient, createWalletClient, custom, defineChain, getAddress, http,
  type Abi, type Address, type Chain, type PublicClient, type WalletClient,
} from "viem";
import ABIS from "perpdex:abi";

export type ContractName = keyof typeof ABIS;
export interface Market { id: number; symbol: string; aggregators: Address[] }
export interface Manifest { chain_id: number; block: number; contracts: Record<string, { address: Address }>; markets: Market[] }
export interface Network { rpc: string; chain_id: number | null; local: boolean }

/** A refusal before sending: the sentence shown to the trader. */
export class Refusal extends Error {}

// reason-string namespace ("exchange: ...") -> who refused, in words (as the CLI says it)
const REJECTERS: Record<string, string> = {
  "liquidity vault": "the liquidity vault", "insurance fund": "the insurance fund", exchange: "the exchange",
  vault: "the vault", oracle: "the price oracle", liquidator: "the liquidator", order: "the order book",
  erc20: "the collateral token", mock: "the devnet collateral token",
};

/** 'exchange: insufficient margin' -> 'Refused by the exchange: insufficient margin' */
export function plain(reason: string): string {
  const at = reason.indexOf(": ");
  const who = at > 0 ? REJECTERS[reason.slice(0, at)] : undefined;
  return who ? `Refused by ${who}: ${reason.slice(at + 2)}` : `Refused: ${reason}`;
}

/** The contract's reason string in a viem error, or null when it is not a revert. */
export function revertReason(err: unknown): string | null {
  if (err instanceof BaseError) {
    const revert = err.walk((e) => e instanceof ContractFunctionRevertedError) as ContractFunctionRevertedError | null;
    if (revert) return revert.reason ?? revert.data?.errorName ?? revert.shortMessage;
  }
  return null;
}

export class Deployment {
  readonly client: PublicClient;
  readonly chain: Chain;
  wallet: WalletClient | null = null;
  account: Address | null = null;
  sub = 0n; // the page trades sub-account 0
  private listening = false; // on the browser wallet's events
  private injected: WalletClient | null = null; // the browser wallet's client, once connected
  private walletChanged: ((event: "account" | "chain", warning: string | null) => void) | null = null;

  constructor(readonly manifest: Manifest, readonly network: Network) {
    const rpc = new URL(network.rpc, location.href).toString();
    this.chain = defineChain({
      id: manifest.chain_id, name: network.local ? "local devnet" : `chain ${manifest.chain_id}`,
      nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [rpc] } },
    });
    this.client = createPublicClient({ chain: this.chain, transport: http(rpc, { batch: { wait: 16 } }) }) as PublicClient;
  }

  static async load(): Promise<Deployment> {
    const [manifest, network] = await Promise.all([fetchJson("manifest.json"), fetchJson("network.json")]);
    return new Deployment(manifest as Manifest, network as Network);
  }

  get markets(): Market[] {
    return this.manifest.markets;
  }

  symbol(id: bigint | number): string {
    return this.markets.find((m) => BigInt(m.id) === BigInt(id))?.symbol ?? `market ${id}`;
  }

  address(name: string): Address {
    const entry = this.manifest.contracts[name];
    if (!entry) throw new Error(`the manifest has no ${name}`);
    return entry.address;
  }

  abi(name: ContractName): Abi {
    return ABIS[name] as Abi;
  }

  /** A view of a contract of the manifest. */
  read<T = any>(name: ContractName, functionName: string, args: unknown[] = [], address?: Address): Promise<T> {
    return this.client.readContract({ address: address ?? this.address(name), abi: this.abi(name), functionName, args } as any) as Promise<T>;
  }

  /** A view, or the contract's refusal as a Refusal (e.g. the oracle's 'stale price'). */
  async tryRead<T = any>(name: ContractName, functionName: string, args: unknown[] = []): Promise<T | Refusal> {
    try {
      return await this.read<T>(name, functionName, args);
    } catch (err) {
      const reason = revertReason(err);
      if (reason === null) throw err;
      return new Refusal(reason);
    }
  }

  /** The node's unlocked accounts (a local devnet's dev accounts). */
  async devAccounts(): Promise<Address[]> {
    return (await this.client.request({ method: "eth_accounts" } as any)) as Address[];
  }

  connectDev(account: Address): void {
    this.account = account;
    this.wallet = createWalletClient({ account, chain: this.chain, transport: http(this.chain.rpcUrls.default.http[0]) });
  }

  /**
   * Connect the browser wallet. `changed` is called when the wallet switches its account (the
   * page follows it; none: disconnected) or its chain (a sentence to show when it is not this
   * deployment's chain, where the wallet then refuses to send).
   */
  async connectInjected(changed: (event: "account" | "chain", warning: string | null) => void): Promise<void> {
    const ethereum = (window as any).ethereum;
    if (!ethereum) throw new Refusal("no browser wallet found (window.ethereum): install one, or use a devnet account");
    const wallet = createWalletClient({ chain: this.chain, transport: custom(ethereum) });
    const [account] = await wallet.requestAddresses();
    const chainId = await wallet.getChainId();
    if (chainId !== this.manifest.chain_id) {
      try {
        await wallet.switchChain({ id: this.manifest.chain_id });
      } catch {
        throw new Refusal(`the browser wallet is on chain ${chainId}; switch it to chain ${this.manifest.chain_id}, where this deployment is`);
      }
    }
    this.account = account;
    this.wallet = this.injected = wallet;
    this.walletChanged = changed;
    if (typeof ethereum.on === "function" && !this.listening) {
      this.listening = true;
      ethereum.on("accountsChanged", (accounts: string[]) => {
        if (!this.wallet || this.wallet !== this.injected) return; // a dev account is connected, or none
        this.account = accounts.length ? getAddress(accounts[0]) : null;
        if (!this.account) this.wallet = null;
        this.walletChanged?.("account", this.account ? null : "the browser wallet disconnected: connect again to trade");
      });
      ethereum.on("chainChanged", (chainId: string) => {
        if (!this.wallet || this.wallet !== this.injected) return;
        const id = Number(chainId);
        this.walletChanged?.("chain", id === this.manifest.chain_id ? null
          : `the browser wallet switched to chain ${id}; switch it back to chain ${this.manifest.chain_id}, where this deployment is, to send`);
      });
    }
  }

  /**
   * Simulate `functionName` as the connected account; on a refusal throw a Refusal with
   * `explain(reason)` (the contract's sentence with its numbers); else send it and wait for
   * its receipt. Returns the receipt.
   */
  async send(name: ContractName, functionName: string, args: unknown[],
             explain: (reason: string) => Promise<string> | string = plain) {
    if (!this.wallet || !this.account) throw new Refusal("connect a wallet first");
    let request;
    try {
      ({ request } = await this.client.simulateContract({
        address: this.address(name), abi: this.abi(name), functionName, args, account: this.account,
      } as any));
    } catch (err) {
      const reason = revertReason(err);
      if (reason === null) throw err;
      throw new Refusal(`${await explain(reason)}. Nothing was sent.`);
    }
    if (this.wallet === this.injected) {
      const chainId = await this.wallet.getChainId();
      if (chainId !== this.manifest.chain_id) {
        throw new Refusal(`the browser wallet is on chain ${chainId}; switch it to chain ${this.manifest.chain_id}, where this `
          + "deployment is. Nothing was sent.");
      }
    }
    const hash = await this.wallet.writeContract({ ...(request as any), account: this.account, chain: this.chain });
    const receipt = await this.client.waitForTransactionReceipt({ hash, pollingInterval: 250, timeout: 60_000 });
    if (receipt.status !== "success") throw new Refusal(`the transaction ${hash} reverted on chain`);
    return receipt;
  }

  /** Simulate a call as `from` (e.g. the order book calling the exchange); the reason or null. */
  async refusalAs(from: Address, name: ContractName, functionName: string, args: unknown[]): Promise<string | null> {
    try {
      await this.client.simulateContract({ address: this.address(name), abi: this.abi(name), functionName, args, account: from } as any);
      return null;
    } catch (err) {
      const reason = revertReason(err);
      if (reason === null) throw err;
      return reason;
    }
  }
}

async function fetchJson(path: string): Promise<unknown> {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ?? `${path}: HTTP ${response.status}`);
  return body;
}
