"""The scheduling consistency check: fits are found, misfits fail with the pools' reasons."""

from __future__ import annotations

from typing import Any

import pytest

from config.model import StageConfig
from config.scheduling import (
    SchedulingError,
    check_scheduling,
    parse_quantity,
    pod_requests,
    workloads_from_objects,
)


def deployment(
    *,
    namespace: str = "inference",
    replicas: int = 1,
    selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
    requests: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "nodeSelector": selector or {},
                    "tolerations": tolerations or [],
                    "containers": [{"name": "c", "resources": {"requests": requests or {}, "limits": {}}}],
                }
            },
        },
    }


MIG_TOLERATION = {"key": "gpu", "operator": "Equal", "value": "mig", "effect": "NoSchedule"}


def check(cfg: StageConfig, *objects: dict[str, Any]) -> None:
    check_scheduling(
        workloads_from_objects(objects), cfg.cluster.node_pools, cfg.tenancy.quotas, cfg.cluster.mig_layouts
    )


def test_quantities() -> None:
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("64Gi", memory=True) == 64
    assert parse_quantity("512Mi", memory=True) == 0.5
    assert parse_quantity(2) == 2
    spec = {
        "containers": [{"resources": {"requests": {"cpu": "1"}}}, {"resources": {"limits": {"cpu": "2"}}}],
        "initContainers": [{"resources": {"requests": {"cpu": "4"}}}],
    }
    assert pod_requests(spec)["cpu"] == 4  # the init container's 4 cores outweigh the 3 of the app


def test_mig_inference_fits_the_mig_pool(stage_configs: dict[str, StageConfig]) -> None:
    check(
        stage_configs["prod"],
        deployment(
            replicas=2,
            selector={"workload-type.ml-platform.io/production-inference": "true"},
            tolerations=[MIG_TOLERATION],
            requests={"cpu": "8", "memory": "64Gi", "nvidia.com/mig-3g.40gb": 1},
        ),
    )


def test_fails_when_the_gpu_taint_is_not_tolerated(stage_configs: dict[str, StageConfig]) -> None:
    obj = deployment(
        selector={"workload-type.ml-platform.io/production-inference": "true"},
        requests={"nvidia.com/mig-3g.40gb": 1},
    )
    with pytest.raises(SchedulingError) as err:
        check(stage_configs["prod"], obj)
    text = str(err.value)
    assert "workload inference/server (Deployment) fits no node pool:" in text
    assert "- a100-mig: does not tolerate taint gpu=mig:NoSchedule" in text
    assert "- system: no node label workload-type.ml-platform.io/production-inference=true" in text


def test_fails_when_a_time_sliced_pod_asks_for_two_gpus(stage_configs: dict[str, StageConfig]) -> None:
    obj = deployment(
        namespace="training",
        selector={"workload-type": "training"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        requests={"nvidia.com/gpu": 2},
    )
    with pytest.raises(SchedulingError, match=r"a100-timeslice: asks 2 nvidia.com/gpu; time-sliced GPUs fail"):
        check(stage_configs["prod"], obj)


def test_fails_on_a_mig_profile_no_pool_offers(stage_configs: dict[str, StageConfig]) -> None:
    obj = deployment(tolerations=[MIG_TOLERATION], requests={"nvidia.com/mig-7g.80gb": 1})
    with pytest.raises(
        SchedulingError, match=r"a100-mig: asks 1 nvidia.com/mig-7g.80gb; a node of layout balanced offers 0"
    ):
        check(stage_configs["prod"], obj)


def test_fails_when_the_namespace_quota_refuses(stage_configs: dict[str, StageConfig]) -> None:
    obj = deployment(namespace="mlops", replicas=5, selector={"workload-type": "control"}, requests={"cpu": "8"})
    with pytest.raises(
        SchedulingError, match=r"exceeds its namespace quota: 5 replica\(s\) ask 40 CPU, the mlops quota is 32"
    ):
        check(stage_configs["prod"], obj)


def test_fails_when_no_instance_is_large_enough(stage_configs: dict[str, StageConfig]) -> None:
    obj = deployment(namespace="research", selector={"workload-type": "data-processing"}, requests={"memory": "300Gi"})
    with pytest.raises(SchedulingError, match=r"memory-optimized: asks 300Gi memory, the largest node \(r5.8xlarge\)"):
        check(stage_configs["prod"], obj)
