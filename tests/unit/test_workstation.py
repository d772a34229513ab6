"""The ML workstation: its config rules, its boot script, and dev's synthesized WorkstationStack.

Stack facts come from the session's synthesized app (dev enables the workstation); expected values
come from dev's stage config where it sets them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loader import CONFIG_DIR
from config.model import StageConfig
from config.workstation import WorkstationConfig
from platform_constructs.workstation import (
    DEEP_LEARNING_AMI_PARAMETER,
    DNF_PACKAGES,
    PIP_PACKAGES,
    TORCH_CPU_INDEX,
    workstation_user_data,
)
from tests.support.assembly import CloudAssembly, StackArtifact

# Config rules.


def _dev_with(workstation: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((CONFIG_DIR / "dev.yaml").read_text())
    raw["workstation"] = {**raw.get("workstation", {}), **workstation}
    return raw


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_fails_when_the_workstation_is_opened_to_the_internet(cidr: str) -> None:
    message = rf"workstation\.ingress_cidrs: {re.escape(cidr)} opens SSH, JupyterLab and TensorBoard"
    with pytest.raises(ValueError, match=message):
        StageConfig.model_validate(_dev_with({"ingress_cidrs": ["203.0.113.0/24", cidr]}))


def test_fails_when_an_ingress_network_is_not_a_cidr() -> None:
    with pytest.raises(ValueError, match=r"'10.0.0.1/8' is not a network in CIDR form"):
        WorkstationConfig(ingress_cidrs=("10.0.0.1/8",))


def test_fails_when_the_instance_type_is_unknown() -> None:
    with pytest.raises(ValueError, match=r"unknown instance type 'x9\.huge'"):
        WorkstationConfig(instance_type="x9.huge")


def test_fails_when_a_gpu_workstation_has_a_small_root_volume() -> None:
    with pytest.raises(ValueError, match=r"g4dn.xlarge has GPUs and boots the Deep Learning AMI.*got 50"):
        WorkstationConfig(instance_type="g4dn.xlarge", root_volume_gib=50)


def test_fails_when_the_ami_id_is_malformed() -> None:
    with pytest.raises(ValueError, match="is not an AMI ID"):
        WorkstationConfig(ami_id="ami-xyz")


def test_instance_type_decides_image_and_recovery() -> None:
    cpu = WorkstationConfig()
    assert (cpu.instance_type, cpu.gpu, cpu.recoverable) == ("t3.medium", False, True)
    gpu = WorkstationConfig(instance_type="g4dn.xlarge", root_volume_gib=100)
    # g4dn has instance-store NVMe: EC2 cannot recover it onto other hardware.
    assert (gpu.gpu, gpu.recoverable) == (True, False)
    allowed = WorkstationConfig(ingress_cidrs=("203.0.113.0/24", "2001:db8::/32"))
    assert allowed.ingress_cidrs == ("203.0.113.0/24", "2001:db8::/32")


# The boot script as data.


def _script(*, gpu: bool) -> str:
    return "\n".join(
        workstation_user_data(
            region="us-east-1",
            token_secret_arn="arn:aws:secretsmanager:us-east-1:111111111111:secret:token",
            setup_log_group="/p/setup",
            jupyter_log_group="/p/jupyterlab",
            gpu=gpu,
        )
    )


def test_user_data_installs_every_tool_pinned() -> None:
    script = _script(gpu=False)
    for name, version in PIP_PACKAGES.items():
        assert f"{name}=={version}" in script, name
    for package in ("git", "vim-enhanced", "tmux", "amazon-cloudwatch-agent", "awscli-2", "python3.12"):
        assert package in DNF_PACKAGES
        assert package in script
    assert "jupyterlab.service" in script
    assert "tensorboard.service" in script
    assert "amazon-cloudwatch-agent-ctl -a fetch-config" in script


def test_user_data_reads_the_jupyter_token_from_secrets_manager_at_start() -> None:
    script = _script(gpu=False)
    assert "c.IdentityProvider.token = subprocess.check_output(" in script
    assert "'secretsmanager', 'get-secret-value'" in script
    # Nothing echoes commands into the setup log that CloudWatch receives.
    assert "set -x" not in script
    assert "set -euo pipefail" in script


def test_cpu_workstations_take_the_cpu_torch_wheel_and_gpu_ones_collect_gpu_metrics() -> None:
    assert f"--index-url {TORCH_CPU_INDEX} torch==" in _script(gpu=False)
    assert TORCH_CPU_INDEX not in _script(gpu=True)
    assert "nvidia_gpu" in _script(gpu=True)
    assert "nvidia_gpu" not in _script(gpu=False)


def test_deep_learning_ami_comes_from_the_public_ssm_parameter() -> None:
    assert DEEP_LEARNING_AMI_PARAMETER == (
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
    )


# The synthesized dev workstation.


@pytest.fixture(scope="module")
def stack(assembly: CloudAssembly) -> StackArtifact:
    return assembly.stack("Dev", "Workstation")


def _one(stack: StackArtifact, cfn_type: str) -> dict[str, Any]:
    (resource,) = stack.resources_of(cfn_type).values()
    return resource


def _by_id_prefix(stack: StackArtifact, cfn_type: str, prefix: str) -> dict[str, Any]:
    (resource,) = [r for k, r in stack.resources_of(cfn_type).items() if k.startswith(prefix)]
    return resource


def _text(value: Any) -> str:
    """Flatten an Fn::Join / Fn::Base64 value into text, intrinsics as their JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Base64" in value:
        return _text(value["Fn::Base64"])
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_text(p) for p in parts)
    return json.dumps(value)


