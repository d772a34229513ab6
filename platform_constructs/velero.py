"""Velero: its backup bucket and key, the Pod Identity role of its server, and the Helm release.

Velero backs up the Kubernetes objects of the platform namespaces into S3 and snapshots their EBS
volumes through velero-plugin-for-aws. Two constructs, because they live in different stacks:
``VeleroStorage`` (the bucket and its key: stateful, retained) and ``Velero`` (the role and the release:
rebuilt with the cluster).

Decisions:

- Credentials come from EKS Pod Identity (``credentials.useSecret: false``): no access key exists.
- No node agent (``deployNodeAgent: false``). The agent is a privileged DaemonSet with the host's pod
  volumes mounted on every node, GPU nodes included, and would copy file by file what AWS Backup already
  takes as a whole: EFS volumes are backed up by the AWS Backup plan (the whole file system, every access
  point's directory), EBS volumes by Velero's native EBS snapshots. Velero still backs up the EFS PVs and
  PVCs as objects; restored with ``reclaimPolicy: Retain`` they bind to the same directories again.
- Schedules are ``velero.io/v1 Schedule`` objects from ``k8s_charts.backup_schedules`` (validated against
  the CRD), not the chart's free-form ``schedules`` values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from platform_constructs.encryption_key import EncryptionKey
from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole
from platform_constructs.secure_bucket import SecureBucket

# ../shared/k8s-reference/SOURCES.md: https://vmware-tanzu.github.io/helm-charts -> vmware-tanzu/velero 12.1.0
CHART: Final = HelmChartRef(repository="https://vmware-tanzu.github.io/helm-charts", chart="velero", version="12.1.0")
NAMESPACE: Final = "velero"
# The chart's own default name for release "velero" (<fullname>-server), set explicitly so the Pod
# Identity association cannot drift from it if the release is ever renamed.
SERVICE_ACCOUNT: Final = "velero-server"
# Chart 12.1.0 ships Velero 1.18.1 (its appVersion).
VELERO_IMAGE: Final = "docker.io/velero/velero"
VELERO_VERSION: Final = "v1.18.1"
# velero-plugin-for-aws v1.14.x is the line built for Velero 1.18.x (the plugin's compatibility matrix:
# plugin 1.(N-4) for Velero 1.N).
AWS_PLUGIN_IMAGE: Final = "docker.io/velero/velero-plugin-for-aws:v1.14.0"
# The names of the BackupStorageLocation and VolumeSnapshotLocation the chart creates; schedules use them.
STORAGE_LOCATION: Final = "default"
SNAPSHOT_LOCATION: Final = "default"
# Tags Velero puts on every EBS snapshot it takes (and copies onto volumes it restores from one).
VELERO_BACKUP_TAG: Final = "velero.io/backup"
# The EBS CSI driver tags every volume it provisions with this (AmazonEBSCSIDriverPolicy relies on it).
EBS_CSI_VOLUME_TAG: Final = "ebs.csi.aws.com/cluster"

# Velero is not hardened by the chart; none of it needs root, a capability or a writable image layer
# (with readOnlyRootFilesystem the chart mounts an emptyDir at /tmp for the plugins' sockets).
_CONTAINER_SECURITY_CONTEXT: Final[Mapping[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


def velero_values(
    *,
    bucket_name: str,
    region: str,
    kms_key_arn: str,
    node_selector: Mapping[str, str],
    resources: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the chart values of the Velero release (every key exists in the pinned values.yaml).

    Args:
        bucket_name: the backup bucket (``VeleroStorage``).
        region: the bucket's and the EBS volumes' region.
        kms_key_arn: the key Velero asks S3 to encrypt backups with (the bucket's default key too).
        node_selector: node labels that place the server and the CRD upgrade job on the system pool.
        resources: the server's requests and limits. Defaults to 500m CPU and 512Mi, limited to 1Gi.
    """
    if not bucket_name:
        raise ValueError("bucket_name is empty: Velero needs the backup bucket (VeleroStorage.bucket)")
    if not node_selector:
        raise ValueError(
            "node_selector is empty: give the system pool's label (ml-platform/pool: system) so Velero does not "
            "land on a GPU or spot node"
        )
    return {
        "image": {"repository": VELERO_IMAGE, "tag": VELERO_VERSION, "pullPolicy": "IfNotPresent"},
        # Plugins reach the server as init containers that copy their binary into the shared volume.
        "initContainers": [
            {
                "name": "velero-plugin-for-aws",
                "image": AWS_PLUGIN_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{"mountPath": "/target", "name": "plugins"}],
                "securityContext": dict(_CONTAINER_SECURITY_CONTEXT),
            }
        ],
        "configuration": {
            "backupStorageLocation": [
                {
                    "name": STORAGE_LOCATION,
                    "provider": "aws",
                    "bucket": bucket_name,
                    "default": True,
                    "config": {"region": region, "kmsKeyId": kms_key_arn},
                }
            ],
            "volumeSnapshotLocation": [{"name": SNAPSHOT_LOCATION, "provider": "aws", "config": {"region": region}}],
            "logFormat": "json",
        },
        # Pod Identity gives the server its role (Velero's AWS SDK reads the container credentials).
        "credentials": {"useSecret": False},
        "serviceAccount": {"server": {"create": True, "name": SERVICE_ACCOUNT}},
        "deployNodeAgent": False,
        "nodeSelector": dict(node_selector),
        "resources": dict(resources or {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}),
        "containerSecurityContext": dict(_CONTAINER_SECURITY_CONTEXT),
    }


