"""A customer-managed KMS key with rotation, an alias and the stage's removal policy."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class EncryptionKey(Construct):
    """Define a symmetric KMS key that rotates yearly and is kept when its stack goes.

    Args:
        alias: the key's alias, without the ``alias/`` prefix.
        description: what the key encrypts.
        removal_policy: RETAIN outside dev; a retained key is never scheduled for deletion.
        logs_service: allow CloudWatch Logs of this account and region to use the key.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        alias: str,
        description: str,
        removal_policy: cdk.RemovalPolicy,
        logs_service: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Resource",
            alias=f"alias/{alias}",
            description=description,
            enable_key_rotation=True,
            pending_window=cdk.Duration.days(30),
            removal_policy=removal_policy,
        )
        if logs_service:
            stack = cdk.Stack.of(self)
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="AllowCloudWatchLogsOfThisAccount",
                    principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                    actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                    resources=["*"],
                    conditions={
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": (
                                f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                            )
                        }
                    },
                )
            )
