"""Released digests: one file written by the release workflow; nothing invented; unreleased means not synced.

Issue 9 defect 5: staging and prod carried made-up digests, and prod's "digests
are pinned" rule passed on them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from backup_servers import wait_for
from conftest import ENV_DIRS, ROOT, env_data
from image_build import build_command, tool_command
from tools import free_port, missing, require_tool, stop

from kgstack.environment import parse_environment
from kgstack.gitops_chart import GitOpsTarget
from kgstack.releases import ReleasesError, load_releases, own_digest_problems, unreleased, with_releases

DIGEST = "sha256:" + "0" * 64
"""Plainly not a real image: only ever used inside these tests."""


def test_no_environment_file_pins_our_own_images() -> None:
    for path in sorted((ROOT / "environments").glob("*.yaml")):
        images = yaml.safe_load(path.read_text())["images"]
        for name in ("agent", "web", "backup"):
            assert "digest" not in images[name], f"{path.name}: images.{name}.digest"


def test_an_own_digest_in_an_environment_file_is_refused() -> None:
    data = env_data("prod", images__agent__digest=DIGEST)
    env = parse_environment(data, source="prod.yaml")
    assert own_digest_problems(env, "environments/prod.yaml") == [
        "environments/prod.yaml: images.agent.digest: digests of our own images come from "
        "environments/releases/images.yaml, written by the release workflow; remove it"
    ]


def test_unreleased_images_hold_back_automated_sync() -> None:
    env = parse_environment(env_data("dev"), source="dev.yaml")
    assert env.gitops is not None
    held = GitOpsTarget.of(env, env.gitops)
    assert held.unreleased and held.automated is False
    released = with_releases(
        env,
        {
            "ghcr.io/acme/knowledge-graph-agent": {"0.3.0": DIGEST},
            "ghcr.io/acme/knowledge-graph-agent-web": {"0.3.0": DIGEST},
            "ghcr.io/acme/kgbackup": {"0.1.0": DIGEST},
            "ghcr.io/acme/kga-redis": {"7.0.15-deb12u10": DIGEST},
        },
    )
    assert unreleased(released) == []
    assert released.images.agent.reference.endswith(f"@{DIGEST}")
    assert GitOpsTarget.of(released, released.gitops or env.gitops).automated is True  # dev syncs automatically


def test_dist_pins_exactly_the_recorded_digests_and_argocd_holds_back_the_unreleased() -> None:
    # Holds before and after the first release: a digest of ours in dist/ is one the release
    # workflow recorded for that tag, a recorded tag is always pinned, and an environment that
    # deploys an unrecorded tag never syncs automatically.
    releases = load_releases(ROOT / "environments")
    for folder in [ROOT / "dist" / env for env in ENV_DIRS]:
        refs = {m for path in folder.glob("*.yaml") for m in re.findall(r"ghcr\.io/acme/[^\s\"']+", path.read_text())}
        assert refs, folder.name
        for ref in refs:
            image, _, digest = ref.partition("@")
            repository, _, tag = image.rpartition(":")
            assert (digest or None) == releases.get(repository, {}).get(tag), f"{folder.name}: {ref}"
        (path,) = (ROOT / "dist" / "argocd").glob(f"*/application-kga-{folder.name}.yaml")
        app = yaml.safe_load(path.read_text())
        if any("@" not in ref for ref in refs):
            assert "automated" not in app["spec"].get("syncPolicy", {}), folder.name


def test_a_malformed_releases_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "images.yaml").write_text("ghcr.io/acme/kgbackup:\n  0.1.0: sha256:abc\n")
    with pytest.raises(ReleasesError, match=r"images.yaml: ghcr.io/acme/kgbackup.0.1.0: 'sha256:abc' is not"):
        load_releases(tmp_path)


def _release(envs: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    script = str(ROOT / "scripts" / "release_images.py")
    return subprocess.run(
        [sys.executable, script, "--environments", str(envs), *argv], capture_output=True, text=True, timeout=120
    )


def test_release_script_records_each_digest_under_the_version_it_was_built_as(tmp_path: Path) -> None:
    """Issue 24: a tagless digest was recorded under every tag an environment named, so moving staging to 0.4.0
    re-pointed prod's 0.3.0 pin, and bumping APP_VERSION alone was recorded under the old tag."""
    envs = tmp_path / "environments"
    shutil.copytree(ROOT / "environments", envs)
    staging = envs / "staging.yaml"
    staging.write_text(
        staging.read_text().replace(
            "knowledge-graph-agent-web\n    tag: 0.3.0", "knowledge-graph-agent-web\n    tag: 0.4.0"
        )
    )
    web = "ghcr.io/acme/knowledge-graph-agent-web"
    other = "sha256:" + "1" * 64
    assert _release(envs, f"{web}:0.3.0@{DIGEST}").returncode == 0
    tagless = _release(envs, f"{web}@{other}")
    assert tagless.returncode == 2 and "name the version the image was built as" in tagless.stderr
    assert load_releases(envs)[web] == {"0.3.0": DIGEST}  # nothing moved
    assert _release(envs, f"{web}:0.4.0@{other}").returncode == 0
    assert load_releases(envs)[web] == {"0.3.0": DIGEST, "0.4.0": other}  # staging's release left prod's pin
    text = (envs / "releases" / "images.yaml").read_text()
    assert text.startswith("# Released digests of our own images")
    bad = _release(envs, "kgbackup:latest")
    assert bad.returncode == 2 and "expected REPOSITORY:VERSION@sha256" in bad.stderr


