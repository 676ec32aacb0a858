// What happened to the account, from the contracts' events: deposits and withdrawals, fills
// (fee, realized PnL), funding settled with them, liquidations, bad debt and auto-deleveraging
// haircuts, and order cancellations. Read incrementally from the deployment's first block.

import { Deployment } from "./chain";
import { $, abs, el, fixed, price, shortId, size, usd } from "./format";

interface Entry { block: bigint; index: number; kind: string; text: string }

const SOURCES: [Parameters<Deployment["abi"]>[0], string][] = [
  ["vault", "Deposit"], ["vault", "Withdraw"], ["exchange", "Trade"], ["order_book", "OrderCancelled"],
  ["liquidator", "Liquidation"], ["liquidator", "BadDebt"], ["liquidator", "AutoDeleveraged"],
];
// Liquidator.AutoDeleveraged.trigger: TRIGGER_DEFICIT = 1, TRIGGER_PNL_FACTOR = 2
const ADL_TRIGGERS: Record<number, string> = { 1: "a deficit to cover", 2: "PnL factor above the cap" };

export class History {
  private from: bigint;
  private entries: Entry[] = [];
  constructor(private d: Deployment, private decimals: () => number) {
    this.from = BigInt(d.manifest.block ?? 0);
  }

  reset(): void {
    this.from = BigInt(this.d.manifest.block ?? 0);
    this.entries = [];
  }

  async update(): Promise<void> {
    const d = this.d;
    if (!d.account) return;
    const head = await d.client.getBlockNumber();
    if (head < this.from) return;
    const batches = await Promise.all(SOURCES.map(([contract, eventName]) => d.client.getContractEvents({
      address: d.address(contract), abi: d.abi(contract), eventName, fromBlock: this.from, toBlock: head, args: { owner: d.account },
    } as any)));
    this.from = head + 1n;
    for (const e of batches.flat() as any[]) {
      if (e.args.sub_account !== undefined && e.args.sub_account !== d.sub) continue;
      for (const [kind, text] of this.describe(e.eventName, e.args)) {
        this.entries.push({ block: e.blockNumber, index: e.logIndex, kind, text });
      }
    }
    this.entries.sort((a, b) => Number(b.block - a.block) || b.index - a.index);
  }

  private describe(name: string, a: any): [string, string][] {
    const d = this.d;
    const symbol = a.market_id !== undefined ? d.symbol(a.market_id) : "";
    switch (name) {
      case "Deposit": return [["deposit", `+${fixed(a.amount, this.decimals())} USD`]];
      case "Withdraw": return [["withdraw", `-${fixed(a.amount, this.decimals())} USD`]];
      case "Trade": {
        const side = a.size_delta > 0n ? "bought" : "sold";
        const out: [string, string][] = [["fill", `${side} ${size(abs(a.size_delta))} ${symbol} at ${price(a.fill_price)}; `
          + `fee ${usd(a.fee)}, realized PnL ${usd(a.realized_pnl)}; position now ${size(a.new_size)}`]];
        if (a.funding_paid !== 0n) out.push(["funding", `${a.funding_paid > 0n ? "paid" : "received"} ${usd(abs(a.funding_paid))} USD of ${symbol} funding`]);
        return out;
      }
      case "OrderCancelled": return [["order", `${shortId(a.order_id)} cancelled by ${a.by}: ${a.reason}`]];
      case "Liquidation": return [["liquidation", `${a.fully_closed ? "fully" : "partly"} liquidated: ${usd(a.closed_notional)} USD `
        + `of notional closed, penalty ${usd(a.penalty)} USD; equity after ${usd(a.equity_after)} USD`]];
      case "BadDebt": return [["bad debt", `deficit ${usd(a.deficit)} USD: ${usd(a.covered_by_insurance)} covered by the insurance fund, `
        + `${usd(a.uncovered)} uncovered`]];
      case "AutoDeleveraged": return [["ADL", `auto-deleveraged (${ADL_TRIGGERS[Number(a.trigger)] ?? a.trigger}): ${size(abs(a.size_closed))} `
        + `${symbol} closed at ${price(a.price)}, realized PnL ${usd(a.realized_pnl)}, haircut ${usd(a.haircut)} USD`]];
      default: return [];
    }
  }

  render(): void {
    const body = $("history-table").querySelector("tbody")!;
    const rows = this.entries.map((e) => {
      const tr = el("tr", "", { "data-kind": e.kind });
      tr.append(el("td", e.block.toString()), el("td", e.kind), el("td", e.text));
      return tr;
    });
    if (!rows.length) {
      const tr = el("tr");
      tr.append(el("td", this.d.account ? "nothing yet" : "connect a wallet", { colspan: "3" }));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }
}
