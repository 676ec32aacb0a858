// The connected account: wallet balance, cash, equity, requirements, health, withdrawable; its
// positions (size, entry, mark, index, unrealized PnL, funding owed, liquidation price); and
// the liquidation price an order would leave, computed as Liquidator.liquidation_price does
// over the account as it would be after the fill.

import { Deployment, Refusal } from "./chain";
import { $, abs, ceilDiv, el, fixed, floorDiv, price, row, signedSize, usd, WAD } from "./format";
import type { MarketState } from "./markets";

export interface Position {
  marketId: bigint;
  symbol: string;
  size: bigint;
  basis: bigint; // open notional, WAD USD
  entry: bigint;
  pnl: bigint | null;
  funding: bigint | null; // positive: owed by the position
  liquidation: bigint | null; // 0: no positive price liquidates it
}

export interface AccountState {
  walletUnits: bigint;
  decimals: number;
  cash: bigint;
  equity: bigint | null;
  initial: bigint | null;
  maintenance: bigint | null;
  withdrawable: bigint | null;
  positions: Position[];
}

export async function readAccount(d: Deployment): Promise<AccountState | null> {
  const owner = d.account;
  if (!owner) return null;
  const sub = d.sub;
  const [balance, decimals, [cash, mask], state, free] = await Promise.all([
    d.read<bigint>("collateral", "balanceOf", [owner]), d.read<number>("collateral", "decimals"),
    d.read<[bigint, bigint]>("vault", "account", [owner, sub]),
    d.tryRead<[bigint, bigint, bigint, bigint]>("exchange", "account_state", [owner, sub]),
    d.tryRead<bigint>("exchange", "withdrawable", [owner, sub]),
  ]);
  const open = d.markets.filter((m) => (mask >> BigInt(m.id)) & 1n);
  const positions = (await Promise.all(open.map(async (m): Promise<Position> => {
    const id = BigInt(m.id);
    const [[size, basis], full, liquidation] = await Promise.all([
      d.read<[bigint, bigint, bigint]>("exchange", "position_state", [owner, sub, id]),
      d.tryRead<[bigint, bigint, bigint, bigint]>("exchange", "position", [owner, sub, id]),
      d.tryRead<bigint>("liquidator", "liquidation_price", [owner, sub, id]),
    ]);
    const ok = !(full instanceof Refusal);
    return {
      marketId: id, symbol: m.symbol, size, basis, entry: size === 0n ? 0n : abs(basis) * WAD / abs(size),
      pnl: ok ? full[2] : null, funding: ok ? full[3] : null,
      liquidation: liquidation instanceof Refusal ? null : liquidation,
    };
  }))).filter((p) => p.size !== 0n);
  const s = state instanceof Refusal ? null : state;
  return {
    walletUnits: balance, decimals: Number(decimals), cash, equity: s?.[1] ?? null, initial: s?.[2] ?? null,
    maintenance: s?.[3] ?? null, withdrawable: free instanceof Refusal ? null : free, positions,
  };
}

/** Health in percent: 1 - maintenance / equity (100 without positions, 0 when liquidatable). */
export function health(a: AccountState): number | null {
  if (a.equity === null || a.maintenance === null) return null;
  if (a.maintenance === 0n) return 100;
  if (a.equity <= a.maintenance) return 0;
  return Number((a.equity - a.maintenance) * 10000n / a.equity) / 100;
}

const orDash = (v: bigint | null, f: (x: bigint) => string) => (v === null ? "unavailable" : f(v));

