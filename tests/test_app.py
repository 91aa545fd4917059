"""app.py end to end: exit codes, messages, an untouched dist/ on error, determinism, CLI parity."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ENVIRONMENTS, ROOT, env_data

NODE_BIN = ROOT / ".tools" / "node_modules" / ".bin"


def run_app(envdir: Path, outdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # From the environments' parent folder, as `make synth` runs: errors name environments/<name>.yaml.
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--environments", "environments", "--outdir", str(outdir)],
        capture_output=True,
        text=True,
        cwd=envdir.parent,
        env={**os.environ, **env},
        timeout=120,
    )


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    envdir, outdir = tmp_path / "environments", tmp_path / "dist"
    shutil.copytree(ENVIRONMENTS, envdir)
    shutil.copytree(ROOT / "dist", outdir)
    return envdir, outdir


def write_env(envdir: Path, name: str, data: object) -> None:
    (envdir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize(
    ("name", "changes", "code", "message"),
    [
        ("staging", {"query__replicaz": 2}, 2, "staging.yaml: query.replicaz: unknown field"),
        (
            "prod",
            {"images__agent__digest": "sha256:" + "0" * 64},
            2,
            "prod.yaml: images.agent.digest: digests of our own",
        ),
        ("dev", {"quota__pods": 3}, 1, "error: environments/dev.yaml: quota.pods: is 3 but the workloads"),
        (
            "azure",
            {"query__autoscaling__maxReplicas": 4},
            2,
            "error: environments/azure.yaml: query.autoscaling.maxReplicas: ACI has no autoscaling",
        ),
        (
            "aws",
            {
                "agent__graph__enabled": True,
                "stores__memgraph": {
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                    "storageSize": "1Gi",
                },
            },
            2,
            "error: environments/aws.yaml: stores.memgraph: the ECS target has no graph store",
        ),
    ],
)
def test_bad_input_exits_non_zero_and_leaves_dist_untouched(
    workspace: tuple[Path, Path],
    name: str,
    changes: dict[str, object],
    code: int,
    message: str,
) -> None:
    envdir, outdir = workspace
    before = tree_digest(outdir)
    write_env(envdir, name, env_data(name, **changes))
    result = run_app(envdir, outdir)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "nothing was written" in result.stderr
    assert tree_digest(outdir) == before
    assert not list(outdir.parent.glob(".dist.*")), "no staging folder is left behind"


def test_yaml_syntax_error(workspace: tuple[Path, Path]) -> None:
    envdir, outdir = workspace
    before = tree_digest(outdir)
    (envdir / "dev.yaml").write_text("name: dev\n  stage: dev\n")
    result = run_app(envdir, outdir)
    assert result.returncode == 2
    assert "dev.yaml: line 2: not valid YAML" in result.stderr
    assert tree_digest(outdir) == before


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One synth of environments/ as `make synth` runs it (a full synth takes seconds): its folder and its run."""
    outdir = tmp_path_factory.mktemp("fresh") / "dist"
    result = run_app(ENVIRONMENTS, outdir)
    assert result.returncode == 0, result.stderr
    return outdir, result


