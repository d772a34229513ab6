"""The hardware the platform knows: EC2 instance types, GPU models and their MIG profiles, cache nodes.

Plain Python with no aws_cdk import, so that config validation, the scheduling check and the cost
report can use it without starting jsii. Figures are AWS's published specifications; ``max_pods``
is the VPC CNI ENI limit, ``(ENIs x (IPv4 per ENI - 1)) + 2``, the number of pod addresses a node
can take from its subnet without prefix delegation.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class MigProfile:
    """One MIG profile of a GPU model: how many of the 7 compute and 8 memory slices it uses."""

    name: str
    compute_slices: int
    memory_slices: int
    memory_gib: int


@dataclass(frozen=True)
class GpuModel:
    """A GPU model, its memory and the MIG profiles it supports (empty: no MIG)."""

    name: str
    memory_gib: int
    mig_profiles: tuple[MigProfile, ...] = ()

    def mig_profile(self, name: str) -> MigProfile | None:
        return next((p for p in self.mig_profiles if p.name == name), None)


# A MIG-capable GPU has 7 compute slices and 8 memory slices.
MIG_COMPUTE_SLICES: Final = 7
MIG_MEMORY_SLICES: Final = 8

A100_40GB: Final = GpuModel(
    "A100-40GB",
    40,
    (
        MigProfile("1g.5gb", 1, 1, 5),
        MigProfile("1g.10gb", 1, 2, 10),
        MigProfile("2g.10gb", 2, 2, 10),
        MigProfile("3g.20gb", 3, 4, 20),
        MigProfile("4g.20gb", 4, 4, 20),
        MigProfile("7g.40gb", 7, 8, 40),
    ),
)
_MIG_80GB: Final = (
    MigProfile("1g.10gb", 1, 1, 10),
    MigProfile("1g.20gb", 1, 2, 20),
    MigProfile("2g.20gb", 2, 2, 20),
    MigProfile("3g.40gb", 3, 4, 40),
    MigProfile("4g.40gb", 4, 4, 40),
    MigProfile("7g.80gb", 7, 8, 80),
)
A100_80GB: Final = GpuModel("A100-80GB", 80, _MIG_80GB)
H100_80GB: Final = GpuModel("H100-80GB", 80, _MIG_80GB)
T4: Final = GpuModel("T4", 16)
A10G: Final = GpuModel("A10G", 24)
L4: Final = GpuModel("L4", 24)


@dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type: size, GPUs and how many pod addresses it can hold."""

    name: str
    vcpu: int
    memory_gib: int
    max_pods: int
    gpu: GpuModel | None = None
    gpu_count: int = 0
    hourly_usd: float = 0.0  # on-demand, us-east-1, Linux; the cost report's dated price table

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def gpu_memory_gib(self) -> int:
        return self.gpu.memory_gib if self.gpu else 0


def _it(
    name: str,
    vcpu: int,
    memory_gib: int,
    max_pods: int,
    hourly_usd: float,
    gpu: GpuModel | None = None,
    gpu_count: int = 0,
) -> tuple[str, InstanceType]:
    return name, InstanceType(name, vcpu, memory_gib, max_pods, gpu, gpu_count, hourly_usd)


INSTANCE_TYPES: Final = MappingProxyType(
    dict(
        [
            _it("t3.medium", 2, 4, 17, 0.0416),
            _it("t3.large", 2, 8, 35, 0.0832),
            _it("m5.xlarge", 4, 16, 58, 0.192),
            _it("m5.2xlarge", 8, 32, 58, 0.384),
            _it("m5.4xlarge", 16, 64, 234, 0.768),
            _it("m5.8xlarge", 32, 128, 234, 1.536),
            _it("m5.12xlarge", 48, 192, 234, 2.304),
            _it("r5.xlarge", 4, 32, 58, 0.252),
            _it("r5.2xlarge", 8, 64, 58, 0.504),
            _it("r5.4xlarge", 16, 128, 234, 1.008),
            _it("r5.8xlarge", 32, 256, 234, 2.016),
            _it("r5.12xlarge", 48, 384, 234, 3.024),
            _it("g4dn.xlarge", 4, 16, 29, 0.526, T4, 1),
            _it("g4dn.2xlarge", 8, 32, 29, 0.752, T4, 1),
            _it("g4dn.12xlarge", 48, 192, 234, 3.912, T4, 4),
            _it("g5.xlarge", 4, 16, 58, 1.006, A10G, 1),
            _it("g5.12xlarge", 48, 192, 234, 5.672, A10G, 4),
            _it("g6.xlarge", 4, 16, 58, 0.805, L4, 1),
            _it("p4d.24xlarge", 96, 1152, 737, 21.958, A100_40GB, 8),
            _it("p4de.24xlarge", 96, 1152, 737, 27.447, A100_80GB, 8),
            _it("p5.48xlarge", 192, 2048, 100, 55.04, H100_80GB, 8),
        ]
    )
)

# ElastiCache node types: memory in GiB available to the engine before reserved memory.
CACHE_NODE_MEMORY_GIB: Final = MappingProxyType(
    {
        "cache.t4g.micro": 0.5,
        "cache.t4g.small": 1.37,
        "cache.t4g.medium": 3.09,
        "cache.m7g.large": 6.38,
        "cache.m7g.xlarge": 12.93,
        "cache.r7g.large": 13.07,
        "cache.r7g.xlarge": 26.32,
        "cache.r7g.2xlarge": 52.82,
        "cache.r7g.4xlarge": 105.81,
        "cache.r7g.8xlarge": 209.55,
    }
)
# ElastiCache reserves 25% of node memory by default (reserved-memory-percent) for snapshots and replication.
CACHE_RESERVED_MEMORY_FRACTION: Final = 0.25


def instance_type(name: str) -> InstanceType:
    """Return the catalog entry for ``name``, or fail with the names the catalog knows."""
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        raise ValueError(
            f"unknown instance type {name!r}: supported types are {', '.join(sorted(INSTANCE_TYPES))}"
        ) from None
