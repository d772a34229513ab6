"""Prove the k8s reference checks pass valid manifests and Helm values and catch seeded mistakes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.support.k8s_reference import (
    REFERENCE_ENV_VAR,
    ReferenceMissing,
    bundled_kubernetes_version,
    is_builtin,
    pinned_chart_versions,
    reference_dir,
    require_reference_dir,
    validate_builtin,
    validate_custom_resource,
    validate_helm_values,
    validate_object,
)

KUBERNETES_VERSION = "1.35"

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "apps", "labels": {"app.kubernetes.io/name": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "public.ecr.aws/nginx/nginx:1.27",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"memory": 1},
                        },
                    }
                ]
            },
        },
    },
}

NODE_POOL: dict[str, Any] = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodePool",
    "metadata": {"name": "gpu"},
    "spec": {
        "template": {
            "metadata": {"labels": {"ml-platform/pool": "gpu"}},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                "requirements": [
                    {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g6e"]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                ],
                "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                "expireAfter": "720h",
            },
        },
        # Quantities are int-or-string: both forms must pass.
        "limits": {"cpu": 1000, "memory": "4000Gi", "nvidia.com/gpu": 16},
        "disruption": {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "5m",
            "budgets": [{"nodes": "10%"}],
        },
        "weight": 10,
    },
}

EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kubeflow.org/v1beta1",
    "kind": "Experiment",
    "metadata": {"name": "tune-lr", "namespace": "ml"},
    "spec": {
        "objective": {"type": "maximize", "goal": 0.9, "objectiveMetricName": "accuracy"},
        "algorithm": {"algorithmName": "random"},
        "parallelTrialCount": 2,
        "maxTrialCount": 4,
        "parameters": [
            {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.001", "max": "0.1"}},
        ],
        "trialTemplate": {
            "primaryContainerName": "training",
            "trialParameters": [{"name": "learningRate", "reference": "lr"}],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {}}},
        },
    },
}


@pytest.fixture(scope="module", autouse=True)
def reference() -> Path:
    """Fail every test of this module with the fetch instructions when the reference data is missing."""
    return require_reference_dir()


def _with(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of obj with the dotted path (list indexes as numbers) set to value."""
    result = copy.deepcopy(obj)
    *parents, leaf = path.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[leaf] = value
    return result


# --- built-in objects ---------------------------------------------------------------------------------------


def test_cluster_version_maps_to_a_bundled_schema_version() -> None:
    assert bundled_kubernetes_version(KUBERNETES_VERSION) == "1.35.0"


def test_fails_when_kubernetes_version_is_not_bundled() -> None:
    with pytest.raises(ValueError, match=r"bundles no schemas for kubernetes 1\.99"):
        bundled_kubernetes_version("1.99")


def test_valid_deployment_passes() -> None:
    assert validate_builtin(DEPLOYMENT, KUBERNETES_VERSION) == []


def test_fails_when_deployment_has_unknown_field() -> None:
    deployment = _with(DEPLOYMENT, "spec.template.spec.containers.0.imagePullPolicyy", "Always")

    errors = validate_builtin(deployment, KUBERNETES_VERSION)

    assert len(errors) == 1
    assert errors[0].startswith("Deployment/web: spec.template.spec.containers[0]: ")
    assert "'imagePullPolicyy' was unexpected" in errors[0]


def test_fails_when_deployment_field_has_wrong_type() -> None:
    errors = validate_builtin(_with(DEPLOYMENT, "spec.replicas", "two"), KUBERNETES_VERSION)

    assert errors == ["Deployment/web: spec.replicas: 'two' is not of type 'integer', 'null'"]


@pytest.mark.parametrize(
    ("api_version", "builtin"),
    [
        ("v1", True),
        ("apps/v1", True),
        ("networking.k8s.io/v1", True),
        ("autoscaling/v2", True),
        ("gateway.networking.k8s.io/v1", False),
        ("karpenter.sh/v1", False),
        ("monitoring.coreos.com/v1", False),
    ],
)
def test_is_builtin_matches_api_groups_exactly(api_version: str, builtin: bool) -> None:
    assert is_builtin(api_version) is builtin


