"""The ``workloads`` section of a stage: agents, MLOps services, training and data processing.

Every field has a default, so a stage file needs a ``workloads:`` section only to change something (dev runs
single replicas, for example). Agent sections merge over per-framework defaults: ``crewai: {replicas: 3}``
keeps the default image and backends.

Container images are ``{repository, tag}`` pairs with an exact tag: an empty tag or ``latest`` is refused, so
the same stage config always deploys the same bits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# In-cluster OpenAI-compatible endpoint of the vLLM service (k8s_charts/inference.py: Service vllm, port 8000).
VLLM_BASE_URL: Final = "http://vllm.inference.svc.cluster.local:8000/v1"
AGENT_FRAMEWORKS: Final = ("crewai", "langgraph", "autogen")
# OCI references: lowercase path components, an optional registry host[:port] in front; no tag, no digest.
_REPOSITORY = re.compile(r"^([a-z0-9.-]+(:\d+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PROMPT_VERSION = re.compile(r"^v\d+(\.\d+){0,2}$")
_SQL_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Five cron fields: numbers, ranges, steps, lists or * (the CronJob controller's standard syntax).
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+")
# Spot capacity is reclaimed two minutes after the interruption notice, whatever the grace period says.
SPOT_NOTICE_SECONDS: Final = 120


class _Frozen(BaseModel):
    # The same base as config.model's sections (which import this module, so it cannot import theirs).
    model_config = ConfigDict(frozen=True, extra="forbid")


def exact_tag(tag: str) -> str:
    """Return ``tag`` if it names one image version; refuse empty, ``latest`` and malformed tags."""
    if not tag or tag.lower() == "latest":
        raise ValueError(
            f"image tag {tag!r} is not an exact version: pin a release tag such as '1.4.2' (never latest or empty)"
        )
    if not _TAG.match(tag):
        raise ValueError(f"image tag {tag!r} is not a valid OCI tag (letters, digits, '_', '.', '-'; 128 at most)")
    return tag


class ImageRef(_Frozen):
    """One container image pinned to an exact tag."""

    repository: str
    tag: str

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if "@" in value or ":" in value.rsplit("/", 1)[-1]:
            raise ValueError(f"image repository {value!r} carries a tag or digest: put the version in 'tag'")
        if not _REPOSITORY.match(value):
            raise ValueError(f"{value!r} is not an image repository such as ghcr.io/org/service")
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        return exact_tag(value)

    @property
    def ref(self) -> str:
        """Return ``repository:tag``."""
        return f"{self.repository}:{self.tag}"


class LlmBackend(_Frozen):
    """One model endpoint an agent may call, with its token and rate limits."""

    model: Annotated[str, Field(min_length=1)]
    endpoint: str = VLLM_BASE_URL
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    requests_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] = 600

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?(/[\w./-]*)?", value):
            raise ValueError(f"endpoint {value!r} is not an http(s) URL such as {VLLM_BASE_URL}")
        return value


def _default_backends() -> dict[str, LlmBackend]:
    return {"vllm": LlmBackend(model="meta-llama/Llama-3.1-8B-Instruct")}


class AgentConfig(_Frozen):
    """One agent service: image, replicas, the LLM backends it may use and its prompt template version."""

    image: ImageRef
    replicas: Annotated[int, Field(ge=1, le=50)] = 2
    backends: Annotated[dict[str, LlmBackend], Field(min_length=1)] = Field(default_factory=_default_backends)
    prompt_template_version: str = "v1"
    cpu_millicores: Annotated[int, Field(ge=50, le=16000)] = 500
    memory_mib: Annotated[int, Field(ge=128, le=65536)] = 1024

    @field_validator("backends")
    @classmethod
    def _backend_names(cls, value: dict[str, LlmBackend]) -> dict[str, LlmBackend]:
        for name in value:
            if not _K8S_NAME.match(name):
                raise ValueError(f"backend name {name!r} must be lowercase alphanumerics and '-' (63 at most)")
        return value

    @field_validator("prompt_template_version")
    @classmethod
    def _prompt_version(cls, value: str) -> str:
        if not _PROMPT_VERSION.match(value):
            raise ValueError(
                f"prompt_template_version {value!r} must look like v3 or v3.1: it becomes part of a ConfigMap name"
            )
        return value


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        merged[key] = _merge(current, value) if isinstance(current, Mapping) and isinstance(value, Mapping) else value
    return merged


# Thin service images of each framework (placeholders until the agent repositories publish theirs).
_AGENT_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    name: {"image": {"repository": f"ghcr.io/ml-platform/{name}-service", "tag": "0.1.0"}} for name in AGENT_FRAMEWORKS
}


def _default_agent(name: str) -> AgentConfig:
    return AgentConfig.model_validate(_AGENT_DEFAULTS[name])


class AgentsConfig(_Frozen):
    """The three agent services; each section merges over its framework's defaults."""

    crewai: AgentConfig = Field(default_factory=lambda: _default_agent("crewai"))
    langgraph: AgentConfig = Field(default_factory=lambda: _default_agent("langgraph"))
    autogen: AgentConfig = Field(default_factory=lambda: _default_agent("autogen"))

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for name, defaults in _AGENT_DEFAULTS.items():
            given = filled.get(name)
            if given is None:
                filled[name] = dict(defaults)
            elif isinstance(given, Mapping):
                filled[name] = _merge(defaults, given)
        return filled

    def items(self) -> tuple[tuple[str, AgentConfig], ...]:
        """Return (framework, config) pairs in a fixed order."""
        return tuple((name, getattr(self, name)) for name in AGENT_FRAMEWORKS)


