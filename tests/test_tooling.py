"""Lint runs clean, from the same script `make lint` runs; the make targets are wired as documented."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import ENV_DIRS, ROOT
from packaging.requirements import Requirement
from packaging.version import Version
from tools import missing, wait_for_go_build

NODE_BIN = ROOT / ".tools" / "node_modules" / ".bin"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def make_dry_run(target: str, *variables: str) -> list[str]:
    # Under `make test` (CI) this make is nested: without --no-print-directory it adds "Entering directory".
    result = run("make", "--no-print-directory", "-n", target, *variables)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_lint_script_passes() -> None:
    # Exactly what `make lint` runs after its set-up: ruff check, ruff format --check, mypy --strict.
    result = run(str(ROOT / "scripts" / "lint.sh"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_lint_sets_up_then_runs_the_lint_script() -> None:
    assert make_dry_run("lint") == ["scripts/setup.sh lint", "scripts/lint.sh"]


def test_lint_setup_installs_the_linters() -> None:
    lint = (ROOT / "requirements" / "lint.txt").read_text().splitlines()
    assert {line.split("==")[0] for line in lint if "==" in line} >= {"ruff", "mypy"}
    assert "-r lint.txt" in (ROOT / "requirements" / "test.txt").read_text().splitlines()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "  lint) reqs=requirements/lint.txt ;;" in setup


def test_restore_and_backups_targets_run_the_app_in_its_venv() -> None:
    # Finding 3: the documented command must not depend on the caller's python.
    setup, restore = make_dry_run("restore", "ENV=prod", "STORE=chroma", "BACKUP_ID=20260320T020000.123Z")
    assert setup == "scripts/setup.sh synth"
    assert restore.strip() == '.venv/bin/python -O app.py restore "prod" "chroma" --backup-id "20260320T020000.123Z"'
    _, forced = make_dry_run("restore", "ENV=prod", "STORE=redis", "FORCE=1")
    assert forced.strip() == '.venv/bin/python -O app.py restore "prod" "redis"  --force'
    setup, backups = make_dry_run("backups", "ENV=prod", "STORE=redis")
    assert (setup, backups.strip()) == ("scripts/setup.sh synth", '.venv/bin/python -O app.py backups "prod" "redis"')


def test_docs_use_the_make_targets() -> None:
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    offenders = [str(p.relative_to(ROOT)) for p in docs if "python app.py restore" in p.read_text()]
    assert offenders == []
    assert "make restore ENV=$ENV STORE=redis" in (ROOT / "docs" / "backup-restore.md").read_text()


def test_diff_against_committed_dist_reports_per_object(tmp_path: Path) -> None:
    result = run("make", "-s", "diff", "SETUP=true", "ENV=dev")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "dev: no change"


def test_cdk8s_synth_is_quiet_and_ends_with_the_synth_summary(tmp_path: Path) -> None:
    if not (NODE_BIN / "cdk8s").exists():
        pytest.fail("cdk8s-cli missing: run scripts/setup.sh synth")
    outdir = tmp_path / "dist"
    cli = f"cdk8s synth --no-check-upgrade --app '{sys.executable} -O app.py --outdir {outdir}'"
    result = run("make", "-s", "cdk8s-synth", "SETUP=true", f"CDK8S_SYNTH={cli}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"synthesized aws, azure, dev, prod, single, staging into {outdir}\n"
    assert result.stderr == ""


def test_ci_gate_is_strict_whoever_runs_it(tmp_path: Path) -> None:
    """Issue 9 defect 12: a missing tool failed only when the caller happened to set CI=true.

    .ci/run is run with a stand-in `make` that records what it sees: CI must be set for `make test`."""
    fake = tmp_path / "bin"
    fake.mkdir()
    seen = tmp_path / "seen"
    (fake / "make").write_text(f'#!/bin/sh\necho "$1 CI=${{CI:-unset}}" >> {seen}\nexit 3\n')
    (fake / "make").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert result.returncode == 3  # the gate stops at the failed `make test`
    assert seen.read_text().splitlines() == ["test CI=true"]


# --- scripts/setup.sh in a sandbox clone (issue 21) -------------------------------------------
# A copy of the set-up script and its inputs, run with stand-ins for npm, node, go, apt-get and
# dpkg-query that record what they are asked to do. The venv's python is the real one (so the
# pin check is real) except that `pip install` is recorded instead of run.

NODE_LTS = "22.23.3"
CDK8S_CLI = "2.207.60"

FAKES = {
    # The machine's node is too old, so set-up installs node@22 from npm.
    "node": '[ "$1" = --version ] && echo v18.19.0 || echo 18',
    # npm install --prefix DIR ... PKGS: FAKE_NPM=half leaves only a lock file (the reported failure).
    "npm": r"""
