"""renovate.json (issue 24): every pin that goes stale is one Renovate bumps, and the Chroma pair moves together.

Renovate itself is not run here: its npm install (measured cold: 2 min 4 s, 607 packages, 341 MB)
does not fit CI's set-up budget (docs/deployment.md, "Dependency updates"); its validator passed
this file once by hand. Its regex managers are applied the way Renovate applies them (each
``matchStrings`` pattern, global, over each file its ``managerFilePatterns`` select; the
JavaScript ``(?<name>`` groups read as Python's ``(?P<name>``), and the pins they must find are
read from the files independently: the ``apt-get install <package>="${VAR}"`` lines of each
Dockerfile, its ``FROM``, and the Chroma server and client pins wherever they are written.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

CONFIG = json.loads((ROOT / "renovate.json").read_text())
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
_APT_PIN = re.compile(r"""(?<![\w$])"?(?P<package>[a-z0-9][a-z0-9+.-]*)="?\$\{(?P<var>[A-Z][A-Z0-9_]*)\}""")
_ARG = re.compile(r"^ARG (?P<var>[A-Z][A-Z0-9_]*)=(?P<value>\S+)$", re.MULTILINE)


def _repository_files() -> list[str]:
    """Every file of the checkout, relative, without the (symlinked) toolchains and caches."""
    out = []
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") or d == ".github")
        out += [(Path(top) / n).relative_to(ROOT).as_posix() for n in names]
    return sorted(out)


FILES = _repository_files()


def _files(patterns: list[str]) -> list[Path]:
    """Files of the repository a ``managerFilePatterns`` list selects (the ``/regex/`` form)."""
    for pattern in patterns:
        assert pattern.startswith("/") and pattern.endswith("/"), f"{pattern}: use the /regex/ form"
    return [ROOT / rel for rel in FILES if any(re.search(p[1:-1], rel) for p in patterns)]


def _python(js: str) -> re.Pattern[str]:
    return re.compile(js.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!"))


def _template(template: str, groups: dict[str, str]) -> str:
    """The handlebars templates renovate.json uses: a literal, a group, or ``replace`` over ``lowercase`` of one."""
    if "{{" not in template:
        return template
    plain = re.fullmatch(r"\{\{\{?(\w+)\}?\}\}", template)
    if plain:
        return groups[plain[1]]
    call = re.fullmatch(r"\{\{\{replace '([^']*)' '([^']*)' \(lowercase (\w+)\)\}\}\}", template)
    assert call, f"{template}: a template this test does not read"
    return re.sub(call[1], call[2], groups[call[3]].lower())


def extract(manager: dict[str, Any], files: list[Path] | None = None, text: str | None = None) -> list[dict[str, str]]:
    """Renovate's regex manager over ``files`` (default: the ones it selects): one dependency per match."""
    deps = []
    sources = [(p, p.read_text()) for p in (files if files is not None else _files(manager["managerFilePatterns"]))]
    if text is not None:
        sources = [(Path("<text>"), text)]
    for path, content in sources:
        for pattern in manager["matchStrings"]:
            for match in _python(pattern).finditer(content):
                groups = {k: v for k, v in match.groupdict().items() if v is not None}
                dep = {"file": str(path), **groups}
                for field in ("depName", "datasource", "versioning"):
                    if f"{field}Template" in manager:
                        dep[field] = _template(manager[f"{field}Template"], groups)
                deps.append(dep)
    return deps


def manager(datasource: str, file: str) -> dict[str, Any]:
    """The one custom manager of ``datasource`` that selects ``file``."""
    (found,) = [
        m
        for m in CONFIG["customManagers"]
        if m.get("datasourceTemplate") == datasource and ROOT / file in _files(m["managerFilePatterns"])
    ]
    return found


def apt_pins(text: str) -> dict[str, tuple[set[str], str]]:
    """``{VAR: ({packages installed at it}, ARG default)}`` from one Dockerfile."""
    defaults = {m["var"]: m["value"] for m in _ARG.finditer(text)}
    pins: dict[str, tuple[set[str], str]] = {}
    # Only what apt-get installs: one logical RUN line (continuations joined), from "apt-get install" on.
    commands = [line for line in text.replace("\\\n", " ").splitlines() if "apt-get install" in line]
    installs = "\n".join(line[line.index("apt-get install") :] for line in commands)
    for m in _APT_PIN.finditer(installs):
        packages, _ = pins.setdefault(m["var"], (set(), defaults[m["var"]]))
        packages.add(m["package"])
    return pins


