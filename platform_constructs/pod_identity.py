"""An IAM role that one Kubernetes service account assumes through EKS Pod Identity."""

from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct


class PodIdentityRole(Construct):
    """Define a role for ``namespace/service_account`` and associate it through EKS Pod Identity.

    Pod Identity (not IRSA): no OIDC provider trust to maintain, and the role trusts only the
    EKS pods service principal; the association pins it to one service account of one cluster.

    Args:
        cluster: the cluster whose pods assume the role.
        namespace: the service account's namespace.
        service_account: the service account's name.
        description: what the role is for.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str,
        service_account: str,
        description: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.namespace = namespace
        self.service_account = service_account
        self.role = iam.Role(
            self,
            "Resource",
            description=description,
            assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com").with_session_tags(),
        )
        self.association = eks.CfnPodIdentityAssociation(
            self,
            "Association",
            cluster_name=cluster.cluster_name,
            namespace=namespace,
            service_account=service_account,
            role_arn=self.role.role_arn,
        )
