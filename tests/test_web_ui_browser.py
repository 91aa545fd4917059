"""The web UI in a real browser: headless Chromium, our nginx config, the edge's headers from dist/.

What runs, all on loopback:

* nginx with ``docker/web/nginx.conf`` (the image's config) serving a stand-in
  ``index.html`` and the ``config.js`` of dist/'s ConfigMap. The app's page is not
  ours to copy, so the stand-in loads what it loads (docs/agent.md): prism
  and font-awesome from cdnjs, mermaid and marked from jsDelivr, an inline
  ``<style>``, style attributes, inline scripts that default ``API_BASE_URL``, and
  a ``fetch`` of the API;
* a stand-in for the edge: TLS for the environment's host, the response headers
  of dist/'s HTTPRoutes (``ResponseHeaderModifier``, web UI and API), ``/api`` to a
  JSON stub, everything else to nginx;
* Debian's ``chromium`` with a fresh profile, driven over the DevTools protocol;
  the host resolves to the stand-in edge and every other name to nothing, so the
  CDN fetches fail (a failed fetch is not a violation; a CSP refusal is reported
  before any fetch).

The page must produce zero CSP violations and see ``window.API_BASE_URL`` as the
same-origin ``/api/v1``; a page that loads a script from another origin must
produce one (the check can fail).
"""

from __future__ import annotations

import getpass
import http.server
import json
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from certs import self_signed
from conftest import ENV_DIRS, ROOT
from tools import free_port, require_tool
from websockets.sync.client import ClientConnection, connect

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
STAND_IN = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Knowledge Graph Agent (stand-in)</title>
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/prism/1.29.0/themes/prism-tomorrow.min.css">
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.4.0/css/all.min.css">
<script src="https://cdnjs.cloudflare.com/ajax/libs/prism/1.29.0/prism.min.js"></script>
<script src="https://cdn.jsdelivr.net/npm/mermaid@10.6.1/dist/mermaid.min.js"></script>
<script src="https://cdn.jsdelivr.net/npm/marked@9.1.2/marked.min.js"></script>
<style>.chat { font-family: sans-serif; } .fa { margin: 2px; }</style>
</head><body>
<div class="chat" style="padding: 4px"><i class="fa fa-robot"></i>
<img alt="" src="data:image/gif;base64,R0lGODlhAQABAAAAACw="></div>
<script>
  window.API_BASE_URL = window.API_BASE_URL || 'http://localhost:8000/api/v1';
  fetch(window.API_BASE_URL + '/health').then(r => r.json()).then(j => { window.__api = j.status; })
    .catch(e => { window.__api = 'failed: ' + e; });
</script>
</body></html>
"""
FOREIGN = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<script src="https://evil.example.com/steal.js"></script><script>window.__api = 'loaded';</script>
</body></html>
"""
WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""


