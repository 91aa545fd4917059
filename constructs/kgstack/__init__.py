"""cdk8s constructs that deploy the Knowledge Graph Agent."""

from .agent_config import AgentConfig, AgentConfigProps
from .agent_stack import AgentStack
from .agent_tier import AgentTier, AgentTierProps, PersistentState
from .environment import Environment, EnvironmentFileError, load_environment, load_environments
from .naming import Identity
from .tenant_namespace import TenantNamespace, TenantNamespaceProps

__all__ = [
    "AgentConfig",
    "AgentConfigProps",
    "AgentStack",
    "AgentTier",
    "AgentTierProps",
    "Environment",
    "EnvironmentFileError",
    "Identity",
    "PersistentState",
    "TenantNamespace",
    "TenantNamespaceProps",
    "load_environment",
    "load_environments",
]
