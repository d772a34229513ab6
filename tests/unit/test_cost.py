"""The cost report (scripts/cost.py) and the stage budgets (CostStack).

The estimate is checked to the cent for a small fixed config and hand-written templates: a change of a
price in config/prices.py or config/catalog.py moves these figures, and that is a reviewed change. The
budgets are read from the session's synthesized app.
"""

from __future__ import annotations

from typing import Any

import pytest

from config.model import StageConfig
from config.prices import PRICES_AS_OF, cache_node_hourly_usd, rds_hourly_usd
from config.workstation import CostConfig
from scripts.cost import CostLine, estimate, format_report, stage_templates, totals
from tests.support.assembly import CloudAssembly

FIXED_STAGE: dict[str, Any] = {
    "stage": "fixed",
    "tier": "dev",
    "account": "123456789012",
    "region": "us-east-1",
    "availability_zones": ["us-east-1a", "us-east-1b"],
    "owner": "team",
    "cost_center": "cc-1",
    "termination_protection": False,
    "network": {
        "public_subnets": ["10.0.1.0/24", "10.0.2.0/24"],
        "data_subnets": ["10.0.11.0/24", "10.0.12.0/24"],
        "node_subnets": ["10.0.64.0/18", "10.0.128.0/18"],
    },
    "data": {"removal_policy": "destroy"},
    "cluster": {
        "node_pools": [
            {"name": "system", "provisioner": "nodegroup", "instance_types": ["m5.2xlarge"],
             "workload_types": ["control"], "min_nodes": 2, "max_nodes": 3},
            {"name": "gpu", "provisioner": "karpenter", "instance_types": ["p4d.24xlarge"],
             "workload_types": ["training"], "max_nodes": 1},
            {"name": "t4", "provisioner": "nodegroup", "instance_types": ["g4dn.xlarge"],
             "workload_types": ["online-inference"], "min_nodes": 1, "max_nodes": 2,
             "peak": {"extra_nodes": 1, "start_hour_utc": 8, "end_hour_utc": 22}},
        ]
    },
    "components": {"edge": False},
    "cost": {"budget_monthly_usd": 1500, "nat_data_gb_per_month": 100, "efs_storage_gib": 100, "alb_lcus": 1,
             "waf_requests_millions_per_month": 10},
}  # fmt: skip

