"""Estimate each stage's monthly cost from the synthesized app and the stage configs (``make cost``).

What runs all month comes from the templates (NAT gateways, interface endpoints and their zones, the
database class, the cache's nodes, file systems, load balancers, web ACLs, the workstation); node pools
come from the stage config, their one source of truth: a nodegroup's ``min_nodes`` run all month (its
daily peak, if any, on top), a Karpenter pool starts at zero. Every pool also has a ceiling: all of
its ``max_nodes`` running all month at the price of its dearest instance type. Usage the templates
cannot know (NAT traffic, EFS size, ALB load, WAF requests) comes from the stage's ``cost`` section.

Prices are the dated on-demand list prices of ``config/prices.py`` (and ``config/catalog.py`` for
EC2) for us-east-1, over a 730-hour month; spot capacity is priced on demand (an upper bound).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from config.loader import load_stages
from config.model import NodePoolConfig, StageConfig
from config.prices import (
    ALB_HOURLY_USD,
    ALB_LCU_HOURLY_USD,
    EBS_GP3_GB_MONTH_USD,
    EFS_STANDARD_GB_MONTH_USD,
    EKS_CLUSTER_HOURLY_USD,
    HOURS_PER_MONTH,
    INTERFACE_ENDPOINT_AZ_HOURLY_USD,
    NAT_GATEWAY_HOURLY_USD,
    NAT_GATEWAY_PER_GB_USD,
    PRICE_REGION,
    PRICES_AS_OF,
    RDS_GP3_GB_MONTH_USD,
    RDS_GP3_MULTI_AZ_GB_MONTH_USD,
    WAF_PER_MILLION_REQUESTS_USD,
    WAF_RULE_MONTHLY_USD,
    WAF_WEB_ACL_MONTHLY_USD,
    cache_node_hourly_usd,
    ec2_hourly_usd,
    rds_hourly_usd,
)

Templates = Mapping[str, Mapping[str, Any]]
COMPONENTS = ("cluster", "network", "data", "edge", "workstation")


@dataclass(frozen=True)
class CostLine:
    """One line of the estimate: a component's item, how it was counted, its monthly cost and ceiling.

    ``ceiling_usd`` is what the item costs at its maximum size (node pools); None means it has no range,
    so its ceiling is its monthly cost.
    """

    component: str
    item: str
    detail: str
    monthly_usd: float
    ceiling_usd: float | None = None

    @property
    def ceiling(self) -> float:
        return self.monthly_usd if self.ceiling_usd is None else self.ceiling_usd


def _usd(value: float) -> float:
    """Round to cents, half up, after dropping float noise (0.0305 x 730 is 22.265, not 22.26499...)."""
    return float(Decimal(f"{value:.6f}").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _resources(templates: Templates, cfn_type: str) -> Iterator[dict[str, Any]]:
    for template in templates.values():
        for resource in template.get("Resources", {}).values():
            if resource.get("Type") == cfn_type:
                yield resource.get("Properties", {})


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _pool_lines(pool: NodePoolConfig) -> list[CostLine]:
    hourly = [ec2_hourly_usd(t) for t in pool.instance_types]
    ceiling = _usd(pool.max_nodes * max(hourly) * HOURS_PER_MONTH)
    dearest = pool.instance_types[hourly.index(max(hourly))]
    capacity = "/".join(pool.capacity_types)
    if pool.provisioner == "karpenter":
        return [
            CostLine(
                "cluster",
                f"pool {pool.name}",
                f"Karpenter, 0 to {pool.max_nodes} x {dearest} ({capacity})",
                0.0,
                ceiling,
            )
        ]
    # A nodegroup launches its first instance type while it has capacity; its floor runs all month, its
    # daily peak (if any) for the window's hours.
    first = pool.instance_types[0]
    node_hours = float(pool.min_nodes * HOURS_PER_MONTH)
    detail = f"nodegroup, {pool.min_nodes} x {first}"
    peak = pool.peak
    if peak is not None:
        window_hours = (peak.end_hour_utc - peak.start_hour_utc) % 24
        node_hours += peak.extra_nodes * window_hours * HOURS_PER_MONTH / 24
        detail += f" (+{peak.extra_nodes} {peak.start_hour_utc:02d}-{peak.end_hour_utc:02d} UTC)"
    volumes_usd = pool.min_nodes * pool.root_volume_gib * EBS_GP3_GB_MONTH_USD
    max_volumes_usd = pool.max_nodes * pool.root_volume_gib * EBS_GP3_GB_MONTH_USD
    return [
        CostLine(
            "cluster",
            f"pool {pool.name}",
            f"{detail} + {pool.root_volume_gib} GiB gp3 each, max {pool.max_nodes}",
            _usd(node_hours * hourly[0] + volumes_usd),
            _usd(ceiling + max_volumes_usd),
        )
    ]


def estimate(stage_config: StageConfig, templates: Templates) -> list[CostLine]:
    """Return the monthly cost lines of one stage.

    Args:
        stage_config: the stage's validated config (node pools, usage assumptions).
        templates: the stage's synthesized CloudFormation templates, by stack construct ID.
    """
    usage = stage_config.cost
    hours = HOURS_PER_MONTH
    lines: list[CostLine] = []

    clusters = len(list(_resources(templates, "AWS::EKS::Cluster")))
    if clusters:
        lines.append(
            CostLine(
                "cluster",
                "EKS control plane",
                f"{clusters} cluster(s) x {hours} h",
                _usd(clusters * EKS_CLUSTER_HOURLY_USD * hours),
            )
        )
        for pool in stage_config.cluster.node_pools:
            lines.extend(_pool_lines(pool))

    nat = len(list(_resources(templates, "AWS::EC2::NatGateway")))
    nat_gb = usage.nat_data_gb_per_month
    if nat:
        lines.append(
            CostLine(
                "network",
                "NAT gateways",
                f"{nat} x {hours} h + {nat_gb:g} GB processed (assumed)",
                _usd(nat * NAT_GATEWAY_HOURLY_USD * hours + nat_gb * NAT_GATEWAY_PER_GB_USD),
            )
        )
    endpoints = _resources(templates, "AWS::EC2::VPCEndpoint")
    interface = [p for p in endpoints if p.get("VpcEndpointType") == "Interface"]
    if interface:
        zone_hours = sum(len(p.get("SubnetIds", [])) for p in interface)
        lines.append(
            CostLine(
                "network",
                "interface endpoints",
                f"{len(interface)} endpoints, {zone_hours} endpoint-zones x {hours} h",
                _usd(zone_hours * INTERFACE_ENDPOINT_AZ_HOURLY_USD * hours),
            )
        )

    for db in _resources(templates, "AWS::RDS::DBInstance"):
        instance_class = str(db["DBInstanceClass"])
        multi_az = _bool(db.get("MultiAZ", False))
        storage_gib = int(db.get("AllocatedStorage", 0))
        storage_price = RDS_GP3_MULTI_AZ_GB_MONTH_USD if multi_az else RDS_GP3_GB_MONTH_USD
        lines.append(
            CostLine(
                "data",
                "PostgreSQL (RDS)",
                f"{instance_class} {'Multi-AZ' if multi_az else 'single-AZ'} + {storage_gib} GiB gp3",
                _usd(rds_hourly_usd(instance_class, multi_az=multi_az) * hours + storage_gib * storage_price),
            )
        )
    for group in _resources(templates, "AWS::ElastiCache::ReplicationGroup"):
        node_type = str(group["CacheNodeType"])
        engine = str(group.get("Engine", "redis"))
        shards = int(group.get("NumNodeGroups", 1))
        replicas = int(group.get("ReplicasPerNodeGroup", 0))
        nodes = shards * (1 + replicas)
        lines.append(
            CostLine(
                "data",
                f"cache ({engine})",
                f"{shards} shard(s) x (1 + {replicas} replica(s)) = {nodes} x {node_type}",
                _usd(nodes * cache_node_hourly_usd(node_type, engine=engine) * hours),
            )
        )
    file_systems = len(list(_resources(templates, "AWS::EFS::FileSystem")))
    if file_systems:
        lines.append(
            CostLine(
                "data",
                "EFS",
                f"{file_systems} x {usage.efs_storage_gib:g} GiB Standard (assumed)",
                _usd(file_systems * usage.efs_storage_gib * EFS_STANDARD_GB_MONTH_USD),
            )
        )

    albs = [
        p
        for p in _resources(templates, "AWS::ElasticLoadBalancingV2::LoadBalancer")
        if p.get("Type", "application") == "application"
    ]
    if albs:
        lines.append(
            CostLine(
                "edge",
                "application load balancers",
                f"{len(albs)} x {hours} h + {usage.alb_lcus:g} LCU each (assumed)",
                _usd(len(albs) * (ALB_HOURLY_USD + usage.alb_lcus * ALB_LCU_HOURLY_USD) * hours),
            )
        )
    for acl in _resources(templates, "AWS::WAFv2::WebACL"):
        rules = len(acl.get("Rules", []))
        lines.append(
            CostLine(
                "edge",
                "WAF web ACL",
                f"1 ACL + {rules} rules + {usage.waf_requests_millions_per_month:g} M requests (assumed)",
                _usd(
                    WAF_WEB_ACL_MONTHLY_USD
                    + rules * WAF_RULE_MONTHLY_USD
                    + usage.waf_requests_millions_per_month * WAF_PER_MILLION_REQUESTS_USD
                ),
            )
        )

    for instance in _resources(templates, "AWS::EC2::Instance"):
        type_name = str(instance["InstanceType"])
        mappings = instance.get("BlockDeviceMappings", [])
        volume_gib = sum(int(m.get("Ebs", {}).get("VolumeSize", 0)) for m in mappings)
        lines.append(
            CostLine(
                "workstation",
                "ML workstation",
                f"1 x {type_name} x {hours} h + {volume_gib} GiB gp3",
                _usd(ec2_hourly_usd(type_name) * hours + volume_gib * EBS_GP3_GB_MONTH_USD),
            )
        )
    return lines


def totals(lines: list[CostLine]) -> tuple[float, float]:
    """Return (monthly total, ceiling total) of the lines."""
    return _usd(sum(line.monthly_usd for line in lines)), _usd(sum(line.ceiling for line in lines))


def format_report(stage_config: StageConfig, lines: list[CostLine]) -> str:
    """Render one stage's table with its total, ceiling, budget and the price table's date."""
    out = [
        f"{stage_config.stage} ({stage_config.account}, {stage_config.region}): estimated monthly cost "
        f"at the on-demand list prices of {PRICE_REGION} as of {PRICES_AS_OF}, {HOURS_PER_MONTH} h/month",
    ]
    if stage_config.region != PRICE_REGION:
        out.append(f"  note: the stage runs in {stage_config.region}; prices are {PRICE_REGION}'s")
    out.append(f"  {'component':<12} {'item':<28} {'how counted':<70} {'USD/month':>12} {'ceiling':>12}")
    for line in sorted(lines, key=lambda x: COMPONENTS.index(x.component)):
        out.append(
            f"  {line.component:<12} {line.item:<28} {line.detail:<70} "
            f"{line.monthly_usd:>12,.2f} {line.ceiling:>12,.2f}"
        )
    monthly, ceiling = totals(lines)
    out.append(f"  {'total':<12} {'':<28} {'':<70} {monthly:>12,.2f} {ceiling:>12,.2f}")
    budget = stage_config.cost.budget_monthly_usd
    if budget is not None:
        share = monthly / budget
        verdict = "OVER the budget: raise it or shrink the baseline" if share > 1 else "within the budget"
        out.append(f"  budget: {budget:,.2f} USD/month; the estimate is {share:.0%} of it ({verdict})")
    return "\n".join(out)


def stage_templates(assembly: Any, stage: str) -> dict[str, dict[str, Any]]:
    """Return one stage's templates from a ``CloudAssembly``, by stack construct ID."""
    return {s.construct_id: s.template for s in assembly.stacks if s.stage.lower() == stage.lower()}


def main(outdir: str = "cdk.out") -> int:
    from tests.support.assembly import CloudAssembly  # the one cdk.out reader (scripts/synth_summary.py too)

    assembly = CloudAssembly(Path(outdir))
    synthesized = {stage.lower() for stage in assembly.stages}
    for config in load_stages():
        if config.stage in synthesized:
            print(format_report(config, estimate(config, stage_templates(assembly, config.stage))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
