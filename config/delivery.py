"""The delivery config: the CDK pipeline in the toolchain account, read from ``config/delivery/pipeline.yaml``.

The file sits in a sub-folder because every ``config/*.yaml`` is a stage file. The pipeline deploys the
stage files named in ``stages``, in that order; a stage's tier decides what guards it (a smoke test after
a staging stage, two manual approvals before a prod stage).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from config.loader import CONFIG_DIR, ConfigError, format_validation_error, load_stages
from config.model import StageConfig, _Frozen, check_account, check_region

PIPELINE_FILE = CONFIG_DIR / "delivery" / "pipeline.yaml"
# A CodeConnections (formerly CodeStar Connections) connection: both service prefixes name the same resource.
CONNECTION_ARN_PATTERN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(codestar-connections|codeconnections):(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"connection/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
# GitHub's rules: owner up to 39 characters of letters, digits and single hyphens; repository of letters,
# digits, '.', '_' and '-'.
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}/[A-Za-z0-9._-]{1,100}$")
# git check-ref-format, simplified to what a branch name in a pipeline source needs.
BRANCH_PATTERN = re.compile(r"^(?!/|.*([/.]\.|//|@\{|\\))[^\x00-\x20~^:?*\[\x7f]+(?<![/.])$")
_TIER_ORDER = {"dev": 0, "staging": 1, "prod": 2}


class PipelineConfig(_Frozen):
    """The pipeline: where it runs, what it watches, the stages it promotes through and their guards."""

    account: str
    region: str
    connection_arn: str
    repository: str
    branch: str = "main"
    stages: Annotated[tuple[str, ...], Field(min_length=1)] = ("dev", "staging", "prod")
    staging_health_checks: Annotated[tuple[str, ...], Field(min_length=1)]
    prod_approvers: Annotated[str, Field(min_length=10, max_length=500)]

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        return check_account(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region(value)

    @field_validator("connection_arn")
    @classmethod
    def _connection_arn(cls, value: str) -> str:
        if not CONNECTION_ARN_PATTERN.match(value):
            raise ValueError(
                "not a CodeConnections connection ARN: use "
                "arn:aws:codeconnections:<region>:<12-digit account>:connection/<uuid> "
                "(the ARN shown in Developer Tools > Settings > Connections)"
            )
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not REPOSITORY_PATTERN.match(value):
            raise ValueError("the repository is 'owner/name' as on GitHub, such as example-org/ml-platform")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not BRANCH_PATTERN.match(value):
            raise ValueError("not a valid git branch name (no spaces, '..', '~', '^', ':', '?', '*', '[' or '\\')")
        return value

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen = [s for i, s in enumerate(value) if s in value[:i]]
        if seen:
            raise ValueError(f"stage {seen[0]!r} is listed twice; each stage is deployed once per release")
        return value

    @field_validator("staging_health_checks")
    @classmethod
    def _health_checks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            # The smoke test passes each URL to curl inside a shell: no quotes or spaces may break out.
            if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~%/?=&+-]*)?", url):
                raise ValueError(f"{url!r} is not an https:// URL (letters, digits and ./_~%?=&+- only)")
        return value

    @model_validator(mode="after")
    def _connection_account(self) -> PipelineConfig:
        match = CONNECTION_ARN_PATTERN.match(self.connection_arn)
        if match and match["account"] != self.account:
            # CodePipeline can only use a connection of its own account.
            raise ValueError(
                f"connection_arn: the connection is in account {match['account']} but the pipeline runs in "
                f"{self.account}; create the connection in the toolchain account"
            )
        return self


def load_pipeline_config(
    path: Path = PIPELINE_FILE, stage_configs: Sequence[StageConfig] | None = None
) -> PipelineConfig:
    """Read and validate the pipeline config against the stage files.

    Args:
        path: the pipeline file. Defaults to ``config/delivery/pipeline.yaml``.
        stage_configs: every stage config, to check the pipeline's stages against. Defaults to loading
            every stage file in ``config/``.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no pipeline config (copy the example in README.md)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a pipeline config is a mapping of fields, got {type(raw).__name__}")
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, err, raw, what="pipeline config")) from None
    configs = {c.stage: c for c in (load_stages() if stage_configs is None else stage_configs)}
    unknown = [s for s in cfg.stages if s not in configs]
    if unknown:
        raise ConfigError(
            f"{path}: stages: {unknown[0]!r} has no stage file config/{unknown[0]}.yaml "
            f"(the stages are {', '.join(sorted(configs))})"
        )
    tiers = [configs[s].tier for s in cfg.stages]
    for before, after in zip(cfg.stages, cfg.stages[1:], strict=False):
        if _TIER_ORDER[configs[after].tier] < _TIER_ORDER[configs[before].tier]:
            raise ConfigError(
                f"{path}: stages: {after!r} ({configs[after].tier}) comes after {before!r} "
                f"({configs[before].tier}); promote in the order dev, staging, prod"
            )
    if "staging" not in tiers:
        raise ConfigError(
            f"{path}: stages: {list(cfg.stages)} has no staging-tier stage for the smoke test "
            "(staging_health_checks) to run against before prod"
        )
    return cfg


def cdk_cli_version(package_json: Path = CONFIG_DIR.parent / "package.json") -> str:
    """Return the pinned CDK CLI version (package.json's ``aws-cdk``), which the pipeline's own steps use too."""
    version = json.loads(package_json.read_text())["dependencies"]["aws-cdk"]
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        raise ConfigError(
            f"{package_json}: dependencies.aws-cdk: {version!r} must be an exact version such as 2.1148.1"
        )
    return str(version)
