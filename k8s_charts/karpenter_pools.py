"""Define the Karpenter v1 NodePools and EC2NodeClasses of the Karpenter-provisioned node pools.

Each pool with ``provisioner: karpenter`` becomes one EC2NodeClass (how to launch: AMI, role, subnets,
security groups, IMDS, root volume) and one NodePool (what to launch: instance types, capacity types,
labels, taints, disruption and limits), both named after the pool. Pools with ``provisioner: nodegroup``
are EKS managed nodegroups that the cluster stack creates; Karpenter does not manage them, so they get
no objects here.

Pods pick a pool by the ``workload-type`` node label. A pool serves several workload types, so the
NodePool lists them all in a ``workload-type In [...]`` requirement rather than fixing one label value:
a pod with ``nodeSelector: {workload-type: training}`` matches every pool that lists ``training``, and
the node Karpenter launches for it carries ``workload-type=training`` (the requirement narrowed to the
pod's value). ``workload-type`` has no prefix, so it is outside the label domains the NodePool CRD
restricts (``karpenter.sh``, ``karpenter.k8s.aws``, ``kubernetes.io/hostname``).

GPU time-slicing and Karpenter: Karpenter counts one ``nvidia.com/gpu`` per physical GPU of an instance
type, while the GPU Operator's device plugin advertises GPUs x replicas on a time-sliced node. The
NodePool's GPU limit is therefore in physical GPUs (max_nodes x GPUs per node). Pods that request a
time-sliced GPU schedule onto existing nodes' replicas; Karpenter launches a node only when no replica
is free, sizing it as if each pending request needed a whole GPU, so it may over-provision by up to
(replicas - 1) / replicas of a node, a waste the pool limit bounds. ``timesliced_capacity`` gives the
number of GPU replicas the pool offers at its maximum size, for the scheduling and quota checks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, Final

import cdk8s
import constructs

from config.catalog import INSTANCE_TYPES
from config.model import Mig, NodePoolConfig, TimeSlicing
from config.pools import (
    POOL_LABEL,
    WORKLOAD_TYPE_LABEL,
    gpus_per_node,
    node_labels,
)
from k8s_charts.objects import api_object

# The EKS-optimized AL2023 release Karpenter launches. A dated release, never "al2023@latest", so that a
# new AMI reaches the fleet only through a reviewed change (Karpenter drifts every node when it changes).
# Bump it with the cluster: the alias resolves to the build of this release for the control plane's
# Kubernetes version, so a cluster upgrade needs a release published for the new version (see
# AMI_ALIAS_KUBERNETES_VERSIONS and https://github.com/awslabs/amazon-eks-ami/releases).
AMI_ALIAS: Final = "al2023@v20260810"
# The Kubernetes versions AMI_ALIAS is published for, among those the stage config allows.
AMI_ALIAS_KUBERNETES_VERSIONS: Final = ("1.33", "1.34", "1.35")

DISCOVERY_TAG_KEY: Final = "karpenter.sh/discovery"
GPU_RESOURCE: Final = "nvidia.com/gpu"

# Inference images with CUDA, framework and weights run to tens of GB; 100 GiB fills up after a few pulls.
GPU_ROOT_VOLUME_GIB: Final = 200
# Workload types whose serving path must not lose nodes during the daily peak (08:00-22:00 UTC).
PEAK_PROTECTED_WORKLOADS: Final = frozenset({"production-inference", "online-inference"})
DEFAULT_BUDGET: Final = MappingProxyType({"nodes": "10%"})
# Karpenter evaluates budget schedules in UTC (the CRD has no time zone field).
PEAK_BUDGET: Final = MappingProxyType({"nodes": "0", "schedule": "0 8 * * *", "duration": "14h"})

_AMI_ALIAS_PATTERN = re.compile(r"^al2023@v\d{8}$")
_KUBERNETES_VERSION_PATTERN = re.compile(r"^1\.\d{2}$")


def is_gpu_pool(pool: NodePoolConfig) -> bool:
    """Return whether any of the pool's instance types has a GPU."""
    return bool(pool.gpu_instance_types)


def pool_limits(pool: NodePoolConfig) -> dict[str, str]:
    """Return the NodePool limits that cap the pool at ``max_nodes`` of its largest instance type.

    ``cpu`` and ``memory`` are max_nodes times the largest vCPU count and memory of the pool's types;
    GPU pools add ``nvidia.com/gpu`` in physical GPUs (max_nodes x GPUs per node). Karpenter counts a
    node's capacity, which for memory is below the catalog figure (it subtracts VM overhead), so the
    limits never stop the pool short of ``max_nodes`` nodes.
    """
    types = [INSTANCE_TYPES[t] for t in pool.instance_types]
    limits = {
        "cpu": str(pool.max_nodes * max(t.vcpu for t in types)),
        "memory": f"{pool.max_nodes * max(t.memory_gib for t in types)}Gi",
    }
    if is_gpu_pool(pool):
        limits[GPU_RESOURCE] = str(pool.max_nodes * gpus_per_node(pool))
    return limits


