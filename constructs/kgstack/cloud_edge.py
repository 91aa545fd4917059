"""The edge of the cloud targets: one unprivileged nginx in front of the web UI and both agent tiers.

Neither ECS nor ACI has an edge that checks API keys, so the cloud targets run this
proxy beside the API-key verifier of the Kubernetes edge (``kgstack.edge.common``: the
same nginx configuration, keys file and image) and hand it the Kubernetes edge's rules,
read from the same declarations: the blocked paths (403 in every spelling), the indexer's
paths, the per-client rate limits, the body limit, the timeouts and the security headers
with their two Content-Security-Policies. TLS ends at the cloud's load balancer on ECS
(ALB with an ACM certificate) and in this proxy on ACI (``tls``).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from .edge.common import (
    API_CSP,
    API_PREFIX,
    AUTH_PORT,
    BLOCKED_PATHS,
    CREDENTIAL_HEADERS,
    INDEXER_PATHS,
    KEY_ID_HEADER,
    VERIFY_PATH,
    EdgeSettings,
    content_security_policy,
    nginx_preamble,
    nginx_size,
    security_headers,
)
from .edge.envoy_gateway import UI_BODY_LIMIT
from .model import Spec

EDGE_PORT = 8443
"""The cloud edge's listener: TLS on ACI (the container group's public port), plain HTTP from the ALB on ECS."""
EDGE_HEALTH_PATH = "/edge-healthz"
"""Answered by the proxy itself: the load balancer's health check of the edge."""
CONFIG_DIR = "/etc/kga-edge"
CONFIG_FILE = f"{CONFIG_DIR}/nginx.conf"
TLS_DIR = f"{CONFIG_DIR}/tls"


