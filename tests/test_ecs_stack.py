"""The ECS target: the committed CloudFormation, checked by AWS's own tools and read back against the model."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from syrupy.assertion import SnapshotAssertion
from tools import checkov, missing, require_tool

from kgstack import load_environment
from kgstack.cloud_components import kubernetes_view
from kgstack.environment import Target

ENVS = sorted(p.stem for p in (ROOT / "environments").glob("*.yaml") if Target.ECS in load_environment(p).targets)
Template = dict[str, Any]


@cache
def committed(env: str) -> Template:
    return json.loads((ROOT / "dist" / env / "ecs" / "template.json").read_text())  # type: ignore[no-any-return]


def rendered(env: str, plugins: Any = None) -> Template:
    from app import pin_releases
    from kgstack.ecs_stack import render_ecs

    (environment,) = pin_releases(ROOT / "environments", [load_environment(ROOT / "environments" / f"{env}.yaml")])
    view = kubernetes_view(environment)
    return render_ecs(environment, view.objects, view.flows, view.remote_secrets, plugins=plugins)


def of_type(template: Template, kind: str) -> dict[str, Template]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def containers(template: Template) -> dict[str, Template]:
    return {
        c["Name"]: c
        for task in of_type(template, "AWS::ECS::TaskDefinition").values()
        for c in task["Properties"]["ContainerDefinitions"]
    }


def test_an_environment_targets_ecs() -> None:
    assert ENVS == ["aws"]


@pytest.mark.parametrize("env", ENVS)
def test_the_template_is_deterministic_and_committed(env: str, snapshot: SnapshotAssertion) -> None:
    assert rendered(env) == committed(env), "run: make synth"
    assert committed(env) == snapshot


@pytest.mark.parametrize("env", ENVS)
def test_no_account_lookups_assets_or_bootstrap(env: str) -> None:
    template = committed(env)
    text = json.dumps(template)
    assert set(template["Parameters"]) == {"CertificateArn"}
    assert "BootstrapVersion" not in text and "cdk-hnb659fds" not in text and "AssetParameters" not in text
    # No account number anywhere but in the certificate parameter's pattern.
    assert re.findall(r"\b\d{12}\b", json.dumps(template["Resources"])) == []
    assert "AWS::CDK::Metadata" not in text


@pytest.mark.parametrize("env", ENVS)
def test_cfn_lint_reports_no_errors(env: str) -> None:
    binary = require_tool("cfn-lint", ROOT / ".venvs/cfn-lint/bin/cfn-lint", hint="scripts/setup.sh test")
    result = subprocess.run(
        [binary, "--format", "json", str(ROOT / "dist" / env / "ecs" / "template.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [(f["Rule"]["Id"], f["Message"]) for f in findings if f["Level"] == "Error"]
    assert errors == []


@pytest.mark.parametrize("env", ENVS)
def test_cdk_nag_aws_solutions_leaves_nothing_unacknowledged(env: str) -> None:
    from kgstack import ecs_stack

    try:
        from cdk_nag import AwsSolutionsChecks
    except ImportError:
        missing("cdk-nag is not installed (scripts/setup.sh test: requirements/cloud-test.txt)")
    # A violation fails the synth with cdk-nag's report; the template is the same as without the plugin.
    template = rendered(env, plugins=lambda app: [AwsSolutionsChecks(app)])
    assert template == committed(env)
    acknowledged = ecs_stack.ACKNOWLEDGED
    assert acknowledged, "the stack acknowledges what it cannot change"
    assert all(rule.startswith("AwsSolutions-") and len(reason) > 30 for _, rule, reason in acknowledged), acknowledged


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
def test_checkov_reports_no_failed_checks(env: str) -> None:
    report = checkov(ROOT / "dist" / env / "ecs", framework="cloudformation")
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 50


@pytest.mark.parametrize("env", ENVS)
def test_every_container_is_read_only_non_root_without_capabilities(env: str) -> None:
    """Every container but each task's volume owner, which ends before the others start: it runs as root
    (Fargate's bind volumes are root's) and keeps one capability (tests/test_cloud_run.py checks which)."""
    owners = 0
    tasks = of_type(committed(env), "AWS::ECS::TaskDefinition")
    for task, c in ((t, c) for t, r in tasks.items() for c in r["Properties"]["ContainerDefinitions"]):
        name = f"{task}/{c['Name']}"
        assert c["ReadonlyRootFilesystem"] is True, name
        assert c["Privileged"] is False, name
        assert c["LogConfiguration"]["LogDriver"] == "awslogs", name
        if c["Name"] == "volume-owner":
            assert c["Essential"] is False and c["User"] == "0:0" and c["EntryPoint"] == ["chown"], name
            assert "CHOWN" not in c["LinuxParameters"]["Capabilities"]["Drop"], name
            owners += 1
            continue
        uid = int(c["User"].split(":")[0])
        assert uid >= 100, name
        assert c["LinuxParameters"]["Capabilities"]["Drop"] == ["ALL"], name
        # Each starts once the volume owner has handed over its scratch volumes.
        assert {"ContainerName": "volume-owner", "Condition": "SUCCESS"} in c["DependsOn"], name
    assert owners == len(tasks)


@pytest.mark.parametrize("env", ENVS)
def test_secrets_come_from_secrets_manager_and_each_role_reads_only_its_own(env: str) -> None:
    template = committed(env)
    view = kubernetes_view(load_environment(ROOT / "environments" / f"{env}.yaml"))
    prefix = f"kga/{env}/"
    for name, c in containers(template).items():
        plain = {e["Name"] for e in c.get("Environment", [])}
        assert not plain & {"OPENAI_API_KEY", "GITHUB_TOKEN", "REDIS_URL"}, name
        for secret in c.get("Secrets", []):
            assert prefix in json.dumps(secret["ValueFrom"]), (name, secret)
    assert set(view.remote_secrets.values()) >= {f"{prefix}agent", f"{prefix}redis", f"{prefix}edge-keys"}
    for policy in of_type(template, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if any(a.startswith("secretsmanager:") for a in actions):
                assert prefix in json.dumps(statement["Resource"]), statement


@pytest.mark.parametrize("env", ENVS)
def test_security_groups_follow_the_declared_flows(env: str) -> None:
    template = committed(env)
    groups = {
        k: r["Properties"]["GroupDescription"].split()[-1]
        for k, r in of_type(template, "AWS::EC2::SecurityGroup").items()
    }
    ingress = {
        (
            groups[r["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0]],
            groups[r["Properties"]["GroupId"]["Fn::GetAtt"][0]],
            r["Properties"]["FromPort"],
        )
        for r in of_type(template, "AWS::EC2::SecurityGroupIngress").values()
        if "SourceSecurityGroupId" in r["Properties"]
    }
    # Chroma only from the agent tiers, Redis likewise; the indexer from the edge and the re-index.
    assert {(s, p) for s, d, p in ingress if d == "chroma"} == {("query", 8000), ("indexer", 8000), ("backup", 8000)}
    assert {s for s, d, _ in ingress if d == "redis"} == {"query", "indexer"}
    # The indexer: from the edge, the re-index and the Chroma backup (which waits for it to be idle).
    assert {s for s, d, _ in ingress if d == "indexer"} == {"edge", "reindex", "backup"}
    assert {s for s, d, _ in ingress if d == "query"} == {"query-lb"}
    assert {s for s, d, _ in ingress if d == "edge"} == {"alb"}
    # Only the public ALB admits the internet, on 443 and the redirecting 80.
    open_ = [
        (groups[r.get("GroupId", {}).get("Fn::GetAtt", [k])[0]] if "GroupId" in r else k, i["FromPort"])
        for k, res in of_type(template, "AWS::EC2::SecurityGroup").items()
        for r in [res["Properties"]]
        for i in r.get("SecurityGroupIngress", [])
        if i.get("CidrIp") == "0.0.0.0/0"
    ]
    assert sorted(p for _, p in open_) == [80, 443]


@pytest.mark.parametrize("env", ENVS)
def test_query_tier_scales_on_requests_per_target_within_the_hpa_bounds(env: str) -> None:
    template = committed(env)
    environment = load_environment(ROOT / "environments" / f"{env}.yaml")
    a = environment.query.autoscaling
    (target,) = of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (
        a.min_replicas,
        a.max_replicas,
    )
    metrics = {
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]
        for p in of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    }
    assert metrics == {"ALBRequestCountPerTarget", "ECSServiceAverageCPUUtilization"}


@pytest.mark.parametrize("env", ENVS)
def test_logs_are_retained_and_alarms_mirror_the_slo_alerts(env: str) -> None:
    template = committed(env)
    assert all(g["Properties"]["RetentionInDays"] == 30 for g in of_type(template, "AWS::Logs::LogGroup").values())
    composites = {
        r["Properties"]["AlarmName"].split("-", 2)[-1]
        for r in of_type(template, "AWS::CloudWatch::CompositeAlarm").values()
    }
    assert composites == {
        "KgaAvailabilityBurnRateCritical",
        "KgaAvailabilityBurnRateWarning",
        "KgaLatencyBurnRateCritical",
        "KgaLatencyBurnRateWarning",
    }
    for name in composites:
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file()


def test_the_cloud_edge_configuration_reaches_the_edge_container() -> None:
    edge = containers(committed("aws"))["edge"]
    files = [e["Value"] for e in edge["Environment"] if e["Name"].startswith("KGA_FILE_")]
    assert files and any("auth_request /_kga_verify" in json.dumps(v) for v in files)


def test_aws_cron() -> None:
    from kgstack.ecs_stack import aws_cron

    assert aws_cron("0 4 * * *") == "cron(0 4 * * ? *)"
    assert aws_cron("30 2 * * 0") == "cron(30 2 ? * 1 *)"


def test_kubernetes_only_synth_never_imports_aws_cdk(tmp_path: Path) -> None:
    import shutil
    import sys

    envs = tmp_path / "environments"
    shutil.copytree(ROOT / "environments" / "releases", envs / "releases")
    for path in (ROOT / "environments").glob("*.yaml"):
        if Target.KUBERNETES in load_environment(path).targets:
            shutil.copy(path, envs / path.name)
    code = (
        "import sys, app; code = app.main(['--environments', sys.argv[1], '--outdir', sys.argv[2]]); "
        "print('aws_cdk' in sys.modules, code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(envs), str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.stdout.strip().splitlines()[-1] == "False 0", result.stderr[-2000:]


def _task_of(template: Template, container: str) -> Template:
    (task,) = (
        t["Properties"]
        for t in of_type(template, "AWS::ECS::TaskDefinition").values()
        if any(c["Name"] == container for c in t["Properties"]["ContainerDefinitions"])
    )
    return task


@pytest.mark.parametrize("env", ENVS)
def test_chroma_is_backed_up_by_a_scheduled_kgbackup_task_as_its_task_role(env: str) -> None:
    """kgbackup's consistent Chroma dump runs on the CronJob's schedule, writes to ``backup.target`` with the task
    role (no keys; a role that reaches only that prefix) and has scratch room for a whole dump. Redis has no task:
    ElastiCache refuses SYNC, and keeps its own snapshots."""
    template = committed(env)
    environment = load_environment(ROOT / "environments" / f"{env}.yaml")
    bucket, _, prefix = environment.backup.target.removeprefix("s3://").partition("/")
    task = _task_of(template, "kgbackup")
    assert task["Family"] == f"{environment.instance}-backup-chroma"
    (kgbackup,) = (c for c in task["ContainerDefinitions"] if c["Name"] == "kgbackup")
    assert kgbackup["Command"][:2] == ["backup", "chroma"]
    values = {e["Name"]: e["Value"] for e in kgbackup["Environment"]}
    assert values["KGB_TARGET"] == environment.backup.target
    assert "AWS_SHARED_CREDENTIALS_FILE" not in values and not kgbackup.get("Secrets")
    assert {m["ContainerPath"] for m in kgbackup["MountPoints"]} == {"/tmp", "/work"}
    assert task["EphemeralStorage"]["SizeInGiB"] > 20  # the default would not hold the scratch volume
    rules = [
        r["Properties"]
        for r in of_type(template, "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    scheduled = {json.dumps(t["EcsParameters"]["TaskDefinitionArn"]) for r in rules for t in r["Targets"]}
    assert len(scheduled) == 2  # the re-index and the Chroma backup; no Redis backup
    role = task["TaskRoleArn"]["Fn::GetAtt"][0]
    (policy,) = (
        p["Properties"]["PolicyDocument"]
        for p in of_type(template, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role}]
    )
    text = json.dumps(policy)
    assert f":s3:::{bucket}/{prefix}/*" in text and f':s3:::{bucket}"' in text
    actions = {
        a for st in policy["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    }
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}


@pytest.mark.parametrize("env", ENVS)
def test_a_failed_scheduled_task_reaches_the_alarm_topic_which_its_publishers_may_encrypt_for(env: str) -> None:
    """Each scheduled task's failure (non-zero exit, a held backup's 3 too, or a task that never started) is sent
    to the alarm topic, whose customer key lets CloudWatch and EventBridge publish (alias/aws/sns would not)."""
    template = committed(env)
    ((topic_id, topic),) = of_type(template, "AWS::SNS::Topic").items()
    key = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    statements = template["Resources"][key]["Properties"]["KeyPolicy"]["Statement"]
    for publisher in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
        assert any(
            st["Principal"].get("Service") == publisher and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(st["Action"])
            for st in statements
        ), publisher
    families = {
        t["Properties"]["Family"]
        for k, t in of_type(template, "AWS::ECS::TaskDefinition").items()
        if any(
            json.dumps(x["EcsParameters"]["TaskDefinitionArn"]) == json.dumps({"Ref": k})
            for r in of_type(template, "AWS::Events::Rule").values()
            for x in r["Properties"]["Targets"]
            if "EcsParameters" in x
        )
    }
    watched = {}
    for rule in of_type(template, "AWS::Events::Rule").values():
        pattern = rule["Properties"].get("EventPattern")
        if pattern is None:
            continue
        (prefix,) = pattern["detail"]["taskDefinitionArn"]
        family = json.dumps(prefix["prefix"]).split("task-definition/")[1].split(":")[0]
        assert pattern["detail"]["$or"] == [
            {"containers": {"exitCode": [{"anything-but": 0}]}},
            {"stopCode": ["TaskFailedToStart"]},
        ]
        assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Ref": topic_id}]
        watched[family] = rule
    assert set(watched) == families and families
