"""Redis as the agent's cache: ACL users from a Secret, bounded memory, an exporter sidecar.

The agent does not use Redis yet (docs/agent.md); the stack deploys it
so that it can, and hands the app ``REDIS_URL`` through a Secret reference.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from constructs import Construct
from pydantic import Field

from ._plus import int_or_string, k8s, quantity
from .agent_secrets import reload_on
from .connections import Endpoint
from .model import ImageRef, Resources, Spec
from .naming import Identity, object_meta
from .pod_security import checkov_skips, hardened_container, unpinned_skip
from .quantity import parse_quantity
from .secret_ref import SecretRef
from .stateful_store import StatefulStore, StatefulStoreProps, StoreSettings, data_mount

PORT = 6379
METRICS_PORT = 9121
_EXPORTER_RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
)

# ACL rules per user. The app may not run administrative or dangerous commands
# (FLUSHALL, CONFIG, KEYS, DEBUG, SHUTDOWN...); the exporter gets the read-only
# set redis_exporter documents; the backup tool replicates and restores.
# Nobody runs Lua (-@scripting: EVAL, EVALSHA, SCRIPT, FUNCTION, FCALL): a script runs with the
# caller's ACL but outside its command checks' spirit (CVE-2024-31228, CVE-2024-46981 are Lua
# flaws), and neither the agent nor the exporter's default metrics need it.
ACL_RULES: dict[str, str] = {
    "app": "~* &* +@all -@dangerous -@admin -@scripting",
    "exporter": (
        "+client +ping +info +config|get +cluster|info +slowlog +latency +memory +select +get +scan"
        " +xinfo +type +pfcount +strlen +llen +scard +zcard +hlen +xlen ~* -@scripting"
    ),
    "backup": "~* &* +@read +@write +@keyspace +@connection +info +sync +psync +replconf +flushall +flushdb",
}
SECRET_KEYS = {user: f"{user}-password" for user in ACL_RULES}
"""Keys of the Redis Secret: one password per ACL user, plus ``url`` for the agent."""
PROBE = (
    f'REDISCLI_AUTH="$(cat /secrets/{SECRET_KEYS["exporter"]})" '
    "redis-cli --user exporter --no-auth-warning ping | grep -q PONG"
)
"""Liveness and readiness: an authenticated PING; REDISCLI_AUTH keeps the password out of argv."""


class RedisSettings(StoreSettings):
    """The cache's size and behaviour."""

    maxmemory_percent: Annotated[int, Field(ge=10, le=90)] = 75
    """``maxmemory`` as a share of the memory limit; the rest covers fragmentation and forks."""
    eviction_policy: Literal["allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "volatile-ttl"] = (
        "allkeys-lru"
    )
    """What to drop when full; a cache evicts rather than refusing writes."""
    snapshot_seconds: Annotated[int, Field(ge=0)] = 900
    """RDB snapshot when anything changed in this window (a warm restart); 0 turns persistence off."""
    exporter_resources: Resources = _EXPORTER_RESOURCES
    """Requests and limits of the redis_exporter sidecar."""
    secret_name: str = "kga-redis"
    """Secret with ``app-password``, ``exporter-password``, ``backup-password`` and ``url``."""


class RedisCacheProps(Spec):
    identity: Identity
    namespace: str
    settings: RedisSettings
    image: ImageRef
    """docker/redis: Debian's redis-server 7.0.15, the RDB version the backup image reads."""
    exporter_image: ImageRef
    """oliver006/redis_exporter."""
    storage_class: str | None = None


