// The order form (market, limit, stop-loss, take-profit; size, slippage bound as a price, the
// fill quote and the liquidation price it would leave), the commit (simulated twice: the
// order book's checks, then the execution now as the order book would call the exchange),
// open orders with cancel, and what the keepers did with this page's orders.

import type { Address } from "viem";
import { liquidationAfter, type AccountState } from "./account";
import { Deployment, plain, Refusal } from "./chain";
import { $, abs, ceilDiv, el, input, MAX_PRICE, parseAmount, price, row, select, shortId, signedSize, size, usd, WAD } from "./format";
import type { MarketState, OiRoom } from "./markets";

export const KIND_MARKET = 0n, KIND_LIMIT = 1n, KIND_STOP_LOSS = 2n, KIND_TAKE_PROFIT = 3n;
const KIND_NAMES = ["market", "limit", "stop-loss", "take-profit"];
const STATE_OPEN = 1;
const SEARCH_STEPS = 24n;

export interface OrderInput {
  marketId: bigint;
  kind: bigint;
  delta: bigint; // signed size, WAD
  trigger: bigint; // WAD, 0 for market orders
  slippageBps: bigint; // hundredths of a percent
  reduceOnly: boolean;
}

export interface Quote {
  reference: bigint; // the fill price now (market) or the trigger
  bound: bigint; // acceptable price
  fee: bigint; // trading fee at the taker rate (at most)
  executionFee: bigint;
  liquidation: bigint | null;
  after: bigint; // the position's size after the fill
  index: bigint | null;
  added: bigint; // the open interest the fill adds (WAD USD at the reference price; 0 when it does not grow the position)
  room: bigint | null; // the global open-interest room now (WAD USD), null when unknown
}

/** The form's order, or a sentence saying what is wrong with it. */
export function readForm(): OrderInput {
  const kind = BigInt(select("order-kind").value);
  const amount = parseAmount(input("order-size").value, 18, "the size");
  const delta = select("order-side").value === "buy" ? amount : -amount;
  const trigger = kind === KIND_MARKET ? 0n : parseAmount(input("order-trigger").value, 18, "the trigger price");
  const slippage = input("order-slippage").value.trim() || "0";
  const slippageBps = slippage === "0" ? 0n : parseAmount(slippage, 2, "the slippage");
  if (slippageBps >= 10000n) throw new Error("the slippage must be below 100 %");
  const reduceOnly = input("order-reduce").checked || kind === KIND_STOP_LOSS || kind === KIND_TAKE_PROFIT;
  return { marketId: BigInt(select("order-market").value), kind, delta, trigger, slippageBps, reduceOnly };
}

/** The worst fill price accepted: the reference moved against the trader by the slippage (as the CLI rounds it). */
export function acceptable(reference: bigint, delta: bigint, slippageBps: bigint): bigint {
  if (delta > 0n) return reference * (10000n + slippageBps) / 10000n;
  return (reference * (10000n - slippageBps) + 9999n) / 10000n;
}

export async function quote(d: Deployment, o: OrderInput, markets: MarketState[], account: AccountState | null,
                            room: OiRoom | null): Promise<Quote> {
  const m = markets.find((x) => x.id === o.marketId)!;
  const [fill, params, keeperFloor] = await Promise.all([
    o.kind === KIND_MARKET ? d.read<bigint>("exchange", "fill_price", [o.marketId, o.delta]) : Promise.resolve(o.trigger),
    d.read<any>("order_book", "order_params"), d.read<bigint>("exchange", "keeper_min_reward"),
  ]);
  const fee = abs(o.delta) * fill / WAD * m.params.taker_fee / WAD;
  const liquidation = account ? liquidationAfter(account, m, o.delta, fill, fee + params.execution_fee, keeperFloor) : null;
  const before = account?.positions.find((p) => p.marketId === o.marketId)?.size ?? 0n;
  const after = before + o.delta;
  // what the order book reserves from the room: the growth of |position| at the execution's index
  const at = o.kind === KIND_MARKET ? m.index : o.trigger;
  const added = abs(after) > abs(before) && at !== null ? ceilDiv((abs(after) - abs(before)) * at, WAD) : 0n;
  return {
    reference: fill, bound: acceptable(fill, o.delta, o.slippageBps), fee, executionFee: params.execution_fee, liquidation, after,
    index: m.index, added, room: room?.room ?? null,
  };
}

