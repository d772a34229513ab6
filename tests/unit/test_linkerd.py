"""Linkerd and cert-manager: Helm values, the mesh identity chart and its trust-roots job, the mesh policy."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cdk8s
import pytest

from k8s_charts.mesh_identity import (
    BUSYBOX_IMAGE,
    CONTROL_PLANE_DEPLOYMENTS,
    IDENTITY_ISSUER,
    KUBECTL_IMAGE,
    LINKERD_NAMESPACE,
    NOT_AFTER_AWK,
    SYNC_NAME,
    SYNC_SCRIPT,
    TRUST_ANCHOR,
    TRUST_ROOTS_CONFIG_MAP,
    WEBHOOK_CA,
    WEBHOOK_CERTIFICATES,
    MeshIdentityChart,
    identity_name,
)
from k8s_charts.mesh_policy import MeshPolicyChart, ServerAccess, platform_mesh_rules
from platform_constructs import cert_manager, linkerd
from platform_constructs.cert_manager import cert_manager_values
from platform_constructs.linkerd import (
    TRAINING_SKIP_PORTS,
    linkerd_control_plane_values,
    linkerd_crds_values,
    linkerd_viz_values,
    training_pod_annotations,
)
from tests.support.k8s_reference import (
    is_builtin,
    pinned_chart_versions,
    require_reference_dir,
    validate_custom_resource,
    validate_helm_values,
    validate_object,
)

KUBERNETES_VERSION = "1.35"
SYSTEM = {"ml-platform/pool": "system"}
SCRAPERS = ("10.0.64.0/18", "10.0.128.0/18")
ALB_SUBNETS = ("10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24")
LINKERD_VERSION = "2026.6.3"
CERT_MANAGER_VERSION = "v1.21.1"
# values-ha.yaml's top-level keys (and proxy.resources): only a highly available control plane sets them.
HA_KEYS = frozenset(
    {
        "controllerReplicas",
        "enablePodAntiAffinity",
        "enablePodDisruptionBudget",
        "controller",
        "deploymentStrategy",
        "webhookFailurePolicy",
    }
)
# Policies at least as strict as all-authenticated (no unauthenticated client is admitted by default).
AUTHENTICATED_POLICIES = frozenset({"all-authenticated", "cluster-authenticated", "deny"})


def synth(chart: cdk8s.Chart) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = cdk8s.Testing.synth(chart)
    return manifests


def identity_manifests(**kwargs: Any) -> list[dict[str, Any]]:
    return synth(MeshIdentityChart(cdk8s.Testing.app(), "mesh-identity", **{"node_selector": SYSTEM, **kwargs}))


def policy_manifests(rules: list[ServerAccess] | tuple[ServerAccess, ...]) -> list[dict[str, Any]]:
    return synth(MeshPolicyChart(cdk8s.Testing.app(), "mesh-policy", rules=rules))


def find(manifests: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and m["metadata"]["name"] == name
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


@pytest.fixture(scope="module")
def identity() -> list[dict[str, Any]]:
    return identity_manifests()


@pytest.fixture(scope="module")
def policy() -> list[dict[str, Any]]:
    return policy_manifests(platform_mesh_rules(scraper_networks=SCRAPERS))


def all_values() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every values tree the add-ons emit, by case: (chart, version, values)."""
    cases: dict[str, tuple[str, str, dict[str, Any]]] = {
        "cert-manager": ("cert-manager", CERT_MANAGER_VERSION, cert_manager_values(node_selector=SYSTEM)),
        "cert-manager-single-monitored": (
            "cert-manager",
            CERT_MANAGER_VERSION,
            cert_manager_values(
                node_selector=SYSTEM,
                replicas=1,
                service_monitor=True,
                service_monitor_labels={"release": "m"},
            ),
        ),
        "linkerd-crds": ("linkerd-crds", LINKERD_VERSION, linkerd_crds_values()),
    }
    for ha in (False, True):
        suffix = "ha" if ha else "single"
        cases[f"control-plane-{suffix}"] = (
            "linkerd-control-plane",
            LINKERD_VERSION,
            linkerd_control_plane_values(ha, node_selector=SYSTEM),
        )
        cases[f"viz-{suffix}"] = (
            "linkerd-viz",
            LINKERD_VERSION,
            linkerd_viz_values(ha, node_selector=SYSTEM),
        )
    cases["control-plane-pod-monitor"] = (
        "linkerd-control-plane",
        LINKERD_VERSION,
        linkerd_control_plane_values(True, node_selector=SYSTEM, pod_monitor=True),
    )
    cases["viz-external-prometheus"] = (
        "linkerd-viz",
        LINKERD_VERSION,
        linkerd_viz_values(True, node_selector=SYSTEM, prometheus_url="http://prometheus.monitoring:9090"),
    )
    return cases


