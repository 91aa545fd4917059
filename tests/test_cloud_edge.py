"""The cloud edge's nginx configuration: accepted by nginx, and carrying the Kubernetes edge's rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tools import require_tool

from kgstack.cloud_edge import CloudEdgeProps, blocked_pattern, cloud_edge_conf
from kgstack.edge.common import BLOCKED_PATHS, EdgeSettings

PROPS = CloudEdgeProps(
    settings=EdgeSettings(),
    domain="kga.example.com",
    web="127.0.0.1:18080",
    query=["127.0.0.1:18000", "127.0.0.2:18000"],
    indexer="127.0.0.1:18001",
    tls=True,
)


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    nginx = require_tool("nginx", Path("/usr/sbin/nginx"), hint="scripts/setup.sh test (nginx-light)")
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=kga.example.com",
            "-keyout",
            str(tls / "tls.key"),
            "-out",
            str(tls / "tls.crt"),
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    # Only the paths move into the test's folder (nginx checks that the certificate and the temp paths exist).
    conf = cloud_edge_conf(PROPS).replace("/tmp/", f"{tmp_path}/").replace("/etc/kga-edge/tls", str(tls))
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_blocked_paths_match_in_every_spelling() -> None:
    pattern = re.compile(blocked_pattern(), re.I)
    for path in BLOCKED_PATHS:
        assert pattern.match(path) and pattern.match(path.upper()) and pattern.match(path.replace("/", "\\"))
        assert pattern.match(f"{path}/more")
    assert not pattern.match("/api/v1/query")


def test_limits_timeouts_and_headers_come_from_the_settings() -> None:
    s = EdgeSettings(rate_limit_rps=7, max_body_size="2Mi", query_timeout_seconds=200, public_ui=True)
    conf = cloud_edge_conf(PROPS.model_copy(update={"settings": s}))
    assert "rate=7r/s" in conf and "client_max_body_size 2m;" in conf and "proxy_read_timeout 200s;" in conf
    assert 'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;' in conf
    ui = conf.split("location / {", 1)[1]
    assert "auth_request" not in ui.split("}", 1)[0], "publicUi serves the UI without a key"
    assert conf.count("auth_request /_kga_verify;") == 2


@pytest.mark.parametrize("resolver", [None, "169.254.169.253"])
def test_upstreams_re_resolve_only_with_a_resolver(resolver: str | None) -> None:
    conf = cloud_edge_conf(PROPS.model_copy(update={"resolver": resolver}))
    assert ("resolve;" in conf) == (resolver is not None)
