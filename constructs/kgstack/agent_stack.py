"""The whole environment as one chart: every construct wired from an :class:`Environment`."""

from __future__ import annotations

import cdk8s
from constructs import Construct

from ._plus import k8s
from .agent_config import AgentConfig, AgentConfigProps
from .agent_tier import HTTP_PORT, AgentTier, AgentTierProps, PersistentState
from .environment import Environment, Stage
from .naming import Identity, object_meta
from .tenant_namespace import TenantNamespace, TenantNamespaceProps

APP_NAME = "kga"


class AgentStack(cdk8s.Chart):
    """Namespace, config, the query tier and the indexer of one environment."""

    def __init__(self, scope: Construct, env: Environment) -> None:
        super().__init__(scope, env.name, disable_resource_name_hashes=True)
        self.env = env
        release = Identity(name=APP_NAME, instance=env.instance, version=env.images.agent.tag)
        ns = env.namespace

        self.tenant = TenantNamespace(self, "Namespace", props=TenantNamespaceProps(
            identity=release,
            namespace=ns,
            pod_security_version=f"v{env.kubernetes_version}",
            quota=env.quota,
            container_defaults=env.container_defaults,
        ))

        agent = release.of("agent")
        k8s.KubeServiceAccount(
            self, "ServiceAccount",
            metadata=object_meta(agent, ns, annotations=env.cloud.service_account_annotations),
            # The app never calls the Kubernetes API.
            automount_service_account_token=False,
        )

        self.config = AgentConfig(self, "Config", props=AgentConfigProps(
            identity=agent,
            namespace=ns,
            settings=env.agent,
            repositories=env.repositories,
            production=env.stage is Stage.PROD,
            api_base_url=f"https://{env.domain}/api/v1",
            chroma_host=f"{env.instance}-chroma" if env.agent.vector_store.type == "chroma"
            else None,
        ))

        common = {
            "namespace": ns,
            "image": env.images.agent,
            "service_account": agent.resource_name,
            "pod_labels": env.cloud.pod_labels,
        }
        self.query = AgentTier(self, "Query", config=self.config, props=AgentTierProps(
            identity=release.of("query"),
            resources=env.query.resources,
            autoscaling=env.query.autoscaling,
            disruption=env.query.disruption,
            termination_grace_seconds=env.query.termination_grace_seconds,
            scratch_size=env.query.scratch_size,
            **common,
        ))
        indexer = env.indexer
        self.indexer = AgentTier(self, "Indexer", config=self.config, props=AgentTierProps(
            identity=release.of("indexer"),
            resources=indexer.resources,
            replicas=1,
            disruption=indexer.disruption,
            termination_grace_seconds=indexer.termination_grace_seconds
            or env.agent.workflow.timeout_seconds + 60,
            state=PersistentState(
                size=indexer.storage_size, storage_class=env.cloud.storage_class_name
            ),
            **common,
        ))

    @property
    def agent_port(self) -> int:
        return HTTP_PORT