VALUES = all_values()


# -- chart pins and values against the reference -------------------------------------------------------


def test_charts_are_the_pinned_reference_versions() -> None:
    require_reference_dir()
    pins = pinned_chart_versions()
    assert cert_manager.CHART.version == pins["cert-manager"] == CERT_MANAGER_VERSION
    assert cert_manager.CHART.repository == "oci://quay.io/jetstack/charts/cert-manager"
    for ref in (linkerd.CRDS_CHART, linkerd.CONTROL_PLANE_CHART, linkerd.VIZ_CHART):
        assert ref.repository == "https://helm.linkerd.io/edge"
        assert ref.version == pins[ref.chart] == LINKERD_VERSION


@pytest.mark.parametrize("case", sorted(VALUES))
def test_values_pass_the_pinned_chart(case: str) -> None:
    require_reference_dir()
    chart, version, values = VALUES[case]
    assert validate_helm_values(chart, version, values) == []


def test_misspelled_control_plane_key_is_caught() -> None:
    require_reference_dir()
    bad = linkerd_control_plane_values(False, node_selector=SYSTEM)
    bad["proxy"]["defaultInbondPolicy"] = bad["proxy"].pop("defaultInboundPolicy")
    errors = validate_helm_values("linkerd-control-plane", LINKERD_VERSION, bad)
    assert len(errors) == 1
    assert "proxy.defaultInbondPolicy does not exist" in errors[0]
    assert "did you mean proxy.defaultInboundPolicy" in errors[0]


def test_misspelled_cert_manager_key_is_caught() -> None:
    require_reference_dir()
    bad = cert_manager_values(node_selector=SYSTEM)
    bad["crds"]["enable"] = bad["crds"].pop("enabled")
    errors = validate_helm_values("cert-manager", CERT_MANAGER_VERSION, bad)
    assert any("crds.enable does not exist" in e for e in errors), errors


@pytest.mark.parametrize("case", sorted(VALUES))
def test_no_certificate_or_key_in_values(case: str) -> None:
    text = json.dumps(VALUES[case][2])
    assert "-----BEGIN" not in text
    assert "PRIVATE KEY" not in text


# -- cert-manager ----------------------------------------------------------------------------------------


def test_cert_manager_installs_its_crds_on_the_system_pool() -> None:
    values = cert_manager_values(node_selector=SYSTEM)
    assert values["crds"] == {"enabled": True, "keep": True}
    assert values["global"]["nodeSelector"] == SYSTEM


def test_cert_manager_replicas_and_disruption_budgets() -> None:
    values = cert_manager_values(node_selector=SYSTEM, replicas=2)
    for section in (values, values["webhook"], values["cainjector"]):
        assert section["replicaCount"] == 2
        assert section["podDisruptionBudget"] == {"enabled": True}
    single = cert_manager_values(node_selector=SYSTEM, replicas=1)
    for section in (single, single["webhook"], single["cainjector"]):
        assert section["podDisruptionBudget"] == {"enabled": False}


def test_cert_manager_service_monitor_is_opt_in() -> None:
    assert cert_manager_values(node_selector=SYSTEM)["prometheus"]["servicemonitor"] == {"enabled": False}
    labelled = cert_manager_values(node_selector=SYSTEM, service_monitor=True, service_monitor_labels={"a": "b"})
    assert labelled["prometheus"]["servicemonitor"] == {"enabled": True, "labels": {"a": "b"}}


def test_fails_when_cert_manager_node_selector_is_empty() -> None:
    with pytest.raises(ValueError, match="node_selector is empty"):
        cert_manager_values(node_selector={})


def test_fails_when_cert_manager_replicas_is_zero() -> None:
    with pytest.raises(ValueError, match="replicas is 0"):
        cert_manager_values(node_selector=SYSTEM, replicas=0)


# -- linkerd control plane, crds, viz --------------------------------------------------------------------


@pytest.mark.parametrize("ha", [False, True])
def test_control_plane_uses_the_external_identity(ha: bool) -> None:
    values = linkerd_control_plane_values(ha, node_selector=SYSTEM)
    assert values["identity"] == {"externalCA": True, "issuer": {"scheme": "kubernetes.io/tls"}}
    assert "identityTrustAnchorsPEM" not in values


@pytest.mark.parametrize("ha", [False, True])
def test_opaque_ports_include_postgres_and_redis(ha: bool) -> None:
    ports = linkerd_control_plane_values(ha, node_selector=SYSTEM)["proxy"]["opaquePorts"].split(",")
    assert {"5432", "6379"} <= set(ports)
    # The chart's own defaults stay: a values string replaces the list.
    assert {"25", "587", "3306", "4444", "9300", "11211"} <= set(ports)


