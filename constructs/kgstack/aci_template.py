"""The ACI target: one environment as an ARM template and its parameters file (Azure Container Instances).

Like the ECS target it translates the environment's rendered Kubernetes objects
(:class:`kgstack.cloud_components.CloudComponents`) and never restates a port, a path, a limit
or an image. One container group per workload, all in one virtual network subnet delegated to
ACI: the query replicas, the indexer (its working directory on Azure Files), the web UI, and the
edge (:mod:`kgstack.cloud_edge` with TLS, beside the API-key verifier). Redis is Azure Cache for
Redis (TLS, access key). Secrets arrive as secure values from Key Vault references in the
parameters file, never inline; logs go to a Log Analytics workspace.

What ACI cannot do is refused when the environment is loaded (``Environment._cloud_rules``): no
autoscaling, no scheduler for the re-index, no durable volume that SQLite (Chroma) trusts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .cloud_components import (
    EDGE,
    CloudComponents,
    Component,
    Container,
    Probe,
    edge_component,
    full_command,
    gibibytes,
    start_script,
)
from .cloud_edge import EDGE_PORT, TLS_DIR, CloudEdgeProps, cloud_edge_conf
from .environment import Environment
from .quantity import parse_quantity
from .secret_ref import SecretRef
from .web_ui import CONFIG_FILE as WEB_CONFIG_FILE
from .web_ui import HTML_ROOT

API_VERSION = "2023-05-01"
"""Microsoft.ContainerInstance API version: the vendored schema's (tests/fixtures/arm-schemas/, written by
scripts/fetch_arm_schemas.py)."""
SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PARAMETERS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"
LOG_RETENTION_DAYS = 30
"""Log Analytics retention of the container logs."""
VNET_CIDR = "10.41.0.0/16"
SUBNET_CIDR = "10.41.0.0/24"
"""The ACI subnet; an Application Gateway subnet (docs/cloud-aci.md) takes 10.41.1.0/24."""
RUN = ("query", "indexer", "web")
"""Components run as container groups; the edge adds its own; Redis is Azure Cache for Redis."""
TLS_SECRET = "tls"
"""Key Vault certificate (as a secret: PEM) of the domain, for the edge's TLS."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _plain(text: str) -> str:
    """A literal value as ARM reads it: one that starts with ``[`` and ends with ``]`` would be taken for an
    expression (``GITHUB_FILE_EXTENSIONS``'s JSON list), so its ``[`` is doubled, ARM's escape."""
    return f"[{text}" if text.startswith("[") and text.endswith("]") else text


def _param(remote: str, key: str) -> str:
    """ARM parameter name of one secret key: alphanumerics only."""
    words = re.split(r"[^A-Za-z0-9]+", f"{remote}-{key}")
    return words[0].lower() + "".join(w[:1].upper() + w[1:].lower() for w in words[1:] if w)