def test_only_stages_that_enable_it_have_a_workstation(
    assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    for name, config in stage_configs.items():
        ids = {s.construct_id for s in assembly.stacks if s.stage == name.capitalize()}
        assert ("Workstation" in ids) == (config.workstation.enabled or config.components.workstation), name
    assert stage_configs["dev"].workstation.enabled


def test_instance_type_monitoring_and_no_public_address(stack: StackArtifact) -> None:
    props = _one(stack, "AWS::EC2::Instance")["Properties"]
    assert props["InstanceType"] == "t3.medium"
    assert props["Monitoring"] is True
    assert props["DisableApiTermination"] is False  # dev only; the stage turns it on elsewhere
    assert props["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is False
    assert "PublishOutputRefVpcNodesSubnet" in json.dumps(props["NetworkInterfaces"][0]["SubnetId"])
    assert {"Key": "Name", "Value": "ml-platform-dev-workstation"} in props["Tags"]


def test_image_is_al2023_from_the_ssm_parameter_without_a_lookup(stack: StackArtifact) -> None:
    props = _one(stack, "AWS::EC2::Instance")["Properties"]
    parameter = props["ImageId"]["Ref"]
    assert stack.template["Parameters"][parameter] == {
        "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
        "Default": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    }
    manifest = json.loads((Path(stack.template_path).parent / "manifest.json").read_text())
    assert "missing" not in manifest, "a context lookup crept in"


def test_imdsv2_is_required(stack: StackArtifact) -> None:
    template = _one(stack, "AWS::EC2::LaunchTemplate")["Properties"]
    assert template["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required"
    props = _one(stack, "AWS::EC2::Instance")["Properties"]
    assert props["LaunchTemplate"]["LaunchTemplateName"] == template["LaunchTemplateName"]


def test_root_volume_is_50_gib_encrypted_gp3(stack: StackArtifact) -> None:
    (mapping,) = _one(stack, "AWS::EC2::Instance")["Properties"]["BlockDeviceMappings"]
    assert mapping == {
        "DeviceName": "/dev/xvda",
        "Ebs": {"DeleteOnTermination": True, "Encrypted": True, "VolumeSize": 50, "VolumeType": "gp3"},
    }


def test_no_inbound_rule_by_default(stack: StackArtifact) -> None:
    group = _one(stack, "AWS::EC2::SecurityGroup")["Properties"]
    assert "SecurityGroupIngress" not in group
    assert stack.resources_of("AWS::EC2::SecurityGroupIngress") == {}


def test_cpu_alarm_fires_above_80_percent_for_two_5_minute_periods(stack: StackArtifact) -> None:
    props = _by_id_prefix(stack, "AWS::CloudWatch::Alarm", "WorkstationCpuAlarm")["Properties"]
    metric = (props["MetricName"], props["Namespace"], props["Statistic"])
    assert metric == ("CPUUtilization", "AWS/EC2", "Average")
    assert (props["Threshold"], props["Period"], props["EvaluationPeriods"]) == (80, 300, 2)
    assert props["ComparisonOperator"] == "GreaterThanThreshold"


def test_failed_status_checks_recover_or_reboot_the_instance(stack: StackArtifact) -> None:
    system = _by_id_prefix(stack, "AWS::CloudWatch::Alarm", "WorkstationStatusCheckAlarm")["Properties"]
    assert (system["MetricName"], system["Threshold"], system["ComparisonOperator"]) == (
        "StatusCheckFailed_System", 0, "GreaterThanThreshold"
    )  # fmt: skip
    assert "arn:aws:automate:us-east-1:ec2:recover" in system["AlarmActions"]
    guest = _by_id_prefix(stack, "AWS::CloudWatch::Alarm", "WorkstationInstanceCheckAlarm")["Properties"]
    assert guest["MetricName"] == "StatusCheckFailed_Instance"
    assert "arn:aws:automate:us-east-1:ec2:reboot" in guest["AlarmActions"]
    # Every alarm also notifies the stage's alarm topic.
    for alarm in stack.resources_of("AWS::CloudWatch::Alarm").values():
        assert any("AlarmTopic" in json.dumps(a) for a in alarm["Properties"]["AlarmActions"])


def test_user_data_mentions_each_tool(stack: StackArtifact) -> None:
    script = _text(_one(stack, "AWS::EC2::Instance")["Properties"]["UserData"])
    tools = ("python3.12", "awscli-2", "numpy==", "pandas==", "scikit-learn==", "torch==", "tensorflow==",
             "jupyterlab==", "tensorboard==", "git", "vim-enhanced", "tmux",
             "amazon-cloudwatch-agent")  # fmt: skip
    for tool in tools:
        assert tool in script, tool
    assert "/ml-platform/dev/workstation/setup" in script
    # The token's secret is referenced, its value never appears.
    secret_id = next(iter(stack.resources_of("AWS::SecretsManager::Secret")))
    assert json.dumps({"Ref": secret_id}) in script


def test_profile_is_scoped_to_the_two_buckets_and_their_key(stack: StackArtifact) -> None:
    resource = _by_id_prefix(stack, "AWS::IAM::Policy", "WorkstationBucketsPolicy")
    policy = resource["Properties"]["PolicyDocument"]
    statements = {s["Sid"]: s for s in policy["Statement"]}
    buckets = [f"arn:aws:s3:::ml-platform-dev-{p}-111111111111-us-east-1" for p in ("datasets", "models")]
    assert statements["ListBuckets"]["Resource"] == buckets
    assert statements["ReadWriteObjects"]["Resource"] == [f"{b}/*" for b in buckets]
    assert not any("Delete" in a for s in policy["Statement"] for a in s["Action"])
    kms = statements["UseDataKeyThroughS3"]
    assert "DataKey" in json.dumps(kms["Resource"])
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    every_resource = json.dumps([s["Resource"] for p in stack.resources_of("AWS::IAM::Policy").values()
                                 for s in p["Properties"]["PolicyDocument"]["Statement"]])  # fmt: skip
    assert every_resource.count("arn:aws:s3:::") == 4, "no bucket but the datasets and models buckets"


def test_role_uses_session_manager_and_a_scoped_cloudwatch_agent_policy(stack: StackArtifact) -> None:
    roles = [r for r in stack.resources_of("AWS::IAM::Role").values()
             if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
                 "Service": "ec2.amazonaws.com"}]  # fmt: skip
    (role,) = roles
    assert "AmazonSSMManagedInstanceCore" in json.dumps(role["Properties"]["ManagedPolicyArns"])
    agent = _by_id_prefix(stack, "AWS::IAM::Policy", "WorkstationCloudWatchAgentPolicy")["Properties"]
    (metrics, _describe) = agent["PolicyDocument"]["Statement"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "CWAgent"}}


def test_log_groups_are_encrypted_with_retention(
    stack: StackArtifact,
    stage_configs: dict[str, StageConfig],
) -> None:
    log_groups = stack.resources_of("AWS::Logs::LogGroup").values()
    groups = {g["Properties"]["LogGroupName"]: g["Properties"] for g in log_groups}
    assert set(groups) == {"/ml-platform/dev/workstation/setup", "/ml-platform/dev/workstation/jupyterlab"}
    for props in groups.values():
        assert props["RetentionInDays"] == stage_configs["dev"].log_retention_days
        assert "LogsKey" in json.dumps(props["KmsKeyId"])
    # The CloudWatch agent writes to them from the first boot.
    depends_on = _one(stack, "AWS::EC2::Instance").get("DependsOn", [])
    assert set(stack.resources_of("AWS::Logs::LogGroup")) <= set(depends_on)


def test_nightly_stop_schedule_stops_this_instance(
    stack: StackArtifact,
    stage_configs: dict[str, StageConfig],
) -> None:
    hour = stage_configs["dev"].workstation.stop_hour_utc
    props = _one(stack, "AWS::Scheduler::Schedule")["Properties"]
    assert props["ScheduleExpression"] == f"cron(0 {hour} * * ? *)"
    assert props["ScheduleExpressionTimezone"] == "UTC"
    assert props["Target"]["Arn"] == "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
    instance_id = next(iter(stack.resources_of("AWS::EC2::Instance")))
    assert json.dumps({"Ref": instance_id}) in json.dumps(props["Target"]["Input"])
    role_policy = _by_id_prefix(stack, "AWS::IAM::Policy", "WorkstationStopSchedulerRole")["Properties"]
    (statement,) = role_policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "ec2:StopInstances"
    assert json.dumps({"Ref": instance_id}) in json.dumps(statement["Resource"])


def test_jupyter_token_is_generated_not_in_the_template(stack: StackArtifact) -> None:
    secret = _one(stack, "AWS::SecretsManager::Secret")["Properties"]
    assert "GenerateSecretString" in secret
    assert "SecretString" not in secret