class CloudEdgeProps(Spec):
    settings: EdgeSettings
    """The environment's ``edge:`` block."""
    domain: str
    """The public host."""
    web: str
    """``host:port`` of the web UI."""
    query: Annotated[list[str], Field(min_length=1)]
    """``host:port`` of each query replica (one name with DNS service discovery)."""
    indexer: str
    """``host:port`` of the indexer."""
    resolver: str | None = None
    """DNS server re-resolving the upstream names every 10 s (ECS: the VPC resolver); ``None``: addresses."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """CIDRs of the load balancer, whose ``X-Forwarded-For`` names the client (the rate limits' key)."""
    tls: bool = False
    """Terminate TLS here with ``tls/tls.crt`` and ``tls/tls.key`` under :data:`CONFIG_DIR`."""


def _headers(settings: EdgeSettings, csp: str) -> str:
    if not settings.security_headers:
        return ""
    return "".join(f'            add_header {k} "{v}" always;\n' for k, v in security_headers(settings, csp).items())


def blocked_pattern() -> str:
    """The Kubernetes edge's blocked paths in every spelling (``blocked_regex``'s rules) as an nginx regex:
    ``\\x5c`` for the backslash, which nginx's configuration parser would otherwise unescape."""
    sep = r"[/\x5c]"
    spelled = (sep.join(re.escape(segment) for segment in path.split("/")) for path in BLOCKED_PATHS)
    return f"^({'|'.join(spelled)})({sep}.*)?$"


def _upstream(name: str, servers: list[str], resolve: bool) -> str:
    # nginx >= 1.27.3 re-resolves a server name with `resolve` (ECS tasks come and go behind one name).
    zone = f"        zone {name} 64k;\n" if resolve else ""
    lines = "".join(f"        server {s}{' resolve' if resolve else ''};\n" for s in servers)
    return f"    upstream {name} {{\n{zone}{lines}    }}\n"


def cloud_edge_conf(p: CloudEdgeProps) -> str:
    """nginx.conf of the cloud edge proxy."""
    s = p.settings
    burst = s.rate_limit_rps * s.rate_limit_burst_multiplier
    ui_burst = s.ui_rate_limit_rps * s.rate_limit_burst_multiplier
    indexer = "|".join(re.escape(path.removeprefix(f"{API_PREFIX}/v1/")) for path in INDEXER_PATHS)
    real_ip = "".join(f"    set_real_ip_from {cidr};\n" for cidr in p.trusted_proxies)
    if real_ip:
        real_ip += "    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;\n"
    resolve = p.resolver is not None
    resolver = f"    resolver {p.resolver} valid=10s ipv6=off;\n" if resolve else ""
    upstreams = (
        _upstream("kga_query", p.query, resolve)
        + _upstream("kga_indexer", [p.indexer], resolve)
        + _upstream("kga_web", [p.web], resolve)
    )
    listen = f"{EDGE_PORT} ssl" if p.tls else str(EDGE_PORT)
    tls = (
        f"        ssl_certificate {TLS_DIR}/tls.crt;\n        ssl_certificate_key {TLS_DIR}/tls.key;\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        if p.tls
        else ""
    )
    # Behind the ALB the client's scheme is its X-Forwarded-Proto; the ALB only forwards HTTPS.
    scheme = "https" if p.tls else "$http_x_forwarded_proto"
    hide = "".join(f'    proxy_set_header {h} "";\n' for h in CREDENTIAL_HEADERS)
    verify = (
        "            auth_request /_kga_verify;\n            auth_request_set $kga_key $upstream_http_x_auth_key_id;\n"
    )
    ui_auth = "" if s.public_ui else verify
    api_headers, ui_headers = _headers(s, API_CSP), _headers(s, content_security_policy())
    head = nginx_preamble("/tmp/edge.pid", 4096)
    return f"""\
# The cloud edge (kgstack.cloud_edge); generated from the Kubernetes edge's declarations.
{head}{resolver}{real_ip}    # Never log credentials: the key id the verifier names, the path and the request id.
    log_format edge '$time_iso8601 $remote_addr $status "$request_method $uri" key=$kga_key '
                    'rt=$request_time rid=$request_id';
    access_log /dev/stdout edge;
    limit_req_zone $binary_remote_addr zone=api:10m rate={s.rate_limit_rps}r/s;
    limit_req_zone $binary_remote_addr zone=ui:10m rate={s.ui_rate_limit_rps}r/s;
    limit_conn_zone $binary_remote_addr zone=conn:10m;
    limit_req_status 429;
    limit_conn_status 429;
    limit_conn conn {s.connection_limit};
    client_max_body_size {nginx_size(s.max_body_size)};
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Request-ID $request_id;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto {scheme};
    proxy_set_header {KEY_ID_HEADER} $kga_key;
    # The backends never see a client's key.
{hide}
{upstreams}
    server {{
        listen {listen};
        server_name {p.domain} _;
        set $kga_key "";
{tls}
        location = /_kga_verify {{
            internal;
            proxy_pass http://127.0.0.1:{AUTH_PORT}{VERIFY_PATH};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL {scheme}://$host$request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
        location = {EDGE_HEALTH_PATH} {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}
        # The Kubernetes edge's blocked paths, in every spelling: never reach the app.
        location ~* {blocked_pattern()} {{
            return 403;
        }}
        location ~ ^{API_PREFIX}/v1/({indexer})(/|$) {{
{verify}            limit_req zone=api burst={burst} nodelay;
            proxy_read_timeout {s.indexer_timeout_seconds}s;
            proxy_pass http://kga_indexer;
{api_headers}        }}
        location {API_PREFIX}/ {{
{verify}            limit_req zone=api burst={burst} nodelay;
            proxy_read_timeout {s.query_timeout_seconds}s;
            proxy_next_upstream error timeout http_503;
            proxy_pass http://kga_query;
{api_headers}        }}
        location / {{
{ui_auth}            limit_req zone=ui burst={ui_burst} nodelay;
            client_max_body_size {nginx_size(UI_BODY_LIMIT)};
            proxy_pass http://kga_web;
{ui_headers}        }}
    }}
}}
"""
