"""Cross-region replication of SSE-KMS buckets to replicas named by their deterministic names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct


@dataclass(frozen=True)
class ReplicationPair:
    """One source bucket and the name of its replica in the destination region."""

    source: s3.Bucket
    destination_bucket_name: str


class BucketReplication(Construct):
    """Define live replication of KMS-encrypted buckets into another region of the same account.

    CloudFormation cannot read across regions, so the destination side is named, never referenced:
    buckets by their deterministic names and the destination key by its alias ARN (S3 accepts an alias
    ARN as ``ReplicaKmsKeyID``). The role may encrypt with any key of the destination region only
    while that key carries the alias (``kms:ResourceAliases``) and the call comes through S3.

    Args:
        pairs: the source buckets (versioned, in this stack) and their replicas' names.
        source_key: the key the source buckets are encrypted with.
        destination_region: the replicas' region.
        destination_key_alias: the replica key's alias, with the ``alias/`` prefix.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pairs: Sequence[ReplicationPair],
        source_key: kms.IKey,
        destination_region: str,
        destination_key_alias: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        if destination_region == stack.region:
            raise ValueError(f"replication destination {destination_region} is the stack's own region: pick another")
        partition = stack.partition
        destination_key_arn = f"arn:{partition}:kms:{destination_region}:{stack.account}:{destination_key_alias}"
        # Literal ARNs on both sides: the source buckets name this role, so a GetAtt of theirs in its
        # policy would be a dependency cycle.
        source_arns = [f"arn:{partition}:s3:::{_literal_name(pair.source)}" for pair in pairs]
        destination_arns = [f"arn:{partition}:s3:::{pair.destination_bucket_name}" for pair in pairs]

        self.role = iam.Role(
            self,
            "Role",
            description="S3 cross-region replication of the data buckets",
            # Only S3 acting for this account may assume the role (confused-deputy guard).
            assumed_by=iam.ServicePrincipal(
                "s3.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
        )
        # With S3 Bucket Keys the encryption context is the bucket ARN, without them the object ARN.
        source_context = [arn for source in source_arns for arn in (source, f"{source}/*")]
        destination_context = [arn for dest in destination_arns for arn in (dest, f"{dest}/*")]
        any_destination_key = f"arn:{partition}:kms:{destination_region}:{stack.account}:key/*"
        # A policy of its own (not the role's default policy) so the buckets can depend on it alone.
        self.policy = iam.Policy(
            self,
            "Policy",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(
                    sid="ReadReplicationConfiguration",
                    actions=["s3:GetReplicationConfiguration", "s3:ListBucket"],
                    resources=source_arns,
                ),
                iam.PolicyStatement(
                    sid="ReadSourceObjectVersions",
                    actions=[
                        "s3:GetObjectVersionForReplication",
                        "s3:GetObjectVersionAcl",
                        "s3:GetObjectVersionTagging",
                    ],
                    resources=[f"{arn}/*" for arn in source_arns],
                ),
                iam.PolicyStatement(
                    sid="WriteReplicas",
                    actions=["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                    resources=[f"{arn}/*" for arn in destination_arns],
                ),
                iam.PolicyStatement(
                    sid="DecryptSourceObjects",
                    actions=["kms:Decrypt"],
                    resources=[source_key.key_arn],
                    conditions={
                        "StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"},
                        "StringLike": {"kms:EncryptionContext:aws:s3:arn": source_context},
                    },
                ),
                iam.PolicyStatement(
                    sid="EncryptReplicasWithReplicaKey",
                    actions=["kms:Encrypt", "kms:GenerateDataKey"],
                    # The replica key's ID is unknown here (another region's stack creates it); the alias
                    # condition narrows "any key of that account and region" to the one key with the alias.
                    resources=[any_destination_key],
                    conditions={
                        "ForAnyValue:StringEquals": {"kms:ResourceAliases": destination_key_alias},
                        "StringEquals": {"kms:ViaService": f"s3.{destination_region}.amazonaws.com"},
                        "StringLike": {"kms:EncryptionContext:aws:s3:arn": destination_context},
                    },
                ),
            ],
        )

        for pair, destination_arn in zip(pairs, destination_arns, strict=True):
            cfn_bucket = _cfn_bucket(pair.source)
            cfn_bucket.replication_configuration = s3.CfnBucket.ReplicationConfigurationProperty(
                role=self.role.role_arn,
                rules=[
                    # V2 rule schema (Filter + Priority), the one that supports delete marker replication.
                    s3.CfnBucket.ReplicationRuleProperty(
                        id="ReplicateEverything",
                        status="Enabled",
                        priority=1,
                        filter=s3.CfnBucket.ReplicationRuleFilterProperty(prefix=""),
                        delete_marker_replication=s3.CfnBucket.DeleteMarkerReplicationProperty(status="Enabled"),
                        source_selection_criteria=s3.CfnBucket.SourceSelectionCriteriaProperty(
                            sse_kms_encrypted_objects=s3.CfnBucket.SseKmsEncryptedObjectsProperty(status="Enabled")
                        ),
                        destination=s3.CfnBucket.ReplicationDestinationProperty(
                            bucket=destination_arn,
                            encryption_configuration=s3.CfnBucket.EncryptionConfigurationProperty(
                                replica_kms_key_id=destination_key_arn
                            ),
                        ),
                    )
                ],
            )
            # Replication starts with the first write: the role's permissions must be in place by then.
            cfn_bucket.node.add_dependency(self.policy)

        for arn in [*source_arns, *destination_arns]:
            cdk.Validations.of(self.policy).acknowledge(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::{arn}/*]",
                    reason="replication copies every object version of the source bucket into its replica, "
                    "so the object actions cover all keys; they are replication-only actions on one bucket",
                )
            )
        cdk.Validations.of(self.policy).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{any_destination_key}]",
                reason="the replica key lives in another region's stack, so its key ID cannot be referenced; "
                f"kms:ResourceAliases pins the grant to the key aliased {destination_key_alias}, "
                "kms:ViaService to S3 there and the encryption context to the replica buckets",
            )
        )


def _cfn_bucket(bucket: s3.Bucket) -> s3.CfnBucket:
    cfn_bucket = bucket.node.default_child
    if not isinstance(cfn_bucket, s3.CfnBucket):
        raise TypeError(f"{bucket.node.path} has no CfnBucket to configure replication on")
    return cfn_bucket


def _literal_name(bucket: s3.Bucket) -> str:
    name = _cfn_bucket(bucket).bucket_name
    if name is None or cdk.Token.is_unresolved(name):
        raise ValueError(f"{bucket.node.path}: replication needs a bucket with an explicit, literal bucket_name")
    return name
