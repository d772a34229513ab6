"""The PostgreSQL instance behind MLflow's tracking store and the feature registry."""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from platform_constructs.retention import retention_days

# Config's major versions -> the CDK engine version (minor versions come from auto minor upgrades).
ENGINE_VERSIONS: Mapping[str, rds.PostgresEngineVersion] = {
    "16": rds.PostgresEngineVersion.VER_16,
    "17": rds.PostgresEngineVersion.VER_17,
    "18": rds.PostgresEngineVersion.VER_18,
}
POSTGRES_PORT = 5432
ADMIN_USER = "platform_admin"
LOG_EXPORTS = ("postgresql", "upgrade")
PARAMETERS: Mapping[str, str] = {
    # Refuse unencrypted connections (the default since PostgreSQL 15; pinned so it cannot drift).
    "rds.force_ssl": "1",
    # Statements slower than a second land in the exported postgresql log.
    "log_min_duration_statement": "1000",
    "log_lock_waits": "1",
}


class Database(Construct):
    """Define a private, encrypted PostgreSQL instance with a rotating admin secret.

    Args:
        vpc: the stage's VPC.
        subnets: where the instance lives (the isolated data subnets).
        client_security_group: the only workload source admitted on 5432.
        rotation_subnets: where the rotation function runs; it must reach Secrets Manager.
        encryption_key: encrypts storage, the secret and Performance Insights.
        logs_key: encrypts the exported log groups.
        instance_identifier: the DB instance identifier; fixes the exported log groups' names.
        engine_version: PostgreSQL major version ("16", "17" or "18").
        instance_class: RDS instance class, such as ``db.r7g.large``.
        allocated_storage_gib: initial gp3 storage.
        max_allocated_storage_gib: storage autoscaling ceiling.
        multi_az: a synchronous standby in another zone.
        backup_retention_days: days of automated backups (point-in-time recovery window).
        log_retention_days: retention of the exported log groups.
        deletion_protection: refuse DeleteDBInstance.
        removal_policy: SNAPSHOT outside dev.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        client_security_group: ec2.ISecurityGroup,
        rotation_subnets: ec2.SubnetSelection,
        encryption_key: kms.IKey,
        logs_key: kms.IKey,
        instance_identifier: str,
        engine_version: str,
        instance_class: str,
        allocated_storage_gib: int,
        max_allocated_storage_gib: int,
        multi_az: bool,
        backup_retention_days: int,
        log_retention_days: int,
        deletion_protection: bool,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        if engine_version not in ENGINE_VERSIONS:
            raise ValueError(f"postgres engine version {engine_version!r} is not one of {', '.join(ENGINE_VERSIONS)}")
        if not instance_class.startswith("db."):
            raise ValueError(f"{instance_class!r} is not an RDS instance class such as db.r7g.large")
        engine = rds.DatabaseInstanceEngine.postgres(version=ENGINE_VERSIONS[engine_version])
        helper_removal = (
            cdk.RemovalPolicy.DESTROY if removal_policy == cdk.RemovalPolicy.DESTROY else cdk.RemovalPolicy.RETAIN
        )

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="PostgreSQL: 5432 from the cluster nodes and the secret rotation function only",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(
            client_security_group, ec2.Port.tcp(POSTGRES_PORT), "PostgreSQL from the nodes"
        )
        parameter_group = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description=f"{instance_identifier}: TLS only, slow-statement logging",
            parameters=dict(PARAMETERS),
        )
        # RDS creates missing log groups itself, unencrypted and kept forever; creating them first (the
        # instance depends on them) gives them the stage's retention and the logs key.
        log_groups = [
            logs.LogGroup(
                self,
                f"{export.capitalize()}Logs",
                log_group_name=f"/aws/rds/instance/{instance_identifier}/{export}",
                encryption_key=logs_key,
                retention=retention_days(log_retention_days),
                removal_policy=helper_removal,
            )
            for export in LOG_EXPORTS
        ]
        self.instance = rds.DatabaseInstance(
            self,
            "Resource",
            engine=engine,
            instance_identifier=instance_identifier,
            instance_type=ec2.InstanceType(instance_class.removeprefix("db.")),
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            port=POSTGRES_PORT,
            publicly_accessible=False,
            credentials=rds.Credentials.from_generated_secret(ADMIN_USER, encryption_key=encryption_key),
            iam_authentication=True,
            parameter_group=parameter_group,
            ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
            storage_type=rds.StorageType.GP3,
            allocated_storage=allocated_storage_gib,
            max_allocated_storage=max_allocated_storage_gib,
            storage_encrypted=True,
            storage_encryption_key=encryption_key,
            multi_az=multi_az,
            backup_retention=cdk.Duration.days(backup_retention_days),
            copy_tags_to_snapshot=True,
            deletion_protection=deletion_protection,
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            enable_performance_insights=True,
            performance_insight_encryption_key=encryption_key,
            monitoring_interval=cdk.Duration.seconds(60),
            cloudwatch_logs_exports=list(LOG_EXPORTS),
            removal_policy=removal_policy,
        )
        cfn_instance = self.instance.node.default_child
        if not isinstance(cfn_instance, rds.CfnDBInstance):
            raise TypeError(f"{self.instance.node.path} has no CfnDBInstance")
        for log_group in log_groups:
            cfn_instance.node.add_dependency(log_group)
        # A major version alone ("17") lets auto minor upgrades move the instance without the template
        # fighting them; cfn-lint only knows full versions and calls the major-only form deprecated.
        cfn_instance.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3691"]}})
        secret = self.instance.secret
        if secret is None:
            raise RuntimeError("rds.Credentials.from_generated_secret always creates a secret")
        self.secret = secret
        # The final snapshot is useless without its admin password: keep the secret whenever the data is kept.
        # (``instance.secret`` is the target attachment; the generated secret itself is the "Secret" child.)
        generated = self.instance.node.try_find_child("Secret")
        if not isinstance(generated, secretsmanager.Secret):
            raise TypeError(f"{self.instance.node.path} has no generated Secret child")
        generated.apply_removal_policy(helper_removal)
        # The rotation function runs in the node subnets and needs two things: HTTPS to Secrets Manager
        # (NAT or the interface endpoint) and a login to the database, which add_rotation_single_user
        # opens on both groups.
        self.rotation_security_group = ec2.SecurityGroup(
            self,
            "RotationSecurityGroup",
            vpc=vpc,
            description="Secret rotation function: HTTPS to Secrets Manager, PostgreSQL to the database",
            allow_all_outbound=False,
        )
        self.rotation_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "Secrets Manager API (NAT or interface endpoint)"
        )
        self.rotation = self.instance.add_rotation_single_user(
            automatically_after=cdk.Duration.days(30),
            vpc_subnets=rotation_subnets,
            security_group=self.rotation_security_group,
        )

        monitoring_role = self.instance.node.try_find_child("MonitoringRole")
        if monitoring_role is not None:
            cdk.Validations.of(monitoring_role).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AmazonRDSEnhancedMonitoringRole]",
                    reason="the AWS-maintained service policy of RDS enhanced monitoring; it only writes "
                    "the RDSOSMetrics log group, and AWS keeps it in step with the service",
                )
            )
        cdk.Validations.of(self.instance).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-RDS11",
                reason="a non-default port only hides from untargeted scans; the instance sits in isolated "
                "subnets and its security group admits only the cluster nodes and the rotation function, "
                "and clients (MLflow, psql, drivers) default to 5432",
            )
        )
        if not multi_az:
            cdk.Validations.of(self.instance).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-RDS3",
                    reason="single-AZ by this stage's config (data.rds.multi_az: false) to save cost; the "
                    "config model rejects a prod stage without Multi-AZ",
                )
            )
        if not deletion_protection:
            cdk.Validations.of(self.instance).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-RDS10",
                    reason="a dev stage's database is disposable (data.removal_policy: destroy); every "
                    "other tier turns deletion protection on",
                )
            )
