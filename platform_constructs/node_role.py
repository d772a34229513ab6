"""The IAM role of EKS worker nodes: what kubelet, image pulls and Session Manager need, nothing for pods."""

from __future__ import annotations

from typing import Final

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

# Pods get AWS access from EKS Pod Identity; the node role carries only what the node itself needs.
NODE_POLICIES: Final = {
    "AmazonEKSWorkerNodePolicy": "the EKS node policy AWS maintains for kubelet; a copy would drift from what "
    "new EKS versions need",
    "AmazonEC2ContainerRegistryPullOnly": "read-only image pulls from ECR, the narrowest managed policy AWS offers "
    "for nodes",
    "AmazonSSMManagedInstanceCore": "Session Manager access to nodes instead of SSH keys and open ports; exactly "
    "what the SSM agent needs",
}


def node_role(scope: Construct, construct_id: str, *, description: str) -> iam.Role:
    """Return a role for EC2 worker nodes with the managed node policies, each acknowledged for cdk-nag."""
    role = iam.Role(
        scope,
        construct_id,
        description=description,
        assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
        managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(name) for name in NODE_POLICIES],
    )
    for name, reason in NODE_POLICIES.items():
        cdk.Validations.of(role).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{name}]",
                reason=f"AWS managed policy for worker nodes: {reason}.",
            )
        )
    return role