def _load(env: str) -> dict[str, dict[str, Any]]:
    out = {}
    for p in (ROOT / "dist" / env).glob("*.yaml"):
        obj = yaml.safe_load(p.read_text())
        if obj and "metadata" in obj:
            out[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return out


def _headers(route: dict[str, Any]) -> dict[str, str]:
    (rule,) = route["spec"]["rules"]
    return {
        h["name"]: h["value"]
        for f in rule.get("filters", [])
        if f["type"] == "ResponseHeaderModifier"
        for h in f["responseHeaderModifier"].get("set", [])
    }


def _certificate(host: str, folder: Path) -> tuple[Path, Path]:
    cert, key = self_signed(host)
    cert_path, key_path = folder / "edge.crt", folder / "edge.key"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


def _wait(check: Any, what: str, attempts: int = 200) -> Any:
    for _ in range(attempts):
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{what} did not come up")


@pytest.fixture(params=ENV_DIRS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """nginx with the image's config behind a stand-in edge; yields (host, edge port)."""
    env = str(request.param)
    objects = _load(env)
    nginx = require_tool("nginx", Path("/usr/sbin/nginx"), hint="apt-get install nginx-light")
    web = objects[f"HTTPRoute/kga-{env}-web"]
    (host,) = web["spec"]["hostnames"]
    web_headers, api_headers = _headers(web), _headers(objects[f"HTTPRoute/kga-{env}-api"])
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text(STAND_IN)
    (html / "foreign.html").write_text(FOREIGN)
    (html / "config.js").write_text(objects[f"ConfigMap/kga-{env}-web"]["data"]["config.js"])
    nginx_port = free_port()
    conf = (
        (ROOT / "docker" / "web" / "nginx.conf")
        .read_text()
        .replace("/tmp/", f"{tmp_path}/")
        .replace("listen 8080;", f"listen 127.0.0.1:{nginx_port};")
        .replace("/usr/share/nginx/html", str(html))
        .replace("/dev/stdout", f"{tmp_path}/access.log")
        .replace("worker_processes auto;", "worker_processes 1;")
    )
    (tmp_path / "nginx.conf").write_text(conf)
    # Workers as the test's user (under root they would default to nobody, who cannot read tmp_path).
    user = f"user {getpass.getuser()};"
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-e", "stderr", "-g", f"daemon off; {user}"])

    class Edge(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/api/"):
                status, body, headers = 200, b'{"status": "healthy"}', {"Content-Type": "application/json"}
                added = api_headers
            else:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(f"http://127.0.0.1:{nginx_port}{self.path}", timeout=5) as upstream:
                    status, body = upstream.status, upstream.read()
                    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in {"connection", "server"}}
                added = web_headers
            self.send_response(status)
            for k, v in {**headers, **added}.items():  # ResponseHeaderModifier "set" overwrites
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    edge_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", edge_port), Edge)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_certificate(host, tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        _wait(lambda: opener.open(f"http://127.0.0.1:{nginx_port}/healthz", timeout=1).status == 200, "nginx")
        yield host, edge_port
    finally:
        server.shutdown()
        proc.terminate()
        proc.wait(timeout=10)


class Browser:
    """One page of a headless Chromium over the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.console: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return dict(message.get("result", {}))
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        if message.get("method") == "Log.entryAdded":
            self.console.append(message["params"]["entry"]["text"])
        elif message.get("method") == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", "")) for a in message["params"]["args"]))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        _wait(lambda: self.evaluate("window.__api !== undefined && document.readyState === 'complete'"), url)


@pytest.fixture
def browser(served: tuple[str, int], tmp_path: Path) -> Iterator[tuple[Browser, str]]:
    host, edge_port = served
    chromium = require_tool("chromium", Path("/usr/bin/chromium"), hint="apt-get install chromium")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            # Our host is the stand-in edge; every other name (the CDNs) resolves to nothing.
            f"--host-resolver-rules=MAP {host}:443 127.0.0.1:{edge_port}, MAP * ~NOTFOUND",
            # The stand-in edge's certificate is self-signed.
            "--ignore-certificate-errors",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        _wait(lambda: port_file.exists() and port_file.read_text().split("\n")[0], "chromium DevTools")
        port = port_file.read_text().split("\n")[0]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        pages = _wait(
            lambda: [
                t
                for t in json.load(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=2))
                if t["type"] == "page"
            ],
            "a chromium page",
        )
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            page = Browser(ws)
            for domain in ("Page", "Runtime", "Log"):
                page.call(f"{domain}.enable")
            page.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH)
            yield page, host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_ui_loads_without_csp_violations_and_calls_the_same_origin_api(browser: tuple[Browser, str]) -> None:
    page, host = browser
    page.open(f"https://{host}/")
    assert page.evaluate("window.__csp") == []
    assert not [line for line in page.console if "Content Security Policy" in line], page.console
    assert page.evaluate("window.API_BASE_URL") == f"https://{host}/api/v1"
    assert page.evaluate("location.origin + '/api/v1'") == f"https://{host}/api/v1"
    assert page.evaluate("window.__api") == "healthy"  # connect-src 'self' lets the page reach the API
    # The edge's headers reached the browser (the CSP it enforced is dist/'s).
    assert page.evaluate("document.querySelector('script[src=\"/config.js\"]') !== null")


def test_a_script_from_another_origin_is_a_violation(browser: tuple[Browser, str]) -> None:
    page, host = browser
    page.open(f"https://{host}/foreign.html")
    violations = page.evaluate("window.__csp")
    assert violations == ["script-src-elem https://evil.example.com/steal.js"], violations
