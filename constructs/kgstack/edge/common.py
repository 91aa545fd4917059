"""What every edge controller shares: settings, paths, security headers, and the API-key verifier.

The verifier ``<i>-auth`` is unprivileged nginx that answers an external-auth
sub-request with 200 and ``X-Auth-Key-Id`` for a known key, 401 otherwise, from a
keys file mounted from a Secret. ingress-nginx calls it through ``auth-url``,
Envoy Gateway through a SecurityPolicy ``extAuth``; both send the client's
headers, and Envoy appends the original path to ``/verify`` (hence a prefix
location). Its second port answers 403 to anything: the backend of blocked paths.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from constructs import Construct
from pydantic import Field, model_validator

from .._plus import int_or_string, k8s, quantity
from ..agent_secrets import reload_on
from ..connections import Endpoint, expose
from ..disruption_budget import disruption_budget
from ..footprint import Footprint
from ..model import Disruption, ImageRef, Resources, Spec, Stage
from ..naming import Identity, object_meta
from ..pod_security import RUNTIME_UID, hardened_container, pod_security_context
from ..scheduling import SURGE, rolling_update, rolls_on, zone_and_node_spread

KEYS_FILE = "keys.map"
KEYS_DIR = "/etc/kga-auth/keys"
AUTH_CONFIG_DIR = "/etc/kga-auth"
VERIFY_PATH = "/verify"
AUTH_PORT = 8080
"""The verifier's port (nginx ``auth_request`` target)."""
DENY_PORT = 8081
"""The verifier pod's second server: the 403 backend of blocked paths."""
KEY_ID_HEADER = "X-Auth-Key-Id"
"""Set by the verifier on success and passed to the app: which key was used."""
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")
"""Where a client puts its key: the verifier reads them, the backends never see them."""
CROSS_SITE_HEADERS = ("Origin", "Sec-Fetch-Site")
"""What the verifier reads to refuse cross-site requests (a browser's cached Basic credentials)."""
MAINTENANCE_PATHS = ("/api/v1/fix/chroma-dimension", "/api/v1/workflows/debug")
"""Unauthenticated maintenance endpoints of the app (docs/agent.md): never reachable from outside."""
RAW_CYPHER_PATH = "/api/v1/graph/query"
"""Runs any Cypher the caller sends against Memgraph, where every user has full privileges: blocked at
the edge (docs/edge.md#raw-cypher); the UI never calls it."""
BLOCKED_PATHS = (*MAINTENANCE_PATHS, RAW_CYPHER_PATH)
"""Refused at the edge (403 from the verifier's deny port) in every spelling; the app never sees them."""
INDEXER_PATHS = ("/api/v1/index", "/api/v1/workflows", "/api/v1/commits")
"""Owned by the single indexer replica: indexing runs, in-memory workflow state, and the commit tracking
(``indexed_commits.json`` and ``temp_repo/`` on the indexer's volume)."""
API_PREFIX = "/api"
"""Everything else under it goes to the query tier."""

SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Permissions-Policy",
)
"""Response headers the edge sets on every answer (ingress-nginx also echoes ``X-Request-ID``)."""

# ingress-nginx's own checks of a custom-headers ConfigMap (internal/ingress/annotations/customheaders);
# an entry failing them turns every path of the Ingress into a 503. Envoy reads %...% in a header
# value as a command operator, so '%' is refused too: one check for both controllers.
_HEADER_NAME = re.compile(r"^[a-zA-Z\d\-_]+$")
_HEADER_VALUE = re.compile(r"^[a-zA-Z\d_ :;.,\\/\"'?!(){}\[\]@<>=\-+*#$&`|~^]+$")

CDN_ORIGINS = ("https://cdnjs.cloudflare.com", "https://cdn.jsdelivr.net")
"""What the UI's index.html loads: prism and font-awesome (cdnjs), mermaid and marked (jsDelivr)."""