export function renderAccount(a: AccountState | null): void {
  const fields: [string, string][] = a ? [
    ["acct-wallet", `${fixed(a.walletUnits, a.decimals)} USD`], ["acct-cash", `${usd(a.cash)} USD`],
    ["acct-equity", orDash(a.equity, (v) => `${usd(v)} USD`)], ["acct-initial", orDash(a.initial, (v) => `${usd(v)} USD`)],
    ["acct-maintenance", orDash(a.maintenance, (v) => `${usd(v)} USD`)],
    ["acct-withdrawable", orDash(a.withdrawable, (v) => `${usd(v)} USD`)],
  ] : ["acct-wallet", "acct-cash", "acct-equity", "acct-initial", "acct-maintenance", "acct-withdrawable"].map((id) => [id, "—"]);
  for (const [id, text] of fields) $(id).textContent = text;
  const h = a ? health(a) : null;
  ($("health") as HTMLMeterElement).value = h ?? 0;
  $("health-text").textContent = h === null ? "" : `${h.toFixed(1)} %${h === 0 ? " — liquidatable" : ""}`;
}

export function renderPositions(a: AccountState | null, markets: MarketState[], close: (p: Position) => void): void {
  const body = $("positions-table").querySelector("tbody")!;
  const rows = (a?.positions ?? []).map((p) => {
    const m = markets.find((x) => x.id === p.marketId);
    const button = el("button", "Close", { type: "button", "aria-label": `close the ${p.symbol} position` });
    button.addEventListener("click", () => close(p));
    const liquidation = p.liquidation === null ? "unavailable" : p.liquidation === 0n ? "none" : price(p.liquidation);
    return row([
      p.symbol, signedSize(p.size), price(p.entry), m?.mark == null ? "—" : price(m.mark),
      m?.index == null ? "—" : price(m.index), orDash(p.pnl, usd), orDash(p.funding, usd), liquidation,
    ], [button], { "data-market": p.symbol });
  });
  if (!rows.length) rows.push(row([a ? "no open position" : "connect a wallet"]));
  body.replaceChildren(...rows);
}

// ---- the liquidation price after a fill (Liquidator.liquidation_price over the new state) ----

function ownTerms(size: bigint, index: bigint, p: any): { maintenance: bigint } {
  const absSize = abs(size);
  const notional = ceilDiv(absSize * index, WAD);
  return {
    maintenance: ceilDiv(notional * p.maintenance_margin_ratio, WAD) + ceilDiv(notional * absSize, 2n * p.skew_scale)
      + ceilDiv(notional * p.liquidation_penalty_ratio, WAD),
  };
}

/**
 * The index price of `m` at which the account would be liquidatable after buying (selling)
 * `delta` at `fill` with `fee`, every other price fixed; 0n when no positive price does, null
 * when it cannot be computed (no index, or no account state).
 */
export function liquidationAfter(a: AccountState, m: MarketState, delta: bigint, fill: bigint, fee: bigint,
                                 keeperFloor: bigint): bigint | null {
  if (m.index === null || a.equity === null || a.maintenance === null) return null;
  const p = m.params;
  const index = m.index;
  const old = a.positions.find((x) => x.marketId === m.id)?.size ?? 0n;
  const size = old + delta;
  if (size === 0n) return 0n;
  // equity moves by the fee and by the fill's distance from the index; requirements by this market's terms
  const equity = a.equity - fee - floorDiv(delta * (fill - index), WAD);
  const floor = a.positions.length === 0 ? keeperFloor : 0n;
  const oldTerms = old === 0n ? 0n : ownTerms(old, index, p).maintenance;
  const own = ownTerms(size, index, p).maintenance;
  const maintenance = a.maintenance + floor - oldTerms + own;
  const absSize = abs(size);
  const rest = equity - floorDiv(size * index, WAD);
  const other = maintenance - own;
  const c = p.maintenance_margin_ratio + p.liquidation_penalty_ratio + absSize * WAD / (2n * p.skew_scale);
  let denominator = size * WAD - absSize * c;
  let numerator = (other - rest) * WAD * WAD;
  if (denominator === 0n) return 0n;
  if (denominator < 0n) { numerator = -numerator; denominator = -denominator; }
  const result = floorDiv(numerator, denominator);
  return result > 0n ? result : 0n;
}
