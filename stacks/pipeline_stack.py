"""PipelineStack: the self-mutating CDK pipeline in the toolchain account that promotes dev -> staging -> prod.

Before the first ``cdk deploy Pipeline``: bootstrap the toolchain account in its region and in every other
region a stage deploys to (the cross-region support stacks hold CodePipeline's replication buckets there),
and bootstrap every stage account and region with ``cdk bootstrap --trust <toolchain account>
--cloudformation-execution-policies <policy ARN>`` so the pipeline may assume its deploy roles.

``add_stage`` synthesizes the stage it is given (CDK Pipelines reads its stacks and assets), so the stages
passed in are complete when the pipeline is built; ``app.py`` builds the pipeline last.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import pipelines
from constructs import Construct

from platform_constructs.secure_bucket import AccessLogBucket, bucket_name

# cdk-assets publishes the stages' file assets; the CDK CLI's own version comes from package.json. Both are
# pinned because an unpinned step installs whatever npm calls latest on the day the pipeline runs.
CDK_ASSETS_VERSION = "4.7.3"
# aws/codebuild/standard:7.0 is Ubuntu 22.04 and ships Python 3.11 and 3.12 and Node.js 18 and 20 (with
# npm); `runtime-versions` selects Python 3.11 (the minimum `make` accepts) and Node.js 20, which only runs
# npm: `make` installs the pinned Node.js 24 into node_modules and runs jsii and the CDK CLI with that.
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0
RUNTIME_VERSIONS = {"python": "3.11", "nodejs": "20"}
APPROVALS = 2


class PipelineStack(cdk.Stack):
    """Define the CDK pipeline: source, `make synth`, self-mutation, then one pipeline stage per platform stage.

    The pipeline deploys the very ``PlatformStage`` objects the app synthesizes (``cdk deploy 'Dev/*'``
    deploys the same templates), so a change reviewed in ``cdk diff`` is the change the pipeline ships.

    Args:
        repository: the GitHub repository, ``owner/name``.
        branch: the branch whose pushes start the pipeline.
        connection_arn: the CodeConnections connection that reads the repository.
        stages: the platform stages in promotion order.
        smoke_test_urls: per stage construct ID, the URLs a smoke test probes after the stage deploys.
            Defaults to no smoke test anywhere.
        approval_stages: construct IDs of the stages that wait for two manual approvals before they
            deploy. Defaults to none.
        approvers: who approves, shown on every approval action. Defaults to a generic note.
        cli_version: the CDK CLI version of the self-mutation step (package.json's ``aws-cdk``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repository: str,
        branch: str,
        connection_arn: str,
        stages: Sequence[cdk.Stage],
        cli_version: str,
        smoke_test_urls: Mapping[str, Sequence[str]] | None = None,
        approval_stages: Collection[str] = (),
        approvers: str = "two senior engineers",
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        smoke_test_urls = smoke_test_urls or {}
        stage_ids = [s.node.id for s in stages]
        unknown = sorted((set(smoke_test_urls) | set(approval_stages)) - set(stage_ids))
        if unknown:
            raise ValueError(f"smoke tests or approvals for unknown stage(s) {', '.join(unknown)}: have {stage_ids}")

        source = pipelines.CodePipelineSource.connection(repository, branch, connection_arn=connection_arn)
        build_defaults = pipelines.CodeBuildOptions(
            build_environment=codebuild.BuildEnvironment(build_image=BUILD_IMAGE),
            partial_build_spec=codebuild.BuildSpec.from_object(
                {"phases": {"install": {"runtime-versions": RUNTIME_VERSIONS}}}
            ),
        )
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            pipeline_name=self.stack_name,
            # Stages deploy into other accounts: the artifacts need a KMS key those accounts can be granted.
            cross_account_keys=True,
            enable_key_rotation=True,
            self_mutation=True,
            cli_version=cli_version,
            cdk_assets_cli_version=CDK_ASSETS_VERSION,
            synth=pipelines.ShellStep(
                "Synth",
                input=source,
                # The same command as on a laptop (README): installs the pinned toolchains, synthesizes every
                # stage and the pipeline itself, runs cdk-nag and fails on any open finding.
                commands=["make synth"],
                primary_output_directory="cdk.out",
            ),
            code_build_defaults=build_defaults,
            # A full synth holds every stage's jsii objects in memory: SMALL (3 GB) is too tight.
            synth_code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(compute_type=codebuild.ComputeType.MEDIUM),
                timeout=cdk.Duration.minutes(30),
            ),
        )
        for stage in stages:
            stage_id = stage.node.id
            pre: list[pipelines.Step] = []
            if stage_id in approval_stages:
                pre = _approvals(stage_id, approvers)
            post: list[pipelines.Step] = []
            if smoke_test_urls.get(stage_id):
                post = [_smoke_test(smoke_test_urls[stage_id])]
            self.pipeline.add_stage(stage, pre=pre, post=post)
        # The CodePipeline and its CodeBuild projects exist only once every stage is added.
        self.pipeline.build_pipeline()
        self._log_artifact_access()
        self._acknowledge()

    def _log_artifact_access(self) -> None:
        """Log access to the artifact bucket and to each cross-region replication bucket."""
        pipeline = self.pipeline.pipeline
        _log_access(self, pipeline.artifact_bucket, name_prefix=self.stack_name)
        for support in pipeline.cross_region_support.values():
            _log_access(support.stack, support.replication_bucket, name_prefix=self.stack_name)

    def _acknowledge(self) -> None:
        """Acknowledge, one finding at a time, the wildcards of the policies CDK Pipelines generates.

        Each finding is matched to the statement that causes it; a wildcard no rule below explains stays
        open, so a new kind of permission fails synth instead of slipping through.
        """
        pipeline = self.pipeline.pipeline
        supports = list(pipeline.cross_region_support.values())
        buckets = [pipeline.artifact_bucket, *(s.replication_bucket for s in supports)]
        keys = [b.encryption_key for b in buckets if b.encryption_key is not None]
        stacks: list[cdk.Stack] = [self, *(s.stack for s in supports)]
        for stack in stacks:
            owned = _Owned(
                buckets=frozenset(_flatten(stack.resolve(b.bucket_arn)) for b in buckets),
                keys=frozenset(_flatten(stack.resolve(k.key_arn)) for k in keys),
            )
            for construct in stack.node.find_all():
                if not isinstance(construct, iam.CfnPolicy):
                    continue
                document = stack.resolve(construct.policy_document)
                for finding, reason in _wildcard_findings(document, owned):
                    cdk.Validations.of(construct).acknowledge(
                        cdk.Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
                    )


