"""Scheduling consistency at synth: every workload the platform defines fits a pool and its namespace quota.

A pod that no node pool can hold sits Pending forever after a green deploy. This check finds that at
synth instead: for each workload it tries every pool (labels, taints, instance sizes, GPU sharing) and
the namespace quota, and fails with the workload, every candidate pool and why each was rejected.

Plain Python: it reads Kubernetes objects as dicts (the synthesized charts) and the typed pool specs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.catalog import INSTANCE_TYPES
from config.model import Mig, NamespaceQuota, NodePoolConfig, TimeSlicing
from config.pools import WORKLOAD_TYPE_LABEL, gpus_per_node, node_labels

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
# Share of an instance's memory and CPU that pods can request: kubelet, system daemons and the eviction
# threshold keep the rest (EKS reserves about 6-11% of memory and a fraction of a core).
ALLOCATABLE_FRACTION = 0.9


class SchedulingError(ValueError):
    """One or more workloads fit no node pool or exceed their namespace quota."""


@dataclass(frozen=True)
class Workload:
    """The scheduling-relevant facts of one pod template."""

    name: str
    kind: str
    namespace: str
    replicas: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    # Required node affinity: OR of terms, each an AND of (key, operator, values).
    affinity_terms: tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...] = ()
    tolerations: tuple[Mapping[str, str], ...] = ()
    requests: Mapping[str, float] = field(default_factory=dict)  # cpu in cores, memory in GiB, devices as counts

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name} ({self.kind})"


def parse_quantity(value: str | int | float, *, memory: bool = False) -> float:
    """Return a Kubernetes quantity as cores (CPU), GiB (memory) or a plain count."""
    if isinstance(value, int | float):
        return float(value) / (2**30 if memory else 1)
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, unit = float(match.group(1)), match.group(2)
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    decimal = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "": 1.0}
    factor = binary.get(unit) or decimal.get(unit)
    if factor is None:
        raise ValueError(f"{value!r}: unknown unit {unit!r}")
    return number * factor / (2**30 if memory else 1)


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, float]:
    """Return a pod's effective requests: containers summed, then the max with any init container."""

    def of(container: Mapping[str, Any]) -> dict[str, float]:
        resources = container.get("resources", {})
        # A limit without a request is also the request (Kubernetes defaults it so).
        asked = {**resources.get("limits", {}), **resources.get("requests", {})}
        return {k: parse_quantity(v, memory=k == "memory") for k, v in asked.items()}

    total: dict[str, float] = {}
    for container in pod_spec.get("containers", []):
        for key, amount in of(container).items():
            total[key] = total.get(key, 0.0) + amount
    for container in pod_spec.get("initContainers", []):
        for key, amount in of(container).items():
            total[key] = max(total.get(key, 0.0), amount)
    return total


def _pod_templates(obj: Mapping[str, Any]) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    """Yield (part name, replicas, pod spec) for each pod template an object defines."""
    spec = obj.get("spec", {})
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        yield "", int(spec.get("replicas", 1)), spec["template"]["spec"]
    elif kind == "DaemonSet":
        return  # runs where its tolerations allow; no pool has to be found for it
    elif kind == "Job":
        yield "", int(spec.get("parallelism", 1)), spec["template"]["spec"]
    elif kind == "CronJob":
        job = spec["jobTemplate"]["spec"]
        yield "", int(job.get("parallelism", 1)), job["template"]["spec"]
    elif kind in ("PyTorchJob", "TFJob", "MPIJob"):
        replica_specs: Mapping[str, Any] = next((v for k, v in spec.items() if k.endswith("ReplicaSpecs")), {})
        for role, replica in replica_specs.items():
            yield role, int(replica.get("replicas", 1)), replica["template"]["spec"]
    elif kind in ("RayCluster", "RayJob", "RayService"):
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        yield "head", 1, cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield group.get("groupName", "worker"), int(group.get("replicas", 1)), group["template"]["spec"]
    elif kind in ("ScaledJob",):
        yield "", 1, spec["jobTargetRef"]["template"]["spec"]


