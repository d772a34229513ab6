"""The ``workstation`` and ``cost`` sections of a stage: the stand-alone ML instance and the cost controls.

``WorkstationConfig`` describes the one EC2 instance data scientists work on outside the cluster;
``CostConfig`` holds the stage's monthly budget and the usage figures the cost report assumes where
nothing in the templates says how much will be used (NAT traffic, EFS size, ALB load, WAF requests).

This module does not import ``config.model`` (which imports it); the instance catalog is plain data.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.catalog import INSTANCE_TYPES, instance_type

# Families whose instances have only EBS storage and so support the EC2 recover action (simplified
# automatic recovery); instance-store families (g4dn, g5, g6, p4d, p4de, p5) do not.
RECOVERABLE_FAMILIES: Final = frozenset(
    {"t3", "t3a", "m5", "m6i", "m7i", "c5", "c6i", "c7i", "r5", "r6i", "r7i"},
)
# The Deep Learning AMI carries several CUDA toolkits on its root volume: 50 GiB cannot hold them and
# the PyTorch and TensorFlow wheels with room to work.
GPU_MIN_ROOT_VOLUME_GIB: Final = 100
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkstationConfig(_Section):
    """One EC2 instance for notebooks and experiments, in a node subnet, reached through SSM Session Manager.

    The stage builds it when ``enabled`` (or ``components.workstation``) is true. GPU instance types
    (from ``config/catalog.py``) boot the Deep Learning Base OSS NVIDIA Driver AMI (Amazon Linux 2023);
    the others boot Amazon Linux 2023. Both come from AWS's public SSM parameters unless ``ami_id``
    pins one image.
    """

    enabled: bool = False
    instance_type: str = "t3.medium"
    root_volume_gib: Annotated[int, Field(ge=30, le=16384)] = 50
    # Networks that may reach SSH (22), JupyterLab (8888) and TensorBoard (6006) directly. Empty (the
    # default): no inbound rule at all; people use SSM Session Manager and its port forwarding.
    ingress_cidrs: tuple[str, ...] = ()
    # Stop the instance every night at this hour (UTC); None: no schedule.
    stop_hour_utc: Annotated[int, Field(ge=0, le=23)] | None = None
    cpu_alarm_percent: Annotated[float, Field(gt=0, le=100)] = 80
    # A fixed AMI (ami-...): the SSM parameter resolves to the newest image on every deploy, and a new
    # image replaces the instance with its root volume; pin one to keep the instance across releases.
    ami_id: str | None = None

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        instance_type(value)
        return value

    @field_validator("ingress_cidrs")
    @classmethod
    def _ingress(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as err:
                raise ValueError(
                    f"workstation.ingress_cidrs: {cidr!r} is not a network in CIDR form ({err}): "
                    "write it as an address and prefix length, such as 203.0.113.0/24 or 2001:db8::/32"
                ) from None
            if network.prefixlen == 0:
                raise ValueError(
                    f"workstation.ingress_cidrs: {cidr} opens SSH, JupyterLab and TensorBoard to the whole "
                    "internet: list the networks that need them (such as 203.0.113.0/24), or leave the list "
                    "empty and use SSM Session Manager port forwarding"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"workstation.ingress_cidrs: {list(value)} lists a network twice")
        return value

    @field_validator("ami_id")
    @classmethod
    def _ami(cls, value: str | None) -> str | None:
        if value is not None and not _AMI_ID.match(value):
            raise ValueError(f"workstation.ami_id: {value!r} is not an AMI ID such as ami-0123456789abcdef0")
        return value

    @model_validator(mode="after")
    def _gpu_root(self) -> WorkstationConfig:
        if self.gpu and self.root_volume_gib < GPU_MIN_ROOT_VOLUME_GIB:
            raise ValueError(
                f"workstation.root_volume_gib: {self.instance_type} has GPUs and boots the Deep "
                f"Learning AMI, which needs at least {GPU_MIN_ROOT_VOLUME_GIB} GiB for its CUDA "
                f"toolkits and the frameworks (got {self.root_volume_gib})"
            )
        return self

    @property
    def gpu(self) -> bool:
        """Whether the instance type has NVIDIA GPUs (and so boots the Deep Learning AMI)."""
        return INSTANCE_TYPES[self.instance_type].gpu is not None

    @property
    def recoverable(self) -> bool:
        """Whether the EC2 recover action can move the instance to healthy hardware (EBS-only families)."""
        return INSTANCE_TYPES[self.instance_type].family in RECOVERABLE_FAMILIES


_Percent = Annotated[float, Field(gt=0, le=1000)]


class CostConfig(_Section):
    """The stage's monthly budget, and the usage the cost report assumes where templates cannot say.

    ``budget_monthly_usd`` None (the default) means no AWS Budgets budget for the stage. The usage
    figures only feed ``make cost``; each default is a small, steady load.
    """

    budget_monthly_usd: Annotated[float, Field(gt=0)] | None = None
    # Notifications (percent of the limit, actual spend) sent to the stage's SNS topic.
    budget_alert_percentages: Annotated[tuple[_Percent, ...], Field(min_length=1)] = (80, 100)
    # Data through the NAT gateways per month (image pulls not served by the ECR endpoints, pip, updates).
    nat_data_gb_per_month: Annotated[float, Field(ge=0)] = 100
    # Data on the shared EFS file system (Standard storage class).
    efs_storage_gib: Annotated[float, Field(ge=0)] = 100
    # Average load balancer capacity units per load balancer (1 LCU: 25 new connections/s, 1 GB/h).
    alb_lcus: Annotated[float, Field(ge=0)] = 1
    # Requests the web ACL inspects per month, in millions.
    waf_requests_millions_per_month: Annotated[float, Field(ge=0)] = 10

    @field_validator("budget_alert_percentages")
    @classmethod
    def _percentages(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if list(value) != sorted(set(value)):
            raise ValueError(
                f"cost.budget_alert_percentages: {list(value)} must be increasing without repeats "
                "(each percentage of the limit notifies once a month), such as [80, 100]"
            )
        return value
