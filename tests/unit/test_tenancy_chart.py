"""TenancyChart: namespaces, Pod Security labels, priorities, quotas, limit ranges and network policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cdk8s
import pytest

from config.loader import load_stage
from config.model import NamespaceQuota
from k8s_charts.tenancy import (
    LINKERD_PROXY_INBOUND_PORT,
    MESHED_NAMESPACES,
    NODE_EXPORTER_NAMESPACE,
    PLATFORM_NAMESPACES,
    NetworkAllow,
    Peer,
    PolicyPort,
    TenancyChart,
    baseline_allows,
    mig_resources_per_gpu,
    network_policy,
    pdb,
    quota_hard,
)
from tests.support.k8s_reference import require_reference_dir, validate_object

REPO = Path(__file__).resolve().parents[2]
PROD = load_stage(REPO / "config" / "prod.yaml")
KUBERNETES_VERSION = PROD.cluster.kubernetes_version
MIG = mig_resources_per_gpu(PROD.cluster.mig_layouts)
CHART_ARGS: dict[str, Any] = {
    "kubernetes_version": KUBERNETES_VERSION,
    "priority_classes": PROD.tenancy.priority_classes,
    "quotas": PROD.tenancy.quotas,
    "mig_resources": MIG,
    "node_cidrs": PROD.network.node_subnets,
}
Manifests = list[dict[str, Any]]
MESHED = ["inference", "agentic", "mlops"]
UNMESHED = ["training", "monitoring", "research", "development"]
MESH_ALLOWS = {"allow-linkerd-control-plane", "allow-mesh-egress", "allow-mesh-ingress"}


def synth(**overrides: Any) -> Manifests:
    chart = TenancyChart(cdk8s.Testing.app(), "tenancy", **{**CHART_ARGS, **overrides})
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return synth()


def find(manifests: Manifests, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"]["name"] == name and m["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def of_kind(manifests: Manifests, kind: str) -> Manifests:
    return [m for m in manifests if m["kind"] == kind]


# --- namespaces and Pod Security ---------------------------------------------------------------------------


def test_platform_namespaces() -> None:
    assert set(PLATFORM_NAMESPACES) == {
        "training", "inference", "agentic", "mlops", "monitoring", "research", "development",
    }  # fmt: skip


def test_namespaces_emitted(manifests: Manifests) -> None:
    names = {m["metadata"]["name"] for m in of_kind(manifests, "Namespace")}
    assert names == {*PLATFORM_NAMESPACES, NODE_EXPORTER_NAMESPACE}


def test_only_the_service_namespaces_are_meshed() -> None:
    assert set(MESHED) == MESHED_NAMESPACES
    assert set(MESHED) | set(UNMESHED) == set(PLATFORM_NAMESPACES)


def pod_security(manifests: Manifests, namespace: str) -> dict[str, str]:
    labels: dict[str, str] = find(manifests, "Namespace", namespace)["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("namespace", UNMESHED)
def test_unmeshed_namespaces_enforce_restricted(manifests: Manifests, namespace: str) -> None:
    assert PLATFORM_NAMESPACES[namespace] == "restricted"
    assert pod_security(manifests, namespace) == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "v1.35",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "v1.35",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "v1.35",
    }


@pytest.mark.parametrize("namespace", MESHED)
def test_meshed_namespaces_enforce_privileged_but_audit_and_warn_restricted(
    manifests: Manifests, namespace: str
) -> None:
    # linkerd-init needs NET_ADMIN and NET_RAW (no linkerd2-cni); every other deviation is still reported.
    assert PLATFORM_NAMESPACES[namespace] == "privileged"
    assert pod_security(manifests, namespace) == {
        "pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/enforce-version": "v1.35",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "v1.35",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "v1.35",
    }


@pytest.mark.parametrize("namespace", MESHED)
def test_meshed_namespaces_carry_the_linkerd_annotations(manifests: Manifests, namespace: str) -> None:
    annotations = find(manifests, "Namespace", namespace)["metadata"]["annotations"]
    assert annotations == {
        "linkerd.io/inject": "enabled",
        "config.linkerd.io/default-inbound-policy": "all-authenticated",
    }


def test_training_opts_out_of_the_mesh_explicitly(manifests: Manifests) -> None:
    annotations = find(manifests, "Namespace", "training")["metadata"]["annotations"]
    assert annotations == {"linkerd.io/inject": "disabled"}


@pytest.mark.parametrize("namespace", ["monitoring", "research", "development"])
def test_other_unmeshed_namespaces_have_no_linkerd_annotations(manifests: Manifests, namespace: str) -> None:
    assert "annotations" not in find(manifests, "Namespace", namespace)["metadata"]


def test_node_exporter_namespace_is_privileged_and_unmeshed(manifests: Manifests) -> None:
    metadata = find(manifests, "Namespace", NODE_EXPORTER_NAMESPACE)["metadata"]
    assert metadata["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    # Still audited and warned against restricted, so the exception stays visible.
    assert metadata["labels"]["pod-security.kubernetes.io/audit"] == "restricted"
    assert metadata["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    assert "annotations" not in metadata
    assert not [m for m in manifests if m["metadata"].get("namespace") == NODE_EXPORTER_NAMESPACE]


# --- priority classes --------------------------------------------------------------------------------------


def test_priority_class_values(manifests: Manifests) -> None:
    values = {m["metadata"]["name"]: m["value"] for m in of_kind(manifests, "PriorityClass")}
    assert values == {
        "production-inference": 1000,
        "critical-agents": 900,
        "training": 500,
        "research": 100,
        "development": 50,
    }


def test_priority_classes_are_not_global_default_and_described(manifests: Manifests) -> None:
    for priority_class in of_kind(manifests, "PriorityClass"):
        assert priority_class["globalDefault"] is False
        assert priority_class["description"]


def test_only_development_never_preempts(manifests: Manifests) -> None:
    policies = {m["metadata"]["name"]: m["preemptionPolicy"] for m in of_kind(manifests, "PriorityClass")}
    assert policies.pop("development") == "Never"
    assert set(policies.values()) == {"PreemptLowerPriority"}


# --- quotas ------------------------------------------------------------------------------------------------


def test_mig_resources_per_gpu_of_the_prod_layout() -> None:
    assert MIG == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}


def test_mig_resources_per_gpu_takes_the_largest_count_across_layouts() -> None:
    layouts = {"a": {"1g.10gb": 7}, "b": {"1g.10gb": 2, "3g.40gb": 1}}
    assert mig_resources_per_gpu(layouts) == {"1g.10gb": 7, "3g.40gb": 1}


def test_training_quota(manifests: Manifests) -> None:
    hard = find(manifests, "ResourceQuota", "tenant-quota", "training")["spec"]["hard"]
    assert hard == {
        "requests.cpu": "160",
        "requests.memory": "640Gi",
        "limits.memory": "640Gi",
        "requests.nvidia.com/gpu": "20",
        "requests.nvidia.com/mig-1g.10gb": "40",
        "requests.nvidia.com/mig-2g.20gb": "20",
        "requests.nvidia.com/mig-3g.40gb": "20",
    }


def test_inference_quota(manifests: Manifests) -> None:
    hard = find(manifests, "ResourceQuota", "tenant-quota", "inference")["spec"]["hard"]
    assert hard == {
        "requests.cpu": "80",
        "requests.memory": "800Gi",
        "limits.memory": "800Gi",
        "requests.nvidia.com/gpu": "10",
        "requests.nvidia.com/mig-1g.10gb": "20",
        "requests.nvidia.com/mig-2g.20gb": "10",
        "requests.nvidia.com/mig-3g.40gb": "10",
    }


def test_agentic_quota(manifests: Manifests) -> None:
    hard = find(manifests, "ResourceQuota", "tenant-quota", "agentic")["spec"]["hard"]
    assert hard == {
        "requests.cpu": "64",
        "requests.memory": "320Gi",
        "limits.memory": "320Gi",
        "requests.nvidia.com/gpu": "8",
        "requests.nvidia.com/mig-1g.10gb": "16",
        "requests.nvidia.com/mig-2g.20gb": "8",
        "requests.nvidia.com/mig-3g.40gb": "8",
    }


def test_mlops_quota_takes_no_gpus(manifests: Manifests) -> None:
    hard = find(manifests, "ResourceQuota", "tenant-quota", "mlops")["spec"]["hard"]
    assert hard == {
        "requests.cpu": "32",
        "requests.memory": "64Gi",
        "limits.memory": "64Gi",
        "requests.nvidia.com/gpu": "0",
        "requests.nvidia.com/mig-1g.10gb": "0",
        "requests.nvidia.com/mig-2g.20gb": "0",
        "requests.nvidia.com/mig-3g.40gb": "0",
    }


def test_every_gpu_quota_covers_every_mig_profile(manifests: Manifests) -> None:
    for quota in of_kind(manifests, "ResourceQuota"):
        hard = quota["spec"]["hard"]
        gpus = int(hard["requests.nvidia.com/gpu"])
        for profile, per_gpu in MIG.items():
            assert hard[f"requests.nvidia.com/mig-{profile}"] == str(gpus * per_gpu)


def test_namespaces_without_a_quota_entry_get_none(manifests: Manifests) -> None:
    quota_namespaces = {m["metadata"]["namespace"] for m in of_kind(manifests, "ResourceQuota")}
    assert quota_namespaces == {"training", "inference", "agentic", "mlops"}


def test_quota_hard_without_mig() -> None:
    assert quota_hard(NamespaceQuota(gpus=2, cpu=4, memory_gib=16), {}) == {
        "requests.cpu": "4",
        "requests.memory": "16Gi",
        "limits.memory": "16Gi",
        "requests.nvidia.com/gpu": "2",
    }


def test_fails_when_a_mig_profile_name_is_malformed() -> None:
    with pytest.raises(ValueError, match=r"mig profile 'mig-1g\.10gb' is not a profile name"):
        quota_hard(NamespaceQuota(gpus=1, cpu=1, memory_gib=1), {"mig-1g.10gb": 2})


def test_fails_when_a_quota_names_an_unknown_namespace() -> None:
    quotas = {**PROD.tenancy.quotas, "payments": NamespaceQuota(cpu=1, memory_gib=1)}
    with pytest.raises(ValueError, match="quotas: payments is not a platform namespace"):
        synth(quotas=quotas)


# --- limit ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", list(PLATFORM_NAMESPACES))
def test_every_namespace_has_container_defaults(manifests: Manifests, namespace: str) -> None:
    [limits] = find(manifests, "LimitRange", "container-defaults", namespace)["spec"]["limits"]
    assert limits["type"] == "Container"
    assert limits["defaultRequest"] == {"cpu": "250m", "memory": "512Mi"}
    assert limits["default"] == {"memory": "1Gi"}
    # No CPU limit: a CPU max would become every container's default CPU limit.
    assert set(limits["max"]) == {"memory"}


def test_container_max_memory_is_capped_by_the_quota(manifests: Manifests) -> None:
    def max_memory(namespace: str) -> str:
        spec = find(manifests, "LimitRange", "container-defaults", namespace)["spec"]
        value: str = spec["limits"][0]["max"]["memory"]
        return value

    assert max_memory("mlops") == "64Gi"
    assert max_memory("training") == "640Gi"
    assert max_memory("research") == "1024Gi"


def test_fails_when_the_default_memory_request_exceeds_the_default_limit() -> None:
    with pytest.raises(ValueError, match="default_memory_request_mib"):
        synth(default_memory_request_mib=2048, default_memory_limit_mib=1024)


# --- network policies --------------------------------------------------------------------------------------


def policies(manifests: Manifests, namespace: str) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m for m in of_kind(manifests, "NetworkPolicy") if m["metadata"]["namespace"] == namespace
    }


@pytest.mark.parametrize("namespace", list(PLATFORM_NAMESPACES))
def test_every_namespace_denies_by_default(manifests: Manifests, namespace: str) -> None:
    deny = policies(manifests, namespace)["default-deny"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("namespace", list(PLATFORM_NAMESPACES))
def test_every_namespace_allows_dns(manifests: Manifests, namespace: str) -> None:
    spec = policies(manifests, namespace)["allow-dns"]["spec"]
    assert spec["podSelector"] == {}
    assert spec["policyTypes"] == ["Egress"]
    assert spec["egress"] == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]


@pytest.mark.parametrize("namespace", list(PLATFORM_NAMESPACES))
def test_every_namespace_has_the_baseline_allows(manifests: Manifests, namespace: str) -> None:
    assert {
        "allow-dns",
        "allow-metrics-scraping",
        "allow-pod-identity",
        "allow-https-egress",
    } <= set(policies(manifests, namespace))


@pytest.mark.parametrize("namespace", MESHED)
def test_meshed_namespaces_have_the_mesh_allows(manifests: Manifests, namespace: str) -> None:
    assert set(policies(manifests, namespace)) >= MESH_ALLOWS


@pytest.mark.parametrize("namespace", UNMESHED)
def test_unmeshed_namespaces_have_no_mesh_allows(manifests: Manifests, namespace: str) -> None:
    assert not set(policies(manifests, namespace)) & MESH_ALLOWS


def test_baseline_allows_follow_the_meshed_namespaces_given() -> None:
    names = {allow.name for allow in baseline_allows("research", meshed_namespaces=["research"])}
    assert {"linkerd-control-plane", "mesh-egress", "mesh-ingress"} <= names
    names = {allow.name for allow in baseline_allows("inference", meshed_namespaces=["agentic"])}
    assert not {"linkerd-control-plane", "mesh-egress", "mesh-ingress"} & names


def test_linkerd_control_plane_ports(manifests: Manifests) -> None:
    [rule] = policies(manifests, "inference")["allow-linkerd-control-plane"]["spec"]["egress"]
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "linkerd"}}}]
    assert [p["port"] for p in rule["ports"]] == [8080, 8086, 8090]


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_mesh_traffic_is_the_proxy_inbound_port_between_meshed_namespaces(manifests: Manifests, direction: str) -> None:
    [rule] = policies(manifests, "agentic")[f"allow-mesh-{direction}"]["spec"][direction]
    [peer] = rule["from" if direction == "ingress" else "to"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == MESHED
    assert rule["ports"] == [{"protocol": "TCP", "port": LINKERD_PROXY_INBOUND_PORT}]


def test_monitoring_may_scrape_proxies_and_metrics_ports_of_meshed_namespaces(manifests: Manifests) -> None:
    [rule] = policies(manifests, "mlops")["allow-metrics-scraping"]["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert [p["port"] for p in rule["ports"]] == [4191, "metrics"]


def test_unmeshed_namespaces_have_no_proxy_port_to_scrape(manifests: Manifests) -> None:
    [rule] = policies(manifests, "research")["allow-metrics-scraping"]["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["metrics"]


def test_unmeshed_prometheus_scrapes_without_the_mesh_port(manifests: Manifests) -> None:
    [rule] = policies(manifests, "monitoring")["allow-scrape-pods"]["spec"]["egress"]
    assert rule["to"] == [{"namespaceSelector": {}}]
    assert [p["port"] for p in rule["ports"]] == [4191, "metrics"]


def test_egress_to_aws_apis_and_pod_identity(manifests: Manifests) -> None:
    namespace = policies(manifests, "training")
    [https] = namespace["allow-https-egress"]["spec"]["egress"]
    assert https == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    [identity] = namespace["allow-pod-identity"]["spec"]["egress"]
    assert identity["to"] == [{"ipBlock": {"cidr": "169.254.170.23/32"}}]
    assert identity["ports"] == [{"protocol": "TCP", "port": 80}]


def test_training_workers_reach_each_other_on_any_port(manifests: Manifests) -> None:
    namespace = policies(manifests, "training")
    assert namespace["allow-job-peers-ingress"]["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    assert namespace["allow-job-peers-egress"]["spec"]["egress"] == [{"to": [{"podSelector": {}}]}]
    assert "allow-job-peers-ingress" not in policies(manifests, "inference")


def test_monitoring_scrapes_nodes_in_the_node_subnets(manifests: Manifests) -> None:
    [rule] = policies(manifests, "monitoring")["allow-scrape-nodes"]["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": cidr}} for cidr in PROD.network.node_subnets]
    assert [p["port"] for p in rule["ports"]] == [9100, 10250]
    assert "allow-scrape-nodes" not in policies(synth(node_cidrs=()), "monitoring")


def test_extra_allows_become_policies() -> None:
    alb = NetworkAllow(
        name="alb",
        direction="Ingress",
        peers=(Peer(cidr="10.0.1.0/24"),),
        ports=(PolicyPort(8080),),
        pod_labels={"app": "gateway"},
        reason="the ALB targets gateway pods by IP",
    )
    spec = policies(synth(extra_allows={"inference": [alb]}), "inference")["allow-alb"]["spec"]
    assert spec == {
        "podSelector": {"matchLabels": {"app": "gateway"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.1.0/24"}}], "ports": [{"protocol": "TCP", "port": 8080}]}],
    }


def test_fails_when_an_extra_allow_reuses_a_baseline_name() -> None:
    dns = NetworkAllow(name="dns", direction="Egress", peers=(Peer(cidr="10.0.0.2/32"),), reason="VPC resolver")
    with pytest.raises(ValueError, match="namespace mlops: two allows are named dns"):
        synth(extra_allows={"mlops": [dns]})


def test_fails_when_an_allow_has_no_peers() -> None:
    allow = NetworkAllow(name="anyone", direction="Ingress", peers=(), reason="typo")
    with pytest.raises(ValueError, match="allow anyone has no peers"):
        network_policy(cdk8s.Testing.chart(), "anyone", namespace="mlops", allow=allow)


# --- disruption budgets ------------------------------------------------------------------------------------


def test_pdb_is_none_for_a_single_replica() -> None:
    chart = cdk8s.Testing.chart()
    assert pdb(chart, "api", name="api", namespace="mlops", match_labels={"app": "api"}, replicas=1) is None
    assert cdk8s.Testing.synth(chart) == []


def test_pdb_for_three_replicas() -> None:
    chart = cdk8s.Testing.chart()
    assert pdb(chart, "api", name="api", namespace="mlops", match_labels={"app": "api"}, replicas=3) is not None
    [budget] = cdk8s.Testing.synth(chart)
    assert budget["apiVersion"] == "policy/v1"
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["metadata"] == {"name": "api", "namespace": "mlops"}
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app": "api"}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert validate_object(budget, KUBERNETES_VERSION) == []


def test_fails_when_a_pdb_selects_every_pod() -> None:
    with pytest.raises(ValueError, match="match_labels is empty"):
        pdb(cdk8s.Testing.chart(), "api", name="api", namespace="mlops", match_labels={}, replicas=3)


# --- schemas -----------------------------------------------------------------------------------------------


def test_every_object_passes_the_kubernetes_schema(manifests: Manifests) -> None:
    require_reference_dir()
    errors = [error for obj in manifests for error in validate_object(obj, KUBERNETES_VERSION)]
    assert errors == []


def test_schema_check_catches_a_bad_object(manifests: Manifests) -> None:
    quota = dict(find(manifests, "ResourceQuota", "tenant-quota", "training"))
    quota["spec"] = {"hrad": quota["spec"]["hard"]}
    assert validate_object(quota, KUBERNETES_VERSION)