_ORIGIN = re.compile(r"^https://[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+(:\d{1,5})?$")
_DEV_ORIGIN = re.compile(r"^http://(localhost|127\.0\.0\.1)(:\d{1,5})?$")
ByteSize = Annotated[str, Field(pattern=r"^[1-9]\d*(Ki|Mi)$")]
"""A size in KiB or MiB: ``64Ki``, ``1Mi``."""
DnsName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]

_AUTH_RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
)

AWS_PROXY_PROTOCOL = "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"
"""Asks an AWS load balancer (Classic ELB, NLB; in-tree or the AWS Load Balancer Controller) to send
the client's address in a PROXY protocol header."""

EG_PROXY_LABELS = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy"}
"""Labels Envoy Gateway puts on every data-plane (proxy) pod it runs."""


def nginx_size(size: str) -> str:
    """``1Mi`` -> ``1m``, ``64Ki`` -> ``64k``: the same size in nginx's units (which are binary)."""
    return size[:-2] + ("m" if size.endswith("Mi") else "k")


def byte_count(size: str) -> int:
    return int(size[:-2]) * (1024 * 1024 if size.endswith("Mi") else 1024)


class PlatformGateway(Spec):
    """A Gateway the platform team owns; our HTTPRoutes attach to one of its HTTPS listeners."""

    name: DnsName
    """Gateway name."""
    namespace: DnsName
    """Gateway namespace; its listener must allow routes from ours (``allowedRoutes``)."""
    section_name: DnsName = "https"
    """The HTTPS listener our routes attach to. Plain HTTP is never routed to the app."""
    redirect_section_name: DnsName | None = None
    """An HTTP listener to attach our HTTP -> HTTPS redirect to; ``None``: the platform redirects."""


class GatewaySettings(Spec):
    """The Gateway API edge: which Gateway, which implementation's policy pack, its data plane."""

    implementation: Literal["envoy-gateway"] = "envoy-gateway"
    """Policy pack for what the standard lacks (CORS, auth, limits); docs/edge.md: the seam."""
    gateway_class: DnsName = "envoy-gateway"
    """GatewayClass of the stack-owned Gateway (unused with ``platformGateway``)."""
    platform_gateway: PlatformGateway | None = None
    """Attach to a platform-owned Gateway; ``None``: the stack owns a Gateway with HTTPS and a redirect."""
    data_plane_namespace: DnsName = "envoy-gateway-system"
    """Namespace of the gateway's proxy pods: the only source of edge traffic the NetworkPolicies admit."""
    data_plane_pod_labels: dict[str, str] = Field(default_factory=lambda: dict(EG_PROXY_LABELS))
    """Labels of the proxy pods (Envoy Gateway: ``app.kubernetes.io/name: envoy``, ``component: proxy``)."""
    client_ip: Literal["auto", "peer", "proxy-protocol", "x-forwarded-for"] = "auto"
    """Where the client's address (the key of the per-client rate limits) comes from. ``auto`` (default):
    from ``cloud.provider``'s load balancer (docs/edge.md#client-addresses): ``eks`` -> ``proxy-protocol``
    (its Classic ELB and NLBs hand the proxy their own address; the Gateway asks the balancer for PROXY
    protocol and the listener requires it); ``gke``, ``aks``, ``generic`` -> ``peer`` (network load
    balancers that keep the client's address with ``externalTrafficPolicy: Local``, Envoy Gateway's
    default). ``x-forwarded-for``: behind an L7 balancer that appends it; needs ``trustedProxyHops``."""
    trusted_proxy_hops: Annotated[int, Field(ge=0, le=5)] = 0
    """With ``clientIp: x-forwarded-for``: proxies in front of the gateway that append to
    ``X-Forwarded-For`` (1 behind ALB, GCLB, App Gateway). Otherwise 0: trusting a hop no balancer
    appended would let a client pick its own address and dodge the per-client rate limits."""
    connection_limit: Annotated[int, Field(ge=100)] = 10000
    """Concurrent client connections per proxy (``ClientTrafficPolicy.connection.connectionLimit``)."""
    backend_max_parallel_requests: Annotated[int, Field(ge=1)] = 1024
    """In-flight requests per backend (circuit breaker); beyond it the gateway answers 503 at once."""
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    """Retries of idempotent requests (GET of the UI and the API) on connection failure or 503."""

    @model_validator(mode="after")
    def _hops_only_with_x_forwarded_for(self) -> Self:
        if (self.client_ip == "x-forwarded-for") != (self.trusted_proxy_hops > 0):
            raise ValueError(
                "edge.gateway.trustedProxyHops: set it (1 or more) exactly when clientIp is x-forwarded-for"
            )
        return self