@pytest.mark.parametrize("ha", [False, True])
def test_default_inbound_policy_admits_only_authenticated_clients(ha: bool) -> None:
    policy = linkerd_control_plane_values(ha, node_selector=SYSTEM)["proxy"]["defaultInboundPolicy"]
    assert policy in AUTHENTICATED_POLICIES


def test_control_plane_meshes_with_the_init_container() -> None:
    values = linkerd_control_plane_values(False, node_selector=SYSTEM)
    assert values["cniEnabled"] is False
    assert values["proxyInit"] == {"iptablesMode": "nft", "runAsRoot": False}
    assert values["proxy"]["nativeSidecar"] is True


def test_control_plane_runs_on_the_system_pool_without_heartbeat() -> None:
    values = linkerd_control_plane_values(False, node_selector=SYSTEM)
    assert values["nodeSelector"] == SYSTEM
    assert values["disableHeartBeat"] is True
    assert values["priorityClassName"] == "system-cluster-critical"


def test_ha_values_only_in_ha_mode() -> None:
    single = linkerd_control_plane_values(False, node_selector=SYSTEM)
    ha = linkerd_control_plane_values(True, node_selector=SYSTEM)
    assert HA_KEYS.isdisjoint(single)
    assert "resources" not in single["proxy"]
    assert set(ha) >= HA_KEYS
    assert ha["controllerReplicas"] == 3
    assert ha["enablePodAntiAffinity"] is True
    assert ha["enablePodDisruptionBudget"] is True
    assert ha["controller"] == {"podDisruptionBudget": {"maxUnavailable": 1}}
    assert ha["deploymentStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert ha["webhookFailurePolicy"] == "Fail"
    assert ha["proxy"]["resources"] == {
        "cpu": {"request": "100m"},
        "memory": {"request": "20Mi", "limit": "250Mi"},
    }


def test_pod_monitors_are_opt_in() -> None:
    assert linkerd_control_plane_values(False, node_selector=SYSTEM)["podMonitor"] == {"enabled": False}
    assert linkerd_control_plane_values(False, node_selector=SYSTEM, pod_monitor=True)["podMonitor"] == {
        "enabled": True
    }


def test_crds_leave_the_gateway_api_alone() -> None:
    assert linkerd_crds_values() == {"installGatewayAPI": False}


def test_viz_runs_its_own_prometheus_by_default() -> None:
    values = linkerd_viz_values(False, node_selector=SYSTEM)
    assert values["prometheus"]["enabled"] is True
    assert values["prometheus"]["nodeSelector"] == SYSTEM
    assert "prometheusUrl" not in values
    for section in (values, values["metricsAPI"], values["namespaceMetadata"]):
        assert section["nodeSelector"] == SYSTEM


def test_viz_uses_an_external_prometheus_when_given() -> None:
    values = linkerd_viz_values(False, node_selector=SYSTEM, prometheus_url="http://prometheus:9090")
    assert values["prometheus"] == {"enabled": False}
    assert values["prometheusUrl"] == "http://prometheus:9090"


def test_viz_ha_only_in_ha_mode() -> None:
    single = linkerd_viz_values(False, node_selector=SYSTEM)
    ha = linkerd_viz_values(True, node_selector=SYSTEM)
    for key in ("enablePodAntiAffinity", "enablePodDisruptionBudget", "tap", "tapInjector", "dashboard"):
        assert key not in single
    assert "replicas" not in single["metricsAPI"]
    assert ha["enablePodAntiAffinity"] is True and ha["enablePodDisruptionBudget"] is True
    for component in ("metricsAPI", "tap", "tapInjector", "dashboard"):
        assert ha[component]["replicas"] == 2


def test_fails_when_prometheus_url_is_not_http() -> None:
    with pytest.raises(ValueError, match="must be an http"):
        linkerd_viz_values(False, node_selector=SYSTEM, prometheus_url="prometheus:9090")


@pytest.mark.parametrize("build", [linkerd_control_plane_values, linkerd_viz_values])
def test_fails_when_linkerd_node_selector_is_empty(build: Any) -> None:
    with pytest.raises(ValueError, match="node_selector is empty"):
        build(False, node_selector={})


# -- training pods ---------------------------------------------------------------------------------------


def test_training_pods_skip_collective_ports() -> None:
    annotations = training_pod_annotations()
    assert set(annotations) == {
        "config.linkerd.io/skip-inbound-ports",
        "config.linkerd.io/skip-outbound-ports",
    }
    for value in annotations.values():
        assert value.split(",") == list(TRAINING_SKIP_PORTS)
    assert "29500" in TRAINING_SKIP_PORTS
    low, high = next(p for p in TRAINING_SKIP_PORTS if "-" in p).split("-")
    # The kernel's ephemeral range, where NCCL and Gloo listen; Linkerd's own proxy ports stay proxied.
    assert (int(low), int(high)) == (32768, 60999)
    assert not any(int(low) <= port <= int(high) for port in (4140, 4143, 4190, 4191))


# -- mesh identity chart ---------------------------------------------------------------------------------


def test_identity_objects(identity: list[dict[str, Any]]) -> None:
    assert sorted((m["kind"], m["metadata"]["name"]) for m in identity) == sorted(
        [
            ("Namespace", LINKERD_NAMESPACE),
            ("Issuer", "linkerd-self-signed"),
            ("Certificate", TRUST_ANCHOR),
            ("Issuer", TRUST_ANCHOR),
            ("Certificate", IDENTITY_ISSUER),
            ("Certificate", WEBHOOK_CA),
            ("Issuer", WEBHOOK_CA),
            *(("Certificate", name) for name in WEBHOOK_CERTIFICATES.values()),
            ("ServiceAccount", SYNC_NAME),
            ("Role", SYNC_NAME),
            ("RoleBinding", SYNC_NAME),
            ("ConfigMap", SYNC_NAME),
            ("Job", find_job(identity)["metadata"]["name"]),
            ("CronJob", SYNC_NAME),
        ]
    )
    assert identity[0]["kind"] == "Namespace", "the namespace must be applied first"
    for obj in identity[1:]:
        assert obj["metadata"]["namespace"] == LINKERD_NAMESPACE


def find_job(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = of_kind(manifests, "Job")
    assert len(jobs) == 1
    return jobs[0]


def test_identity_objects_validate(identity: list[dict[str, Any]]) -> None:
    require_reference_dir()
    for obj in identity:
        assert validate_object(obj, KUBERNETES_VERSION) == [], obj["kind"]
    custom = [obj for obj in identity if not is_builtin(obj["apiVersion"])]
    assert {obj["kind"] for obj in custom} == {"Issuer", "Certificate"}
    for obj in custom:
        assert validate_custom_resource(obj) == []


def test_no_certificate_or_key_in_manifests(identity: list[dict[str, Any]], policy: list[dict[str, Any]]) -> None:
    text = json.dumps(identity + policy)
    assert "-----BEGIN" not in text
    assert "PRIVATE KEY" not in text
    assert not of_kind(identity, "Secret")


def test_issuers_are_namespaced(identity: list[dict[str, Any]]) -> None:
    # A ClusterIssuer signing from the trust anchor would let any namespace mint mesh identities.
    assert not of_kind(identity, "ClusterIssuer")
    assert find(identity, "Issuer", "linkerd-self-signed")["spec"] == {"selfSigned": {}}


def test_trust_anchor_is_a_renewing_self_signed_root(identity: list[dict[str, Any]]) -> None:
    spec = find(identity, "Certificate", TRUST_ANCHOR)["spec"]
    assert spec["isCA"] is True
    assert spec["secretName"] == TRUST_ANCHOR
    assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"}
    assert (spec["duration"], spec["renewBefore"]) == ("8760h", "720h")
    assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "linkerd-self-signed"}
    assert spec["usages"] == ["cert sign", "crl sign"]


def test_identity_issuer_is_signed_by_the_trust_anchor(identity: list[dict[str, Any]]) -> None:
    spec = find(identity, "Certificate", IDENTITY_ISSUER, LINKERD_NAMESPACE)["spec"]
    assert spec["secretName"] == IDENTITY_ISSUER
    assert spec["isCA"] is True
    assert spec["commonName"] == "identity.linkerd.cluster.local"
    assert (spec["duration"], spec["renewBefore"]) == ("48h", "25h")
    assert set(spec["usages"]) == {"cert sign", "crl sign", "server auth", "client auth"}
    assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    # Its issuer is the CA Issuer that signs with the trust anchor Certificate's Secret.
    ref = spec["issuerRef"]
    assert ref["kind"] == "Issuer" and ref["group"] == "cert-manager.io"
    ca_issuer = find(identity, "Issuer", ref["name"], LINKERD_NAMESPACE)
    anchor = find(identity, "Certificate", TRUST_ANCHOR, LINKERD_NAMESPACE)
    assert ca_issuer["spec"]["ca"]["secretName"] == anchor["spec"]["secretName"]


def test_webhooks_serve_certificates_from_their_own_ca(identity: list[dict[str, Any]]) -> None:
    ca_issuer = find(identity, "Issuer", WEBHOOK_CA, LINKERD_NAMESPACE)
    assert ca_issuer["spec"]["ca"]["secretName"] != find(identity, "Certificate", TRUST_ANCHOR)["spec"]["secretName"]
    for name in WEBHOOK_CERTIFICATES.values():
        spec = find(identity, "Certificate", name, LINKERD_NAMESPACE)["spec"]
        assert spec["isCA"] is False
        assert spec["secretName"] == f"{name}-k8s-tls"
        assert spec["dnsNames"] == [f"{name}.linkerd.svc"]
        assert spec["usages"] == ["server auth"]
        assert spec["issuerRef"]["name"] == WEBHOOK_CA
    assert find(identity, "Certificate", "linkerd-policy-validator")["spec"]["privateKey"]["encoding"] == "PKCS8"


@pytest.mark.parametrize("ha", [False, True])
def test_control_plane_webhooks_use_the_cert_manager_certificates(identity: list[dict[str, Any]], ha: bool) -> None:
    values = linkerd_control_plane_values(ha, node_selector=SYSTEM)
    for key in ("proxyInjector", "profileValidator", "policyValidator"):
        assert values[key]["externalSecret"] is True
        namespace, name = values[key]["injectCaFrom"].split("/")
        assert find(identity, "Certificate", name, namespace)["spec"]["secretName"] == f"{name}-k8s-tls"


def test_namespace_allows_the_init_container(identity: list[dict[str, Any]]) -> None:
    namespace = find(identity, "Namespace", LINKERD_NAMESPACE)["metadata"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace["labels"]["linkerd.io/is-control-plane"] == "true"
    assert namespace["labels"]["config.linkerd.io/admission-webhooks"] == "disabled"
    assert namespace["annotations"] == {"linkerd.io/inject": "disabled"}


def test_sync_role_reads_no_secret_and_writes_one_config_map(identity: list[dict[str, Any]]) -> None:
    rules = find(identity, "Role", SYNC_NAME)["rules"]
    assert all("secrets" not in rule["resources"] for rule in rules)
    for rule in rules:
        if rule["verbs"] == ["create"]:
            assert rule["resources"] == ["configmaps"]
        else:
            assert set(rule["verbs"]) == {"get", "patch"}
            assert rule["resourceNames"] in ([TRUST_ROOTS_CONFIG_MAP], list(CONTROL_PLANE_DEPLOYMENTS))
    binding = find(identity, "RoleBinding", SYNC_NAME)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SYNC_NAME, "namespace": LINKERD_NAMESPACE}]