def test_committed_dist_is_a_fresh_synth(fresh: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    assert tree_digest(fresh[0]) == tree_digest(ROOT / "dist"), "run: make synth"


def test_two_synths_are_byte_identical(fresh: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    assert run_app(ENVIRONMENTS, tmp_path / "again").returncode == 0
    assert tree_digest(fresh[0]) == tree_digest(tmp_path / "again")


def test_new_environment_is_one_yaml_file(workspace: tuple[Path, Path]) -> None:
    envdir, outdir = workspace
    # The fields the README says a copy must change.
    qa = env_data(
        "staging",
        name="qa",
        namespace="kga-qa",
        domain="kga.qa.example.com",
        cloud__workloadIdentity="arn:aws:iam::111122223333:role/kga-qa",
        backup__target="s3://acme-kga-backups/qa",
    )
    write_env(envdir, "qa", qa)
    result = run_app(envdir, outdir)
    assert result.returncode == 0, result.stderr
    assert (outdir / "qa" / "deployment-kga-qa-query.yaml").exists()


def test_no_end_of_life_banner(fresh: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = fresh
    assert "end-of-life" not in result.stdout + result.stderr
    node = subprocess.run([os.environ["JSII_NODE"], "--version"], capture_output=True, text=True, check=True).stdout
    assert int(node.lstrip("v").split(".")[0]) >= 22


def test_cdk8s_cli_writes_the_same_dist(workspace: tuple[Path, Path]) -> None:
    cli = NODE_BIN / "cdk8s"
    if not cli.exists():
        pytest.fail("cdk8s-cli missing: run scripts/setup.sh synth")
    _, outdir = workspace
    shutil.rmtree(outdir)
    # The CLI runs `.venv/bin/python app.py` from cdk8s.yaml; point it at the temp outdir.
    result = subprocess.run(
        [str(cli), "synth", "--no-check-upgrade", "--app", f"{sys.executable} app.py --outdir {outdir}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env={**os.environ, "PATH": f"{NODE_BIN}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "end-of-life" not in result.stdout + result.stderr
    assert tree_digest(outdir) == tree_digest(ROOT / "dist")
    # The CLI's own scratch folder received the same files.
    assert tree_digest(ROOT / ".cdk8s.out") == tree_digest(outdir)


def test_a_copied_environment_names_both_files(workspace: tuple[Path, Path]) -> None:
    envdir, outdir = workspace
    before = tree_digest(outdir)
    write_env(envdir, "qa", env_data("staging", name="qa"))
    result = run_app(envdir, outdir)
    assert result.returncode == 2
    assert (
        "error: environments/qa.yaml: namespace: 'kga-staging' is also the namespace of environments/staging.yaml; "
    ) in result.stderr
    assert "environments/qa.yaml: cloud.workloadIdentity: " in result.stderr
    assert tree_digest(outdir) == before


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_restore_prints_plan_and_preconditions_then_the_job() -> None:
    result = run_command("restore", "prod", "chroma", "--backup-id", "20260320T020000.123Z")
    assert result.returncode == 0, result.stderr
    assert "# Restores backup 20260320T020000.123Z of chroma in prod (namespace kga-prod)" in result.stderr
    assert "refuses a store that holds data" in result.stderr
    assert "make backups ENV=prod STORE=chroma" in result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "kga-prod-restore-chroma"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["restore", "chroma", "--backup-id", "20260320T020000.123Z"]


def _plan(stderr: str) -> list[str]:
    return [line.removeprefix("# ") for line in stderr.splitlines() if line.startswith("# ")]


def _dist_names(env: str, kind: str) -> set[str]:
    return {
        doc["metadata"]["name"]
        for path in (ROOT / "dist" / env).glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc and doc.get("kind") == kind
    }


@pytest.mark.parametrize(
    ("env", "store"), [("prod", "chroma"), ("staging", "memgraph"), ("dev", "chroma"), ("prod", "redis")]
)
def test_restore_plan_is_a_procedure_over_what_dist_deploys(env: str, store: str) -> None:
    """Suspend every CronJob of dist/, stop the indexer, restore, hand back the tracker, re-index, resume."""
    result = run_command("restore", env, store, "--force")
    assert result.returncode == 0, result.stderr
    plan = _plan(result.stderr)
    text = "\n".join(plan)
    ns = yaml.safe_load(result.stdout)["metadata"]["namespace"]
    cronjobs = _dist_names(env, "CronJob")
    (indexer,) = {d for d in _dist_names(env, "Deployment") if d.endswith("-indexer")}
    suspended = [line for line in plan if '"suspend":true' in line]
    resumed = [line for line in plan if '"suspend":false' in line]
    assert {line.split()[5] for line in suspended} == cronjobs == {line.split()[5] for line in resumed}
    order = [
        text.index('"suspend":true'),
        text.index(f"kubectl -n {ns} scale deploy/{indexer} --replicas=0"),
        text.index("| kubectl apply -f -"),
        text.index('"suspend":false'),
    ]
    assert order == sorted(order)
    tracked = store != "redis"
    assert ("indexed_commits.restored.json" in text) is tracked
    if tracked:
        reindex = [c for c in cronjobs if c.endswith("-reindex")]  # without a schedule the API is called
        # as the re-index client calls it: per repository, incremental; never the full-index route.
        again = (
            f"create job --from=cronjob/{reindex[0]}"
            if reindex
            else '"incremental": true}\' http://127.0.0.1:8000/api/v1/index/repository'
        )
        assert not re.search(r"/api/v1/index(?![/\w])", text), "the full-index route, every repository at once"
        steps = [text.index("indexed_commits.restored.json"), text.index(again)]
        assert order[2] < steps[0] < steps[1] < order[3]
        assert f"rollout restart deploy/{indexer}" in text


def test_restore_plan_tracker_commands_run_as_printed(tmp_path: Path) -> None:
    """The tracker lines, with kubectl swapped for local stand-ins, run under a shell exactly as printed."""
    plan = _plan(run_command("restore", "prod", "chroma").stderr)
    (extract,) = [line.strip() for line in plan if "> indexed_commits.restored.json" in line]
    (write,) = [line.strip() for line in plan if "< indexed_commits.restored.json" in line]
    tracker = {"acme/shop#main": {"repository": "acme/shop", "branch": "main", "last_commit": "abc123"}}
    log = f'{{"event":"restore.start"}}\n{{"event":"restore.done","indexed_commits":{json.dumps(tracker)}}}\n'
    (tmp_path / "job.log").write_text(log, encoding="utf-8")
    volume = tmp_path / "volume"
    volume.mkdir()
    local_extract = "cat job.log |" + extract.split("|", 1)[1]
    local_write = "cd volume && python3" + write.split(" -- python", 1)[1].replace("< indexed", "< ../indexed")
    for command in (local_extract, local_write):
        subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True)
    assert json.loads((volume / "indexed_commits.json").read_text()) == tracker


def test_backups_lists_read_only() -> None:
    result = run_command("backups", "staging", "memgraph")
    assert result.returncode == 0, result.stderr
    assert "read-only" in result.stderr
    job = yaml.safe_load(result.stdout)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["list", "memgraph"]
    assert job["metadata"]["namespace"] == "kga-staging"


def test_unknown_environment_lists_the_known_ones() -> None:
    result = run_command("restore", "qa", "redis")
    assert result.returncode == 2
    assert (
        "error: environments/qa.yaml: no such environment 'qa'; "
        "known environments: aws, azure, dev, prod, single, staging" in (result.stderr)
    )
    assert "Traceback" not in result.stderr


def test_store_the_environment_does_not_run() -> None:
    result = run_command("backups", "prod", "memgraph")
    assert result.returncode == 2
    assert "error: environments/prod.yaml: this environment has no memgraph store" in result.stderr
    assert result.stderr.endswith("1 problem(s); no Job was printed.\n") and result.stdout == ""


def test_a_cross_reference_problem_stops_synth_before_anything_is_written(
    workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The gate's own checks are tested in test_cross_reference.py; this proves app.py runs it and refuses.
    import importlib.util

    from kgstack.agent_stack import AgentStack

    envdir, outdir = workspace
    before = tree_digest(outdir)
    gate = AgentStack.check_references

    def broken(self: AgentStack, objects: dict[str, dict[str, object]]) -> list[str]:
        found = gate(self, objects)
        return (
            [*found, "deployment-kga-prod-query.yaml: spec.x: broken on purpose"] if self.env.name == "prod" else found
        )

    monkeypatch.setattr(AgentStack, "check_references", broken)
    spec = importlib.util.spec_from_file_location("synth_app", ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    code = app.main(["--environments", str(envdir), "--outdir", str(outdir), "--docs", str(outdir.parent / "docs")])
    assert code == 1
    assert (
        f"error: {envdir}/prod.yaml: prod/deployment-kga-prod-query.yaml: spec.x: broken on purpose"
        in capsys.readouterr().err
    )
    assert tree_digest(outdir) == before
    assert not (outdir.parent / "docs").exists()


def test_a_restore_job_runs_the_released_backup_image_like_the_cronjob(tmp_path: Path) -> None:
    envdir = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS, envdir)
    digest = "sha256:" + "0" * 64  # a test value in a temporary releases file, never shipped
    releases = yaml.safe_load((envdir / "releases" / "images.yaml").read_text())
    releases["ghcr.io/acme/kgbackup"] = {"0.1.0": digest}
    (envdir / "releases" / "images.yaml").write_text(yaml.safe_dump(releases))
    for command in ("restore", "backups"):
        result = run_command(command, "prod", "redis", "--environments", str(envdir))
        assert result.returncode == 0, result.stderr
        assert f"image: ghcr.io/acme/kgbackup:0.1.0@{digest}" in result.stdout
        assert "note:" not in result.stdout  # stdout stays a manifest for kubectl


@pytest.mark.parametrize(
    ("target", "variables", "problem"),
    [
        ("restore", ["ENV=prod"], "STORE is missing (one of redis, chroma, memgraph)"),
        ("restore", ["STORE=chroma"], "ENV is missing (environments: aws, azure, dev, prod, single, staging)"),
        ("restore", ["ENV=prod", "STORE=mongo"], "STORE=mongo is not a store (one of redis, chroma, memgraph)"),
        ("backups", ["ENV=prod"], "STORE is missing (one of redis, chroma, memgraph)"),
    ],
)
def test_a_make_target_without_its_variables_says_how_to_type_it(
    target: str, variables: list[str], problem: str
) -> None:
    """Issue 21: `make restore ENV=prod` without STORE printed argparse's usage (`make restore [-h] ...`)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", target, "SETUP=true", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    extra = " [BACKUP_ID=<id from make backups>] [FORCE=1]" if target == "restore" else ""
    assert result.stderr.splitlines()[:2] == [
        f"error: make {target}: {problem}",
        f"usage: make {target} ENV=<environment> STORE=<redis|chroma|memgraph>{extra}",
    ]
    assert "[-h]" not in result.stderr and "Traceback" not in result.stderr
