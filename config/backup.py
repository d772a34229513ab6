"""The stage's backups: AWS Backup retention and vault lock, Velero schedules, and recovery targets.

``BackupConfig`` is the ``backup:`` section of ``config/<stage>.yaml``. ``StageBackupConfig`` is the same
type with the checks that need the rest of the stage (its tier); the stage model declares its ``backup``
field with it, so those checks run when the file is loaded.

Two mechanisms, one per kind of state (docs/backup-and-restore.md has the procedures):

- AWS Backup takes the AWS-side stores (the RDS instance, the EFS file system and every EBS volume
  tagged ``ml-platform/backup=true``) into one KMS-encrypted vault on a daily/weekly/monthly plan.
  In prod the vault is locked, so no one (nor a compromised role) can delete a recovery point early.
- Velero backs up the Kubernetes objects of each listed namespace on its own cron schedule, with EBS
  snapshots of their persistent volumes, into a dedicated S3 bucket.

The recovery targets (RPO/RTO per workload class) are checked against the schedules that have to meet
them: a target cannot promise a recovery point the schedule does not take.

This module does not import ``config.model`` at import time: ``config.model`` imports it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# AWS Backup's lifecycle: a recovery point in cold storage is billed for at least 90 days.
COLD_STORAGE_MINIMUM_DAYS: Final = 90
# AWS Backup's bounds on vault lock retention and on the grace time of a compliance-mode lock.
MAX_RETENTION_DAYS: Final = 36500
MIN_CHANGEABLE_FOR_DAYS: Final = 3
# RDS uploads transaction logs every 5 minutes: point-in-time recovery cannot promise less.
RDS_LOG_UPLOAD_MINUTES: Final = 5
# The most frequent AWS Backup rule of the plan runs once a day.
DAILY_MINUTES: Final = 24 * 60
# The tag that puts an EBS volume into the AWS Backup plan (k8s_charts/storage.py can add it to a class).
BACKUP_TAG_KEY: Final = "ml-platform/backup"
BACKUP_TAG_VALUE: Final = "true"

WorkloadClass = Literal[
    "database", "shared-file-system", "object-store", "kubernetes-objects", "block-volumes", "cache"
]
WORKLOAD_CLASSES: Final[tuple[WorkloadClass, ...]] = get_args(WorkloadClass)

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- cron expressions (Velero schedules) -------------------------------------------------------------------

_CRON_FIELDS: Final = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                       ("day of week", 0, 7))  # fmt: skip
# Years walked to find the longest gap between two runs: enough for every weekday/date combination
# to occur, and a leap day.
_CRON_WALK_START: Final = dt.date(2027, 1, 1)
_CRON_WALK_DAYS: Final = 4 * 366


def _cron_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if not match:
            raise ValueError(f"cron {name} field {text!r}: use numbers, ranges (1-5), lists (1,3) and steps (*/6)")
        if match[1] == "*":
            start, end = low, high
        else:
            start = int(match[2])
            end = int(match[3]) if match[3] is not None else (high if match[4] else start)
        step = int(match[4]) if match[4] else 1
        if not low <= start <= end <= high or step < 1:
            raise ValueError(f"cron {name} field {text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def cron_max_gap_minutes(expression: str) -> int:
    """Return the longest time in minutes between two runs of a 5-field cron expression (Velero's format).

    The longest gap is the worst-case recovery point of a schedule. Day of month and day of week combine
    as in cron: when both are restricted, a day matches either. Fails on descriptors (``@daily``,
    ``@every 6h``), names (``MON``) and expressions that never run.
    """
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"cron {expression!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            "such as '0 */6 * * *'"
        )
    minutes, hours, days, months, weekdays = (
        _cron_field(text, name, low, high) for text, (name, low, high) in zip(fields, _CRON_FIELDS, strict=True)
    )
    weekdays = frozenset(d % 7 for d in weekdays)  # 7 is Sunday, like 0
    day_restricted, weekday_restricted = fields[2] != "*", fields[4] != "*"
    times = sorted(h * 60 + m for h in hours for m in minutes)
    run_days: list[int] = []
    for offset in range(_CRON_WALK_DAYS):
        day = _CRON_WALK_START + dt.timedelta(days=offset)
        if day.month not in months:
            continue
        by_date, by_weekday = day.day in days, (day.isoweekday() % 7) in weekdays
        if (by_date or by_weekday) if (day_restricted and weekday_restricted) else (by_date and by_weekday):
            run_days.append(offset)
    if len(run_days) < 2:
        raise ValueError(f"cron {expression!r} runs on fewer than two days in four years: check the date fields")
    # The longest gap is either inside a day or from a day's last run to the next run day's first.
    within = max((b - a for a, b in itertools.pairwise(times)), default=0)
    across = max(
        ((b - a) * DAILY_MINUTES + times[0] - times[-1] for a, b in itertools.pairwise(run_days)),
        default=0,
    )
    return max(within, across)


# --- sections ----------------------------------------------------------------------------------------------


class BackupRetention(_Frozen):
    """How long AWS Backup keeps the recovery points of each rule of the plan.

    A rule whose retention is None is not in the plan (dev keeps only dailies). The monthly recovery
    points move to cold storage after ``cold_storage_after_days`` (EFS; AWS Backup keeps the resource
    types without a cold tier, such as RDS, in warm storage).
    """

    daily_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = 7
    weekly_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] | None = None
    monthly_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] | None = None
    cold_storage_after_days: Annotated[int, Field(ge=1)] | None = None

    @property
    def rule_days(self) -> dict[str, int]:
        """Rule name -> retention in days, for the rules in the plan."""
        rules = {"Daily": self.daily_days, "Weekly": self.weekly_days, "Monthly": self.monthly_days}
        return {name: days for name, days in rules.items() if days is not None}

    @model_validator(mode="after")
    def _order(self) -> BackupRetention:
        kept = list(self.rule_days.items())
        for (shorter, short_days), (longer, long_days) in itertools.pairwise(kept):
            if long_days < short_days:
                raise ValueError(
                    f"backup.retention: {longer.lower()} recovery points ({long_days} days) would expire before "
                    f"the {shorter.lower()} ones ({short_days} days): keep the rarer backups longer"
                )
        cold = self.cold_storage_after_days
        if cold is not None:
            if self.monthly_days is None:
                raise ValueError(
                    "backup.retention.cold_storage_after_days applies to monthly backups: set monthly_days"
                )
            if self.monthly_days < cold + COLD_STORAGE_MINIMUM_DAYS:
                raise ValueError(
                    f"backup.retention.monthly_days ({self.monthly_days}) must be at least "
                    f"{COLD_STORAGE_MINIMUM_DAYS} days after cold_storage_after_days ({cold}): AWS Backup keeps a "
                    "recovery point in cold storage for 90 days at least"
                )
        return self


class VaultLock(_Frozen):
    """AWS Backup Vault Lock: recovery points cannot be deleted or shortened below ``min_retention_days``.

    ``governance`` (the default): the lock holds against everyone except principals allowed
    ``backup:DeleteBackupVaultLockConfiguration``, so it can be removed by an administrator.

    ``compliance``: after ``changeable_for_days`` (at least 3) the lock can never be changed or removed,
    not by the root user and not by AWS; the vault and every recovery point in it then live until their
    retention ends. Choose it only when a regulation asks for WORM backups, and only in prod.
    """

    mode: Literal["governance", "compliance"] = "governance"
    min_retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = 7
    max_retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = 400
    changeable_for_days: Annotated[int, Field(ge=MIN_CHANGEABLE_FOR_DAYS)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> VaultLock:
        if self.max_retention_days < self.min_retention_days:
            raise ValueError(
                f"backup.vault_lock.max_retention_days ({self.max_retention_days}) is below min_retention_days "
                f"({self.min_retention_days})"
            )
        if self.mode == "compliance" and self.changeable_for_days is None:
            raise ValueError(
                "backup.vault_lock: compliance mode needs changeable_for_days (at least 3), the grace time in "
                "which the lock can still be removed; after it the lock is permanent"
            )
        if self.mode == "governance" and self.changeable_for_days is not None:
            raise ValueError(
                "backup.vault_lock.changeable_for_days turns the lock into compliance mode (permanent after the "
                "grace time): remove it, or set mode: compliance to say so"
            )
        return self


class VeleroSchedule(_Frozen):
    """One namespace's Velero schedule: when it runs and how long each backup is kept.

    Args (fields):
        cron: a 5-field cron expression in UTC (minute hour day-of-month month day-of-week).
        ttl_hours: hours each backup (and its volume snapshots) is kept before Velero deletes it.
        snapshot_volumes: take EBS snapshots of the namespace's persistent volumes. EFS volumes are never
            snapshotted by Velero: AWS Backup backs up the whole file system.
    """

    cron: str = "0 2 * * *"
    ttl_hours: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS * 24)] = 720
    snapshot_volumes: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        cron_max_gap_minutes(value)
        return value

    @property
    def max_gap_minutes(self) -> int:
        """The longest time between two runs: the worst-case recovery point of the namespace."""
        return cron_max_gap_minutes(self.cron)

    @property
    def ttl(self) -> str:
        """The TTL as a Go duration, the form Velero writes itself."""
        return f"{self.ttl_hours}h0m0s"

    @model_validator(mode="after")
    def _ttl_covers_gap(self) -> VeleroSchedule:
        if self.ttl_hours * 60 < self.max_gap_minutes:
            raise ValueError(
                f"velero schedule {self.cron!r}: ttl_hours {self.ttl_hours} expires backups before the next run "
                f"({self.max_gap_minutes // 60} hours later), leaving time with no backup at all"
            )
        return self


class RecoveryTarget(_Frozen):
    """A workload class's recovery point and recovery time objectives, in minutes."""

    rpo_minutes: Annotated[int, Field(ge=0)]
    rto_minutes: Annotated[int, Field(ge=1)]


# The platform's documented targets (docs/backup-and-restore.md); a stage may loosen or tighten them as
# long as its schedules still meet them.
DEFAULT_TARGETS: Final[Mapping[WorkloadClass, RecoveryTarget]] = MappingProxyType(
    {
        # RDS point-in-time recovery from the automated backups; a restore builds a new instance.
        "database": RecoveryTarget(rpo_minutes=5, rto_minutes=60),
        # The AWS Backup daily rule; a full restore of a large file system takes hours.
        "shared-file-system": RecoveryTarget(rpo_minutes=DAILY_MINUTES, rto_minutes=240),
        # Versioning (a deleted or overwritten object is one version back) and, in prod, cross-region
        # replication, which copies most objects within 15 minutes.
        "object-store": RecoveryTarget(rpo_minutes=15, rto_minutes=60),
        # Velero: the longest gap of any namespace's schedule.
        "kubernetes-objects": RecoveryTarget(rpo_minutes=DAILY_MINUTES, rto_minutes=60),
        # Velero EBS snapshots with the namespace, and AWS Backup's daily rule for tagged volumes.
        "block-volumes": RecoveryTarget(rpo_minutes=DAILY_MINUTES, rto_minutes=120),
        # ElastiCache daily snapshots; the cache can also be rebuilt from its sources.
        "cache": RecoveryTarget(rpo_minutes=DAILY_MINUTES, rto_minutes=60),
    }
)

DEFAULT_VELERO_SCHEDULES: Final[Mapping[str, VeleroSchedule]] = MappingProxyType(
    {
        namespace: VeleroSchedule()
        for namespace in ("training", "inference", "agentic", "mlops", "monitoring", "research", "development")
    }
)


class BackupConfig(_Frozen):
    """The stage's backups: the AWS Backup plan and vault, Velero's schedules and the recovery targets.

    Args (fields):
        schedule_hour_utc: the hour (UTC) at which the AWS Backup rules start; pick a quiet hour.
        retention: retention of the daily, weekly and monthly rules.
        vault_lock: lock the vault (required in prod). Defaults to no lock.
        velero_schedules: namespace -> its Velero schedule. Defaults to a daily backup of every platform
            namespace, kept 30 days.
        targets: workload class -> RPO/RTO. Defaults to ``DEFAULT_TARGETS``; every class must be listed.
        velero_bucket_noncurrent_days: days S3 keeps a superseded or deleted object of the Velero bucket
            (Velero deletes expired backups itself; this is the undo window for a deletion).
    """

    schedule_hour_utc: Annotated[int, Field(ge=0, le=23)] = 5
    retention: BackupRetention = BackupRetention()
    vault_lock: VaultLock | None = None
    velero_schedules: dict[str, VeleroSchedule] = Field(default_factory=lambda: dict(DEFAULT_VELERO_SCHEDULES))
    targets: dict[WorkloadClass, RecoveryTarget] = Field(default_factory=lambda: dict(DEFAULT_TARGETS))
    velero_bucket_noncurrent_days: Annotated[int, Field(ge=1)] = 30

    @field_validator("velero_schedules")
    @classmethod
    def _namespaces(cls, value: dict[str, VeleroSchedule]) -> dict[str, VeleroSchedule]:
        for namespace in value:
            if not _NAMESPACE.match(namespace):
                raise ValueError(f"velero schedule namespace {namespace!r} is not a Kubernetes namespace name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BackupConfig:
        missing = [c for c in WORKLOAD_CLASSES if c not in self.targets]
        if missing:
            raise ValueError(f"backup.targets: no RPO/RTO for {', '.join(missing)}: every workload class needs one")
        lock = self.vault_lock
        if lock is not None:
            for rule, days in self.retention.rule_days.items():
                # A backup job whose retention is outside the lock's range fails, so the plan would stop.
                if not lock.min_retention_days <= days <= lock.max_retention_days:
                    raise ValueError(
                        f"backup.retention: the {rule.lower()} rule keeps {days} days, outside the vault lock's "
                        f"{lock.min_retention_days}-{lock.max_retention_days} days; AWS Backup would fail those jobs"
                    )
        self._targets_met()
        return self

    def _targets_met(self) -> None:
        targets = self.targets
        daily: tuple[WorkloadClass, ...] = ("shared-file-system", "block-volumes")
        for workload in daily:
            if targets[workload].rpo_minutes < DAILY_MINUTES:
                raise ValueError(
                    f"backup.targets.{workload}.rpo_minutes ({targets[workload].rpo_minutes}) is below the "
                    f"{DAILY_MINUTES} minutes of the daily AWS Backup rule that protects it"
                )
        if targets["database"].rpo_minutes < RDS_LOG_UPLOAD_MINUTES:
            raise ValueError(
                f"backup.targets.database.rpo_minutes ({targets['database'].rpo_minutes}) is below the "
                f"{RDS_LOG_UPLOAD_MINUTES} minutes between RDS transaction log uploads"
            )
        rpo = targets["kubernetes-objects"].rpo_minutes
        for namespace, schedule in self.velero_schedules.items():
            if schedule.max_gap_minutes > rpo:
                raise ValueError(
                    f"backup.velero_schedules.{namespace}: {schedule.cron!r} runs up to {schedule.max_gap_minutes} "
                    f"minutes apart, more than the kubernetes-objects RPO of {rpo} minutes"
                )


def _check_against_stage(backup: BackupConfig, info: ValidationInfo) -> BackupConfig:
    """Run the checks that need the stage's tier."""
    tier = info.data.get("tier")
    lock = backup.vault_lock
    if tier == "prod" and lock is None:
        raise ValueError(
            "backup.vault_lock: prod locks its backup vault so recovery points cannot be deleted early "
            "(add vault_lock: {mode: governance, min_retention_days: ..., max_retention_days: ...})"
        )
    if lock is not None and lock.mode == "compliance" and tier != "prod":
        raise ValueError(
            f"backup.vault_lock.mode: a compliance lock is permanent after its grace time, and a {tier} stage is "
            "torn down or rebuilt; use governance outside prod"
        )
    return backup


# The type of ``StageConfig.backup``: validated against the stage even when the file has no backup section.
StageBackupConfig = Annotated[BackupConfig, AfterValidator(_check_against_stage), Field(validate_default=True)]
