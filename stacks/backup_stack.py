"""BackupStack (stateful: the AWS Backup vault and plan, Velero's bucket and key) and VeleroStack (Velero itself).

The two are split the way the data tier is split from the cluster: the vault and the Velero bucket hold
recovery points that must outlive any change to the cluster, so they sit in a termination-protected stack
whose logical IDs never change and whose stores are retained outside dev; the Velero release, its role and
its schedules are rebuilt with the cluster and live in a stack that can be destroyed and redeployed freely.
docs/backup-and-restore.md has the recovery targets and the restore procedures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_backup as backup
from aws_cdk import aws_efs as efs
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from constructs import Construct

from config.backup import BACKUP_TAG_KEY, BACKUP_TAG_VALUE
from k8s_charts.backup_schedules import BackupSchedulesChart, NamespaceSchedule
from platform_constructs import velero
from platform_constructs.encryption_key import EncryptionKey
from platform_constructs.k8s_manifest import attach_chart
from platform_constructs.secure_bucket import AccessLogBucket, bucket_name
from platform_constructs.velero import Velero, VeleroStorage
from stacks.base import PlatformStack

# A rule's job that has not started an hour after its time is skipped: the next run is the recovery point.
START_WINDOW: Final = cdk.Duration.hours(1)
# AWS-managed policies of the AWS Backup service role (backup and restore of every supported type).
BACKUP_SERVICE_POLICIES: Final = (
    "service-role/AWSBackupServiceRolePolicyForBackup",
    "service-role/AWSBackupServiceRolePolicyForRestores",
)


def plan_rules(
    *,
    hour_utc: int,
    daily_days: int,
    weekly_days: int | None,
    monthly_days: int | None,
    cold_storage_after_days: int | None,
) -> list[backup.BackupPlanRule]:
    """Return the plan's rules: daily, and weekly (Sundays) and monthly (the 1st) when they have a retention.

    Args:
        hour_utc: the hour every rule starts at.
        daily_days: days a daily recovery point is kept.
        weekly_days: days a weekly one is kept. None: no weekly rule.
        monthly_days: days a monthly one is kept. None: no monthly rule.
        cold_storage_after_days: days before a monthly recovery point moves to cold storage (types without
            a cold tier, such as RDS, stay warm). None: never.
    """
    hour = str(hour_utc)
    rules = [
        backup.BackupPlanRule(
            rule_name="Daily",
            schedule_expression=events.Schedule.cron(minute="0", hour=hour),
            start_window=START_WINDOW,
            delete_after=cdk.Duration.days(daily_days),
        )
    ]
    if weekly_days is not None:
        rules.append(
            backup.BackupPlanRule(
                rule_name="Weekly",
                schedule_expression=events.Schedule.cron(minute="0", hour=hour, week_day="SUN"),
                start_window=START_WINDOW,
                delete_after=cdk.Duration.days(weekly_days),
            )
        )
    if monthly_days is not None:
        rules.append(
            backup.BackupPlanRule(
                rule_name="Monthly",
                schedule_expression=events.Schedule.cron(minute="0", hour=hour, day="1"),
                start_window=START_WINDOW,
                delete_after=cdk.Duration.days(monthly_days),
                move_to_cold_storage_after=(
                    cdk.Duration.days(cold_storage_after_days) if cold_storage_after_days is not None else None
                ),
            )
        )
    return rules


class BackupStack(PlatformStack):
    """Define the stage's backup stores and the AWS Backup plan over the data tier; stateful.

    Public attributes: ``vault`` (and ``vault_key``), ``plan``, ``backup_role`` (also the role restore jobs
    pass), ``velero_bucket``, ``velero_bucket_name``, ``velero_key``, ``access_logs_bucket``.

    Args:
        name_prefix: ``<project>-<stage>``, the start of every name.
        database: the RDS instance the plan backs up.
        file_system: the EFS file system the plan backs up.
        removal_policy: RETAIN outside dev (keys, vault, buckets).
        schedule_hour_utc: the hour (UTC) every AWS Backup rule starts at.
        daily_days: retention of the daily rule.
        weekly_days: retention of the weekly rule. Defaults to no weekly rule.
        monthly_days: retention of the monthly rule. Defaults to no monthly rule.
        cold_storage_after_days: monthly recovery points move to cold storage after this. Defaults to never.
        vault_lock_min_retention_days: lock the vault with this minimum retention. Defaults to no lock.
        vault_lock_max_retention_days: the lock's maximum retention. Defaults to none (only with a lock).
        vault_lock_changeable_for_days: compliance mode: the lock becomes permanent after this many days.
            Defaults to governance mode (the lock stays removable by an administrator).
        velero_noncurrent_expire_after_days: days the Velero bucket keeps a deleted or superseded object.
        access_log_expire_after_days: days the Velero bucket's access logs are kept.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        database: rds.IDatabaseInstance,
        file_system: efs.IFileSystem,
        removal_policy: cdk.RemovalPolicy,
        schedule_hour_utc: int,
        daily_days: int,
        weekly_days: int | None = None,
        monthly_days: int | None = None,
        cold_storage_after_days: int | None = None,
        vault_lock_min_retention_days: int | None = None,
        vault_lock_max_retention_days: int | None = None,
        vault_lock_changeable_for_days: int | None = None,
        velero_noncurrent_expire_after_days: int,
        access_log_expire_after_days: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retain = removal_policy == cdk.RemovalPolicy.RETAIN

        def name(purpose: str) -> str:
            return bucket_name(prefix=name_prefix, purpose=purpose, account=self.account, region=self.region)

        # The data stack's access-log bucket only admits the logs of its own buckets (its policy names
        # each source bucket), and adding this one would make the data stack depend on this stack, which
        # already depends on it. So the backup bucket logs to a log bucket of its own.
        self.access_logs_bucket = AccessLogBucket(
            self,
            "AccessLogs",
            bucket_name=name("backup-logs"),
            expire_after_days=access_log_expire_after_days,
            removal_policy=removal_policy,
        ).bucket
        storage = VeleroStorage(
            self,
            "VeleroStorage",
            bucket_name=name("velero"),
            key_alias=f"{name_prefix}/velero",
            server_access_logs_bucket=self.access_logs_bucket,
            removal_policy=removal_policy,
            noncurrent_expire_after_days=velero_noncurrent_expire_after_days,
        )
        self.velero_bucket = storage.bucket
        self.velero_bucket_name = name("velero")
        self.velero_key = storage.key

        # Its own key: restoring a recovery point needs only this key, whatever happens to the data key.
        self.vault_key = EncryptionKey(
            self,
            "VaultKey",
            alias=f"{name_prefix}/backup-vault",
            description=f"{name_prefix}: AWS Backup vault (EFS and tagged EBS recovery points)",
            removal_policy=removal_policy,
        ).key
        lock = None
        if vault_lock_min_retention_days is not None:
            lock = backup.LockConfiguration(
                min_retention=cdk.Duration.days(vault_lock_min_retention_days),
                max_retention=(
                    cdk.Duration.days(vault_lock_max_retention_days)
                    if vault_lock_max_retention_days is not None
                    else None
                ),
                # Compliance mode: after this the lock can never be removed (see config/backup.py).
                changeable_for=(
                    cdk.Duration.days(vault_lock_changeable_for_days)
                    if vault_lock_changeable_for_days is not None
                    else None
                ),
            )
        elif vault_lock_changeable_for_days is not None or vault_lock_max_retention_days is not None:
            raise ValueError(
                "vault_lock_max_retention_days and vault_lock_changeable_for_days need vault_lock_min_retention_days: "
                "a vault lock starts with its minimum retention"
            )
        self.vault = backup.BackupVault(
            self,
            "Vault",
            backup_vault_name=f"{name_prefix}-vault",
            encryption_key=self.vault_key,
            lock_configuration=lock,
            # Outside dev no principal may delete a recovery point; the plan's lifecycle still expires them.
            block_recovery_point_deletion=retain,
            removal_policy=removal_policy,
        )

        self.backup_role = iam.Role(
            self,
            "BackupRole",
            description=f"{name_prefix}: AWS Backup jobs and restore jobs of the backup plan",
            assumed_by=iam.ServicePrincipal("backup.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(p) for p in BACKUP_SERVICE_POLICIES],
        )
        for policy in BACKUP_SERVICE_POLICIES:
            cdk.Validations.of(self.backup_role).acknowledge(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                    reason="AWS maintains the backup and restore permissions of every resource type AWS Backup "
                    "supports; only the AWS Backup service can assume this role, and only the plan's selections "
                    "decide what it touches.",
                )
            )

        self.plan = backup.BackupPlan(
            self,
            "Plan",
            backup_plan_name=f"{name_prefix}-plan",
            backup_vault=self.vault,
            backup_plan_rules=plan_rules(
                hour_utc=schedule_hour_utc,
                daily_days=daily_days,
                weekly_days=weekly_days,
                monthly_days=monthly_days,
                cold_storage_after_days=cold_storage_after_days,
            ),
        )
        self.plan.add_selection(
            "DataStores",
            backup_selection_name=f"{name_prefix}-data-stores",
            resources=[
                backup.BackupResource.from_rds_database_instance(database),
                backup.BackupResource.from_efs_file_system(file_system),
            ],
            role=self.backup_role,
        )
        # EBS volumes opt in by tag (a StorageClass can add it to every volume it provisions). The resource
        # pattern and the condition are ANDed, so nothing but a tagged EBS volume is selected.
        backup.CfnBackupSelection(
            self,
            "TaggedVolumes",
            backup_plan_id=self.plan.backup_plan_id,
            backup_selection=backup.CfnBackupSelection.BackupSelectionResourceTypeProperty(
                selection_name=f"{name_prefix}-tagged-volumes",
                iam_role_arn=self.backup_role.role_arn,
                resources=[f"arn:{self.partition}:ec2:{self.region}:{self.account}:volume/*"],
                conditions={
                    "StringEquals": [
                        {"ConditionKey": f"aws:ResourceTag/{BACKUP_TAG_KEY}", "ConditionValue": BACKUP_TAG_VALUE}
                    ]
                },
            ),
        )

        for output_id, value, description in (
            ("VaultName", self.vault.backup_vault_name, "AWS Backup vault"),
            ("BackupRoleArn", self.backup_role.role_arn, "role for AWS Backup restore jobs (--iam-role-arn)"),
            ("VeleroBucketName", self.velero_bucket.bucket_name, "Velero backup bucket"),
        ):
            cdk.CfnOutput(self, output_id, value=value, description=f"{name_prefix}: {description}")


class VeleroStack(PlatformStack):
    """Define Velero on the stage's cluster: the server (role, release) and one Schedule per namespace.

    Args:
        cluster: the stage's EKS cluster.
        bucket_name: the Velero bucket of the BackupStack.
        key: that bucket's key.
        node_selector: node labels of the system pool.
        schedules: backed-up namespace -> its schedule.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        bucket_name: str,
        key: kms.IKey,
        node_selector: Mapping[str, str],
        schedules: Mapping[str, NamespaceSchedule],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.velero = Velero(
            self, "Velero", cluster=cluster, bucket_name=bucket_name, key=key, node_selector=node_selector
        )
        self.schedules = attach_chart(
            self,
            "Schedules",
            cluster=cluster,
            chart=BackupSchedulesChart(
                cdk8s.App(),
                "backup-schedules",
                namespace=velero.NAMESPACE,
                schedules=schedules,
                storage_location=velero.STORAGE_LOCATION,
                snapshot_location=velero.SNAPSHOT_LOCATION,
            ),
        )
        # The release installs the Schedule CRD (its pre-install hook) and the velero namespace.
        self.schedules.node.add_dependency(self.velero.release)
