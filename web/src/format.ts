// Fixed-point numbers as the contracts keep them (WAD = 1e18 for USD, prices and sizes;
// the collateral token's own decimals for wallet amounts) to text, and typed text back.

export const WAD = 10n ** 18n;
export const MAX_PRICE = 2n ** 128n - 1n;

/** `value` with `decimals` decimals as text with `shown` decimals, thousands separated, rounded toward zero. */
export function fixed(value: bigint, decimals: number, shown = 2): string {
  const negative = value < 0n;
  let v = negative ? -value : value;
  if (decimals > shown) v /= 10n ** BigInt(decimals - shown);
  else v *= 10n ** BigInt(shown - decimals);
  const digits = v.toString().padStart(shown + 1, "0");
  const whole = digits.slice(0, digits.length - shown).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const text = shown ? `${whole}.${digits.slice(digits.length - shown)}` : whole;
  return negative && v !== 0n ? `-${text}` : text;
}

export const usd = (wad: bigint) => fixed(wad, 18, 2);
export const price = (wad: bigint) => fixed(wad, 18, 2);
export const size = (wad: bigint) => fixed(wad, 18, 4);
export const signedSize = (wad: bigint) => (wad > 0n ? "+" : "") + size(wad);
export const percent = (wad: bigint, shown = 4) => fixed(wad * 100n, 18, shown) + " %";

/** Typed decimal text as an integer with `decimals` decimals; throws a sentence for anything else. */
export function parseAmount(text: string, decimals: number, what: string): bigint {
  const t = text.trim().replace(/,/g, "");
  if (!/^\d+(\.\d*)?$|^\.\d+$/.test(t)) throw new Error(`${what} must be a positive number, not "${text}"`);
  const [whole, frac = ""] = t.split(".");
  if (frac.length > decimals) throw new Error(`${what} has more than ${decimals} decimals`);
  const value = BigInt(whole || "0") * 10n ** BigInt(decimals) + BigInt((frac + "0".repeat(decimals)).slice(0, decimals) || "0");
  if (value === 0n) throw new Error(`${what} must be above zero`);
  return value;
}

export function abs(x: bigint): bigint {
  return x < 0n ? -x : x;
}

/** Vyper's floor division of signed integers (rounds toward minus infinity). */
export function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n) && ((a < 0n) !== (b < 0n)) ? q - 1n : q;
}

export function ceilDiv(a: bigint, b: bigint): bigint {
  return -floorDiv(-a, b);
}

export function shortId(id: bigint): string {
  const hex = "0x" + id.toString(16);
  return hex.length > 14 ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : hex;
}

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", attrs: Record<string, string> = {}): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** A table row of text cells (the first a row header), plus any extra nodes as the last cell. */
export function row(cells: string[], extra: Node[] = [], attrs: Record<string, string> = {}): HTMLTableRowElement {
  const tr = el("tr", "", attrs);
  cells.forEach((c, i) => tr.append(i === 0 ? el("th", c, { scope: "row" }) : el("td", c)));
  if (extra.length) {
    const td = el("td");
    td.append(...extra);
    tr.append(td);
  }
  return tr;
}

export function $(id: string): HTMLElement {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from index.html`);
  return node;
}

export function input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}

export function select(id: string): HTMLSelectElement {
  return $(id) as HTMLSelectElement;
}
