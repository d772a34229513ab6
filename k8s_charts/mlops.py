"""Define the MLOps namespace's own objects (issue #6): database credentials, Feast, and the EMR namespace.

MLflow itself is a Helm release (``platform_constructs/mlflow.py``); this chart holds what the release and
the feature store need around it, in the ``mlops`` namespace that ``k8s_charts/tenancy.py`` creates:

- ``postgres-credentials``: an ExternalSecret from the DataStack's RDS secret (``username``/``password``). The
  MLflow chart reads it as ``backendStore.existingDatabaseSecret``; Feast and the database job read it too.
- ``valkey-auth``: an ExternalSecret from the cache's AUTH token (a plain string).
- ``create-databases-<hash>``: a Job that creates the ``mlflow`` and ``feast`` databases when missing (RDS
  starts with ``postgres`` only). Its name carries a hash of its spec, so a changed spec is a new Job instead
  of an update Kubernetes refuses (a Job's template is immutable); it is idempotent and cleans itself up.
- Feast: a feature server Deployment and a materialization CronJob (image pinned), the registry in
  PostgreSQL, the online store on the Valkey cluster (cluster mode, TLS, AUTH) and the offline data in
  ``s3://<datasets>/processed/features/``, read through the ``feast`` service account's Pod Identity role.
- NetworkPolicies: PostgreSQL (5432) and Valkey (6379) egress to the data subnets, and MLflow's port from
  the ``training`` namespace, whose pods are off the mesh (NCCL) and so reach MLflow directly.

Meshed pods here run the Linkerd proxy as a native sidecar (``MESH_POD_ANNOTATIONS``): with the Linkerd
CNI plugin an init container has no network until the proxy runs, and a Job's pod would never finish next
to a classic sidecar.

``DataProcessingChart`` is the ``emr-jobs`` namespace of the EMR on EKS virtual cluster and the RBAC that
EMR's ``emr-containers`` user needs there (AWS's "manual steps to enable cluster access").

The small object helpers below (``k8s_object``, the restricted security contexts) are shared by the
workload charts (``agents.py``, ``training.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import cdk8s
import constructs

from k8s_charts.objects import (
    MESH_POD_ANNOTATIONS,
    api_object,
    aws_env,
    container_security_context,
    pod_security_context,
)
from k8s_charts.secrets import external_secret
from k8s_charts.tenancy import NetworkAllow, Peer, PolicyPort, network_policy, pdb

NAMESPACE: Final = "mlops"
TRAINING_NAMESPACE: Final = "training"
EMR_NAMESPACE: Final = "emr-jobs"
# The official postgres Alpine image's postgres user.
POSTGRES_UID: Final = 70
POSTGRES_PORT: Final = 5432
CACHE_PORT: Final = 6379

MLFLOW_RELEASE: Final = "mlflow"
# The chart's fullname is the release name (it contains the chart name): Service, Deployment, SA "mlflow".
MLFLOW_SERVICE_ACCOUNT: Final = "mlflow"
MLFLOW_CONTAINER_PORT: Final = 5000
MLFLOW_TRACKING_URI: Final = f"http://{MLFLOW_RELEASE}.{NAMESPACE}.svc.cluster.local"
# The chart's selector labels (mlflow.selectorLabels): app.kubernetes.io/name is the chart name.
MLFLOW_POD_LABELS: Final[Mapping[str, str]] = {"app.kubernetes.io/name": "mlflow"}

DATABASE_SECRET: Final = "postgres-credentials"
CACHE_SECRET: Final = "valkey-auth"
CACHE_SECRET_KEY: Final = "password"
FEAST_SERVICE_ACCOUNT: Final = "feast"
FEAST_NAME: Final = "feast-feature-server"
FEAST_PORT: Final = 6566
FEAST_CONFIG_DIR: Final = "/etc/feast"
# Pods carrying this label may open PostgreSQL connections (the MLflow release adds it through its values).
DATABASE_CLIENT_LABEL: Final[Mapping[str, str]] = {"ml-platform/database-client": "true"}
CACHE_CLIENT_LABEL: Final[Mapping[str, str]] = {"ml-platform/cache-client": "true"}
_JOB_TTL_SECONDS: Final = 3600


# --- helpers the workload charts share ------------------------------------------------------------------


def add_object(scope: constructs.Construct, construct_id: str, obj: Mapping[str, Any]) -> cdk8s.ApiObject:
    """Return ``obj`` (a complete manifest as a dict, such as a job template) added to ``scope``."""
    meta = obj["metadata"]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    return api_object(
        scope,
        construct_id,
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        name=meta["name"],
        namespace=meta.get("namespace"),
        labels=meta.get("labels"),
        annotations=meta.get("annotations"),
        body=body,
    )


def resources(*, cpu_millicores: int, memory_mib: int, extra: Mapping[str, int | str] | None = None) -> dict[str, Any]:
    """Return container resources: a CPU request (no CPU limit: it only throttles) and memory request = limit.

    Args:
        extra: extended resources (``nvidia.com/gpu``) set as request and limit alike. Defaults to none.
    """
    requests: dict[str, Any] = {"cpu": f"{cpu_millicores}m", "memory": f"{memory_mib}Mi"}
    limits: dict[str, Any] = {"memory": f"{memory_mib}Mi"}
    for key, value in (extra or {}).items():
        requests[key] = value
        limits[key] = value
    return {"requests": requests, "limits": limits}


# CDK token strings (``${Token[TOKEN.123]}``) number tokens in creation order, so they differ whenever any
# construct is added elsewhere in the app; they stand for deploy-time values the hash cannot see anyway.
_CDK_TOKEN = re.compile(r"[$#]\{Token\[[^\]]*\]\}")


def content_hash(data: Any) -> str:
    """Return a short, stable hash of JSON-serializable ``data`` (versioned names, rollout annotations).

    Deploy-time values (CDK tokens) hash as one placeholder, so the name only changes with what synth knows.
    """
    text = _CDK_TOKEN.sub("${deploy-time}", json.dumps(data, sort_keys=True))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """Return an environment variable read from a key of a Kubernetes Secret."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def feature_store_yaml(*, project: str, database_host: str, database: str, cache_host: str) -> str:
    """Return Feast's ``feature_store.yaml``: SQL registry, Valkey online store, files in S3 offline.

    Feast expands ``${VAR}`` in this file when it loads it, so the credentials stay in Secrets (pod
    environment) and never appear in the ConfigMap.
    """
    registry = (
        f"postgresql+psycopg://${{PGUSER}}:${{PGPASSWORD}}@{database_host}:{POSTGRES_PORT}/{database}?sslmode=require"
    )
    return "\n".join(
        [
            f"project: {project}",
            # The local provider: materialization runs in the CronJob's pod, not in an AWS service.
            "provider: local",
            "registry:",
            "  registry_type: sql",
            f"  path: {registry}",
            "  cache_ttl_seconds: 60",
            "  sqlalchemy_config_kwargs:",
            "    pool_pre_ping: true",
            "online_store:",
            "  type: redis",
            # ElastiCache in cluster mode, TLS in transit and AUTH (the token comes from valkey-auth).
            "  redis_type: redis_cluster",
            f"  connection_string: {cache_host}:{CACHE_PORT},ssl=true,password=${{VALKEY_PASSWORD}}",
            "offline_store:",
            # Parquet files under FEATURES_URI (s3://<datasets>/processed/features/), read with the pod's role.
            "  type: file",
            "entity_key_serialization_version: 3",
            "",
        ]
    )


