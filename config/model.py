"""The typed stage config: one ``StageConfig`` per ``config/<stage>.yaml``, validated and frozen.

Every fact about a stage lives here; stacks, constructs and charts receive flat keyword arguments
unpacked from it in ``app.py``. Cross-field rules (AZs in the region, subnets inside the VPC, prod
data stores Multi-AZ, node subnets large enough for the pools) run before anything is synthesized.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.backup import BackupConfig, StageBackupConfig
from config.catalog import (
    CACHE_NODE_MEMORY_GIB,
    CACHE_RESERVED_MEMORY_FRACTION,
    INSTANCE_TYPES,
    MIG_COMPUTE_SLICES,
    MIG_MEMORY_SLICES,
    instance_type,
)
from config.edge import EdgeConfig, StageEdgeConfig
from config.inference import InferenceConfig
from config.observability import ObservabilityConfig
from config.workloads import WorkloadsConfig
from config.workstation import CostConfig, WorkstationConfig

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
# Versions with pinned add-ons, kubectl layer and node AMI (see stacks/cluster_stack.py).
KubernetesVersion = Literal["1.35"]
KUBERNETES_VERSIONS = get_args(KubernetesVersion)
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "logs", "ssm", "ssmmessages", "ec2messages", "secretsmanager",
                       "sqs", "elasticloadbalancing", "eks", "eks-auth", "kms")  # fmt: skip
# AWS region names: partition prefix, geography, number (us-east-1, eu-central-2, ap-southeast-4).
REGION_PATTERN = re.compile(r"^(us|eu|ap|ca|sa|me|af|il|mx)-(north|south|east|west|central|northeast|southeast|"
                            r"northwest|southwest)-\d$")  # fmt: skip
# Kubernetes label keys: optional DNS-subdomain prefix, then a name of at most 63 characters.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
LABEL_VALUE_PATTERN = re.compile(rf"^({_LABEL_NAME})?$")
POOL_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _cidr(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"{value!r} is not an IPv4 network in CIDR form such as 10.0.1.0/24 ({err})") from None


class NetworkConfig(_Frozen):
    """The VPC and its subnet plan: one subnet of each tier per availability zone."""

    vpc_cidr: str = "10.0.0.0/16"
    public_subnets: tuple[str, ...]
    data_subnets: tuple[str, ...]
    node_subnets: tuple[str, ...]
    nat_gateways: Annotated[int, Field(ge=1, le=6)] = 1
    interface_endpoints: tuple[str, ...] = ("ecr.api", "ecr.dkr", "sts", "logs")
    flow_log_retention_days: int = 30

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, value: str) -> str:
        net = _cidr(value)
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"VPC prefix must be /16 to /24 (got /{net.prefixlen})")
        return value

    @field_validator("public_subnets", "data_subnets", "node_subnets")
    @classmethod
    def _subnets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            _cidr(cidr)
        return value

    @field_validator("interface_endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in INTERFACE_ENDPOINTS:
                raise ValueError(f"unknown interface endpoint {name!r}: use one of {', '.join(INTERFACE_ENDPOINTS)}")
        return value

    @field_validator("flow_log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        return _log_retention(value)

    @model_validator(mode="after")
    def _plan(self) -> NetworkConfig:
        vpc = _cidr(self.vpc_cidr)
        seen: list[tuple[str, ipaddress.IPv4Network]] = []
        for tier in ("public_subnets", "data_subnets", "node_subnets"):
            for cidr in getattr(self, tier):
                net = _cidr(cidr)
                if not net.subnet_of(vpc):
                    raise ValueError(f"{tier}: {cidr} is not inside the VPC CIDR {self.vpc_cidr}")
                for other_tier, other in seen:
                    if net.overlaps(other):
                        raise ValueError(f"{tier}: {cidr} overlaps {other} of {other_tier}")
                seen.append((tier, net))
        return self


class RdsConfig(_Frozen):
    """The PostgreSQL instance behind MLflow and the feature registry."""

    instance_class: str = "db.t4g.medium"
    engine_version: Literal["16", "17", "18"] = "17"
    allocated_storage_gib: Annotated[int, Field(ge=20, le=65536)] = 50
    max_allocated_storage_gib: Annotated[int, Field(ge=20, le=65536)] = 200
    multi_az: bool = False
    backup_retention_days: Annotated[int, Field(ge=1, le=35)] = 7

    @field_validator("instance_class")
    @classmethod
    def _class(cls, value: str) -> str:
        if not re.fullmatch(r"db\.[a-z][a-z0-9]*\.[a-z0-9]+", value):
            raise ValueError(f"{value!r} is not an RDS instance class such as db.r7g.large")
        return value

    @model_validator(mode="after")
    def _storage(self) -> RdsConfig:
        if self.max_allocated_storage_gib < self.allocated_storage_gib:
            raise ValueError(
                f"max_allocated_storage_gib ({self.max_allocated_storage_gib}) must be at least "
                f"allocated_storage_gib ({self.allocated_storage_gib})"
            )
        return self


class CacheConfig(_Frozen):
    """The Valkey cluster (Redis-compatible): online feature store and prediction cache."""

    engine: Literal["valkey", "redis"] = "valkey"
    node_type: str = "cache.t4g.medium"
    shards: Annotated[int, Field(ge=1, le=500)] = 1
    replicas_per_shard: Annotated[int, Field(ge=0, le=5)] = 0
    dataset_gib: Annotated[float, Field(gt=0)] = 1.0
    snapshot_retention_days: Annotated[int, Field(ge=0, le=35)] = 1

    @field_validator("node_type")
    @classmethod
    def _node_type(cls, value: str) -> str:
        if value not in CACHE_NODE_MEMORY_GIB:
            raise ValueError(f"unknown cache node type {value!r}: use one of {', '.join(CACHE_NODE_MEMORY_GIB)}")
        return value

    @property
    def usable_memory_gib(self) -> float:
        """Memory the cluster can hold for data: shards x node memory, less the reserved share."""
        return self.shards * CACHE_NODE_MEMORY_GIB[self.node_type] * (1 - CACHE_RESERVED_MEMORY_FRACTION)

    @model_validator(mode="after")
    def _capacity(self) -> CacheConfig:
        if self.usable_memory_gib < self.dataset_gib:
            per_shard = CACHE_NODE_MEMORY_GIB[self.node_type] * (1 - CACHE_RESERVED_MEMORY_FRACTION)
            needed = int(-(-self.dataset_gib // per_shard))
            raise ValueError(
                f"{self.shards} shard(s) of {self.node_type} hold {self.usable_memory_gib:.0f} GiB, less than "
                f"dataset_gib {self.dataset_gib:g}: use at least {needed} shards or a larger node type"
            )
        return self


class BucketConfig(_Frozen):
    """Lifecycle and replication of the datasets and models buckets."""

    datasets_glacier_after_days: Annotated[int, Field(ge=1)] = 90
    models_noncurrent_archive_after_days: Annotated[int, Field(ge=1)] = 30
    models_noncurrent_expire_after_days: Annotated[int, Field(ge=1)] = 365
    access_log_expire_after_days: Annotated[int, Field(ge=1)] = 365
    replication_region: str | None = None

    @field_validator("replication_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not REGION_PATTERN.match(value):
            raise ValueError(f"{value!r} is not an AWS region name such as us-west-2")
        return value

    @model_validator(mode="after")
    def _order(self) -> BucketConfig:
        # Glacier Flexible Retrieval has a 90-day minimum storage duration; expiring earlier is billed anyway.
        if self.models_noncurrent_expire_after_days < self.models_noncurrent_archive_after_days + 90:
            raise ValueError(
                f"models_noncurrent_expire_after_days ({self.models_noncurrent_expire_after_days}) must be at least "
                f"90 days after models_noncurrent_archive_after_days ({self.models_noncurrent_archive_after_days}), "
                "the Glacier minimum storage duration"
            )
        return self


class DataConfig(_Frozen):
    """The stateful tier: buckets, EFS, PostgreSQL and the cache, and what happens on removal."""

    removal_policy: Literal["retain", "destroy"] = "retain"
    buckets: BucketConfig = BucketConfig()
    rds: RdsConfig = RdsConfig()
    cache: CacheConfig = CacheConfig()
    efs_backup: bool = True


class Components(_Frozen):
    """One switch per platform component; everything is on unless a stage turns it off."""

    eks: bool = True
    karpenter: bool = True
    gpu_operator: bool = True
    linkerd: bool = True
    inference: bool = True
    agents: bool = True
    mlops: bool = True
    training: bool = True
    monitoring: bool = True
    backup: bool = True
    edge: bool = True
    workstation: bool = False


class Taint(_Frozen):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not LABEL_KEY_PATTERN.match(value):
            raise ValueError(f"taint key {value!r} is not a valid Kubernetes key such as nvidia.com/gpu")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if not LABEL_VALUE_PATTERN.match(value):
            raise ValueError(f"taint value {value!r} is not a valid Kubernetes label value (63 alphanumerics, -_.)")
        return value


class NoSharing(_Frozen):
    mode: Literal["none"] = "none"


class TimeSlicing(_Frozen):
    mode: Literal["time-slicing"]
    replicas: Annotated[int, Field(ge=2, le=16)]


class Mig(_Frozen):
    mode: Literal["mig"]
    layout: str


GpuSharing = Annotated[NoSharing | TimeSlicing | Mig, Field(discriminator="mode")]


class PeakSchedule(_Frozen):
    """Extra nodes on a daily UTC window (the T4 pool's 08:00-22:00 peak)."""

    extra_nodes: Annotated[int, Field(ge=1)]
    start_hour_utc: Annotated[int, Field(ge=0, le=23)]
    end_hour_utc: Annotated[int, Field(ge=0, le=23)]


class NodePoolConfig(_Frozen):
    """One node pool: where its nodes come from, what runs there and how its GPUs are shared."""

    name: str
    provisioner: Literal["nodegroup", "karpenter"]
    instance_types: Annotated[tuple[str, ...], Field(min_length=1)]
    capacity_types: Annotated[tuple[Literal["on-demand", "spot"], ...], Field(min_length=1)] = ("on-demand",)
    workload_types: Annotated[tuple[str, ...], Field(min_length=1)]
    taints: tuple[Taint, ...] = ()
    gpu_sharing: GpuSharing = NoSharing()
    min_nodes: Annotated[int, Field(ge=0)] = 0
    max_nodes: Annotated[int, Field(ge=1)]
    peak: PeakSchedule | None = None
    consolidate_after: str = "5m"
    expire_after: str = "720h"
    root_volume_gib: Annotated[int, Field(ge=20, le=16384)] = 100

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not POOL_NAME_PATTERN.match(value):
            raise ValueError(f"pool name {value!r} must be lowercase alphanumerics and '-', at most 40 characters")
        return value

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            instance_type(name)
        return value

    @field_validator("workload_types")
    @classmethod
    def _workloads(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not LABEL_VALUE_PATTERN.match(name) or not name:
                raise ValueError(f"workload type {name!r} is not a valid Kubernetes label value")
        return value

    @field_validator("consolidate_after", "expire_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        if value != "Never" and not re.fullmatch(r"(\d+(s|m|h))+", value):
            raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 720h (or Never)")
        return value

    @property
    def gpu_instance_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.instance_types if INSTANCE_TYPES[t].gpu)

    @property
    def max_pods_per_node(self) -> int:
        return max(INSTANCE_TYPES[t].max_pods for t in self.instance_types)

    @model_validator(mode="after")
    def _consistent(self) -> NodePoolConfig:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) is larger than max_nodes ({self.max_nodes})")
        sharing = self.gpu_sharing
        if not isinstance(sharing, NoSharing):
            cpu_only = [t for t in self.instance_types if not INSTANCE_TYPES[t].gpu]
            if cpu_only:
                raise ValueError(
                    f"gpu_sharing {sharing.mode} needs GPU instance types; {', '.join(cpu_only)} have no GPU"
                )
        if isinstance(sharing, Mig) and self.provisioner == "karpenter":
            raise ValueError(
                "a MIG pool must be a nodegroup: Karpenter counts whole GPUs and cannot launch nodes for "
                "nvidia.com/mig-* requests"
            )
        if self.peak and self.min_nodes + self.peak.extra_nodes > self.max_nodes:
            raise ValueError(
                f"min_nodes ({self.min_nodes}) plus peak.extra_nodes ({self.peak.extra_nodes}) exceed "
                f"max_nodes ({self.max_nodes})"
            )
        return self


class ClusterConfig(_Frozen):
    """The EKS cluster: version, endpoint access, who administers it, and its node pools."""

    kubernetes_version: KubernetesVersion = "1.35"
    public_access_cidrs: tuple[str, ...] = ()
    admin_role_arns: tuple[str, ...] = ()
    readonly_role_arns: tuple[str, ...] = ()
    mig_layouts: dict[str, dict[str, int]] = Field(default_factory=dict)
    node_pools: tuple[NodePoolConfig, ...] = ()

    @field_validator("public_access_cidrs")
    @classmethod
    def _public(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            if _cidr(cidr).prefixlen == 0:
                raise ValueError("0.0.0.0/0 opens the API endpoint to the internet: list the networks that need it")
        return value

    @field_validator("admin_role_arns", "readonly_role_arns")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arn in value:
            if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", arn):
                raise ValueError(f"{arn!r} is not an IAM role ARN such as arn:aws:iam::123456789012:role/Admin")
        return value

    @model_validator(mode="after")
    def _pools(self) -> ClusterConfig:
        names = [p.name for p in self.node_pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node pool names must be unique: {', '.join(dupes)} appear more than once")
        for pool in self.node_pools:
            if isinstance(pool.gpu_sharing, Mig):
                self._check_mig(pool, pool.gpu_sharing)
        return self

    def _check_mig(self, pool: NodePoolConfig, mig: Mig) -> None:
        layout = self.mig_layouts.get(mig.layout)
        if layout is None:
            raise ValueError(
                f"node pool {pool.name}: mig layout {mig.layout!r} is not in mig_layouts "
                f"(defined: {', '.join(self.mig_layouts) or 'none'})"
            )
        for type_name in pool.instance_types:
            gpu = INSTANCE_TYPES[type_name].gpu
            assert gpu is not None  # checked by NodePoolConfig
            if not gpu.mig_profiles:
                raise ValueError(f"node pool {pool.name}: {type_name} ({gpu.name}) does not support MIG")
            compute = memory = 0
            for profile_name, count in layout.items():
                profile = gpu.mig_profile(profile_name)
                if profile is None:
                    raise ValueError(
                        f"node pool {pool.name}: mig profile {profile_name} does not exist on {type_name} "
                        f"({gpu.name}): valid profiles are {', '.join(p.name for p in gpu.mig_profiles)}"
                    )
                compute += profile.compute_slices * count
                memory += profile.memory_slices * count
            if compute > MIG_COMPUTE_SLICES or memory > MIG_MEMORY_SLICES:
                raise ValueError(
                    f"node pool {pool.name}: mig layout {mig.layout} uses {compute} compute and {memory} memory "
                    f"slices per GPU; a {gpu.name} has {MIG_COMPUTE_SLICES} and {MIG_MEMORY_SLICES}"
                )


class NamespaceQuota(_Frozen):
    """A namespace's share of the cluster: GPUs (whole, time-sliced or MIG), CPU and memory requests."""

    gpus: Annotated[int, Field(ge=0)] = 0
    cpu: Annotated[int, Field(ge=1)]
    memory_gib: Annotated[int, Field(ge=1)]


class TenancyConfig(_Frozen):
    """Scheduling priorities and per-namespace quotas of the shared GPU platform."""

    priority_classes: dict[str, int] = Field(
        default_factory=lambda: {
            "production-inference": 1000,
            "critical-agents": 900,
            "training": 500,
            "research": 100,
            "development": 50,
        }
    )
    quotas: dict[str, NamespaceQuota] = Field(
        default_factory=lambda: {
            "training": NamespaceQuota(gpus=20, cpu=160, memory_gib=640),
            "inference": NamespaceQuota(gpus=10, cpu=80, memory_gib=800),
            "agentic": NamespaceQuota(gpus=8, cpu=64, memory_gib=320),
            "mlops": NamespaceQuota(gpus=0, cpu=32, memory_gib=64),
        }
    )

    @field_validator("priority_classes")
    @classmethod
    def _priorities(cls, value: dict[str, int]) -> dict[str, int]:
        for name, priority in value.items():
            if not POOL_NAME_PATTERN.match(name):
                raise ValueError(f"priority class {name!r} must be lowercase alphanumerics and '-'")
            if not 0 <= priority <= 1_000_000_000:
                raise ValueError(f"priority class {name}: {priority} is outside 0..1000000000 (higher is reserved)")
        return value


class StageConfig(_Frozen):
    """Everything about one stage (dev, staging, prod, or any stage a YAML file adds)."""

    stage: str
    tier: Literal["dev", "staging", "prod"]
    account: str
    region: str
    availability_zones: Annotated[tuple[str, ...], Field(min_length=2, max_length=6)]
    project: str = "ml-platform"
    owner: str
    cost_center: str
    log_retention_days: int = 30
    termination_protection: bool = True
    network: NetworkConfig
    data: DataConfig = DataConfig()
    cluster: ClusterConfig = ClusterConfig()
    tenancy: TenancyConfig = TenancyConfig()
    components: Components = Components()
    edge: StageEdgeConfig = EdgeConfig()
    # anchor: edge config
    inference: InferenceConfig = InferenceConfig()
    # anchor: inference config
    workloads: WorkloadsConfig = WorkloadsConfig()
    # anchor: workloads config
    observability: ObservabilityConfig = ObservabilityConfig()
    # anchor: observability config
    backup: StageBackupConfig = BackupConfig()
    # anchor: backup config
    workstation: WorkstationConfig = WorkstationConfig()
    cost: CostConfig = CostConfig()
    # anchor: delivery config

    @field_validator("stage")
    @classmethod
    def _stage(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9]{1,15}", value):
            raise ValueError(f"stage {value!r} must be 2-16 lowercase letters and digits, starting with a letter")
        return value

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        return check_account(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region(value)

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        return _log_retention(value)

    @field_validator("owner", "cost_center", "project")
    @classmethod
    def _tag_value(cls, value: str) -> str:
        if not re.fullmatch(r"[\w .:/=+@-]{1,256}", value):
            raise ValueError(f"{value!r} is not a valid AWS tag value (1-256 letters, digits, spaces and _.:/=+-@)")
        return value

    @property
    def is_prod(self) -> bool:
        return self.tier == "prod"

    @property
    def tags(self) -> dict[str, str]:
        """Cost-allocation tags on every resource of the stage."""
        return {"project": self.project, "stage": self.stage, "owner": self.owner, "cost-center": self.cost_center}

    @model_validator(mode="after")
    def _cross_field(self) -> StageConfig:
        azs = self.availability_zones
        for az in azs:
            if not re.fullmatch(re.escape(self.region) + r"[a-z]", az):
                raise ValueError(
                    f"availability_zones: {az!r} is not in region {self.region} (expected {self.region}a, "
                    f"{self.region}b, ...)"
                )
        if len(set(azs)) != len(azs):
            raise ValueError(f"availability_zones: {list(azs)} lists a zone twice")
        net = self.network
        for tier in ("public_subnets", "data_subnets", "node_subnets"):
            if len(getattr(net, tier)) != len(azs):
                raise ValueError(
                    f"network.{tier}: {len(getattr(net, tier))} subnets for {len(azs)} availability zones; "
                    "give exactly one per zone"
                )
        if net.nat_gateways > len(azs):
            raise ValueError(f"network.nat_gateways: {net.nat_gateways} is more than the {len(azs)} zones")
        if self.is_prod:
            self._prod_rules()
        if self.tier != "dev" and self.data.removal_policy != "retain":
            raise ValueError(f"data.removal_policy: {self.tier} keeps its data; only a dev stage may use 'destroy'")
        self._node_subnet_capacity()
        return self

    def _prod_rules(self) -> None:
        azs = len(self.availability_zones)
        if azs < 3:
            raise ValueError(f"availability_zones: prod needs 3 zones, got {azs}")
        if self.network.nat_gateways != azs:
            raise ValueError(
                f"network.nat_gateways: prod needs one NAT gateway per zone ({azs}), got {self.network.nat_gateways}"
            )
        if not self.data.rds.multi_az:
            raise ValueError("data.rds.multi_az: prod databases must be Multi-AZ (set multi_az: true)")
        if self.data.cache.replicas_per_shard < 1:
            raise ValueError("data.cache.replicas_per_shard: prod needs at least 1 replica per shard for failover")
        if self.data.rds.instance_class.startswith("db.t"):
            raise ValueError(
                f"data.rds.instance_class: {self.data.rds.instance_class} is burstable; prod needs db.m* or db.r*"
            )
        if self.data.buckets.replication_region in (None, self.region):
            raise ValueError("data.buckets.replication_region: prod replicates its buckets to another region")
        if not self.termination_protection:
            raise ValueError("termination_protection: prod stacks must be termination-protected")

    def _node_subnet_capacity(self) -> None:
        # The VPC CNI gives every pod a VPC address, so the node subnets must hold every pod of every
        # pool at its maximum size (each node also takes one address of its own).
        usable = sum(_cidr(c).num_addresses - 5 for c in self.network.node_subnets)
        need = 0
        for pool in self.cluster.node_pools:
            need += pool.max_nodes * (pool.max_pods_per_node + 1)
            if need > usable:
                raise ValueError(
                    f"network.node_subnets: {', '.join(self.network.node_subnets)} hold {usable} addresses, but the "
                    f"node pools up to {pool.name} need {need} at their maximum size (max_nodes x (max pods + 1)): "
                    "use larger node subnets (a /18 per zone holds 16379)"
                )


def check_account(value: str) -> str:
    """Return ``value`` if it is an AWS account ID; fail with the expected form otherwise."""
    if not re.fullmatch(r"\d{12}", value):
        raise ValueError(f"account {value!r} must be 12 digits, quoted in YAML ('123456789012')")
    return value


def check_region(value: str) -> str:
    """Return ``value`` if it is an AWS region name; fail with an example otherwise."""
    if not REGION_PATTERN.match(value):
        raise ValueError(f"{value!r} is not an AWS region name such as us-east-1")
    return value


def _log_retention(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        raise ValueError(
            f"{value} is not a CloudWatch Logs retention period: use one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
        )
    return value
