"""KeysStack: the stage's shared KMS keys (logs, Kubernetes secrets); stateful and retained."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from platform_constructs.encryption_key import EncryptionKey
from stacks.base import PlatformStack


class KeysStack(PlatformStack):
    """Define the keys that every other stack encrypts with, first in the stage so all can use them.

    Keys are stateful: losing one loses what it encrypted. They live here rather than beside their
    users so that the churning stacks (network, cluster) can be replaced without touching a key.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        removal_policy: cdk.RemovalPolicy,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.logs_key = EncryptionKey(
            self,
            "LogsKey",
            alias=f"{name_prefix}/logs",
            description=f"{name_prefix}: CloudWatch Logs (VPC flow logs, EKS control plane, workloads)",
            removal_policy=removal_policy,
            logs_service=True,
        ).key
        self.cluster_key = EncryptionKey(
            self,
            "ClusterSecretsKey",
            alias=f"{name_prefix}/eks-secrets",
            description=f"{name_prefix}: envelope encryption of Kubernetes secrets",
            removal_policy=removal_policy,
        ).key