def test_validate_object_dispatches_on_the_api_group() -> None:
    bad_deployment = _with(DEPLOYMENT, "spec.replicaz", 2)
    bad_pool = _with(NODE_POOL, "spec.weight", "high")

    assert "'replicaz' was unexpected" in validate_object(bad_deployment, KUBERNETES_VERSION)[0]
    assert validate_object(bad_pool, KUBERNETES_VERSION) == [
        "NodePool/gpu: spec.weight: 'high' is not of type 'integer'"
    ]


# --- custom resources ---------------------------------------------------------------------------------------


def test_valid_node_pool_passes() -> None:
    assert validate_custom_resource(NODE_POOL) == []


def test_fails_when_node_pool_has_unknown_field() -> None:
    node_pool = _with(NODE_POOL, "spec.disruption.consolidationPolicyy", "WhenEmpty")

    assert validate_custom_resource(node_pool) == [
        "NodePool/gpu: spec.disruption.consolidationPolicyy: unknown field (did you mean consolidationPolicy?)"
    ]


def test_fails_when_node_pool_field_has_wrong_type_or_value() -> None:
    node_pool = _with(NODE_POOL, "spec.weight", "high")
    node_pool = _with(node_pool, "spec.template.spec.requirements.0.operator", "Inn")

    errors = validate_custom_resource(node_pool)

    assert errors[0].startswith("NodePool/gpu: spec.template.spec.requirements[0].operator: 'Inn' is not one of")
    assert errors[1] == "NodePool/gpu: spec.weight: 'high' is not of type 'integer'"
    assert len(errors) == 2


def test_fails_when_custom_resource_has_no_name() -> None:
    assert validate_custom_resource(_with(NODE_POOL, "metadata", {"labels": {"a": "b"}})) == [
        "NodePool/<no name>: metadata: 'name' is a required property"
    ]


def test_fails_when_crd_kind_is_unknown() -> None:
    node_pool = _with(NODE_POOL, "kind", "NodePoool")

    assert validate_custom_resource(node_pool) == [
        "NodePoool/gpu: no CRD in k8s-reference for karpenter.sh/v1 NodePoool (did you mean karpenter.sh/v1 NodePool?)"
    ]
    assert validate_custom_resource(_with(NODE_POOL, "apiVersion", "example.com/v1")) == [
        "NodePool/gpu: no CRD in k8s-reference for example.com/v1 NodePool"
    ]


def test_fails_when_crd_version_is_not_served() -> None:
    external_secret = {
        "apiVersion": "external-secrets.io/v1beta1",
        "kind": "ExternalSecret",
        "metadata": {"name": "db"},
        "spec": {},
    }

    errors = validate_custom_resource(external_secret)

    assert errors == [
        "ExternalSecret/db: external-secrets.io/v1beta1 ExternalSecret is not served by "
        "crds/external-secrets/v2.9.0/external-secrets.io_externalsecrets.yaml"
    ]


@pytest.mark.parametrize("port", [8080, "http"])
def test_int_or_string_field_without_any_of_accepts_both(port: int | str) -> None:
    server = {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": {"name": "web"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": port},
    }

    assert validate_custom_resource(server) == []
    assert validate_custom_resource(_with(server, "spec.port", [port])) != []


def test_nullable_field_accepts_null_and_other_fields_do_not() -> None:
    schedule = {
        "apiVersion": "velero.io/v1",
        "kind": "Schedule",
        "metadata": {"name": "daily"},
        "spec": {"schedule": "0 3 * * *", "template": {"includedNamespaces": None, "ttl": "720h"}},
    }

    assert validate_custom_resource(schedule) == []
    assert validate_custom_resource(_with(schedule, "spec.template.ttl", None)) == [
        "Schedule/daily: spec.template.ttl: None is not of type 'string'"
    ]


def test_go_inline_flag_pattern_is_checked() -> None:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "gpu"},
        "spec": {"groups": [{"name": "gpu", "partial_response_strategy": "WARN", "rules": []}]},
    }

    assert validate_custom_resource(rule) == []
    errors = validate_custom_resource(_with(rule, "spec.groups.0.partial_response_strategy", "ignore"))
    assert errors == [
        "PrometheusRule/gpu: spec.groups[0].partial_response_strategy: 'ignore' does not match '(?i)^(abort|warn)?$'"
    ]


