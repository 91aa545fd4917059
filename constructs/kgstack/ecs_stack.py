"""The ECS target: one environment as a CloudFormation template, through AWS CDK for Python.

Imported only for an environment that targets ``ecs`` (aws-cdk-lib takes a second to load).
Everything a container runs comes from the environment's rendered Kubernetes objects
(:class:`kgstack.cloud_components.CloudComponents`); security groups from the flows the
constructs declared (:mod:`kgstack.connections`); secret names from the External Secrets
layout (``AgentSecrets.remote``); alarms from the SLOs of ``monitoring:``.

Shape (docs/cloud-ecs.md):

* a VPC (two zones, flow logs), an ECS cluster, a private Cloud Map namespace;
* the public ALB: HTTPS with the ACM certificate of the ``CertificateArn`` parameter, HTTP
  redirected, in front of the **edge** service: :mod:`kgstack.cloud_edge` and the API-key
  verifier of the Kubernetes edge (keys, security headers, rate and body limits, blocked paths);
* the **query** tier behind an internal ALB, scaling on ``RequestCountPerTarget`` and CPU; the
  single **indexer** with its working directory on EFS; the **web** UI; **Chroma** on EFS, one
  writer; Redis as ElastiCache with TLS and AUTH and its own snapshots;
* the scheduled re-index and Chroma backup as EventBridge-scheduled Fargate tasks of the agent and backup
  images (the backup to ``backup.target``, by the task role); AWS Backup of the EFS file system besides;
* CloudWatch logs with retention, and alarms for the SLO burn rates and the components.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_backup as backup
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_efs as efs
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sns as sns
from aws_cdk import region_info
from constructs import Construct, IConstruct

from .agent_config import READY_PATH
from .backup_schedule import STORE_LABEL
from .cloud_components import (
    EDGE,
    CloudComponents,
    Component,
    Container,
    Probe,
    cpu_units,
    edge_component,
    full_command,
    gibibytes,
    mebibytes,
    start_script,
)
from .cloud_edge import EDGE_HEALTH_PATH, EDGE_PORT, CloudEdgeProps, cloud_edge_conf
from .environment import Environment
from .monitoring import BURN_RATES, EDGE_5XX_RATIO
from .network_policies import ComponentPeer, Flow, InternetPeer
from .redis_cache import PORT as REDIS_PORT
from .redis_cache import SECRET_KEYS as REDIS_SECRET_KEYS
from .redis_cache import RedisCache
from .web_ui import CONFIG_FILE as WEB_CONFIG_FILE
from .web_ui import HTML_ROOT

VPC_CIDR = "10.40.0.0/16"
VOLUME_OWNER = "volume-owner"
"""The container that hands a task's scratch volumes to their users before the others start (``_volume_owner``)."""
VOLUME_OWNER_ROOT = "/volumes"
VOLUME_OWNER_MEMORY_MIB = 32
DOCKER_DEFAULT_CAPABILITIES = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)  # fmt: skip
"""What a Fargate container has unless it drops them (the Docker default set); Fargate can add none but SYS_PTRACE."""
"""The environment's VPC (one per stack; peer or change it before deploying next to other VPCs)."""
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
"""CloudWatch retention of every log group (container logs, VPC flow logs)."""
ALB_LOG_DAYS = 90
"""Days the load balancers' access logs are kept."""
MAX_STOP_SECONDS = 120
"""Fargate's longest ``stopTimeout``: the ALB drains a target first (its deregistration delay)."""
FARGATE_DEFAULT_STORAGE_GIB = 20
"""A Fargate task's ephemeral storage unless its definition asks for more."""
FARGATE_MAX_STORAGE_GIB = 200
"""The most a Fargate task definition may ask for."""
FARGATE_IMAGE_ROOM_GIB = 10
"""Of a task's ephemeral storage, what its images' layers may take (the rest is for the scratch volumes)."""
BACKUP_COMPONENT = "backup"
"""The backup CronJobs' component (``release.of("backup")`` in kgstack.agent_stack)."""
BACKED_UP_STORES = ("chroma",)
"""Stores whose kgbackup CronJob runs as a scheduled task: Redis is ElastiCache (SYNC is a restricted command
there, and ElastiCache snapshots it), and ECS runs no Memgraph."""
SERVICES_RUN = ("query", "indexer", "web", "chroma")
"""Components run as Fargate services; the edge adds its own; Redis is ElastiCache."""

# The smallest ElastiCache node whose memory holds the Redis limit (GiB of usable memory, AWS's table).
_CACHE_NODES = (
    ("cache.t4g.micro", 0.5),
    ("cache.t4g.small", 1.37),
    ("cache.t4g.medium", 3.09),
    ("cache.r7g.large", 13.07),
    ("cache.r7g.xlarge", 26.32),
)
# Fargate task sizes: CPU units -> allowed memory (MiB), smallest first.
_FARGATE = (
    (256, (512, 1024, 2048)),
    (512, tuple(range(1024, 4097, 1024))),
    (1024, tuple(range(2048, 8193, 1024))),
    (2048, tuple(range(4096, 16385, 1024))),
    (4096, tuple(range(8192, 30721, 1024))),
    (8192, tuple(range(16384, 61441, 4096))),
    (16384, tuple(range(32768, 122881, 8192))),
)


def fargate_size(cpu: int, memory: int) -> tuple[int, int]:
    """The smallest Fargate task size with at least ``cpu`` units and ``memory`` MiB."""
    for units, memories in _FARGATE:
        if units >= cpu:
            for mib in memories:
                if mib >= memory:
                    return units, mib
    raise ValueError(f"no Fargate task has {cpu} CPU units and {memory} MiB")


