"""S3 buckets of the data tier: KMS-encrypted, versioned, private, TLS-only, access-logged, named by rule."""

from __future__ import annotations

import re
from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

# S3 bucket naming rules: 3-63 characters of lowercase letters, digits, dots and hyphens, starting and ending
# with a letter or digit; a few prefixes are reserved for AWS.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
# Uploads that never complete are billed like objects but invisible in listings.
_ABORT_MULTIPART_AFTER = cdk.Duration.days(7)


def bucket_name(*, prefix: str, purpose: str, account: str, region: str) -> str:
    """Return ``<prefix>-<purpose>-<account>-<region>``, the one naming rule for every platform bucket.

    Names are global and deterministic, so a stack in another region can name a bucket without a
    cross-region reference. Fails with the offending name when S3 would reject it.
    """
    if cdk.Token.is_unresolved(account) or cdk.Token.is_unresolved(region):
        raise ValueError(
            f"bucket {purpose}: the account and region must be literal to build its name; "
            "give the stack an explicit env (cdk.Environment(account=..., region=...))"
        )
    name = f"{prefix}-{purpose}-{account}-{region}"
    if len(name) > 63:
        room = 63 - len(name) + len(prefix)
        raise ValueError(
            f"bucket name {name!r} is {len(name)} characters and S3 allows at most 63: "
            f"shorten the project or stage name (prefix {prefix!r} may have at most {room} characters)"
        )
    if not _BUCKET_NAME.match(name) or name.startswith(_RESERVED_PREFIXES) or ".." in name:
        raise ValueError(
            f"bucket name {name!r} breaks the S3 naming rules: use lowercase letters, digits and hyphens "
            "in the project and stage names"
        )
    return name


class AccessLogBucket(Construct):
    """Define the target of S3 server access logs: SSE-S3, private, TLS-only, expiring.

    S3 server access logging cannot deliver to a bucket whose default encryption is SSE-KMS, so this
    bucket alone uses S3-managed keys. Log objects are written once by the logging service and
    expire by lifecycle, so the bucket is not versioned.

    Args:
        bucket_name: the bucket's name (see ``bucket_name``).
        expire_after_days: days after which log objects are deleted.
        removal_policy: RETAIN outside dev.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        expire_after_days: int,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Resource",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=cdk.Duration.days(expire_after_days),
                    abort_incomplete_multipart_upload_after=_ABORT_MULTIPART_AFTER,
                )
            ],
            removal_policy=removal_policy,
        )
        # No AwsSolutions-S1 acknowledgement: cdk-nag treats a bucket that receives another bucket's
        # access logs in the same stack as compliant (it is the log target, and logging it into itself
        # would only log the log deliveries).


class SecureBucket(Construct):
    """Define a data bucket: SSE-KMS with a bucket key, versioned, private, TLS 1.2+ only, access-logged.

    Every bucket also aborts incomplete multipart uploads after 7 days, before ``lifecycle_rules``.

    Args:
        bucket_name: the bucket's name (see ``bucket_name``).
        encryption_key: the customer-managed key of the bucket's default encryption.
        server_access_logs_bucket: where S3 writes the server access logs.
        server_access_logs_prefix: key prefix of this bucket's logs in the log bucket.
        removal_policy: RETAIN outside dev.
        lifecycle_rules: transitions and expirations. Defaults to none beyond the multipart abort.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        encryption_key: kms.IKey,
        server_access_logs_bucket: s3.IBucket,
        server_access_logs_prefix: str,
        removal_policy: cdk.RemovalPolicy,
        lifecycle_rules: Sequence[s3.LifecycleRule] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        abort = s3.LifecycleRule(
            id="AbortIncompleteMultipartUploads",
            abort_incomplete_multipart_upload_after=_ABORT_MULTIPART_AFTER,
        )
        self.bucket = s3.Bucket(
            self,
            "Resource",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=encryption_key,
            # One data key per bucket, not per object: KMS requests and cost drop by orders of magnitude.
            bucket_key_enabled=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=server_access_logs_bucket,
            server_access_logs_prefix=server_access_logs_prefix,
            lifecycle_rules=[abort, *lifecycle_rules],
            removal_policy=removal_policy,
        )
