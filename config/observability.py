"""The ``observability`` section of a stage: metrics retention, alert routing, alarm thresholds, CloudTrail.

Kept apart from ``config/model.py`` (which imports it), so this module must not import ``config.model`` at
import time; the one shared fact it needs (CloudWatch's retention periods) is read inside the validator.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Prometheus durations: a number and a unit, such as 15d, 12h or 2w (what --storage.tsdb.retention.time takes).
_PROMETHEUS_DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")
# An address SNS will accept for an email subscription (the mailbox still has to confirm it).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
# Alert severities the platform's rules use (k8s_charts/alert_rules.py).
SEVERITIES = ("critical", "warning", "info")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _log_retention(value: int) -> int:
    # Imported here: config.model imports this module, so a module-level import would be circular.
    from config.model import LOG_RETENTION_DAYS

    if value not in LOG_RETENTION_DAYS:
        raise ValueError(
            f"{value} is not a CloudWatch Logs retention period: use one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
        )
    return value


class PrometheusConfig(_Section):
    """Prometheus in the cluster: how long it keeps samples and the gp3 volume that holds them."""

    retention: str = "15d"
    volume_gib: Annotated[int, Field(ge=10, le=16384)] = 100
    replicas: Annotated[int, Field(ge=1, le=3)] = 1
    # The memory limit; requests are half of it. Series count, not traffic, drives Prometheus's memory.
    memory_gib: Annotated[int, Field(ge=1, le=256)] = 8

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        if not _PROMETHEUS_DURATION.match(value):
            raise ValueError(f"observability.prometheus.retention {value!r} is not a duration such as 15d or 720h")
        return value


class AlertmanagerConfig(_Section):
    """Alertmanager: replicas and which severities reach the stage's SNS topic (the rest are dropped)."""

    replicas: Annotated[int, Field(ge=1, le=3)] = 1
    notify_severities: Annotated[tuple[str, ...], Field(min_length=1)] = ("critical", "warning")

    @field_validator("notify_severities")
    @classmethod
    def _severities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for severity in value:
            if severity not in SEVERITIES:
                raise ValueError(
                    f"observability.alertmanager.notify_severities: unknown severity {severity!r}: "
                    f"use {', '.join(SEVERITIES)}"
                )
        return value


class CloudTrailConfig(_Section):
    """The stage's own CloudTrail trail; turn it off where an organization trail already records the account."""

    enabled: bool = True
    glacier_after_days: Annotated[int, Field(ge=1)] = 90
    expire_after_days: Annotated[int, Field(ge=1)] = 365
    cloudwatch_logs: bool = True

    @model_validator(mode="after")
    def _lifecycle(self) -> CloudTrailConfig:
        # Glacier Flexible Retrieval bills 90 days at least; deleting earlier is billed anyway.
        if self.expire_after_days < self.glacier_after_days + 90:
            raise ValueError(
                f"observability.cloudtrail.expire_after_days ({self.expire_after_days}) must be at least 90 days "
                f"after glacier_after_days ({self.glacier_after_days}), the Glacier minimum storage duration"
            )
        return self


class AlertThresholds(_Section):
    """Where the Prometheus rules and the CloudWatch alarms fire.

    Ratios are 0-1, percentages 0-100, latencies in seconds.
    """

    # GPUs: idle (wasted money) below low for 30 minutes, saturated above high for 30 minutes.
    gpu_utilization_low_percent: Annotated[float, Field(ge=0, le=100)] = 20
    gpu_utilization_high_percent: Annotated[float, Field(ge=0, le=100)] = 95
    # vLLM pre-allocates 0.9 of its device (gpu_memory_utilization), so pressure starts above that.
    gpu_memory_used_ratio: Annotated[float, Field(gt=0, le=1)] = 0.95
    # Inference (vLLM / Linkerd): p99 end-to-end latency and the share of failed responses.
    inference_p99_latency_seconds: Annotated[float, Field(gt=0)] = 5.0
    inference_error_ratio: Annotated[float, Field(gt=0, le=1)] = 0.05
    # The score a drift job publishes as ml_platform_model_drift_score (0 = no drift).
    model_drift_score: Annotated[float, Field(gt=0)] = 0.3
    # Block-storage claims (EBS): alert when less than this share is free.
    pvc_free_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.1
    # CloudWatch alarms on the managed services.
    rds_cpu_percent: Annotated[float, Field(gt=0, le=100)] = 80
    rds_free_storage_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.1
    rds_connections: Annotated[int, Field(ge=1)] = 400
    cache_engine_cpu_percent: Annotated[float, Field(gt=0, le=100)] = 80
    cache_memory_percent: Annotated[float, Field(gt=0, le=100)] = 80
    cache_evictions_per_5m: Annotated[int, Field(ge=1)] = 1000
    alb_5xx_per_5m: Annotated[int, Field(ge=1)] = 25
    alb_target_p99_seconds: Annotated[float, Field(gt=0)] = 5.0
    # The blocked-requests spike: the band's width in standard deviations of the learned pattern.
    waf_blocked_anomaly_band: Annotated[float, Field(gt=0)] = 3.0
    efs_io_limit_percent: Annotated[float, Field(gt=0, le=100)] = 90

    @model_validator(mode="after")
    def _order(self) -> AlertThresholds:
        if self.gpu_utilization_low_percent >= self.gpu_utilization_high_percent:
            raise ValueError(
                f"observability.thresholds: gpu_utilization_low_percent ({self.gpu_utilization_low_percent:g}) "
                f"must be below gpu_utilization_high_percent ({self.gpu_utilization_high_percent:g})"
            )
        return self


class ObservabilityConfig(_Section):
    """Metrics, logs, traces and alarms of one stage."""

    prometheus: PrometheusConfig = PrometheusConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    # Mailboxes subscribed to the stage's alarm topic (each must confirm); empty means no email.
    alarm_emails: tuple[str, ...] = ()
    cloudtrail: CloudTrailConfig = CloudTrailConfig()
    thresholds: AlertThresholds = AlertThresholds()
    # Retention of the container log group /<project>/<stage>/containers.
    container_log_retention_days: int = 30
    # The OpenTelemetry Operator (auto-instrumentation); the collector itself is a plain Deployment.
    opentelemetry_operator: bool = False

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not _EMAIL.match(address):
                raise ValueError(f"observability.alarm_emails: {address!r} is not an email address")
        if len(set(value)) != len(value):
            raise ValueError(f"observability.alarm_emails: {list(value)} lists an address twice")
        return value

    @field_validator("container_log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        return _log_retention(value)
