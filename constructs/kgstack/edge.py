"""The public edge: TLS, routing, security headers, limits, CORS and API credentials (ingress-nginx).

Everything is expressed with ingress-nginx annotations of risk level Medium or
lower plus ``auth-url`` (High), which ingress-nginx >= 1.12 accepts with its
default ``annotations-risk-level: High``. No snippet annotation (Critical, off by
default since CVE-2023-5043/5044 and the 2025 "IngressNightmare" fixes) is used.
docs/edge.md explains each choice and the one controller setting the headers need
(``global-allowed-response-headers``).

Objects (``<i>`` is the release instance, ``kga-<env>``):

* ``Certificate/<i>-tls`` (cert-manager) -> ``Secret/<i>-tls``, used by every Ingress;
* ``Ingress/<i>-web`` (``/`` -> web UI), ``Ingress/<i>-api`` (``/api`` -> query tier),
  ``Ingress/<i>-indexer`` (``/api/v1/index``, ``/api/v1/workflows`` -> indexer) and
  ``Ingress/<i>-blocked`` (maintenance endpoints -> a backend that answers 403);
* ``ConfigMap/<i>-headers-web`` and ``<i>-headers-api``: response headers (``custom-headers``);
* the API-key verifier ``<i>-auth`` (:class:`EdgeAuth`): unprivileged nginx that answers
  ``auth-url`` sub-requests with 204 or 401 from a keys file mounted from a Secret.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from cloudcoil.apimachinery import ObjectMeta as CoilObjectMeta
from cloudcoil.models.cert_manager import v1 as cert_manager
from constructs import Construct
from pydantic import Field, model_validator

from ._plus import int_or_string, k8s, quantity
from .agent_secrets import reload_on
from .connections import Endpoint
from .custom_resource import custom_resource
from .disruption_budget import disruption_budget
from .footprint import Footprint
from .model import Disruption, ImageRef, Resources, Spec, Stage
from .naming import Identity, object_meta
from .pod_security import RUNTIME_UID, hardened_container, pod_security_context
from .scheduling import SURGE, rolling_update, rolls_on, zone_and_node_spread

NGINX = "nginx.ingress.kubernetes.io"
KEYS_FILE = "keys.map"
KEYS_DIR = "/etc/kga-auth/keys"
AUTH_CONFIG_DIR = "/etc/kga-auth"
VERIFY_PATH = "/verify"
AUTH_PORT = 8080
"""The verifier's port (nginx ``auth_request`` target)."""
DENY_PORT = 8081
"""The verifier pod's second server: the 403 backend of blocked paths."""
KEY_ID_HEADER = "X-Auth-Key-Id"
"""Set by the verifier on success and passed to the app (``auth-response-headers``): which key was used."""
BLOCKED_PATHS = ("/api/v1/fix/chroma-dimension", "/api/v1/workflows/debug")
"""Unauthenticated maintenance endpoints of the app (shared/agent-facts.md): never reachable from outside."""
INDEXER_PATHS = ("/api/v1/index", "/api/v1/workflows")
"""Owned by the single indexer replica: indexing runs and in-memory workflow state live there."""

SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Permissions-Policy",
    "X-Request-ID",
)
"""What the controller's ``global-allowed-response-headers`` must list (docs/edge.md)."""

# ingress-nginx's own checks of a custom-headers ConfigMap (internal/ingress/annotations/customheaders);
# an entry failing them turns every path of the Ingress into a 503, so they are checked here first.
_HEADER_NAME = re.compile(r"^[a-zA-Z\d\-_]+$")
_HEADER_VALUE = re.compile(r"^[a-zA-Z\d_ :;.,\\/\"'?!(){}\[\]@<>=\-+*#$&`|~^%]+$")

CDN_ORIGINS = ("https://cdnjs.cloudflare.com", "https://cdn.jsdelivr.net")
"""What the UI's index.html loads: prism and font-awesome (cdnjs), mermaid and marked (jsDelivr)."""

_ORIGIN = re.compile(r"^https://[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+(:\d{1,5})?$")
_DEV_ORIGIN = re.compile(r"^http://(localhost|127\.0\.0\.1)(:\d{1,5})?$")
NginxSize = Annotated[str, Field(pattern=r"^[1-9]\d*[km]?$")]
"""An nginx size: ``512k``, ``1m``."""

_AUTH_RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
)