LOAD_BALANCER = "AWS::ElasticLoadBalancingV2::LoadBalancer"
FIVE_RULES = [{"Name": f"Rule{n}"} for n in range(5)]
FIXED_TEMPLATES: dict[str, dict[str, Any]] = {
    "Network": {
        "Resources": {
            "Nat": {"Type": "AWS::EC2::NatGateway", "Properties": {}},
            "S3": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {"VpcEndpointType": "Gateway"}},
            "Sts": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {"VpcEndpointType": "Interface",
                                                                    "SubnetIds": ["a", "b"]}},
            "Logs": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {"VpcEndpointType": "Interface",
                                                                     "SubnetIds": ["a", "b"]}},
        }
    },
    "Cluster": {"Resources": {"Cluster": {"Type": "AWS::EKS::Cluster", "Properties": {}}}},
    "Data": {
        "Resources": {
            "Db": {"Type": "AWS::RDS::DBInstance", "Properties": {"DBInstanceClass": "db.t4g.medium",
                                                                 "MultiAZ": False, "AllocatedStorage": "50"}},
            "Cache": {"Type": "AWS::ElastiCache::ReplicationGroup",
                      "Properties": {"CacheNodeType": "cache.t4g.medium", "NumNodeGroups": 1,
                                     "ReplicasPerNodeGroup": 0, "Engine": "valkey"}},
            "Fs": {"Type": "AWS::EFS::FileSystem", "Properties": {}},
        }
    },
    "Edge": {
        "Resources": {
            "Alb": {"Type": LOAD_BALANCER, "Properties": {"Type": "application"}},
            "Nlb": {"Type": LOAD_BALANCER, "Properties": {"Type": "network"}},
            "Acl": {"Type": "AWS::WAFv2::WebACL", "Properties": {"Rules": FIVE_RULES}},
        }
    },
    "Workstation": {
        "Resources": {
            "Ws": {"Type": "AWS::EC2::Instance", "Properties": {
                "InstanceType": "t3.medium", "BlockDeviceMappings": [{"Ebs": {"VolumeSize": 50}}]}},
        }
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def fixed_lines() -> dict[str, CostLine]:
    lines = estimate(StageConfig.model_validate(FIXED_STAGE), FIXED_TEMPLATES)
    return {line.item: line for line in lines}


def test_cost_report_figures_for_a_fixed_config(fixed_lines: dict[str, CostLine]) -> None:
    # (USD/month, ceiling) at the prices of PRICES_AS_OF, 730 hours a month.
    expected = {
        "EKS control plane": (73.00, 73.00),  # 0.10 x 730
        "pool system": (576.64, 864.96),  # 2 x 0.384 x 730 + 2 x 100 GiB x 0.08; max 3
        "pool gpu": (0.00, 16029.34),  # Karpenter: nothing at rest; 1 x 21.958 x 730 at most
        "pool t4": (615.97, 783.96),  # 0.526 x (730 + 14 h x 730/24) + 100 GiB x 0.08; max 2
        "NAT gateways": (37.35, 37.35),  # 0.045 x 730 + 100 GB x 0.045
        "interface endpoints": (29.20, 29.20),  # 2 endpoints x 2 zones x 0.01 x 730
        "PostgreSQL (RDS)": (53.20, 53.20),  # 0.065 x 730 + 50 GiB x 0.115
        "cache (valkey)": (37.96, 37.96),  # 0.065 x 0.8 x 730
        "EFS": (30.00, 30.00),  # 100 GiB x 0.30
        "application load balancers": (22.27, 22.27),  # (0.0225 + 1 LCU x 0.008) x 730; the NLB is not one
        "WAF web ACL": (16.00, 16.00),  # 5 + 5 rules x 1 + 10 M x 0.60
        "ML workstation": (34.37, 34.37),  # 0.0416 x 730 + 50 GiB x 0.08
    }
    assert {item: (line.monthly_usd, line.ceiling) for item, line in fixed_lines.items()} == expected
    assert totals(list(fixed_lines.values())) == (1525.96, 18011.61)


def test_cost_lines_name_their_component(fixed_lines: dict[str, CostLine]) -> None:
    components = {item: line.component for item, line in fixed_lines.items()}
    assert components["pool t4"] == "cluster"
    assert components["NAT gateways"] == "network"
    assert components["EFS"] == "data"
    assert components["WAF web ACL"] == "edge"
    assert components["ML workstation"] == "workstation"
    assert "+1 08-22 UTC" in fixed_lines["pool t4"].detail


def test_report_prints_the_price_date_the_total_and_the_budget(fixed_lines: dict[str, CostLine]) -> None:
    report = format_report(StageConfig.model_validate(FIXED_STAGE), list(fixed_lines.values()))
    assert f"as of {PRICES_AS_OF}" in report
    assert "1,525.96" in report
    assert "18,011.61" in report
    assert "budget: 1,500.00 USD/month; the estimate is 102% of it (OVER the budget" in report


def test_nothing_is_counted_without_templates() -> None:
    assert estimate(StageConfig.model_validate(FIXED_STAGE), {}) == []


def test_fails_when_an_rds_class_has_no_price() -> None:
    with pytest.raises(ValueError, match=r"no price for RDS instance class 'db\.x2g\.large'"):
        rds_hourly_usd("db.x2g.large", multi_az=False)
    with pytest.raises(ValueError, match=r"no price for cache node type 'cache\.r6g\.large'"):
        cache_node_hourly_usd("cache.r6g.large", engine="valkey")


def test_fails_when_budget_percentages_are_not_increasing() -> None:
    with pytest.raises(ValueError, match=r"must be increasing without repeats"):
        CostConfig(budget_alert_percentages=(100, 80))


def test_every_stage_is_estimated_from_its_templates(
    assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    for name, config in stage_configs.items():
        lines = {line.item: line for line in estimate(config, stage_templates(assembly, name))}
        nat = config.network.nat_gateways
        assert lines["NAT gateways"].detail.startswith(f"{nat} x 730 h"), name
        endpoints = len(config.network.interface_endpoints)
        zones = len(config.availability_zones)
        assert f"{endpoints * zones} endpoint-zones" in lines["interface endpoints"].detail, name
        rds = config.data.rds
        assert lines["PostgreSQL (RDS)"].detail.startswith(rds.instance_class), name
        assert {f"pool {p.name}" for p in config.cluster.node_pools} <= set(lines), name
        assert totals(list(lines.values()))[0] > 0


# Budgets: one per stage with a configured limit, alerting the stage's alarm topic at 80% and 100%.


def _budget(assembly: CloudAssembly, stage: str) -> dict[str, Any]:
    budgets = assembly.stack(stage, "Cost").resources_of("AWS::Budgets::Budget")
    assert len(budgets) == 1
    props: dict[str, Any] = next(iter(budgets.values()))["Properties"]
    return props


def test_every_stage_has_a_monthly_budget_with_its_configured_limit(
    assembly: CloudAssembly, stage_configs: dict[str, StageConfig]
) -> None:
    for name, config in stage_configs.items():
        budget = _budget(assembly, name.capitalize())["Budget"]
        assert budget["BudgetLimit"] == {"Amount": config.cost.budget_monthly_usd, "Unit": "USD"}
        assert budget["TimeUnit"] == "MONTHLY"
        assert budget["BudgetType"] == "COST"
        assert budget["BudgetName"] == f"ml-platform-{name}-monthly"
        assert budget["CostFilters"] == {"TagKeyValue": [f"user:stage${name}"]}
    assert _budget(assembly, "Prod")["Budget"]["BudgetLimit"]["Amount"] == 42000


def test_budget_notifies_the_alarm_topic_at_80_and_100_percent(assembly: CloudAssembly) -> None:
    notifications = _budget(assembly, "Prod")["NotificationsWithSubscribers"]
    assert [n["Notification"] for n in notifications] == [
        {"ComparisonOperator": "GREATER_THAN", "NotificationType": "ACTUAL", "Threshold": t,
         "ThresholdType": "PERCENTAGE"}
        for t in (80, 100)
    ]  # fmt: skip
    observability = assembly.stack("Prod", "Observability")
    topic_id = next(iter(observability.resources_of("AWS::SNS::Topic")))
    for notification in notifications:
        (subscriber,) = notification["Subscribers"]
        assert subscriber["SubscriptionType"] == "SNS"
        # A weak cross-stack reference to the observability stack's topic.
        assert topic_id in str(subscriber["Address"])


def test_budgets_may_publish_to_the_topic_and_use_its_key(assembly: CloudAssembly) -> None:
    observability = assembly.stack("Prod", "Observability")
    (policy,) = observability.resources_of("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    budgets = [s for s in statements if s.get("Principal") == {"Service": "budgets.amazonaws.com"}]
    assert budgets == [
        {
            "Action": "sns:Publish",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": "333333333333"},
                "ArnLike": {"aws:SourceArn": "arn:aws:budgets::333333333333:*"},
            },
            "Effect": "Allow",
            "Principal": {"Service": "budgets.amazonaws.com"},
            "Resource": budgets[0]["Resource"],
            "Sid": "AllowBudgetsOfThisAccountToPublish",
        }
    ]
    key_statements = [
        s
        for key in observability.resources_of("AWS::KMS::Key").values()
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "budgets.amazonaws.com"}
    ]
    assert len(key_statements) == 1
    assert set(key_statements[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert key_statements[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": "333333333333"}}
