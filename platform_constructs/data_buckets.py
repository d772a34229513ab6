"""The layout and lifecycle of the two data buckets, shared by the source buckets and their replicas.

Key prefixes are a convention, not a resource (S3 has no folders): pipelines write under them and
IAM policies and lifecycle filters may scope to them.

``DATASETS_PREFIXES`` (the ``Datasets`` bucket):
    ``raw/`` data as ingested, never modified; ``interim/`` intermediate transforms;
    ``processed/`` the canonical, model-ready data; ``external/`` third-party data sets.

``MODELS_PREFIXES`` (the ``Models`` bucket):
    ``trained/`` model weights from training runs; ``artifacts/`` MLflow run artifacts;
    ``experiments/`` notebooks' and sweeps' outputs; ``production/`` the models serving traffic.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3

DATASETS_PREFIXES = ("raw/", "processed/", "interim/", "external/")
MODELS_PREFIXES = ("trained/", "artifacts/", "experiments/", "production/")


def datasets_lifecycle_rules(*, glacier_after_days: int) -> list[s3.LifecycleRule]:
    """Return the datasets rules: objects to Glacier Flexible Retrieval after ``glacier_after_days``.

    Noncurrent versions follow the same schedule, so an overwritten data set is not kept in STANDARD.
    """
    after = cdk.Duration.days(glacier_after_days)
    return [
        s3.LifecycleRule(
            id="ArchiveDatasets",
            transitions=[s3.Transition(storage_class=s3.StorageClass.GLACIER, transition_after=after)],
            noncurrent_version_transitions=[
                s3.NoncurrentVersionTransition(storage_class=s3.StorageClass.GLACIER, transition_after=after)
            ],
        )
    ]


def models_lifecycle_rules(
    *, noncurrent_archive_after_days: int, noncurrent_expire_after_days: int
) -> list[s3.LifecycleRule]:
    """Return the models rules: current versions stay; superseded ones go to Glacier, then expire."""
    return [
        s3.LifecycleRule(
            id="ArchiveSupersededModels",
            noncurrent_version_transitions=[
                s3.NoncurrentVersionTransition(
                    storage_class=s3.StorageClass.GLACIER,
                    transition_after=cdk.Duration.days(noncurrent_archive_after_days),
                )
            ],
            noncurrent_version_expiration=cdk.Duration.days(noncurrent_expire_after_days),
        )
    ]