def _log_access(stack: cdk.Stack, bucket: s3.IBucket, *, name_prefix: str) -> None:
    """Send a pipeline bucket's server access logs to an access-log bucket in the same stack."""
    logs = AccessLogBucket(
        stack,
        "AccessLogs",
        bucket_name=bucket_name(prefix=name_prefix, purpose="logs", account=stack.account, region=stack.region),
        expire_after_days=365,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    ).bucket
    # CodePipeline creates these buckets itself and offers no logging option: set it on the L1.
    cfn_bucket = bucket.node.default_child
    if not isinstance(cfn_bucket, s3.CfnBucket):
        raise TypeError(f"{bucket.node.path}: expected a bucket created by CodePipeline, got {cfn_bucket!r}")
    cfn_bucket.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
        destination_bucket_name=logs.bucket_name, log_file_prefix="pipeline/"
    )
    logs.add_to_resource_policy(
        iam.PolicyStatement(
            sid="S3ServerAccessLogs",
            principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
            actions=["s3:PutObject"],
            resources=[logs.arn_for_objects("pipeline/*")],
            conditions={
                "ArnLike": {"aws:SourceArn": bucket.bucket_arn},
                "StringEquals": {"aws:SourceAccount": stack.account},
            },
        )
    )


_S3_GRANT = (
    "CDK's read or read/write grant on the pipeline's own artifact and replication buckets: the action "
    "groups are S3's object-level variants (GetObjectVersion, DeleteObjectVersion, ListBucketVersions) "
    "and the statement names those buckets only."
)
_KMS_GRANT = (
    "CDK's encrypt/decrypt grant on the pipeline's artifact key: GenerateDataKey* and ReEncrypt* are the "
    "variants S3 needs for SSE-KMS objects, and the statement names the artifact key only."
)
_ARTIFACT_OBJECTS = (
    "Objects of the pipeline's own artifact or replication bucket: every execution writes new keys, so "
    "they cannot be listed in advance; the bucket is private, TLS-only and KMS-encrypted."
)
_BUILD_LOGS = (
    "CodeBuild's log streams and report groups of the pipeline's own projects: streams and reports are "
    "named per build, so only a prefix of the project's name can be given."
)
_CROSS_REGION_KEY = (
    "The cross-region replication key lives in the support stack of another region and is referenced by "
    "alias, so CodePipeline cannot name its ARN; only the pipeline role holds the grant."
)
_BOOTSTRAP_LOOKUP = (
    "Self-mutation reads the bootstrap stacks and staging buckets of every target account to find the CDK "
    "roles; cloudformation:DescribeStacks and s3:ListBucket are read-only and name no data."
)
_ASSET_BUILDS = (
    "The asset-publishing role starts and watches the asset CodeBuild builds of this pipeline; their build "
    "IDs are created per run, and the role can only be assumed by CodeBuild of this account."
)
_BOOTSTRAP_ROLES = (
    "sts:AssumeRole on the CDK bootstrap roles (deploy, file and image publishing) that self-mutation uses to "
    "deploy this stack, restricted by the iam:ResourceTag/aws-cdk:bootstrap-role condition to those roles only."
)