export function quoteText(d: Deployment, o: OrderInput, q: Quote): string {
  const symbol = d.symbol(o.marketId);
  const side = o.delta > 0n ? "buy" : "sell";
  const what = o.kind === KIND_MARKET ? `fills now at about ${price(q.reference)}` : `triggers at ${price(o.trigger)}`;
  const bound = o.delta > 0n ? `at most ${price(q.bound)}` : `at least ${price(q.bound)}`;
  let liq = q.liquidation === null ? "unavailable" : q.liquidation === 0n ? "none (no positive price liquidates it)" : price(q.liquidation);
  const past = q.liquidation && q.index !== null && (q.after > 0n ? q.liquidation >= q.index : q.after < 0n && q.liquidation <= q.index);
  if (past) liq += " — at or past the index: the margin does not allow this order";
  return [
    `${KIND_NAMES[Number(o.kind)]} ${side} ${size(abs(o.delta))} ${symbol}: ${what}; price bound ${bound}`,
    `trading fee up to ${usd(q.fee)} USD, execution fee ${usd(q.executionFee)} USD (escrowed for the keeper)`,
    `liquidation price after the fill: ${liq}`,
    ...(q.added === 0n || q.room === null ? [] : [`adds ${usd(q.added)} USD of open interest; room left, all markets: ${usd(q.room)} USD`
      + (q.added > q.room ? " — beyond it: a keeper would cancel the order, its execution fee to the keeper" : "")]),
    ...(o.kind === KIND_MARKET ? [] : ["a keeper executes it at the first price that crosses the trigger, if the fill is within the bound; "
      + "a price that gaps past the bound leaves it waiting"]),
  ].join("\n");
}

/** Check and commit the order; returns the committed order's id. */
export async function commit(d: Deployment, o: OrderInput, q: Quote, markets: MarketState[]): Promise<bigint> {
  const owner = d.account as Address;
  const m = markets.find((x) => x.id === o.marketId)!;
  if (m.index === null) throw new Refusal(`${m.symbol} has no valid price now (${m.error}); an order could not execute. Nothing was sent.`);
  const args = [d.sub, o.marketId, o.delta, q.bound, o.kind, o.trigger, o.reduceOnly, 0n];
  // the order book's checks first, then the execution as it would happen now
  const bookRefusal = await d.refusalAs(owner, "order_book", "commit_order", args);
  if (bookRefusal) throw new Refusal(`${await orderRefusal(d, o, bookRefusal)}. Nothing was sent.`);
  // the global open-interest cap, as the keeper's execution would check it now
  if (o.kind === KIND_MARKET && q.room !== null && q.added > q.room) {
    throw new Refusal(`${plain("order: open interest cap")}: this order adds ${usd(q.added)} USD of open interest at the ${m.symbol} `
      + `index, more than the room left for all markets, ${usd(q.room)} USD (the liquidity vault's value times its open-interest `
      + `ratio, less the open interest); a keeper would cancel it. Nothing was sent.`);
  }
  if ((o.kind === KIND_MARKET || o.kind === KIND_LIMIT) && !o.reduceOnly) {
    const at = o.kind === KIND_MARKET ? m.index : o.trigger;
    const book = d.address("order_book");
    const reason = await d.refusalAs(book, "exchange", "execute_trade", [owner, d.sub, o.marketId, o.delta, q.bound, at, owner, 0n]);
    if (reason) throw new Refusal(`${await executionRefusal(d, o, q, at, reason)}. Nothing was sent.`);
  }
  const receipt = await d.send("order_book", "commit_order", args, (reason) => orderRefusal(d, o, reason));
  const committed = await d.client.getContractEvents({
    address: d.address("order_book"), abi: d.abi("order_book"), eventName: "OrderCommitted",
    fromBlock: receipt.blockNumber, toBlock: receipt.blockNumber, args: { owner },
  });
  const mine = committed.find((e) => e.transactionHash === receipt.transactionHash);
  return (mine?.args as any)?.order_id ?? 0n;
}

