"""The legacy edge on ingress-nginx annotations (retired upstream in March 2026; kept selectable).

Everything is expressed with ingress-nginx annotations of risk level Medium or
lower plus ``auth-url`` (High), which ingress-nginx >= 1.12 accepts with its
default ``annotations-risk-level: High``. No snippet annotation is used.
docs/edge.md explains the one controller setting the headers need
(``global-allowed-response-headers``).

Objects (``<i>`` is the release instance): ``Ingress/<i>-web`` (``/`` -> web UI),
``<i>-api`` (``/api`` -> query tier), ``<i>-indexer`` (indexer paths) and
``<i>-blocked`` (maintenance endpoints -> the verifier's 403 port), plus the
``custom-headers`` ConfigMaps ``<i>-headers-web`` and ``<i>-headers-api``.
"""

from __future__ import annotations

from constructs import Construct

from .._plus import k8s
from ..naming import object_meta
from .common import (
    API_CSP,
    BLOCKED_PATHS,
    INDEXER_PATHS,
    KEY_ID_HEADER,
    SECURITY_HEADERS,
    EdgeAuth,
    EdgeProps,
    content_security_policy,
    nginx_size,
    security_headers,
)

NGINX = "nginx.ingress.kubernetes.io"
ALLOWED_RESPONSE_HEADERS = (*SECURITY_HEADERS, "X-Request-ID")
"""What the controller's ``global-allowed-response-headers`` must list (docs/edge.md)."""
RETIRED_NOTICE = (
    "notice: edge.controller ingress-nginx: the controller was retired in March 2026 (no fixes since); "
    "move to controller gateway-api (docs/edge.md#migration)"
)


class IngressNginxEdge(Construct):
    """Ingresses with headers, limits, CORS and ``auth-url``; TLS from the shared Certificate."""

    def __init__(self, scope: Construct, id: str, *, props: EdgeProps, auth: EdgeAuth, tls_secret: str) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        instance = self.instance = props.identity.instance
        edge = props.identity.of("edge")
        self.tls_secret = tls_secret
        self.auth = auth

        headers: dict[str, str] = {}
        if s.security_headers:
            for kind, csp in (("web", content_security_policy()), ("api", API_CSP)):
                k8s.KubeConfigMap(
                    self,
                    f"Headers-{kind}",
                    metadata=object_meta(edge, props.namespace, name=f"{instance}-headers-{kind}"),
                    # $req_id: the client's X-Request-ID, else one the controller generated.
                    data={**security_headers(s, csp), "X-Request-ID": "$req_id"},
                )
                headers[kind] = f"{props.namespace}/{instance}-headers-{kind}"

        common = {
            f"{NGINX}/ssl-redirect": "true",
            # Also when TLS ends at a load balancer in front of the controller.
            f"{NGINX}/force-ssl-redirect": "true",
            f"{NGINX}/limit-connections": str(s.connection_limit),
            f"{NGINX}/limit-burst-multiplier": str(s.rate_limit_burst_multiplier),
            f"{NGINX}/proxy-connect-timeout": "5",
        }
        auth_annotations = {
            f"{NGINX}/auth-url": self.auth.url,
            f"{NGINX}/auth-method": "GET",
            f"{NGINX}/auth-response-headers": KEY_ID_HEADER,
        }
        cors = self._cors()
        api = {
            **common,
            **auth_annotations,
            **cors,
            f"{NGINX}/limit-rps": str(s.rate_limit_rps),
            f"{NGINX}/proxy-body-size": nginx_size(s.max_body_size),
            **({f"{NGINX}/custom-headers": headers["api"]} if "api" in headers else {}),
        }
        self._ingress(
            "web",
            [("/", props.web.service, props.web.port)],
            {
                **common,
                **({} if s.public_ui else auth_annotations),
                f"{NGINX}/limit-rps": str(s.ui_rate_limit_rps),
                f"{NGINX}/proxy-body-size": "64k",
                f"{NGINX}/proxy-read-timeout": "30",
                f"{NGINX}/proxy-send-timeout": "30",
                **({f"{NGINX}/custom-headers": headers["web"]} if "web" in headers else {}),
            },
        )
        self._ingress(
            "api",
            [("/api", props.query.service, props.query.port)],
            {
                **api,
                f"{NGINX}/proxy-read-timeout": str(s.query_timeout_seconds),
                f"{NGINX}/proxy-send-timeout": str(s.query_timeout_seconds),
            },
        )
        self._ingress(
            "indexer",
            [(p, props.indexer.service, props.indexer.port) for p in INDEXER_PATHS],
            {
                **api,
                f"{NGINX}/proxy-read-timeout": str(s.indexer_timeout_seconds),
                f"{NGINX}/proxy-send-timeout": str(s.indexer_timeout_seconds),
            },
        )
        # Longer prefixes win in ingress-nginx, so these beat /api/v1/workflows and /api. No auth:
        # the answer is 403 for everyone, and the request never reaches the app.
        self._ingress(
            "blocked",
            [(p, self.auth.deny.service, self.auth.deny.port) for p in BLOCKED_PATHS],
            {
                **common,
                f"{NGINX}/limit-rps": str(s.rate_limit_rps),
                f"{NGINX}/proxy-body-size": "1k",
                **({f"{NGINX}/custom-headers": headers["api"]} if "api" in headers else {}),
            },
        )

    def _cors(self) -> dict[str, str]:
        origins = self.props.settings.cors_allowed_origins
        if not origins:
            return {}  # the UI is same-origin; browsers then refuse cross-origin reads
        return {
            f"{NGINX}/enable-cors": "true",
            f"{NGINX}/cors-allow-origin": ", ".join(origins),
            f"{NGINX}/cors-allow-methods": "GET, POST, OPTIONS",
            f"{NGINX}/cors-allow-headers": "Content-Type, Authorization, X-API-Key, X-Request-ID",
            f"{NGINX}/cors-expose-headers": "X-Request-ID",
            # Cross-origin callers send their key explicitly; no cookies or cached Basic credentials.
            f"{NGINX}/cors-allow-credentials": "false",
            f"{NGINX}/cors-max-age": "600",
        }

    def _ingress(self, name: str, routes: list[tuple[str, str, int]], annotations: dict[str, str]) -> None:
        p = self.props
        k8s.KubeIngress(
            self,
            f"Ingress-{name}",
            metadata=object_meta(
                p.identity.of("edge"),
                p.namespace,
                name=f"{self.instance}-{name}",
                annotations=dict(sorted(annotations.items())),
            ),
            spec=k8s.IngressSpec(
                ingress_class_name=p.ingress_class,
                tls=[k8s.IngressTls(hosts=[p.domain], secret_name=self.tls_secret)],
                rules=[
                    k8s.IngressRule(
                        host=p.domain,
                        http=k8s.HttpIngressRuleValue(
                            paths=[
                                k8s.HttpIngressPath(
                                    path=path,
                                    path_type="Prefix",
                                    backend=k8s.IngressBackend(
                                        service=k8s.IngressServiceBackend(
                                            name=service, port=k8s.ServiceBackendPort(number=port)
                                        )
                                    ),
                                )
                                for path, service, port in routes
                            ]
                        ),
                    )
                ],
            ),
        )