class RedisCache(Construct):
    """StatefulSet ``<release>-redis`` with a redis_exporter sidecar on port 9121."""

    def __init__(self, scope: Construct, id: str, *, props: RedisCacheProps) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        self.name = props.identity.resource_name
        self.secret = s.secret_name
        k8s.KubeConfigMap(
            self, "Config", metadata=object_meta(props.identity, props.namespace), data={"redis.conf": self.config(s)}
        )
        secret_volume = k8s.Volume(
            name="secret",
            secret=k8s.SecretVolumeSource(
                secret_name=s.secret_name,
                default_mode=0o400,
                items=[k8s.KeyToPath(key=key, path=key) for key in SECRET_KEYS.values()],
            ),
        )
        # The ACL file holds the passwords, so it is written at start into memory,
        # from the mounted Secret: never in the ConfigMap, never on a command line.
        render_acl = hardened_container(
            name="acl",
            image=props.image.reference,
            resources=s.exporter_resources,
            command=["sh", "-c", self._acl_script()],
            mounts=[
                k8s.VolumeMount(name="secret", mount_path="/secrets", read_only=True),
                k8s.VolumeMount(name="run", mount_path="/run/redis"),
            ],
        )
        # redis-cli reads REDISCLI_AUTH: the probes authenticate without a password in argv.
        ping = k8s.ExecAction(command=["sh", "-c", PROBE])
        server = hardened_container(
            name="redis",
            image=props.image.reference,
            resources=s.resources,
            ports=[self.endpoint.container_port()],
            command=["redis-server", "/etc/redis/redis.conf"],
            readiness_probe=k8s.Probe(exec=ping, period_seconds=10, timeout_seconds=3, failure_threshold=3),
            liveness_probe=k8s.Probe(
                exec=ping, initial_delay_seconds=15, period_seconds=20, timeout_seconds=5, failure_threshold=3
            ),
            mounts=[
                data_mount("/data"),
                k8s.VolumeMount(name="config", mount_path="/etc/redis", read_only=True),
                k8s.VolumeMount(name="run", mount_path="/run/redis", read_only=True),
                k8s.VolumeMount(name="probe", mount_path="/secrets", read_only=True),
            ],
        )
        health = k8s.HttpGetAction(path="/health", port=int_or_string("metrics"))
        exporter = hardened_container(
            name="exporter",
            image=props.exporter_image.reference,
            resources=s.exporter_resources,
            ports=[self.metrics_endpoint.container_port()],
            # redis_exporter's REDIS_PASSWORD_FILE is not a password file: it is a JSON map of
            # Redis URI to password (a plain file makes it exit), and the key format changed in
            # 2025 (oliver006/redis_exporter#983 puts the user in the URI). REDIS_PASSWORD from
            # the Secret reads the same in every release, stays out of argv and manifests, and
            # Reloader restarts the pod when the Secret rotates.
            env=[
                k8s.EnvVar(name="REDIS_ADDR", value=f"redis://127.0.0.1:{PORT}"),
                k8s.EnvVar(name="REDIS_USER", value="exporter"),
                SecretRef(name=s.secret_name, key=SECRET_KEYS["exporter"]).env("REDIS_PASSWORD"),
            ],
            readiness_probe=k8s.Probe(http_get=health, period_seconds=15, timeout_seconds=3),
            liveness_probe=k8s.Probe(http_get=health, period_seconds=30, timeout_seconds=5, failure_threshold=3),
        )
        self.store = StatefulStore(
            self,
            "Store",
            props=StatefulStoreProps(
                identity=props.identity,
                namespace=props.namespace,
                settings=s,
                storage_class=props.storage_class,
                endpoints=[self.endpoint, self.metrics_endpoint],
            ),
            init_containers=[render_acl],
            containers=[server, exporter],
            sidecar_resources=[s.exporter_resources],
            annotations=reload_on([s.secret_name])
            | checkov_skips(
                CKV_K8S_35="redis_exporter reads its password only from REDIS_PASSWORD (see the exporter)",
                # docker/redis is our own image now (issue 19): tag-only until the release workflow records it.
                **unpinned_skip(props.image, props.exporter_image),
            ),
            volumes=[
                k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name=self.name)),
                k8s.Volume(name="run", empty_dir=k8s.EmptyDirVolumeSource(medium="Memory", size_limit=quantity("1Mi"))),
                secret_volume,
                # The probes see only the exporter's password.
                k8s.Volume(
                    name="probe",
                    secret=k8s.SecretVolumeSource(
                        secret_name=s.secret_name,
                        default_mode=0o400,
                        items=[k8s.KeyToPath(key=SECRET_KEYS["exporter"], path=SECRET_KEYS["exporter"])],
                    ),
                ),
            ],
        )

    @staticmethod
    def maxmemory(s: RedisSettings) -> int:
        """Bytes the dataset may use: ``maxmemoryPercent`` of the memory limit."""
        return int(parse_quantity(s.resources.limits.memory) * Decimal(s.maxmemory_percent) / 100)

    @staticmethod
    def config(s: RedisSettings) -> str:
        maxmemory = RedisCache.maxmemory(s)
        save = f"save {s.snapshot_seconds} 1" if s.snapshot_seconds else 'save ""'
        return "\n".join(
            [
                "bind * -::*",
                f"port {PORT}",
                "dir /data",
                "dbfilename dump.rdb",
                "# A cache: periodic RDB snapshots for a warm restart, no append-only file.",
                "appendonly no",
                save,
                f"maxmemory {maxmemory}",
                f"maxmemory-policy {s.eviction_policy}",
                "aclfile /run/redis/users.acl",
                "",
            ]
        )

    @staticmethod
    def _acl_script() -> str:
        lines = ["set -eu", "umask 077", "{", '  echo "user default off"']
        for user, rules in ACL_RULES.items():
            # printf is a shell builtin here: the password never reaches an argv.
            lines.append(f"  printf 'user {user} on >%s {rules}\\n' \"$(cat /secrets/{SECRET_KEYS[user]})\"")
        lines.append("} > /run/redis/users.acl")
        return "\n".join(lines) + "\n"

    @property
    def endpoint(self) -> Endpoint:
        """The Redis protocol port (ACL users; see :data:`SECRET_KEYS`)."""
        return Endpoint.serving(self.props.identity, self.props.namespace, PORT, "redis")

    @property
    def metrics_endpoint(self) -> Endpoint:
        """redis_exporter's ``/metrics``."""
        return Endpoint.serving(self.props.identity, self.props.namespace, METRICS_PORT, "metrics")

    def url_template(self) -> str:
        """The External Secrets template of the Secret's ``url`` key: the app user, its password from the
        fetched ``app-password``, database 0."""
        password = '{{ index . "' + SECRET_KEYS["app"] + '" | urlquery }}'
        return self.endpoint.url("redis", "/0", userinfo=f"app:{password}")

    def agent_url(self) -> SecretRef:
        """Where the agent's ``REDIS_URL`` comes from: ``redis://app:<password>@<service>:6379/0``."""
        return SecretRef(name=self.secret, key="url", endpoint=self.endpoint)