def test_release_script_refuses_a_repository_no_environment_deploys(tmp_path: Path) -> None:
    """Issue 24: the workflow pushes to ghcr.io/<owner> while the environments name ghcr.io/acme; say so."""
    envs = tmp_path / "environments"
    shutil.copytree(ROOT / "environments", envs)
    before = (envs / "releases" / "images.yaml").read_text()
    for argv in ([f"ghcr.io/bob/kgbackup:0.1.0@{DIGEST}"], ["--check", f"ghcr.io/bob/kgbackup@{DIGEST}"]):
        result = _release(envs, *argv)
        assert result.returncode == 2, result.stderr
        assert "no environment deploys ghcr.io/bob/kgbackup; they name ghcr.io/acme/kgbackup" in result.stderr
        assert "ghcr.io/<repository owner>" in result.stderr
    assert (envs / "releases" / "images.yaml").read_text() == before
    assert _release(envs, "--check", f"ghcr.io/acme/kgbackup@{DIGEST}").returncode == 0


# ------------------------------------------------------------- the release path, against a registry on loopback
WEB = "ghcr.io/acme/knowledge-graph-agent-web"
WEB_DOCKERFILE = ROOT / "docker" / "web" / "Dockerfile"


def _clean_checkout(checkout: Path) -> None:
    """The repository's files as a fresh clone has them: no venv, no caches, no tools."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (checkout / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name.decode())


def _clean_environment() -> dict[str, str]:
    """The machine's environment (its CA bundle settings included) without what the project adds:
    the Makefile's exports, a venv, and this checkout's .venv and .tools on PATH."""
    project = {"PYTHONPATH", "JSII_NODE", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PYTHONHOME"}
    clean = {k: v for k, v in os.environ.items() if k not in project and not k.startswith(("KGA_", "PYTEST_"))}
    clean["PATH"] = ":".join(p for p in os.environ["PATH"].split(":") if p and not p.startswith(str(ROOT)))
    return clean


def _workflow_record_call() -> str:
    bump = "\n".join(
        step.get("run", "")
        for step in yaml.safe_load((ROOT / ".github" / "workflows" / "main.yml").read_text())["jobs"]["bump"]["steps"]
    )
    call = next(line.strip() for line in bump.splitlines() if "record_release.sh" in line)
    assert call == 'scripts/record_release.sh "${verify[@]}" "${refs[@]}"'
    return call


def _ok(command: list[str], timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    assert result.returncode == 0, f"{' '.join(command[:8])}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


class LocalRegistry:
    """Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1, storage under ``folder``."""

    def __init__(self, folder: Path) -> None:
        exe = require_tool("docker-registry", hint="apt-get install docker-registry (scripts/setup.sh test)")
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        config = folder / "registry.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(folder / "storage")}},
                    "http": {"addr": self.address},
                }
            )
        )
        self.log = (folder / "registry.log").open("wb")
        self.proc = subprocess.Popen([exe, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        url = f"http://{self.address}/v2/"
        wait_for(lambda: urllib.request.urlopen(url, timeout=2).status == 200, "docker-registry", self.proc)

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    (tmp_path / "registry").mkdir()
    server = LocalRegistry(tmp_path / "registry")
    yield server
    server.stop()


class SigningKey:
    """An OpenPGP key pair (gpg, no passphrase) in a short-lived home; ``close`` stops its agent."""

    def __init__(self, folder: Path, name: str) -> None:
        self.gpg = require_tool("gpg", hint="apt-get install gpg (skopeo's signing needs it)")
        # gpg-agent's socket lives in the home: keep its path short.
        self.home = Path(tempfile.mkdtemp(prefix="kga-gpg-", dir="/tmp"))
        self.env = {**os.environ, "GNUPGHOME": str(self.home)}
        uid = f"kga {name} <{name}@example.com>"
        _ok([self.gpg, "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"], env=self.env)
        listing = _ok([self.gpg, "--with-colons", "--list-secret-keys"], env=self.env).stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.public_key = folder / f"{name}.asc"
        self.public_key.write_text(_ok([self.gpg, "--export", "--armor", self.fingerprint], env=self.env).stdout)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True, check=False
        )
        shutil.rmtree(self.home, ignore_errors=True)


class SignedImages:
    """docker/web built with podman for several versions, pushed to ``registry`` as the build job does
    (``sha-<version>`` only) and signed as the sign job does, with a key pair: skopeo's simple signing,
    signatures in a lookaside folder (Debian's skopeo has sigstore disabled)."""

    def __init__(self, folder: Path, registry: LocalRegistry) -> None:
        if os.geteuid() != 0:
            missing("the image build needs root (podman's chroot isolation)")
        podman, buildah = tool_command("podman"), tool_command("buildah")
        if podman is None or buildah is None:
            missing("podman and buildah not installed (scripts/setup.sh test)")
        self.podman, self.folder = podman, folder
        self.skopeo = require_tool("skopeo", hint="apt-get install skopeo (scripts/setup.sh test)")
        # Keys: the release's pair, and another that must not be trusted.
        self.keys = {"release": SigningKey(folder, "release"), "intruder": SigningKey(folder, "intruder")}
        self.lookaside = f"file://{folder / 'signatures'}"
        self.registries_d = folder / "registries.d"
        self.registries_d.mkdir()
        (self.registries_d / "lookaside.yaml").write_text(f"default-docker:\n  lookaside: {self.lookaside}\n")
        # docker/web on an empty base: Docker Hub is out of reach, and the Dockerfile only copies files.
        self.base = "localhost/kga-release-scratch:test"
        container = _ok([*buildah, "from", "scratch"]).stdout.strip()
        _ok([*buildah, "commit", "--rm", container, self.base])
        self.remote = f"{registry.address}/acme/knowledge-graph-agent-web"

    def close(self) -> None:
        for key in self.keys.values():
            key.close()

    def build_and_push(self, version: str) -> str:
        tag = f"localhost/kga-release-web:{version}"
        context = f"agent={ROOT / 'tests' / 'fixtures' / 'agent-app'}"
        # buildah 1.28's layer cache ignores a changed build argument in LABEL: build afresh (a second).
        extra = ("--no-cache", "--build-context", context, "--build-arg", f"VERSION={version}")
        _ok(build_command(self.podman, WEB_DOCKERFILE, tag, self.base, WEB_DOCKERFILE.parent, *extra), timeout=600)
        digest_file = self.folder / f"digest-{version}"
        target = f"docker://{self.remote}:sha-{version}"
        _ok([*self.podman, "push", "--tls-verify=false", "--digestfile", str(digest_file), tag, target])
        return digest_file.read_text().strip()

    def sign(self, version: str, digest: str, key: str = "release") -> None:
        signer = self.keys[key]
        # A signature of the pushed digest, claiming the repository the environments name.
        command = [self.skopeo, "--insecure-policy", "--registries.d", str(self.registries_d), "copy"]
        command += ["--src-tls-verify=false", "--dest-tls-verify=false", "--sign-by", signer.fingerprint]
        command += ["--sign-identity", f"{WEB}:sha-{version}"]
        _ok([*command, f"docker://{self.remote}@{digest}", f"docker://{self.remote}:sha-{version}"], env=signer.env)
        inspect = [self.skopeo, "inspect", "--tls-verify=false", f"docker://{self.remote}:sha-{version}"]
        assert json.loads(_ok(inspect).stdout)["Digest"] == digest  # signing did not rewrite the image


@pytest.fixture
def images(tmp_path: Path, registry: LocalRegistry) -> Iterator[SignedImages]:
    (tmp_path / "images").mkdir()
    made = SignedImages(tmp_path / "images", registry)
    yield made
    made.close()


@pytest.mark.slow
def test_the_workflow_record_step_runs_in_a_clean_environment(
    tmp_path: Path, registry: LocalRegistry, images: SignedImages
) -> None:
    """Issue 24: the release path from a clean environment to a re-synthesized dist/, against a registry.

    The bump job ran release_images.py on a python3 with only pyyaml (it crashed on `import kgstack`),
    recorded digests nobody had verified, under every tag an environment named. Here: docker/web is built
    for four versions, pushed to a registry on loopback, two signed with the release key and one with
    another; the workflow's own call of scripts/record_release.sh runs in a fresh checkout with no venv and
    no project variables, `ghcr.io/acme` routed to the registry. Unsigned or wrongly signed images are
    refused with nothing recorded; signed ones land under the version each was built as, and only the
    environments deploying that version get the digest.
    """
    call = _workflow_record_call()
    released = images.build_and_push("0.3.0")
    images.sign("0.3.0", released)
    candidate = images.build_and_push("0.4.0")
    images.sign("0.4.0", candidate)
    unsigned = images.build_and_push("0.4.1")
    forged = images.build_and_push("0.4.2")
    images.sign("0.4.2", forged, key="intruder")
    assert len({released, candidate, unsigned, forged}) == 4

    # A fresh checkout in which staging moves to 0.4.0 and dev and prod stay on 0.3.0.
    checkout = tmp_path / "checkout"
    _clean_checkout(checkout)
    staging = checkout / "environments" / "staging.yaml"
    staging.write_text(staging.read_text().replace(f"{WEB}\n    tag: 0.3.0", f"{WEB}\n    tag: 0.4.0"))
    env = _clean_environment()
    # ghcr.io/acme is the registry on loopback, for pulls (registries.conf); nothing else differs.
    (tmp_path / "registries.conf").write_text(
        f'[[registry]]\nprefix = "ghcr.io/acme"\nlocation = "{registry.address}/acme"\ninsecure = true\n'
    )
    env["CONTAINERS_REGISTRIES_CONF"] = str(tmp_path / "registries.conf")

    verify = ("--key", str(images.keys["release"].public_key), "--lookaside", images.lookaside)

    def record(*refs: str) -> subprocess.CompletedProcess[str]:
        script = f'verify=({" ".join(map(shlex.quote, verify))}); refs=("$@"); {call}'
        return subprocess.run(
            ["bash", "-c", script, "bash", *refs], cwd=checkout, env=env, capture_output=True, text=True, timeout=1500
        )

    def recorded_state() -> dict[str, bytes]:
        files = [checkout / "environments" / "releases" / "images.yaml", *sorted((checkout / "dist").rglob("*.yaml"))]
        return {str(p.relative_to(checkout)): p.read_bytes() for p in files}

    before = recorded_state()
    result = record()
    assert result.returncode == 2 and "usage:" in result.stderr  # no refs: usage, nothing recorded
    for refs, why in (
        ([f"{WEB}@{unsigned}"], "unsigned"),
        ([f"{WEB}@{released}", f"{WEB}@{forged}"], "signed by another key, beside a good one"),
    ):
        result = record(*refs)
        assert result.returncode == 1, f"{why}: {result.stderr[-3000:]}"
        assert "refused:" in result.stderr and refs[-1].split("@")[1] in result.stderr, why
        assert recorded_state() == before, f"{why}: something was recorded"
    result = record(f"ghcr.io/bob/knowledge-graph-agent-web@{released}")
    assert result.returncode == 2 and "no environment deploys ghcr.io/bob/knowledge-graph-agent-web" in result.stderr
    assert recorded_state() == before

    result = record(f"{WEB}@{released}", f"{WEB}@{candidate}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_releases(checkout / "environments")[WEB] == {"0.3.0": released, "0.4.0": candidate}
    for name, version, digest, other in (
        ("staging", "0.4.0", candidate, released),
        ("prod", "0.3.0", released, candidate),
        ("dev", "0.3.0", released, candidate),
    ):
        rendered = "\n".join(p.read_text() for p in (checkout / "dist" / name).glob("*.yaml"))
        assert f"{WEB}:{version}@{digest}" in rendered, name
        assert other not in rendered, f"{name} got another environment's digest"
