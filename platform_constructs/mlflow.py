"""MLflow tracking server: the community-charts ``mlflow`` chart on the stage's PostgreSQL and models bucket.

- Backend store: the DataStack's RDS PostgreSQL, database ``mlflow`` (created by ``MlopsChart``'s job). The
  credentials never pass through values: the chart reads ``backendStore.existingDatabaseSecret``, the
  ``postgres-credentials`` Secret that an ExternalSecret keeps in sync with the RDS secret.
- Artifacts: proxied (``--serve-artifacts``) to ``s3://<models>/experiments/``. Clients upload through the
  server (``mlflow-artifacts:/`` URIs), so only the server's Pod Identity role touches the bucket; that role
  lists the bucket under its prefixes and reads, writes and deletes ``experiments/*`` and ``trained/*``, with
  the data key through S3 only. No access keys anywhere (``artifactRoot.s3`` keys stay empty).
- Exposure: a ClusterIP Service only (``mlflow.mlops.svc.cluster.local``), no Ingress, no auth app. A route
  from the edge must put authentication in front of it (ALB + OIDC); that belongs to the edge, not here.
- The pods run on the system pool, restricted (the chart's securityContext plus a seccomp profile), meshed
  with a native-sidecar proxy (the migration init container needs the network), and accept unauthenticated
  mesh traffic because training pods are off the mesh; NetworkPolicies decide who may connect.

``bucket_access_statements`` is the prefix-scoped S3 + KMS policy every workload role here uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from k8s_charts.mlops import (
    DATABASE_CLIENT_LABEL,
    DATABASE_SECRET,
    MLFLOW_CONTAINER_PORT,
    MLFLOW_RELEASE,
    MLFLOW_SERVICE_ACCOUNT,
    NAMESPACE,
    POSTGRES_PORT,
)
from k8s_charts.objects import MESH_POD_ANNOTATIONS
from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: https://community-charts.github.io/helm-charts -> mlflow --version 1.11.5
CHART: Final = HelmChartRef(
    repository="https://community-charts.github.io/helm-charts", chart="mlflow", version="1.11.5"
)
ARTIFACTS_PREFIX: Final = "experiments/"
MODEL_PREFIXES: Final = ("experiments/", "trained/")
OBJECT_READ: Final = ("s3:GetObject", "s3:GetObjectVersion")
OBJECT_WRITE: Final = ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
OBJECT_DELETE: Final = ("s3:DeleteObject",)
# Host headers the MLflow 3 server accepts besides localhost (it refuses others: DNS rebinding protection).
_SERVICE_HOSTS: Final = tuple(
    f"{MLFLOW_RELEASE}{suffix}"
    for suffix in ("", f".{NAMESPACE}", f".{NAMESPACE}.svc", f".{NAMESPACE}.svc.cluster.local")
)


def literal_bucket_arn(bucket: s3.IBucket) -> str:
    """Return the bucket's ARN built from the literal name it was created with (the data stack names them all).

    A literal ARN keeps the cross-stack reference out of the policy and lets each wildcard under it be
    acknowledged by its exact resource. Buckets without a literal name (imported ones) keep their ARN token.
    """
    cfn_bucket = bucket.node.default_child
    name = cfn_bucket.bucket_name if isinstance(cfn_bucket, s3.CfnBucket) else None
    if name is None or cdk.Token.is_unresolved(name):
        return bucket.bucket_arn
    return f"arn:{cdk.Stack.of(bucket).partition}:s3:::{name}"


def bucket_access_statements(
    *,
    bucket: s3.IBucket,
    key: kms.IKey,
    region: str,
    read_prefixes: Sequence[str] = (),
    write_prefixes: Sequence[str] = (),
    delete_prefixes: Sequence[str] = (),
) -> list[iam.PolicyStatement]:
    """Return S3 statements scoped to key prefixes of one bucket, and the KMS use S3 makes of its key.

    ``s3:ListBucket`` carries an ``s3:prefix`` condition, so a role lists only under its prefixes; objects
    are read, written or deleted only under theirs. The key may be used for S3 in ``region`` only.

    Args:
        read_prefixes: prefixes (``processed/``) whose objects may be read. Defaults to none.
        write_prefixes: prefixes whose objects may be written. Defaults to none.
        delete_prefixes: prefixes whose objects may be deleted. Defaults to none.
    """
    prefixes = sorted({*read_prefixes, *write_prefixes, *delete_prefixes})
    if not prefixes:
        raise ValueError(f"no prefixes for {bucket.node.path}: a role with bucket access needs at least one")
    for prefix in prefixes:
        if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix:
            raise ValueError(f"prefix {prefix!r} must be a plain key prefix ending in '/', such as processed/")
    bucket_arn = literal_bucket_arn(bucket)
    statements = [
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": [p for prefix in prefixes for p in (prefix, f"{prefix}*")]}},
        )
    ]
    grants = ((OBJECT_READ, read_prefixes), (OBJECT_WRITE, write_prefixes), (OBJECT_DELETE, delete_prefixes))
    for actions, scoped in grants:
        if scoped:
            statements.append(
                iam.PolicyStatement(actions=list(actions), resources=[f"{bucket_arn}/{p}*" for p in sorted(scoped)])
            )
    key_actions = ["kms:Decrypt"]
    if write_prefixes:
        key_actions += ["kms:GenerateDataKey", "kms:Encrypt"]
    statements.append(
        iam.PolicyStatement(
            actions=key_actions,
            resources=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        )
    )
    return statements


def acknowledge_wildcards(policy: iam.Policy, statements: Sequence[iam.PolicyStatement], reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 on ``policy`` for each wildcard resource of ``statements``, one by one.

    Each acknowledgement names its exact resource (``AwsSolutions-IAM5[Resource::<arn>/processed/*]``), so a
    wildcard added later is a new finding instead of hiding under an earlier reason.
    """
    resources = sorted({r for st in statements for r in st.resources if "*" in r and not cdk.Token.is_unresolved(r)})
    for resource in resources:
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{resource}]", reason=reason)
        )


