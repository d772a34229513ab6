"""The dated price table behind ``make cost``: AWS on-demand list prices in us-east-1, in USD.

Plain data, no aws_cdk import. EC2 instance prices are not repeated here: they live with each
instance type in ``config/catalog.py`` (``hourly_usd``) and :func:`ec2_hourly_usd` reads them there.
Prices change; when you update one, update ``PRICES_AS_OF`` too (the report prints it) and expect the
fixed-figure tests in ``tests/unit/test_cost.py`` to move with it: that is a reviewed change.

Not priced (usage-based, or too small to matter for a monthly estimate): S3 storage and requests,
interface endpoint data processing, CloudWatch, KMS keys and requests, Secrets Manager, data transfer
out to the internet, spot discounts (spot capacity is priced on demand, an upper bound).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from config.catalog import CACHE_NODE_MEMORY_GIB, instance_type

PRICES_AS_OF: Final = "2026-11-01"
PRICE_REGION: Final = "us-east-1"
# A month of 730 hours (8,760 hours a year / 12), the convention of AWS's own calculator.
HOURS_PER_MONTH: Final = 730

# Amazon EKS: one cluster in standard support, per hour.
EKS_CLUSTER_HOURLY_USD: Final = 0.10

# NAT gateway: per gateway-hour and per GB processed.
NAT_GATEWAY_HOURLY_USD: Final = 0.045
NAT_GATEWAY_PER_GB_USD: Final = 0.045

# Interface VPC endpoint (PrivateLink): per endpoint, per availability zone, per hour. Gateway endpoints
# (S3) are free.
INTERFACE_ENDPOINT_AZ_HOURLY_USD: Final = 0.01

# EBS gp3 (node and workstation root volumes), per GB-month.
EBS_GP3_GB_MONTH_USD: Final = 0.08

# RDS for PostgreSQL, on demand, per instance-hour: single-AZ and Multi-AZ (a standby in a second zone).
RDS_POSTGRES_HOURLY_USD: Final = MappingProxyType(
    {
        "db.t4g.micro": 0.016,
        "db.t4g.small": 0.032,
        "db.t4g.medium": 0.065,
        "db.t4g.large": 0.129,
        "db.m7g.large": 0.168,
        "db.m7g.xlarge": 0.337,
        "db.m7g.2xlarge": 0.673,
        "db.r7g.large": 0.239,
        "db.r7g.xlarge": 0.478,
        "db.r7g.2xlarge": 0.956,
        "db.r7g.4xlarge": 1.912,
    }
)
RDS_POSTGRES_MULTI_AZ_HOURLY_USD: Final = MappingProxyType(
    {
        "db.t4g.micro": 0.032,
        "db.t4g.small": 0.064,
        "db.t4g.medium": 0.13,
        "db.t4g.large": 0.258,
        "db.m7g.large": 0.336,
        "db.m7g.xlarge": 0.674,
        "db.m7g.2xlarge": 1.346,
        "db.r7g.large": 0.478,
        "db.r7g.xlarge": 0.956,
        "db.r7g.2xlarge": 1.912,
        "db.r7g.4xlarge": 3.824,
    }
)
# RDS gp3 storage per GB-month; Multi-AZ stores every byte twice and bills it twice.
RDS_GP3_GB_MONTH_USD: Final = 0.115
RDS_GP3_MULTI_AZ_GB_MONTH_USD: Final = 0.23

# ElastiCache node-based clusters, per node-hour (Redis OSS prices). Valkey nodes cost 20% less.
ELASTICACHE_NODE_HOURLY_USD: Final = MappingProxyType(
    {
        "cache.t4g.micro": 0.016,
        "cache.t4g.small": 0.032,
        "cache.t4g.medium": 0.065,
        "cache.m7g.large": 0.158,
        "cache.m7g.xlarge": 0.315,
        "cache.r7g.large": 0.219,
        "cache.r7g.xlarge": 0.437,
        "cache.r7g.2xlarge": 0.873,
        "cache.r7g.4xlarge": 1.745,
        "cache.r7g.8xlarge": 3.49,
    }
)
VALKEY_DISCOUNT: Final = 0.20

# EFS Standard storage per GB-month (throughput in elastic mode is billed per use and not included).
EFS_STANDARD_GB_MONTH_USD: Final = 0.30

# Application Load Balancer: per hour and per load balancer capacity unit (LCU) hour.
ALB_HOURLY_USD: Final = 0.0225
ALB_LCU_HOURLY_USD: Final = 0.008

# AWS WAF: per web ACL per month, per rule (a managed rule group counts as one) per month, per million
# requests inspected.
WAF_WEB_ACL_MONTHLY_USD: Final = 5.00
WAF_RULE_MONTHLY_USD: Final = 1.00
WAF_PER_MILLION_REQUESTS_USD: Final = 0.60

assert set(ELASTICACHE_NODE_HOURLY_USD) == set(CACHE_NODE_MEMORY_GIB), "price every cache node type"
assert set(RDS_POSTGRES_HOURLY_USD) == set(RDS_POSTGRES_MULTI_AZ_HOURLY_USD), "price both RDS deployments"


def ec2_hourly_usd(type_name: str) -> float:
    """Return the on-demand hourly price of an EC2 instance type from the catalog."""
    return instance_type(type_name).hourly_usd


def rds_hourly_usd(instance_class: str, *, multi_az: bool) -> float:
    """Return the hourly price of a PostgreSQL instance class, single-AZ or Multi-AZ."""
    table = RDS_POSTGRES_MULTI_AZ_HOURLY_USD if multi_az else RDS_POSTGRES_HOURLY_USD
    try:
        return table[instance_class]
    except KeyError:
        raise ValueError(
            f"no price for RDS instance class {instance_class!r} in config/prices.py: add it (priced: "
            f"{', '.join(table)})"
        ) from None


def cache_node_hourly_usd(node_type: str, *, engine: str) -> float:
    """Return the hourly price of one ElastiCache node of ``engine`` ("valkey" or "redis")."""
    try:
        price = ELASTICACHE_NODE_HOURLY_USD[node_type]
    except KeyError:
        raise ValueError(
            f"no price for cache node type {node_type!r} in config/prices.py: add it (priced: "
            f"{', '.join(ELASTICACHE_NODE_HOURLY_USD)})"
        ) from None
    return price * (1 - VALKEY_DISCOUNT) if engine == "valkey" else price
