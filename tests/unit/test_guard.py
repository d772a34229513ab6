"""The stateful-replacement guard: the comparison of two sets of templates, on small template dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scripts import guard
from scripts.guard import Finding, compare, create_only_properties, load_templates
from tests.support.assembly import CloudAssembly


def _bucket(name: str = "ml-platform-prod-models-333333333333-us-east-1") -> dict[str, Any]:
    return {
        "Type": "AWS::S3::Bucket",
        "Properties": {
            "BucketName": name,
            "VersioningConfiguration": {"Status": "Enabled"},
            "Tags": [{"Key": "stage", "Value": "prod"}],
        },
        "DeletionPolicy": "Retain",
    }


def _database() -> dict[str, Any]:
    return {
        "Type": "AWS::RDS::DBInstance",
        "Properties": {
            "DBInstanceIdentifier": "ml-platform-prod",
            "DBInstanceClass": "db.r7g.xlarge",
            "AllocatedStorage": "100",
            "StorageEncrypted": True,
            "KmsKeyId": {"Fn::GetAtt": ["DataKey1A2B3C4D", "Arn"]},
        },
        "DeletionPolicy": "Snapshot",
    }


def _base() -> dict[str, dict[str, Any]]:
    return {
        "Prod/Data": {
            "Resources": {
                "Models7F217E31": _bucket(),
                "DatabaseB269D8BB": _database(),
                "DatabaseSecret3B817195": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
                "DataKey1A2B3C4D": {"Type": "AWS::KMS::Key", "Properties": {"EnableKeyRotation": True}},
                "ReaderRole9F8E7D6C": {"Type": "AWS::IAM::Role", "Properties": {}},
            }
        },
        "Prod/Cluster": {
            "Resources": {
                "GrafanaSecretA1B2C3D4": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
            }
        },
    }


def test_unchanged_templates_pass() -> None:
    assert compare(_base(), _base()) == []


def test_fails_when_a_construct_id_is_renamed() -> None:
    head = _base()
    head["Prod/Data"]["Resources"]["ModelArtifactsC7F14209"] = head["Prod/Data"]["Resources"].pop("Models7F217E31")
    (finding,) = compare(_base(), head)
    assert (finding.stack, finding.logical_id, finding.resource_type) == (
        "Prod/Data",
        "Models7F217E31",
        "AWS::S3::Bucket",
    )
    assert "logical ID removed" in finding.reason and "orphaned (DeletionPolicy retains it)" in finding.reason
    assert "ModelArtifactsC7F14209; a renamed construct ID?" in finding.reason
    assert str(finding).startswith("Prod/Data Models7F217E31 AWS::S3::Bucket: logical ID removed")


@pytest.mark.parametrize(
    ("logical_id", "prop", "value", "expected"),
    [
        ("Models7F217E31", "BucketName", "ml-platform-prod-weights-333333333333-us-east-1", "BucketName changes"),
        ("DatabaseB269D8BB", "DBInstanceIdentifier", "ml-platform-prod-2", "DBInstanceIdentifier changes"),
        ("DatabaseB269D8BB", "KmsKeyId", {"Fn::GetAtt": ["OtherKey", "Arn"]}, "KmsKeyId changes"),
        ("DatabaseB269D8BB", "StorageEncrypted", None, "StorageEncrypted changes: true -> (unset)"),
    ],
)
def test_fails_when_a_replacement_only_property_changes(logical_id: str, prop: str, value: Any, expected: str) -> None:
    head = _base()
    props = head["Prod/Data"]["Resources"][logical_id]["Properties"]
    if value is None:
        del props[prop]
    else:
        props[prop] = value
    (finding,) = compare(_base(), head)
    assert finding.logical_id == logical_id and expected in finding.reason
    assert finding.reason.startswith("replacement-only property")


def test_harmless_changes_pass() -> None:
    head = _base()
    resources = head["Prod/Data"]["Resources"]
    resources["Models7F217E31"]["Properties"]["Tags"].append({"Key": "owner", "Value": "ml-platform-team"})
    resources["Models7F217E31"]["Properties"]["VersioningConfiguration"] = {"Status": "Suspended"}
    resources["DatabaseB269D8BB"]["Properties"]["DBInstanceClass"] = "db.r7g.2xlarge"
    resources["DatabaseB269D8BB"]["Properties"]["AllocatedStorage"] = "200"
    resources["NewBucketA1B2C3D4"] = _bucket("ml-platform-prod-extra-333333333333-us-east-1")
    # Stateless resources and secrets outside the data tier may be replaced freely.
    del resources["ReaderRole9F8E7D6C"]
    head["Prod/Cluster"]["Resources"]["GrafanaSecretE5F6A7B8"] = head["Prod/Cluster"]["Resources"].pop(
        "GrafanaSecretA1B2C3D4"
    )
    assert compare(_base(), head) == []


def test_fails_when_a_data_tier_secret_or_key_goes_or_moves() -> None:
    head = _base()
    secret = head["Prod/Data"]["Resources"].pop("DatabaseSecret3B817195")
    head["Prod/Data"]["Resources"].pop("DataKey1A2B3C4D")
    head["Prod/Cluster"]["Resources"]["DatabaseSecret3B817195"] = secret
    findings = {f.logical_id: f.reason for f in compare(_base(), head)}
    assert findings["DatabaseSecret3B817195"].startswith("moves to stack Prod/Cluster")
    assert findings["DataKey1A2B3C4D"] == "logical ID removed: replaced by a new resource and deleted with its data"


def test_fails_when_a_stateful_stack_leaves_the_app() -> None:
    head = _base()
    del head["Prod/Data"]
    findings = compare(_base(), head)
    assert {f.logical_id for f in findings} == {"Models7F217E31", "DatabaseB269D8BB", "DatabaseSecret3B817195",
                                                 "DataKey1A2B3C4D"}  # fmt: skip
    assert all("stack Prod/Data is gone from the app" in f.reason for f in findings)


def test_replacement_only_properties_come_from_cfn_lints_schemas() -> None:
    assert ("BucketName",) in create_only_properties("AWS::S3::Bucket")
    assert ("VersioningConfiguration",) not in create_only_properties("AWS::S3::Bucket")
    assert {("Encrypted",), ("KmsKeyId",), ("PerformanceMode",)} <= set(create_only_properties("AWS::EFS::FileSystem"))
    assert ("DBInstanceIdentifier",) in create_only_properties("AWS::RDS::DBInstance")
    assert ("KubernetesNetworkConfig", "ServiceIpv4Cidr") in create_only_properties("AWS::EKS::Cluster")
    # A key has no create-only property: only removing or renaming it replaces it.
    assert create_only_properties("AWS::KMS::Key") == ()
    for resource_type in guard.STATEFUL_TYPES:
        create_only_properties(resource_type)  # every guarded type has a schema


def test_the_synthesized_app_compared_with_itself_passes(assembly: CloudAssembly) -> None:
    templates = load_templates(assembly.outdir)
    assert {"Prod/Data", "Dev/Keys", "Pipeline"} <= set(templates)
    assert compare(templates, copy.deepcopy(templates)) == []


def test_main_prints_one_line_per_finding_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    finding = Finding("Prod/Data", "Models7F217E31", "AWS::S3::Bucket", "logical ID removed")
    monkeypatch.setattr(guard, "run", lambda base, head: [finding])
    assert guard.main(["--base", "origin/main"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Prod/Data Models7F217E31 AWS::S3::Bucket: logical ID removed"
    monkeypatch.setattr(guard, "run", lambda base, head: [])
    assert guard.main(["--base", "origin/main"]) == 0
    assert "no stateful replacement" in capsys.readouterr().out