def pod_specs(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cron = find(manifests, "CronJob", SYNC_NAME)
    return [
        find_job(manifests)["spec"]["template"]["spec"],
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ]


def test_sync_runs_hourly_and_at_install(identity: list[dict[str, Any]]) -> None:
    cron = find(identity, "CronJob", SYNC_NAME)["spec"]
    assert cron["schedule"] == "0 * * * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    job = find_job(identity)
    assert job["metadata"]["name"].startswith(f"{SYNC_NAME}-")
    assert job["spec"]["template"] == cron["jobTemplate"]["spec"]["template"]


def test_sync_pods_are_restricted_and_pinned(identity: list[dict[str, Any]]) -> None:
    for pod in pod_specs(identity):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["nodeSelector"] == SYSTEM
        containers = pod["initContainers"] + pod["containers"]
        assert [c["image"] for c in containers] == [BUSYBOX_IMAGE, KUBECTL_IMAGE]
        for container in containers:
            # An exact release tag, never latest or a floating minor.
            assert re.fullmatch(r"[a-z0-9./-]+:v?\d+\.\d+\.\d+(-musl)?", container["image"])
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "memory" in container["resources"]["limits"]
        anchor = next(v for v in pod["volumes"] if v["name"] == "trust-anchor")
        # The kubelet mounts the certificate only: the private key never enters the pod.
        assert anchor["secret"] == {
            "secretName": TRUST_ANCHOR,
            "items": [{"key": "tls.crt", "path": "tls.crt"}],
        }


def test_sync_job_name_follows_its_template() -> None:
    first = find_job(identity_manifests())["metadata"]["name"]
    assert find_job(identity_manifests())["metadata"]["name"] == first
    moved = find_job(identity_manifests(node_selector={"ml-platform/pool": "other"}))["metadata"]["name"]
    assert moved != first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trust_anchor_renew_before_hours": 8760}, "must be below trust_anchor_lifetime_hours"),
        ({"issuer_renew_before_hours": 48}, "must be below issuer_lifetime_hours"),
        ({"issuer_renew_before_hours": 24}, "must exceed the 24h workload certificate lifetime"),
        ({"trust_anchor_renew_before_hours": 24}, "would outlive it"),
        ({"issuer_lifetime_hours": 0}, "issuer_lifetime_hours is 0"),
        ({"node_selector": {}}, "node_selector is empty"),
    ],
)
def test_fails_on_bad_lifetimes(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        identity_manifests(**kwargs)


# -- the trust-roots sync script, run with stub kubectl ----------------------------------------------------

_TOOLS = ("openssl", "sh", "awk", "od", "base64", "sed", "tr", "grep", "mktemp", "date")

_STUB_KUBECTL = r"""#!/bin/sh
echo "$*" >> "$STATE/calls"
case "$*" in
  *"get configmap"*) [ -f "$STATE/bundle" ] && cat "$STATE/bundle"; exit 0;;
  *"create configmap"*)
    for arg in "$@"; do
      case "$arg" in --from-file=*) echo "from: ${arg#--from-file=ca-bundle.crt=}";; esac
    done
    exit 0;;
  "apply -f "*) cp "$(sed -n 's/^from: //p' "$3")" "$STATE/bundle"; exit 0;;
  *"get deployment"*) grep -qx "$5" "$STATE/deployments" 2>/dev/null && echo "deployment.apps/$5"; exit 0;;
  *"rollout restart"*) echo "$6" >> "$STATE/restarted"; exit 0;;
esac
echo "unexpected: kubectl $*" >&2
exit 2
"""

_STUB_DATE = """#!/bin/sh
if [ -n "${FAKE_NOW:-}" ]; then echo "$FAKE_NOW"; else exec "$REAL_DATE" "$@"; fi
"""


@dataclass(frozen=True)
class SyncBench:
    """A directory with the sync script, stub kubectl and date, and roots made by openssl."""

    root: Path
    real_date: str

    def cert(self, name: str, days: int, key: str = "key") -> Path:
        path = self.root / f"{name}.pem"
        if not path.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-key", str(self.root / f"{key}.key"), "-subj",
                 "/CN=root.linkerd.cluster.local", "-days", str(days), "-set_serial", str(days),
                 "-out", str(path)],
                check=True, capture_output=True,
            )  # fmt: skip
        return path

    def not_after(self, cert: Path) -> str:
        text = subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-enddate", "-dateopt", "iso_8601"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        # notAfter=2027-11-22 07:13:51Z
        return "".join(ch for ch in text.split("=", 1)[1] if ch.isdigit())

    def run(self, state: Path, anchor: Path, now: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "STATE": str(state),
            "TRUST_ANCHOR_FILE": str(anchor),
            "REAL_DATE": self.real_date,
        }
        if now:
            env["FAKE_NOW"] = now
        return subprocess.run(
            ["sh", str(self.root / "scripts" / "sync-trust-roots.sh")],
            env=env,
            capture_output=True,
            text=True,
        )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncBench]:
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the sync script test needs {', '.join(missing)} on PATH")
    root = tmp_path_factory.mktemp("sync")
    (root / "scripts").mkdir()
    (root / "scripts" / "sync-trust-roots.sh").write_text(SYNC_SCRIPT)
    (root / "scripts" / "not-after.awk").write_text(NOT_AFTER_AWK)
    (root / "bin").mkdir()
    stubs = {
        "kubectl": _STUB_KUBECTL,
        "date": _STUB_DATE,
    }
    for name, text in stubs.items():
        path = root / "bin" / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    for key in ("key", "other"):
        subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
             "-out", str(root / f"{key}.key")],
            check=True, capture_output=True,
        )  # fmt: skip
    date = shutil.which("date")
    assert date is not None
    yield SyncBench(root=root, real_date=date)