def test_katib_experiment_is_checked_against_its_swagger_definition() -> None:
    assert validate_custom_resource(EXPERIMENT) == []
    assert validate_custom_resource(_with(EXPERIMENT, "spec.objective.goall", 0.9)) == [
        "Experiment/tune-lr: spec.objective.goall: unknown field (did you mean goal?)"
    ]
    assert validate_custom_resource(_with(EXPERIMENT, "spec.maxTrialCount", "4")) == [
        "Experiment/tune-lr: spec.maxTrialCount: '4' is not of type 'integer'"
    ]


# --- Helm values --------------------------------------------------------------------------------------------


def test_valid_values_key_passes() -> None:
    values = {"settings": {"clusterName": "ml-dev", "interruptionQueue": "ml-dev"}, "replicas": 1}

    assert validate_helm_values("karpenter", "1.14.1", values) == []


def test_fails_when_values_key_is_misspelled() -> None:
    errors = validate_helm_values("karpenter", "1.14.1", {"settings": {"clusterNmae": "ml-dev"}})

    assert errors == [
        "karpenter 1.14.1: values key settings.clusterNmae does not exist in the chart's values.yaml "
        "(did you mean settings.clusterName?)"
    ]


def test_free_form_and_commented_keys_pass() -> None:
    karpenter_values = {
        "nodeSelector": {"ml-platform/system": "true"},
        "controller": {"resources": {"limits": {}}},
    }

    assert validate_helm_values("karpenter", "1.14.1", karpenter_values) == []
    assert validate_helm_values("linkerd-crds", "2026.6.3", {"enableHttpRoutes": True}) == []


def test_subchart_keys_are_checked_against_the_subchart_defaults() -> None:
    values = {
        "grafana": {
            "persistence": {"enabled": True},  # only in grafana's own values.yaml
            "defaultDashboardsEnabled": False,  # only in kube-prometheus-stack's grafana section
            "admin": {"existingSecret": "grafana-admin"},
        },
        "prometheus-node-exporter": {"hostRootFsMount": {"enabled": False}},
    }

    assert validate_helm_values("kube-prometheus-stack", "88.5.3", values) == []


def test_fails_when_subchart_key_is_misspelled() -> None:
    errors = validate_helm_values("kube-prometheus-stack", "88.5.3", {"grafana": {"persistance": {"enabled": True}}})

    assert errors == [
        "kube-prometheus-stack 88.5.3: values key grafana.persistance does not exist in subchart grafana "
        "12.11.1's values.yaml or the chart's grafana section (did you mean grafana.persistence?)"
    ]


def test_fails_when_values_break_the_values_schema() -> None:
    assert validate_helm_values("cert-manager", "v1.21.1", {"replicaCount": "two"}) == [
        "cert-manager v1.21.1: values.schema.json: replicaCount: 'two' is not of type 'number'"
    ]
    assert validate_helm_values(
        "gpu-operator", "v26.7.0", {"node-feature-discovery": {"master": {"replicaCount": "two"}}}
    ) == [
        "gpu-operator v26.7.0: subchart node-feature-discovery 0.19.0 values.schema.json: "
        "node-feature-discovery.master.replicaCount: 'two' is not of type 'integer'"
    ]


def test_fails_when_chart_version_is_not_the_pinned_one() -> None:
    assert validate_helm_values("karpenter", "1.13.0", {}) == [
        "karpenter 1.13.0: no reference data at charts/karpenter/1.13.0 (k8s-reference pins 1.14.1)"
    ]


def test_pinned_chart_versions_lists_one_version_per_chart() -> None:
    pins = pinned_chart_versions()

    assert pins["karpenter"] == "1.14.1"
    assert pins["grafana"] == "12.11.1"
    assert pins["gpu-operator"] == "v26.7.0"


# --- missing reference data ---------------------------------------------------------------------------------


def test_fails_with_instructions_when_reference_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "k8s-reference"
    monkeypatch.setenv(REFERENCE_ENV_VAR, str(missing))

    with pytest.raises(ReferenceMissing) as raised:
        reference_dir()
    with pytest.raises(pytest.fail.Exception) as failed:
        require_reference_dir()

    message = str(raised.value)
    assert str(missing) in message
    assert "SOURCES.md" in message
    assert "crds/<project>/<version>/ and charts/<chart>/<version>/" in message
    assert f"{REFERENCE_ENV_VAR} overrides the location" in message
    assert failed.value.msg == message
    assert failed.value.pytrace is False