class BackendTls(Spec):
    """TLS from the gateway to a backend Service that speaks it (``BackendTLSPolicy``)."""

    hostname: str
    """Name the backend's certificate must carry (also sent as SNI)."""
    ca_config_map: DnsName
    """ConfigMap (key ``ca.crt``) with the CA that signs the backend's certificate."""


class EdgeSettings(Spec):
    """The public edge of one environment (Gateway API by default; ingress-nginx is retired)."""

    controller: Literal["gateway-api", "ingress-nginx"] = "gateway-api"
    """``gateway-api``; ``ingress-nginx`` only for clusters that still run it (retired March 2026)."""
    gateway: GatewaySettings = GatewaySettings()
    """Gateway, implementation and data plane of the Gateway API edge."""
    side_by_side_ingress_nginx: bool = False
    """Migration only: also render the legacy Ingresses for the same host, certificate and keys, so
    both edges serve while DNS moves (docs/edge.md#migration). Needs ``controller: gateway-api``."""
    backend_tls: dict[Literal["web", "query", "indexer"], BackendTls] = Field(default_factory=dict)
    """Backends that speak TLS (none of today's images do); Gateway API only."""
    issuer: str | None = None
    """cert-manager issuer name; default ``letsencrypt-prod`` in prod, ``letsencrypt-staging`` elsewhere."""
    issuer_kind: Literal["ClusterIssuer", "Issuer"] = "ClusterIssuer"
    """A cluster-wide issuer, or an Issuer in the environment's namespace."""
    cors_allowed_origins: list[str] = Field(default_factory=list)
    """Other origins whose browser code may call ``/api`` (the UI itself is same-origin and needs none).
    ``https://host[:port]`` only; ``*`` and ``http://localhost`` are accepted in dev only."""
    rate_limit_rps: Annotated[int, Field(ge=1, le=1000)] = 5
    """API requests per second per client address (per proxy replica)."""
    rate_limit_burst_multiplier: Annotated[int, Field(ge=1, le=20)] = 5
    """Burst allowed above the rate, as a multiple of it (ingress-nginx ``limit-burst-multiplier`` only)."""
    connection_limit: Annotated[int, Field(ge=1, le=1000)] = 20
    """Concurrent connections per client address (ingress-nginx ``limit-connections`` only)."""
    ui_rate_limit_rps: Annotated[int, Field(ge=1, le=1000)] = 20
    """Requests per second per client address for the UI's static files."""
    query_timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 180
    """Request timeout of ``/api``: an LLM answer takes tens of seconds, long ones over a minute."""
    indexer_timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 600
    """Request timeout of the indexing and workflow endpoints."""
    max_body_size: ByteSize = "1Mi"
    """Largest API request body (queries and index requests are small JSON); larger is 413."""
    hsts_max_age_seconds: Annotated[int, Field(ge=0)] = 31536000
    """``Strict-Transport-Security`` max-age; one year once the host is known to work over HTTPS."""
    hsts_include_subdomains: bool = True
    """Also pin HTTPS for names below the environment's domain."""
    security_headers: bool = True
    """Send CSP, HSTS and friends; only dev may turn this off."""
    public_ui: bool = False
    """Serve the UI's static files without a key. Off by default: the browser then asks for the key
    once (HTTP Basic) at page load and sends it with every API call of the page."""
    keys_secret: str = "kga-edge-keys"
    """Secret with ``keys.map``: the API keys the verifier accepts (docs/edge.md, never in git)."""
    auth_replicas: Annotated[int, Field(ge=1)] = 2
    """Verifier replicas; every API request waits for one of them."""
    auth_resources: Resources = _AUTH_RESOURCES
    """Requests and limits of a verifier pod."""

    @model_validator(mode="after")
    def _side_by_side_needs_the_gateway(self) -> Self:
        if self.side_by_side_ingress_nginx and self.controller != "gateway-api":
            raise ValueError("edge.sideBySideIngressNginx: only with controller gateway-api (the migration target)")
        if self.backend_tls and self.controller != "gateway-api":
            raise ValueError("edge.backendTls: only with controller gateway-api (BackendTLSPolicy)")
        return self