async function orderRefusal(d: Deployment, o: OrderInput, reason: string): Promise<string> {
  const symbol = d.symbol(o.marketId);
  if (reason.includes("execution fee above cash")) {
    const [params, cash] = await Promise.all([d.read<any>("order_book", "order_params"), d.read<bigint>("vault", "cash", [d.account, d.sub])]);
    return `${plain(reason)}: an order escrows an execution fee of ${usd(params.execution_fee)} USD from your cash, which is ${usd(cash)} USD; deposit first`;
  }
  if (reason.includes("max position size")) {
    const cap = await d.read<bigint>("exchange", "max_position_size", [o.marketId]);
    return `${plain(reason)}: ${size(abs(o.delta))} ${symbol} is above the market's largest position, ${size(cap)} ${symbol}`;
  }
  return plain(reason);
}

async function executionRefusal(d: Deployment, o: OrderInput, q: Quote, at: bigint, reason: string): Promise<string> {
  const symbol = d.symbol(o.marketId);
  const where = o.kind === KIND_MARKET ? `at the ${symbol} index ${price(at)}` : `at the limit price ${price(at)}`;
  if (reason.includes("insufficient margin")) {
    const [largest, free, state] = await Promise.all([
      largestSize(d, o, at), d.read<bigint>("exchange", "withdrawable", [d.account, d.sub]),
      d.read<[bigint, bigint, bigint, bigint]>("exchange", "account_state", [d.account, d.sub]),
    ]);
    return `${plain(reason)}: a ${o.delta > 0n ? "buy" : "sell"} of ${size(abs(o.delta))} ${symbol} ${where} needs more margin `
      + `than the account has (free collateral ${usd(free)} USD, equity ${usd(state[1])} USD, execution fee ${usd(q.executionFee)} USD); `
      + `the margin allows at most ${size(largest)} ${symbol} now`;
  }
  if (reason.includes("price beyond acceptable")) {
    const fill = await d.read<bigint>("exchange", "fill_price", [o.marketId, o.delta]);
    return `${plain(reason)}: the order would fill at ${price(fill)}, ${o.delta > 0n ? "above" : "below"} its price bound `
      + `${price(q.bound)}; raise the slippage`;
  }
  return plain(reason);
}

/** The largest size (4 decimals) the exchange accepts now, by simulated executions (as the CLI searches it). */
async function largestSize(d: Deployment, o: OrderInput, at: bigint): Promise<bigint> {
  const sign = o.delta > 0n ? 1n : -1n;
  const book = d.address("order_book");
  const accepted = (sizes: bigint[]) => Promise.all(sizes.map(async (s) => (await d.refusalAs(
    book, "exchange", "execute_trade", [d.account, d.sub, o.marketId, sign * s, sign > 0n ? MAX_PRICE : 0n, at, d.account, 0n],
  )) === null));
  const target = abs(o.delta);
  const candidates: bigint[] = [];
  for (let k = SEARCH_STEPS; k > 0n; k--) if (target >> k) candidates.push(target >> k);
  let low = 0n, high = target;
  const oks = await accepted(candidates);
  for (let i = 0; i < candidates.length; i++) {
    if (oks[i]) low = candidates[i]; else { high = candidates[i]; break; }
  }
  for (let pass = 0; pass < 2; pass++) {
    const step = (high - low) / SEARCH_STEPS > 0n ? (high - low) / SEARCH_STEPS : 1n;
    const linear: bigint[] = [];
    for (let s = low + step; s < high && linear.length < Number(SEARCH_STEPS); s += step) linear.push(s);
    const results = await accepted(linear);
    for (let i = 0; i < linear.length; i++) {
      if (!results[i]) { high = linear[i]; break; }
      low = linear[i];
    }
  }
  return low / 10n ** 14n * 10n ** 14n;
}

// ---- open orders and what the keepers did ----

export interface OpenOrder { id: bigint; o: any }

