"""The ``inference`` section of a stage: model servers, autoscaling, canary releases and batch inference.

Models are served only from the stage's models bucket, under ``production/`` (the prefix the release
process promotes to), or from the same prefix on the EFS models access point. Config therefore names a
model by its key under that prefix (``production/llama-3-8b-instruct/``) and the charts build the full
``s3://<models bucket>/...`` location: a model path from anywhere else is refused here.

Rules that need the cluster's node pools (a server on a pool without GPUs, tensor parallelism beyond
what one pod can get on a node, a MIG profile no pool offers) live in ``check_inference``, a pure
function the stage wiring calls before it creates any construct.

Rollback of a canary: set ``canary.weight`` to 0 and deploy. The HTTPRoute then sends every request to
the stable version while the canary pods stay up for inspection; remove the ``canary`` block to free
their GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from config.catalog import INSTANCE_TYPES

if TYPE_CHECKING:
    from config.model import NodePoolConfig

# The models bucket prefix that holds the models serving traffic (platform_constructs/data_buckets.py).
PRODUCTION_PREFIX: Final = "production/"
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MIG_PROFILE = re.compile(r"^\d+g\.\d+gb$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
# Mutable tags: a redeploy could pull different bits under the same name.
_FLOATING_TAGS: Final = frozenset({"latest", "stable", "main", "nightly", "edge"})


class _Frozen(BaseModel):
    # Same settings as config.model._Frozen (importing it would be circular: model.py imports this module).
    model_config = ConfigDict(frozen=True, extra="forbid")


def production_model_key(value: str) -> str:
    """Return ``value`` if it is a key under the models bucket's ``production/`` prefix, else raise.

    The chart prepends ``s3://<models bucket>/`` (or the EFS models mount), so a full URI, an absolute
    path, a ``..`` segment or any other prefix would point outside the models that are released for serving.
    """
    outside = (
        value.startswith(("s3://", "/", "./"))
        or not value.startswith(PRODUCTION_PREFIX)
        or ".." in value.split("/")
        or "//" in value
    )
    if outside:
        raise ValueError(
            f"model path {value!r} is outside the models bucket's production/ prefix: give the key under it, "
            "such as production/llama-3-8b-instruct/ (the chart adds s3://<models bucket>/ or the EFS mount)"
        )
    if value.rstrip("/") == PRODUCTION_PREFIX.rstrip("/"):
        raise ValueError(f"model path {value!r} names the whole production/ prefix: give one model's folder")
    return value


def _exact_tag(value: str) -> str:
    if not _IMAGE_TAG.match(value) or value.lower() in _FLOATING_TAGS or not any(c.isdigit() for c in value):
        raise ValueError(f"image tag {value!r} is not an exact version tag such as v0.18.0 (never latest)")
    return value


# A key under the models bucket's production/ prefix, and an exact image tag.
ModelKey = Annotated[str, AfterValidator(production_model_key)]
ImageTag = Annotated[str, AfterValidator(_exact_tag)]


class MigSlice(_Frozen):
    """One MIG device of the given profile (``nvidia.com/mig-<profile>: 1``)."""

    mig_profile: str

    @field_validator("mig_profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if not _MIG_PROFILE.match(value):
            raise ValueError(f"mig profile {value!r} is not a profile name such as 3g.40gb")
        return value


class WholeGpus(_Frozen):
    """Whole (or, on a time-sliced pool, shared) GPUs (``nvidia.com/gpu: <gpus>``)."""

    gpus: Annotated[int, Field(ge=1, le=8)]


GpuRequest = MigSlice | WholeGpus


class Autoscaling(_Frozen):
    """KEDA scaling of a model server: a load trigger plus a daily peak window (UTC).

    ``min_replicas: 0`` scales to zero outside the peak. The load metrics come from the server itself, so
    they cannot wake a server that has no pod: the peak window (``peak_replicas``) is what brings it back.
    """

    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 2
    # vLLM: requests waiting per replica; Triton: average queue time per request in microseconds.
    threshold: Annotated[float, Field(gt=0)]
    peak_replicas: Annotated[int, Field(ge=1)] | None = None
    peak_start_hour_utc: Annotated[int, Field(ge=0, le=23)] = 8
    peak_end_hour_utc: Annotated[int, Field(ge=0, le=23)] = 22

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is larger than max_replicas ({self.max_replicas})")
        if self.peak_replicas is not None and not self.min_replicas <= self.peak_replicas <= self.max_replicas:
            raise ValueError(
                f"peak_replicas ({self.peak_replicas}) must lie between min_replicas ({self.min_replicas}) and "
                f"max_replicas ({self.max_replicas})"
            )
        if self.peak_start_hour_utc == self.peak_end_hour_utc:
            raise ValueError("peak_start_hour_utc equals peak_end_hour_utc: the peak window would be empty")
        return self


class Canary(_Frozen):
    """A second model version taking ``weight`` percent of the mesh traffic (rollback: ``weight: 0``)."""

    model_path: ModelKey
    weight: Annotated[int, Field(ge=0, le=100)]
    replicas: Annotated[int, Field(ge=1)] = 1


class _GpuServer(_Frozen):
    """What every GPU model server shares: image, placement, size."""

    image_tag: ImageTag
    pool: str
    gpu: GpuRequest
    replicas: Annotated[int, Field(ge=1)] = 1
    workload_type: str = "production-inference"
    priority_class: str | None = "production-inference"
    cpu: Annotated[int, Field(ge=1)] = 8
    memory_gib: Annotated[int, Field(ge=2)] = 64
    # Room for the weights copied from S3 into the pod (emptyDir on the node's root volume).
    model_storage_gib: Annotated[int, Field(ge=1)] = 40
    autoscaling: Autoscaling | None = None


class VllmConfig(_GpuServer):
    """A vLLM OpenAI-compatible server (``vllm/vllm-openai:<image_tag>``)."""

    model_path: ModelKey
    model_source: Literal["s3", "efs"] = "s3"
    served_model_name: str
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=0.95)] = 0.9
    max_model_len: Annotated[int, Field(ge=128)] = 8192
    enable_prefix_caching: bool = True
    canary: Canary | None = None

    @field_validator("served_model_name")
    @classmethod
    def _served(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError(
                f"served_model_name {value!r} must be letters, digits and ._- (what clients send as model)"
            )
        return value


class TritonConfig(_GpuServer):
    """A Triton Inference Server (``nvcr.io/nvidia/tritonserver:<image_tag>``) over a model repository."""

    model_repository: ModelKey = "production/triton/"
    cpu: Annotated[int, Field(ge=1)] = 4
    memory_gib: Annotated[int, Field(ge=2)] = 32


class TgiConfig(_GpuServer):
    """A Hugging Face Text Generation Inference server (``ghcr.io/huggingface/text-generation-inference``)."""

    model_path: ModelKey
    max_input_tokens: Annotated[int, Field(ge=1)] = 4096
    max_total_tokens: Annotated[int, Field(ge=2)] = 8192
    cpu: Annotated[int, Field(ge=1)] = 4
    memory_gib: Annotated[int, Field(ge=2)] = 32

    @model_validator(mode="after")
    def _tokens(self) -> TgiConfig:
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError(
                f"max_input_tokens ({self.max_input_tokens}) must be smaller than max_total_tokens "
                f"({self.max_total_tokens}): the rest is what the model may generate"
            )
        return self


class KServeModelConfig(_Frozen):
    """A KServe InferenceService (Standard/RawDeployment mode) with a built-in predictor runtime."""

    name: str = "tabular-classifier"
    model_format: Literal["sklearn", "xgboost"] = "sklearn"
    runtime_image_tag: ImageTag = "v0.20.0"
    storage_path: ModelKey
    pool: str = "t4-inference"
    workload_type: str = "online-inference"
    priority_class: str | None = None
    min_replicas: Annotated[int, Field(ge=1)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 3
    cpu: Annotated[int, Field(ge=1)] = 1
    memory_gib: Annotated[int, Field(ge=1)] = 2

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _K8S_NAME.match(value):
            raise ValueError(f"name {value!r} must be lowercase alphanumerics and '-', at most 40 characters")
        return value

    @model_validator(mode="after")
    def _replicas(self) -> KServeModelConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is larger than max_replicas ({self.max_replicas})")
        return self


class BatchConfig(_Frozen):
    """Batch inference: one Kubernetes Job per SQS message, scaled from zero by a KEDA ScaledJob.

    A message body is the key of an OpenAI batch-format JSONL file under the datasets bucket's
    ``processed/batch-requests/``; the job runs vLLM's batch runner on it and writes the results to
    ``processed/batch-results/`` of the same bucket.
    """

    image_tag: ImageTag
    model_path: ModelKey
    pool: str = "a100-timeslice"
    workload_type: str = "batch-inference"
    gpu: GpuRequest = WholeGpus(gpus=1)
    priority_class: str | None = "training"
    max_parallel_jobs: Annotated[int, Field(ge=1, le=100)] = 4
    messages_per_job: Literal[1] = 1
    visibility_timeout_minutes: Annotated[int, Field(ge=5, le=720)] = 120
    max_receive_count: Annotated[int, Field(ge=1, le=10)] = 3
    cpu: Annotated[int, Field(ge=1)] = 8
    memory_gib: Annotated[int, Field(ge=2)] = 64
    model_storage_gib: Annotated[int, Field(ge=1)] = 40
    max_model_len: Annotated[int, Field(ge=128)] = 8192
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=0.95)] = 0.9


class InferenceConfig(_Frozen):
    """Model serving of one stage; each server is off unless its block is present."""

    vllm: VllmConfig | None = None
    triton: TritonConfig | None = None
    tgi: TgiConfig | None = None
    kserve: KServeModelConfig | None = None
    batch: BatchConfig | None = None


# --- cross-field checks against the cluster's pools ------------------------------------------------------------


def _gpu_servers(inference: InferenceConfig) -> Iterator[tuple[str, _GpuServer | BatchConfig]]:
    for name in ("vllm", "triton", "tgi", "batch"):
        server = getattr(inference, name)
        if server is not None:
            yield name, server


def _pool_gpus(pool: NodePoolConfig) -> int:
    return max(INSTANCE_TYPES[t].gpu_count for t in pool.instance_types)


def _mig_offers(pools: Sequence[NodePoolConfig], mig_layouts: Mapping[str, Mapping[str, int]]) -> dict[str, list[str]]:
    """Return MIG profile -> the pools whose layout offers it."""
    offers: dict[str, list[str]] = {}
    for pool in pools:
        sharing = pool.gpu_sharing
        if sharing.mode == "mig":
            for profile in mig_layouts.get(getattr(sharing, "layout", ""), {}):
                offers.setdefault(profile, []).append(pool.name)
    return offers


def _find_pool(field: str, name: str, pools: Sequence[NodePoolConfig]) -> NodePoolConfig:
    pool = next((p for p in pools if p.name == name), None)
    if pool is None:
        raise ValueError(
            f"inference.{field}.pool: no node pool named {name!r} (the stage has {', '.join(p.name for p in pools)})"
        )
    return pool


def _check_placement(field: str, pool: NodePoolConfig, workload_type: str, priority_class: str | None,
                     priority_classes: Mapping[str, int]) -> None:  # fmt: skip
    if workload_type not in pool.workload_types:
        raise ValueError(
            f"inference.{field}.workload_type: pool {pool.name} serves {', '.join(pool.workload_types)}, not "
            f"{workload_type}: pick a pool that serves it or add it to the pool's workload_types"
        )
    if priority_class is not None and priority_class not in priority_classes:
        raise ValueError(
            f"inference.{field}.priority_class: {priority_class!r} is not one of the stage's priority classes "
            f"({', '.join(priority_classes)})"
        )


def _gpus_one_pod_gets(pool: NodePoolConfig) -> tuple[int, str]:
    """Return the most GPUs one pod can request on the pool's nodes, and why."""
    mode = pool.gpu_sharing.mode
    if mode == "mig":
        return 1, "a MIG slice is one device"
    if mode == "time-slicing":
        return 1, "time-sliced GPUs refuse requests for more than one replica"
    gpus = _pool_gpus(pool)
    return gpus, f"a node has {gpus} GPUs"


