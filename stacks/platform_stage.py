"""PlatformStage: every stack of one stage, wired from its config. The pipeline deploys this class too."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from config.model import StageConfig
from stacks.keys_stack import KeysStack
from stacks.network_stack import NetworkStack


def stage_construct_id(stage: str) -> str:
    """Return the Stage's construct ID (``dev`` -> ``Dev``): ``cdk deploy 'Dev/*'`` deploys the stage."""
    return stage[:1].upper() + stage[1:]


class PlatformStage(cdk.Stage):
    """Define one stage of the platform (dev, staging, prod or any other stage file).

    Args:
        config: the validated stage config; stacks receive flat values unpacked from it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        env = cdk.Environment(account=config.account, region=config.region)
        super().__init__(scope, construct_id, env=env, **kwargs)
        prefix = f"{config.project}-{config.stage}"
        retain = config.data.removal_policy == "retain"
        stateful_removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        common: dict[str, Any] = {"env": env, "availability_zones": config.availability_zones}

        self.keys = KeysStack(
            self,
            "Keys",
            stack_name=f"{prefix}-keys",
            description=f"{prefix}: shared KMS keys (stateful)",
            termination_protection=config.termination_protection,
            name_prefix=prefix,
            removal_policy=stateful_removal,
            **common,
        )
        net = config.network
        self.network = NetworkStack(
            self,
            "Network",
            stack_name=f"{prefix}-network",
            description=f"{prefix}: VPC, subnets, NAT, endpoints, flow logs",
            vpc_cidr=net.vpc_cidr,
            public_subnets=net.public_subnets,
            data_subnets=net.data_subnets,
            node_subnets=net.node_subnets,
            nat_gateways=net.nat_gateways,
            interface_endpoints=net.interface_endpoints,
            flow_log_retention_days=net.flow_log_retention_days,
            logs_key=self.keys.logs_key,
            discovery_tag=prefix,
            removal_policy=cdk.RemovalPolicy.DESTROY if config.tier == "dev" else cdk.RemovalPolicy.RETAIN,
            **common,
        )
        for key, value in config.tags.items():
            cdk.Tags.of(self).add(key, value)
