"""WorkstationStack: the stand-alone ML workstation, next to (not inside) the cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from platform_constructs.workstation import MlWorkstation
from stacks.base import PlatformStack


class WorkstationStack(PlatformStack):
    """Define the ML workstation in a node subnet of the stage's VPC, with access to the data buckets.

    Public attributes: ``workstation`` (the ``MlWorkstation``: ``instance``, ``role``,
    ``security_group``, ``token_secret``, the alarms).

    Args:
        name_prefix: ``<project>-<stage>``, the start of every name.
        vpc: the stage's VPC.
        subnets: the node subnets (private, egress through NAT).
        datasets_bucket: the data stack's datasets bucket.
        models_bucket: the data stack's models bucket.
        data_key: the key of both buckets.
        logs_key: encrypts the workstation's log groups.
        log_group_prefix: the log groups are ``<prefix>/setup`` and ``<prefix>/jupyterlab``.
        log_retention_days: retention of the log groups.
        instance_type: EC2 instance type.
        gpu: the instance type has NVIDIA GPUs (Deep Learning AMI).
        recoverable: the instance type supports the EC2 recover action.
        root_volume_gib: root volume size.
        ingress_cidrs: networks that may reach SSH, JupyterLab and TensorBoard. Empty: none.
        instance_termination_protection: the instance's API termination protection (outside dev).
        removal_policy: of the log groups and the token secret.
        cpu_alarm_percent: CPU alarm threshold.
        stop_hour_utc: nightly stop hour (UTC). Defaults to no schedule.
        ami_id: a fixed AMI. Defaults to AWS's SSM parameter.
        alarm_topic: where the alarms notify. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        datasets_bucket: s3.IBucket,
        models_bucket: s3.IBucket,
        data_key: kms.IKey,
        logs_key: kms.IKey,
        log_group_prefix: str,
        log_retention_days: int,
        instance_type: str,
        gpu: bool,
        recoverable: bool,
        root_volume_gib: int,
        ingress_cidrs: Sequence[str],
        instance_termination_protection: bool,
        removal_policy: cdk.RemovalPolicy,
        cpu_alarm_percent: float = 80,
        stop_hour_utc: int | None = None,
        ami_id: str | None = None,
        alarm_topic: sns.ITopic | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.workstation = MlWorkstation(
            self,
            "Workstation",
            vpc=vpc,
            subnets=subnets,
            instance_type=instance_type,
            gpu=gpu,
            recoverable=recoverable,
            root_volume_gib=root_volume_gib,
            ingress_cidrs=ingress_cidrs,
            datasets_bucket=datasets_bucket,
            models_bucket=models_bucket,
            data_key=data_key,
            logs_key=logs_key,
            log_retention_days=log_retention_days,
            log_group_prefix=log_group_prefix,
            instance_name=f"{name_prefix}-workstation",
            instance_termination_protection=instance_termination_protection,
            removal_policy=removal_policy,
            cpu_alarm_percent=cpu_alarm_percent,
            stop_hour_utc=stop_hour_utc,
            ami_id=ami_id,
            alarm_topic=alarm_topic,
        )
        instance = self.workstation.instance
        for output_id, value, description in (
            ("InstanceId", instance.instance_id, "ML workstation (aws ssm start-session --target <id>)"),
            ("JupyterTokenSecretArn", self.workstation.token_secret.secret_arn, "JupyterLab token"),
        ):
            cdk.CfnOutput(self, output_id, value=value, description=f"{name_prefix}: {description}")
