"""External Secrets Operator: Secrets Manager -> Kubernetes Secrets, with a Pod Identity role per stage.

The controller's service account assumes a role that may read only this stage's secrets: the ones passed
in (the DataStack's database and cache secrets) and those named ``<project>-<stage>/...`` (application
secrets such as a W&B or LLM provider key, created by operators). It decrypts them with the stage's data
key only through Secrets Manager (``kms:ViaService``). The ClusterSecretStore that uses this identity is
``k8s_charts/secrets.py``'s ``SecretStoreChart``; no static AWS credentials exist anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: https://charts.external-secrets.io -> external-secrets/external-secrets 2.9.0
CHART: Final = HelmChartRef(repository="https://charts.external-secrets.io", chart="external-secrets", version="2.9.0")
NAMESPACE: Final = "external-secrets"
SERVICE_ACCOUNT: Final = "external-secrets"


def external_secrets_values(*, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Return the chart values (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels placing the controller, webhook and cert controller on the system pool.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: give the system pool's label so ESO stays off GPU and spot nodes")
    selector = dict(node_selector)
    return {
        # The chart installs and upgrades the CRDs (ExternalSecret, ClusterSecretStore, ...).
        "installCRDs": True,
        # A fixed name: the Pod Identity association names the service account before the release exists.
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "nodeSelector": selector,
        "webhook": {"nodeSelector": selector},
        "certController": {"nodeSelector": selector},
    }


class ExternalSecretsOperator(Construct):
    """Define the External Secrets Operator release and its Pod Identity role.

    Args:
        cluster: the cluster to install into.
        node_selector: node labels placing ESO on the system pool.
        secrets: secrets ESO may read, by ARN (the DataStack's database and cache secrets).
        secret_name_prefix: further secrets ESO may read by name (``<project>-<stage>/``); must end with ``/``.
        secrets_key: the KMS key those secrets are encrypted with. Defaults to none (AWS-managed key).
        overrides: stage-specific chart values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        secrets: Sequence[secretsmanager.ISecret],
        secret_name_prefix: str,
        secrets_key: kms.IKey | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not secret_name_prefix.endswith("/") or len(secret_name_prefix) < 2:
            raise ValueError(
                f"secret_name_prefix {secret_name_prefix!r} must be a path such as ml-platform-dev/ (ending in /), "
                "or the wildcard would match other stages' secrets"
            )
        stack = cdk.Stack.of(self)
        self.controller = PodIdentityRole(
            self,
            "ControllerRole",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description="External Secrets Operator: read this stage's secrets from Secrets Manager",
        )
        prefix_arn = stack.format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{secret_name_prefix}*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        statements = [
            iam.PolicyStatement(
                sid="ReadStageSecrets",
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[*(s.secret_arn for s in secrets), prefix_arn],
            )
        ]
        if secrets_key is not None:
            statements.append(
                iam.PolicyStatement(
                    sid="DecryptThroughSecretsManager",
                    actions=["kms:Decrypt"],
                    resources=[secrets_key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com"}},
                )
            )
        self.policy = iam.Policy(self, "ControllerPolicy", statements=statements)
        self.policy.attach_to_role(self.controller.role)
        cdk.Validations.of(self.policy).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{prefix_arn}]",
                reason="Application secrets (W&B, LLM provider keys) are created by operators under the stage's "
                "own name prefix; the wildcard covers only that prefix (and Secrets Manager's random ARN suffix), "
                "never another stage's secrets, and the actions are read-only.",
            )
        )
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=external_secrets_values(node_selector=node_selector),
            overrides=overrides,
        )
        # The controller reads secrets as soon as a store exists: its role and association come first.
        self.release.node.add_dependency(self.controller.association, self.policy)