def roots(state: Path) -> list[str]:
    bundle = (state / "bundle").read_text()
    return [block.split("END")[0] for block in bundle.split("BEGIN CERTIFICATE")[1:]]


def body(cert: Path) -> str:
    return cert.read_text().split("BEGIN CERTIFICATE")[1].split("END")[0]


@pytest.mark.parametrize("days", [365, 12000])
def test_not_after_matches_openssl(bench: SyncBench, days: int) -> None:
    # 12000 days ends after 2049: a GeneralizedTime instead of a UTCTime.
    cert = bench.cert(f"validity-{days}", days)
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    numbers = " ".join(str(byte) for byte in der)
    awk = subprocess.run(["awk", NOT_AFTER_AWK], input=numbers, capture_output=True, text=True, check=True)
    assert awk.stdout.strip() == bench.not_after(cert)


def test_sync_follows_a_renewal(bench: SyncBench, tmp_path: Path) -> None:
    state = tmp_path
    old, renewed = bench.cert("old", 365), bench.cert("renewed", 730)

    # At install: no ConfigMap and no control plane yet.
    first = bench.run(state, old)
    assert first.returncode == 0, first.stderr
    assert roots(state) == [body(old)]
    assert not (state / "restarted").exists()

    # Nothing changed: nothing is written.
    calls = (state / "calls").read_text()
    again = bench.run(state, old)
    assert again.returncode == 0 and "trust roots unchanged" in again.stdout
    assert "apply" not in (state / "calls").read_text()[len(calls) :]

    # cert-manager renewed the anchor: new and old side by side, the control plane restarted.
    (state / "deployments").write_text("\n".join(CONTROL_PLANE_DEPLOYMENTS) + "\n")
    renewal = bench.run(state, renewed)
    assert renewal.returncode == 0, renewal.stderr
    assert roots(state) == [body(renewed), body(old)]
    assert (state / "restarted").read_text().split() == list(CONTROL_PLANE_DEPLOYMENTS)

    # The old root expired: it is dropped, and the control plane restarted again.
    expired = bench.not_after(old)
    later = str(int(expired) + 1)
    dropped = bench.run(state, renewed, now=later)
    assert dropped.returncode == 0, dropped.stderr
    assert roots(state) == [body(renewed)]
    assert len((state / "restarted").read_text().split()) == 2 * len(CONTROL_PLANE_DEPLOYMENTS)