def velero_statements(
    *, partition: str, region: str, account: str, bucket_name: str, key_arn: str
) -> list[iam.PolicyStatement]:
    """Return the server's permissions: what velero-plugin-for-aws calls, scoped by Velero's own tags.

    EBS: snapshots only of volumes the EBS CSI driver created, only tagged ``velero.io/backup``; volumes
    (on restore) only from Velero's snapshots and tagged the same; tags only while creating those; deletes
    only Velero's snapshots. S3: objects of the backup bucket. KMS: the bucket's key.
    """
    ec2 = f"arn:{partition}:ec2:{region}"
    volumes, snapshots = f"{ec2}:{account}:volume/*", f"{ec2}::snapshot/*"
    velero_request = {"StringLike": {f"aws:RequestTag/{VELERO_BACKUP_TAG}": "*"}}
    velero_resource = {"StringLike": {f"aws:ResourceTag/{VELERO_BACKUP_TAG}": "*"}}
    bucket = f"arn:{partition}:s3:::{bucket_name}"
    return [
        iam.PolicyStatement(
            sid="DescribeVolumesAndSnapshots",
            # Describe calls support no resource-level permissions.
            actions=["ec2:DescribeVolumes", "ec2:DescribeSnapshots"],
            resources=["*"],
        ),
        iam.PolicyStatement(
            sid="SnapshotCsiVolumes",
            actions=["ec2:CreateSnapshot"],
            resources=[volumes],
            conditions={"StringEquals": {f"aws:ResourceTag/{EBS_CSI_VOLUME_TAG}": "true"}},
        ),
        iam.PolicyStatement(
            sid="CreateVeleroSnapshots",
            actions=["ec2:CreateSnapshot"],
            resources=[snapshots],
            conditions=velero_request,
        ),
        iam.PolicyStatement(
            sid="RestoreVolumesFromVeleroSnapshots",
            actions=["ec2:CreateVolume"],
            resources=[snapshots],
            conditions=velero_resource,
        ),
        iam.PolicyStatement(
            sid="CreateRestoredVolumes",
            actions=["ec2:CreateVolume"],
            resources=[volumes],
            conditions=velero_request,
        ),
        iam.PolicyStatement(
            sid="TagOnCreateOnly",
            actions=["ec2:CreateTags"],
            resources=[volumes, snapshots],
            conditions={"StringEquals": {"ec2:CreateAction": ["CreateSnapshot", "CreateVolume"]}},
        ),
        iam.PolicyStatement(
            sid="DeleteVeleroSnapshots",
            actions=["ec2:DeleteSnapshot"],
            resources=[snapshots],
            conditions=velero_resource,
        ),
        iam.PolicyStatement(
            sid="BackupObjects",
            actions=[
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:PutObjectTagging",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            resources=[f"{bucket}/*"],
        ),
        iam.PolicyStatement(sid="ListBackups", actions=["s3:ListBucket"], resources=[bucket]),
        iam.PolicyStatement(
            sid="EncryptBackups",
            # S3 asks for a data key on upload and decrypts it on download and for multipart uploads.
            actions=["kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey"],
            resources=[key_arn],
        ),
    ]


class VeleroStorage(Construct):
    """Define Velero's backup bucket and its own KMS key (rotating yearly); both keep the stage's removal policy.

    The bucket is a ``SecureBucket`` (SSE-KMS with a bucket key, versioned, private, TLS 1.2+ only,
    access-logged). Velero deletes expired backups itself; versioning keeps a deleted or overwritten
    object for ``noncurrent_expire_after_days`` as an undo window, then lifecycle removes it.

    Args:
        bucket_name: the bucket's name (``bucket_name(purpose="velero", ...)``).
        key_alias: the key's alias, without ``alias/``.
        server_access_logs_bucket: where S3 writes the bucket's access logs.
        removal_policy: RETAIN outside dev.
        noncurrent_expire_after_days: days a superseded or deleted object version is kept.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        key_alias: str,
        server_access_logs_bucket: s3.IBucket,
        removal_policy: cdk.RemovalPolicy,
        noncurrent_expire_after_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = EncryptionKey(
            self,
            "Key",
            alias=key_alias,
            description=f"{key_alias}: Velero backups of the cluster's Kubernetes objects",
            removal_policy=removal_policy,
        ).key
        self.bucket = SecureBucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption_key=self.key,
            server_access_logs_bucket=server_access_logs_bucket,
            server_access_logs_prefix="velero/",
            removal_policy=removal_policy,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireDeletedBackups",
                    noncurrent_version_expiration=cdk.Duration.days(noncurrent_expire_after_days),
                ),
                # A delete marker with no versions left behind it only slows listings down.
                s3.LifecycleRule(id="RemoveExpiredDeleteMarkers", expired_object_delete_marker=True),
            ],
        ).bucket


class Velero(Construct):
    """Define the Velero server on one cluster: its Pod Identity role and the pinned Helm release.

    Args:
        cluster: the cluster to back up.
        bucket_name: the backup bucket's name (a literal: the role's ARNs are built from it).
        key: the bucket's KMS key.
        node_selector: node labels that place the server on the system pool.
        overrides: stage-specific values, deep-merged last. Defaults to none.
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
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.server = PodIdentityRole(
            self,
            "ServerRole",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description="Velero server: back up Kubernetes objects to S3 and snapshot their EBS volumes",
        )
        statements = velero_statements(
            partition=stack.partition,
            region=stack.region,
            account=stack.account,
            bucket_name=bucket_name,
            key_arn=key.key_arn,
        )
        self.policy = iam.Policy(self, "ServerPolicy", statements=statements)
        self.policy.attach_to_role(self.server.role)
        _acknowledge_wildcards(self.policy, statements)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=velero_values(
                bucket_name=bucket_name, region=stack.region, kms_key_arn=key.key_arn, node_selector=node_selector
            ),
            overrides=overrides,
        )
        # The server validates the storage location as soon as it starts: its role must be there first.
        self.release.node.add_dependency(self.server.association, self.policy)


def _acknowledge_wildcards(policy: iam.Policy, statements: Sequence[iam.PolicyStatement]) -> None:
    """Acknowledge each wildcard resource of the server policy, one finding at a time."""
    reasons = {
        "*": "ec2:DescribeVolumes and ec2:DescribeSnapshots support no resource-level permissions; they only "
        "read volume and snapshot metadata of this account and region.",
        "/*": "Velero writes one object per backup, restore and log under keys it names at run time; the "
        "statement is limited to the one backup bucket of this cluster.",
        "volume/*": "Volumes are created by the EBS CSI driver and Velero restores at run time, so their IDs "
        "cannot be listed; snapshots are limited to volumes tagged by the CSI driver, creation to volumes "
        "tagged velero.io/backup, tagging to the create calls themselves.",
        "snapshot/*": "Velero creates snapshots at run time; every statement on them requires the "
        "velero.io/backup tag (on the request when creating, on the snapshot when restoring or deleting).",
    }
    wildcards = sorted({r for s in statements for r in s.resources if "*" in r})
    for resource in wildcards:
        reason = next(
            text for suffix, text in sorted(reasons.items(), key=lambda i: -len(i[0])) if resource.endswith(suffix)
        )
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{resource}]", reason=reason)
        )
