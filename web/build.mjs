// Builds the trader's page into web/dist: the bundle (esbuild, from web/src/main.ts, with the
// contracts' ABIs taken from the compiler's output .build/__local__.json as the module
// "perpdex:abi"), index.html and style.css. `make web` runs it; `node web/build.mjs`.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(fileURLToPath(import.meta.url));
const repo = dirname(web);
const dist = join(web, "dist");
// the contracts the page talks to, by their manifest names
const CONTRACTS = {
  exchange: "Exchange", order_book: "OrderBook", vault: "Vault", liquidator: "Liquidator",
  liquidity_vault: "LiquidityVault", insurance_fund: "InsuranceFund", collateral: "MockUSDC",
  aggregator: "MockAggregator", oracle: "IndexOracle",
};

function abis() {
  const types = JSON.parse(readFileSync(join(repo, ".build", "__local__.json"), "utf8")).contractTypes;
  const out = {};
  for (const [name, type] of Object.entries(CONTRACTS)) {
    if (!types[type]) throw new Error(`${type} is not in .build/__local__.json: run \`make compile\``);
    out[name] = types[type].abi;
  }
  return out;
}

const abiPlugin = {
  name: "perpdex-abi",
  setup(b) {
    b.onResolve({ filter: /^perpdex:abi$/ }, () => ({ path: "abi", namespace: "perpdex" }));
    b.onLoad({ filter: /.*/, namespace: "perpdex" }, () => ({ contents: JSON.stringify(abis()), loader: "json" }));
  },
};

mkdirSync(dist, { recursive: true });
await build({
  entryPoints: [join(web, "src", "main.ts")],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: "es2022",
  outfile: join(dist, "app.js"),
  plugins: [abiPlugin],
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) copyFileSync(join(web, file), join(dist, file));
console.log(`built ${dist}`);