def workloads_from_objects(objects: Iterable[Mapping[str, Any]]) -> list[Workload]:
    """Extract the workloads (pod templates) of a set of Kubernetes objects."""
    found = []
    for obj in objects:
        for part, replicas, pod in _pod_templates(obj):
            meta = obj.get("metadata", {})
            affinity = pod.get("affinity", {}).get("nodeAffinity", {})
            required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
            terms = tuple(
                tuple((e["key"], e["operator"], tuple(e.get("values", ()))) for e in term.get("matchExpressions", []))
                for term in required.get("nodeSelectorTerms", [])
            )
            name = meta.get("name", "?") + (f"/{part}" if part else "")
            found.append(
                Workload(
                    name=name,
                    kind=str(obj.get("kind")),
                    namespace=meta.get("namespace", "default"),
                    replicas=replicas,
                    node_selector=dict(pod.get("nodeSelector", {})),
                    affinity_terms=terms,
                    tolerations=tuple(pod.get("tolerations", ())),
                    requests=pod_requests(pod),
                )
            )
    return found


def _pool_label_values(pool: NodePoolConfig) -> dict[str, set[str]]:
    """Return every label value a node of the pool may carry."""
    values = {k: {v} for k, v in node_labels(pool).items()}
    if pool.provisioner == "karpenter":
        values[WORKLOAD_TYPE_LABEL] = set(pool.workload_types)
    values["kubernetes.io/os"] = {"linux"}
    values["kubernetes.io/arch"] = {"amd64"}
    values["node.kubernetes.io/instance-type"] = set(pool.instance_types)
    values["karpenter.sh/capacity-type"] = set(pool.capacity_types)
    return values


def _label_problems(workload: Workload, labels: Mapping[str, set[str]]) -> list[str]:
    problems = [
        f"no node label {key}={value}"
        for key, value in workload.node_selector.items()
        if value not in labels.get(key, set())
    ]
    if workload.affinity_terms:

        def term_ok(term: tuple[tuple[str, str, tuple[str, ...]], ...]) -> bool:
            for key, op, values in term:
                have = labels.get(key, set())
                if op == "In" and not have & set(values):
                    return False
                if op == "NotIn" and have and have <= set(values):
                    return False
                if op == "Exists" and not have:
                    return False
                if op == "DoesNotExist" and have:
                    return False
            return True

        if not any(term_ok(t) for t in workload.affinity_terms):
            problems.append("required node affinity matches no node label")
    return problems


def _tolerates(workload: Workload, key: str, value: str, effect: str) -> bool:
    for tol in workload.tolerations:
        if tol.get("effect") not in (None, "", effect):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", key):
            return True
        if tol.get("key") == key and tol.get("value", "") == value:
            return True
    return False


