"""cdk8s constructs that deploy the Knowledge Graph Agent.

Every construct and its props are importable from here; ``AgentStack`` wires them
all from one :class:`Environment`, and docs/reuse.md composes a few into another chart.
"""

from ._node import use_supported_node

use_supported_node()  # before the first cdk8s import starts jsii's Node process

from . import _errors  # noqa: E402
from .agent_config import AgentConfig, AgentConfigProps  # noqa: E402
from .agent_secrets import AgentSecrets, AgentSecretsProps, SecretsSettings  # noqa: E402
from .agent_settings import (  # noqa: E402
    AgentSettings,
    CacheSettings,
    Chunking,
    Embedding,
    Graph,
    Llm,
    Repository,
    RuntimeSettings,
    VectorStore,
    Workflow,
)
from .agent_stack import AgentStack  # noqa: E402
from .agent_tier import AgentTier, AgentTierProps, PersistentState  # noqa: E402
from .argocd_application import (  # noqa: E402
    ApplicationSource,
    ApplicationSourceHelm,
    ArgoCdApplication,
    GitOpsSettings,
    IgnoreDifference,
)
from .backup_schedule import BackupSchedule, BackupScheduleProps, BackupSettings, StoreEndpoint  # noqa: E402
from .chroma_store import ChromaSettings, ChromaStore, ChromaStoreProps  # noqa: E402
from .cloud_edge import CloudEdgeProps  # noqa: E402
from .cluster_platform import (  # noqa: E402
    Cluster,
    ClusterPlatform,
    ClusterPlatformProps,
    ExternalPrerequisite,
    HelmRelease,
)
from .connections import Connections, Endpoint  # noqa: E402
from .cross_reference import check_chart  # noqa: E402
from .dashboards import Dashboards  # noqa: E402
from .edge import Edge, EdgeAuth, EdgeAuthProps, EdgeProps, EdgeSettings, GatewaySettings, PlatformGateway  # noqa: E402
from .edge.common import BackendTls  # noqa: E402
from .environment import (  # noqa: E402
    CloudProfile,
    CloudProvider,
    ContainerDefaults,
    Environment,
    EnvironmentFileError,
    Images,
    IndexerTier,
    QueryTier,
    Quota,
    Stores,
    Target,
    load_environment,
    load_environments,
)
from .gitops_chart import GitOpsChart, GitOpsTarget  # noqa: E402
from .image_policy import ImagePolicy, ImagePolicyProps, SigningIdentity  # noqa: E402
from .memgraph_store import MemgraphSettings, MemgraphStore, MemgraphStoreProps  # noqa: E402
from .model import Autoscaling, ComputeAmounts, Disruption, ImageRef, Resources, Stage  # noqa: E402
from .monitoring import (  # noqa: E402
    ChatReceiver,
    Monitoring,
    MonitoringProps,
    MonitoringSettings,
    PagingReceiver,
    Receivers,
    SecretKey,
)
from .naming import APP_NAME, PART_OF, Identity  # noqa: E402
from .network_policies import (  # noqa: E402
    CidrPeer,
    ComponentPeer,
    Flow,
    InternetPeer,
    NamespacePeer,
    NetworkPolicies,
    NetworkPoliciesProps,
    NetworkSettings,
    PodsPeer,
    PortSpec,
    tcp,
)
from .object_patch import JsonOperation, ObjectPatch, PatchError, PatchTarget, apply_patches  # noqa: E402
from .publish import SynthError, synth, synth_objects  # noqa: E402
from .redis_cache import RedisCache, RedisCacheProps, RedisSettings  # noqa: E402
from .reindex_schedule import ReindexSchedule, ReindexScheduleProps, ReindexSettings  # noqa: E402
from .schema import check_objects  # noqa: E402
from .secret_ref import SecretRef  # noqa: E402
from .stateful_store import StatefulStore, StatefulStoreProps, StoreSettings  # noqa: E402
from .tenant_namespace import TenantNamespace, TenantNamespaceProps  # noqa: E402
from .web_ui import WebUi, WebUiProps  # noqa: E402
from .workload_settings import Toleration, WorkloadSettings  # noqa: E402

_errors.install()  # a validation error reaches the user as one line per problem, not a jsii trace

__all__ = [
    "APP_NAME",
    "PART_OF",
    "AgentConfig",
    "AgentConfigProps",
    "AgentSecrets",
    "AgentSecretsProps",
    "AgentSettings",
    "AgentStack",
    "AgentTier",
    "AgentTierProps",
    "ApplicationSource",
    "ApplicationSourceHelm",
    "ArgoCdApplication",
    "Autoscaling",
    "BackendTls",
    "BackupSchedule",
    "BackupScheduleProps",
    "BackupSettings",
    "CacheSettings",
    "ChatReceiver",
    "ChromaSettings",
    "ChromaStore",
    "ChromaStoreProps",
    "Chunking",
    "CidrPeer",
    "CloudEdgeProps",
    "CloudProfile",
    "CloudProvider",
    "Cluster",
    "ClusterPlatform",
    "ClusterPlatformProps",
    "ComponentPeer",
    "ComputeAmounts",
    "Connections",
    "ContainerDefaults",
    "Dashboards",
    "Disruption",
    "EcsStack",
    "Edge",
    "EdgeAuth",
    "EdgeAuthProps",
    "EdgeProps",
    "EdgeSettings",
    "Embedding",
    "Endpoint",
    "Environment",
    "EnvironmentFileError",
    "ExternalPrerequisite",
    "Flow",
    "GatewaySettings",
    "GitOpsChart",
    "GitOpsSettings",
    "GitOpsTarget",
    "Graph",
    "HelmRelease",
    "Identity",
    "IgnoreDifference",
    "ImagePolicy",
    "ImagePolicyProps",
    "ImageRef",
    "Images",
    "IndexerTier",
    "InternetPeer",
    "JsonOperation",
    "Llm",
    "MemgraphSettings",
    "MemgraphStore",
    "MemgraphStoreProps",
    "Monitoring",
    "MonitoringProps",
    "MonitoringSettings",
    "NamespacePeer",
    "NetworkPolicies",
    "NetworkPoliciesProps",
    "NetworkSettings",
    "ObjectPatch",
    "PagingReceiver",
    "PatchError",
    "PatchTarget",
    "PersistentState",
    "PlatformGateway",
    "PodsPeer",
    "PortSpec",
    "QueryTier",
    "Quota",
    "Receivers",
    "RedisCache",
    "RedisCacheProps",
    "RedisSettings",
    "ReindexSchedule",
    "ReindexScheduleProps",
    "ReindexSettings",
    "Repository",
    "Resources",
    "RuntimeSettings",
    "SecretKey",
    "SecretRef",
    "SecretsSettings",
    "SigningIdentity",
    "Stage",
    "StatefulStore",
    "StatefulStoreProps",
    "StoreEndpoint",
    "StoreSettings",
    "Stores",
    "SynthError",
    "Target",
    "TenantNamespace",
    "TenantNamespaceProps",
    "Toleration",
    "VectorStore",
    "WebUi",
    "WebUiProps",
    "Workflow",
    "WorkloadSettings",
    "apply_patches",
    "check_chart",
    "check_objects",
    "load_environment",
    "load_environments",
    "synth",
    "synth_objects",
    "tcp",
]


def __getattr__(name: str) -> object:
    """``kgstack.EcsStack`` on first use: aws-cdk-lib takes seconds to import, and only the ECS target needs it."""
    if name == "EcsStack":
        from .ecs_stack import EcsStack

        return EcsStack
    raise AttributeError(f"module 'kgstack' has no attribute {name!r}")
