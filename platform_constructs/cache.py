"""The Valkey (or Redis OSS) cluster: online feature store and prediction cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from platform_constructs.retention import retention_days


@dataclass(frozen=True)
class CacheEngine:
    """One pinned engine: version and the default cluster-mode parameter group of its family."""

    version: str
    parameter_group: str


# Pinned: a version bump is a reviewed change, never picked up implicitly.
ENGINES: Mapping[str, CacheEngine] = {
    "valkey": CacheEngine(version="8.2", parameter_group="default.valkey8.cluster.on"),
    "redis": CacheEngine(version="7.1", parameter_group="default.redis7.cluster.on"),
}
CACHE_PORT = 6379
# AUTH tokens: printable ASCII, 16-128 characters, none of / " @ (and no spaces).
AUTH_TOKEN_LENGTH = 64
AUTH_TOKEN_EXCLUDED = '/"@ '
LOG_TYPES = {"SlowLog": "slow-log", "EngineLog": "engine-log"}


class Cache(Construct):
    """Define a cluster-mode ElastiCache replication group, encrypted at rest and in transit, with AUTH.

    Args:
        vpc: the stage's VPC.
        subnets: where the nodes live (the isolated data subnets).
        client_security_group: the only source admitted on 6379.
        encryption_key: encrypts the data at rest, snapshots and the AUTH token secret.
        logs_key: encrypts the slow and engine log groups.
        engine: "valkey" or "redis" (see ``ENGINES``).
        node_type: ElastiCache node type, such as ``cache.r7g.large``.
        shards: node groups; the key space is split across them.
        replicas_per_shard: replicas per node group; from 1 the group is Multi-AZ and fails over.
        snapshot_retention_days: days of daily snapshots (0 turns them off).
        log_retention_days: retention of the log groups.
        removal_policy: RETAIN outside dev.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        client_security_group: ec2.ISecurityGroup,
        encryption_key: kms.IKey,
        logs_key: kms.IKey,
        engine: str,
        node_type: str,
        shards: int,
        replicas_per_shard: int,
        snapshot_retention_days: int,
        log_retention_days: int,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        if engine not in ENGINES:
            raise ValueError(f"cache engine {engine!r} is not one of {', '.join(ENGINES)}")
        pinned = ENGINES[engine]
        multi_az = replicas_per_shard >= 1

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description=f"{engine}: {CACHE_PORT} from the cluster nodes only",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(CACHE_PORT), "Cache from the nodes")
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "SubnetGroup",
            description="Isolated data subnets of the cache nodes",
            subnet_ids=_select(vpc, subnets).subnet_ids,
        )
        # A retained cache still uses its subnet group and security group: keep them with it, or deleting
        # the stack fails on them.
        subnet_group.apply_removal_policy(removal_policy)
        self.security_group.apply_removal_policy(removal_policy)

        # ElastiCache rejects /, " and @ in AUTH tokens; the rest of printable ASCII is fine.
        self.auth_secret = secretsmanager.Secret(
            self,
            "AuthToken",
            description=f"AUTH token of the {engine} cluster (online features, prediction cache)",
            encryption_key=encryption_key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=AUTH_TOKEN_LENGTH,
                exclude_characters=AUTH_TOKEN_EXCLUDED,
                include_space=False,
            ),
            removal_policy=removal_policy,
        )
        cdk.Validations.of(self.auth_secret).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="rotating an ElastiCache AUTH token is a two-step ModifyReplicationGroup "
                "(AuthTokenUpdateStrategy ROTATE, then SET) coordinated with the clients; Secrets Manager "
                "has no rotation function for it, so it is rotated by runbook",
            )
        )

        log_groups = {
            log_id: logs.LogGroup(
                self,
                log_id,
                encryption_key=logs_key,
                retention=retention_days(log_retention_days),
                removal_policy=removal_policy,
            )
            for log_id in LOG_TYPES
        }
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "Resource",
            replication_group_description="Online feature store and prediction cache",
            engine=engine,
            engine_version=pinned.version,
            cache_parameter_group_name=pinned.parameter_group,
            cache_node_type=node_type,
            cluster_mode="enabled",
            num_node_groups=shards,
            replicas_per_node_group=replicas_per_shard,
            # Cluster mode enabled requires automatic failover, replicas or not; Multi-AZ needs a replica.
            automatic_failover_enabled=True,
            multi_az_enabled=multi_az,
            port=CACHE_PORT,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            at_rest_encryption_enabled=True,
            kms_key_id=encryption_key.key_arn,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            # A {{resolve:secretsmanager:...}} dynamic reference: the token never appears in the template.
            auth_token=self.auth_secret.secret_value.unsafe_unwrap(),
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=snapshot_retention_days,
            log_delivery_configurations=[
                elasticache.CfnReplicationGroup.LogDeliveryConfigurationRequestProperty(
                    destination_type="cloudwatch-logs",
                    destination_details=elasticache.CfnReplicationGroup.DestinationDetailsProperty(
                        cloud_watch_logs_details=elasticache.CfnReplicationGroup.CloudWatchLogsDestinationDetailsProperty(
                            log_group=log_groups[log_id].log_group_name
                        )
                    ),
                    log_format="json",
                    log_type=log_type,
                )
                for log_id, log_type in LOG_TYPES.items()
            ],
        )
        self.replication_group.apply_removal_policy(removal_policy)
        self.endpoint_address = self.replication_group.attr_configuration_end_point_address
        self.endpoint_port = self.replication_group.attr_configuration_end_point_port

        if engine == "redis":
            # AwsSolutions-AEC5 only knows the redis engine; with valkey it passes on 6379 without a word.
            cdk.Validations.of(self.replication_group).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-AEC5",
                    reason="a non-default port only hides from untargeted scans; the nodes sit in isolated "
                    "subnets behind a security group admitting only the cluster nodes, with TLS and AUTH",
                )
            )
        if not multi_az:
            cdk.Validations.of(self.replication_group).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-AEC4",
                    reason="this stage's config has no replicas (data.cache.replicas_per_shard: 0) and "
                    "Multi-AZ needs one; the config model rejects a prod stage without replicas",
                )
            )


def _select(vpc: ec2.IVpc, selection: ec2.SubnetSelection) -> ec2.SelectedSubnets:
    # jsii lifts struct parameters into keyword arguments, so a SubnetSelection is passed field by field.
    return vpc.select_subnets(
        availability_zones=selection.availability_zones,
        one_per_az=selection.one_per_az,
        subnet_filters=selection.subnet_filters,
        subnet_group_name=selection.subnet_group_name,
        subnet_type=selection.subnet_type,
        subnets=selection.subnets,
    )