def _vault_name(remote: str, key: str) -> str:
    """Key Vault secret name of one key (letters, digits and dashes): ``kga-azure-agent-OPENAI-API-KEY``."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"{remote}-{key}").strip("-")


class AciTemplate:
    """ARM template (``template``) and parameters file (``parameters``) of one environment."""

    def __init__(
        self, env: Environment, *, objects: Mapping[str, dict[str, Any]], remote_secrets: Mapping[str, str]
    ) -> None:
        self.env = env
        self.parts = CloudComponents(dict(objects), {ref.reference: key for key, ref in env.images.all().items()})
        self.remote = dict(remote_secrets)
        self.params: dict[str, dict[str, Any]] = {
            "location": {
                "type": "string",
                "defaultValue": "[resourceGroup().location]",
                "metadata": {"description": "Region of every resource"},
            }
        }
        self.references: dict[str, dict[str, Any]] = {}
        self.key_vault = (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/acme-kga/providers/"
            f"Microsoft.KeyVault/vaults/{env.instance}"
        )
        """The Key Vault of the parameters file: replace the subscription and group (docs/cloud-aci.md)."""
        self.resources: list[dict[str, Any]] = [*self._shared()]
        groups = self._groups()
        self.resources += groups
        self.template = {
            "$schema": SCHEMA,
            "contentVersion": "1.0.0.0",
            "metadata": {"description": f"Knowledge Graph Agent {env.name} on Azure Container Instances"},
            "parameters": dict(sorted(self.params.items())),
            "variables": {},
            "resources": self.resources,
            "outputs": {
                "edgeAddress": {
                    "type": "string",
                    "value": f"[reference(resourceId('Microsoft.ContainerInstance/containerGroups', "
                    f"'{env.instance}-{EDGE}'), '{API_VERSION}').ipAddress.ip]",
                },
                "redisHost": {
                    "type": "string",
                    "value": f"[reference(resourceId('Microsoft.Cache/redis', '{self.redis_name}')).hostName]",
                },
            },
        }
        self.parameters = {
            "$schema": PARAMETERS_SCHEMA,
            "contentVersion": "1.0.0.0",
            "parameters": dict(sorted(self.references.items())),
        }

    # --- shared resources -------------------------------------------------------------------------------------

    @property
    def names(self) -> dict[str, str]:
        i = self.env.instance
        compact = re.sub(r"[^a-z0-9]", "", i)[:20]
        return {
            "vnet": f"{i}-vnet",
            "logs": f"{i}-logs",
            "storage": f"{compact}files",
            "nsg": f"{i}-aci",
            "nat": f"{i}-nat",
            "egress": f"{i}-egress",
        }

    @property
    def redis_name(self) -> str:
        return f"{self.env.instance}-redis"

    def _shared(self) -> list[dict[str, Any]]:
        n = self.names
        location = "[parameters('location')]"
        allow = [
            {
                "name": "edge-from-gateway",
                "properties": {
                    "priority": 100,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "sourceAddressPrefix": "VirtualNetwork",
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": SUBNET_CIDR,
                    "destinationPortRange": str(EDGE_PORT),
                },
            },
            {
                "name": "subnet-internal",
                "properties": {
                    "priority": 110,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "sourceAddressPrefix": SUBNET_CIDR,
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": SUBNET_CIDR,
                    "destinationPortRange": "*",
                },
            },
            {
                "name": "deny-inbound",
                "properties": {
                    "priority": 4000,
                    "direction": "Inbound",
                    "access": "Deny",
                    "protocol": "*",
                    "sourceAddressPrefix": "*",
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": "*",
                    "destinationPortRange": "*",
                },
            },
        ]
        return [
            {
                "type": "Microsoft.OperationalInsights/workspaces",
                "apiVersion": "2022-10-01",
                "name": n["logs"],
                "location": location,
                "properties": {"sku": {"name": "PerGB2018"}, "retentionInDays": LOG_RETENTION_DAYS},
            },
            {
                "type": "Microsoft.Network/networkSecurityGroups",
                "apiVersion": "2023-09-01",
                "name": n["nsg"],
                "location": location,
                "properties": {"securityRules": allow},
            },
            # Outbound to the LLM and embedding APIs and GitHub: new subnets have no default outbound access.
            {
                "type": "Microsoft.Network/publicIPAddresses",
                "apiVersion": "2023-09-01",
                "name": n["egress"],
                "location": location,
                "sku": {"name": "Standard"},
                "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
            },
            {
                "type": "Microsoft.Network/natGateways",
                "apiVersion": "2023-09-01",
                "name": n["nat"],
                "location": location,
                "sku": {"name": "Standard"},
                "dependsOn": [f"[resourceId('Microsoft.Network/publicIPAddresses', '{n['egress']}')]"],
                "properties": {
                    "publicIpAddresses": [
                        {"id": f"[resourceId('Microsoft.Network/publicIPAddresses', '{n['egress']}')]"}
                    ]
                },
            },
            {
                "type": "Microsoft.Network/virtualNetworks",
                "apiVersion": "2023-09-01",
                "name": n["vnet"],
                "location": location,
                "dependsOn": [
                    f"[resourceId('Microsoft.Network/networkSecurityGroups', '{n['nsg']}')]",
                    f"[resourceId('Microsoft.Network/natGateways', '{n['nat']}')]",
                ],
                "properties": {
                    "addressSpace": {"addressPrefixes": [VNET_CIDR]},
                    "subnets": [
                        {
                            "name": "aci",
                            "properties": {
                                "addressPrefix": SUBNET_CIDR,
                                "networkSecurityGroup": {
                                    "id": f"[resourceId('Microsoft.Network/networkSecurityGroups', '{n['nsg']}')]"
                                },
                                "natGateway": {"id": f"[resourceId('Microsoft.Network/natGateways', '{n['nat']}')]"},
                                "delegations": [
                                    {
                                        "name": "aci",
                                        "properties": {"serviceName": "Microsoft.ContainerInstance/containerGroups"},
                                    }
                                ],
                            },
                        }
                    ],
                },
            },
            {
                "type": "Microsoft.Storage/storageAccounts",
                "apiVersion": "2023-01-01",
                "name": n["storage"],
                "location": location,
                # Geo-zone-redundant: the indexer's state survives a zone and a region outage.
                "sku": {"name": "Standard_GZRS"},
                "kind": "StorageV2",
                "metadata": {
                    "checkov": [
                        f"{check}: ACI mounts Azure Files from its own hosts, outside the subnet, so a storage "
                        "firewall would refuse the mount; the share needs the account key (listKeys at deployment)"
                        for check in ("CKV_AZURE_35", "CKV_AZURE_59")
                    ]
                },
                "properties": {
                    "minimumTlsVersion": "TLS1_2",
                    "supportsHttpsTrafficOnly": True,
                    "allowBlobPublicAccess": False,
                    "allowSharedKeyAccess": True,  # ACI mounts Azure Files with the account key only
                    "publicNetworkAccess": "Enabled",
                    "networkAcls": {"defaultAction": "Allow", "bypass": "AzureServices"},
                },
            },
            {
                "type": "Microsoft.Cache/redis",
                "apiVersion": "2023-08-01",
                "name": self.redis_name,
                "location": location,
                "properties": {
                    "sku": {"name": "Standard", "family": "C", "capacity": 0},
                    "enableNonSslPort": False,
                    "minimumTlsVersion": "1.2",
                    "publicNetworkAccess": "Disabled",
                    "redisVersion": "6",
                },
            },
        ]

    # --- container groups --------------------------------------------------------------------------------------

    def _secure(self, ref: SecretRef) -> str:
        remote = self.remote[ref.name]
        name = _param(remote, ref.key)
        self.params[name] = {"type": "securestring", "metadata": {"description": f"{remote} {ref.key} (Key Vault)"}}
        self.references[name] = {
            "reference": {
                "keyVault": {"id": self.key_vault},
                "secretName": _vault_name(remote, ref.key),
            }
        }
        return f"[parameters('{name}')]"

    @staticmethod
    def _address(group: str) -> str:
        group_id = f"resourceId('Microsoft.ContainerInstance/containerGroups', '{group}')"
        return f"reference({group_id}, '{API_VERSION}').ipAddress.ip"

    def _hosts(self) -> dict[str, str]:
        """Host name in the Kubernetes rendering -> the container group answering for it."""
        hosts: dict[str, str] = {}
        for part in self.parts.components.values():
            if part.service and part.component in RUN:
                if part.component == "query":
                    hosts |= {f"{part.service}-{i}": f"{part.name}-{i}" for i in range(part.replicas)}
                else:
                    hosts[part.service] = part.name
        return hosts

    def _expression(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every host name as its container group's address: an ARM expression if needed."""
        hosts = self._hosts()
        names = sorted(hosts, key=len, reverse=True)
        pattern = re.compile(rf"(?<![\w.-])({'|'.join(map(re.escape, names))})(?=$|:|/)")
        pieces = pattern.split(text)
        if len(pieces) == 1:
            return _plain(text), []
        parts, used = [], []
        for i, piece in enumerate(pieces):
            if i % 2:
                parts.append(self._address(hosts[piece]))
                used.append(hosts[piece])
            elif piece:
                parts.append(_literal(piece))
        return f"[concat({', '.join(parts)})]", used

    def _container(self, c: Container, part: Component, depends: set[str]) -> tuple[dict[str, Any], list[Any]]:
        env: list[dict[str, Any]] = []
        volumes: list[dict[str, Any]] = []
        for name, value in sorted(c.env.items()):
            text, used = self._expression(value)
            depends.update(used)
            env.append({"name": name, "value": text})
        for name, ref in sorted(c.secret_env.items()):
            if not ref.optional:
                env.append({"name": name, "secureValue": self._secure(ref)})
        files = {p: t for p, t in c.files.items() if p != f"{HTML_ROOT}/{WEB_CONFIG_FILE}"}
        command = full_command(c)
        if files or c.secret_files:
            script, plain, secret = start_script(files, c.secret_files)
            for name, text in sorted(plain.items()):
                value, used = self._expression(text)
                depends.update(used)
                env.append({"name": name, "value": value})
            env += [{"name": name, "secureValue": self._secure(ref)} for name, ref in sorted(secret.items())]
            command = script + command
        mounts = []
        writable = {w.path: w for w in c.writable}
        for directory in sorted({p.rsplit("/", 1)[0] for p in [*files, *c.secret_files]}):
            if not any(directory == m or directory.startswith(f"{m}/") for m in writable):
                writable[directory] = None  # type: ignore[assignment]
        for path, w in sorted(writable.items()):
            volume = f"{c.name}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-')}"
            if w is not None and w.persistent:
                share = f"{part.component}-{volume}"[:63]
                self.resources.append(self._share(share, w.size))
                depends.add(f"share:{share}")
                volumes.append(
                    {
                        "name": volume,
                        "azureFile": {
                            "shareName": share,
                            "storageAccountName": self.names["storage"],
                            "storageAccountKey": f"[listKeys(resourceId('Microsoft.Storage/storageAccounts', "
                            f"'{self.names['storage']}'), '2023-01-01').keys[0].value]",
                        },
                    }
                )
            else:
                volumes.append({"name": volume, "emptyDir": {}})
            mounts.append({"name": volume, "mountPath": path, "readOnly": False})
        r = c.resources
        properties: dict[str, Any] = {
            "image": c.image,
            "command": command or None,
            "ports": [{"port": port, "protocol": "TCP"} for _, port in sorted(c.ports.items())],
            "environmentVariables": env,
            "resources": {
                "requests": {"cpu": _cpu(r.requests.cpu), "memoryInGB": _gb(r.requests.memory)},
                "limits": {"cpu": _cpu(r.limits.cpu), "memoryInGB": _gb(r.limits.memory)},
            },
            "volumeMounts": mounts,
            "securityContext": {
                "privileged": False,
                "allowPrivilegeEscalation": False,
                "runAsUser": c.user,
                "runAsGroup": c.group,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        for key, probe in (("livenessProbe", c.liveness), ("readinessProbe", c.readiness)):
            if probe is not None:
                properties[key] = _probe(probe, c.startup)
        return {"name": c.name, "properties": {k: v for k, v in properties.items() if v is not None}}, volumes

    def _share(self, name: str, size: str) -> dict[str, Any]:
        storage = self.names["storage"]
        return {
            "type": "Microsoft.Storage/storageAccounts/fileServices/shares",
            "apiVersion": "2023-01-01",
            "name": f"{storage}/default/{name}",
            "dependsOn": [f"[resourceId('Microsoft.Storage/storageAccounts', '{storage}')]"],
            "properties": {"shareQuota": gibibytes(size), "enabledProtocols": "SMB"},
        }

    def _group(self, name: str, part: Component, containers: list[Container]) -> dict[str, Any]:
        n = self.names
        depends: set[str] = set()
        rendered, volumes = [], []
        for c in containers:
            container, vols = self._container(c, part, depends)
            rendered.append(container)
            volumes += vols
        ports = sorted({port for c in containers for port in c.ports.values()})
        storage = n["storage"]
        depends_on = sorted(
            {
                f"[resourceId('Microsoft.Network/virtualNetworks', '{n['vnet']}')]",
                f"[resourceId('Microsoft.OperationalInsights/workspaces', '{n['logs']}')]",
                *(
                    f"[resourceId('Microsoft.Storage/storageAccounts/fileServices/shares', '{storage}', 'default', "
                    f"'{d.removeprefix('share:')}')]"
                    if d.startswith("share:")
                    else f"[resourceId('Microsoft.ContainerInstance/containerGroups', '{d}')]"
                    for d in depends
                    if d != name
                ),
            }
        )
        logs = f"resourceId('Microsoft.OperationalInsights/workspaces', '{n['logs']}')"
        return {
            "type": "Microsoft.ContainerInstance/containerGroups",
            "apiVersion": API_VERSION,
            "name": name,
            "location": "[parameters('location')]",
            "dependsOn": depends_on,
            "properties": {
                "sku": "Standard",
                "osType": "Linux",
                "restartPolicy": "Always",
                "containers": rendered,
                "volumes": volumes,
                "ipAddress": {"type": "Private", "ports": [{"port": p, "protocol": "TCP"} for p in ports]},
                "subnetIds": [
                    {"id": f"[resourceId('Microsoft.Network/virtualNetworks/subnets', '{n['vnet']}', 'aci')]"}
                ],
                "diagnostics": {
                    "logAnalytics": {
                        "workspaceId": f"[reference({logs}, '2022-10-01').customerId]",
                        "workspaceKey": f"[listKeys({logs}, '2022-10-01').primarySharedKey]",
                        "logType": "ContainerInstanceLogs",
                    }
                },
            },
        }

    def _groups(self) -> list[dict[str, Any]]:
        env, parts = self.env, self.parts.components
        groups = []
        query = parts["query"]
        for i in range(query.replicas):
            groups.append(self._group(f"{query.name}-{i}", query, list(query.containers)))
        for component in ("indexer", "web"):
            part = parts[component]
            groups.append(self._group(part.name, part, list(part.containers)))
        auth = parts["auth"]
        web, indexer = parts["web"], parts["indexer"]
        conf = cloud_edge_conf(
            CloudEdgeProps(
                settings=env.edge,
                domain=env.domain,
                web=f"{web.service}:{web.service_ports['http']}",
                query=[f"{query.service}-{i}:{query.service_ports['http']}" for i in range(query.replicas)],
                indexer=f"{indexer.service}:{indexer.service_ports['http']}",
                tls=True,
            )
        )
        self.remote.setdefault(TLS_SECRET, f"{env.instance}")
        tls_ref = SecretRef(name=TLS_SECRET, key="tls")
        # The certificate's PEM (key and chain) from Key Vault, in both files nginx reads.
        tls_files = {f"{TLS_DIR}/tls.crt": tls_ref, f"{TLS_DIR}/tls.key": tls_ref}
        edge = edge_component(auth, conf, name=f"{env.instance}-{EDGE}", replicas=1, tls_files=tls_files)
        groups.append(self._group(edge.name, edge, list(edge.containers)))
        return groups


def _number(value: Decimal) -> int | str:
    """A whole number as is; a fraction as ``[json('0.5')]``: ARM's template language has no decimal literals."""
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else f"[json('{rounded.normalize():f}')]"


def _cpu(quantity: str) -> int | str:
    return _number(parse_quantity(quantity))


def _gb(quantity: str) -> int | str:
    return _number(parse_quantity(quantity) / 2**30)


def _probe(p: Probe, startup: Probe | None) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "periodSeconds": p.period,
        "timeoutSeconds": p.timeout,
        "failureThreshold": p.failures,
        # ACI has no startup probe: the liveness probe waits as long as the startup probe allowed.
        "initialDelaySeconds": startup.period * startup.failures if startup else 10,
    }
    if p.command:
        probe["exec"] = {"command": list(p.command)}
    else:
        probe["httpGet"] = {"path": p.path, "port": p.port, "scheme": p.scheme}
    return probe


def render_aci(
    env: Environment, objects: Mapping[str, dict[str, Any]], remote_secrets: Mapping[str, str]
) -> dict[str, str]:
    """``{"azuredeploy.json": template, "azuredeploy.parameters.json": parameters}`` as text."""
    t = AciTemplate(env, objects=objects, remote_secrets=remote_secrets)

    def dump(data: dict[str, Any]) -> str:
        return json.dumps(data, indent=2) + "\n"

    return {"azuredeploy.json": dump(t.template), "azuredeploy.parameters.json": dump(t.parameters)}
