// The trader's page: wires the views (markets, account, order, positions, open orders,
// history, liquidity vault) to the chain, refreshes them every REFRESH_MS, and turns every
// action into a simulated-then-sent transaction whose refusal is shown, with nothing sent.

import type { Address } from "viem";
import { readAccount, renderAccount, renderPositions, type AccountState, type Position } from "./account";
import { Deployment, plain, Refusal } from "./chain";
import { $, fixed, input, parseAmount, select, shortId, usd, WAD } from "./format";
import { History } from "./history";
import { IndexChart, readMarkets, readOiRoom, renderMarkets, renderOiRoom, type MarketState, type OiRoom } from "./markets";
import {
  commit, KIND_MARKET, OrderOutcomes, quote, quoteText, readForm, readOpenOrders, renderOpenOrders,
} from "./orders";
import { lockedReason, readVault, renderVault } from "./vault";

const REFRESH_MS = 1500;
const RESERVED = new Map([[0, "deployer"], [1, "keeper"], [9, "price pusher"]]); // the devnet's own accounts

let d: Deployment;
let chart: IndexChart;
let history: History;
let outcomes: OrderOutcomes;
let markets: MarketState[] = [];
let account: AccountState | null = null;
let room: OiRoom | null = null;
let decimals = 6;

// ---- messages ----

function notice(text: string | null): void {
  const box = $("notice");
  box.hidden = text === null;
  box.textContent = text ?? "";
}

function status(text: string): void {
  $("status").textContent = text;
}

/** Run a user action: its refusal (or any error) goes to the notice, nothing else happens. */
async function act(button: HTMLElement | null, action: () => Promise<string | void>): Promise<void> {
  notice(null);
  const buttons = document.querySelectorAll<HTMLButtonElement>("main button, header button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    const done = await action();
    if (done) status(done);
    await refresh();
  } catch (err) {
    notice(err instanceof Refusal ? err.message : `Error: ${(err as Error).message ?? err}`);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    button?.focus();
  }
}

// ---- wallet ----

async function setUpWallets(): Promise<void> {
  const choice = select("wallet-choice");
  const options: HTMLOptionElement[] = [];
  if ((window as any).ethereum) options.push(new Option("Browser wallet (injected)", "injected"));
  if (d.network.local) {
    const accounts = await d.devAccounts();
    accounts.forEach((a, i) => {
      if (!RESERVED.has(i)) options.push(new Option(`Devnet account #${i} ${a.slice(0, 8)}…`, a));
    });
  }
  if (!options.length) options.push(new Option("no wallet: install a browser wallet", ""));
  choice.replaceChildren(...options);
  const trader = options.find((o) => o.textContent?.startsWith("Devnet account #2 "));
  if (trader) choice.value = trader.value;
  document.querySelectorAll<HTMLElement>(".local-only").forEach((e) => (e.hidden = !d.network.local));
}

async function connect(): Promise<string> {
  const value = select("wallet-choice").value;
  if (!value) throw new Refusal("no wallet to connect: install a browser wallet (window.ethereum)");
  if (value === "injected") await d.connectInjected(walletChanged);
  else d.connectDev(value as Address);
  showAccount();
  return `connected ${d.account}`;
}

function showAccount(): void {
  history.reset();
  outcomes.reset();
  $("order-outcomes").replaceChildren();
  $("address").textContent = d.account ? `connected: ${d.account} (sub-account ${d.sub})` : "";
}

/** The browser wallet switched its account (the page follows it) or its chain (a warning). */
function walletChanged(event: "account" | "chain", warning: string | null): void {
  notice(warning);
  if (event === "account") {
    showAccount();
    if (d.account) status(`the browser wallet switched to ${d.account}`);
  }
  void refresh();
}

// ---- cash ----

async function approve(spender: Address, units: bigint): Promise<void> {
  const allowance = await d.read<bigint>("collateral", "allowance", [d.account, spender]);
  if (allowance < units) await d.send("collateral", "approve", [spender, units]);
}

async function faucet(): Promise<string> {
  const units = parseAmount(input("faucet-amount").value, decimals, "the faucet amount");
  await d.send("collateral", "faucet", [units]);
  return `minted ${fixed(units, decimals)} USD of devnet collateral`;
}

