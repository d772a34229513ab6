"""ReplicaStack: the destination of the data buckets' cross-region replication (prod only); stateful."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from platform_constructs.data_buckets import datasets_lifecycle_rules, models_lifecycle_rules
from platform_constructs.encryption_key import EncryptionKey
from platform_constructs.secure_bucket import AccessLogBucket, SecureBucket, bucket_name
from stacks.base import PlatformStack


class ReplicaStack(PlatformStack):
    """Define the replica key and buckets in the replication region, deployed before the DataStack.

    The source stack lives in another region and cannot reference anything here, so this stack
    publishes plain strings it fixed at synth time: ``datasets_bucket_name``, ``models_bucket_name``
    and ``key_alias``. Replicas keep the source's lifecycle (S3 does not replicate lifecycle rules).

    Args:
        name_prefix: ``<project>-<stage>``, the start of every name.
        removal_policy: RETAIN outside dev.
        datasets_glacier_after_days: days before replicated data sets go to Glacier.
        models_noncurrent_archive_after_days: days before superseded replicated models go to Glacier.
        models_noncurrent_expire_after_days: days before superseded replicated models are deleted.
        access_log_expire_after_days: days the replicas' server access logs are kept.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        removal_policy: cdk.RemovalPolicy,
        datasets_glacier_after_days: int,
        models_noncurrent_archive_after_days: int,
        models_noncurrent_expire_after_days: int,
        access_log_expire_after_days: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.key_alias = f"alias/{name_prefix}/replica"
        self.key = EncryptionKey(
            self,
            "ReplicaKey",
            alias=self.key_alias.removeprefix("alias/"),
            description=f"{name_prefix}: replicas of the datasets and models buckets",
            removal_policy=removal_policy,
        ).key

        def name(purpose: str) -> str:
            return bucket_name(prefix=name_prefix, purpose=purpose, account=self.account, region=self.region)

        self.datasets_bucket_name = name("datasets-replica")
        self.models_bucket_name = name("models-replica")
        self.access_logs_bucket = AccessLogBucket(
            self,
            "AccessLogs",
            bucket_name=name("access-logs"),
            expire_after_days=access_log_expire_after_days,
            removal_policy=removal_policy,
        ).bucket
        self.datasets_bucket = SecureBucket(
            self,
            "DatasetsReplica",
            bucket_name=self.datasets_bucket_name,
            encryption_key=self.key,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="datasets-replica/",
            removal_policy=removal_policy,
            lifecycle_rules=datasets_lifecycle_rules(glacier_after_days=datasets_glacier_after_days),
        ).bucket
        self.models_bucket = SecureBucket(
            self,
            "ModelsReplica",
            bucket_name=self.models_bucket_name,
            encryption_key=self.key,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="models-replica/",
            removal_policy=removal_policy,
            lifecycle_rules=models_lifecycle_rules(
                noncurrent_archive_after_days=models_noncurrent_archive_after_days,
                noncurrent_expire_after_days=models_noncurrent_expire_after_days,
            ),
        ).bucket