echo "npm $*" >> "$LOG"; mkdir -p "$SANDBOX/inflight"
[ -e "$SANDBOX/inflight/npm" ] && echo "OVERLAP" >> "$LOG"; touch "$SANDBOX/inflight/npm"
sleep "${FAKE_NPM_SLEEP:-0}"; rm -f "$SANDBOX/inflight/npm"
mkdir -p .tools/node_modules/.bin; touch .tools/node_modules/.package-lock.json
[ "${FAKE_NPM:-}" = half ] && exit 0
printf '#!/bin/sh\necho v%s\n' "$NODE_LTS" > .tools/node_modules/.bin/node
printf '#!/bin/sh\necho %s\n' "$CDK8S_CLI" > .tools/node_modules/.bin/cdk8s
chmod +x .tools/node_modules/.bin/*
""",
    # go build -o OUT/ PKG...: one stand-in binary per package; FAKE_GO_FAIL=<module folder> fails it.
    "go": r"""
case "$1" in
  env) echo go1.26.8 ;;
  list) mkdir -p "$SANDBOX/kwok/kustomize/stage/node/fast" "$SANDBOX/kwok/kustomize/stage/pod/fast" \
          "$SANDBOX/kwok/kustomize/stage/node/heartbeat-with-lease"
        for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
                 pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
          echo "kind: Stage" > "$SANDBOX/kwok/kustomize/stage/$f.yaml"; done
        echo "$SANDBOX/kwok" ;;
  build)
    # `go build -trimpath std`: the standard library, built once before the tools (under a lock).
    [ "${*: -1}" = std ] && { echo "go build std $(basename "$PWD") $(date +%s.%N)" >> "$LOG"; exit 0; }
    echo "go build start $(basename "$PWD") $(date +%s.%N)" >> "$LOG"
    # FAKE_GO_WAIT_FOR_APT: a build that finishes only once apt-get has installed (up to 60 s): it passes
    # only if the build runs alongside the apt step.
    if [ -n "${FAKE_GO_WAIT_FOR_APT:-}" ]; then
      for _ in $(seq 600); do [ -e "$SANDBOX/dpkg" ] && break; sleep 0.1; done
      [ -e "$SANDBOX/dpkg" ] || echo "go build saw no apt-get" >> "$LOG"
    fi
    [ "${FAKE_GO_FAIL:-}" = "$(basename "$PWD")" ] && { echo "compile error in $(basename "$PWD")" >&2; exit 1; }
    # FAKE_GO_HOLD=<module folder>: that build ends only once $SANDBOX/release exists (up to 60 s).
    if [ "${FAKE_GO_HOLD:-}" = "$(basename "$PWD")" ]; then
      for _ in $(seq 600); do [ -e "$SANDBOX/release" ] && break; sleep 0.1; done
    fi
    shift; out=""; while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2 ;; -*) shift ;; *) break ;; esac; done
    # -o DIR/ names each binary after its package; -o FILE names the one binary.
    for pkg in "$@"; do
      case "$out" in */) bin="$out$(basename "$pkg")" ;; *) bin=$out ;; esac
      printf '#!/bin/sh\necho v1\n' > "$bin"; chmod +x "$bin"
    done
    echo "go build end $(basename "$PWD") $(date +%s.%N)" >> "$LOG" ;;
esac
""",
    "apt-get": r"""echo "apt-get $* $(date +%s.%N)" >> "$LOG"
[ "$1" = install ] && for p in "$@"; do echo "$p" >> "$SANDBOX/dpkg"; done; exit 0""",
    "dpkg-query": r"""shift 2; status=0