class EdgeProps(Spec):
    identity: Identity
    """Release identity (component ignored: edge objects are ``edge``, the verifier ``auth``)."""
    namespace: str
    """The environment's namespace."""
    stage: Stage
    """dev may relax CORS and headers."""
    domain: str
    """The one public host of the UI and the API."""
    ingress_class: str = "nginx"
    """IngressClass of ingress-nginx (only with ``controller: ingress-nginx``)."""
    settings: EdgeSettings = EdgeSettings()
    """The environment's ``edge:`` block."""
    auth_image: ImageRef
    """nginxinc/nginx-unprivileged (>= 1.19.5 for ``-e stderr``), pinned by digest in prod."""
    web: Endpoint
    """The web UI's port, behind its Service."""
    query: Endpoint
    """The query tier's API port."""
    indexer: Endpoint
    """The single indexer's API port."""
    ingress_nginx_namespace: str = "ingress-nginx"
    """Namespace of ingress-nginx's pods: the edge's traffic comes from there with ``controller:
    ingress-nginx`` or ``sideBySideIngressNginx``."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels for the verifier's pods (workload identity)."""
    load_balancer_annotations: dict[str, str] = Field(default_factory=dict)
    """``cloud.loadBalancerAnnotations``: on the stack-owned Gateway's ``infrastructure``, which the
    implementation copies onto the load balancer Service it creates."""
    cloud_provider: Literal["generic", "eks", "gke", "aks"] = "generic"
    """``cloud.provider``: whose load balancer stands in front of the gateway (``edge.gateway.clientIp``)."""

    @model_validator(mode="after")
    def _edge_rules(self) -> Self:
        s = self.settings
        for origin in s.cors_allowed_origins:
            if origin == "*" or _DEV_ORIGIN.match(origin):
                if self.stage is not Stage.DEV:
                    raise ValueError(
                        f"edge.corsAllowedOrigins: {origin!r} is only allowed in dev; list the exact "
                        "https:// origins that may call the API"
                    )
            elif not _ORIGIN.match(origin):
                raise ValueError(f"edge.corsAllowedOrigins: {origin!r} is not an origin like https://app.example.com")
        if "*" in s.cors_allowed_origins and len(s.cors_allowed_origins) > 1:
            raise ValueError("edge.corsAllowedOrigins: '*' cannot be combined with other origins")
        if not s.security_headers and self.stage is not Stage.DEV:
            raise ValueError("edge.securityHeaders can only be turned off in dev")
        return self

    @property
    def client_ip(self) -> Literal["peer", "proxy-protocol", "x-forwarded-for"]:
        """``edge.gateway.clientIp`` with ``auto`` resolved for this cloud's load balancer."""
        chosen = self.settings.gateway.client_ip
        if chosen != "auto":
            return chosen
        return "proxy-protocol" if self.cloud_provider == "eks" else "peer"

    @property
    def gateway_annotations(self) -> dict[str, str]:
        """What the stack-owned Gateway puts on its load balancer Service: the cloud's, plus PROXY protocol."""
        annotations = dict(self.load_balancer_annotations)
        if self.client_ip == "proxy-protocol" and self.cloud_provider == "eks":
            annotations.setdefault(AWS_PROXY_PROTOCOL, "*")
        return annotations

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """Origins whose browser code may call the edge: the UI's own, then ``corsAllowedOrigins``."""
        return (f"https://{self.domain}", *self.settings.cors_allowed_origins)

    @property
    def issuer(self) -> str:
        if self.settings.issuer:
            return self.settings.issuer
        return "letsencrypt-prod" if self.stage is Stage.PROD else "letsencrypt-staging"


