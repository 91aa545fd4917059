"""The whole environment as one chart: every construct wired from an :class:`Environment`."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import cdk8s
from constructs import Construct

from . import cross_reference
from ._plus import k8s
from .agent_config import AgentConfig, AgentConfigProps
from .agent_secrets import AgentSecrets, AgentSecretsProps
from .agent_tier import PRE_STOP_SECONDS as QUERY_PRE_STOP_SECONDS
from .agent_tier import AgentTier, AgentTierProps, PersistentState
from .backup_schedule import (
    TRACKED_STORES,
    BackupSchedule,
    BackupScheduleProps,
    Store,
    StoreEndpoint,
    restore_watch_seconds,
)
from .chroma_store import ChromaStore, ChromaStoreProps
from .connections import Connections
from .dashboards import Dashboards
from .edge import Edge, EdgeProps
from .environment import Environment
from .memgraph_store import MemgraphStore, MemgraphStoreProps
from .model import Stage
from .monitoring import Monitoring, MonitoringProps
from .naming import APP_NAME, Identity, object_meta
from .network_policies import NamespacePeer, NetworkPolicies, NetworkPoliciesProps
from .quantity import format_memory, parse_quantity
from .redis_cache import SECRET_KEYS as REDIS_SECRET_KEYS
from .redis_cache import RedisCache, RedisCacheProps
from .reindex_schedule import ReindexSchedule, ReindexScheduleProps
from .secret_ref import SecretRef
from .tenant_namespace import TenantNamespace, TenantNamespaceProps
from .validation import add_check
from .web_ui import WebUi, WebUiProps
from .workload_settings import apply_to_chart


class AgentStack(cdk8s.Chart):
    """Namespace, config, the agent tiers, the stateful tier and its backups for one environment."""

    def __init__(self, scope: Construct, env: Environment) -> None:
        super().__init__(scope, env.name, disable_resource_name_hashes=True)
        self.env = env
        release = Identity(name=APP_NAME, instance=env.instance, version=env.images.agent.tag)
        placement = env.placement
        ns = placement.namespace
        storage_class = env.cloud.storage_class_name

        self.tenant = TenantNamespace(
            self,
            "Namespace",
            props=TenantNamespaceProps(
                identity=release,
                namespace=ns,
                pod_security_version=f"v{placement.kubernetes_version}",
                quota=placement.quota,
                container_defaults=env.container_defaults,
            ),
        )

        # The stateful tier first: the agent's settings point at it.
        self.redis = RedisCache(
            self,
            "Redis",
            props=RedisCacheProps(
                identity=release.of("redis"),
                namespace=ns,
                settings=env.stores.redis,
                image=env.images.redis,
                exporter_image=env.images.redis_exporter,
                storage_class=storage_class,
            ),
        )
        backup_targets: dict[Store, StoreEndpoint] = {
            "redis": StoreEndpoint(
                endpoint=self.redis.endpoint,
                env={"KGB_REDIS_URL": self.redis.endpoint.url("redis", "/0", userinfo="backup")},
                secret_files={
                    "REDIS_PASSWORD_FILE": SecretRef(name=self.redis.secret, key=REDIS_SECRET_KEYS["backup"])
                },
            )
        }
        extra_env: dict[str, str] = {}
        extra_secrets = {"REDIS_URL": self.redis.agent_url()}

        self.chroma: ChromaStore | None = None
        if env.stores.chroma is not None:  # sized exactly when the vector store is Chroma
            chroma = env.stores.chroma
            self.chroma = ChromaStore(
                self,
                "Chroma",
                props=ChromaStoreProps(
                    identity=release.of("chroma"),
                    namespace=ns,
                    settings=chroma,
                    image=env.images.chroma,
                    storage_class=storage_class,
                    allow_reset=chroma.allow_reset if chroma.allow_reset is not None else env.stage is Stage.DEV,
                ),
            )
            chroma_env = {"CHROMA_HOST": self.chroma.endpoint.service, "CHROMA_PORT": str(self.chroma.endpoint.port)}
            backup_targets["chroma"] = StoreEndpoint(endpoint=self.chroma.endpoint, env=chroma_env)

        self.memgraph: MemgraphStore | None = None
        if env.stores.memgraph is not None:  # sized exactly when graph features are on
            self.memgraph = MemgraphStore(
                self,
                "Memgraph",
                props=MemgraphStoreProps(
                    identity=release.of("memgraph"),
                    namespace=ns,
                    settings=env.stores.memgraph,
                    image=env.images.memgraph,
                    storage_class=storage_class,
                ),
            )
            graph_env = {"GRAPH_STORE_URL": self.memgraph.url, "GRAPH_STORE_USER": self.memgraph.username}
            extra_env |= {"GRAPH_STORE_TYPE": "memgraph", "GRAPH_STORE_DATABASE": "memgraph", **graph_env}
            extra_secrets |= {"GRAPH_STORE_PASSWORD": self.memgraph.password}
            backup_targets["memgraph"] = StoreEndpoint(
                endpoint=self.memgraph.endpoint,
                env=graph_env,
                secret_files={"GRAPH_STORE_PASSWORD_FILE": self.memgraph.password},
            )

        agent = release.of("agent")
        k8s.KubeServiceAccount(
            self,
            "ServiceAccount",
            # No cloud identity: the internet-facing agent needs none, and the backup role
            # (cloud.workloadIdentity) writes the backup bucket. One identity per ServiceAccount.
            metadata=object_meta(agent, ns),
            # The app never calls the Kubernetes API.
            automount_service_account_token=False,
        )
        self.config = AgentConfig(
            self,
            "Config",
            props=AgentConfigProps(
                identity=agent,
                namespace=ns,
                settings=env.agent,
                repositories=env.repositories,
                production=env.stage is Stage.PROD,
                api_base_url=f"https://{env.domain}/api/v1",
                chroma=self.chroma.endpoint if self.chroma else None,
                extra_env=extra_env,
                extra_secrets=extra_secrets,
                connects_to=[self.memgraph.endpoint] if self.memgraph else [],
                internet_ports=env.network.internet_ports,
            ),
        )

        common = {
            "namespace": ns,
            "image": env.images.agent,
            "service_account": agent.resource_name,
            "reload_secrets": sorted({ref.name for ref in self.config.secrets.values()}),
        }
        self.query = AgentTier(
            self,
            "Query",
            config=self.config,
            props=AgentTierProps(
                identity=release.of("query"),
                resources=env.query.resources,
                autoscaling=env.query.autoscaling,
                disruption=env.query.disruption,
                termination_grace_seconds=self._query_grace(env),
                scratch_size=env.query.scratch_size,
                **common,
            ),
        )
        indexer = env.indexer
        self.indexer = AgentTier(
            self,
            "Indexer",
            config=self.config,
            props=AgentTierProps(
                identity=release.of("indexer"),
                resources=indexer.resources,
                replicas=1,
                disruption=indexer.disruption,
                termination_grace_seconds=indexer.termination_grace_seconds or env.agent.workflow.timeout_seconds + 60,
                state=PersistentState(size=indexer.storage_size, storage_class=storage_class),
                # A workflow runs on the app's event loop until it ends or times out.
                loop_block_seconds=env.agent.workflow.timeout_seconds + 60,
                **common,
            ),
        )

        # The indexer writes the vector store and the graph: their backups wait for it to be idle and
        # record its commit tracker, which a restore hands back (docs/backup-restore.md).
        for store in TRACKED_STORES:
            if store in backup_targets:
                target = backup_targets[store]
                backup_targets[store] = target.model_copy(
                    update={
                        "env": {**target.env, "KGB_INDEXER_URL": self.indexer.endpoint.url("http")},
                        "reads": [self.indexer.endpoint],
                    }
                )

        self.reindex: ReindexSchedule | None = None
        if env.reindex.schedule:
            self.reindex = ReindexSchedule(
                self,
                "Reindex",
                props=ReindexScheduleProps(
                    identity=release.of("reindex"),
                    namespace=ns,
                    settings=env.reindex,
                    image=env.images.agent,
                    indexer=self.indexer.endpoint,
                    app_settings=self.config.name,
                    repositories=len(env.repositories),
                    timeout_seconds=env.agent.workflow.timeout_seconds + 300,
                ),
            )

        self.web = WebUi(
            self,
            "Web",
            props=WebUiProps(
                identity=release.of("web"),
                namespace=ns,
                image=env.images.web,
                api_base_url=f"https://{env.domain}/api/v1",
            ),
        )
        self.edge = Edge(
            self,
            "Edge",
            props=EdgeProps(
                identity=release,
                namespace=ns,
                stage=env.stage,
                domain=env.domain,
                ingress_class=env.cloud.ingress_class,
                settings=env.edge,
                auth_image=env.images.nginx,
                web=self.web.endpoint,
                query=self.query.endpoint,
                indexer=self.indexer.endpoint,
                ingress_nginx_namespace=env.network.ingress_controller_namespace,
                load_balancer_annotations=env.cloud.load_balancer_annotations,
                cloud_provider=env.cloud.provider.value,
            ),
        )
        self.monitoring: Monitoring | None = None
        if env.monitoring.enabled:
            observed = MonitoringProps(
                identity=release,
                namespace=ns,
                domain=env.domain,
                settings=env.monitoring,
                edge_controller=env.edge.controller,
                chroma=self.chroma is not None,
                memgraph=self.memgraph is not None,
                backups=tuple(backup_targets),
                index_run_seconds=env.agent.workflow.timeout_seconds,
                restore_watch_seconds={
                    store: restore_watch_seconds(store, size)
                    for store, size in self._volumes(env, backup_targets).items()
                },
                scraper=NamespacePeer(
                    namespace=env.network.monitoring_namespace, pod_labels=env.network.prometheus_pod_labels
                ),
                prober=NamespacePeer(
                    namespace=env.network.monitoring_namespace, pod_labels=env.network.blackbox_pod_labels
                ),
                probes=(
                    *(store.endpoint for store in (self.query, self.indexer, self.chroma, self.memgraph) if store),
                    # A dead UI or verifier fails every request at the edge, where no SLI counts it.
                    self.web.endpoint,
                    *(e for e in self.edge.endpoints if e.health_path),
                ),
                # The runtime layer's /metrics of both tiers; the HPA reads the query tier's in-flight gauge.
                metrics=(self.redis.metrics_endpoint, self.query.runtime_endpoint, self.indexer.runtime_endpoint),
            )
            self.monitoring = Monitoring(self, "Monitoring", props=observed)
            Dashboards(self, "Dashboards", props=observed)

        self.secrets = AgentSecrets(
            self,
            "Secrets",
            props=AgentSecretsProps(
                identity=release,
                namespace=ns,
                stage=env.stage,
                environment=env.name,
                settings=env.secrets,
                agent_secret=env.agent.secret_name,
                # Optional keys stay out: ESO fails the whole sync when a listed remote key is missing.
                agent_keys=[
                    r.key for r in self.config.secrets.values() if r.name == env.agent.secret_name and not r.optional
                ],
                redis_secret=self.redis.secret,
                redis_url_template=self.redis.url_template(),
                memgraph_secret=env.stores.memgraph.secret_name if self.memgraph and env.stores.memgraph else None,
                edge_keys_secret=env.edge.keys_secret,
                backup_secret=env.backup.credentials_secret,
                pull_secrets=env.workloads.image_pull_secrets,
                additional=self.monitoring.secret_keys if self.monitoring else {},
            ),
        )

        self.backups = BackupSchedule(
            self,
            "Backup",
            props=BackupScheduleProps(
                identity=release.of("backup"),
                namespace=ns,
                settings=env.backup,
                image=env.images.backup,
                stores=backup_targets,
                volume_sizes=self._volumes(env, backup_targets),
                storage_class=storage_class,
                service_account_annotations=env.cloud.service_account_annotations,
                pod_labels=env.cloud.pod_labels,
                object_storage_ports=env.network.internet_ports,
                object_storage_cidrs=env.network.object_storage_cidrs,
            ),
        )
        add_check(self, lambda: self._backup_memory_problems(env))

        # Last: the policies render every connection the constructs above declared.
        self.network = NetworkPolicies(
            self,
            "Network",
            props=NetworkPoliciesProps(
                identity=release, namespace=ns, settings=env.network, flows=Connections.of(self).flows
            ),
        )
        # After everything: the environment's pod settings reach every workload (kgstack.workload_settings).
        apply_to_chart(self, env.workloads)

    @staticmethod
    def _volumes(env: Environment, stores: Mapping[Store, object]) -> dict[Store, str]:
        """Each backed-up store's data volume (``stores.<store>.storageSize``)."""
        return {store: getattr(env.stores, store).storage_size for store in stores}

    @staticmethod
    def _backup_memory_problems(env: Environment) -> list[str]:
        """The Redis backup verifies and restores through a private redis-server in its own container,
        holding up to the cache's ``maxmemory``; kgbackup itself streams in well under 512Mi."""
        needed = RedisCache.maxmemory(env.stores.redis) + 512 * 2**20
        limit = parse_quantity(env.backup.resources.limits.memory)
        if limit >= needed:
            return []
        return [
            f"backup.resources.limits.memory: is {format_memory(limit)} but the Redis backup loads up to "
            f"{format_memory(Decimal(RedisCache.maxmemory(env.stores.redis)))} (stores.redis maxmemory) into a private "
            f"redis-server plus 512Mi for the tool: set it to at least {format_memory(Decimal(needed))}"
        ]

    def _query_grace(self, env: Environment) -> int:
        """Long enough for the longest answer the edge waits for (an explicit shorter one is refused at synth)."""
        needed = env.edge.query_timeout_seconds + QUERY_PRE_STOP_SECONDS + 10
        grace = env.query.termination_grace_seconds
        if grace is not None and grace < needed:
            problem = (
                f"query.terminationGraceSeconds: is {grace} but edge.queryTimeoutSeconds "
                f"({env.edge.query_timeout_seconds}) + the {QUERY_PRE_STOP_SECONDS} s pre-stop delay + 10 s need "
                f"{needed}; a rollout would cut off answers the edge still waits for: set it to {needed} or remove it"
            )
            add_check(self, lambda: [problem])
        return grace or needed

    def check_references(self, objects: Mapping[str, dict[str, Any]]) -> list[str]:
        """The cross-reference gate over this chart's rendered objects (``{file name: object}``)."""
        net = self.env.network
        return cross_reference.Gate(
            objects,
            namespace=self.env.placement.namespace,
            prerequisites={name: frozenset(keys) for name, keys in self.secrets.prerequisites.items()},
            scraper=cross_reference.Peer(net.monitoring_namespace, net.prometheus_pod_labels),
            prober=cross_reference.Peer(net.monitoring_namespace, net.blackbox_pod_labels),
            edge=cross_reference.Peer(self.edge.peer.namespace, self.edge.peer.pod_labels),
            ingress_controller=cross_reference.Peer(net.ingress_controller_namespace),
        ).problems()