for p in "$@"; do if grep -qx "$p" "$SANDBOX/dpkg" 2>/dev/null; then echo "$p install ok installed"
else echo "dpkg-query: no packages found matching $p" >&2; status=1; fi; done; exit $status""",
    "promtool": "exit 0",
    "sudo": 'exec "$@"',
}


class Sandbox:
    """A sandbox clone: ``run(mode)`` runs its scripts/setup.sh with the stand-ins on PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root / "clone"
        self.bin = root / "bin"
        self.log = root / "calls.log"
        for folder in (
            "scripts",
            "requirements",
            "constructs/kgstack",
            "scripts/control-plane/kwok",
            "scripts/control-plane/kubeconform",
            "scripts/control-plane/helm",
            "scripts/control-plane/etcd",
            "scripts/control-plane/node/coredns",
            "scripts/envoy-gateway",
            "scripts/compose",
            "docker/agent",
            ".venvs",
        ):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        for path in (
            "scripts/setup.sh",
            "pyproject.toml",
            "docker/agent/requirements.lock",
            "scripts/control-plane/etcd/main.go",
            "scripts/control-plane/node/coredns/main.go",
            *(
                f"scripts/control-plane/{m}go.{e}"
                for m in ("", "kwok/", "kubeconform/", "helm/", "node/")
                for e in ("mod", "sum")
            ),
            *(f"scripts/{m}/go.{e}" for m in ("envoy-gateway", "compose") for e in ("mod", "sum")),
            *(str(p.relative_to(ROOT)) for p in (ROOT / "requirements").iterdir()),
        ):
            (self.root / path).write_bytes((ROOT / path).read_bytes())
        (self.root / "scripts/setup.sh").chmod(0o755)
        (self.root / "constructs/kgstack/__init__.py").write_text("")
        self.bin.mkdir()
        header = f"#!/bin/bash\nLOG={self.log}; SANDBOX={root}; NODE_LTS={NODE_LTS}; CDK8S_CLI={CDK8S_CLI}\n"
        for name, body in FAKES.items():
            (self.bin / name).write_text(header + body)
            (self.bin / name).chmod(0o755)
        # `python3 -m venv DIR`: a venv whose python is a real one holding the pins (this venv, or the
        # scanner's own venv for .venvs/<tool>), except that pip only records what it is asked.
        (self.bin / "python3").write_text(
            "#!/bin/bash\n"
            f'real={sys.executable}; [ -x "{ROOT}/.venvs/$(basename "$3")/bin/python" ] && '
            f'real="{ROOT}/.venvs/$(basename "$3")/bin/python"\n'
            'mkdir -p "$3/bin"\n'
            f'printf \'#!/bin/bash\\n[ "$1 $2" = "-m pip" ] && {{ echo "pip $*" >> {self.log}; exit 0; }}\\n'
            '[ "$1 $2" = "-m compileall" ] && exit 0\\n'
            'exec %s "$@"\\n\' "$real" > "$3/bin/python"\n'
            'chmod +x "$3/bin/python"\n'
        )
        (self.bin / "python3").chmod(0o755)

    def run(self, mode: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        path = f"{self.bin}:/usr/bin:/bin"
        return subprocess.run(
            ["scripts/setup.sh", mode, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": path, "HOME": str(self.root), "PYTHON": str(self.bin / "python3"), **env},
        )

    def start(self, mode: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["scripts/setup.sh", mode],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                "PATH": f"{self.bin}:/usr/bin:/bin",
                "HOME": str(self.root),
                "PYTHON": str(self.bin / "python3"),
                **env,
            },
        )

    def calls(self, tool: str) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if line.startswith(f"{tool} ")]


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_setup_stamps_nothing_half_installed_and_says_what_failed(sandbox: Sandbox) -> None:
    """Issue 21: npm left .tools/node_modules holding only its lock file, and set-up stamped Node as installed."""
    half = sandbox.run("synth", FAKE_NPM="half")
    assert half.returncode == 1
    assert "[setup] FAILED: .tools/jsii-node does not run" in half.stderr
    assert not (sandbox.root / ".tools" / ".setup").exists()
    assert half.stdout == ""
    whole = sandbox.run("synth")
    assert whole.returncode == 0, whole.stderr
    assert (sandbox.root / ".tools" / ".setup").exists()
    assert f"jsii runs on node v{NODE_LTS}; cdk8s-cli {CDK8S_CLI}" in whole.stderr
    assert whole.stdout == ""


def test_setup_repairs_a_broken_tools_folder(sandbox: Sandbox) -> None:
    """A stamped but broken .tools (what a half-finished set-up left) is installed again on the next run."""
    assert sandbox.run("synth").returncode == 0
    assert sandbox.run("synth").returncode == 0
    assert len(sandbox.calls("npm")) == 1  # stamped and working: skipped
    (sandbox.root / ".tools" / "node_modules" / ".bin" / "cdk8s").unlink()
    repaired = sandbox.run("synth")
    assert repaired.returncode == 0, repaired.stderr
    assert "[setup] repairing: cdk8s-cli is not installed in .tools/node_modules" in repaired.stderr
    assert len(sandbox.calls("npm")) == 2
    assert repaired.stdout == ""