def timesliced_capacity(pool: NodePoolConfig) -> int:
    """Return the ``nvidia.com/gpu`` the device plugin advertises across the pool at ``max_nodes``.

    That is max_nodes x GPUs per node x time-slicing replicas; a pool that does not share its GPUs
    counts one per GPU, and a CPU pool 0. A MIG pool advertises ``nvidia.com/mig-*`` resources instead,
    so asking for its time-sliced capacity is an error.
    """
    sharing = pool.gpu_sharing
    if isinstance(sharing, Mig):
        raise ValueError(
            f"node pool {pool.name} partitions its GPUs with MIG (layout {sharing.layout}): it advertises "
            "nvidia.com/mig-* resources, not time-sliced nvidia.com/gpu; count its MIG devices from the "
            "layout"
        )
    replicas = sharing.replicas if isinstance(sharing, TimeSlicing) else 1
    return pool.max_nodes * gpus_per_node(pool) * replicas


def root_volume_gib(pool: NodePoolConfig) -> int:
    """Return the root volume size of the pool's nodes.

    A GPU pool that leaves ``root_volume_gib`` unset gets at least ``GPU_ROOT_VOLUME_GIB`` for its
    multi-GB inference images; a size set in the stage config is used as given.
    """
    if is_gpu_pool(pool) and "root_volume_gib" not in pool.model_fields_set:
        return max(pool.root_volume_gib, GPU_ROOT_VOLUME_GIB)
    return pool.root_volume_gib


