"""The stage's edge: the inference load balancer's name and certificate, its WAF limits and its logs.

``EdgeConfig`` is the ``edge:`` section of ``config/<stage>.yaml``. ``StageEdgeConfig`` is the same type
with the checks that need the rest of the stage (tier, account, region, whether the edge is on); the
stage model declares its ``edge`` field with it, so those checks run when the file is loaded.

This module does not import ``config.model`` at import time: ``config.model`` imports it.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# AWS WAF rate-based rules evaluate over one of these windows (seconds).
RATE_LIMIT_WINDOWS: Final = (60, 120, 300, 600)
# Below this a busy client (an agent looping over completions) trips the limit in normal use.
MIN_RATE_LIMIT: Final = 100
# AWS WAF's upper bound for a rate-based rule's limit.
MAX_RATE_LIMIT: Final = 2_000_000_000
# A WAF byte-match search string holds at most 200 bytes.
MAX_PATH_BYTES: Final = 200

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HOSTED_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")
_CERTIFICATE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):acm:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"certificate/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


class EdgeConfig(BaseModel):
    """The public (or internal) entry to inference: ALB, certificate, WAF and their logs.

    The certificate comes from ``certificate_arn`` (imported, never looked up) or, without one, is
    created for ``domain_name`` and validated by DNS in the hosted zone ``hosted_zone_id`` /
    ``hosted_zone_name``. With a hosted zone, ``domain_name`` also gets an alias record to the ALB.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    internet_facing: bool = True
    domain_name: str | None = None
    hosted_zone_id: str | None = None
    hosted_zone_name: str | None = None
    certificate_arn: str | None = None
    rate_limit_per_window: int = 1000
    rate_limit_window_seconds: int = 60
    openai_paths: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
    # Seconds an idle client connection stays open: a non-streamed completion of a long prompt sends
    # nothing until it is done, and ALB's default of 60 s would cut it with a 504.
    idle_timeout_seconds: Annotated[int, Field(ge=1, le=4000)] = 300
    waf_log_retention_days: int = 90
    access_log_expire_after_days: Annotated[int, Field(ge=1)] = 90
    deletion_protection: bool = True

    @field_validator("domain_name", "hosted_zone_name")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.match(value):
            raise ValueError(
                f"{value!r} is not a lowercase DNS name such as api.example.com (no wildcard, no trailing dot)"
            )
        return value

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone_id(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTED_ZONE_ID.match(value):
            raise ValueError(f"{value!r} is not a Route 53 hosted zone ID such as Z0123456789ABCDEFGHIJ")
        return value

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None and not _CERTIFICATE_ARN.match(value):
            raise ValueError(
                f"{value!r} is not an ACM certificate ARN such as "
                "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-0a1b-0a1b-0a1b-0a1b2c3d4e5f"
            )
        return value

    @field_validator("rate_limit_per_window")
    @classmethod
    def _rate_limit(cls, value: int) -> int:
        if value < MIN_RATE_LIMIT:
            raise ValueError(
                f"rate_limit_per_window {value} is below {MIN_RATE_LIMIT} requests per window: one busy client "
                f"would be blocked in normal use; use at least {MIN_RATE_LIMIT}"
            )
        if value > MAX_RATE_LIMIT:
            raise ValueError(f"rate_limit_per_window {value} is above the AWS WAF maximum of {MAX_RATE_LIMIT}")
        return value

    @field_validator("rate_limit_window_seconds")
    @classmethod
    def _window(cls, value: int) -> int:
        if value not in RATE_LIMIT_WINDOWS:
            raise ValueError(
                f"rate_limit_window_seconds {value} is not an AWS WAF evaluation window: use one of "
                f"{', '.join(map(str, RATE_LIMIT_WINDOWS))}"
            )
        return value

    @field_validator("openai_paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("openai_paths is empty: list the OpenAI-compatible paths, such as /v1/chat/completions")
        for path in value:
            if not _PATH.match(path):
                raise ValueError(f"openai path {path!r} must start with / and hold only URL path characters")
            if len(path.encode()) > MAX_PATH_BYTES:
                raise ValueError(f"openai path {path!r} is longer than the {MAX_PATH_BYTES} bytes WAF can match")
        if len(set(value)) != len(value):
            raise ValueError(f"openai_paths lists a path twice: {list(value)}")
        return value

    @field_validator("waf_log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        # Imported here: config.model imports this module, so a top-level import would be circular.
        from config.model import LOG_RETENTION_DAYS

        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"waf_log_retention_days {value} is not a CloudWatch Logs retention period: use one of "
                f"{', '.join(map(str, LOG_RETENTION_DAYS))}"
            )
        return value

    @model_validator(mode="after")
    def _dns(self) -> EdgeConfig:
        if (self.hosted_zone_id is None) != (self.hosted_zone_name is None):
            raise ValueError(
                "edge.hosted_zone_id and edge.hosted_zone_name go together: the zone is imported by both, "
                "never looked up"
            )
        if self.hosted_zone_id is not None:
            if self.domain_name is None:
                raise ValueError("edge.hosted_zone_id is set without edge.domain_name: name the host the ALB serves")
            zone = self.hosted_zone_name
            if self.domain_name != zone and not self.domain_name.endswith(f".{zone}"):
                raise ValueError(
                    f"edge.domain_name {self.domain_name} is not inside the hosted zone {zone}: "
                    f"use a name ending in .{zone} or the zone that holds it"
                )
        return self

    @property
    def certificate_source(self) -> Literal["imported", "dns-validated"] | None:
        """How the listener gets its certificate: imported by ARN, created in the zone, or not at all."""
        if self.certificate_arn is not None:
            return "imported"
        if self.domain_name is not None and self.hosted_zone_id is not None:
            return "dns-validated"
        return None


def _check_against_stage(edge: EdgeConfig, info: ValidationInfo) -> EdgeConfig:
    """Run the checks that need the stage's tier, account, region and component switches."""
    stage = info.data
    components = stage.get("components")
    enabled = bool(getattr(components, "edge", False))
    if enabled and edge.certificate_source is None:
        raise ValueError(
            "the edge component is on but has no certificate: set edge.certificate_arn, or edge.domain_name "
            "with edge.hosted_zone_id and edge.hosted_zone_name for a DNS-validated certificate "
            "(or turn components.edge off)"
        )
    if stage.get("tier") == "prod" and not edge.deletion_protection:
        raise ValueError("edge.deletion_protection: the prod load balancer must be deletion-protected (set true)")
    match = _CERTIFICATE_ARN.match(edge.certificate_arn or "")
    if match:
        account, region = stage.get("account"), stage.get("region")
        # An ALB listener can only use a certificate of its own account and region.
        if account is not None and match["account"] != account:
            raise ValueError(
                f"edge.certificate_arn is in account {match['account']}, the stage deploys to {account}: "
                "import a certificate of the stage's account"
            )
        if region is not None and match["region"] != region:
            raise ValueError(
                f"edge.certificate_arn is in {match['region']}, the stage's load balancer is in {region}: "
                "ALB listeners use certificates of their own region"
            )
    return edge


# The type of ``StageConfig.edge``: validated against the stage even when the file has no edge section.
StageEdgeConfig = Annotated[EdgeConfig, AfterValidator(_check_against_stage), Field(validate_default=True)]