def mlflow_values(
    *,
    image_repository: str,
    image_tag: str,
    replicas: int,
    database_host: str,
    database: str,
    artifacts_bucket: str,
    region: str,
    node_selector: Mapping[str, str],
    cpu_millicores: int = 500,
    memory_mib: int = 2048,
    priority_class: str = "",
) -> dict[str, Any]:
    """Return the chart values of the MLflow release (every key exists in the pinned values.yaml).

    Args:
        image_repository: the MLflow image (the chart's ``burakince/mlflow`` carries psycopg2 and boto3).
        image_tag: its exact tag; also the database-migration init container's.
        replicas: server replicas (stateless: state is in PostgreSQL and S3).
        database_host: the PostgreSQL endpoint address.
        database: the tracking database.
        artifacts_bucket: the models bucket (artifacts under ``experiments/``).
        region: the stage's region.
        node_selector: node labels of the pool the server runs on.
        cpu_millicores: CPU request. Defaults to 500.
        memory_mib: memory request and limit. Defaults to 2048.
        priority_class: PriorityClass of the pods. Defaults to none.
    """
    if not image_tag or image_tag == "latest":
        raise ValueError(f"mlflow image tag {image_tag!r} must be an exact version")
    if replicas < 1:
        raise ValueError(f"mlflow replicas {replicas} must be at least 1")
    if not node_selector:
        raise ValueError("node_selector is empty: name the CPU pool MLflow runs on")
    memory = f"{memory_mib}Mi"
    return {
        "replicaCount": replicas,
        "image": {"repository": image_repository, "tag": image_tag},
        "initImages": {"mlflowDbMigration": {"repository": image_repository, "tag": image_tag}},
        "serviceAccount": {"create": True, "name": MLFLOW_SERVICE_ACCOUNT, "automount": False},
        "podAnnotations": {
            **MESH_POD_ANNOTATIONS,
            # Training pods are off the mesh and must reach MLflow; NetworkPolicies limit who may connect.
            "config.linkerd.io/default-inbound-policy": "all-unauthenticated",
        },
        "extraPodLabels": dict(DATABASE_CLIENT_LABEL),
        # The chart's defaults (non-root 1001, no privilege escalation, read-only root, drop ALL) plus the
        # seccomp profile the restricted Pod Security Standard requires.
        "podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "service": {"type": "ClusterIP", "containerPort": MLFLOW_CONTAINER_PORT},
        "ingress": {"enabled": False},
        "backendStore": {
            # Upgrades of the image migrate the schema before the server starts.
            "databaseMigration": True,
            "postgres": {
                "enabled": True,
                "host": database_host,
                "port": POSTGRES_PORT,
                "database": database,
                "driver": "psycopg2",
            },
            "existingDatabaseSecret": {"name": DATABASE_SECRET, "usernameKey": "username", "passwordKey": "password"},
        },
        "artifactRoot": {
            "proxiedArtifactStorage": True,
            "s3": {"enabled": True, "bucket": artifacts_bucket, "path": ARTIFACTS_PREFIX.rstrip("/")},
        },
        "extraEnvVars": {
            "AWS_DEFAULT_REGION": region,
            # The instance refuses unencrypted connections; never fall back to plain text.
            "PGSSLMODE": "require",
        },
        "serverAllowedHosts": [*_SERVICE_HOSTS, *(f"{h}:*" for h in _SERVICE_HOSTS), "localhost:*"],
        "resources": {"requests": {"cpu": f"{cpu_millicores}m", "memory": memory}, "limits": {"memory": memory}},
        "nodeSelector": dict(node_selector),
        "priorityClassName": priority_class,
    }


class Mlflow(Construct):
    """Define the MLflow release and the Pod Identity role of its service account.

    Args:
        cluster: the cluster to install into.
        models_bucket: the bucket of artifacts (``experiments/``) and trained models (``trained/``).
        data_key: the key encrypting that bucket.
        values: ``mlflow_values(...)``.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        models_bucket: s3.IBucket,
        data_key: kms.IKey,
        values: Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.identity = PodIdentityRole(
            self,
            "Role",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=MLFLOW_SERVICE_ACCOUNT,
            description="MLflow tracking server: artifacts and trained models in the models bucket",
        )
        statements = bucket_access_statements(
            bucket=models_bucket,
            key=data_key,
            region=cdk.Stack.of(self).region,
            read_prefixes=MODEL_PREFIXES,
            write_prefixes=MODEL_PREFIXES,
            delete_prefixes=MODEL_PREFIXES,
        )
        policy = iam.Policy(self, "Policy", statements=statements)
        policy.attach_to_role(self.identity.role)
        acknowledge_wildcards(
            policy,
            statements,
            "MLflow owns the run artifacts and trained models of the models bucket: object keys under experiments/ "
            "and trained/ only (S3 keys have no finer name), ListBucket limited to them by an s3:prefix condition",
        )
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            release=MLFLOW_RELEASE,
            values=values,
            overrides=overrides,
        )
        # The server uploads artifacts as soon as it serves: its AWS role must be associated first.
        self.release.node.add_dependency(self.identity.association, policy)