class KarpenterPoolsChart(cdk8s.Chart):
    """Define one EC2NodeClass and one NodePool per Karpenter-provisioned node pool.

    Pools with ``provisioner: nodegroup`` are skipped: they are EKS managed nodegroups that the cluster
    stack creates, and Karpenter must not launch nodes for them.

    Args:
        pools: the stage's node pools; only those with ``provisioner == "karpenter"`` are used.
        cluster_name: the EKS cluster's name, tagged on the instances.
        node_role_name: the IAM role (name, not ARN) Karpenter puts on the nodes' instance profile.
        discovery_tag: value of the ``karpenter.sh/discovery`` tag on the node subnets and the node
            security group.
        kubernetes_version: the control plane's version; it must be one ``ami_alias`` is published for
            when ``ami_alias`` is the pinned default.
        ami_alias: the EKS-optimized AMI release, ``al2023@vYYYYMMDD``. Defaults to ``AMI_ALIAS``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        pools: Sequence[NodePoolConfig],
        cluster_name: str,
        node_role_name: str,
        discovery_tag: str,
        kubernetes_version: str,
        ami_alias: str = AMI_ALIAS,
    ) -> None:
        _check_args(cluster_name, node_role_name, discovery_tag, kubernetes_version, ami_alias)
        super().__init__(scope, construct_id)
        for pool in pools:
            if pool.provisioner != "karpenter":
                continue
            if isinstance(pool.gpu_sharing, Mig):
                raise ValueError(
                    f"node pool {pool.name}: a MIG pool must be a nodegroup (Karpenter counts whole GPUs and "
                    "cannot launch nodes for nvidia.com/mig-* requests): set provisioner: nodegroup"
                )
            _api_object(
                self,
                f"{pool.name}-ec2nodeclass",
                api_version="karpenter.k8s.aws/v1",
                kind="EC2NodeClass",
                name=pool.name,
                spec=_node_class_spec(
                    pool,
                    cluster_name=cluster_name,
                    node_role_name=node_role_name,
                    discovery_tag=discovery_tag,
                    ami_alias=ami_alias,
                ),
            )
            _api_object(
                self,
                f"{pool.name}-nodepool",
                api_version="karpenter.sh/v1",
                kind="NodePool",
                name=pool.name,
                spec=_node_pool_spec(pool),
            )


def _check_args(
    cluster_name: str, node_role_name: str, discovery_tag: str, kubernetes_version: str, ami_alias: str
) -> None:
    for arg, value in (
        ("cluster_name", cluster_name),
        ("node_role_name", node_role_name),
        ("discovery_tag", discovery_tag),
    ):
        if not value:
            raise ValueError(f"{arg} is empty: Karpenter needs it to launch nodes")
    if node_role_name.startswith("arn:"):
        raise ValueError(f"node_role_name {node_role_name!r} is an ARN: pass the role's name")
    if not _KUBERNETES_VERSION_PATTERN.match(kubernetes_version):
        raise ValueError(f"kubernetes_version {kubernetes_version!r} is not a minor version such as 1.35")
    if not _AMI_ALIAS_PATTERN.match(ami_alias):
        raise ValueError(
            f"ami_alias {ami_alias!r} is not a pinned AL2023 release: use al2023@vYYYYMMDD (never @latest, "
            "which rolls every node whenever AWS publishes an AMI)"
        )
    if ami_alias == AMI_ALIAS and kubernetes_version not in AMI_ALIAS_KUBERNETES_VERSIONS:
        raise ValueError(
            f"{AMI_ALIAS} is not published for Kubernetes {kubernetes_version}: bump AMI_ALIAS and "
            "AMI_ALIAS_KUBERNETES_VERSIONS in k8s_charts/karpenter_pools.py with the cluster"
        )


def _api_object(
    scope: constructs.Construct,
    construct_id: str,
    *,
    api_version: str,
    kind: str,
    name: str,
    spec: dict[str, Any],
) -> cdk8s.ApiObject:
    return api_object(
        scope,
        construct_id,
        api_version=api_version,
        kind=kind,
        name=name,
        labels={POOL_LABEL: name},
        body={"spec": spec},
    )


def _node_class_spec(
    pool: NodePoolConfig, *, cluster_name: str, node_role_name: str, discovery_tag: str, ami_alias: str
) -> dict[str, Any]:
    discovery = [{"tags": {DISCOVERY_TAG_KEY: discovery_tag}}]
    return {
        # An alias needs no amiFamily. For GPU instance types Karpenter picks the NVIDIA variant of the
        # AL2023 release (driver and container toolkit preinstalled) by itself.
        "amiSelectorTerms": [{"alias": ami_alias}],
        "role": node_role_name,
        "subnetSelectorTerms": discovery,
        "securityGroupSelectorTerms": discovery,
        # IMDSv2 only, one hop: containers cannot reach the node role's credentials through IMDS. Pods get
        # AWS access from EKS Pod Identity, never from the node role.
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,
            "httpTokens": "required",
        },
        "blockDeviceMappings": [
            {
                "deviceName": "/dev/xvda",  # the AL2023 root device
                "ebs": {
                    "volumeSize": f"{root_volume_gib(pool)}Gi",
                    "volumeType": "gp3",
                    "encrypted": True,
                    "deleteOnTermination": True,
                },
            }
        ],
        # Karpenter adds the cluster, nodepool and nodeclass tags itself (the CRD forbids setting them).
        "tags": {POOL_LABEL: pool.name, "ml-platform/cluster": cluster_name},
    }


def _node_pool_spec(pool: NodePoolConfig) -> dict[str, Any]:
    # The same labels as a nodegroup's nodes, except workload-type: here a requirement sets it to the
    # value the pending pod asked for (a static label would fight the requirement).
    labels = {k: v for k, v in node_labels(pool).items() if k != WORKLOAD_TYPE_LABEL}
    template_spec: dict[str, Any] = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": pool.name},
        "requirements": [
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": list(pool.instance_types),
            },
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(pool.capacity_types)},
            # Every type in the catalog is x86; saying so keeps an arm64 type added later out of the pool.
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            {"key": WORKLOAD_TYPE_LABEL, "operator": "In", "values": list(pool.workload_types)},
        ],
        "expireAfter": pool.expire_after,
    }
    if pool.taints:
        # The CRD's taint value pattern rejects "", so a taint without a value omits the field.
        template_spec["taints"] = [
            {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})} for t in pool.taints
        ]
    return {
        "template": {"metadata": {"labels": labels}, "spec": template_spec},
        "disruption": {
            # GPU jobs (training, fine-tuning, batch inference) run for hours and checkpoint rarely:
            # consolidating an under-used GPU node would kill them to save a fraction of a node. GPU
            # pools give back only empty nodes; CPU pools also repack under-used ones.
            "consolidationPolicy": "WhenEmpty" if is_gpu_pool(pool) else "WhenEmptyOrUnderutilized",
            "consolidateAfter": pool.consolidate_after,
            "budgets": _budgets(pool),
        },
        "limits": pool_limits(pool),
    }


def _budgets(pool: NodePoolConfig) -> list[dict[str, str]]:
    budgets = [dict(DEFAULT_BUDGET)]
    if PEAK_PROTECTED_WORKLOADS.intersection(pool.workload_types):
        # No voluntary disruption (consolidation, drift) of production inference during the 08:00-22:00 UTC
        # peak. Karpenter uses the most restrictive active budget. Expiry and spot interruption are forceful
        # in Karpenter v1 and ignore budgets.
        budgets.append(dict(PEAK_BUDGET))
    return budgets