def test_setup_checks_the_venv_pins_before_it_stamps(sandbox: Sandbox) -> None:
    base = sandbox.root / "requirements" / "base.txt"
    base.write_text(base.read_text() + "kga-not-installed==1.0\n")
    result = sandbox.run("synth")
    assert result.returncode == 1
    assert "kga-not-installed is not installed" in result.stderr
    assert not (sandbox.root / ".venv" / ".setup-synth").exists()


def test_two_setups_never_run_at_once(sandbox: Sandbox) -> None:
    """Two terminals (or make -j) in one clone: the second waits for the first, then finds Node installed."""
    first = sandbox.start("synth", FAKE_NPM_SLEEP="3")
    deadline = time.monotonic() + 60
    while not sandbox.calls("npm") and time.monotonic() < deadline:
        time.sleep(0.1)
    second = sandbox.start("synth")
    outs = [proc.communicate(timeout=120) for proc in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outs
    assert "another set-up runs in this clone; waiting for it" in outs[1][1]
    assert len(sandbox.calls("npm")) == 1
    assert "OVERLAP" not in sandbox.log.read_text()
    assert [out for out, _ in outs] == ["", ""]


def _require_scanner_venvs() -> None:
    if not all((ROOT / ".venvs" / tool / "bin" / "python").exists() for tool in ("checkov", "nca")):
        missing("the scanners' venvs are missing (scripts/setup.sh check creates them)")


def test_check_setup_installs_only_what_check_uses(sandbox: Sandbox) -> None:
    """Issue 21: `make check` installed the whole test toolchain (Chromium, podman, the Go build)."""
    _require_scanner_venvs()
    result = sandbox.run("check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sandbox.calls("go build") == [] and "go " not in sandbox.log.read_text()
    installs = [line.split()[5:-1] for line in sandbox.calls("apt-get") if " install " in line]
    assert installs == [["prometheus"]]
    # The main venv and the scanners' own venvs, which install beside it (in any order).
    pips = sorted(line.split(" -r ")[1] for line in sandbox.calls("pip") if " -r " in line)
    assert pips == ["requirements/check.txt", "requirements/tool-checkov.txt", "requirements/tool-nca.txt"]
    assert "-r check.txt" in (sandbox.root / "requirements" / "test.txt").read_text().splitlines()
    assert make_dry_run("check") == ["scripts/setup.sh check", ".venv/bin/python scripts/check.py"]


def test_go_builds_run_alongside_the_other_steps_and_failures_are_surfaced(sandbox: Sandbox) -> None:
    _require_scanner_venvs()
    result = sandbox.run("test", FAKE_GO_WAIT_FOR_APT="1", FAKE_GO_FAIL="kubeconform")
    assert result.returncode == 1
    assert "[setup] kubeconform failed; the end of .cache/setup-kubeconform.log:" in result.stderr
    assert "compile error in kubeconform" in result.stderr
    assert "FAILED: background step(s): kubeconform" in result.stderr
    cp = sandbox.root / ".tools" / "control-plane"
    assert (cp / ".setup").exists() and (cp / ".setup-kwok").exists() and not (cp / ".setup-kubeconform").exists()
    assert {"kube-apiserver", "etcd", "kubectl", "kwok"} <= {p.name for p in cp.iterdir()}
    # apt-get ran while the Go builds did (each build waited for it).
    assert "go build saw no apt-get" not in sandbox.log.read_text()
    ends = [float(line.split()[-1]) for line in sandbox.calls("go build end")]
    apt = [float(line.split()[-1]) for line in sandbox.calls("apt-get")]
    assert min(apt) < min(ends)
    # Every build first asked for the standard library (the first compiles it; the rest find it cached).
    assert len(sandbox.calls("go build std")) == len(sandbox.calls("go build start"))
    # The next run builds only what failed.
    again = sandbox.run("test")
    assert again.returncode == 0, again.stderr
    assert [line.split()[3] for line in sandbox.calls("go build start")][7:] == ["kubeconform"]
    assert again.stdout == ""
    # A binary that no longer runs (a truncated write) is built again, though its stamp is current.
    (cp / "kubectl").write_bytes(b"\x7fELF\x00\x00truncated")
    repaired = sandbox.run("test")
    assert repaired.returncode == 0, repaired.stderr
    assert "repairing: .tools/control-plane/kubectl does not run (exit 126)" in repaired.stderr
    assert [line.split()[3] for line in sandbox.calls("go build start")][8:] == ["control-plane"]


TEST_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from tools import _alive, wait_for_go_build
cache = Path.cwd() / ".cache"
assert _alive(cache / "setup-envoy-gateway.pid") and not (cache / "setup-envoy-gateway.rc").exists()
print("the tests started while envoy-gateway built", flush=True)
Path({release!r}).touch()
wait_for_go_build("envoy-gateway", cache=cache)
print("envoy-gateway", (cache / "setup-envoy-gateway.rc").read_text().strip(), flush=True)
"""


def test_make_test_runs_the_tests_while_the_go_builds_finish(sandbox: Sandbox, tmp_path: Path) -> None:
    """Issue 21: a fresh machine's `make test` waited for every Go build before the first test. Now the
    tests start once the rest is set up; a test that needs a Go-built tool waits for its build (tests/tools.py
    wait_for_go_build), and a build that fails after the tests passed still fails `make test`."""
    _require_scanner_venvs()
    assert make_dry_run("test") == ["scripts/setup.sh test -- .venv/bin/python -m pytest"]
    script = tmp_path / "test_run.py"
    script.write_text(TEST_RUN.format(tests=str(ROOT / "tests"), release=str(tmp_path / "release")))
    result = sandbox.run("test", "--", sys.executable, str(script), FAKE_GO_HOLD="envoy-gateway")
    assert result.returncode == 0, result.stderr
    # The run's stdout is the command's: set-up's chatter stays on stderr.
    assert result.stdout.splitlines() == ["the tests started while envoy-gateway built", "envoy-gateway 0"]
    assert "[setup] running " in result.stderr and "while the Go builds finish" in result.stderr
    assert not list((sandbox.root / ".cache").glob("setup-*.pid"))  # each build removed its pid file
    # Each step has its own log, status and pid files: the Node.js install and the node add-ons' build once
    # shared "node", and the first to end removed the other's pid file.
    logs = {name: (sandbox.root / ".cache" / f"setup-{name}.log").read_text() for name in ("node", "nodejs")}
    assert "building github.com/cloudnativelabs/kube-router" in logs["node"] and "cdk8s-cli" not in logs["node"]
    assert "installing cdk8s-cli" in logs["nodejs"]
    # The tests pass, a build fails: make test fails, naming it; the test waiting for it is told why.
    (sandbox.root / ".tools/control-plane/.setup-helm").unlink()
    failed = sandbox.run("test", "--", "true", FAKE_GO_FAIL="helm")
    assert failed.returncode == 1
    assert "FAILED: background step(s): helm" in failed.stderr
    told = r"set-up's helm build failed \(exit 1\); its log: \.cache/setup-helm\.log"
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception), match=told):  # a skip, or in CI a failure
        wait_for_go_build("helm", cache=sandbox.root / ".cache")
    # Anything but `test -- COMMAND` is refused with the usage.
    wrong = sandbox.run("check", "--", "true")
    assert wrong.returncode == 2 and "usage:" in wrong.stdout + wrong.stderr


def test_modules_that_wait_for_go_builds_run_last_in_the_order_the_builds_end() -> None:
    """A module that needs a late build (control-plane) ran before one whose build had long ended (compose), so
    `make test` waited on the first while it could run the second: the modules run in the builds' cold order."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *(str(ROOT / "tests" / f"test_{m}.py") for m in ("argo_sync", "compose_run", "kubeconform", "alerts"))],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=600,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    modules = list(dict.fromkeys(line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line))
    assert modules == [f"tests/test_{m}.py" for m in ("alerts", "kubeconform", "compose_run", "argo_sync")]


def test_check_scans_the_environments_synth_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: `make check` listed dist/'s environments before it synthesized, so a new one went unscanned."""
    spec = importlib.util.spec_from_file_location("check_script", ROOT / "scripts" / "check.py")
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    (tmp_path / "dist" / "dev").mkdir(parents=True)
    (tmp_path / "dist" / "dev" / "kustomization.yaml").touch()
    (tmp_path / "dist" / "single" / "compose").mkdir(parents=True)  # Compose only: no manifests to scan
    (tmp_path / "dist" / "argocd").mkdir()
    monkeypatch.setattr(check, "ROOT", tmp_path)
    commands: dict[str, list[str]] = {}

    def run(name: str, command: list[str]) -> tuple[str, float, int, str]:
        if name.startswith("synth"):
            (tmp_path / "dist" / "qa").mkdir()  # synth writes a new environment
            (tmp_path / "dist" / "qa" / "kustomization.yaml").touch()
        commands[name] = command
        return name, 0.0, 0, ""

    monkeypatch.setattr(check, "run", run)
    assert check.main() == 0
    scanned = commands["checkov"]
    assert [scanned[i + 1] for i, arg in enumerate(scanned) if arg == "-d"] == ["dist/dev", "dist/qa"]


def _declared() -> list[Requirement]:
    return [
        Requirement(line) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ]


def test_no_later_epoch_satisfies_a_declared_range() -> None:
    """Issue 21: `>=1769699379!11.6.0` let pip pick 1769699998!10.1.0, an older Grafana line under a later epoch."""
    loose = []
    for requirement in _declared():
        epoch = max(Version(spec.version).epoch for spec in requirement.specifier)
        if requirement.specifier.contains(f"{epoch + 1}!0", prereleases=True):
            loose.append(str(requirement))
    assert loose == []
    grafana = next(r for r in _declared() if r.name == "grafana-foundation-sdk")
    assert not grafana.specifier.contains("1769699998!10.1.0")
    assert grafana.specifier.contains("1769699379!11.6.0")


@pytest.mark.slow
def test_library_installed_from_its_metadata_renders_the_committed_dashboards(tmp_path: Path) -> None:
    """`pip install .` without the lock (requirements/base.txt) into a fresh venv: the dashboards are dist/'s.

    Its time is pip resolving and installing from the pip cache that set-up filled (about a minute)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "constructs", src / "constructs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src)
    venv = tmp_path / "venv"
    # Without its own pip (ensurepip takes a while): this venv's pip installs into it (--python).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / "render.py"
    script.write_text(
        "import sys\n"
        "import kgstack\n"
        "import cdk8s\n"
        "from kgstack import AgentStack, load_environments\n"
        "from kgstack.publish import synth\n"
        f"assert kgstack.__file__.startswith({str(venv)!r}), kgstack.__file__\n"
        f"envs = load_environments(__import__('pathlib').Path({str(ROOT / 'environments')!r}))\n"
        "for env, files in synth([AgentStack(cdk8s.App(), e) for e in envs if e.on_kubernetes]).items():\n"
        "    for name, text in files.items():\n"
        "        if '-dashboard-' in name:\n"
        f"            out = __import__('pathlib').Path({str(tmp_path / 'out')!r}) / env / name\n"
        "            out.parent.mkdir(parents=True, exist_ok=True); out.write_text(text)\n"
    )
    rendered = subprocess.run(
        [str(venv / "bin" / "python"), str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert rendered.returncode == 0, rendered.stderr
    boards = sorted((tmp_path / "out").glob("*/*.yaml"))
    assert len(boards) >= 2 * len(ENV_DIRS)
    differ = [
        str(p.relative_to(tmp_path / "out"))
        for p in boards
        if p.read_text() != (ROOT / "dist" / p.relative_to(tmp_path / "out")).read_text()
    ]
    assert differ == []


@pytest.mark.parametrize("code", [0, 1, 2])
def test_diff_exit_codes_survive_the_wrapper_and_make_documents_its_own(tmp_path: Path, code: int) -> None:
    """Issue 21: make turned make diff's 0/1/2 into 2. scripts/diff keeps them; make diff can only say 0 or 2.

    A stand-in synth_diff.py exits with the code it is given as ENV."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "diff", tmp_path / "scripts" / "diff")
    (tmp_path / "scripts" / "synth_diff.py").write_text("import sys\nsys.exit(int(sys.argv[1]))\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    direct = subprocess.run([str(tmp_path / "scripts" / "diff"), str(code)], env={**os.environ, "SETUP": "true"})
    assert direct.returncode == code
    through_make = subprocess.run(
        ["make", "-s", "-C", str(tmp_path), "-f", str(ROOT / "Makefile"), "diff", "SETUP=true", f"ENV={code}"],
        capture_output=True,
    )
    assert through_make.returncode == (0 if code == 0 else 2)
    failed_setup = subprocess.run([str(tmp_path / "scripts" / "diff"), "0"], env={**os.environ, "SETUP": "false"})
    assert failed_setup.returncode == 2
    assert "scripts/diff" in (ROOT / "README.md").read_text()
