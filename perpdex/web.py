"""`make web`: the trader's page (web/, built into web/dist by `make web`) served locally.

    python -m perpdex.web [--port 8000] [--rpc http://127.0.0.1:8545] [--manifest deployments/31337.json]

A tiny static server: GET / and the bundle from web/dist; GET /manifest.json is the deployment
manifest given (addresses and markets; re-read on every request, so a redeployment shows on
reload); GET /network.json says which node the page reads and whether it is a local devnet
(anvil's unlocked accounts are offered as wallets only then); POST /rpc forwards JSON-RPC to the
node, so the page needs nothing but this origin (no CDN, no cross-origin request). An injected
wallet (window.ethereum) signs on its own network; the page warns when its chain differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "web" / "dist"
DEFAULT_PORT = 8000
DEFAULT_RPC = "http://127.0.0.1:8545"
LOCAL_CHAINS = {31337, 1337}  # anvil, hardhat/ganache: dev accounts are unlocked
MAX_BODY = 1 << 20  # bytes of a JSON-RPC request


class PageHandler(SimpleHTTPRequestHandler):
    """Static files of web/dist, the manifest, the network description and the RPC proxy."""

    def __init__(self, *args, manifest: Path, rpc: str, **kwargs):
        self.manifest, self.rpc = manifest, rpc
        super().__init__(*args, directory=str(DIST), **kwargs)

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the stdlib's name)
        pass  # quiet: the page polls

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _json(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if path == "/manifest.json":
            if not self.manifest.exists():
                message = {"error": f"no deployment manifest at {self.manifest}: start `make devnet` first"}
                return self._json(404, json.dumps(message).encode())
            return self._json(200, self.manifest.read_bytes())
        if path == "/network.json":
            chain_id = None
            if self.manifest.exists():
                chain_id = json.loads(self.manifest.read_text()).get("chain_id")
            return self._json(200, json.dumps({"rpc": "/rpc", "chain_id": chain_id,
                                               "local": chain_id in LOCAL_CHAINS}).encode())
        return super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/rpc":
            return self._json(404, b'{"error": "only /rpc accepts POST"}')
        length = int(self.headers.get("Content-Length", 0))
        if length > MAX_BODY:
            return self._json(413, b'{"error": "request too large"}')
        request = urllib.request.Request(self.rpc, data=self.rfile.read(length),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return self._json(response.status, response.read())
        except urllib.error.HTTPError as err:
            return self._json(err.code, err.read())
        except (urllib.error.URLError, OSError) as err:
            message = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": f"node {self.rpc} unreachable: {err}"}}
            return self._json(502, json.dumps(message).encode())


def serve(port: int, rpc: str, manifest: Path, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free one); call serve_forever() on it."""
    if not (DIST / "index.html").exists():
        raise RuntimeError(f"{DIST}/index.html is missing: build the page with `make web`")
    handler = partial(PageHandler, manifest=manifest.resolve(), rpc=rpc)
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make web", description="Serve the trader's web page locally.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the page's port [default: {DEFAULT_PORT}]")
    parser.add_argument("--rpc", default=DEFAULT_RPC, help=f"the node's JSON-RPC URL [default: {DEFAULT_RPC}]")
    parser.add_argument("--manifest", type=Path, default=REPO / "deployments" / "31337.json",
                        help="the deployment manifest [default: deployments/31337.json, what `make devnet` writes]")
    args = parser.parse_args(argv)
    try:
        server = serve(args.port, args.rpc, args.manifest)
    except (RuntimeError, OSError) as err:
        print(f"web: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"the trader's page: http://127.0.0.1:{server.server_port}/ (node {args.rpc}, manifest {args.manifest}); "
          "Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
