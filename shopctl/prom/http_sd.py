"""Consul's catalog as Prometheus HTTP service discovery, with nothing but the stdlib.

    python3 http_sd.py --consul http://127.0.0.1:8500 --listen 127.0.0.1:9091 [--project P]

GET /targets answers the http_sd format Prometheus (2.28+) polls:

    [{"targets": ["10.0.0.5:8001"],
      "labels": {"service": "shipping", "kind": "flask", "project": "shop",
                 "__metrics_path__": "/metrics"}}]

one group per registered instance whose Meta carries `metrics_port` (how shopctl
registers every service; Consul's own entry and foreign services have none), at the
instance's address (ServiceAddress, else the node's) and that port. With --project,
only instances whose Meta.project matches. The catalog is read on every request, so
a service registered or deregistered a moment ago shows in the next refresh; when
Consul cannot be read the answer is 503 and Prometheus keeps the targets it had.
GET /health answers 200 "ok".

This file is copied as it is into containers (any image with python3), so it must
not import anything outside the standard library.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_METRICS_PATH = "/metrics"


def target_groups(catalog: dict[str, list[dict]], project: str | None = None) -> list[dict]:
    """{service name: /v1/catalog/service/<name> entries} -> http_sd target groups."""
    groups = []
    for name in sorted(catalog):
        for entry in sorted(catalog[name], key=lambda e: e.get("ServiceID") or ""):
            meta = entry.get("ServiceMeta") or {}
            port = str(meta.get("metrics_port") or "").strip()
            if not port.isdigit():
                continue
            if project is not None and meta.get("project") != project:
                continue
            address = entry.get("ServiceAddress") or entry.get("Address")
            if not address:
                continue
            host = f"[{address}]" if ":" in address else address  # IPv6 literal
            labels = {
                "service": entry.get("ServiceName") or name,
                "kind": meta.get("kind") or "",
                "project": meta.get("project") or "",
                "__metrics_path__": meta.get("metrics_path") or DEFAULT_METRICS_PATH,
            }
            groups.append({"targets": [f"{host}:{port}"], "labels": labels})
    return groups


class ConsulCatalog:
    """Reads the whole service catalog of one Consul agent over its HTTP API."""

    def __init__(self, base_url: str, timeout: float = 3.0, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"X-Consul-Token": token} if token else {}

    def _get(self, path: str):
        request = urllib.request.Request(self.base_url + path, headers=self.headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.load(response)

    def read(self) -> dict[str, list[dict]]:
        names = self._get("/v1/catalog/services") or {}
        return {
            name: self._get(f"/v1/catalog/service/{urllib.parse.quote(name, safe='')}") or []
            for name in names
        }


def make_handler(catalog: ConsulCatalog, project: str | None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "shopctl-http-sd"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            path = urllib.parse.urlsplit(self.path).path
            if path == "/health":
                self._send(200, b"ok\n", "text/plain")
            elif path in ("/", "/targets"):
                try:
                    body = json.dumps(target_groups(catalog.read(), project)).encode()
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    message = f"consul at {catalog.base_url} unreadable: {exc}\n"
                    self._send(503, message.encode(), "text/plain")
                    return
                self._send(200, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            if args and str(args[1]) != "200":  # only failures are news
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consul", required=True, help="Consul's HTTP API, e.g. http://consul:8500")
    parser.add_argument("--listen", default="127.0.0.1:9091", help="HOST:PORT to serve on")
    parser.add_argument("--project", default=None, help="only instances with this Meta.project")
    parser.add_argument("--token-file", default=None,
                        help="a file holding a Consul ACL token that may read the catalog")
    args = parser.parse_args(argv)
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as handle:
            token = handle.read().strip() or None
    host, _, port = args.listen.rpartition(":")
    consul = args.consul if "://" in args.consul else f"http://{args.consul}"
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), make_handler(
        ConsulCatalog(consul, token=token), args.project))
    sys.stderr.write(f"serving http_sd on {args.listen} from {consul}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
