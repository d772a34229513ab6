"""PlatformStage: every stack of one stage, wired from its config. The pipeline deploys this class too."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from config.model import StageConfig
from platform_constructs.scheduling_check import SchedulingCheck
from stacks.cluster_stack import ClusterStack
from stacks.data_stack import DataStack
from stacks.keys_stack import KeysStack
from stacks.network_stack import NetworkStack
from stacks.platform_services_stack import PlatformServicesStack
from stacks.replica_stack import ReplicaStack


def stage_construct_id(stage: str) -> str:
    """Return the Stage's construct ID (``dev`` -> ``Dev``): ``cdk deploy 'Dev/*'`` deploys the stage."""
    return stage[:1].upper() + stage[1:]


class PlatformStage(cdk.Stage):
    """Define one stage of the platform (dev, staging, prod or any other stage file).

    Args:
        config: the validated stage config; stacks receive flat values unpacked from it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        env = cdk.Environment(account=config.account, region=config.region)
        super().__init__(scope, construct_id, env=env, **kwargs)
        prefix = f"{config.project}-{config.stage}"
        retain = config.data.removal_policy == "retain"
        stateful_removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        common: dict[str, Any] = {"env": env, "availability_zones": config.availability_zones}

        self.keys = KeysStack(
            self,
            "Keys",
            stack_name=f"{prefix}-keys",
            description=f"{prefix}: shared KMS keys (stateful)",
            termination_protection=config.termination_protection,
            name_prefix=prefix,
            removal_policy=stateful_removal,
            **common,
        )
        net = config.network
        self.network = NetworkStack(
            self,
            "Network",
            stack_name=f"{prefix}-network",
            description=f"{prefix}: VPC, subnets, NAT, endpoints, flow logs",
            vpc_cidr=net.vpc_cidr,
            public_subnets=net.public_subnets,
            data_subnets=net.data_subnets,
            node_subnets=net.node_subnets,
            nat_gateways=net.nat_gateways,
            interface_endpoints=net.interface_endpoints,
            flow_log_retention_days=net.flow_log_retention_days,
            logs_key=self.keys.logs_key,
            discovery_tag=prefix,
            removal_policy=cdk.RemovalPolicy.DESTROY if config.tier == "dev" else cdk.RemovalPolicy.RETAIN,
            **common,
        )
        data = config.data
        buckets = data.buckets
        lifecycle: dict[str, int] = {
            "datasets_glacier_after_days": buckets.datasets_glacier_after_days,
            "models_noncurrent_archive_after_days": buckets.models_noncurrent_archive_after_days,
            "models_noncurrent_expire_after_days": buckets.models_noncurrent_expire_after_days,
            "access_log_expire_after_days": buckets.access_log_expire_after_days,
        }
        self.replica: ReplicaStack | None = None
        if buckets.replication_region is not None:
            self.replica = ReplicaStack(
                self,
                "Replica",
                stack_name=f"{prefix}-replica",
                description=f"{prefix}: cross-region replicas of the datasets and models buckets (stateful)",
                termination_protection=config.termination_protection,
                env=cdk.Environment(account=config.account, region=buckets.replication_region),
                # No VPC in the replica region, so no zones to fix.
                availability_zones=(),
                name_prefix=prefix,
                removal_policy=stateful_removal,
                **lifecycle,
            )
        rds = data.rds
        cache = data.cache
        self.data = DataStack(
            self,
            "Data",
            stack_name=f"{prefix}-data",
            description=f"{prefix}: buckets, EFS, PostgreSQL, cache (stateful)",
            termination_protection=config.termination_protection,
            name_prefix=prefix,
            vpc=self.network.vpc,
            node_subnets=self.network.node_subnets,
            data_subnets=self.network.data_subnets,
            node_security_group=self.network.node_security_group,
            logs_key=self.keys.logs_key,
            removal_policy=stateful_removal,
            deletion_protection=config.tier != "dev",
            log_retention_days=config.log_retention_days,
            **lifecycle,
            file_system_backup=data.efs_backup,
            database_engine_version=rds.engine_version,
            database_instance_class=rds.instance_class,
            database_allocated_storage_gib=rds.allocated_storage_gib,
            database_max_allocated_storage_gib=rds.max_allocated_storage_gib,
            database_multi_az=rds.multi_az,
            database_backup_retention_days=rds.backup_retention_days,
            cache_engine=cache.engine,
            cache_node_type=cache.node_type,
            cache_shards=cache.shards,
            cache_replicas_per_shard=cache.replicas_per_shard,
            cache_snapshot_retention_days=cache.snapshot_retention_days,
            replica=self.replica,
            **common,
        )
        if config.components.eks:
            cluster = config.cluster
            self.cluster = ClusterStack(
                self,
                "Cluster",
                stack_name=f"{prefix}-cluster",
                description=f"{prefix}: EKS {cluster.kubernetes_version}, add-ons, node pools, Karpenter",
                vpc=self.network.vpc,
                node_subnets=self.network.node_subnets,
                node_security_group=self.network.node_security_group,
                secrets_key=self.keys.cluster_key,
                logs_key=self.keys.logs_key,
                cluster_name=prefix,
                kubernetes_version=cluster.kubernetes_version,
                public_access_cidrs=cluster.public_access_cidrs,
                admin_role_arns=cluster.admin_role_arns,
                readonly_role_arns=cluster.readonly_role_arns,
                node_pools=cluster.node_pools,
                log_retention_days=config.log_retention_days,
                file_system_id=self.data.file_system.file_system_id,
                karpenter=config.components.karpenter,
                **common,
            )
        if config.components.eks:
            self.platform = PlatformServicesStack(
                self,
                "Platform",
                stack_name=f"{prefix}-platform",
                description=f"{prefix}: tenancy guardrails, GPU Operator, service mesh",
                cluster=self.cluster.cluster_ref,
                kubernetes_version=config.cluster.kubernetes_version,
                node_pools=config.cluster.node_pools,
                mig_layouts=config.cluster.mig_layouts,
                priority_classes=config.tenancy.priority_classes,
                quotas=config.tenancy.quotas,
                node_cidrs=config.network.node_subnets,
                gpu_operator_enabled=config.components.gpu_operator,
                **common,
            )
            # Every workload the stage applies must fit a node pool and its namespace quota (fails synth if not).
            cdk.Validations.of(self).add_plugins(
                SchedulingCheck(
                    pools=config.cluster.node_pools,
                    quotas=config.tenancy.quotas,
                    mig_layouts=config.cluster.mig_layouts,
                )
            )
        # anchor: platform services stack
        # anchor: edge stack
        # anchor: inference stack
        # anchor: workloads stack
        # anchor: observability stack
        # anchor: backup stack
        # anchor: workstation stack
        for key, value in config.tags.items():
            cdk.Tags.of(self).add(key, value)
