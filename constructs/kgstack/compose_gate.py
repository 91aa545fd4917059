"""The Compose target's cross-reference gate: reads a rendered ``compose.yaml`` (and the edge's nginx.conf), never
the model that wrote it, and reports every reference that does not resolve.

* each service's secrets, configs, networks and named volumes are declared at the top level; a config file
  exists beside ``compose.yaml``; a secret's file lies outside the project (values never in ``dist/``);
* ``depends_on`` names a service; ``service_healthy`` one with a health check, ``service_completed_successfully``
  one that is not restarted;
* a health check probes a port the service exposes;
* every ``host:port`` in a service's settings (store URLs) and every upstream of the edge names a service (or its
  alias) on a network the two share, at a port it exposes;
* only the edge publishes ports; every service but the one-shot volume owner runs as a non-root user with a
  read-only root, no capabilities and ``no-new-privileges``;
* a store's network is internal, and its only members are the store and the clients it names.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_ADDRESS = re.compile(r"(?:^|[/@])([a-z][a-z0-9-]*):(\d{2,5})(?=$|[/?#])")
_LOCAL_PORT = re.compile(r"(?:127\.0\.0\.1|/dev/tcp/127\.0\.0\.1)[:/](\d{2,5})")
_UPSTREAM = re.compile(r"set \$kga_(?:upstream|verifier) ([a-z][a-z0-9-]*):(\d+);")
_CONFIG_FILE = "./config/"


class ComposeGate:
    """Problems of one rendered Compose project; ``files`` maps file names (``compose.yaml``,
    ``config/<name>``) to their text, as written under ``dist/<env>/compose/``."""

    def __init__(self, files: dict[str, str], *, edge: str = "edge", root_allowed: tuple[str, ...] = ("volumes",)):
        self.files = files
        self.project: dict[str, Any] = yaml.safe_load(files["compose.yaml"])
        self.services: dict[str, dict[str, Any]] = self.project.get("services", {})
        self.edge = edge
        self.root_allowed = root_allowed

    def problems(self) -> list[str]:
        out: list[str] = []
        for name, service in sorted(self.services.items()):
            out += [f"services.{name}.{p}" for p in self._references(service)]
            out += [f"services.{name}.{p}" for p in self._order(service)]
            out += [f"services.{name}.{p}" for p in self._hardening(name, service)]
            out += [f"services.{name}.{p}" for p in self._addresses(name, service)]
        out += self._files()
        out += self._edge_upstreams()
        return out

    # ------------------------------------------------------------------ declarations

    def _references(self, service: dict[str, Any]) -> list[str]:
        out = []
        for kind in ("secrets", "configs"):
            declared = self.project.get(kind) or {}
            for i, ref in enumerate(service.get(kind, [])):
                source = ref["source"] if isinstance(ref, dict) else ref
                if source not in declared:
                    out.append(f"{kind}[{i}]: {source!r} is not declared under top-level {kind}")
        networks = self.project.get("networks") or {}
        for network in service.get("networks") or {}:
            if network not in networks:
                out.append(f"networks.{network}: not declared under top-level networks")
        volumes = self.project.get("volumes") or {}
        for i, mount in enumerate(service.get("volumes", [])):
            if isinstance(mount, dict) and mount.get("type") == "volume" and mount["source"] not in volumes:
                out.append(f"volumes[{i}]: named volume {mount['source']!r} is not declared under top-level volumes")
        check = service.get("healthcheck")
        if check:
            exposed = {int(p) for p in service.get("expose", [])}
            for port in _LOCAL_PORT.findall(" ".join(check["test"])):
                if int(port) not in exposed:
                    out.append(f"healthcheck: probes port {port}, which the service does not expose")
        return out

    def _order(self, service: dict[str, Any]) -> list[str]:
        out = []
        for other, rule in (service.get("depends_on") or {}).items():
            target = self.services.get(other)
            if target is None:
                out.append(f"depends_on.{other}: no such service")
                continue
            condition = rule.get("condition") if isinstance(rule, dict) else "service_started"
            if condition == "service_healthy" and not target.get("healthcheck"):
                out.append(f"depends_on.{other}: service_healthy, but {other} has no healthcheck")
            if condition == "service_completed_successfully" and target.get("restart", "no") != "no":
                out.append(f"depends_on.{other}: service_completed_successfully, but {other} restarts")
            if "profiles" in target and "profiles" not in service:
                out.append(f"depends_on.{other}: {other} runs only with a profile, so `up` would not start it")
        return out

    def _hardening(self, name: str, service: dict[str, Any]) -> list[str]:
        out = []
        if service.get("ports") and name != self.edge:
            out.append("ports: only the edge publishes ports")
        if not service.get("read_only"):
            out.append("read_only: the root filesystem must be read-only")
        if service.get("cap_drop") != ["ALL"]:
            out.append("cap_drop: must be [ALL]")
        if "no-new-privileges:true" not in service.get("security_opt", []):
            out.append("security_opt: must hold no-new-privileges:true")
        user = str(service.get("user", ""))
        if name not in self.root_allowed and (not user or user.split(":", maxsplit=1)[0] in ("0", "root")):
            out.append(f"user: {user or 'unset'}: must be a non-root uid")
        if name in self.root_allowed and service.get("network_mode") != "none":
            out.append("network_mode: the one service that runs as root must have no network")
        if "logging" not in service or "limits" not in (service.get("deploy") or {}).get("resources", {}):
            out.append("deploy.resources.limits and logging: required")
        return out

    # ------------------------------------------------------------------ addresses

    def _names(self) -> dict[str, str]:
        """Every name a service is reached by (its own, its aliases) to the service."""
        names = {name: name for name in self.services}
        for name, service in self.services.items():
            for network in (service.get("networks") or {}).values():
                for alias in (network or {}).get("aliases", []):
                    names[alias] = name
        return names

    def _reach(self, client: str, host: str, port: int) -> str | None:
        server = self._names().get(host)
        if server is None:
            return f"{host}:{port} is no service of the project"
        target = self.services[server]
        if str(port) not in [str(p) for p in target.get("expose", [])]:
            return f"{host}:{port}: {server} does not expose {port}"
        shared = set(self.services[client].get("networks") or {}) & set(target.get("networks") or {})
        if not shared:
            return f"{host}:{port}: {client} and {server} share no network"
        return None

    def _addresses(self, name: str, service: dict[str, Any]) -> list[str]:
        out = []
        environment = service.get("environment") or {}
        for key, host in environment.items():  # the app's CHROMA_HOST and CHROMA_PORT, and the like
            port = environment.get(key.removesuffix("_HOST") + "_PORT") if key.endswith("_HOST") else None
            if port and str(port).isdigit() and "." not in str(host) and str(host) != "0.0.0.0":
                problem = self._reach(name, str(host), int(port))
                if problem:
                    out.append(f"environment.{key}: {problem}")
        for key, value in environment.items():
            for host, port in _ADDRESS.findall(str(value)):
                if host in ("localhost",) or "." in host:
                    continue
                problem = self._reach(name, host, int(port))
                if problem:
                    out.append(f"environment.{key}: {problem}")
        return out

    def _edge_upstreams(self) -> list[str]:
        out = []
        for ref in (self.services.get(self.edge) or {}).get("configs", []):
            declared = (self.project.get("configs") or {}).get(ref["source"], {})
            text = self.files.get(str(declared.get("file", "")).removeprefix("./"), "")
            for host, port in _UPSTREAM.findall(text):
                problem = self._reach(self.edge, host, int(port))
                if problem:
                    out.append(f"services.{self.edge}: {declared['file']}: upstream {problem}")
        return out

    def _files(self) -> list[str]:
        out = []
        for name, config in (self.project.get("configs") or {}).items():
            path = str(config.get("file", ""))
            if not path.startswith(_CONFIG_FILE) or path.removeprefix("./") not in self.files:
                out.append(f"configs.{name}: {path!r} is not a file rendered beside compose.yaml")
        for name, secret in (self.project.get("secrets") or {}).items():
            path = str(secret.get("file", ""))
            if not path.startswith("${") and not path.startswith("/"):
                out.append(f"secrets.{name}: {path!r} lies in the project: secret files live on the server only")
        for network, settings in (self.project.get("networks") or {}).items():
            members = [n for n, s in self.services.items() if network in (s.get("networks") or {})]
            if not members:
                out.append(f"networks.{network}: no service uses it")
            if network in self.services and not (settings or {}).get("internal"):
                out.append(f"networks.{network}: a service's own network must be internal")
        return out