async function deposit(): Promise<string> {
  const units = parseAmount(input("deposit-amount").value, decimals, "the deposit");
  const balance = await d.read<bigint>("collateral", "balanceOf", [d.account]);
  if (balance < units) {
    throw new Refusal(`Refused: the wallet holds ${fixed(balance, decimals)} USD of collateral, less than ${fixed(units, decimals)}`
      + `${d.network.local ? " (mint some with the faucet)" : ""}. Nothing was sent.`);
  }
  await approve(d.address("vault"), units);
  await d.send("vault", "deposit", [d.sub, units]);
  const cash = await d.read<bigint>("vault", "cash", [d.account, d.sub]);
  return `deposited ${fixed(units, decimals)} USD: cash now ${usd(cash)} USD`;
}

async function withdraw(): Promise<string> {
  const units = parseAmount(input("withdraw-amount").value, decimals, "the withdrawal");
  await d.send("vault", "withdraw", [d.sub, units], async (reason) => {
    if (!reason.includes("insufficient free collateral")) return plain(reason);
    const [free, state] = await Promise.all([d.read<bigint>("exchange", "withdrawable", [d.account, d.sub]),
      d.read<[bigint, bigint, bigint, bigint]>("exchange", "account_state", [d.account, d.sub])]);
    return `${plain(reason)}: ${fixed(units, decimals)} USD is more than the free collateral, ${usd(free)} USD `
      + `(cash ${usd(state[0])}, equity ${usd(state[1])}, initial requirement ${usd(state[2])})`;
  });
  return `withdrew ${fixed(units, decimals)} USD`;
}

async function withdrawMax(): Promise<void> {
  if (!d.account) return;
  const free = await d.read<bigint>("exchange", "withdrawable", [d.account, d.sub]);
  input("withdraw-amount").value = fixed(free * 10n ** BigInt(decimals) / WAD, decimals, decimals).replace(/,/g, "");
}

// ---- orders ----

async function sendOrder(): Promise<string> {
  if (!d.account) throw new Refusal("connect a wallet first");
  const o = readForm();
  const q = await quote(d, o, markets, account, room);
  $("quote").textContent = quoteText(d, o, q);
  const id = await commit(d, o, q, markets);
  const wait = o.kind === KIND_MARKET ? "a keeper executes it at the next published price" : "it rests until the index crosses its trigger";
  return `committed order ${shortId(id)}: ${o.reduceOnly ? "reduce-only " : ""}${select("order-kind").selectedOptions[0].text.toLowerCase()} `
    + `${o.delta > 0n ? "buy" : "sell"}; ${wait}`;
}

async function closePosition(p: Position): Promise<string> {
  const slippageBps = parseAmount(input("order-slippage").value || "0.5", 2, "the slippage");
  const o = { marketId: p.marketId, kind: KIND_MARKET, delta: -p.size, trigger: 0n, slippageBps, reduceOnly: true };
  const q = await quote(d, o, markets, account, room);
  const id = await commit(d, o, q, markets);
  return `committed order ${shortId(id)}: reduce-only market close of the ${p.symbol} position`;
}

async function updateQuote(): Promise<void> {
  const out = $("quote");
  if (!markets.length) return;
  try {
    const o = readForm();
    out.textContent = quoteText(d, o, await quote(d, o, markets, account, room));
  } catch (err) {
    out.textContent = err instanceof Refusal ? err.message : (err as Error).message.split("\n")[0];
  }
}

function kindChanged(): void {
  const kind = BigInt(select("order-kind").value);
  const trigger = input("order-trigger");
  trigger.disabled = kind === KIND_MARKET;
  trigger.required = kind !== KIND_MARKET;
  // stop-loss and take-profit orders are always reduce-only: the box is ticked and locked for
  // them, and the trader's own choice comes back with the other kinds
  const reduce = input("order-reduce");
  const forced = kind >= 2n;
  if (forced && !reduce.disabled) reduce.dataset.chosen = String(reduce.checked);
  if (!forced && reduce.disabled) reduce.checked = reduce.dataset.chosen === "true";
  if (forced) reduce.checked = true;
  reduce.disabled = forced;
}

