"""KeysStack and NetworkStack from the synthesized app: retained keys, the subnet plan, endpoints, flow logs."""

from __future__ import annotations

import ipaddress

import pytest

from config.model import StageConfig
from tests.support.assembly import CloudAssembly

# Logical IDs of the shared keys: a change means CloudFormation replaces the key and what it encrypted
# (Kubernetes secrets, every log group) becomes unreadable.
KEY_IDS = {"LogsKey195F8DFC": "AWS::KMS::Key", "ClusterSecretsKeyD4EBA5A2": "AWS::KMS::Key"}


@pytest.mark.parametrize("stage", ["Dev", "Staging", "Prod"])
def test_key_logical_ids_are_stable(assembly: CloudAssembly, stage: str) -> None:
    resources = assembly.stack(stage, "Keys").resources
    for logical_id, cfn_type in KEY_IDS.items():
        assert resources[logical_id]["Type"] == cfn_type, f"{stage}: {logical_id} renamed: it would be replaced"
        assert resources[logical_id]["Properties"]["EnableKeyRotation"] is True


@pytest.mark.parametrize(("stage", "policy", "protected"), [("Dev", "Delete", False), ("Staging", "Retain", True),
                                                             ("Prod", "Retain", True)])  # fmt: skip
def test_keys_retained_and_protected_outside_dev(
    assembly: CloudAssembly, stage: str, policy: str, protected: bool
) -> None:
    keys = assembly.stack(stage, "Keys")
    for logical_id in KEY_IDS:
        assert keys.resources[logical_id]["DeletionPolicy"] == policy
    assert keys.properties.get("terminationProtection", False) is protected


def test_logs_key_admits_cloudwatch_logs_of_this_account_only(assembly: CloudAssembly) -> None:
    statements = assembly.stack("Prod", "Keys").resources["LogsKey195F8DFC"]["Properties"]["KeyPolicy"]["Statement"]
    (logs,) = [s for s in statements if s.get("Sid") == "AllowCloudWatchLogsOfThisAccount"]
    assert logs["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    assert logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"] == (
        "arn:aws:logs:us-east-1:333333333333:log-group:*"
    )


@pytest.mark.parametrize("stage", ["dev", "staging", "prod"])
def test_subnets_follow_the_plan(assembly: CloudAssembly, stage_configs: dict[str, StageConfig], stage: str) -> None:
    cfg = stage_configs[stage]
    network = assembly.stack(stage.capitalize(), "Network")
    (vpc,) = network.resources_of("AWS::EC2::VPC").values()
    assert vpc["Properties"]["CidrBlock"] == cfg.network.vpc_cidr
    subnets = {
        (
            s["Properties"]["CidrBlock"],
            s["Properties"]["AvailabilityZone"],
            s["Properties"]["MapPublicIpOnLaunch"],
        )
        for s in network.resources_of("AWS::EC2::Subnet").values()
    }
    expected = set()
    for tier, public in (("public_subnets", True), ("data_subnets", False), ("node_subnets", False)):
        for cidr, zone in zip(getattr(cfg.network, tier), cfg.availability_zones, strict=True):
            expected.add((cidr, zone, public))
    assert subnets == expected
    # Node subnets hold the pods: each is far larger than a /24 (see README, "Subnet sizing").
    assert all(ipaddress.ip_network(c).prefixlen <= 18 for c in cfg.network.node_subnets)


@pytest.mark.parametrize(("stage", "nat"), [("Dev", 1), ("Staging", 2), ("Prod", 3)])
def test_nat_gateways_per_stage(assembly: CloudAssembly, stage: str, nat: int) -> None:
    assert len(assembly.stack(stage, "Network").resources_of("AWS::EC2::NatGateway")) == nat


def test_flow_logs_to_encrypted_log_group_with_retention(
    assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    network = assembly.stack("Prod", "Network")
    (flow,) = network.resources_of("AWS::EC2::FlowLog").values()
    assert flow["Properties"]["TrafficType"] == "ALL"
    assert flow["Properties"]["LogDestinationType"] == "cloud-watch-logs"
    (group,) = network.resources_of("AWS::Logs::LogGroup").values()
    assert group["Properties"]["RetentionInDays"] == stage_configs["prod"].network.flow_log_retention_days
    assert "KmsKeyId" in group["Properties"]


def test_endpoints_s3_gateway_and_configured_interfaces(
    assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    for stage, cfg in stage_configs.items():
        endpoints = [e["Properties"] for e in assembly.stack(stage.capitalize(), "Network").resources_of(
            "AWS::EC2::VPCEndpoint").values()]  # fmt: skip
        gateways = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway"]
        assert len(gateways) == 1 and "s3" in str(gateways[0]["ServiceName"])
        interfaces = [e for e in endpoints if e.get("VpcEndpointType") == "Interface"]
        assert len(interfaces) == len(cfg.network.interface_endpoints)
        assert all(e["PrivateDnsEnabled"] is True for e in interfaces)


def test_subnets_carry_the_discovery_tags(assembly: CloudAssembly) -> None:
    network = assembly.stack("Prod", "Network")
    tagged = {
        s["Properties"]["CidrBlock"]: {t["Key"]: t["Value"] for t in s["Properties"]["Tags"]}
        for s in network.resources_of("AWS::EC2::Subnet").values()
    }
    assert tagged["10.0.1.0/24"]["kubernetes.io/role/elb"] == "1"
    assert tagged["10.0.64.0/18"]["karpenter.sh/discovery"] == "ml-platform-prod"
    assert tagged["10.0.64.0/18"]["kubernetes.io/role/internal-elb"] == "1"
    # Every resource carries the cost-allocation tags.
    assert {"project", "stage", "owner", "cost-center"} <= set(tagged["10.0.11.0/24"])
