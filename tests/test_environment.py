"""The environment model: every bad input is one clear line naming file, field and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import DELETE, ENVIRONMENTS, ROOT, env_data

from kgstack.environment import (
    EnvironmentFileError,
    json_schema,
    load_environment,
    load_environments,
    markdown_reference,
    parse_environment,
)

DIGEST = "sha256:" + "ab" * 32


def problems(data: object, source: str = "environments/dev.yaml") -> list[str]:
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(data, source=source)
    return caught.value.problems


def test_shipped_environments_load() -> None:
    names = [env.name for env in load_environments(ENVIRONMENTS)]
    assert names == ["aws", "azure", "dev", "prod", "single", "staging"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"query__resorces": {}}, "query.resorces: unknown field; did you mean `resources`?", id="typo"),
        pytest.param(
            {"query__autoscaling__maxReplicas": "many"},
            "query.autoscaling.maxReplicas: Input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            {"query__autoscaling__minReplicas": 0},
            "query.autoscaling.minReplicas: Input should be greater than or equal to 1",
            id="zero-replicas",
        ),
        pytest.param(
            {"query__autoscaling__minReplicas": -2},
            "query.autoscaling.minReplicas: Input should be greater than or equal to 1",
            id="negative-replicas",
        ),
        pytest.param(
            {"query__autoscaling__minReplicas": 5, "query__autoscaling__maxReplicas": 2},
            "query.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
            id="min-over-max",
        ),
        pytest.param(
            {"indexer__resources__limits__memory": "256Mi"},
            "indexer.resources: limits.memory (256Mi) is below requests.memory (512Mi)",
            id="limit-below-request",
        ),
        pytest.param(
            {"query__resources__requests__cpu": "lots"},
            "query.resources.requests.cpu: 'lots' is not a Kubernetes quantity",
            id="bad-quantity",
        ),
        pytest.param(
            {"images__agent__repository": "GHCR.io/Acme//agent"},
            "images.agent: repository 'GHCR.io/Acme//agent' is not a valid image reference",
            id="bad-image",
        ),
        pytest.param(
            {"images__agent__digest": "sha256:1234"},
            "images.agent.digest: String should match pattern",
            id="bad-digest",
        ),
        pytest.param({"domain": "localhost"}, "domain: 'localhost' is not a lowercase", id="domain"),
        pytest.param({"domain": "Kga_Example.com"}, "domain: 'Kga_Example.com' is not", id="domain-case"),
        pytest.param(
            {"agent__githubFileExtensions": DELETE},
            "agent.githubFileExtensions: required field is missing",
            id="missing-setting",
        ),
        pytest.param(
            {"agent__githubFileExtensions": []},
            "agent.githubFileExtensions: List should have at least 1 item",
            id="empty-extensions",
        ),
        pytest.param({"kubernetesVersion": "1.26"}, "kubernetesVersion: '1.26' is not one of", id="k8s-version"),
        pytest.param(
            {"cloud__workloadIdentity": "arn:aws:iam::1:role/x"},
            "cloud.workloadIdentity: needs cloud.provider eks, gke or aks",
            id="identity-generic",
        ),
        pytest.param(
            {"agent__chunking__overlap": 1000},
            "agent.chunking: overlap (1000) must be smaller than size (1000)",
            id="chunking",
        ),
        pytest.param(
            {"repositories": [{"name": "x", "url": "git@github.com:a/b.git"}]},
            "repositories[0].url: String should match pattern",
            id="repo-url",
        ),
    ],
)
def test_bad_input_names_file_field_and_reason(changes: dict[str, object], expected: str) -> None:
    found = problems(env_data("dev", **changes))
    assert any(p.startswith("environments/dev.yaml: ") and expected in p for p in found), found


def test_prod_requires_digests_of_upstream_images() -> None:
    # Our own images get theirs from environments/releases/images.yaml (tests/test_releases.py).
    chroma = {"repository": "registry.example.com/mirror/chroma", "tag": "1.5.9"}
    found = problems(env_data("prod", images__chroma=chroma), "environments/prod.yaml")
    assert found == [
        "environments/prod.yaml: images.chroma.digest: required in stage prod (a tag can be moved; a "
        "digest cannot): read it with `crane digest registry.example.com/mirror/chroma:1.5.9`, then set "
        "images.chroma.digest (see docs/environment-reference.md#imageref)"
    ]


def test_missing_default_digest_says_how_to_get_one() -> None:
    # prod with the graph on: memgraph ships without a verified digest, so it must be mirrored and pinned.
    data = env_data("prod", agent__graph__enabled=True)
    data["stores"]["memgraph"] = data["stores"]["chroma"]
    (found,) = problems(data, "environments/prod.yaml")
    assert found.startswith("environments/prod.yaml: images.memgraph.digest: required in stage prod")
    assert "docker.io/memgraph/memgraph:2.11.0 has no default digest; mirror it" in found
    assert "`crane digest <mirror>:2.11.0`" in found


def test_no_problem_is_reported_at_the_top_level() -> None:
    data = env_data("staging", secrets__storeName=DELETE, backup__credentialsSecret=None, cloud__workloadIdentity=None)
    found = problems(data, "environments/staging.yaml")
    assert found == [
        "environments/staging.yaml: backup.credentialsSecret: is null, so backups use workload identity: "
        "set cloud.workloadIdentity, or name a Secret with object storage credentials "
        "(see docs/environment-reference.md#backupsettings)",
        "environments/staging.yaml: secrets.storeName: required in stage staging: name the (Cluster)SecretStore "
        "that holds this environment's values (docs/secrets.md) (see docs/environment-reference.md#secretssettings)",
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"agent__vectorStore__type": "pinecone"},
            "environments/prod.yaml: stores.chroma: has no effect: agent.vectorStore.type is pinecone, so no "
            "Chroma is deployed; remove stores.chroma or set agent.vectorStore.type: chroma "
            "(see docs/environment-reference.md#stores)",
            id="chroma-with-pinecone",
        ),
        pytest.param(
            {
                "stores__memgraph": {
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                    "storageSize": "1Gi",
                }
            },
            "environments/prod.yaml: stores.memgraph: has no effect: agent.graph.enabled is false, so no Memgraph "
            "is deployed; remove stores.memgraph or set agent.graph.enabled: true "
            "(see docs/environment-reference.md#stores)",
            id="memgraph-with-graph-off",
        ),
    ],
)
def test_inactive_settings_name_their_switch(changes: dict[str, object], expected: str) -> None:
    assert problems(env_data("prod", **changes), "environments/prod.yaml") == [expected]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"query__autoscaling__minReplica": 3},
            "query.autoscaling.minReplica: unknown field; did you mean `minReplicas`? "
            "(see docs/environment-reference.md#autoscaling)",
            id="nested",
        ),
        pytest.param(
            {"namepsace": "x"},
            "namepsace: unknown field; did you mean `namespace`? (see docs/environment-reference.md#environment)",
            id="top",
        ),
        pytest.param(
            {"repositories": [{"name": "a", "url": "https://github.com/a/b", "brnach": "dev"}]},
            "repositories[0].brnach: unknown field; did you mean `branch`? "
            "(see docs/environment-reference.md#repository)",
            id="list-item",
        ),
        pytest.param(
            {"stores__redis__zzz": 1},
            "stores.redis.zzz: unknown field; RedisSettings takes resources, storageSize, replicas",
            id="no-close-match",
        ),
    ],
)
def test_unknown_fields_suggest_the_close_match(changes: dict[str, object], expected: str) -> None:
    found = problems(env_data("dev", **changes))
    assert any(p.startswith(f"environments/dev.yaml: {expected}") for p in found), found


def test_every_linked_reference_section_exists() -> None:
    reference = (ENVIRONMENTS.parent / "docs" / "environment-reference.md").read_text()
    anchors = {line[3:].strip().lower() for line in reference.splitlines() if line.startswith("## ")}
    assert {"autoscaling", "repository", "redissettings", "environment"} <= anchors


def test_reference_has_no_empty_sections() -> None:
    reference = (ENVIRONMENTS.parent / "docs" / "environment-reference.md").read_text()
    sections = reference.split("\n## ")[1:]
    for section in sections:
        title, *body = section.splitlines()
        text = [line for line in body if line.strip()]
        assert text and not text[0].startswith("|"), f"section {title} has no description"
        assert text[-1] != "|---|---|---|---|", f"section {title} has an empty table"


def test_unknown_environment_lists_the_known_ones(tmp_path: Path) -> None:
    for name in ("dev", "prod"):
        (tmp_path / f"{name}.yaml").write_text("{}")
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(tmp_path / "qa.yaml")
    assert caught.value.problems == [f"{tmp_path}/qa.yaml: no such environment 'qa'; known environments: dev, prod"]


def test_every_problem_is_reported_once() -> None:
    found = problems(env_data("dev", query__resorces={}, domain="x", indexer__storageSize="big"))
    assert len(found) == 3, found


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(env_data("dev")))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path)
    assert caught.value.problems == [
        f"{path}: name: 'dev' must equal the file name 'qa' (see docs/environment-reference.md#environment)"
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("name: dev\nstage: [dev\n")
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: line ") and "not valid YAML" in problem


def test_not_a_mapping() -> None:
    assert problems(["a"]) == ["environments/dev.yaml: line 1: expected a mapping of settings (name:, stage:, ...)"]


def test_models_are_frozen(environments: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="frozen"):
        environments["dev"].domain = "other.example.com"


def test_published_schema_is_current() -> None:
    committed = (ENVIRONMENTS / "schema.json").read_text()
    assert committed == json_schema(), "run: make schema"


def test_reference_doc_is_current() -> None:
    committed = (ENVIRONMENTS.parent / "docs" / "environment-reference.md").read_text()
    assert committed == markdown_reference(), "run: make schema"
    assert "| `domain` | string | **required** |" in committed
    assert "| `kubernetesVersion` | string or null | `null` | Kubernetes only (required there)" in committed


def test_schema_rejects_unknown_fields_for_editors() -> None:
    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    assert "kubernetesVersion" in schema["properties"]
    assert schema["$defs"]["QueryTier"]["properties"]["resources"]["description"]


def write_copy(folder: Path, name: str, source: str = "staging", **changes: object) -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(env_data(source, name=name, **changes)))


@pytest.fixture
def envdir(tmp_path: Path) -> Path:
    for name in ("dev", "prod", "staging"):
        (tmp_path / f"{name}.yaml").write_text((ENVIRONMENTS / f"{name}.yaml").read_text())
    return tmp_path


def test_a_copy_of_staging_must_change_what_is_unique(envdir: Path) -> None:
    write_copy(envdir, "qa")
    with pytest.raises(EnvironmentFileError) as caught:
        load_environments(envdir)
    fields = [p.split(": ")[1] for p in caught.value.problems]
    assert fields == ["namespace", "domain", "backup.target", "cloud.workloadIdentity"]
    # Reported on the copy (its values still name staging), naming the original too.
    assert all(p.startswith(f"{envdir}/qa.yaml: ") for p in caught.value.problems)
    assert all(f"of {envdir}/staging.yaml;" in p for p in caught.value.problems)
    assert (
        f"{envdir}/qa.yaml: backup.target: 's3://acme-kga-backups/staging' is also the backup.target of "
        f"{envdir}/staging.yaml; each environment prunes "
        "everything under its target, so it would delete the other's backups: give each environment its own"
    ) in caught.value.problems


def test_a_backup_target_nested_in_another_is_refused(envdir: Path) -> None:
    write_copy(
        envdir,
        "qa",
        namespace="kga-qa",
        domain="kga.qa.example.com",
        cloud__workloadIdentity="arn:aws:iam::111122223333:role/kga-qa",
        backup__target="s3://acme-kga-backups/staging/qa",
        secrets__remoteKeyPrefix="kga/qa/",
    )
    with pytest.raises(EnvironmentFileError) as caught:
        load_environments(envdir)
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"{envdir}/staging.yaml: backup.target: 's3://acme-kga-backups/staging' is nested with "
        f"'s3://acme-kga-backups/staging/qa', the backup.target of {envdir}/qa.yaml; "
    )


def test_a_shared_secret_store_path_is_refused(envdir: Path) -> None:
    write_copy(envdir, "qa", secrets__remoteKeyPrefix="kga/staging/")
    with pytest.raises(EnvironmentFileError) as caught:
        load_environments(envdir)
    assert any(
        ": secrets.remoteKeyPrefix: 'kga/staging/ in ClusterSecretStore/aws-secrets-manager' is also the" in p
        for p in caught.value.problems
    ), caught.value.problems


def test_a_copy_that_changes_the_unique_fields_loads(envdir: Path) -> None:
    write_copy(
        envdir,
        "qa",
        namespace="kga-staging-qa",
        domain="kga.qa.example.com",
        cloud__workloadIdentity="arn:aws:iam::111122223333:role/kga-qa",
        backup__target="s3://acme-kga-backups/qa",
    )
    # a namespace that merely starts like another one is no clash
    assert [env.name for env in load_environments(envdir)] == ["dev", "prod", "qa", "staging"]


def test_a_name_that_is_not_a_dns_label_says_what_is_allowed() -> None:
    found = problems(env_data("dev", namespace="Kga_Dev"), "environments/dev.yaml")
    assert found == [
        "environments/dev.yaml: namespace: 'Kga_Dev' is not a DNS label (RFC 1123): lowercase letters, digits "
        "and '-', starting and ending with a letter or digit (see docs/environment-reference.md#environment)"
    ]


def test_a_section_that_is_not_a_mapping_points_to_its_reference() -> None:
    found = problems(env_data("staging", secrets=None), "environments/staging.yaml")
    assert found == [
        "environments/staging.yaml: secrets: expected a mapping of settings "
        "(see docs/environment-reference.md#secretssettings)"
    ]


@pytest.mark.parametrize(
    ("changes", "field", "section"),
    [
        ({"query__autoscaling__maxReplicas": "many"}, "query.autoscaling.maxReplicas", "Autoscaling"),
        ({"backup__keepDaily": "a week"}, "backup.keepDaily", "BackupSettings"),
        ({"repositories": [{"name": "a", "url": 7}]}, "repositories[0].url", "Repository"),
        ({"stage": "qa"}, "stage", "Environment"),
    ],
)
def test_a_wrong_type_links_its_section_of_the_reference(changes: dict[str, object], field: str, section: str) -> None:
    """Issue 21: `Input should be a valid integer` came with no link, though the README promises one."""
    found = problems(env_data("dev", **changes))
    (problem,) = [p for p in found if p.startswith(f"environments/dev.yaml: {field}: ")]
    assert problem.endswith(f" (see docs/environment-reference.md#{section.lower()})")
    headings = [line[3:] for line in (ROOT / "docs" / "environment-reference.md").read_text().splitlines()]
    assert section in headings


def test_every_error_links_a_section_that_exists() -> None:
    headings = {line[3:].lower() for line in markdown_reference().splitlines() if line.startswith("## ")}
    bad = {
        "query__autoscaling__maxReplicas": "many",
        "query__resources__requests__cpu": "lots",
        "agent__githubFileExtensions": DELETE,
        "stores__redis__zzz": 1,
        "reindex__schedule": "75 3 * * *",
        "backup__keepWeekly": -1,
    }
    found = problems(env_data("dev", **bad))
    links = [p.rsplit("(see ", 1)[1].rstrip(")") for p in found if "(see " in p]
    assert len(links) == len(found) == len(bad), found
    assert [link for link in links if link.partition("#")[2] not in headings] == []


# ---------------------------------------------------------------- targets


def test_targets_default_to_kubernetes() -> None:
    env = parse_environment(env_data("dev"), source="environments/dev.yaml")
    assert [t.value for t in env.targets] == ["kubernetes"]
    assert env.placement.namespace == "kga-dev"


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        pytest.param([], "targets: List should have at least 1 item", id="empty"),
        pytest.param(["kubernetes", "kubernetes"], "targets: kubernetes listed more than once", id="repeated"),
        pytest.param(["swarm"], "targets[0]: Input should be 'kubernetes', 'compose', 'ecs' or 'aci'", id="unknown"),
        pytest.param(
            ["kubernetes", "aci"], "query.autoscaling.maxReplicas: ACI has no autoscaling: set it equal", id="aci"
        ),
    ],
)
def test_bad_targets_are_refused(targets: list[str], expected: str) -> None:
    found = problems(env_data("dev", targets=targets))
    assert any(p.startswith(f"environments/dev.yaml: {expected}") for p in found), found


def test_kubernetes_fields_are_required_with_kubernetes() -> None:
    found = problems(env_data("dev", namespace=DELETE, quota=DELETE))
    assert "environments/dev.yaml: namespace: required: targets includes kubernetes" in " ".join(found), found
    assert any(p.startswith("environments/dev.yaml: quota: required: targets includes kubernetes") for p in found)


def test_kubernetes_fields_are_refused_without_kubernetes() -> None:
    found = problems(env_data("dev", targets=["compose"]))
    for field in ("namespace", "kubernetesVersion", "cluster", "cloud", "gitops", "quota", "workloads"):
        assert (
            f"environments/dev.yaml: {field}: Kubernetes only, and targets (compose) has no kubernetes: remove it"
            " (see docs/environment-reference.md#environment)" in (found)
        ), found


def test_ecs_refuses_a_storage_class_and_aci_what_it_cannot_run() -> None:
    found = problems(env_data("dev", targets=["kubernetes", "ecs"], cloud={"provider": "eks", "storageClass": "gp3"}))
    assert (
        "environments/dev.yaml: cloud.storageClass: ECS keeps state on EFS: a StorageClass means nothing there"
        " (see docs/environment-reference.md#cloudprofile)" in found
    ), found
    found = problems(env_data("aws", targets=["aci"]))
    assert any(p.startswith("environments/dev.yaml: stores.chroma: Chroma keeps SQLite") for p in found), found
    assert any(p.startswith("environments/dev.yaml: reindex.schedule: ACI has no scheduler") for p in found), found


def test_the_cloud_targets_read_secrets_and_monitoring() -> None:
    env = parse_environment(env_data("aws"), source="environments/aws.yaml")
    assert [t.value for t in env.targets] == ["ecs"] and env.secrets.key_prefix(env.name) == "kga/aws/"
    found = problems(env_data("aws", targets=["compose"], backup={"target": "s3://acme-kga-backups/aws"}))
    assert any(p.startswith("environments/dev.yaml: secrets: Kubernetes only") for p in found), found


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        # a value that is not a DNS label
        ({"namespace": "KGA"}, "namespace: 'KGA' is not a DNS label (RFC 1123)"),
        # an item of a list of plain values: the section of the model holding the list, not the bare page
        ({"network__internetPorts": [0]}, "network.internetPorts[0]: Input should be greater than or equal to 1"),
        ({"agent__githubFileExtensions": ["py"]}, "agent.githubFileExtensions[0]: String should match pattern"),
        # a rule across fields (raised as FieldError by a model validator)
        ({"cloud__workloadIdentity": "arn:aws:iam::1:role/x"}, "cloud.workloadIdentity: needs cloud.provider eks"),
        ({"targets": ["compose"]}, "namespace: Kubernetes only, and targets (compose) has no kubernetes"),
        ({"workloads": {"tolerations": [{"operator": "Exists", "value": "x"}]}}, "workloads.tolerations[0].value"),
        ({"workloads": {"labels": {"team": "a b"}}}, "workloads.labels.team: 'a b' is not a label value"),
        (
            {"patches": [{"target": {"kind": "Deployment", "name": "x"}, "reason": "r", "merge": {}, "json": []}]},
            "patches[0].merge: set exactly one of merge and json",
        ),
    ],
)
def test_every_kind_of_error_links_a_section_that_exists(changes: dict[str, object], problem: str) -> None:
    """Issue 21 (the README: every error links its section): a name that is not a DNS label, a rule across
    fields and an item of a list of numbers came without a section (or with the bare page)."""
    headings = {line[3:].lower() for line in markdown_reference().splitlines() if line.startswith("## ")}
    (found,) = [p for p in problems(env_data("dev", **changes)) if p.startswith(f"environments/dev.yaml: {problem}")]
    link = found.rsplit(" (see ", 1)[1]
    assert link.startswith("docs/environment-reference.md#") and link.endswith(")"), found
    assert link.removesuffix(")").partition("#")[2] in headings


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"query__resources__requests__cpu": "0"}, "query.resources.requests.cpu"),
        ({"indexer__storageSize": "0Gi"}, "indexer.storageSize"),
        ({"quota__limits__memory": 0}, "quota.limits.memory"),
    ],
)
def test_a_zero_quantity_is_refused(changes: dict[str, object], field: str) -> None:
    """Issue 21 (a value that parses but means nothing): `requests.cpu: 0` was taken, and the HPA's CPU
    utilisation has no base; the API server refuses a 0Gi volume claim."""
    found = problems(env_data("prod", **changes), "environments/prod.yaml")
    assert [p for p in found if p.startswith(f"environments/prod.yaml: {field}: ")] == [
        f"environments/prod.yaml: {field}: {str(next(iter(changes.values())))!r} is zero: every size, request, "
        f"limit and quota here must be more than 0 (see docs/environment-reference.md#"
        f"{'indexertier' if field.startswith('indexer') else 'computeamounts'})"
    ]