def cache_node(max_bytes: int) -> str:
    """The ElastiCache node type for Redis's ``maxmemory``."""
    for node, gib in _CACHE_NODES:
        if gib * 2**30 >= max_bytes:
            return node
    return _CACHE_NODES[-1][0]


def aws_cron(schedule: str) -> str:
    """A Kubernetes CronJob schedule (``m h dom mon dow``, Sunday 0) as an EventBridge ``cron()`` (Sunday 1)."""
    minute, hour, dom, month, dow = schedule.split()
    if dow == "*":
        dow = "?"
    else:
        dow = re.sub(r"\d", lambda m: str(int(m[0]) % 7 + 1), dow)
        dom = "?" if dom == "*" else dom
    return f"cron({minute} {hour} {dom} {month} {dow} *)"


def _skip(construct: IConstruct, **reasons: str) -> None:
    """checkov skips on the construct's CloudFormation resource, each with its reason."""
    child = construct.node.default_child if not isinstance(construct, cdk.CfnResource) else construct
    assert isinstance(child, cdk.CfnResource)
    child.add_metadata("checkov", {"skip": [{"id": k, "comment": v} for k, v in sorted(reasons.items())]})


def _family_arn(family: str) -> str:
    """A task definition family's ARN without its revision."""
    return f"arn:{cdk.Aws.PARTITION}:ecs:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:task-definition/{family}"


def ephemeral_storage_gib(containers: Iterable[Container], family: str) -> int | None:
    """The task's ephemeral storage when its scratch volumes (with room for the images) outgrow Fargate's
    default 20 GiB, else None (the default). A backup's scratch holds a whole compressed dump."""
    scratch = sum(gibibytes(w.size) for c in containers for w in c.writable if not w.persistent)
    needed = scratch + FARGATE_IMAGE_ROOM_GIB
    if needed <= FARGATE_DEFAULT_STORAGE_GIB:
        return None
    if needed > FARGATE_MAX_STORAGE_GIB:
        raise ValueError(
            f"task {family}: its scratch volumes need {scratch} GiB (backup.workSize for a backup), but a Fargate "
            f"task has at most {FARGATE_MAX_STORAGE_GIB - FARGATE_IMAGE_ROOM_GIB} GiB beside its images"
        )
    return needed


def _nag(construct: IConstruct, **reasons: str) -> None:
    """cdk-nag acknowledgments (``AwsSolutions-<rule>``) on the construct and what it contains, each with its
    reason (CDK's own ``Validations``: cdk-nag 3 reads them, and the synth needs no cdk-nag)."""
    validations = cdk.Validations.of(construct)
    for rule, reason in sorted(reasons.items()):
        validations.acknowledge(cdk.Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))
    ACKNOWLEDGED.extend((construct.node.path, f"AwsSolutions-{rule}", reason) for rule, reason in reasons.items())


def _nag_finding(construct: IConstruct, rule: str, finding: str, reason: str, *, noted: str | None = None) -> None:
    """One cdk-nag finding (``AwsSolutions-<rule>[<finding>]``) acknowledged with its reason, where a whole rule
    would hide others; ``noted``: a shorter reason for :data:`ACKNOWLEDGED`."""
    cdk.Validations.of(construct).acknowledge(
        cdk.Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}[{finding}]", reason=reason)
    )
    ACKNOWLEDGED.append((construct.node.path, f"AwsSolutions-{rule}", noted or reason))


ACKNOWLEDGED: list[tuple[str, str, str]] = []
"""Every acknowledgment made by the last render, as (construct path, rule, reason)."""