def test_sync_keeps_a_new_key_root_until_it_expires(bench: SyncBench, tmp_path: Path) -> None:
    old, replaced = bench.cert("old", 365), bench.cert("other-key", 400, key="other")
    assert bench.run(tmp_path, old).returncode == 0
    assert bench.run(tmp_path, replaced).returncode == 0
    assert roots(tmp_path) == [body(replaced), body(old)]


def test_sync_refuses_an_anchor_with_two_certificates(bench: SyncBench, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_text(bench.cert("old", 365).read_text() + bench.cert("renewed", 730).read_text())
    state = tmp_path / "state"
    state.mkdir()
    result = bench.run(state, both)
    assert result.returncode != 0
    assert "exactly one certificate" in result.stderr
    assert not (state / "bundle").exists()


def test_sync_leaves_a_bundle_it_cannot_read(bench: SyncBench, tmp_path: Path) -> None:
    old = bench.cert("old", 365)
    garbage = "BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle = old.read_text() + "-----" + garbage
    (tmp_path / "bundle").write_text(bundle)
    result = bench.run(tmp_path, bench.cert("renewed", 730))
    assert result.returncode != 0
    assert "repair its ca-bundle.crt by hand" in result.stderr
    assert (tmp_path / "bundle").read_text() == bundle


# -- mesh policy chart -----------------------------------------------------------------------------------


def test_policy_objects_validate(policy: list[dict[str, Any]]) -> None:
    require_reference_dir()
    assert policy
    for obj in policy:
        assert validate_object(obj, KUBERNETES_VERSION) == [], obj["metadata"]["name"]
    assert {m["apiVersion"] for m in of_kind(policy, "Server")} == {"policy.linkerd.io/v1beta3"}


def test_server_with_an_unknown_field_is_caught(policy: list[dict[str, Any]]) -> None:
    require_reference_dir()
    server = copy.deepcopy(of_kind(policy, "Server")[0])
    server["spec"]["podSelecter"] = server["spec"].pop("podSelector")
    errors = validate_custom_resource(server)
    assert any("spec.podSelecter: unknown field" in e for e in errors), errors


def test_every_policy_points_at_objects_of_its_namespace(policy: list[dict[str, Any]]) -> None:
    index = {(m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]) for m in policy}
    for authorization in of_kind(policy, "AuthorizationPolicy"):
        namespace = authorization["metadata"]["namespace"]
        target = authorization["spec"]["targetRef"]
        assert ("Server", namespace, target["name"]) in index
        for ref in authorization["spec"]["requiredAuthenticationRefs"]:
            assert len(authorization["spec"]["requiredAuthenticationRefs"]) == 1
            assert (ref["kind"], namespace, ref["name"]) in index
    # Each authentication object is used.
    used = {
        (ref["kind"], a["metadata"]["namespace"], ref["name"])
        for a in of_kind(policy, "AuthorizationPolicy")
        for ref in a["spec"]["requiredAuthenticationRefs"]
    }
    for kind in ("MeshTLSAuthentication", "NetworkAuthentication"):
        assert {(kind, m["metadata"]["namespace"], m["metadata"]["name"]) for m in of_kind(policy, kind)} <= used