# ------------------------------------------------------------------ Debian pins


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_debian_pin_is_matched_under_the_name_apt_installs(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    pins = apt_pins(text)
    deps = extract(manager("deb", dockerfile.relative_to(ROOT).as_posix()), [dockerfile])
    found = {d["depName"]: d["currentValue"] for d in deps}
    assert len(found) == len(deps) == len(pins), (deps, pins)
    for var, (packages, default) in pins.items():
        hits = [name for name in found if name in packages]
        assert hits, f"{dockerfile.parent.name}: {var} ({sorted(packages)}={default}) is matched by no manager"
        assert found[hits[0]] == default


def test_a_pin_written_another_way_would_be_reported() -> None:
    # The check above fails on a pin the manager cannot see, whatever the reason.
    deb = manager("deb", "docker/agent/Dockerfile")
    text = 'ENV CURL_VERSION=8.5.0-2\nRUN apt-get install -y curl="${CURL_VERSION}"\n'
    assert apt_pins(text.replace("ENV", "ARG")) and not extract(deb, text=text)
    assert extract(deb, text=text.replace("ENV", "ARG")) == [
        {"file": "<text>", "depName": "curl", "currentValue": "8.5.0-2", "datasource": "deb", "versioning": "deb"}
    ]


def test_debian_lookups_use_the_release_of_the_base_images() -> None:
    suites = set()
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        if apt_pins(text):
            (base,) = [m["value"] for m in _ARG.finditer(text) if m["var"] == "BASE_IMAGE"]
            suites.add(re.search(r"-(bookworm|trixie|bullseye)\b", base)[1])  # type: ignore[index]
    (suite,) = suites
    (rule,) = [r for r in CONFIG["packageRules"] if r.get("matchDatasources") == ["deb"]]
    looked_up = {re.search(r"suite=([\w-]+)", url)[1] for url in rule["registryUrls"]}  # type: ignore[index]
    # The release, its point updates and its security archive, where Debian publishes the fixes.
    assert looked_up == {suite, f"{suite}-updates", f"{suite}-security"}


# ------------------------------------------------------------------ base images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_base_image_is_matched_with_its_digest(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE))
    sources = {s for s in re.findall(r"^FROM (\S+)", text, re.MULTILINE) if s not in stages}
    assert sources == {"${BASE_IMAGE}"}, f"{dockerfile}: a FROM this test does not follow"
    (default,) = [m["value"] for m in _ARG.finditer(text) if m["var"] == "BASE_IMAGE"]
    (dep,) = extract(manager("docker", dockerfile.relative_to(ROOT).as_posix()), [dockerfile])
    assert f"{dep['depName']}:{dep['currentValue']}@{dep['currentDigest']}" == default


def test_the_debian_pins_and_base_images_are_one_pull_request() -> None:
    groups = {
        r["groupName"]
        for r in CONFIG["packageRules"]
        if "groupName" in r and r.get("matchManagers") == ["custom.regex"] and r.get("matchFileNames") == ["docker/**"]
    }
    assert len(groups) == 1
    for dockerfile in DOCKERFILES:
        assert dockerfile.relative_to(ROOT).as_posix().startswith("docker/")


# ------------------------------------------------------------------ the Chroma pair


def test_the_chroma_server_and_every_client_pin_are_one_group() -> None:
    # The server: what dist/ deploys; the clients: every chromadb pin written anywhere we build or test from.
    (release,) = {
        m[1]
        for p in (ROOT / "dist").glob("*/statefulset-*-chroma.yaml")
        for c in yaml.safe_load(p.read_text())["spec"]["template"]["spec"]["containers"]
        if (m := re.fullmatch(r"\S*/chromadb/chroma:([^@]+)@sha256:[0-9a-f]{64}", c["image"]))
    }
    clients = {
        p: m
        for p in [*(ROOT / "docker").rglob("requirements*"), *(ROOT / "requirements").glob("*.txt")]
        for m in re.findall(r"^(chromadb(?:-client)?)==(\S+)$", p.read_text(), re.MULTILINE)
    }
    assert len(clients) >= 3
    upstream = manager("docker", "constructs/kgstack/environment.py")
    (server,) = [d for d in extract(upstream) if d["depName"].endswith("/chromadb/chroma")]
    assert server["currentValue"] == release
    pip_files = _files(CONFIG["pip_requirements"]["managerFilePatterns"])
    for path, (name, version) in clients.items():
        assert path in pip_files, f"{path.relative_to(ROOT)}: Renovate does not read it"
        assert version == release, f"{path.relative_to(ROOT)}: {name}=={version}, the server is {release}"
    (rule,) = [r for r in CONFIG["packageRules"] if server["depName"] in r.get("matchPackageNames", [])]
    assert set(rule["matchPackageNames"]) >= {server["depName"], *(name for name, _ in clients.values())}
    assert rule["groupName"]
    assert "enabled" not in rule


def test_every_upstream_image_with_a_digest_is_matched() -> None:
    text = (ROOT / "constructs" / "kgstack" / "environment.py").read_text()
    pinned = set(re.findall(r'"([\w./-]+)",\s*"[^"]+",\s*"sha256:[0-9a-f]{64}"', text))
    upstream = manager("docker", "constructs/kgstack/environment.py")
    assert {d["depName"] for d in extract(upstream)} == pinned