class MlflowConfig(_Frozen):
    """The MLflow tracking server (community-charts mlflow): image, replicas, resources, database name."""

    image: ImageRef = ImageRef(repository="burakince/mlflow", tag="3.15.1")
    replicas: Annotated[int, Field(ge=1, le=10)] = 2
    cpu_millicores: Annotated[int, Field(ge=100, le=16000)] = 500
    memory_mib: Annotated[int, Field(ge=512, le=65536)] = 2048
    database: str = "mlflow"

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        return _sql_identifier(value)


class WandbConfig(_Frozen):
    """Weights & Biases: off by default; when on, its API key reaches opted-in training pods."""

    enabled: bool = False
    secret_name: str = "wandb-api-key"

    @field_validator("secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if not _K8S_NAME.match(value):
            raise ValueError(f"secret_name {value!r} must be a Kubernetes name (lowercase alphanumerics and '-')")
        return value


class FeastConfig(_Frozen):
    """The Feast feature server and its materialization schedule."""

    image: ImageRef = ImageRef(repository="quay.io/feastdev/feature-server", tag="0.67.0")
    replicas: Annotated[int, Field(ge=1, le=20)] = 2
    cpu_millicores: Annotated[int, Field(ge=100, le=16000)] = 500
    memory_mib: Annotated[int, Field(ge=256, le=65536)] = 1024
    materialization_schedule: str = "0 * * * *"
    project: str = "ml_platform"
    database: str = "feast"

    @field_validator("materialization_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(
                f"materialization_schedule {value!r} is not a five-field cron expression such as '0 * * * *'"
            )
        return value

    @field_validator("project", "database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return _sql_identifier(value)


class TrainingConfig(_Frozen):
    """Distributed training: images, checkpoint cadence, spot capacity and the interruption grace period."""

    pytorch_image: ImageRef = ImageRef(repository="pytorch/pytorch", tag="2.7.1-cuda12.6-cudnn9-runtime")
    ray_image: ImageRef = ImageRef(repository="rayproject/ray", tag="2.60.0-py312-gpu")
    # The same pinned AWS CLI the model servers sync weights with (k8s_charts/inference.py).
    data_sync_image: ImageRef = ImageRef(repository="public.ecr.aws/aws-cli/aws-cli", tag="2.32.9")
    checkpoint_interval_minutes: Annotated[int, Field(ge=1, le=1440)] = 30
    spot_allowed: bool = True
    termination_grace_seconds: Annotated[int, Field(ge=30, le=3600)] = 110
    example_workers: Annotated[int, Field(ge=1, le=16)] = 2
    # Validation score a model needs before the pipeline registers and promotes it.
    promotion_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9

    @field_validator("ray_image")
    @classmethod
    def _ray_version(cls, value: ImageRef) -> ImageRef:
        if not _SEMVER.match(value.tag):
            raise ValueError(
                f"ray_image tag {value.tag!r} must start with the Ray version (such as 2.60.0-py312-gpu): the "
                "RayJob's rayVersion is read from it"
            )
        return value

    @property
    def ray_version(self) -> str:
        """Return the Ray version of ``ray_image`` (``2.60.0`` for ``2.60.0-py312-gpu``)."""
        match = _SEMVER.match(self.ray_image.tag)
        assert match is not None  # checked by the validator
        return match.group(0)

    @model_validator(mode="after")
    def _spot_grace(self) -> TrainingConfig:
        if self.spot_allowed and self.termination_grace_seconds > SPOT_NOTICE_SECONDS:
            raise ValueError(
                f"termination_grace_seconds {self.termination_grace_seconds} is longer than the "
                f"{SPOT_NOTICE_SECONDS} s spot interruption notice: the node is gone before the checkpoint is "
                "written; lower it (and checkpoint faster) or set spot_allowed: false"
            )
        return self


class DataProcessingConfig(_Frozen):
    """Managed data processing and training beside the cluster."""

    emr_on_eks: bool = True
    sagemaker: bool = True


class WorkloadsConfig(_Frozen):
    """Agents, MLOps services (MLflow, W&B, Feast), training and data processing of one stage."""

    agents: AgentsConfig = AgentsConfig()
    mlflow: MlflowConfig = MlflowConfig()
    wandb: WandbConfig = WandbConfig()
    feast: FeastConfig = FeastConfig()
    training: TrainingConfig = TrainingConfig()
    data_processing: DataProcessingConfig = DataProcessingConfig()
    # psql for the job that creates the MLflow and Feast databases on the stage's PostgreSQL.
    database_client_image: ImageRef = ImageRef(repository="postgres", tag="17.6-alpine")

    @model_validator(mode="after")
    def _databases(self) -> WorkloadsConfig:
        if self.mlflow.database == self.feast.database:
            raise ValueError(
                f"mlflow.database and feast.database are both {self.mlflow.database!r}: MLflow's and Feast's "
                "tables must live in separate databases"
            )
        return self


def _sql_identifier(value: str) -> str:
    if not _SQL_IDENTIFIER.match(value):
        raise ValueError(f"{value!r} must be a lowercase SQL identifier (letters, digits, '_'; 63 at most)")
    return value
