// An EIP-1193 provider installed as window.ethereum before the page's own scripts run, as a
// browser wallet (MetaMask, Rabby) injects one. It holds one account, answers the account and
// chain requests itself, and forwards everything else to its own node over JSON-RPC (not the
// page's /rpc): eth_sendTransaction reaches anvil, which signs for the account (unlocked or
// impersonated there), as a wallet would sign with its key. Every request the page makes is
// recorded in window.ethereum.requests (method, params, and the hash or error it answered), so
// a test can tell which transactions went through the wallet. selectAccount and selectChain
// play the wallet's user switching account or chain (the EIP-1193 events follow).
//
// The test fills in CONFIG: {"rpc": node URL, "account": address, "chainId": "0x7a69"}.
(() => {
  const config = /*CONFIG*/ null;
  const requests = [];
  const listeners = new Map();
  let nextId = 0;

  function providerError(code, message) {
    return Object.assign(new Error(message), { code });
  }

  async function forward(method, params) {
    const response = await fetch(config.rpc, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++nextId, method, params: params ?? [] }),
    });
    const body = await response.json();
    if (body.error) throw Object.assign(providerError(body.error.code, body.error.message), { data: body.error.data });
    return body.result;
  }

  async function answer(method, params) {
    switch (method) {
      case "eth_requestAccounts":
      case "eth_accounts":
        return [config.account];
      case "eth_chainId":
        return config.chainId;
      case "wallet_switchEthereumChain":
        if (params?.[0]?.chainId?.toLowerCase() === config.chainId) return null;
        throw providerError(4902, `this wallet has no chain ${params?.[0]?.chainId}`);
      case "eth_sendTransaction":
        if (params?.[0]?.from?.toLowerCase() !== config.account.toLowerCase()) {
          throw providerError(4100, `this wallet does not hold ${params?.[0]?.from}`);
        }
        return forward(method, params);
      case "eth_sign":
      case "personal_sign":
      case "eth_signTypedData_v4":
        throw providerError(4200, `${method} is not supported by this wallet`);
      default:
        return forward(method, params);
    }
  }

  window.ethereum = {
    isPerpdexTestWallet: true,
    requests,
    async request({ method, params }) {
      const entry = { method, params: params ?? [] };
      requests.push(entry);
      try {
        entry.result = await answer(method, params);
        return entry.result;
      } catch (err) {
        entry.error = err.message;
        throw err;
      }
    },
    on(event, listener) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(listener);
      return this;
    },
    removeListener(event, listener) {
      listeners.get(event)?.delete(listener);
      return this;
    },
    // what the wallet's user does in the wallet's own window: pick another account or chain
    selectAccount(account) {
      config.account = account;
      emit("accountsChanged", [account]);
    },
    selectChain(chainId) {
      config.chainId = chainId;
      emit("chainChanged", chainId);
    },
  };

  function emit(event, payload) {
    for (const listener of listeners.get(event) ?? []) listener(payload);
  }
  window.dispatchEvent(new Event("ethereum#initialized"));
})();
