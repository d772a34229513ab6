"""DataStack: all state of a stage (buckets, EFS, PostgreSQL, cache) under one data key; stateful."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from platform_constructs.bucket_replication import BucketReplication, ReplicationPair
from platform_constructs.cache import Cache
from platform_constructs.data_buckets import (
    DATASETS_PREFIXES,
    MODELS_PREFIXES,
    datasets_lifecycle_rules,
    models_lifecycle_rules,
)
from platform_constructs.database import Database
from platform_constructs.encryption_key import EncryptionKey
from platform_constructs.file_system import SharedFileSystem
from platform_constructs.secure_bucket import AccessLogBucket, SecureBucket, bucket_name
from stacks.base import PlatformStack
from stacks.replica_stack import ReplicaStack

__all__ = ["DATASETS_PREFIXES", "MODELS_PREFIXES", "DataStack"]


class DataStack(PlatformStack):
    """Define the stage's stateful tier; the cluster and workloads use its public attributes.

    One customer-managed ``DataKey`` (rotating yearly) encrypts every store here: buckets, EFS, RDS
    storage and Performance Insights, both secrets and the cache. The same workloads read all of them
    (a training pod reads data sets from S3 and EFS and records runs in MLflow's PostgreSQL), so
    separate keys would multiply grants without separating any reader; a grant that must be narrower
    uses ``kms:ViaService``, and CloudTrail records every use with the calling service.

    Public attributes: ``data_key``; ``access_logs_bucket``, ``datasets_bucket``, ``models_bucket``
    (and ``datasets_prefixes``, ``models_prefixes``); ``file_system``, ``file_system_security_group``,
    ``access_points`` (``datasets_access_point``, ``models_access_point``, ``checkpoints_access_point``);
    ``database``, ``database_secret``, ``database_security_group``; ``cache_endpoint_address``,
    ``cache_endpoint_port``, ``cache_auth_secret``, ``cache_security_group``; ``replication_role``
    (None without a replica).

    Args:
        name_prefix: ``<project>-<stage>``, the start of every name.
        vpc: the stage's VPC.
        node_subnets: the cluster's subnets (EFS mount targets, the rotation function).
        data_subnets: the isolated subnets of the database and the cache.
        node_security_group: the nodes' group, the only source the stores admit.
        logs_key: encrypts the log groups of the database and the cache.
        removal_policy: RETAIN outside dev; the database turns RETAIN into SNAPSHOT.
        deletion_protection: the database's deletion protection (everywhere but dev).
        log_retention_days: retention of the database and cache log groups.
        datasets_glacier_after_days: days before data sets go to Glacier Flexible Retrieval.
        models_noncurrent_archive_after_days: days before superseded models go to Glacier.
        models_noncurrent_expire_after_days: days before superseded models are deleted.
        access_log_expire_after_days: days the server access logs are kept.
        file_system_backup: AWS Backup's automatic EFS backups.
        database_engine_version: PostgreSQL major version.
        database_instance_class: RDS instance class.
        database_allocated_storage_gib: initial storage.
        database_max_allocated_storage_gib: storage autoscaling ceiling.
        database_multi_az: a standby in another zone.
        database_backup_retention_days: automated backup retention.
        cache_engine: "valkey" or "redis".
        cache_node_type: ElastiCache node type.
        cache_shards: node groups.
        cache_replicas_per_shard: replicas per node group.
        cache_snapshot_retention_days: days of cache snapshots.
        replica: the stack holding the replica buckets and key. Defaults to no replication.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        vpc: ec2.IVpc,
        node_subnets: ec2.SubnetSelection,
        data_subnets: ec2.SubnetSelection,
        node_security_group: ec2.ISecurityGroup,
        logs_key: kms.IKey,
        removal_policy: cdk.RemovalPolicy,
        deletion_protection: bool,
        log_retention_days: int,
        datasets_glacier_after_days: int,
        models_noncurrent_archive_after_days: int,
        models_noncurrent_expire_after_days: int,
        access_log_expire_after_days: int,
        file_system_backup: bool,
        database_engine_version: str,
        database_instance_class: str,
        database_allocated_storage_gib: int,
        database_max_allocated_storage_gib: int,
        database_multi_az: bool,
        database_backup_retention_days: int,
        cache_engine: str,
        cache_node_type: str,
        cache_shards: int,
        cache_replicas_per_shard: int,
        cache_snapshot_retention_days: int,
        replica: ReplicaStack | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.data_key = EncryptionKey(
            self,
            "DataKey",
            alias=f"{name_prefix}/data",
            description=f"{name_prefix}: data tier (buckets, EFS, PostgreSQL, cache, their secrets)",
            removal_policy=removal_policy,
        ).key

        def name(purpose: str) -> str:
            return bucket_name(prefix=name_prefix, purpose=purpose, account=self.account, region=self.region)

        self.access_logs_bucket = AccessLogBucket(
            self,
            "AccessLogs",
            bucket_name=name("access-logs"),
            expire_after_days=access_log_expire_after_days,
            removal_policy=removal_policy,
        ).bucket
        self.datasets_prefixes = DATASETS_PREFIXES
        self.datasets_bucket = SecureBucket(
            self,
            "Datasets",
            bucket_name=name("datasets"),
            encryption_key=self.data_key,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="datasets/",
            removal_policy=removal_policy,
            lifecycle_rules=datasets_lifecycle_rules(glacier_after_days=datasets_glacier_after_days),
        ).bucket
        self.models_prefixes = MODELS_PREFIXES
        self.models_bucket = SecureBucket(
            self,
            "Models",
            bucket_name=name("models"),
            encryption_key=self.data_key,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="models/",
            removal_policy=removal_policy,
            lifecycle_rules=models_lifecycle_rules(
                noncurrent_archive_after_days=models_noncurrent_archive_after_days,
                noncurrent_expire_after_days=models_noncurrent_expire_after_days,
            ),
        ).bucket

        self.replication_role: iam.IRole | None = None
        if replica is not None:
            replication = BucketReplication(
                self,
                "Replication",
                pairs=[
                    ReplicationPair(source=self.datasets_bucket, destination_bucket_name=replica.datasets_bucket_name),
                    ReplicationPair(source=self.models_bucket, destination_bucket_name=replica.models_bucket_name),
                ],
                source_key=self.data_key,
                destination_region=replica.region,
                destination_key_alias=replica.key_alias,
            )
            self.replication_role = replication.role
            # S3 rejects a replication configuration whose destination bucket does not exist yet, and
            # the replica region cannot be referenced, so only stack order guarantees it.
            self.add_stack_dependency(replica, "replica buckets must exist before replication is configured")

        file_system = SharedFileSystem(
            self,
            "FileSystem",
            vpc=vpc,
            subnets=node_subnets,
            file_system_name=f"{name_prefix}-shared",
            client_security_group=node_security_group,
            encryption_key=self.data_key,
            automatic_backups=file_system_backup,
            removal_policy=removal_policy,
        )
        self.file_system = file_system.file_system
        self.file_system_security_group = file_system.security_group
        self.access_points = file_system.access_points
        self.datasets_access_point = file_system.access_points["Datasets"]
        self.models_access_point = file_system.access_points["Models"]
        self.checkpoints_access_point = file_system.access_points["Checkpoints"]

        database = Database(
            self,
            "Database",
            vpc=vpc,
            subnets=data_subnets,
            client_security_group=node_security_group,
            rotation_subnets=node_subnets,
            encryption_key=self.data_key,
            logs_key=logs_key,
            instance_identifier=f"{name_prefix}-postgres",
            engine_version=database_engine_version,
            instance_class=database_instance_class,
            allocated_storage_gib=database_allocated_storage_gib,
            max_allocated_storage_gib=database_max_allocated_storage_gib,
            multi_az=database_multi_az,
            backup_retention_days=database_backup_retention_days,
            log_retention_days=log_retention_days,
            deletion_protection=deletion_protection,
            # A deleted database leaves a final snapshot unless the stage is disposable.
            removal_policy=(
                cdk.RemovalPolicy.DESTROY if removal_policy == cdk.RemovalPolicy.DESTROY else cdk.RemovalPolicy.SNAPSHOT
            ),
        )
        self.database = database.instance
        self.database_secret = database.secret
        self.database_security_group = database.security_group

        cache = Cache(
            self,
            "Cache",
            vpc=vpc,
            subnets=data_subnets,
            client_security_group=node_security_group,
            encryption_key=self.data_key,
            logs_key=logs_key,
            engine=cache_engine,
            node_type=cache_node_type,
            shards=cache_shards,
            replicas_per_shard=cache_replicas_per_shard,
            snapshot_retention_days=cache_snapshot_retention_days,
            log_retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        self.cache_endpoint_address = cache.endpoint_address
        self.cache_endpoint_port = cache.endpoint_port
        self.cache_auth_secret = cache.auth_secret
        self.cache_security_group = cache.security_group

        # For people and tools outside CDK (notebooks, runbooks); stacks use the attributes above.
        for output_id, value, description in (
            ("DatasetsBucketName", self.datasets_bucket.bucket_name, "datasets bucket"),
            ("ModelsBucketName", self.models_bucket.bucket_name, "models bucket"),
            ("FileSystemId", self.file_system.file_system_id, "shared EFS file system"),
            ("DatabaseEndpoint", self.database.db_instance_endpoint_address, "PostgreSQL endpoint address"),
            ("DatabaseSecretArn", self.database_secret.secret_arn, "PostgreSQL admin credentials"),
            ("CacheEndpoint", self.cache_endpoint_address, "cache configuration endpoint address"),
            ("CacheAuthSecretArn", self.cache_auth_secret.secret_arn, "cache AUTH token"),
        ):
            cdk.CfnOutput(self, output_id, value=value, description=f"{name_prefix}: {description}")
