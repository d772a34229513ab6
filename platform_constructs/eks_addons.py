"""EKS managed add-ons, pinned per Kubernetes version, with Pod Identity roles for those that call AWS."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

# `aws eks describe-addon-versions --kubernetes-version 1.35 --addon-name <name>` lists what EKS offers;
# bump these with the cluster version (one table per supported version).
ADDON_VERSIONS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "1.35": MappingProxyType(
            {
                "vpc-cni": "v1.21.1-eksbuild.3",
                "coredns": "v1.13.2-eksbuild.1",
                "kube-proxy": "v1.35.0-eksbuild.2",
                "eks-pod-identity-agent": "v1.3.10-eksbuild.3",
                "aws-ebs-csi-driver": "v1.57.1-eksbuild.1",
                "aws-efs-csi-driver": "v3.0.1-eksbuild.1",
                "metrics-server": "v0.8.1-eksbuild.1",
            }
        ),
    }
)

# Add-ons whose controllers call AWS: service account -> AWS managed policy for that controller.
_AWS_ACCESS: Final = {
    "vpc-cni": ("aws-node", "AmazonEKS_CNI_Policy"),
    "aws-ebs-csi-driver": ("ebs-csi-controller-sa", "service-role/AmazonEBSCSIDriverPolicy"),
    "aws-efs-csi-driver": ("efs-csi-controller-sa", "service-role/AmazonEFSCSIDriverPolicy"),
}
_IDS: Final = {
    "vpc-cni": "VpcCni", "coredns": "CoreDns", "kube-proxy": "KubeProxy", "eks-pod-identity-agent": "PodIdentityAgent",
    "aws-ebs-csi-driver": "EbsCsiDriver", "aws-efs-csi-driver": "EfsCsiDriver", "metrics-server": "MetricsServer",
}  # fmt: skip


class EksAddons(Construct):
    """Define the cluster's EKS managed add-ons, each at its pinned version.

    vpc-cni runs with network policy enforcement on (the platform's default-deny NetworkPolicies
    need it). Controllers that call AWS get their own role through Pod Identity, never the node role.

    Args:
        cluster: the cluster.
        kubernetes_version: selects the version table in ``ADDON_VERSIONS``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.ICluster, kubernetes_version: str) -> None:
        super().__init__(scope, construct_id)
        versions = ADDON_VERSIONS.get(kubernetes_version)
        if versions is None:
            raise ValueError(
                f"no EKS add-on versions pinned for Kubernetes {kubernetes_version}: add a table to ADDON_VERSIONS "
                f"(pinned: {', '.join(ADDON_VERSIONS)})"
            )
        config: dict[str, dict[str, object]] = {
            "vpc-cni": {"enableNetworkPolicy": "true", "env": {"ENABLE_PREFIX_DELEGATION": "false"}},
            "coredns": {"replicaCount": 2},
        }
        self.addons: dict[str, eks.CfnAddon] = {}
        self.roles: dict[str, iam.IRole] = {}
        for name, version in versions.items():
            associations = None
            if name in _AWS_ACCESS:
                service_account, policy = _AWS_ACCESS[name]
                role = iam.Role(
                    self,
                    f"{_IDS[name]}Role",
                    description=f"EKS add-on {name} ({service_account}) through Pod Identity",
                    assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com").with_session_tags(),
                    managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(policy)],
                )
                self.roles[name] = role
                cdk.Validations.of(role).acknowledge(
                    cdk.Acknowledgment(
                        id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                        reason=f"The policy AWS publishes for the {name} add-on and updates with it; the role is "
                        f"bound by Pod Identity to {service_account} alone.",
                    )
                )
                associations = [
                    eks.CfnAddon.PodIdentityAssociationProperty(role_arn=role.role_arn, service_account=service_account)
                ]
            addon = eks.CfnAddon(
                self,
                _IDS[name],
                addon_name=name,
                addon_version=version,
                cluster_name=cluster.cluster_name,
                resolve_conflicts="OVERWRITE",
                configuration_values=json.dumps(config[name]) if name in config else None,
                pod_identity_associations=associations,
            )
            self.addons[name] = addon
        # The Pod Identity agent must run before controllers that rely on it can reach AWS.
        for name in _AWS_ACCESS:
            if name != "vpc-cni":
                self.addons[name].node.add_dependency(self.addons["eks-pod-identity-agent"])