class EdgeSettings(Spec):
    """The public edge of one environment (ingress-nginx + cert-manager)."""

    issuer: str | None = None
    """cert-manager issuer name; default ``letsencrypt-prod`` in prod, ``letsencrypt-staging`` elsewhere."""
    issuer_kind: Literal["ClusterIssuer", "Issuer"] = "ClusterIssuer"
    """A cluster-wide issuer, or an Issuer in the environment's namespace."""
    cors_allowed_origins: list[str] = Field(default_factory=list)
    """Other origins whose browser code may call ``/api`` (the UI itself is same-origin and needs none).
    ``https://host[:port]`` only; ``*`` and ``http://localhost`` are accepted in dev only."""
    rate_limit_rps: Annotated[int, Field(ge=1, le=1000)] = 5
    """API requests per second per client address (per controller replica), ``limit-rps``."""
    rate_limit_burst_multiplier: Annotated[int, Field(ge=1, le=20)] = 5
    """Burst allowed above the rate, as a multiple of it (``limit-burst-multiplier``)."""
    connection_limit: Annotated[int, Field(ge=1, le=1000)] = 20
    """Concurrent connections per client address (``limit-connections``)."""
    ui_rate_limit_rps: Annotated[int, Field(ge=1, le=1000)] = 20
    """Requests per second per client address for the UI's static files."""
    query_timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 180
    """Read/send timeout of ``/api``: an LLM answer takes tens of seconds, long ones over a minute."""
    indexer_timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 600
    """Read/send timeout of the indexing and workflow endpoints."""
    max_body_size: NginxSize = "1m"
    """Largest API request body (queries and index requests are small JSON)."""
    hsts_max_age_seconds: Annotated[int, Field(ge=0)] = 31536000
    """``Strict-Transport-Security`` max-age; one year once the host is known to work over HTTPS."""
    hsts_include_subdomains: bool = True
    """Also pin HTTPS for names below the environment's domain."""
    security_headers: bool = True
    """Send CSP, HSTS and friends via ``custom-headers``; only dev may turn this off (e.g. a controller
    without ``global-allowed-response-headers``)."""
    public_ui: bool = False
    """Serve the UI's static files without a key. Off by default: the browser then asks for the key
    once (HTTP Basic) at page load and sends it with every API call of the page."""
    keys_secret: str = "kga-edge-keys"
    """Secret with ``keys.map``: the API keys the verifier accepts (docs/edge.md, never in git)."""
    auth_replicas: Annotated[int, Field(ge=1)] = 2
    """Verifier replicas; every API request waits for one of them."""
    auth_resources: Resources = _AUTH_RESOURCES
    """Requests and limits of a verifier pod."""


class EdgeProps(Spec):
    identity: Identity
    """Release identity (component ignored: edge objects are ``edge``, the verifier ``auth``)."""
    namespace: str
    stage: Stage
    domain: str
    """The one public host of the UI and the API."""
    ingress_class: str
    """IngressClass of ingress-nginx (from the environment's cloud profile)."""
    settings: EdgeSettings = EdgeSettings()
    auth_image: ImageRef
    """nginxinc/nginx-unprivileged (>= 1.19.5 for ``-e stderr``), pinned by digest in prod."""
    web_service: str
    query_service: str
    indexer_service: str
    web_port: int = 8080
    agent_port: int = 8000
    pod_labels: dict[str, str] = Field(default_factory=dict)

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
        # $req_id is the client's X-Request-ID when sent, else one the controller generated;
        # the controller also passes it upstream (generate-request-id, on by default).
        "X-Request-ID": "$req_id",
    }
    for name, value in headers.items():
        if not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value) or name not in SECURITY_HEADERS:
            raise ValueError(f"header {name}: {value!r} would be refused by ingress-nginx (custom-headers)")
    return headers


def auth_nginx_conf() -> str:
    """The verifier: 204 + key id for a known key, 401 otherwise; port 8081 answers 403 to anything."""
    return f"""\
# API-key verifier for ingress-nginx auth-url (see docs/edge.md). Generated by kgstack.edge.
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    server_tokens off;
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path       /tmp/proxy_temp;
    fastcgi_temp_path     /tmp/fastcgi_temp;
    uwsgi_temp_path       /tmp/uwsgi_temp;
    scgi_temp_path        /tmp/scgi_temp;
    # Never log credentials: only the key id, the original request and the request id.
    log_format verify '$time_iso8601 $status key=$kga_key_id $http_x_original_method '
                      '"$http_x_original_url" rid=$http_x_request_id';
    access_log /dev/stdout verify;
    map_hash_bucket_size 256;

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

    server {{
        listen {AUTH_PORT};
        server_name _;

        location = {VERIFY_PATH} {{
            if ($kga_key_id = "") {{
                add_header WWW-Authenticate 'Basic realm="kga", charset="UTF-8"' always;
                return 401;
            }}
            add_header {KEY_ID_HEADER} $kga_key_id always;
            add_header Cache-Control "no-store" always;
            return 204;
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

    # The backend of blocked paths (Ingress <instance>-blocked): refuses everything.
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
        conf = auth_nginx_conf()
        selector = k8s.LabelSelector(match_labels=props.identity.selector)
        k8s.KubeConfigMap(
            self, "Config", metadata=object_meta(props.identity, props.namespace), data={"nginx.conf": conf}
        )
        probe = k8s.HttpGetAction(path="/healthz", port=int_or_string("http"))
        container = hardened_container(
            name="auth",
            image=props.image.reference,
            resources=props.resources,
            ports={"http": AUTH_PORT, "deny": DENY_PORT},
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
        k8s.KubeService(
            self,
            "Service",
            metadata=object_meta(props.identity, props.namespace),
            spec=k8s.ServiceSpec(
                type="ClusterIP",
                selector=props.identity.selector,
                ports=[
                    k8s.ServicePort(name="http", port=AUTH_PORT, target_port=int_or_string("http"), protocol="TCP"),
                    k8s.ServicePort(name="deny", port=DENY_PORT, target_port=int_or_string("deny"), protocol="TCP"),
                ],
            ),
        )
        disruption_budget(self, props.identity, props.namespace, props.disruption)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The verifier (``http``) and the deny backend of blocked paths (``deny``)."""
        p = self.props
        return [
            Endpoint(
                component=p.identity.component,
                service=self.name,
                namespace=p.namespace,
                port=port,
                port_name=name,
                health_path="/healthz" if name == "http" else None,
            )
            for name, port in (("http", AUTH_PORT), ("deny", DENY_PORT))
        ]

    @property
    def url(self) -> str:
        verifier = self.endpoints[0]
        return f"http://{verifier.service}.{verifier.namespace}.svc.cluster.local:{verifier.port}{VERIFY_PATH}"

    def footprint(self) -> Footprint:
        return Footprint(
            resource=f"Deployment/{self.name}",
            max_pods=self.props.replicas,
            surge=SURGE,
            pod_resources=(self.props.resources,),
        )