# --- the chart ----------------------------------------------------------------------------------------------


class MlopsChart(cdk8s.Chart):
    """Define the MLOps namespace's credentials, database bootstrap, Feast and network allows.

    Args:
        region: the stage's region (AWS SDKs).
        database_host: the PostgreSQL endpoint address (DataStack).
        database_secret_arn: the RDS admin secret (JSON with ``username`` and ``password``).
        cache_host: the Valkey configuration endpoint address.
        cache_auth_secret_arn: the cache AUTH token secret (a plain string).
        data_subnet_cidrs: the isolated data subnets where PostgreSQL and Valkey listen.
        databases: databases the bootstrap job creates when missing (MLflow's and Feast's).
        database_client_image: the pinned image with ``psql``.
        feast_image: the pinned Feast feature-server image.
        feast_database: the Feast registry's database (one of ``databases``).
        feast_project: the Feast project name.
        features_uri: ``s3://<datasets>/processed/features/``, the offline store's files.
        node_selector: node labels of the CPU pool the services run on.
        feast_replicas: feature server replicas. Defaults to 2 (a PodDisruptionBudget from 2 on).
        feast_cpu_millicores: feature server CPU request. Defaults to 500.
        feast_memory_mib: feature server memory request and limit. Defaults to 1024.
        materialization_schedule: cron schedule of ``feast materialize-incremental``. Defaults to hourly.
        training_namespace: the namespace whose (unmeshed) pods may call MLflow. Defaults to ``training``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        region: str,
        database_host: str,
        database_secret_arn: str,
        cache_host: str,
        cache_auth_secret_arn: str,
        data_subnet_cidrs: Sequence[str],
        databases: Sequence[str],
        database_client_image: str,
        feast_image: str,
        feast_database: str,
        feast_project: str,
        features_uri: str,
        node_selector: Mapping[str, str],
        feast_replicas: int = 2,
        feast_cpu_millicores: int = 500,
        feast_memory_mib: int = 1024,
        materialization_schedule: str = "0 * * * *",
        training_namespace: str = TRAINING_NAMESPACE,
    ) -> None:
        if not data_subnet_cidrs:
            raise ValueError("data_subnet_cidrs is empty: PostgreSQL and Valkey would be unreachable")
        if feast_database not in databases:
            raise ValueError(f"feast_database {feast_database!r} is not among the databases to create: {databases}")
        if not features_uri.startswith("s3://") or not features_uri.endswith("/"):
            raise ValueError(f"features_uri {features_uri!r} must be an s3:// prefix ending in '/'")
        if not node_selector:
            raise ValueError("node_selector is empty: name the CPU pool the MLOps services run on")
        super().__init__(scope, construct_id)
        self._region = region
        self._node_selector = dict(node_selector)

        external_secret(
            self,
            "postgres-credentials",
            name=DATABASE_SECRET,
            namespace=NAMESPACE,
            secret_arn_or_name=database_secret_arn,
            keys={"username": "username", "password": "password"},
        )
        external_secret(
            self,
            "valkey-auth",
            name=CACHE_SECRET,
            namespace=NAMESPACE,
            secret_arn_or_name=cache_auth_secret_arn,
            keys={CACHE_SECRET_KEY: None},
        )
        self._database_job(database_host, databases, database_client_image)
        self._feast(
            image=feast_image,
            config=feature_store_yaml(
                project=feast_project,
                database_host=database_host,
                database=feast_database,
                cache_host=cache_host,
            ),
            features_uri=features_uri,
            replicas=feast_replicas,
            cpu_millicores=feast_cpu_millicores,
            memory_mib=feast_memory_mib,
            schedule=materialization_schedule,
        )
        self._network_policies(data_subnet_cidrs, training_namespace)

    def _database_env(self, host: str, database: str) -> list[dict[str, Any]]:
        return [
            {"name": "PGHOST", "value": host},
            {"name": "PGPORT", "value": str(POSTGRES_PORT)},
            {"name": "PGDATABASE", "value": database},
            # The instance refuses unencrypted connections (rds.force_ssl); fail fast instead of falling back.
            {"name": "PGSSLMODE", "value": "require"},
            secret_env("PGUSER", DATABASE_SECRET, "username"),
            secret_env("PGPASSWORD", DATABASE_SECRET, "password"),
        ]

    def _database_job(self, host: str, databases: Sequence[str], image: str) -> None:
        script = "\n".join(
            [
                "set -eu",
                f"for db in {' '.join(databases)}; do",
                '  if [ "$(psql -tAc "SELECT 1 FROM pg_database WHERE datname = \'$db\'")" != "1" ]; then',
                '    psql -v ON_ERROR_STOP=1 -c "CREATE DATABASE \\"$db\\""',
                "  fi",
                "done",
            ]
        )
        pod: dict[str, Any] = {
            "metadata": {"labels": {**DATABASE_CLIENT_LABEL}, "annotations": dict(MESH_POD_ANNOTATIONS)},
            "spec": {
                "restartPolicy": "OnFailure",
                "automountServiceAccountToken": False,
                "securityContext": pod_security_context(POSTGRES_UID),
                "nodeSelector": self._node_selector,
                "containers": [
                    {
                        "name": "create-databases",
                        "image": image,
                        "command": ["sh", "-c", script],
                        "env": [*self._database_env(host, "postgres"), {"name": "HOME", "value": "/tmp"}],
                        "resources": resources(cpu_millicores=100, memory_mib=128),
                        "securityContext": container_security_context(),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        }
        spec = {"backoffLimit": 10, "ttlSecondsAfterFinished": _JOB_TTL_SECONDS, "template": pod}
        api_object(
            self,
            "create-databases",
            api_version="batch/v1",
            kind="Job",
            name=f"create-databases-{content_hash(spec)}",
            namespace=NAMESPACE,
            body={"spec": spec},
        )

    def _feast_pod(
        self,
        *,
        image: str,
        command: Sequence[str],
        config_map: str,
        features_uri: str,
        labels: Mapping[str, str],
        cpu_millicores: int,
        memory_mib: int,
        ports: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "feast",
            "image": image,
            "command": list(command),
            "env": [
                *aws_env(self._region),
                secret_env("PGUSER", DATABASE_SECRET, "username"),
                secret_env("PGPASSWORD", DATABASE_SECRET, "password"),
                secret_env("VALKEY_PASSWORD", CACHE_SECRET, CACHE_SECRET_KEY),
                {"name": "FEATURES_URI", "value": features_uri},
            ],
            "resources": resources(cpu_millicores=cpu_millicores, memory_mib=memory_mib),
            "securityContext": container_security_context(),
            "volumeMounts": [
                {"name": "config", "mountPath": FEAST_CONFIG_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        if ports:
            container["ports"] = [dict(p) for p in ports]
        return {
            "metadata": {
                "labels": {**labels, **DATABASE_CLIENT_LABEL, **CACHE_CLIENT_LABEL},
                "annotations": dict(MESH_POD_ANNOTATIONS),
            },
            "spec": {
                "serviceAccountName": FEAST_SERVICE_ACCOUNT,
                "securityContext": pod_security_context(),
                "nodeSelector": self._node_selector,
                "containers": [container],
                "volumes": [
                    {"name": "config", "configMap": {"name": config_map}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                ],
            },
        }

    def _feast(
        self,
        *,
        image: str,
        config: str,
        features_uri: str,
        replicas: int,
        cpu_millicores: int,
        memory_mib: int,
        schedule: str,
    ) -> None:
        api_object(
            self,
            "feast-service-account",
            api_version="v1",
            kind="ServiceAccount",
            name=FEAST_SERVICE_ACCOUNT,
            namespace=NAMESPACE,
            # Feast never calls the Kubernetes API; Pod Identity and Linkerd project their own tokens.
            body={"automountServiceAccountToken": False},
        )
        data = {"feature_store.yaml": config}
        config_map = f"feast-config-{content_hash(data)}"
        api_object(
            self,
            "feast-config",
            api_version="v1",
            kind="ConfigMap",
            name=config_map,
            namespace=NAMESPACE,
            # Versioned by content: a change is a new ConfigMap, which rolls the pods that mount it.
            body={"data": data, "immutable": True},
        )
        server_labels = {"app.kubernetes.io/name": FEAST_NAME, "app.kubernetes.io/part-of": "feast"}
        server = self._feast_pod(
            image=image,
            command=["feast", "--chdir", FEAST_CONFIG_DIR, "serve", "--host", "0.0.0.0", "--port", str(FEAST_PORT)],
            config_map=config_map,
            features_uri=features_uri,
            labels=server_labels,
            cpu_millicores=cpu_millicores,
            memory_mib=memory_mib,
            ports=[{"name": "http", "containerPort": FEAST_PORT, "protocol": "TCP"}],
        )
        container = server["spec"]["containers"][0]
        container["readinessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 10}
        container["livenessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 20, "failureThreshold": 3}
        api_object(
            self,
            "feast-deployment",
            api_version="apps/v1",
            kind="Deployment",
            name=FEAST_NAME,
            namespace=NAMESPACE,
            labels=server_labels,
            body={
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app.kubernetes.io/name": FEAST_NAME}},
                    "template": server,
                }
            },
        )
        api_object(
            self,
            "feast-service",
            api_version="v1",
            kind="Service",
            name=FEAST_NAME,
            namespace=NAMESPACE,
            labels=server_labels,
            body={
                "spec": {
                    "selector": {"app.kubernetes.io/name": FEAST_NAME},
                    "ports": [{"name": "http", "port": FEAST_PORT, "targetPort": "http", "protocol": "TCP"}],
                }
            },
        )
        pdb(
            self,
            "feast-pdb",
            name=FEAST_NAME,
            namespace=NAMESPACE,
            match_labels={"app.kubernetes.io/name": FEAST_NAME},
            replicas=replicas,
        )
        materialize = self._feast_pod(
            image=image,
            command=[
                "sh",
                "-c",
                f'exec feast --chdir {FEAST_CONFIG_DIR} materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)"',
            ],
            config_map=config_map,
            features_uri=features_uri,
            labels={"app.kubernetes.io/name": "feast-materialize", "app.kubernetes.io/part-of": "feast"},
            cpu_millicores=cpu_millicores,
            memory_mib=memory_mib * 2,
        )
        materialize["spec"]["restartPolicy"] = "OnFailure"
        api_object(
            self,
            "feast-materialize",
            api_version="batch/v1",
            kind="CronJob",
            name="feast-materialize",
            namespace=NAMESPACE,
            body={
                "spec": {
                    "schedule": schedule,
                    "timeZone": "Etc/UTC",
                    # Incremental runs pick up where the last one ended: overlapping runs only duplicate work.
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": 600,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": {"backoffLimit": 2, "template": materialize}},
                }
            },
        )

    def _network_policies(self, data_subnet_cidrs: Sequence[str], training_namespace: str) -> None:
        data_peers = tuple(Peer(cidr=c) for c in data_subnet_cidrs)
        allows = (
            NetworkAllow(
                name="postgres-egress",
                direction="Egress",
                peers=data_peers,
                ports=(PolicyPort(POSTGRES_PORT),),
                pod_labels=DATABASE_CLIENT_LABEL,
                reason="MLflow, Feast and the database job use the stage's PostgreSQL in the data subnets",
            ),
            NetworkAllow(
                name="valkey-egress",
                direction="Egress",
                peers=data_peers,
                ports=(PolicyPort(CACHE_PORT),),
                pod_labels=CACHE_CLIENT_LABEL,
                reason="Feast reads and writes online features on the Valkey cluster in the data subnets",
            ),
            NetworkAllow(
                name="mlflow-from-training",
                direction="Ingress",
                peers=(Peer(namespaces=(training_namespace,)),),
                ports=(PolicyPort(MLFLOW_CONTAINER_PORT),),
                pod_labels=MLFLOW_POD_LABELS,
                reason="training pods are off the mesh (NCCL) and log runs and models to MLflow directly",
            ),
        )
        for allow in allows:
            network_policy(self, f"allow-{allow.name}", namespace=NAMESPACE, allow=allow)


class DataProcessingChart(cdk8s.Chart):
    """Define the EMR on EKS namespace and the RBAC of EMR's ``emr-containers`` Kubernetes user.

    EMR on EKS creates the access entry of its service-linked role (AWSServiceRoleForAmazonEMRContainers)
    itself when the virtual cluster is created (its EKS access-entry integration); EKS refuses access entries
    for service-linked roles from anyone else. The Role below is AWS's documented set for that user.

    Args:
        namespace: the virtual cluster's namespace. Defaults to ``emr-jobs``.
        kubernetes_version: the minor version the Pod Security labels pin. Defaults to 1.35.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        namespace: str = EMR_NAMESPACE,
        kubernetes_version: str = "1.35",
    ) -> None:
        super().__init__(scope, construct_id)
        version = f"v{kubernetes_version}"
        labels = {
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": version,
        }
        for mode in ("audit", "warn"):
            labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
            labels[f"pod-security.kubernetes.io/{mode}-version"] = version
        # Spark's driver and executors come from EMR's images and pod templates, which run as the hadoop user
        # but set no seccomp profile: baseline is the strictest level they pass. Not meshed (Spark's block
        # transfer and shuffle ports are chosen at run time).
        api_object(self, "namespace", api_version="v1", kind="Namespace", name=namespace, labels=labels, body={})
        everything = ["get", "list", "watch", "describe", "create", "edit", "delete", "annotate", "patch", "label"]
        rules = [
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts", "services", "configmaps", "events", "pods", "pods/log"],
                "verbs": [*everything, "deletecollection"],
            },
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete", "watch"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets", "deployments"], "verbs": everything},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": everything},
            {"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingresses"], "verbs": everything},
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles", "rolebindings"],
                "verbs": [*everything, "deletecollection"],
            },
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": [*everything, "deletecollection"]},
        ]
        api_object(
            self,
            "emr-role",
            api_version="rbac.authorization.k8s.io/v1",
            kind="Role",
            name="emr-containers",
            namespace=namespace,
            body={"rules": rules},
        )
        api_object(
            self,
            "emr-role-binding",
            api_version="rbac.authorization.k8s.io/v1",
            kind="RoleBinding",
            name="emr-containers",
            namespace=namespace,
            body={
                "subjects": [{"kind": "User", "name": "emr-containers", "apiGroup": "rbac.authorization.k8s.io"}],
                "roleRef": {"kind": "Role", "name": "emr-containers", "apiGroup": "rbac.authorization.k8s.io"},
            },
        )
