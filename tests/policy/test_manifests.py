"""Manifest checks: every object the app applies is valid, every Helm release is pinned and its values exist."""

from __future__ import annotations

import re

import pytest

from config.model import StageConfig
from tests.support.assembly import CloudAssembly
from tests.support.deployed import deployed_objects, helm_releases
from tests.support.k8s_reference import (
    pinned_chart_versions,
    require_reference_dir,
    validate_helm_values,
    validate_object,
)

# Chart name in a release -> its directory under k8s-reference/charts when the names differ.
CHART_DIRS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _reference() -> None:
    require_reference_dir()


def test_app_deploys_kubernetes_objects_and_releases(assembly: CloudAssembly) -> None:
    # Guards the checks below against passing vacuously when the extraction finds nothing.
    kinds = {d.obj["kind"] for d in deployed_objects(assembly)}
    assert {"StorageClass", "NodePool", "EC2NodeClass"} <= kinds
    assert {r.chart for r in helm_releases(assembly)} >= {"karpenter"}


def test_every_object_is_valid_for_its_cluster_version(
    assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    versions = {name.capitalize(): c.cluster.kubernetes_version for name, c in stage_configs.items()}
    errors: list[str] = []
    for deployed in deployed_objects(assembly):
        errors += [f"{deployed.label}: {e}" for e in validate_object(deployed.obj, versions[deployed.stage])]
    assert errors == [], "\n".join(errors)


def test_every_helm_release_is_pinned_to_the_reference_version(assembly: CloudAssembly) -> None:
    pins = pinned_chart_versions()
    problems = []
    for release in helm_releases(assembly):
        chart_dir = CHART_DIRS.get(release.chart, release.chart)
        if pins.get(chart_dir) != release.version:
            problems.append(
                f"{release.stage}/{release.logical_id}: {release.chart} {release.version}, reference pins "
                f"{pins.get(chart_dir)}"
            )
    assert problems == []


def test_every_helm_values_key_exists_in_the_pinned_chart(assembly: CloudAssembly) -> None:
    errors: list[str] = []
    for release in helm_releases(assembly):
        chart_dir = CHART_DIRS.get(release.chart, release.chart)
        errors += [
            f"{release.stage}/{release.logical_id}: {e}"
            for e in validate_helm_values(chart_dir, release.version, release.values)
        ]
    assert errors == [], "\n".join(errors)


def test_every_helm_release_waits_within_the_custom_resource_limit(assembly: CloudAssembly) -> None:
    for release in helm_releases(assembly):
        assert release.wait, f"{release.logical_id} does not wait for its resources"
        minutes = int(re.fullmatch(r"(\d+)s", release.timeout).group(1)) / 60  # type: ignore[union-attr]
        # CloudFormation allows a custom resource 15 minutes; the handler needs some of them.
        assert minutes <= 12, f"{release.logical_id}: timeout {release.timeout} leaves no margin under 15 min"


def test_no_secret_object_carries_literal_data(assembly: CloudAssembly) -> None:
    secrets = [d.label for d in deployed_objects(assembly) if d.obj["kind"] == "Secret"
               and (d.obj.get("data") or d.obj.get("stringData"))]  # fmt: skip
    assert secrets == [], "secret values must come from Secrets Manager through ExternalSecrets"
    # Every ExternalSecret reads from the one ClusterSecretStore on Secrets Manager.
    stores = {
        d.obj["spec"]["secretStoreRef"]["name"] for d in deployed_objects(assembly) if d.obj["kind"] == "ExternalSecret"
    }
    assert stores == {"aws-secrets-manager"}


def test_no_static_aws_credentials_in_any_pod(assembly: CloudAssembly) -> None:
    text = "\n".join(str(d.obj) for d in deployed_objects(assembly))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert name not in text
    for release in helm_releases(assembly):
        assert "AWS_SECRET_ACCESS_KEY" not in str(release.values), release.logical_id


def test_every_pod_role_is_scoped(assembly: CloudAssembly) -> None:
    # Pods reach AWS only through Pod Identity roles; none of them may hold an unscoped admin-like statement.
    problems = []
    for stack in assembly.stacks:
        roles = {a["Properties"]["RoleArn"]["Fn::GetAtt"][0] for a in stack.resources_of(
            "AWS::EKS::PodIdentityAssociation").values() if isinstance(a["Properties"]["RoleArn"], dict)}  # fmt: skip
        for policy_id, policy in stack.resources_of("AWS::IAM::Policy").items():
            attached = {r["Ref"] for r in policy["Properties"].get("Roles", []) if isinstance(r, dict)}
            if not attached & roles:
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resources = (
                    statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                )
                if any(a in ("*", "s3:*", "iam:*", "kms:*", "secretsmanager:*") for a in actions):
                    problems.append(f"{stack.stage}/{policy_id}: {actions}")
                if (
                    statement["Effect"] == "Allow"
                    and "*" in resources
                    and any(a.split(":")[1].startswith(("Put", "Delete", "Create")) for a in actions if ":" in a)
                    and not any(a.startswith(("xray:", "cloudwatch:PutMetricData", "logs:")) for a in actions)
                ):
                    problems.append(f"{stack.stage}/{policy_id}: write actions {actions} on every resource")
        for role_id in roles:
            managed = stack.resources[role_id]["Properties"].get("ManagedPolicyArns", [])
            assert "AdministratorAccess" not in str(managed), role_id
    assert problems == []


def _images(node: object) -> list[str]:
    """Return every ``image`` string in a manifest (containers, init containers, nested job templates)."""
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_every_container_image_is_pinned_by_tag(assembly: CloudAssembly) -> None:
    images = {image for d in deployed_objects(assembly) for image in _images(d.obj)}
    assert images, "expected container images in the deployed objects"
    unpinned = sorted(
        image
        for image in images
        if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"))
    )
    assert unpinned == [], f"images without an exact tag: {unpinned}"