// ---- liquidity vault ----

async function lpDeposit(): Promise<string> {
  const units = parseAmount(input("lp-deposit-amount").value, decimals, "the liquidity deposit");
  const params = await d.read<any>("liquidity_vault", "lp_params");
  await approve(d.address("liquidity_vault"), units + params.execution_fee);
  await d.send("liquidity_vault", "request_deposit", [units, d.account]);
  return `requested a liquidity deposit of ${fixed(units, decimals)} USD: a keeper executes it at the next prices`;
}

async function lpRedeem(): Promise<string> {
  const shareDecimals = Number(await d.read<number>("liquidity_vault", "decimals"));
  const shares = parseAmount(input("lp-redeem-amount").value, shareDecimals, "the shares");
  const [params, held] = await Promise.all([d.read<any>("liquidity_vault", "lp_params"),
    d.read<bigint>("liquidity_vault", "balanceOf", [d.account])]);
  if (params.execution_fee) await approve(d.address("liquidity_vault"), params.execution_fee);
  await d.send("liquidity_vault", "request_redeem", [shares, d.account], (reason) => lockedReason(reason, shareDecimals, held));
  return `requested the redemption of ${fixed(shares, shareDecimals, 4)} shares: a keeper executes it at the next prices`;
}

// ---- refresh ----

let refreshing: Promise<void> | null = null;

function refresh(): Promise<void> {
  refreshing ??= (async () => {
    try {
      [markets, room] = await Promise.all([readMarkets(d), readOiRoom(d).catch(() => null)]);
      renderMarkets(markets);
      renderOiRoom(room);
      account = await readAccount(d);
      renderAccount(account);
      renderPositions(account, markets, (p) => void act(null, () => closePosition(p)));
      const [open, block, , vault] = await Promise.all([
        readOpenOrders(d), d.client.getBlock(), outcomes.update(), readVault(d), history.update(), chart.update(),
      ]);
      renderOpenOrders(d, open, block.timestamp, (id) => void act(null, async () => {
        await d.send("order_book", "cancel_order", [id]);
        return `cancelled order ${shortId(id)}`;
      }));
      const list = $("order-outcomes");
      for (const line of outcomes.take()) {
        list.prepend(Object.assign(document.createElement("li"), { textContent: line }));
        status(line);
      }
      history.render();
      renderVault(vault, (id) => void act(null, async () => {
        await d.send("liquidity_vault", "cancel_request", [id]);
        return `cancelled request ${shortId(id)}`;
      }));
      $("network").textContent = `chain ${d.manifest.chain_id}${d.network.local ? " (local devnet)" : ""}, block ${block.number}`;
    } catch (err) {
      $("network").textContent = `the node does not answer: ${(err as Error).message.split("\n")[0]}`;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function on(formId: string, action: () => Promise<string | void>): void {
  $(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    void act((event as SubmitEvent).submitter as HTMLElement | null, action);
  });
}

async function start(): Promise<void> {
  try {
    d = await Deployment.load();
  } catch (err) {
    $("network").textContent = `no deployment: ${(err as Error).message}`;
    return;
  }
  decimals = Number(await d.read<number>("collateral", "decimals"));
  history = new History(d, () => decimals);
  outcomes = new OrderOutcomes(d);
  chart = new IndexChart(d);
  select("order-market").replaceChildren(...d.markets.map((m) => new Option(m.symbol, String(m.id))));
  await setUpWallets();
  on("wallet-form", connect);
  on("faucet-form", faucet);
  on("deposit-form", deposit);
  on("withdraw-form", withdraw);
  on("order-form", sendOrder);
  on("lp-deposit-form", lpDeposit);
  on("lp-redeem-form", lpRedeem);
  $("withdraw-max").addEventListener("click", () => void withdrawMax());
  select("order-kind").addEventListener("change", kindChanged);
  for (const id of ["order-market", "order-side", "order-kind", "order-size", "order-trigger", "order-slippage", "order-reduce"]) {
    $(id).addEventListener("input", () => void updateQuote());
  }
  kindChanged();
  document.body.dataset.ready = "true";
  await refresh();
  setInterval(() => void refresh().then(updateQuote), REFRESH_MS);
}

void start();
