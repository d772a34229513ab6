"""Map a retention period in days (validated in config) to the CDK ``RetentionDays`` member."""

from __future__ import annotations

from aws_cdk import aws_logs as logs

from config.model import LOG_RETENTION_DAYS

# jsii enums carry names, not numbers: CloudWatch's periods in the order of ``logs.RetentionDays``
# (every member but INFINITE), matched to the valid periods in config.
_MEMBERS = [m for m in logs.RetentionDays if m.name != "INFINITE"]
assert len(_MEMBERS) == len(LOG_RETENTION_DAYS), "aws_logs.RetentionDays changed: update LOG_RETENTION_DAYS"
_BY_DAYS = dict(zip(LOG_RETENTION_DAYS, _MEMBERS, strict=True))


def retention_days(days: int) -> logs.RetentionDays:
    """Return the ``RetentionDays`` member for ``days``; fail with the valid periods otherwise."""
    try:
        return _BY_DAYS[days]
    except KeyError:
        raise ValueError(f"{days} is not a CloudWatch Logs retention period: use one of {LOG_RETENTION_DAYS}") from None
