"""The shared EFS file system of the cluster's pods: data sets, models and training checkpoints."""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

# Construct ID -> directory each access point roots its clients in.
ACCESS_POINT_PATHS: Mapping[str, str] = {
    "Datasets": "/datasets",
    "Models": "/models",
    "Checkpoints": "/checkpoints",
}
# The non-root user of the platform's images (uid/gid 1000); EFS creates each root directory for it.
POSIX_UID = "1000"
POSIX_GID = "1000"
ROOT_DIRECTORY_PERMISSIONS = "0750"
NFS_PORT = 2049


class SharedFileSystem(Construct):
    """Define an encrypted, elastic-throughput EFS file system with one access point per use.

    Mount targets sit in the node subnets; only ``client_security_group`` reaches NFS, and the file
    system policy refuses anonymous and non-TLS clients (EFS CSI driver mounts use TLS and IAM).

    Args:
        vpc: the stage's VPC.
        subnets: where the mount targets go (the node subnets: one mount target per zone).
        file_system_name: the file system's Name tag.
        client_security_group: the only source admitted on NFS (2049).
        encryption_key: the key encrypting the file system at rest.
        automatic_backups: AWS Backup's daily EFS backup plan.
        removal_policy: RETAIN outside dev.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        file_system_name: str,
        client_security_group: ec2.ISecurityGroup,
        encryption_key: kms.IKey,
        automatic_backups: bool,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="EFS mount targets: NFS from the cluster nodes only",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(NFS_PORT), "NFS from the nodes")
        self.file_system = efs.FileSystem(
            self,
            "Resource",
            vpc=vpc,
            vpc_subnets=subnets,
            file_system_name=file_system_name,
            security_group=self.security_group,
            encrypted=True,
            kms_key=encryption_key,
            enable_automatic_backups=automatic_backups,
            # Cold checkpoints and old data sets cost about a tenth in IA; a read brings a file back.
            lifecycle_policy=efs.LifecyclePolicy.AFTER_30_DAYS,
            out_of_infrequent_access_policy=efs.OutOfInfrequentAccessPolicy.AFTER_1_ACCESS,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            # Training reads in bursts: elastic throughput scales with them and bills only what is used.
            throughput_mode=efs.ThroughputMode.ELASTIC,
            allow_anonymous_access=False,
            removal_policy=removal_policy,
        )
        self.file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyWithoutTls",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["*"],
                conditions={"Bool": {"aws:SecureTransport": "false"}},
            )
        )
        self.access_points = {
            construct_id_: efs.AccessPoint(
                self,
                construct_id_,
                file_system=self.file_system,
                path=path,
                posix_user=efs.PosixUser(uid=POSIX_UID, gid=POSIX_GID),
                create_acl=efs.Acl(owner_uid=POSIX_UID, owner_gid=POSIX_GID, permissions=ROOT_DIRECTORY_PERMISSIONS),
            )
            for construct_id_, path in ACCESS_POINT_PATHS.items()
        }