class Edge(Construct):
    """Certificate, Ingresses with headers/limits/CORS/auth, and the API-key verifier."""

    @property
    def endpoints(self) -> list[Endpoint]:
        """What the controller calls besides the app's backends: the verifier's ports."""
        return self.auth.endpoints

    def __init__(self, scope: Construct, id: str, *, props: EdgeProps) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        instance = self.instance = props.identity.instance
        edge = props.identity.of("edge")
        self.tls_secret = f"{instance}-tls"

        certificate = cert_manager.Certificate(
            metadata=CoilObjectMeta(name=self.tls_secret, namespace=props.namespace, labels=edge.labels),
            spec=cert_manager.CertificateSpec(
                secret_name=self.tls_secret,
                dns_names=[props.domain],
                issuer_ref=cert_manager.IssuerRef(name=props.issuer, kind=s.issuer_kind, group="cert-manager.io"),
                private_key=cert_manager.PrivateKey(algorithm="ECDSA", size=256, rotation_policy="Always"),
                secret_template=cert_manager.SecretTemplate(labels=edge.labels),
            ),
        )
        self.certificate = custom_resource(self, "Certificate", certificate)

        self.auth = EdgeAuth(
            self,
            "Auth",
            props=EdgeAuthProps(
                identity=props.identity.of("auth"),
                namespace=props.namespace,
                image=props.auth_image,
                keys_secret=s.keys_secret,
                replicas=s.auth_replicas,
                resources=s.auth_resources,
                pod_labels=props.pod_labels,
            ),
        )

        headers: dict[str, str] = {}
        if s.security_headers:
            for kind, csp in (("web", content_security_policy()), ("api", API_CSP)):
                k8s.KubeConfigMap(
                    self,
                    f"Headers-{kind}",
                    metadata=object_meta(edge, props.namespace, name=f"{instance}-headers-{kind}"),
                    data=security_headers(s, csp),
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
        auth = {
            f"{NGINX}/auth-url": self.auth.url,
            f"{NGINX}/auth-method": "GET",
            f"{NGINX}/auth-response-headers": KEY_ID_HEADER,
        }
        cors = self._cors()
        api = {
            **common,
            **auth,
            **cors,
            f"{NGINX}/limit-rps": str(s.rate_limit_rps),
            f"{NGINX}/proxy-body-size": s.max_body_size,
            **({f"{NGINX}/custom-headers": headers["api"]} if "api" in headers else {}),
        }
        self._ingress(
            "web",
            [("/", props.web_service, props.web_port)],
            {
                **common,
                **({} if s.public_ui else auth),
                f"{NGINX}/limit-rps": str(s.ui_rate_limit_rps),
                f"{NGINX}/proxy-body-size": "64k",
                f"{NGINX}/proxy-read-timeout": "30",
                f"{NGINX}/proxy-send-timeout": "30",
                **({f"{NGINX}/custom-headers": headers["web"]} if "web" in headers else {}),
            },
        )
        self._ingress(
            "api",
            [("/api", props.query_service, props.agent_port)],
            {
                **api,
                f"{NGINX}/proxy-read-timeout": str(s.query_timeout_seconds),
                f"{NGINX}/proxy-send-timeout": str(s.query_timeout_seconds),
            },
        )
        self._ingress(
            "indexer",
            [(p, props.indexer_service, props.agent_port) for p in INDEXER_PATHS],
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
            [(p, self.auth.name, DENY_PORT) for p in BLOCKED_PATHS],
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
