"""The delivery pipeline: its config (every bad input with its message) and the synthesized pipeline stack."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.delivery import PIPELINE_FILE, PipelineConfig, cdk_cli_version, load_pipeline_config
from config.loader import ConfigError
from config.model import StageConfig
from stacks.pipeline_stack import APPROVALS, CDK_ASSETS_VERSION, _flatten, _Owned, _wildcard_findings
from stacks.platform_stage import stage_construct_id
from tests.support.assembly import CloudAssembly
from tests.support.gates import (
    cfn_lint_errors,
    size_violations,
    template_bytes,
    unacknowledged_findings,
    weak_acknowledgements,
)

Mutation = Callable[[dict[str, Any]], None]


# --- config -------------------------------------------------------------------------------------------------


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PIPELINE_FILE.read_text())
    return data


def _load(tmp_path: Path, data: Any, stage_configs: dict[str, StageConfig]) -> PipelineConfig:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pipeline_config(path, stage_configs=list(stage_configs.values()))


def test_shipped_pipeline_config_is_valid(stage_configs: dict[str, StageConfig]) -> None:
    cfg = load_pipeline_config(stage_configs=list(stage_configs.values()))
    assert cfg.stages == ("dev", "staging", "prod")
    assert cfg.account not in {c.account for c in stage_configs.values()}  # a toolchain account of its own
    assert all(url.startswith("https://") for url in cfg.staging_health_checks)


def _set(field: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data[field] = value

    return mutate


def _drop(field: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        del data[field]

    return mutate


ARN = "arn:aws:codeconnections:us-east-1:444444444444:connection/00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("account", "4444"), r"account: account '4444' must be 12 digits"),
        (_set("account", 444444444444), r"account: Input should be a valid string"),
        (_set("region", "us-east"), r"region: 'us-east' is not an AWS region name"),
        (_set("connection_arn", "arn:aws:codestar:us-east-1:444444444444:connection/x"), r"connection_arn: not a "),
        (_set("connection_arn", ARN.replace("444444444444", "555555555555")), r"connection is in account 5555"),
        (_set("repository", "ml-platform"), r"repository: the repository is 'owner/name'"),
        (_set("repository", "-org/ml-platform"), r"repository: the repository is 'owner/name'"),
        (_set("branch", "feature..x"), r"branch: not a valid git branch name"),
        (_set("branch", "main branch"), r"branch: not a valid git branch name"),
        (_set("stages", []), r"stages: Tuple should have at least 1 item"),
        (_set("stages", ["dev", "dev", "staging"]), r"stage 'dev' is listed twice"),
        (_set("stages", ["dev", "qa", "prod"]), r"'qa' has no stage file config/qa.yaml"),
        (_set("stages", ["dev", "prod", "staging"]), r"'staging' \(staging\) comes after 'prod' \(prod\)"),
        (_set("stages", ["dev", "prod"]), r"has no staging-tier stage for the smoke test"),
        (_set("staging_health_checks", []), r"staging_health_checks: Tuple should have at least 1 item"),
        (_set("staging_health_checks", ["http://x.example.com/"]), r"is not an https:// URL"),
        (_set("staging_health_checks", ["https://x.example.com/'; rm -rf /"]), r"is not an https:// URL"),
        (_set("prod_approvers", "two"), r"prod_approvers: String should have at least 10 characters"),
        (_drop("prod_approvers"), r"prod_approvers: Field required"),
        (_set("approvals", 1), r"approvals: Extra inputs are not permitted"),
    ],
)
def test_fails_when_the_pipeline_config_is_wrong(
    tmp_path: Path, stage_configs: dict[str, StageConfig], mutate: Mutation, message: str
) -> None:
    data = _raw()
    mutate(data)
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, data, stage_configs)
    assert str(tmp_path / "pipeline.yaml") in str(err.value)  # every message names the file


def test_fails_when_the_pipeline_file_is_missing_or_not_a_mapping(
    tmp_path: Path, stage_configs: dict[str, StageConfig]
) -> None:
    with pytest.raises(ConfigError, match=r"no pipeline config"):
        load_pipeline_config(tmp_path / "absent.yaml", stage_configs=list(stage_configs.values()))
    with pytest.raises(ConfigError, match=r"a pipeline config is a mapping of fields, got list"):
        _load(tmp_path, ["dev"], stage_configs)


def test_fails_when_the_cdk_cli_is_not_pinned_exactly(tmp_path: Path) -> None:
    package = tmp_path / "package.json"
    package.write_text(json.dumps({"dependencies": {"aws-cdk": "^2.1148.1"}}))
    with pytest.raises(ConfigError, match=r"dependencies.aws-cdk: '\^2.1148.1' must be an exact version"):
        cdk_cli_version(package)
    assert (
        cdk_cli_version()
        == json.loads((PIPELINE_FILE.parents[2] / "package.json").read_text())["dependencies"]["aws-cdk"]
    )


# --- acknowledgements of generated wildcards (pure) ------------------------------------------------------------


def test_only_wildcards_on_the_pipelines_own_buckets_are_acknowledged() -> None:
    owned = _Owned(buckets=frozenset({"<ArtifactsBucket.Arn>"}), keys=frozenset({"<ArtifactsKey.Arn>"}))
    artifact_objects = {"Fn::Join": ["", [{"Fn::GetAtt": ["ArtifactsBucket", "Arn"]}, "/*"]]}
    assert _flatten(artifact_objects) == "<ArtifactsBucket.Arn>/*"
    own = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject*"], "Resource": [artifact_objects]}]}
    assert [f for f, _ in _wildcard_findings(own, owned)] == [
        "Action::s3:GetObject*",
        "Resource::<ArtifactsBucket.Arn>/*",
    ]
    # The same grant on any other bucket stays a finding for cdk-nag to report.
    other = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject*"], "Resource": ["arn:aws:s3:::data/*"]}]}
    assert _wildcard_findings(other, owned) == []
    admin = {"Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}
    assert _wildcard_findings(admin, owned) == []


# --- the synthesized pipeline stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_template(assembly: CloudAssembly) -> dict[str, Any]:
    """Return the template of the top-level Pipeline stack (not inside a stage assembly)."""
    for artifact in assembly.manifest["artifacts"].values():
        if artifact["type"] == "aws:cloudformation:stack" and artifact.get("displayName") == "Pipeline":
            data: dict[str, Any] = json.loads((assembly.outdir / artifact["properties"]["templateFile"]).read_text())
            return data
    raise AssertionError("no Pipeline stack in the synthesized app")


def _stages(template: dict[str, Any]) -> list[dict[str, Any]]:
    (pipeline,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    stages: list[dict[str, Any]] = pipeline["Properties"]["Stages"]
    return stages


def _stage(template: dict[str, Any], name: str) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = next(s for s in _stages(template) if s["Name"] == name)["Actions"]
    return actions


def _buildspec(template: dict[str, Any], command: str) -> dict[str, Any]:
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::CodeBuild::Project":
            spec: dict[str, Any] = json.loads(resource["Properties"]["Source"]["BuildSpec"])
            if any(command in c for c in spec["phases"]["build"]["commands"]):
                spec["_environment"] = resource["Properties"]["Environment"]
                return spec
    raise AssertionError(f"no CodeBuild project runs {command!r}")


def test_pipeline_mutates_itself_then_promotes_dev_staging_prod(pipeline_template: dict[str, Any]) -> None:
    names = [s["Name"] for s in _stages(pipeline_template)]
    assert names[:3] == ["Source", "Build", "UpdatePipeline"]
    deploy = [n for n in names if n in ("Dev", "Staging", "Prod")]
    assert deploy == ["Dev", "Staging", "Prod"]
    assert names.index("UpdatePipeline") < names.index("Dev")
    # Self-mutation deploys this stack with the CLI version package.json pins, never "latest".
    mutate = _buildspec(pipeline_template, "deploy Pipeline")
    assert mutate["phases"]["install"]["commands"] == [f"npm install -g aws-cdk@{cdk_cli_version()}"]
    assets = _buildspec(pipeline_template, "cdk-assets")
    assert assets["phases"]["install"]["commands"] == [f"npm install -g cdk-assets@{CDK_ASSETS_VERSION}"]


def test_synth_runs_make_synth_on_python_311_and_keeps_cdk_out(pipeline_template: dict[str, Any]) -> None:
    synth = _buildspec(pipeline_template, "make synth")
    assert synth["phases"]["build"]["commands"] == ["make synth"]
    assert synth["phases"]["install"]["runtime-versions"] == {"python": "3.11", "nodejs": "20"}
    assert synth["artifacts"]["base-directory"] == "cdk.out"
    assert synth["_environment"]["Image"] == "aws/codebuild/standard:7.0"
    assert synth["_environment"]["ComputeType"] == "BUILD_GENERAL1_MEDIUM"


def test_staging_is_smoke_tested_after_its_deploy_actions(
    pipeline_template: dict[str, Any], assembly: CloudAssembly
) -> None:
    actions = _stage(pipeline_template, "Staging")
    deploys = [a["RunOrder"] for a in actions if a["ActionTypeId"]["Category"] == "Deploy"]
    (smoke,) = [a for a in actions if a["Name"] == "SmokeTest"]
    assert smoke["RunOrder"] > max(deploys)
    commands = _buildspec(pipeline_template, "curl")["phases"]["build"]["commands"]
    urls = load_pipeline_config().staging_health_checks
    assert len(commands) == len(urls) and all(url in c and "--fail" in c for url, c in zip(urls, commands, strict=True))
    # Dev deploys without any gate.
    assert {a["ActionTypeId"]["Category"] for a in _stage(pipeline_template, "Dev")} == {"Deploy"}


def test_prod_waits_for_two_approvals_in_turn_before_any_deploy(pipeline_template: dict[str, Any]) -> None:
    actions = _stage(pipeline_template, "Prod")
    approvals = sorted((a for a in actions if a["ActionTypeId"]["Category"] == "Approval"), key=lambda a: a["RunOrder"])
    deploys = [a["RunOrder"] for a in actions if a["ActionTypeId"]["Category"] == "Deploy"]
    assert len(approvals) == APPROVALS == 2
    assert approvals[0]["RunOrder"] < approvals[1]["RunOrder"] < min(deploys)
    assert all(load_pipeline_config().prod_approvers in a["Configuration"]["CustomData"] for a in approvals)


def test_pipeline_deploys_the_apps_own_stage_templates(
    pipeline_template: dict[str, Any], assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    # The stages are the app's top-level ones (assembly-Dev/...), not a second copy under the pipeline stack.
    assert not [a for a in assembly.manifest["artifacts"] if a.startswith("assembly-Pipeline")]
    for stage, config in stage_configs.items():
        actions = [a for a in _stage(pipeline_template, stage_construct_id(stage)) if a["Name"].endswith(".Deploy")]
        deployed = {a["Configuration"]["StackName"] for a in actions}
        expected = {s.properties["stackName"] for s in assembly.stacks if s.stage == stage_construct_id(stage)}
        assert deployed == expected
        for action in _stage(pipeline_template, stage_construct_id(stage)):
            if action["Name"].endswith(".Prepare"):  # the change set: its template is the app's own file
                path = action["Configuration"]["TemplatePath"].split("::", 1)[1]
                assert path.startswith(f"assembly-{stage_construct_id(stage)}/") and (assembly.outdir / path).is_file()
                assert f"deploy-role-{config.account}-" in json.dumps(action["RoleArn"])


def test_artifacts_are_encrypted_with_a_rotating_key_and_access_logged(pipeline_template: dict[str, Any]) -> None:
    resources = pipeline_template["Resources"]
    (key,) = [r for r in resources.values() if r["Type"] == "AWS::KMS::Key"]
    assert key["Properties"]["EnableKeyRotation"] is True
    buckets = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::S3::Bucket"]
    artifacts = [b for b in buckets if "LoggingConfiguration" in b]
    assert len(artifacts) == 1
    encryption = artifacts[0]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    projects = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CodeBuild::Project"]
    assert projects and all("EncryptionKey" in p for p in projects)


def _top_level_stacks(assembly: CloudAssembly) -> dict[str, dict[str, Any]]:
    """Return the artifacts of the stacks outside any stage: the pipeline and its cross-region support stacks."""
    return {
        artifact.get("displayName", artifact_id): artifact
        for artifact_id, artifact in assembly.manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    }


def test_pipeline_stacks_pass_cfn_lint_and_the_size_limits(assembly: CloudAssembly) -> None:
    # The policy gates read the stage assemblies only; the top-level stacks are checked here.
    stacks = _top_level_stacks(assembly)
    assert "Pipeline" in stacks and any(name.startswith("cross-region-stack-") for name in stacks)
    for name, artifact in stacks.items():
        path = assembly.outdir / artifact["properties"]["templateFile"]
        region = artifact["environment"].rsplit("/", 1)[-1]
        errors = cfn_lint_errors(path, [region])
        # E3703 (prefer Fn::Sub to an empty-delimiter Fn::Join) is about how CDK Pipelines writes the target
        # accounts' role ARNs, not about what they mean; cfn-lint skips it for CDK resources it recognises
        # by their aws:cdk:path metadata, which `cdk synth` writes and the in-process test synth does not.
        assert [e for e in errors if " E3703 " not in e] == []
        assert size_violations(name, json.loads(path.read_text()), template_bytes(path)) == []


def test_pipeline_acknowledgements_give_real_reasons(assembly: CloudAssembly) -> None:
    acks: list[tuple[str, str, str]] = []
    for artifact_id, artifact in assembly.manifest["artifacts"].items():
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        metadata = json.loads((assembly.outdir / f"{artifact_id}.metadata.json").read_text())
        for path, entries in metadata.items():
            for entry in entries:
                if entry.get("type") == "aws:cdk:acknowledged-rules":
                    acks.extend((path, rule, reason) for rule, reason in entry["data"].items())
    rules = {re.sub(r"^annotation::", "", rule, flags=re.IGNORECASE) for _, rule, _ in acks}
    assert "AwsSolutions-IAM5[Resource::*]" in rules and all(r.startswith("AwsSolutions-IAM5[") for r in rules)
    assert weak_acknowledgements(acks) == []
    open_findings = unacknowledged_findings(assembly.validation_report)
    assert [f for f in open_findings if " at Pipeline/" in f or " at cross-region-stack-" in f] == []