def _check_gpu(field: str, server: _GpuServer | BatchConfig, pool: NodePoolConfig,
               pools: Sequence[NodePoolConfig], mig_layouts: Mapping[str, Mapping[str, int]]) -> None:  # fmt: skip
    if not pool.gpu_instance_types:
        raise ValueError(
            f"inference.{field}.pool: {pool.name} has no GPUs ({', '.join(pool.instance_types)}): an inference "
            "server needs a GPU pool such as a100-mig or a100-timeslice"
        )
    tensor_parallel = server.tensor_parallel_size if isinstance(server, VllmConfig) else 1
    most, why = _gpus_one_pod_gets(pool)
    if tensor_parallel > most:
        raise ValueError(
            f"inference.{field}.tensor_parallel_size: {tensor_parallel} is larger than the GPUs one pod can get on "
            f"pool {pool.name} ({most}: {why})"
        )
    gpu = server.gpu
    if isinstance(gpu, MigSlice):
        offers = _mig_offers(pools, mig_layouts)
        if gpu.mig_profile not in offers:
            offered = "; ".join(f"{p} on {', '.join(names)}" for p, names in sorted(offers.items())) or "none"
            raise ValueError(
                f"inference.{field}.gpu.mig_profile: no node pool offers MIG profile {gpu.mig_profile} "
                f"(offered: {offered})"
            )
        if pool.name not in offers[gpu.mig_profile]:
            raise ValueError(
                f"inference.{field}.gpu.mig_profile: pool {pool.name} does not offer MIG profile {gpu.mig_profile}; "
                f"{', '.join(offers[gpu.mig_profile])} does"
            )
        return
    if pool.gpu_sharing.mode == "mig":
        raise ValueError(
            f"inference.{field}.gpu: pool {pool.name} partitions its GPUs with MIG: request a mig_profile "
            "instead of whole gpus"
        )
    if gpu.gpus > most:
        raise ValueError(f"inference.{field}.gpu.gpus: {gpu.gpus} is more than one pod can get on pool {pool.name} "
                         f"({most}: {why})")  # fmt: skip
    if isinstance(server, VllmConfig) and gpu.gpus != tensor_parallel:
        raise ValueError(
            f"inference.{field}.gpu.gpus ({gpu.gpus}) must equal tensor_parallel_size ({tensor_parallel}): vLLM "
            "shards the model over exactly that many GPUs"
        )