def test_kserve_predictors_admit_agents_and_monitoring(policy: list[dict[str, Any]]) -> None:
    server = find(policy, "Server", "kserve-predictor", "inference")
    assert server["spec"]["port"] == 8080
    assert server["spec"]["podSelector"] == {"matchLabels": {"component": "predictor"}}
    mesh = find(policy, "MeshTLSAuthentication", "kserve-predictor-mesh-clients", "inference")
    assert mesh["spec"]["identities"] == ["*.agentic.serviceaccount.identity.linkerd.cluster.local"]
    # Prometheus is unmeshed: it is admitted from the node subnets, where its pod addresses live.
    networks = find(policy, "NetworkAuthentication", "kserve-predictor-network-clients", "inference")
    assert [n["cidr"] for n in networks["spec"]["networks"]] == list(SCRAPERS)


def test_alb_clients_get_a_network_authentication_of_their_own() -> None:
    rule = ServerAccess(
        namespace="inference",
        server="triton",
        pod_selector={"app": "triton"},
        port=8000,
        client_namespaces=("agentic",),
        client_networks=ALB_SUBNETS,
    )
    manifests = policy_manifests([rule])
    networks = find(manifests, "NetworkAuthentication", "triton-network-clients", "inference")
    assert [n["cidr"] for n in networks["spec"]["networks"]] == list(ALB_SUBNETS)
    policies = of_kind(manifests, "AuthorizationPolicy")
    # One policy per authentication: a policy requires all of its references, so either admits a client.
    assert sorted(p["metadata"]["name"] for p in policies) == [
        "triton-mesh-clients",
        "triton-network-clients",
    ]
    for obj in manifests:
        assert validate_object(obj, KUBERNETES_VERSION) == []


