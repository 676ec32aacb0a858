// Markets table (index, mark, 8-hour funding, open interest, skew, caps) and the index chart
// from the oracle's rounds (the market's feed's AnswerUpdated events).

import { createChart, LineSeries, type IChartApi, type ISeriesApi, type UTCTimestamp } from "lightweight-charts";
import type { Address } from "viem";
import { Deployment, Refusal, revertReason } from "./chain";
import { $, fixed, percent, price, row, select, signedSize, size, usd, WAD } from "./format";

export interface MarketState {
  id: bigint;
  symbol: string;
  index: bigint | null; // null: the oracle refuses (its reason in `error`)
  mark: bigint | null;
  skew: bigint;
  longOi: bigint;
  shortOi: bigint;
  funding: bigint; // per 8 h, WAD; positive: longs pay
  params: any;
  error: string | null;
}

export async function readMarkets(d: Deployment): Promise<MarketState[]> {
  return Promise.all(d.markets.map(async (m) => {
    const id = BigInt(m.id);
    const [index, mark, skew, oi, funding, params] = await Promise.all([
      d.tryRead<bigint>("exchange", "index_price", [id]), d.tryRead<bigint>("exchange", "mark_price", [id]),
      d.read<bigint>("exchange", "skew", [id]), d.read<[bigint, bigint]>("exchange", "open_interest", [id]),
      d.tryRead<bigint>("exchange", "funding_rate", [id]), d.read("exchange", "market_params", [id]),
    ]);
    const ok = <T>(v: T | Refusal) => (v instanceof Refusal ? null : v);
    return {
      id, symbol: m.symbol, index: ok(index), mark: ok(mark), skew, longOi: oi[0], shortOi: oi[1],
      funding: ok(funding) ?? 0n, params, error: index instanceof Refusal ? index.message : null,
    };
  }));
}

export function renderMarkets(markets: MarketState[]): void {
  const body = $("markets-table").querySelector("tbody")!;
  body.replaceChildren(...markets.map((m) => row([
    m.symbol, m.index === null ? `unavailable (${m.error})` : price(m.index), m.mark === null ? "—" : price(m.mark),
    percent(m.funding), size(m.longOi), size(m.shortOi), signedSize(m.skew),
    `${size(m.params.max_long_oi)} / ${size(m.params.max_short_oi)}`, size(m.params.max_position_size),
  ], [], { "data-market": m.symbol })));
}

/**
 * The global open-interest cap: `max_oi_ratio x the liquidity vault's value - the open
 * interest notional` (WAD USD) is what risk-increasing executions may still add, over all
 * markets; an order that does not fit is cancelled by the keeper that executes it. `room` is
 * that figure now (OrderBook.refresh_open_interest_room, called without sending); `cached`
 * and `computedAt` are the order book's stored room (OrderBook.open_interest_room), which
 * executions consume for up to 60 seconds before recomputing it.
 */
export interface OiRoom {
  room: bigint | null; // null: the order book cannot compute it now (its reason in `error`)
  error: string | null;
  ratio: bigint;
  value: bigint | null;
  openInterest: bigint | null;
  cached: bigint;
  computedAt: bigint;
}

export async function readOiRoom(d: Deployment): Promise<OiRoom> {
  const [fresh, ratio, value, openInterest, [cached, computedAt]] = await Promise.all([
    d.client.simulateContract({ address: d.address("order_book"), abi: d.abi("order_book"), functionName: "refresh_open_interest_room" })
      .then((r) => r.result as bigint, (err) => new Refusal(revertReason(err) ?? (err as Error).message.split("\n")[0])),
    d.read<bigint>("liquidity_vault", "max_oi_ratio"), d.tryRead<bigint>("exchange", "liquidity_vault_value"),
    d.tryRead<bigint>("exchange", "open_interest_notional"), d.read<[bigint, bigint]>("order_book", "open_interest_room"),
  ]);
  const ok = <T>(v: T | Refusal) => (v instanceof Refusal ? null : v);
  return {
    room: ok(fresh), error: fresh instanceof Refusal ? fresh.message : null, ratio, value: ok(value),
    openInterest: ok(openInterest), cached, computedAt,
  };
}

export function renderOiRoom(r: OiRoom | null): void {
  if (r === null) {
    $("oi-room").textContent = "Open-interest room, all markets: unavailable (this deployment's order book does not tell it)";
    return;
  }
  const ratio = `${fixed(r.ratio, 18, r.ratio % WAD === 0n ? 0 : 2)}×`;
  const parts = r.value === null || r.openInterest === null ? ""
    : ` (${ratio} the liquidity vault's value, ${usd(r.value)} USD, less the open interest, ${usd(r.openInterest)} USD)`;
  const cached = r.computedAt === 0n ? "the order book has not computed its room yet"
    : `executions draw on the order book's room, ${usd(r.cached)} USD computed at `
      + `${new Date(Number(r.computedAt) * 1000).toISOString().slice(11, 19)} UTC, recomputed once it is 60 s old`;
  $("oi-room").textContent = r.room === null ? `Open-interest room, all markets: unavailable (${r.error})`
    : `Open-interest room, all markets: ${usd(r.room)} USD of notional may still be opened${parts}; ${cached}.`;
}

const FEED_DECIMALS = 8;

/** The index chart of one market: every round of its (first) feed, appended as new rounds come. */
export class IndexChart {
  private chart: IChartApi;
  private series: ISeriesApi<"Line">;
  private points = new Map<number, number>();
  private from = 0n;
  private feed: Address | null = null;

  constructor(private d: Deployment) {
    const container = $("chart");
    this.chart = createChart(container, {
      autoSize: true, layout: { background: { color: "#ffffff" }, textColor: "#1b1f24", attributionLogo: false },
      timeScale: { timeVisible: true, secondsVisible: true }, grid: { vertLines: { visible: false } },
    });
    this.series = this.chart.addSeries(LineSeries, { color: "#0b5cad", lineWidth: 2, priceFormat: { type: "price", precision: 2, minMove: 0.01 } });
    const choice = select("chart-market");
    choice.replaceChildren(...d.markets.map((m) => new Option(m.symbol, String(m.id))));
    choice.addEventListener("change", () => this.show(Number(choice.value)));
    this.show(d.markets[0]?.id ?? 0);
  }

  private show(marketId: number): void {
    const market = this.d.markets.find((m) => m.id === marketId);
    this.feed = market?.aggregators[0] ?? null;
    this.points.clear();
    this.from = BigInt(this.d.manifest.block ?? 0);
    this.series.setData([]);
    void this.update();
  }

  /** Fetch the rounds published since the last update and draw them. */
  async update(): Promise<void> {
    const feed = this.feed;
    if (!feed) return;
    const head = await this.d.client.getBlockNumber();
    if (head < this.from) return;
    const logs = await this.d.client.getContractEvents({
      address: feed, abi: this.d.abi("aggregator"), eventName: "AnswerUpdated", fromBlock: this.from, toBlock: head,
    });
    if (feed !== this.feed) return; // the market changed meanwhile
    this.from = head + 1n;
    for (const log of logs) {
      const { current, updatedAt } = log.args as { current: bigint; updatedAt: bigint };
      this.points.set(Number(updatedAt), Number(current) / 10 ** FEED_DECIMALS);
    }
    if (logs.length) {
      const data = [...this.points.entries()].sort((a, b) => a[0] - b[0])
        .map(([time, value]) => ({ time: time as UTCTimestamp, value }));
      this.series.setData(data);
    }
  }
}
