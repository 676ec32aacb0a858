// The contracts' ABIs, injected at build time from .build/__local__.json (web/build.mjs).
declare module "perpdex:abi" {
  const abis: Record<"exchange" | "order_book" | "vault" | "liquidator" | "liquidity_vault" | "insurance_fund"
    | "collateral" | "aggregator" | "oracle", readonly unknown[]>;
  export default abis;
}