def content_security_policy() -> str:
    """Exactly what the UI loads: its own files, the two CDNs, inline scripts and styles, same-origin API."""
    cdns = " ".join(CDN_ORIGINS)
    return "; ".join(
        [
            "default-src 'self'",
            # index.html's own code is inline; hashes would break with any upstream edit of the page.
            f"script-src 'self' 'unsafe-inline' {cdns}",
            # an inline <style> block and style attributes (also mermaid's generated SVG).
            f"style-src 'self' 'unsafe-inline' {CDN_ORIGINS[0]}",
            f"font-src 'self' {CDN_ORIGINS[0]}",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


API_CSP = "default-src 'none'; frame-ancestors 'none'"
"""JSON responses never load anything."""


def security_headers(settings: EdgeSettings, csp: str) -> dict[str, str]:
    """The response headers of one route, checked against what both controllers accept."""
    hsts = f"max-age={settings.hsts_max_age_seconds}"
    if settings.hsts_include_subdomains:
        hsts += "; includeSubDomains"
    headers = {
        "Strict-Transport-Security": hsts,
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    }
    for name, value in headers.items():
        if not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value) or name not in SECURITY_HEADERS:
            raise ValueError(f"header {name}: {value!r} would be refused or rewritten by the edge controller")
    return headers


def _origin_map(origins: tuple[str, ...]) -> str:
    if "*" in origins:  # dev only (EdgeProps): every origin may call the API
        return '        default allowed;\n        "" none;'
    lines = ["        default foreign;", '        "" none;']
    lines += [f'        "{origin}" allowed;' for origin in origins]
    return "\n".join(lines)


def nginx_preamble(pid: str, worker_connections: int) -> str:
    """The start of an unprivileged nginx's configuration on a read-only root (the verifier's, the cloud edge's):
    one worker, ``pid`` and every temp path under the writable ``/tmp``, errors to stderr, then ``http {``
    opened without the server version."""
    return f"""\
worker_processes 1;
pid {pid};
error_log stderr warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    server_tokens off;
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path       /tmp/proxy_temp;
    fastcgi_temp_path     /tmp/fastcgi_temp;
    uwsgi_temp_path       /tmp/uwsgi_temp;
    scgi_temp_path        /tmp/scgi_temp;
"""


def auth_nginx_conf(origins: tuple[str, ...]) -> str:
    """The verifier: 200 + key id for a known key, 401 otherwise, 403 for a cross-site request from
    outside ``origins``; port 8081 answers 403 to anything."""
    head = nginx_preamble("/tmp/nginx.pid", 1024)
    return f"""\
# API-key verifier for the edge's external auth (see docs/edge.md). Generated by kgstack.edge.
{head}    # Never log credentials: only the key id, the original request and the request id.
    log_format verify '$time_iso8601 $status key=$kga_key_id $kga_method "$uri" '
                      '"$http_x_original_url" origin=$kga_origin:$kga_fetch rid=$http_x_request_id';
    access_log /dev/stdout verify;
    map_hash_bucket_size 256;
    # Envoy sends the request body along, bounded by the route's body limit (bodyToExtAuth); never read here.
    client_max_body_size 0;

    # A credential comes as X-API-Key: <key>, Authorization: Bearer <key>, or (browsers)
    # Authorization: Basic base64(<any user>:<key>) written in keys.map as "basic:<base64>".
    map $http_authorization $kga_from_authorization {{
        default "";
        "~^Bearer[ ]+(?<kga_token>[A-Za-z0-9._~+/=-]+)$" $kga_token;
        "~^Basic[ ]+(?<kga_basic>[A-Za-z0-9+/=]+)$" "basic:$kga_basic";
    }}
    map $http_x_api_key $kga_credential {{
        "" $kga_from_authorization;
        default $http_x_api_key;
    }}
    # keys.map lines: "<credential>" <key id>;  -- several keys are valid at once (rotation).
    map $kga_credential $kga_key_id {{
        default "";
        "" "";
        include {KEYS_DIR}/{KEYS_FILE};
    }}

    # Cross-site requests (docs/edge.md#cross-site-requests): a browser attaches cached Basic
    # credentials to a form POST or an <img> from any site. Refused: an Origin that is neither the
    # UI's nor a CORS-allowed one; and, from a browser that says the request is cross-site but sends
    # no Origin, any unsafe method and anything under /api. Cross-site links to the UI still open it.
    map $http_origin $kga_origin {{
{_origin_map(origins)}
    }}
    map $http_sec_fetch_site $kga_fetch {{
        default own;
        cross-site foreign;
        same-site foreign;
    }}
    # ingress-nginx calls with GET and passes the client's method and URL; Envoy keeps both.
    map $http_x_original_method $kga_method {{
        "" $request_method;
        default $http_x_original_method;
    }}
    map $kga_method $kga_unsafe {{
        default unsafe;
        GET safe;
        HEAD safe;
    }}
    map "$uri $http_x_original_url" $kga_target {{
        default ui;
        "~^{VERIFY_PATH}{API_PREFIX}(/|$| )" api;
        "~^{VERIFY_PATH} https?://[^/]+{API_PREFIX}(/|\\?|$)" api;
    }}
    map "$kga_origin:$kga_fetch:$kga_unsafe:$kga_target" $kga_cross_site {{
        default 0;
        "~^foreign:" 1;
        "~^none:foreign:unsafe:" 1;
        "~^none:foreign:safe:api$" 1;
    }}

    server {{
        listen {AUTH_PORT};
        server_name _;

        # Envoy's ext_authz appends the original path (/verify/api/v1/query); ingress-nginx calls /verify.
        location ^~ {VERIFY_PATH} {{
            if ($kga_cross_site) {{
                return 403;
            }}
            if ($kga_key_id = "") {{
                add_header WWW-Authenticate 'Basic realm="kga", charset="UTF-8"' always;
                return 401;
            }}
            add_header {KEY_ID_HEADER} $kga_key_id always;
            add_header Cache-Control "no-store" always;
            # 200, not 204: Envoy's HTTP ext_authz admits a request only on 200 OK.
            return 200;
        }}
        location = /healthz {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}
        location / {{
            return 404;
        }}
    }}

    # The backend of blocked paths (route <instance>-blocked): refuses everything.
    server {{
        listen {DENY_PORT};
        server_name _;
        access_log off;
        default_type text/plain;
        location / {{
            return 403 "forbidden\\n";
        }}
    }}
}}
"""


class EdgeAuthProps(Spec):
    identity: Identity
    """Release identity with component ``auth``."""
    namespace: str
    image: ImageRef
    keys_secret: str
    origins: tuple[str, ...]
    """Origins whose browser requests are not cross-site (``EdgeProps.allowed_origins``)."""
    replicas: Annotated[int, Field(ge=1)] = 2
    resources: Resources = _AUTH_RESOURCES
    disruption: Disruption = Disruption()
    pod_labels: dict[str, str] = Field(default_factory=dict)


class EdgeAuth(Construct):
    """The API-key verifier: ConfigMap (nginx.conf), Deployment, Service (http, deny) and PDB."""

    def __init__(self, scope: Construct, id: str, *, props: EdgeAuthProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        conf = auth_nginx_conf(props.origins)
        selector = k8s.LabelSelector(match_labels=props.identity.selector)
        k8s.KubeConfigMap(
            self, "Config", metadata=object_meta(props.identity, props.namespace), data={"nginx.conf": conf}
        )
        probe = k8s.HttpGetAction(path="/healthz", port=int_or_string("http"))
        container = hardened_container(
            name="auth",
            image=props.image.reference,
            resources=props.resources,
            ports=[e.container_port() for e in self.endpoints],
            # nginx as PID 1 with our config; the image's entrypoint scripts would try to edit /etc/nginx.
            command=["nginx", "-c", f"{AUTH_CONFIG_DIR}/nginx.conf", "-e", "stderr", "-g", "daemon off;"],
            mounts=[
                k8s.VolumeMount(
                    name="config", mount_path=f"{AUTH_CONFIG_DIR}/nginx.conf", sub_path="nginx.conf", read_only=True
                ),
                k8s.VolumeMount(name="keys", mount_path=KEYS_DIR, read_only=True),
                k8s.VolumeMount(name="cache", mount_path="/var/cache/nginx"),
            ],
            readiness_probe=k8s.Probe(http_get=probe, period_seconds=10, timeout_seconds=2, failure_threshold=3),
            liveness_probe=k8s.Probe(http_get=probe, period_seconds=20, timeout_seconds=2, failure_threshold=3),
            lifecycle=k8s.Lifecycle(pre_stop=k8s.LifecycleHandler(exec=k8s.ExecAction(command=["sleep", "5"]))),
        )
        k8s.KubeDeployment(
            self,
            "Deployment",
            # Stakater Reloader rolls the verifier when keys.map changes (nginx reads it at start).
            metadata=object_meta(props.identity, props.namespace, annotations=reload_on([props.keys_secret])),
            spec=k8s.DeploymentSpec(
                replicas=props.replicas,
                revision_history_limit=5,
                selector=selector,
                strategy=rolling_update(),
                template=k8s.PodTemplateSpec(
                    metadata=k8s.ObjectMeta(
                        labels={**props.identity.labels, **props.pod_labels},
                        annotations=rolls_on(conf),
                    ),
                    spec=k8s.PodSpec(
                        automount_service_account_token=False,
                        enable_service_links=False,
                        termination_grace_period_seconds=30,
                        security_context=pod_security_context(RUNTIME_UID),
                        topology_spread_constraints=zone_and_node_spread(props.identity),
                        containers=[container],
                        volumes=[
                            k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name=self.name)),
                            k8s.Volume(
                                name="keys",
                                secret=k8s.SecretVolumeSource(
                                    secret_name=props.keys_secret,
                                    default_mode=0o440,
                                    items=[k8s.KeyToPath(key=KEYS_FILE, path=KEYS_FILE)],
                                ),
                            ),
                            k8s.Volume(name="cache", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("16Mi"))),
                            k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("16Mi"))),
                        ],
                    ),
                ),
            ),
        )
        expose(self, props.identity, props.namespace, self.endpoints)
        disruption_budget(self, props.identity, props.namespace, props.disruption)

    @property
    def verifier(self) -> Endpoint:
        """The key check (``http``), which the edge calls before the API."""
        return Endpoint.serving(self.props.identity, self.props.namespace, AUTH_PORT, "http", health_path="/healthz")

    @property
    def deny(self) -> Endpoint:
        """The backend of blocked paths: 403 for everyone (``deny``)."""
        return Endpoint.serving(self.props.identity, self.props.namespace, DENY_PORT, "deny")

    @property
    def endpoints(self) -> list[Endpoint]:
        return [self.verifier, self.deny]

    @property
    def url(self) -> str:
        v = self.verifier
        return f"http://{v.service}.{v.namespace}.svc.cluster.local:{v.port}{VERIFY_PATH}"

    def footprint(self) -> Footprint:
        return Footprint(
            resource=f"Deployment/{self.name}",
            max_pods=self.props.replicas,
            surge=SURGE,
            pod_resources=(self.props.resources,),
        )