def _capacity_problems(
    workload: Workload, pool: NodePoolConfig, mig_layouts: Mapping[str, Mapping[str, int]]
) -> list[str]:
    largest = max((INSTANCE_TYPES[t] for t in pool.instance_types), key=lambda t: (t.vcpu, t.memory_gib))
    problems = []
    cpu, memory = workload.requests.get("cpu", 0.0), workload.requests.get("memory", 0.0)
    if cpu > largest.vcpu * ALLOCATABLE_FRACTION:
        problems.append(
            f"asks {cpu:g} CPU, the largest node ({largest.name}) offers about {largest.vcpu * ALLOCATABLE_FRACTION:g}"
        )
    if memory > largest.memory_gib * ALLOCATABLE_FRACTION:
        problems.append(
            f"asks {memory:g}Gi memory, the largest node ({largest.name}) offers about "
            f"{largest.memory_gib * ALLOCATABLE_FRACTION:g}Gi"
        )
    gpus = workload.requests.get(GPU, 0.0)
    mig_asked = {k.removeprefix(MIG_PREFIX): v for k, v in workload.requests.items() if k.startswith(MIG_PREFIX)}
    sharing = pool.gpu_sharing
    if gpus:
        if isinstance(sharing, Mig):
            problems.append(f"asks {gpus:g} {GPU}, but the pool's GPUs are partitioned by MIG ({sharing.layout})")
        elif not gpus_per_node(pool):
            problems.append(f"asks {gpus:g} {GPU}, but {', '.join(pool.instance_types)} have no GPU")
        elif isinstance(sharing, TimeSlicing) and gpus > 1:
            problems.append(
                f"asks {gpus:g} {GPU}; time-sliced GPUs fail requests for more than one (failRequestsGreaterThanOne)"
            )
        elif gpus > gpus_per_node(pool):
            problems.append(f"asks {gpus:g} {GPU}, a node has {gpus_per_node(pool)}")
    for profile, count in mig_asked.items():
        if not isinstance(sharing, Mig):
            problems.append(f"asks {MIG_PREFIX}{profile}, but the pool does not partition its GPUs with MIG")
            continue
        per_node = mig_layouts.get(sharing.layout, {}).get(profile, 0) * gpus_per_node(pool)
        if count > per_node:
            problems.append(
                f"asks {count:g} {MIG_PREFIX}{profile}; a node of layout {sharing.layout} offers {per_node}"
            )
    return problems


def pool_problems(workload: Workload, pool: NodePoolConfig, mig_layouts: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Return why ``workload`` cannot run on ``pool`` (empty when it can)."""
    problems = _label_problems(workload, _pool_label_values(pool))
    for taint in pool.taints:
        if taint.effect != "PreferNoSchedule" and not _tolerates(workload, taint.key, taint.value, taint.effect):
            problems.append(f"does not tolerate taint {taint.key}={taint.value}:{taint.effect}")
    return problems + _capacity_problems(workload, pool, mig_layouts)


def quota_problems(workload: Workload, quota: NamespaceQuota | None) -> list[str]:
    """Return why the namespace quota would refuse all replicas of ``workload`` (empty when it admits them)."""
    if quota is None:
        return []
    n = workload.replicas
    problems = []
    cpu = workload.requests.get("cpu", 0.0) * n
    memory = workload.requests.get("memory", 0.0) * n
    gpus = sum(v for k, v in workload.requests.items() if k == GPU or k.startswith(MIG_PREFIX)) * n
    if cpu > quota.cpu:
        problems.append(f"{n} replica(s) ask {cpu:g} CPU, the {workload.namespace} quota is {quota.cpu}")
    if memory > quota.memory_gib:
        problems.append(f"{n} replica(s) ask {memory:g}Gi, the {workload.namespace} quota is {quota.memory_gib}Gi")
    if gpus > quota.gpus:
        problems.append(
            f"{n} replica(s) ask {gpus:g} GPU(s) or MIG slices, the {workload.namespace} quota is {quota.gpus}"
        )
    return problems


def check_scheduling(
    workloads: Sequence[Workload],
    pools: Sequence[NodePoolConfig],
    quotas: Mapping[str, NamespaceQuota],
    mig_layouts: Mapping[str, Mapping[str, int]],
) -> None:
    """Fail with every workload that fits no pool or its namespace quota, and why each pool refused it."""
    failures = []
    for workload in workloads:
        rejections = {pool.name: pool_problems(workload, pool, mig_layouts) for pool in pools}
        lines = []
        if all(rejections.values()):
            lines.append(f"workload {workload.label} fits no node pool:")
            lines += [f"  - {name}: {'; '.join(why)}" for name, why in rejections.items()]
        quota = quota_problems(workload, quotas.get(workload.namespace))
        if quota:
            lines.append(f"workload {workload.label} exceeds its namespace quota: {'; '.join(quota)}")
        if lines:
            failures.append("\n".join(lines))
    if failures:
        raise SchedulingError("\n".join(failures))