@dataclass(frozen=True)
class _Owned:
    """The pipeline's own buckets and keys, as cdk-nag renders them in findings."""

    buckets: frozenset[str]
    keys: frozenset[str]


def _flatten(value: Any) -> str:
    """Render a resource the way cdk-nag names it in a finding (``<Logical.Arn>/*``)."""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, dict):
        if "Fn::Join" in value:
            delimiter, items = value["Fn::Join"]
            return str(delimiter).join(_flatten(i) for i in items)
        if "Fn::Sub" in value:
            return _flatten(value["Fn::Sub"])
        if "Fn::GetAtt" in value:
            resource, attribute = value["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Ref" in value:
            return f"<{_flatten(value['Ref'])}>"
    return json.dumps(value)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_BUILD_LOG_GROUP = re.compile(
    r"arn:aws:(logs:[a-z0-9-]+:\d{12}:log-group:/aws/codebuild/|codebuild:[a-z0-9-]+:\d{12}:report-group/).*"
)
_KMS_ACTIONS = {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"}


def _action_reason(action: str, resources: list[str], owned: _Owned) -> str | None:
    if action.startswith("s3:") and all(r.removesuffix("/*") in owned.buckets for r in resources):
        return _S3_GRANT
    # "*" is the cross-region replication key (see _CROSS_REGION_KEY).
    if action.startswith("kms:") and all(r in owned.keys or r == "*" for r in resources):
        return _KMS_GRANT
    return None


def _resource_reason(resource: str, actions: set[str], statement: dict[str, Any], owned: _Owned) -> str | None:
    if resource.endswith("/*") and resource.removesuffix("/*") in owned.buckets:
        return _ARTIFACT_OBJECTS
    if _BUILD_LOG_GROUP.fullmatch(resource):
        return _BUILD_LOGS
    if resource == "*" and actions <= _KMS_ACTIONS:
        return _CROSS_REGION_KEY
    if resource == "*" and actions <= {"cloudformation:DescribeStacks", "s3:ListBucket"}:
        return _BOOTSTRAP_LOOKUP
    if resource == "*" and actions <= {"codebuild:BatchGetBuilds", "codebuild:StartBuild", "codebuild:StopBuild"}:
        return _ASSET_BUILDS
    condition = statement.get("Condition", {}).get("ForAnyValue:StringEquals", {})
    if actions == {"sts:AssumeRole"} and "iam:ResourceTag/aws-cdk:bootstrap-role" in condition:
        return _BOOTSTRAP_ROLES
    return None


def _wildcard_findings(document: dict[str, Any], owned: _Owned) -> list[tuple[str, str]]:
    """Return (cdk-nag finding, reason) for each wildcard of a generated policy that a rule explains."""
    found: dict[str, str] = {}
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        actions = {str(a) for a in _listed(statement.get("Action", []))}
        resources = [_flatten(r) for r in _listed(statement.get("Resource", []))]
        for action in sorted(a for a in actions if "*" in a):
            reason = _action_reason(action, resources, owned)
            if reason is not None:
                found.setdefault(f"Action::{action}", reason)
        for resource in resources:
            if "*" in resource:
                reason = _resource_reason(resource, actions, statement, owned)
                if reason is not None:
                    found.setdefault(f"Resource::{resource}", reason)
    return sorted(found.items())


def _approvals(stage_id: str, approvers: str) -> list[pipelines.Step]:
    """Return two manual approvals, the second after the first, so two people sign off before the stage."""
    steps: list[pipelines.Step] = []
    for n in range(1, APPROVALS + 1):
        step = pipelines.ManualApprovalStep(
            f"Approve{stage_id}{n}",
            comment=f"Approval {n} of {APPROVALS} before {stage_id} deploys. {approvers}",
        )
        if steps:
            step.add_step_dependency(steps[-1])
        steps.append(step)
    return steps


def _smoke_test(urls: Sequence[str]) -> pipelines.ShellStep:
    """Return the step that probes each health check (2xx within 10 s, up to 5 tries 15 s apart)."""
    return pipelines.ShellStep(
        "SmokeTest",
        commands=[
            f"curl --fail --silent --show-error --max-time 10 --retry 5 --retry-delay 15 --retry-all-errors "
            f"--output /dev/null {shlex.quote(url)}"
            for url in urls
        ],
    )