class EcsStack(cdk.Stack):
    """The environment on ECS Fargate; see the module's docstring."""

    def __init__(
        self,
        scope: Construct,
        env: Environment,
        *,
        objects: Mapping[str, dict[str, Any]],
        flows: Iterable[Flow],
        remote_secrets: Mapping[str, str],
    ) -> None:
        super().__init__(scope, env.name, stack_name=f"{env.instance}", description=f"Knowledge Graph Agent {env.name}")
        self.spec = env
        self.parts = CloudComponents(dict(objects), {ref.reference: key for key, ref in env.images.all().items()})
        self.remote_secrets = dict(remote_secrets)
        self.secrets: dict[str, secretsmanager.ISecret] = {}
        self.flows = list(flows)
        instance = env.instance
        self.certificate = cdk.CfnParameter(
            self,
            "CertificateArn",
            type="String",
            allowed_pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$",
            description=f"ACM certificate of {env.domain} in the stack's region (docs/cloud-ecs.md)",
        )

        # One customer key for the logs and the backups (rotated yearly); CloudWatch Logs may use it in this region.
        self.key = kms.Key(
            self,
            "DataKey",
            description=f"{instance} logs and backups",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.key.grant_encrypt_decrypt(iam.ServicePrincipal(f"logs.{cdk.Aws.REGION}.amazonaws.com"))
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=LOG_RETENTION,
            encryption_key=self.key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        for subnet in self.vpc.public_subnets:
            _skip(
                subnet,
                CKV_AWS_130="public subnets hold only the internet-facing ALB and the NAT gateway, never a task",
            )
        self.private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            cluster_name=instance,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.namespace = servicediscovery.PrivateDnsNamespace(
            self, "Namespace", name=f"{instance}.internal", vpc=self.vpc
        )
        self.lb_logs = s3.Bucket(
            self,
            "LoadBalancerLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # ALB access logs support SSE-S3 only
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(ALB_LOG_DAYS),
                    noncurrent_version_expiration=cdk.Duration.days(1),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        _nag(self.lb_logs, S1="the access-log bucket itself: logging its reads would need a bucket for that bucket")
        _skip(
            self.lb_logs,
            CKV_AWS_18="the access-log bucket itself: logging its reads would need a bucket for that bucket",
            CKV_AWS_145="ALB access logs support only SSE-S3 (AES256), not KMS",
        )

        # One security group per component: the flows decide every rule between them.
        self.groups: dict[str, ec2.SecurityGroup] = {}
        # The customer key, not alias/aws/sns: CloudWatch and EventBridge publish to an encrypted topic only when
        # the key's policy lets them use it, and an AWS managed key's policy cannot be changed.
        self.alarms = sns.Topic(
            self, "Alarms", display_name=f"{instance} alarms", master_key=self.key, enforce_ssl=True
        )
        for publisher in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    principals=[iam.ServicePrincipal(publisher)],
                    resources=["*"],  # in a key policy, "*" is this key
                )
            )

        self.redis = self._redis()
        self.files = efs.FileSystem(
            self,
            "Files",
            vpc=self.vpc,
            vpc_subnets=self.private,
            encrypted=True,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            security_group=self._group("efs"),
            enable_automatic_backups=False,  # the plan below keeps the environment's retention
        )
        self._backups()

        self.services: dict[str, ecs.FargateService] = {}
        self.scheduled: dict[str, events.Rule] = {}
        """Scheduled task name (``reindex``, ``backup-chroma``) -> its EventBridge rule."""
        self.scheduled_components: set[str] = set()
        self.internal = elbv2.ApplicationLoadBalancer(
            self,
            "InternalAlb",
            vpc=self.vpc,
            internet_facing=False,
            vpc_subnets=self.private,
            security_group=self._group("query-lb"),
            drop_invalid_header_fields=True,
            idle_timeout=cdk.Duration.seconds(env.edge.query_timeout_seconds + 10),
        )
        self._access_logs(self.internal, "internal")
        for component in SERVICES_RUN:
            if component in self.parts.components:
                self.services[component] = self._service(self.parts.components[component])
        self.edge = self._edge()
        self._scheduled()
        self._flows()
        self._alarms()
        cdk.CfnOutput(self, "LoadBalancerDnsName", value=self.public.load_balancer_dns_name)
        cdk.CfnOutput(self, "RedisEndpoint", value=self.redis.attr_primary_end_point_address)

    def _access_logs(self, lb: elbv2.ApplicationLoadBalancer, prefix: str) -> None:
        """ALB access logs to the log bucket, for any region: ``log_access_logs`` needs one at synth, so the
        delivery account is CDK's regional table (a template mapping) plus the newer regions' service principal."""
        lb.set_attribute("access_logs.s3.enabled", "true")
        lb.set_attribute("access_logs.s3.bucket", self.lb_logs.bucket_name)
        lb.set_attribute("access_logs.s3.prefix", prefix)
        objects = self.lb_logs.arn_for_objects(f"{prefix}/AWSLogs/{cdk.Aws.ACCOUNT_ID}/*")
        account = self.regional_fact(region_info.FactName.ELBV2_ACCOUNT)
        for principal in (
            iam.AccountPrincipal(account),
            iam.ServicePrincipal("logdelivery.elasticloadbalancing.amazonaws.com"),
        ):
            self.lb_logs.add_to_resource_policy(
                iam.PolicyStatement(actions=["s3:PutObject"], principals=[principal], resources=[objects])
            )
        assert self.lb_logs.policy is not None
        lb.node.add_dependency(self.lb_logs.policy)  # logging is switched on once the bucket admits it

    # --- names, groups, secrets -------------------------------------------------------------------------------

    def _group(self, component: str) -> ec2.SecurityGroup:
        if component not in self.groups:
            self.groups[component] = ec2.SecurityGroup(
                self,
                f"Group-{component}",
                vpc=self.vpc,
                description=f"{self.spec.instance} {component}",
                allow_all_outbound=False,
            )
        return self.groups[component]

    def _host(self, service: str) -> str:
        """A Kubernetes Service name as its Cloud Map name."""
        return f"{service}.{self.namespace.namespace_name}"

    def _translate(self, value: str) -> str:
        """Service names in a setting (``CHROMA_HOST``, ``KGB_INDEXER_URL``) as Cloud Map names."""
        for part in self.parts.components.values():
            if part.service and part.component in SERVICES_RUN:
                value = re.sub(rf"(?<![\w.-]){re.escape(part.service)}(?=$|:|/)", self._host(part.service), value)
        return value

    def _secret(self, name: str) -> secretsmanager.ISecret:
        if name not in self.secrets:
            remote = self.remote_secrets[name]
            self.secrets[name] = secretsmanager.Secret.from_secret_name_v2(self, f"Secret-{name}", remote)
        return self.secrets[name]

    # --- Redis ------------------------------------------------------------------------------------------------

    def _redis(self) -> elasticache.CfnReplicationGroup:
        """ElastiCache (Redis OSS engine) with TLS and AUTH: the cache needs no volume, ElastiCache fails over
        across zones and snapshots daily; the AUTH token is the ``app`` password of the Kubernetes Secret."""
        env = self.spec
        group = self._group("redis")
        subnets = elasticache.CfnSubnetGroup(
            self,
            "RedisSubnets",
            description=f"{env.instance} redis",
            subnet_ids=self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids,
        )
        secret = self._secret(env.stores.redis.secret_name)
        token = cdk.SecretValue.secrets_manager(
            secret.secret_name, json_field=REDIS_SECRET_KEYS["app"]
        ).unsafe_unwrap()  # a dynamic reference, resolved by CloudFormation: the value never enters the template
        multi_az = env.stage.value == "prod"
        redis = elasticache.CfnReplicationGroup(
            self,
            "Redis",
            replication_group_description=f"{env.instance} cache",
            engine="redis",
            engine_version="7.1",
            cache_node_type=cache_node(RedisCache.maxmemory(env.stores.redis)),
            num_cache_clusters=2 if multi_az else 1,
            automatic_failover_enabled=multi_az,
            multi_az_enabled=multi_az,
            port=REDIS_PORT,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=token,
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[group.security_group_id],
            snapshot_retention_limit=env.backup.keep_daily,
            snapshot_window="01:00-02:00",
            auto_minor_version_upgrade=True,
        )
        if not multi_az:
            _nag(
                redis,
                AEC4=f"stage {env.stage.value} runs one cache node; prod runs two across zones with failover, "
                "and a lost cache refills on use",
            )
        _nag(
            redis,
            AEC5="6379 is the Redis port every client and the Kubernetes target use; the group admits only the agent",
        )
        _skip(redis, CKV_AWS_191="encrypted at rest with the ElastiCache-owned key; no customer KMS key to manage")
        return redis

    # --- backups ----------------------------------------------------------------------------------------------

    def _backups(self) -> None:
        """AWS Backup of the EFS file system (Chroma's data, the indexer's working directory): daily and
        weekly copies kept as ``backup.keepDaily`` / ``keepWeekly`` say."""
        b = self.spec.backup
        vault = backup.BackupVault(self, "Vault", encryption_key=self.key, removal_policy=cdk.RemovalPolicy.RETAIN)
        hour, minute = b.first_run.split(":")
        rules = [
            backup.BackupPlanRule(
                rule_name="daily",
                schedule_expression=events.Schedule.cron(minute=minute, hour=hour),
                delete_after=cdk.Duration.days(b.keep_daily),
            )
        ]
        if b.keep_weekly:
            rules.append(
                backup.BackupPlanRule(
                    rule_name="weekly",
                    schedule_expression=events.Schedule.cron(minute=minute, hour=hour, week_day="SUN"),
                    delete_after=cdk.Duration.days(7 * b.keep_weekly),
                )
            )
        plan = backup.BackupPlan(self, "BackupPlan", backup_vault=vault, backup_plan_rules=rules)
        selection = plan.add_selection("Files", resources=[backup.BackupResource.from_efs_file_system(self.files)])
        _nag_finding(
            selection,
            "IAM4",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
            "AWS Backup's own service-role policy, which AWS keeps scoped to taking backups",
            noted="AWS Backup's own service-role policy",
        )

    # --- tasks ------------------------------------------------------------------------------------------------

    def _task(self, part: Component, containers: list[Container], family: str) -> ecs.FargateTaskDefinition:
        cpu = sum(cpu_units(c.resources.limits.cpu) for c in containers)
        memory = sum(mebibytes(c.resources.limits.memory) for c in containers)
        task_cpu, task_memory = fargate_size(cpu, memory)
        task = ecs.FargateTaskDefinition(
            self,
            f"Task-{family}",
            family=f"{self.spec.instance}-{family}",
            cpu=task_cpu,
            memory_limit_mib=task_memory,
            ephemeral_storage_gib=ephemeral_storage_gib(containers, family),
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        log_group = logs.LogGroup(
            self,
            f"Logs-{family}",
            log_group_name=f"/kga/{self.spec.name}/{family}",
            retention=LOG_RETENTION,
            encryption_key=self.key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        added = [self._container(task, part, container, log_group) for container in containers]
        scratch = [volume for _, volumes in added for volume in volumes]
        if scratch:
            owner = self._volume_owner(task, containers[0].image, scratch, log_group)
            for definition, _ in added:
                definition.add_container_dependencies(
                    ecs.ContainerDependency(container=owner, condition=ecs.ContainerDependencyCondition.SUCCESS)
                )
        _nag(
            task,
            ECS2="plain settings only (the Kubernetes ConfigMap's); every credential comes from Secrets Manager",
        )
        if task.execution_role is not None:
            _nag(
                task.execution_role,
                IAM5="Secrets Manager names end in a random suffix (-??????), and ECR authorization has no resource",
            )
        return task

    def _volume_owner(
        self, task: ecs.FargateTaskDefinition, image: str, scratch: list[tuple[str, int, int]], log: logs.ILogGroup
    ) -> ecs.ContainerDefinition:
        """Fargate presents a task's bind volumes as ``root:root 0755``, and every container here runs as a non-root
        user with a read-only root file system: nothing could write its ``/tmp``. This container runs first, to its
        end, as root with one capability (CHOWN: Fargate can drop capabilities, never add them), and hands each
        scratch volume to the user of the container that mounts it; the others start once it has succeeded."""
        owners: dict[tuple[int, int], list[str]] = {}
        for volume, uid, gid in scratch:
            owners.setdefault((uid, gid), []).append(f"{VOLUME_OWNER_ROOT}/{volume}")
        if len(owners) > 1:  # one chown per owner would need a shell, which not every image has
            raise ValueError(f"the scratch volumes of task {task.node.id} have several owners: {sorted(owners)}")
        (((uid, gid), paths),) = owners.items()
        linux = ecs.LinuxParameters(self, f"Linux-{task.node.id}-{VOLUME_OWNER}")
        linux.drop_capabilities(*(ecs.Capability(cap) for cap in DOCKER_DEFAULT_CAPABILITIES if cap != "CHOWN"))
        owner = task.add_container(
            VOLUME_OWNER,
            container_name=VOLUME_OWNER,
            image=ecs.ContainerImage.from_registry(image),
            entry_point=["chown"],
            command=[f"{uid}:{gid}", *paths],
            user="0:0",
            readonly_root_filesystem=True,
            privileged=False,
            linux_parameters=linux,
            cpu=0,
            # A reservation, no limit: it ends before the others start, so it needs no room of its own in the task.
            memory_reservation_mib=VOLUME_OWNER_MEMORY_MIB,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=VOLUME_OWNER, log_group=log),
            essential=False,
        )
        for volume, _, _ in scratch:
            owner.add_mount_points(
                ecs.MountPoint(container_path=f"{VOLUME_OWNER_ROOT}/{volume}", source_volume=volume, read_only=False)
            )
        return owner

    def _container(
        self, task: ecs.FargateTaskDefinition, part: Component, c: Container, log: logs.ILogGroup
    ) -> tuple[ecs.ContainerDefinition, list[tuple[str, int, int]]]:
        """The container definition, and its scratch volumes (bind mounts) with the user and group that write them."""
        env = {k: self._translate(v) for k, v in c.env.items()}
        secrets = {
            var: ecs.Secret.from_secrets_manager(self._secret(ref.name), field=ref.key)
            for var, ref in sorted(c.secret_env.items())
            # ECS refuses to start a task whose secret lacks a key: an optional one stays out.
            if not ref.optional
        }
        files = {path: text for path, text in c.files.items() if path != f"{HTML_ROOT}/{WEB_CONFIG_FILE}"}
        command = list(c.command or []) + list(c.args or [])
        entry_point: list[str] | None = None
        if files or c.secret_files:
            # No ConfigMaps on Fargate: the start script writes each file from a variable, then runs the command.
            entry_point, plain, secret_files = start_script(files, c.secret_files)
            env |= {var: self._translate(text) for var, text in plain.items()}
            secrets |= {
                var: ecs.Secret.from_secrets_manager(self._secret(ref.name), field=ref.key)
                for var, ref in secret_files.items()
            }
            command = full_command(c)
        linux = ecs.LinuxParameters(self, f"Linux-{task.node.id}-{c.name}", init_process_enabled=True)
        linux.drop_capabilities(ecs.Capability.ALL)
        health = _health(c, c.liveness or c.readiness, part.component)
        definition = task.add_container(
            c.name,
            container_name=c.name,
            image=ecs.ContainerImage.from_registry(c.image),
            entry_point=entry_point,
            command=command or None,
            environment=env,
            secrets=secrets,
            readonly_root_filesystem=True,
            user=f"{c.user}:{c.group}",
            privileged=False,
            linux_parameters=linux,
            port_mappings=[
                ecs.PortMapping(container_port=port, name=name, protocol=ecs.Protocol.TCP)
                for name, port in sorted(c.ports.items())
            ],
            cpu=cpu_units(c.resources.requests.cpu),
            memory_limit_mib=mebibytes(c.resources.limits.memory),
            memory_reservation_mib=mebibytes(c.resources.requests.memory),
            working_directory=c.working_dir,
            stop_timeout=cdk.Duration.seconds(min(part.grace_seconds, MAX_STOP_SECONDS)),
            health_check=health,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=c.name, log_group=log),
            essential=True,
        )
        mounts = {w.path: w for w in c.writable}
        dirs = sorted({path.rsplit("/", 1)[0] for path in [*files, *c.secret_files]})
        for directory in dirs:
            if not any(directory == m or directory.startswith(f"{m}/") for m in mounts):
                mounts[directory] = None  # type: ignore[assignment]
        scratch: list[tuple[str, int, int]] = []
        for path, writable in sorted(mounts.items()):
            volume = f"{c.name}-{re.sub(r'[^A-Za-z0-9]+', '-', path).strip('-')}"
            if writable is not None and writable.persistent:
                self._efs_volume(task, volume, part, c)
            else:
                task.add_volume(name=volume)
                scratch.append((volume, c.user, c.group))
            definition.add_mount_points(ecs.MountPoint(container_path=path, source_volume=volume, read_only=False))
        return definition, scratch

    def _efs_volume(self, task: ecs.FargateTaskDefinition, volume: str, part: Component, c: Container) -> None:
        """State on EFS through an access point owned by the container's user (one directory per component)."""
        point = efs.AccessPoint(
            self,
            f"AccessPoint-{volume}",
            file_system=self.files,
            path=f"/{part.component}",
            posix_user=efs.PosixUser(uid=str(c.user), gid=str(c.group)),
            create_acl=efs.Acl(owner_uid=str(c.user), owner_gid=str(c.group), permissions="750"),
        )
        task.add_volume(
            name=volume,
            efs_volume_configuration=ecs.EfsVolumeConfiguration(
                file_system_id=self.files.file_system_id,
                transit_encryption="ENABLED",
                authorization_config=ecs.AuthorizationConfig(access_point_id=point.access_point_id, iam="ENABLED"),
            ),
        )
        self.files.grant(task.task_role, "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")
        self._allow(part.component, "efs", 2049, f"{part.component} keeps its state on EFS")

    def _service(self, part: Component, containers: list[Container] | None = None) -> ecs.FargateService:
        task = self._task(part, containers or list(part.containers), part.component)
        stateful = any(w.persistent for c in part.containers for w in c.writable)
        service = ecs.FargateService(
            self,
            f"Service-{part.component}",
            cluster=self.cluster,
            task_definition=task,
            service_name=part.name,
            desired_count=part.replicas,
            security_groups=[self._group(part.component)],
            vpc_subnets=self.private,
            assign_public_ip=False,
            # One writer of a volume: the old task stops before the new one starts (Kubernetes' Recreate).
            min_healthy_percent=0 if stateful else 100,
            max_healthy_percent=100 if stateful else 200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            platform_version=ecs.FargatePlatformVersion.VERSION1_4,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            cloud_map_options=ecs.CloudMapOptions(
                name=part.service or part.name,
                cloud_map_namespace=self.namespace,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=cdk.Duration.seconds(10),
            )
            if part.service
            else None,
        )
        if part.component == "query":
            self._query_scaling(part, service)
        return service

    def _query_scaling(self, part: Component, service: ecs.FargateService) -> None:
        """Behind the internal ALB, scaled on requests per target (Little's law: the HPA's in-flight target
        over the SLO latency) and on CPU, within the HPA's bounds and scale-down stabilisation."""
        env = self.spec
        agent = part.containers[0]
        port = agent.ports["http"]
        ready = agent.readiness
        targets_ = elbv2.ApplicationTargetGroup(
            self,
            "QueryTargets",
            vpc=self.vpc,
            port=port,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[service.load_balancer_target(container_name=agent.name, container_port=port)],
            health_check=elbv2.HealthCheck(
                path=ready.path if ready else READY_PATH,
                port=str(ready.port) if ready and ready.port else None,
                interval=cdk.Duration.seconds(max(5, ready.period if ready else 10)),
                timeout=cdk.Duration.seconds(ready.timeout if ready else 3),
                healthy_threshold_count=2,
                unhealthy_threshold_count=max(2, ready.failures if ready else 2),
            ),
            # In-flight answers finish before the task is stopped.
            deregistration_delay=cdk.Duration.seconds(env.edge.query_timeout_seconds),
        )
        listener = self.internal.add_listener("Query", port=port, protocol=elbv2.ApplicationProtocol.HTTP, open=False)
        hop = "the edge's hop to the query tier inside the VPC, admitted from the edge only; TLS ends at the public ALB"
        _skip(listener, CKV_AWS_2=hop, CKV_AWS_103=hop)
        listener.add_target_groups("Query", target_groups=[targets_])
        a = env.query.autoscaling
        scaling = service.auto_scale_task_count(min_capacity=a.min_replicas, max_capacity=a.max_replicas)
        per_minute = max(1, round(a.target_in_flight * 60 / env.monitoring.slo_latency_seconds))
        cooldown = cdk.Duration.seconds(a.scale_down_stabilization_seconds)
        scaling.scale_on_request_count(
            "Requests",
            requests_per_target=per_minute,
            target_group=targets_,
            scale_in_cooldown=cooldown,
            scale_out_cooldown=cdk.Duration.seconds(60),
        )
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=a.target_cpu_utilization,
            scale_in_cooldown=cooldown,
            scale_out_cooldown=cdk.Duration.seconds(60),
        )
        self.query_targets = targets_

    # --- edge -------------------------------------------------------------------------------------------------

    def _edge(self) -> ecs.FargateService:
        env, parts = self.spec, self.parts.components
        auth = parts["auth"]
        query, indexer, web = parts["query"], parts["indexer"], parts["web"]
        conf = cloud_edge_conf(
            CloudEdgeProps(
                settings=env.edge,
                domain=env.domain,
                web=f"{self._host(web.name)}:{web.service_ports['http']}",
                query=[f"{self.internal.load_balancer_dns_name}:{query.service_ports['http']}"],
                indexer=f"{self._host(indexer.name)}:{indexer.service_ports['http']}",
                resolver="169.254.169.253",  # the VPC's DNS resolver
                trusted_proxies=[VPC_CIDR],
            )
        )
        edge = edge_component(auth, conf, name=f"{env.instance}-{EDGE}", replicas=auth.replicas)
        service = self._service(edge)
        self.public = elbv2.ApplicationLoadBalancer(
            self,
            "Alb",
            vpc=self.vpc,
            internet_facing=True,
            security_group=self._group("alb"),
            drop_invalid_header_fields=True,
            idle_timeout=cdk.Duration.seconds(
                max(env.edge.query_timeout_seconds, env.edge.indexer_timeout_seconds) + 10
            ),
        )
        self._access_logs(self.public, "public")
        https = self.public.add_listener(
            "Https",
            port=443,
            certificates=[elbv2.ListenerCertificate.from_arn(self.certificate.value_as_string)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            open=True,
        )
        self.public.add_redirect(source_port=80, target_port=443)
        self.edge_targets = https.add_targets(
            "Edge",
            port=EDGE_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[service.load_balancer_target(container_name=EDGE, container_port=EDGE_PORT)],
            health_check=elbv2.HealthCheck(path=EDGE_HEALTH_PATH, healthy_threshold_count=2),
            deregistration_delay=cdk.Duration.seconds(env.edge.query_timeout_seconds),
        )
        reason = "the public HTTPS endpoint of the environment (and its redirect from HTTP)"
        _nag(self.groups["alb"], EC23=reason)
        _skip(self.groups["alb"], CKV_AWS_260=reason)
        _skip(self.public, CKV_AWS_2="port 80 only redirects to HTTPS", CKV_AWS_103="port 80 only redirects to HTTPS")
        return service

    # --- flows ------------------------------------------------------------------------------------------------

    def _allow(self, source: str, destination: str, port: int, purpose: str) -> None:
        src, dst = self._group(source), self._group(destination)
        description = purpose[:250]
        dst.add_ingress_rule(src, ec2.Port.tcp(port), description)
        src.add_egress_rule(dst, ec2.Port.tcp(port), description)

    def _flows(self) -> None:
        """Security group rules from the declared flows, translated to the ECS shape: the edge's flows
        start at the edge task, which reaches the query tier through the internal ALB; monitoring's
        scrapes and probes have no counterpart (CloudWatch reads the metrics), nor has DNS (the VPC's)."""
        running = {*self.services, *self.scheduled_components, EDGE, "redis"}
        for flow in self.flows:
            dst, source = flow.destination, self._source(flow)
            if source not in running:
                continue  # monitoring, or a component the ECS target does not run
            store = flow.source.pod_labels.get(STORE_LABEL) if isinstance(flow.source, ComponentPeer) else None
            if source == BACKUP_COMPONENT and store not in BACKED_UP_STORES:
                continue  # the Redis backup: ElastiCache keeps its own snapshots
            if isinstance(dst, InternetPeer):
                for port in flow.ports:
                    self._group(source).add_egress_rule(
                        ec2.Peer.any_ipv4(), ec2.Port.tcp(port.port), flow.purpose[:250]
                    )
                continue
            if not isinstance(dst, ComponentPeer) or dst.component not in running | {"auth"}:
                continue
            if dst.component == "auth":
                continue  # one task: the proxy calls the verifier on localhost
            for port in flow.ports:
                if dst.component == "query" and source == EDGE:
                    self._allow(EDGE, "query-lb", port.port, flow.purpose)
                    self._allow("query-lb", "query", port.port, "the internal ALB forwards to the query tier")
                else:
                    self._allow(source, dst.component, port.port, flow.purpose)
        # Every task pulls its image, reads its secrets and ships its logs through its own network interface.
        for name in sorted(running - {"redis"}):
            self._group(name).add_egress_rule(
                ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "ECR, Secrets Manager and CloudWatch Logs (Fargate agent)"
            )

    def _source(self, flow: Flow) -> str | None:
        """The ECS component a flow starts at: its component, or the edge for the edge's data plane."""
        source = flow.source
        if isinstance(source, ComponentPeer):
            return source.component
        data_plane = self.spec.edge.gateway.data_plane_namespace
        edge = getattr(source, "namespace", None) in (data_plane, self.spec.network.ingress_controller_namespace)
        return EDGE if edge else None

    # --- scheduled tasks ---------------------------------------------------------------------------------------

    def _scheduled(self) -> None:
        """The re-index and the Chroma backup CronJobs as EventBridge-scheduled Fargate tasks of their images.

        The Redis backup has no task: kgbackup copies Redis over SYNC, which ElastiCache refuses (a restricted
        command); ElastiCache's own snapshots keep the cache (:meth:`_redis`)."""
        for _, part in sorted(self.parts.components.items()):
            name = self._scheduled_name(part)
            if part.schedule is None or name is None:
                continue
            task = self._task(part, list(part.containers), name)
            rule = events.Rule(self, f"Schedule-{name}", schedule=events.Schedule.expression(aws_cron(part.schedule)))
            rule.add_target(
                targets.EcsTask(
                    cluster=self.cluster,
                    task_definition=task,
                    subnet_selection=self.private,
                    security_groups=[self._group(part.component)],
                    platform_version=ecs.FargatePlatformVersion.VERSION1_4,
                )
            )
            _nag_finding(
                task,
                "IAM5",
                "Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:*:task/"
                f"<{self.get_logical_id(self.cluster.node.default_child)}>/*",
                f"EventBridge starts the {name} task in this cluster: a task's ID exists only once it runs",
            )
            if part.component == BACKUP_COMPONENT:
                self._backup_access(task)
            self._notify_failed(name, task)
            self.scheduled[name] = rule
            self.scheduled_components.add(part.component)

    def _notify_failed(self, name: str, task: ecs.FargateTaskDefinition) -> None:
        """A scheduled run that fails (a container exits non-zero, a held backup's 3 among them, or the task never
        starts) reaches the alarm topic: the counterpart of KgaBackupJobFailed and KgaReindexFailed."""
        rule = events.Rule(
            self,
            f"Failed-{name}",
            description=f"a scheduled {name} task of {self.spec.instance} failed",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    "clusterArn": [self.cluster.cluster_arn],
                    "taskDefinitionArn": [{"prefix": f"{_family_arn(task.family)}:"}],
                    "lastStatus": ["STOPPED"],
                    "$or": [
                        {"containers": {"exitCode": [{"anything-but": 0}]}},
                        {"stopCode": ["TaskFailedToStart"]},
                    ],
                },
            ),
        )
        rule.add_target(targets.SnsTopic(self.alarms))

    def _scheduled_name(self, part: Component) -> str | None:
        """The scheduled task a CronJob becomes (its family without the instance), or None when ECS runs none."""
        if part.component == "reindex":
            return "reindex"
        if part.component == BACKUP_COMPONENT and part.labels.get(STORE_LABEL) in BACKED_UP_STORES:
            return part.name.removeprefix(f"{self.spec.instance}-")
        return None

    def _backup_access(self, task: ecs.FargateTaskDefinition) -> None:
        """The backup task's role may list, read, write and prune its own prefix of the backup bucket, nothing else;
        with ``backup.credentialsSecret`` set, the task reads those keys instead (from Secrets Manager)."""
        bucket, _, prefix = self.spec.backup.target.removeprefix("s3://").partition("/")
        objects = f"{prefix.strip('/')}/*" if prefix.strip("/") else "*"
        task.add_to_task_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}"],
                conditions={"StringLike": {"s3:prefix": [objects]}},
            )
        )
        task.add_to_task_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}/{objects}"],
            )
        )
        _nag_finding(
            task,
            "IAM5",
            f"Resource::arn:<AWS::Partition>:s3:::{bucket}/{objects}",
            f"the backups are the objects under s3://{bucket}/{objects}, named by their time",
        )

    # --- alarms -----------------------------------------------------------------------------------------------

    def _alarms(self) -> None:
        """The SLO burn-rate alerts (kgstack.monitoring) on the public ALB's metrics, and components down."""
        m, lb = self.spec.monitoring, self.public
        action = cw_actions.SnsAction(self.alarms)

        def ratio(window: int, kind: str) -> cw.MathExpression:
            period = cdk.Duration.seconds(window)
            requests = lb.metrics.request_count(period=period, statistic="Sum")
            if kind == "availability":
                errors = lb.metrics.http_code_target(
                    elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=period, statistic="Sum"
                )
                elb = lb.metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=period, statistic="Sum")
                return cw.MathExpression(
                    expression="IF(r > 0, (e + b) / r, 0)",
                    using_metrics={"e": errors, "b": elb, "r": requests},
                    period=period,
                )
            fast = lb.metrics.target_response_time(period=period, statistic=f"PR(:{m.slo_latency_seconds:g})")
            return cw.MathExpression(
                expression="IF(r > 0, 1 - f / 100, 0)", using_metrics={"f": fast, "r": requests}, period=period
            )

        def seconds(window: str) -> int:
            return int(window[:-1]) * {"m": 60, "h": 3600, "d": 86400}[window[-1]]

        for slo, target in (("availability", m.slo_availability), ("latency", m.slo_latency_target)):
            budget = 1 - target
            for severity, windows in BURN_RATES.items():
                level = "Critical" if severity == "critical" else "Warning"
                name = f"Kga{slo.capitalize()}BurnRate{level}"
                pairs = []
                for factor, long, short in windows:
                    pair = []
                    for window in (long, short):
                        span = seconds(window)
                        # CloudWatch periods stop at a day: a longer window is that many daily periods, all over.
                        period, count = (span, 1) if span <= 86400 else (86400, span // 86400)
                        alarm = cw.Alarm(
                            self,
                            f"{name}-{window}",
                            alarm_name=f"{self.spec.instance}-{name}-{long}-{window}",
                            metric=ratio(period, slo),
                            threshold=factor * budget,
                            evaluation_periods=count,
                            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                        )
                        pair.append(cw.AlarmRule.from_alarm(alarm, cw.AlarmState.ALARM))
                    pairs.append(cw.AlarmRule.all_of(*pair))
                composite = cw.CompositeAlarm(
                    self,
                    name,
                    composite_alarm_name=f"{self.spec.instance}-{name}",
                    alarm_rule=cw.AlarmRule.any_of(*pairs),
                    alarm_description=f"{severity}: the {slo} SLO ({target:.2%}) error budget burns "
                    f"(docs/runbooks/{name}.md)",
                )
                composite.add_alarm_action(action)
        edge = cw.Alarm(
            self,
            "KgaEdge5xxRatioHigh",
            alarm_name=f"{self.spec.instance}-KgaEdge5xxRatioHigh",
            metric=ratio(300, "availability"),
            threshold=EDGE_5XX_RATIO,
            evaluation_periods=2,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        edge.add_alarm_action(action)
        for component, service in sorted(self.services.items()):
            down = cw.Alarm(
                self,
                f"Down-{component}",
                alarm_name=f"{self.spec.instance}-{component}-down",
                metric=cw.Metric(
                    namespace="ECS/ContainerInsights",
                    metric_name="RunningTaskCount",
                    dimensions_map={"ClusterName": self.cluster.cluster_name, "ServiceName": service.service_name},
                    period=cdk.Duration.minutes(1),
                    statistic="Minimum",
                ),
                threshold=1,
                evaluation_periods=5,
                comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.BREACHING,
                alarm_description=f"no running task of {component}",
            )
            down.add_alarm_action(action)


def _health(c: Container, probe: Probe | None, component: str) -> ecs.HealthCheck | None:
    """The liveness probe as a container health check, with a client the image has."""
    if probe is None:
        return None
    if probe.command:
        command = ["CMD", *probe.command]
    elif probe.port and probe.path:
        url = f"http://127.0.0.1:{probe.port}{probe.path}"
        if component in ("query", "indexer", "reindex"):
            command = [
                "CMD",
                "python",
                "-c",
                "import sys,urllib.request as u; "
                f"sys.exit(0 if u.urlopen('{url}', timeout={probe.timeout}).status == 200 else 1)",
            ]
        elif component == "chroma":
            return None  # no HTTP client in the image: ECS restarts it when the server exits
        else:
            command = ["CMD", "wget", "-q", "-O", "/dev/null", url]
    else:
        return None
    return ecs.HealthCheck(
        command=command,
        interval=cdk.Duration.seconds(max(5, probe.period)),
        timeout=cdk.Duration.seconds(max(2, probe.timeout)),
        retries=min(10, probe.failures),
        start_period=cdk.Duration.seconds(180 if component in ("query", "indexer") else 30),
    )


Plugins = Callable[[cdk.App], list[Any]]
"""Policy validation plugins for the App (the tests pass cdk-nag's ``AwsSolutionsChecks(app)``)."""


def render_ecs(
    env: Environment,
    objects: Mapping[str, dict[str, Any]],
    flows: Iterable[Flow],
    remote_secrets: Mapping[str, str],
    *,
    plugins: Plugins | None = None,
) -> dict[str, Any]:
    """The CloudFormation template of ``env`` (no bootstrap, no assets, no lookups: environment-agnostic).
    With ``plugins`` their violations fail the synth (CDK's policy validation) with their report."""
    ACKNOWLEDGED.clear()
    with tempfile.TemporaryDirectory(prefix="kga-cdk-") as outdir:
        app = cdk.App(
            outdir=outdir,
            analytics_reporting=False,
            default_stack_synthesizer=cdk.BootstraplessSynthesizer(),
            context={"aws:cdk:enable-path-metadata": False, "aws:cdk:disable-version-reporting": True},
        )
        stack = EcsStack(app, env, objects=objects, flows=flows, remote_secrets=remote_secrets)
        if plugins is not None:
            cdk.Validations.of(app).add_plugins(*plugins(app))
        assembly = app.synth()
        template: dict[str, Any] = assembly.get_stack_by_name(stack.stack_name).template
        return json.loads(json.dumps(template, sort_keys=True))  # type: ignore[no-any-return]