def check_inference(
    inference: InferenceConfig,
    *,
    pools: Sequence[NodePoolConfig],
    mig_layouts: Mapping[str, Mapping[str, int]],
    priority_classes: Mapping[str, int],
    service_mesh: bool = True,
) -> None:
    """Raise ValueError when a model server cannot run where the config puts it.

    Args:
        inference: the stage's inference section.
        pools: the stage's node pools.
        mig_layouts: the stage's named MIG layouts (profile -> devices per GPU).
        priority_classes: the stage's PriorityClasses (name -> value).
        service_mesh: whether Linkerd runs in the stage; a canary needs it (the mesh splits the traffic).
            Defaults to True.
    """
    for field, server in _gpu_servers(inference):
        pool = _find_pool(field, server.pool, pools)
        _check_placement(field, pool, server.workload_type, server.priority_class, priority_classes)
        _check_gpu(field, server, pool, pools, mig_layouts)
    if inference.kserve is not None:
        model = inference.kserve
        pool = _find_pool("kserve", model.pool, pools)
        _check_placement("kserve", pool, model.workload_type, model.priority_class, priority_classes)
    vllm = inference.vllm
    if vllm is not None and vllm.canary is not None and not service_mesh:
        raise ValueError(
            "inference.vllm.canary: the traffic split is a Gateway API HTTPRoute that Linkerd applies; enable "
            "components.linkerd or remove the canary"
        )