export async function readOpenOrders(d: Deployment): Promise<OpenOrder[]> {
  if (!d.account) return [];
  const ids = await d.read<bigint[]>("order_book", "open_orders", [d.account, d.sub]);
  const orders = await Promise.all(ids.map((id) => d.read<any>("order_book", "order", [id])));
  return ids.map((id, i) => ({ id, o: orders[i] })).filter((x) => Number(x.o.state) === STATE_OPEN);
}

export function describeOrder(d: Deployment, o: any): string {
  const side = o.size_delta > 0n ? "buy" : "sell";
  return `${KIND_NAMES[Number(o.kind)]} ${side} ${size(abs(o.size_delta))} ${d.symbol(o.market_id)}`;
}

export function renderOpenOrders(d: Deployment, orders: OpenOrder[], now: bigint, cancel: (id: bigint) => void): void {
  const body = $("orders-table").querySelector("tbody")!;
  const rows = orders.map(({ id, o }) => {
    const button = el("button", "Cancel", { type: "button", "aria-label": `cancel order ${shortId(id)}` });
    button.addEventListener("click", () => cancel(id));
    const boundText = o.size_delta > 0n ? (o.acceptable_price >= MAX_PRICE ? "any" : `≤ ${price(o.acceptable_price)}`)
      : (o.acceptable_price === 0n ? "any" : `≥ ${price(o.acceptable_price)}`);
    const state = o.kind === KIND_MARKET
      ? (now >= o.expiry ? "expired" : "waiting for the next price")
      : (now >= o.expiry ? "expired" : "resting until the index crosses its trigger");
    return row([shortId(id), d.symbol(o.market_id), KIND_NAMES[Number(o.kind)] + (o.reduce_only ? ", reduce-only" : ""),
      signedSize(o.size_delta), o.kind === KIND_MARKET ? "—" : price(o.trigger_price), boundText, state], [button],
      { "data-order": id.toString() });
  });
  if (!rows.length) rows.push(row([d.account ? "no open order" : "connect a wallet"]));
  body.replaceChildren(...rows);
}

/** Follows the account's orders: each execution or cancellation once, as a sentence. */
export class OrderOutcomes {
  private from: bigint;
  private seen = new Set<string>();
  // outcomes read but not shown yet: a refresh that fails after reading them (another read of
  // the same refresh timing out) leaves them here for the next one instead of losing them
  private pending: string[] = [];
  constructor(private d: Deployment) {
    this.from = BigInt(d.manifest.block ?? 0);
  }

  async update(): Promise<void> {
    const d = this.d;
    if (!d.account) return;
    const head = await d.client.getBlockNumber();
    if (head < this.from) return;
    const common = { address: d.address("order_book"), abi: d.abi("order_book"), fromBlock: this.from, toBlock: head, args: { owner: d.account } };
    const [executed, cancelled] = await Promise.all([
      d.client.getContractEvents({ ...common, eventName: "OrderExecuted" } as any),
      d.client.getContractEvents({ ...common, eventName: "OrderCancelled" } as any),
    ]);
    this.from = head + 1n;
    const lines = this.pending;
    for (const e of [...executed, ...cancelled].sort((a: any, b: any) => Number(a.blockNumber - b.blockNumber))) {
      const a = (e as any).args;
      const key = `${(e as any).eventName}:${a.order_id}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      if ((e as any).eventName === "OrderExecuted") {
        const side = a.size_delta > 0n ? "bought" : "sold";
        lines.push(`order ${shortId(a.order_id)} executed by keeper ${a.executor}: ${side} ${size(abs(a.size_delta))} `
          + `${d.symbol(a.market_id)} at ${price(a.fill_price)} (index ${price(a.index_price)}); execution fee ${usd(a.fee)} USD`);
      } else {
        lines.push(`order ${shortId(a.order_id)} cancelled by ${a.by}: ${a.reason}; execution fee ${usd(a.fee)} USD to ${a.fee_to}`);
      }
    }
  }

  /** The outcomes read and not shown yet, oldest first; they are then shown. */
  take(): string[] {
    const lines = this.pending;
    this.pending = [];
    return lines;
  }

  reset(): void {
    this.from = BigInt(this.d.manifest.block ?? 0);
    this.seen.clear();
    this.pending = [];
  }
}
