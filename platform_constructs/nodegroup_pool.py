"""A node pool served by an EKS managed nodegroup: guaranteed capacity Karpenter cannot provide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

_EFFECTS = {
    "NoSchedule": eks.TaintEffect.NO_SCHEDULE,
    "PreferNoSchedule": eks.TaintEffect.PREFER_NO_SCHEDULE,
    "NoExecute": eks.TaintEffect.NO_EXECUTE,
}


class NodegroupPool(Construct):
    """Define a managed nodegroup on AL2023 (the NVIDIA variant for GPUs) with a hardened launch template.

    Args:
        cluster: the cluster the nodes join.
        node_role: the nodes' IAM role.
        security_groups: groups every node carries (the cluster's own and the platform node group).
        subnets: where the nodes run.
        instance_types: EC2 instance types.
        gpu: whether the instance types have NVIDIA GPUs (selects the AMI type).
        spot: spot instead of on-demand capacity.
        min_nodes: nodes always running (the pool's guaranteed capacity).
        max_nodes: upper bound.
        labels: node labels.
        taints: ``(key, value, effect)`` triples.
        root_volume_gib: encrypted gp3 root volume size.
        peak: ``(extra_nodes, start_hour_utc, end_hour_utc)``: scale up on a daily UTC window. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_role: iam.IRole,
        security_groups: Sequence[ec2.ISecurityGroup],
        subnets: ec2.SubnetSelection,
        instance_types: Sequence[str],
        gpu: bool,
        spot: bool,
        min_nodes: int,
        max_nodes: int,
        labels: Mapping[str, str],
        taints: Sequence[tuple[str, str, str]],
        root_volume_gib: int,
        peak: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # IMDSv2 only, one hop: pods get AWS credentials from Pod Identity, never from the node's role.
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_gib, volume_type=ec2.EbsDeviceVolumeType.GP3, encrypted=True
                    ),
                )
            ],
            security_group=security_groups[0],
        )
        for group in security_groups[1:]:
            self.launch_template.add_security_group(group)
        self.nodegroup = eks.Nodegroup(
            self,
            "Resource",
            cluster=cluster,
            node_role=node_role,
            instance_types=[ec2.InstanceType(t) for t in instance_types],
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_NVIDIA if gpu else eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            capacity_type=eks.CapacityType.SPOT if spot else eks.CapacityType.ON_DEMAND,
            min_size=min_nodes,
            desired_size=min_nodes,
            max_size=max_nodes,
            subnets=subnets,
            labels=dict(labels),
            taints=[eks.TaintSpec(key=k, value=v or None, effect=_EFFECTS[e]) for k, v, e in taints],
            launch_template_spec=eks.LaunchTemplateSpec(
                id=self.launch_template.launch_template_id or "",
                version=self.launch_template.latest_version_number,
            ),
            enable_node_auto_repair=True,
            max_unavailable_percentage=10,
        )
        if peak:
            self._schedule_peak(cluster, min_nodes, max_nodes, *peak)

    def _schedule_peak(
        self, cluster: eks.ICluster, min_nodes: int, max_nodes: int, extra: int, start: int, end: int
    ) -> None:
        """Raise the nodegroup's floor on a daily UTC window with EventBridge Scheduler, then lower it again.

        Managed nodegroups have no scheduled scaling of their own and Karpenter does not manage them.
        A deploy during the window resets the floor to ``min_nodes`` until the next start.
        """
        role = iam.Role(
            self,
            "PeakSchedulerRole",
            description="EventBridge Scheduler: resize this nodegroup for the daily peak",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["eks:UpdateNodegroupConfig"], resources=[self.nodegroup.nodegroup_arn])
        )
        for name, hour, size in (("PeakStart", start, min_nodes + extra), ("PeakEnd", end, min_nodes)):
            scheduler.CfnSchedule(
                self,
                name,
                description=f"{name}: scale to {size} nodes at {hour:02d}:00 UTC",
                schedule_expression=f"cron(0 {hour} * * ? *)",
                schedule_expression_timezone="UTC",
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                target=scheduler.CfnSchedule.TargetProperty(
                    arn="arn:aws:scheduler:::aws-sdk:eks:updateNodegroupConfig",
                    role_arn=role.role_arn,
                    input=cdk.Stack.of(self).to_json_string(
                        {
                            "ClusterName": cluster.cluster_name,
                            "NodegroupName": self.nodegroup.nodegroup_name,
                            "ScalingConfig": {"MinSize": size, "DesiredSize": size, "MaxSize": max_nodes},
                        }
                    ),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=3),
                ),
            )
