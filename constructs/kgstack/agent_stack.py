"""The whole environment as one chart: every construct wired from an :class:`Environment`."""

from __future__ import annotations

import cdk8s
from constructs import Construct

from ._plus import k8s
from .agent_config import AgentConfig, AgentConfigProps
from .agent_secrets import AgentSecrets, AgentSecretsProps
from .agent_tier import AgentTier, AgentTierProps, PersistentState
from .backup_schedule import BackupSchedule, BackupScheduleProps, Store, StoreEndpoint
from .chroma_store import PORT as CHROMA_PORT
from .chroma_store import ChromaStore, ChromaStoreProps
from .dashboards import Dashboards
from .edge import Edge, EdgeProps, edge_peers
from .environment import Environment
from .memgraph_store import MemgraphStore, MemgraphStoreProps
from .model import Stage
from .monitoring import Monitoring, MonitoringProps
from .naming import APP_NAME, Identity, object_meta
from .network_policies import NetworkPolicies, NetworkPoliciesProps, StackComponents, stack_flows
from .redis_cache import PORT as REDIS_PORT
from .redis_cache import SECRET_KEYS as REDIS_SECRET_KEYS
from .redis_cache import RedisCache, RedisCacheProps
from .secret_ref import SecretRef
from .tenant_namespace import TenantNamespace, TenantNamespaceProps
from .web_ui import WebUi, WebUiProps


class AgentStack(cdk8s.Chart):
    """Namespace, config, the agent tiers, the stateful tier and its backups for one environment."""

    def __init__(self, scope: Construct, env: Environment) -> None:
        super().__init__(scope, env.name, disable_resource_name_hashes=True)
        release = Identity(name=APP_NAME, instance=env.instance, version=env.images.agent.tag)
        ns = env.namespace
        storage_class = env.cloud.storage_class_name

        self.tenant = TenantNamespace(
            self,
            "Namespace",
            props=TenantNamespaceProps(
                identity=release,
                namespace=ns,
                pod_security_version=f"v{env.kubernetes_version}",
                quota=env.quota,
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
                env={"KGB_REDIS_URL": f"redis://backup@{self.redis.name}:{REDIS_PORT}/0"},
                secret_files={
                    "REDIS_PASSWORD_FILE": SecretRef(name=self.redis.secret, key=REDIS_SECRET_KEYS["backup"])
                },
            )
        }
        extra_env: dict[str, str] = {}
        extra_secrets = {"REDIS_URL": self.redis.agent_url()}

        self.chroma: ChromaStore | None = None
        if env.stores.chroma is not None and env.agent.vector_store.type == "chroma":
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
            backup_targets["chroma"] = StoreEndpoint(
                env={"CHROMA_HOST": self.chroma.name, "CHROMA_PORT": str(CHROMA_PORT)}
            )

        self.memgraph: MemgraphStore | None = None
        if env.stores.memgraph is not None and env.agent.graph.enabled:
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
                env=graph_env,
                secret_files={"GRAPH_STORE_PASSWORD_FILE": self.memgraph.password},
            )

        agent = release.of("agent")
        k8s.KubeServiceAccount(
            self,
            "ServiceAccount",
            metadata=object_meta(agent, ns, annotations=env.cloud.service_account_annotations),
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
                chroma_host=self.chroma.name if self.chroma else None,
                chroma_port=CHROMA_PORT,
                extra_env=extra_env,
                extra_secrets=extra_secrets,
            ),
        )

        common = {
            "namespace": ns,
            "image": env.images.agent,
            "service_account": agent.resource_name,
            "pod_labels": env.cloud.pod_labels,
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
                termination_grace_seconds=env.query.termination_grace_seconds,
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
                **common,
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
                pod_labels=env.cloud.pod_labels,
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
                web_service=self.web.name,
                query_service=self.query.name,
                indexer_service=self.indexer.name,
                pod_labels=env.cloud.pod_labels,
            ),
        )
        self.network = NetworkPolicies(
            self,
            "Network",
            props=NetworkPoliciesProps(
                identity=release,
                namespace=ns,
                settings=env.network,
                flows=stack_flows(
                    StackComponents(
                        chroma=self.chroma is not None,
                        memgraph=self.memgraph is not None,
                        backup=True,
                    ),
                    env.network,
                    edge=edge_peers(env.edge, env.network.ingress_controller_namespace),
                ),
            ),
        )
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
                agent_keys=[r.key for r in self.config.secrets.values() if r.name == env.agent.secret_name],
                redis_secret=self.redis.secret,
                redis_host=self.redis.name,
                memgraph_secret=env.stores.memgraph.secret_name if self.memgraph and env.stores.memgraph else None,
                edge_keys_secret=env.edge.keys_secret,
                backup_secret=env.backup.credentials_secret,
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
            )
            self.monitoring = Monitoring(self, "Monitoring", props=observed)
            Dashboards(self, "Dashboards", props=observed)

        self.backups = BackupSchedule(
            self,
            "Backup",
            props=BackupScheduleProps(
                identity=release.of("backup"),
                namespace=ns,
                settings=env.backup,
                image=env.images.backup,
                stores=backup_targets,
                storage_class=storage_class,
                service_account_annotations=env.cloud.service_account_annotations,
                pod_labels=env.cloud.pod_labels,
            ),
        )