@pytest.mark.parametrize("namespace", ["inference", "agentic"])
def test_metrics_ports_admit_monitoring_only(policy: list[dict[str, Any]], namespace: str) -> None:
    server = find(policy, "Server", "metrics", namespace)
    assert server["spec"] == {
        "podSelector": {"matchLabels": {}},
        "port": "metrics",
        "proxyProtocol": "unknown",
    }
    networks = find(policy, "NetworkAuthentication", "metrics-network-clients", namespace)
    assert [n["cidr"] for n in networks["spec"]["networks"]] == list(SCRAPERS)
    # No mesh identity is admitted to the metrics ports: only the scrapers' networks.
    assert not [m for m in of_kind(policy, "MeshTLSAuthentication") if m["metadata"]["namespace"] == namespace
                and m["metadata"]["name"].startswith("metrics")]  # fmt: skip


def test_service_account_clients() -> None:
    rule = ServerAccess(
        namespace="mlops",
        server="mlflow",
        pod_selector={"app": "mlflow"},
        port=5000,
        client_service_accounts=(("training", "trainer"),),
        proxy_protocol="HTTP/1",
    )
    manifests = policy_manifests([rule])
    assert find(manifests, "MeshTLSAuthentication", "mlflow-mesh-clients")["spec"]["identities"] == [
        "trainer.training.serviceaccount.identity.linkerd.cluster.local"
    ]
    assert find(manifests, "Server", "mlflow")["spec"]["proxyProtocol"] == "HTTP/1"
    for obj in manifests:
        assert validate_object(obj, KUBERNETES_VERSION) == []


def test_identity_names() -> None:
    assert identity_name("agentic") == "*.agentic.serviceaccount.identity.linkerd.cluster.local"
    assert identity_name("agentic", "planner") == "planner.agentic.serviceaccount.identity.linkerd.cluster.local"


_RULE: dict[str, Any] = {
    "namespace": "inference",
    "server": "model-server",
    "pod_selector": {"component": "predictor"},
    "port": 8000,
    "client_namespaces": ("agentic",),
}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"client_namespaces": ()}, "no clients"),
        ({"port": 0}, "outside 1-65535"),
        ({"port": "Metrics_Port"}, "not a container port name"),
        ({"server": "Model"}, "server name must be lowercase"),
        ({"namespace": "In_ference"}, "not a valid namespace name"),
        ({"client_namespaces": ("Agentic",)}, "client namespace 'Agentic'"),
        ({"client_networks": ("10.0.1.1/24",)}, "not a CIDR"),
        ({"client_service_accounts": (("agentic", "Bad_Name"),)}, "service account agentic/'Bad_Name'"),
    ],
)
def test_fails_on_a_bad_rule(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerAccess(**{**_RULE, **override})


def test_fails_when_a_server_appears_twice() -> None:
    rule = ServerAccess(**_RULE)
    with pytest.raises(ValueError, match="appears twice"):
        policy_manifests([rule, rule])


def test_fails_when_two_servers_select_the_same_port() -> None:
    rules = [ServerAccess(**_RULE), ServerAccess(**{**_RULE, "server": "model-server-2"})]
    with pytest.raises(ValueError, match="select the same pods and port 8000"):
        policy_manifests(rules)
