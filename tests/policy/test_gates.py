"""The verification gates over the synthesized app: cfn-lint, cdk-nag, template limits."""

from __future__ import annotations

import pytest

from tests.support.assembly import CloudAssembly
from tests.support.gates import (
    cfn_lint_errors,
    size_violations,
    template_bytes,
    unacknowledged_findings,
    weak_acknowledgements,
)


def test_every_stage_is_synthesized(assembly: CloudAssembly, stage_configs: dict[str, object]) -> None:
    expected = {name.capitalize() for name in stage_configs}
    assert set(assembly.stages) == expected
    for stage in expected:
        ids = {s.construct_id for s in assembly.stacks if s.stage == stage}
        assert {"Keys", "Network", "Data"} <= ids, f"{stage} has only {sorted(ids)}"


def test_cfn_lint_reports_no_errors(assembly: CloudAssembly) -> None:
    errors: list[str] = []
    for stack in assembly.stacks:
        region = _region_of(assembly, stack.stage, stack.artifact_id)
        errors += cfn_lint_errors(stack.template_path, [region])
    assert errors == [], "\n".join(errors)


def _region_of(assembly: CloudAssembly, stage: str, artifact_id: str) -> str:
    import json

    stage_dir = next(s.template_path.parent for s in assembly.stacks if s.stage == stage)
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    env: str = manifest["artifacts"][artifact_id]["environment"]
    return env.rsplit("/", 1)[-1]


def test_cdk_nag_has_no_unacknowledged_findings(assembly: CloudAssembly) -> None:
    plugins = [p.get("pluginName") for p in assembly.validation_report.get("pluginReports", [])]
    assert unacknowledged_findings(assembly.validation_report) == [], plugins


def test_every_acknowledgement_has_a_real_reason(assembly: CloudAssembly) -> None:
    acks = assembly.acknowledgements()
    assert acks, "expected cdk-nag acknowledgements in the app metadata; the metadata path may have changed"
    assert weak_acknowledgements(acks) == []


def test_templates_stay_within_cloudformation_limits(assembly: CloudAssembly) -> None:
    problems: list[str] = []
    for stack in assembly.stacks:
        name = f"{stack.stage}/{stack.construct_id}"
        problems += size_violations(name, stack.template, template_bytes(stack.template_path))
    assert problems == [], "\n".join(problems)


# The gates fail for real: each one is shown a seeded violation.


def test_cfn_lint_gate_catches_a_seeded_error(assembly: CloudAssembly, tmp_path: pytest.TempPathFactory) -> None:
    import json
    from pathlib import Path

    stack = assembly.stack("Dev", "Network")
    template = json.loads(stack.template_path.read_text())
    vpc_id = next(k for k, v in template["Resources"].items() if v["Type"] == "AWS::EC2::VPC")
    template["Resources"][vpc_id]["Properties"]["CidrBlockk"] = "10.0.0.0/16"
    seeded = Path(str(tmp_path)) / "seeded.template.json"
    seeded.write_text(json.dumps(template))
    errors = cfn_lint_errors(seeded, ["us-east-1"])
    assert any("CidrBlockk" in e for e in errors), errors


def test_size_gate_catches_a_template_near_the_limits() -> None:
    crowded = {"Resources": {f"R{i}": {"Type": "AWS::SNS::Topic"} for i in range(401)}}
    assert size_violations("seeded", crowded, 10) == ["seeded: 401 resources is over 80% of the 500 resource limit"]
    assert size_violations("seeded", {"Resources": {}}, 800_001)[0].startswith("seeded: 800001 bytes")
    assert size_violations("fine", {"Resources": {"A": {}}}, 1000) == []


def test_nag_gate_catches_a_seeded_finding() -> None:
    report = {
        "pluginReports": [
            {
                "pluginName": "AwsSolutions",
                "violations": [
                    {
                        "ruleName": "AwsSolutions-S1",
                        "description": "The S3 Bucket has server access logs disabled.",
                        "violatingConstructs": [{"constructPath": "Dev/Data/Seeded/Resource"}],
                    }
                ],
            }
        ]
    }
    assert unacknowledged_findings(report) == [
        "AwsSolutions: AwsSolutions-S1 at Dev/Data/Seeded/Resource: The S3 Bucket has server access logs disabled."
    ]


def test_acknowledgement_gate_rejects_lazy_reasons() -> None:
    acks = [
        ("/Dev/Data/A", "AwsSolutions-S1", "suppressed"),
        ("/Dev/Data/B", "AwsSolutions-S1", "ok"),
        (
            "/Dev/Data/C",
            "AwsSolutions-S1",
            "This bucket receives the access logs of the others; logging it to itself loops.",
        ),
    ]
    assert [w.split(" at ")[1].split(":")[0] for w in weak_acknowledgements(acks)] == ["/Dev/Data/A", "/Dev/Data/B"]


def test_cdk_nag_itself_flags_a_seeded_unencrypted_bucket(tmp_path: pytest.TempPathFactory) -> None:
    # The real plugin, on a tiny app: a bucket without access logs, TLS policy or encryption must be flagged.
    import json
    from pathlib import Path

    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    outdir = Path(str(tmp_path)) / "cdk.out"
    app = cdk.App(outdir=str(outdir), stack_traces=False, builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Seeded")
    s3.Bucket(stack, "Careless")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((outdir / "validation-report.json").read_text())
    rules = {line.split(" at ")[0] for line in unacknowledged_findings(report)}
    assert {"AwsSolutions: AwsSolutions-S1", "AwsSolutions: AwsSolutions-S10"} <= rules
