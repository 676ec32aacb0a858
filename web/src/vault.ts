// The liquidity vault: share price, value, the connected LP's shares and their value, the
// shares still in their deposit cooldown (locked until when), its deposit and redemption
// requests with their state (waiting, executed, cancelled with the reason); the insurance
// fund and any outstanding deficit.

import { Deployment, plain } from "./chain";
import { $, el, fixed, row, shortId, usd } from "./format";

export interface LpRequest { id: bigint; redemption: boolean; amount: bigint; state: string; open: boolean }

export interface VaultState {
  assetDecimals: number;
  shareDecimals: number;
  sharePrice: bigint; // asset units per whole share
  value: bigint; // asset units
  shares: bigint;
  mine: bigint; // asset units
  locked: bigint; // shares still in their deposit cooldown
  lockedUntil: bigint; // when the cooldown ends (chain time, unix seconds), 0 without locked shares
  insurance: bigint; // WAD
  deficit: bigint; // WAD
  requests: LpRequest[];
}

export async function readVault(d: Deployment): Promise<VaultState> {
  const [assetDecimals, shareDecimals, value, insurance, deficit] = await Promise.all([
    d.read<number>("collateral", "decimals"), d.read<number>("liquidity_vault", "decimals"),
    d.read<bigint>("liquidity_vault", "totalAssets"), d.read<bigint>("insurance_fund", "fund_balance"),
    d.read<bigint>("liquidator", "total_uncovered_deficit"),
  ]);
  const one = 10n ** BigInt(shareDecimals);
  const sharePrice = await d.read<bigint>("liquidity_vault", "convertToAssets", [one]);
  const shares = d.account ? await d.read<bigint>("liquidity_vault", "balanceOf", [d.account]) : 0n;
  const mine = shares ? await d.read<bigint>("liquidity_vault", "convertToAssets", [shares]) : 0n;
  const [locked, lockedUntil] = d.account ? await d.read<[bigint, bigint]>("liquidity_vault", "locked_shares", [d.account]) : [0n, 0n];
  return {
    assetDecimals: Number(assetDecimals), shareDecimals: Number(shareDecimals), sharePrice, value, shares, mine, locked, lockedUntil,
    insurance, deficit, requests: d.account ? await readRequests(d, Number(assetDecimals), Number(shareDecimals)) : [],
  };
}

async function readRequests(d: Deployment, assetDecimals: number, shareDecimals: number): Promise<LpRequest[]> {
  const common = { address: d.address("liquidity_vault"), abi: d.abi("liquidity_vault"), fromBlock: BigInt(d.manifest.block ?? 0) };
  const ev = (eventName: string, args?: object) => d.client.getContractEvents({ ...common, eventName, args } as any) as Promise<any[]>;
  const [deposits, redeems, depositsDone, redeemsDone, cancelled] = await Promise.all([
    ev("DepositRequested", { requester: d.account }), ev("RedeemRequested", { requester: d.account }),
    ev("DepositExecuted"), ev("RedeemExecuted"), ev("RequestCancelled", { requester: d.account }),
  ]);
  const done = new Map<bigint, any>([...depositsDone, ...redeemsDone].map((e) => [e.args.request_id, e.args]));
  const gone = new Map<bigint, any>(cancelled.map((e) => [e.args.request_id, e.args]));
  return [...deposits, ...redeems].map((e) => {
    const a = e.args;
    const redemption = e.eventName === "RedeemRequested";
    const amount = redemption ? a.shares : a.assets;
    const x = done.get(a.request_id), c = gone.get(a.request_id);
    const state = x ? `executed: ${redemption ? `${fixed(x.assets, assetDecimals)} USD paid` : `${fixed(x.shares, shareDecimals, 4)} shares minted`}`
      : c ? `cancelled by ${c.by}: ${c.reason}` : "waiting for a keeper at the next prices";
    return { id: a.request_id, redemption, amount, state, open: !x && !c };
  }).sort((a, b) => Number(b.id - a.id));
}

/** A chain timestamp (unix seconds) as UTC date and time: "2026-12-02 05:45:12 UTC". */
export function utc(seconds: bigint): string {
  return new Date(Number(seconds) * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

/** The cooldown's refusal of a redemption, "N shares from a recent deposit are locked until T", in shares and UTC. */
export function lockedReason(reason: string, shareDecimals: number, held: bigint): string {
  const m = /(\d+) shares from a recent deposit are locked until (\d+)/.exec(reason);
  if (!m) return plain(reason);
  const locked = BigInt(m[1]);
  const free = held > locked ? held - locked : 0n;
  return `Refused by the liquidity vault: ${fixed(locked, shareDecimals, 4)} of your ${fixed(held, shareDecimals, 4)} shares come from `
    + `a deposit still in its cooldown and are locked until ${utc(BigInt(m[2]))}; ${fixed(free, shareDecimals, 4)} can be redeemed now`;
}

export function renderVault(v: VaultState, cancel: (id: bigint) => void): void {
  const a = v.assetDecimals;
  $("lv-price").textContent = `${fixed(v.sharePrice, a, 4)} USD`;
  $("lv-value").textContent = `${fixed(v.value, a)} USD`;
  $("lv-shares").textContent = fixed(v.shares, v.shareDecimals, 4);
  $("lv-mine").textContent = `${fixed(v.mine, a)} USD`;
  $("lv-locked").textContent = v.locked ? `${fixed(v.locked, v.shareDecimals, 4)} until ${utc(v.lockedUntil)}` : "none";
  $("lv-insurance").textContent = `${usd(v.insurance)} USD`;
  $("lv-deficit").textContent = `${usd(v.deficit)} USD`;
  const body = $("lp-requests-table").querySelector("tbody")!;
  const rows = v.requests.map((r) => {
    const extra: Node[] = [];
    if (r.open) {
      const button = el("button", "Cancel", { type: "button", "aria-label": `cancel request ${shortId(r.id)}` });
      button.addEventListener("click", () => cancel(r.id));
      extra.push(button);
    }
    const amount = r.redemption ? `${fixed(r.amount, v.shareDecimals, 4)} shares` : `${fixed(r.amount, a)} USD`;
    return row([shortId(r.id), r.redemption ? "redemption" : "deposit", amount, r.state], extra);
  });
  if (!rows.length) rows.push(row(["no request"]));
  body.replaceChildren(...rows);
}
