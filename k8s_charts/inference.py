"""Define the building blocks every model server chart shares, and the inference namespace's common objects.

Model servers (``k8s_charts/vllm.py``, ``triton.py``, ``tgi.py``, ``batch_inference.py``,
``kserve_models.py``) run in the ``inference`` namespace that ``k8s_charts/tenancy.py`` creates with
Pod Security ``restricted`` enforced, Linkerd injection, a LimitRange (default memory limit 1Gi) and
default-deny NetworkPolicies. So every pod here:

- runs as UID 1000 with all capabilities dropped, no privilege escalation and the RuntimeDefault seccomp
  profile (``pod_security_context``, ``container_security_context``);
- sets its memory limit explicitly, init containers included (the LimitRange default would OOM a server);
- gets its weights from the models bucket, never from a model hub: an init container with the pinned AWS
  CLI image copies ``s3://<models bucket>/production/<model>/`` into an emptyDir (``model_sync_container``)
  and the server runs with ``HF_HUB_OFFLINE=1``;
- reaches AWS through its own service account's EKS Pod Identity role;
- runs the Linkerd proxy as a native sidecar (``config.alpha.linkerd.io/proxy-enable-native-sidecar``).
  Linkerd's iptables rules (written by ``linkerd-init``, or by the CNI plugin once it is used) send a pod's
  traffic to the proxy from the first container on; a classic sidecar starts after the init containers,
  so the model download would have no network, and a Job's pod would never finish while the proxy runs.
  A native sidecar starts before the other init containers and stops last.

Prometheus runs unmeshed in ``monitoring``: where a server's metrics share its serving port (vLLM, TGI),
``mesh_access`` admits the scrapers by network and ``metrics_ingress`` lets them through the namespace's
default-deny. Ports named ``metrics`` (Triton) are covered by the tenancy and mesh policy charts.

``InferenceCommonChart`` holds what the namespace shares: the prediction cache's AUTH token (an
ExternalSecret from Secrets Manager, never a Secret in the manifest), the egress allow to the cache,
and the read-only PersistentVolume of the EFS models access point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cdk8s
import constructs

from config.inference import Autoscaling, GpuRequest, MigSlice, production_model_key
from config.model import NodePoolConfig
from config.pools import POOL_LABEL, workload_label
from k8s_charts import objects
from k8s_charts.objects import (
    MESH_POD_ANNOTATIONS,
    aws_env,
    container_security_context,
    pod_security_context,
)
from k8s_charts.secrets import CLUSTER_SECRET_STORE, external_secret
from k8s_charts.tenancy import (
    MONITORING_NAMESPACE,
    NetworkAllow,
    Peer,
    PolicyPort,
    network_policy,
    pdb,
)

NAMESPACE: Final = "inference"
# The namespace of the agents, the in-cluster clients of the model servers.
CLIENT_NAMESPACE: Final = "agentic"
# kube-prometheus-stack's Prometheus (release kube-prometheus-stack in monitoring); KEDA queries it.
PROMETHEUS_SERVER_ADDRESS: Final = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
# The label kube-prometheus-stack's Prometheus selects PodMonitors by (its release name).
MONITOR_LABELS: Final[Mapping[str, str]] = {"release": "kube-prometheus-stack"}
# The AWS CLI that copies weights from S3 (exact tag: a floating tag could change what runs at start).
AWS_CLI_IMAGE: Final = "public.ecr.aws/aws-cli/aws-cli:2.32.9"
MODELS_MOUNT: Final = "/models"
PREDICTION_CACHE_SECRET: Final = "prediction-cache-auth"
PREDICTION_CACHE_TOKEN_KEY: Final = "token"
MODELS_CLAIM: Final = "models-production"
LINKERD_POLICY: Final = "policy.linkerd.io"
_SYNC_CPU: Final = "1"
_SYNC_MEMORY: Final = "2Gi"


@dataclass(frozen=True)
class Placement:
    """Define where a model server's pods run and which accelerator they ask for.

    Args:
        node_selector: labels of the pool's nodes that serve the workload type.
        tolerations: one per taint of the pool.
        priority_class: the pods' PriorityClass. Defaults to none (priority 0).
        gpu_resource: ``nvidia.com/gpu`` or ``nvidia.com/mig-<profile>``. Defaults to no accelerator.
        gpu_count: how many of ``gpu_resource``. Defaults to 0.
    """

    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, str], ...] = ()
    priority_class: str | None = None
    gpu_resource: str | None = None
    gpu_count: int = 0

    def apply(self, pod_spec: dict[str, Any]) -> dict[str, Any]:
        """Return ``pod_spec`` with this placement's selector, tolerations and priority set."""
        pod_spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in self.tolerations]
        if self.priority_class:
            pod_spec["priorityClassName"] = self.priority_class
        return pod_spec


def placement(
    pool: NodePoolConfig, *, workload_type: str, gpu: GpuRequest | None, priority_class: str | None
) -> Placement:
    """Return the placement of a workload of ``workload_type`` on ``pool``, tolerating exactly its taints."""
    if workload_type not in pool.workload_types:
        raise ValueError(f"pool {pool.name} does not serve workload type {workload_type}")
    tolerations = tuple({"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} for t in pool.taints)
    resource, count = None, 0
    if isinstance(gpu, MigSlice):
        resource, count = f"nvidia.com/mig-{gpu.mig_profile}", 1
    elif gpu is not None:
        resource, count = "nvidia.com/gpu", gpu.gpus
    return Placement(
        node_selector={POOL_LABEL: pool.name, workload_label(workload_type): "true"},
        tolerations=tolerations,
        priority_class=priority_class,
        gpu_resource=resource,
        gpu_count=count,
    )


def model_uri(bucket_name: str, key: str) -> str:
    """Return ``s3://<bucket_name>/<key>``, refusing keys outside the bucket's ``production/`` prefix."""
    return f"s3://{bucket_name}/{production_model_key(key)}"


def model_dir(key: str) -> str:
    """Return where a model's files are inside the pod (``/models/<key>``)."""
    return f"{MODELS_MOUNT}/{production_model_key(key).rstrip('/')}"


def resources(*, cpu: int | str, memory: str, gpu: Placement | None = None, storage_gib: int = 0) -> dict[str, Any]:
    """Return container resources: CPU request (no CPU limit: it only throttles), memory request = limit.

    GPUs (whole or MIG) go in requests and limits alike, as extended resources require. ``storage_gib``
    reserves ephemeral storage on the node for downloaded weights.
    """
    requests: dict[str, Any] = {"cpu": str(cpu), "memory": memory}
    limits: dict[str, Any] = {"memory": memory}
    if gpu is not None and gpu.gpu_resource:
        requests[gpu.gpu_resource] = gpu.gpu_count
        limits[gpu.gpu_resource] = gpu.gpu_count
    if storage_gib:
        requests["ephemeral-storage"] = f"{storage_gib}Gi"
    return {"requests": requests, "limits": limits}


def model_sync_container(*, source_uri: str, target_dir: str, region: str, volume: str = "models") -> dict[str, Any]:
    """Return the init container that copies a model folder from S3 into the pod before the server starts."""
    return {
        "name": "fetch-model",
        "image": AWS_CLI_IMAGE,
        "command": ["aws"],
        "args": ["s3", "sync", source_uri, target_dir, "--only-show-errors", "--no-progress"],
        "env": aws_env(region),
        "resources": resources(cpu=_SYNC_CPU, memory=_SYNC_MEMORY),
        "securityContext": container_security_context(read_only_root=None),
        "volumeMounts": [{"name": volume, "mountPath": MODELS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def probes(*, port: str, startup_path: str, ready_path: str, live_path: str) -> dict[str, Any]:
    """Return startup, readiness and liveness probes for a server that loads weights for minutes.

    The startup probe allows 60 x 10 s = 10 minutes before the kubelet restarts a loading server; the
    liveness probe only starts once startup succeeded, so it can be strict.
    """

    def http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}}

    return {
        "startupProbe": {**http(startup_path), "periodSeconds": 10, "failureThreshold": 60, "timeoutSeconds": 5},
        "readinessProbe": {**http(ready_path), "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
        "livenessProbe": {**http(live_path), "periodSeconds": 20, "failureThreshold": 3, "timeoutSeconds": 10},
    }


def api_object(
    scope: constructs.Construct,
    construct_id: str,
    *,
    api_version: str,
    kind: str,
    name: str,
    body: Mapping[str, Any],
    namespace: str | None = NAMESPACE,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> cdk8s.ApiObject:
    """Return one object of the inference namespace (``k8s_charts.objects.api_object`` with that default)."""
    return objects.api_object(
        scope,
        construct_id,
        api_version=api_version,
        kind=kind,
        name=name,
        body=body,
        namespace=namespace,
        labels=labels,
        annotations=annotations,
    )


def service_account(scope: constructs.Construct, construct_id: str, *, name: str) -> cdk8s.ApiObject:
    """Return a service account that mounts no Kubernetes API token (servers never call the API).

    EKS Pod Identity and the Linkerd proxy project tokens of their own audiences, so neither needs it.
    """
    return api_object(
        scope,
        construct_id,
        api_version="v1",
        kind="ServiceAccount",
        name=name,
        body={"automountServiceAccountToken": False},
    )


def service(
    scope: constructs.Construct, construct_id: str, *, name: str, selector: Mapping[str, str],
    ports: Sequence[tuple[str, int]],
) -> cdk8s.ApiObject:  # fmt: skip
    """Return a ClusterIP Service over the pods with ``selector``; ``ports`` are (name, port) pairs."""
    return api_object(
        scope,
        construct_id,
        api_version="v1",
        kind="Service",
        name=name,
        labels=selector,
        body={
            "spec": {
                "type": "ClusterIP",
                "selector": dict(selector),
                "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in ports],
            }
        },
    )


def pod_monitor(
    scope: constructs.Construct, construct_id: str, *, name: str, match_labels: Mapping[str, str], port: str,
    target_labels: Sequence[str], monitor_labels: Mapping[str, str] = MONITOR_LABELS,
) -> cdk8s.ApiObject:  # fmt: skip
    """Return a PodMonitor scraping ``/metrics`` on ``port``; ``target_labels`` copy pod labels onto series."""
    return api_object(
        scope,
        construct_id,
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        name=name,
        labels=monitor_labels,
        body={
            "spec": {
                "selector": {"matchLabels": dict(match_labels)},
                "podTargetLabels": list(target_labels),
                "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": "15s"}],
            }
        },
    )


def client_ingress(
    scope: constructs.Construct, construct_id: str, *, name: str, pod_labels: Mapping[str, str],
    ports: Sequence[int], namespaces: Sequence[str], cidrs: Sequence[str] = (), reason: str,
) -> cdk8s.ApiObject:  # fmt: skip
    """Return the NetworkPolicy admitting clients (namespaces, then IP blocks) to a server's ports."""
    peers = tuple(Peer(namespaces=(ns,)) for ns in namespaces) + tuple(Peer(cidr=c) for c in cidrs)
    allow = NetworkAllow(
        name=name,
        direction="Ingress",
        peers=peers,
        ports=tuple(PolicyPort(p) for p in ports),
        pod_labels=pod_labels,
        reason=reason,
    )
    return network_policy(scope, construct_id, namespace=NAMESPACE, allow=allow)


def metrics_ingress(
    scope: constructs.Construct, construct_id: str, *, name: str, pod_labels: Mapping[str, str], port: int
) -> cdk8s.ApiObject:
    """Return the NetworkPolicy letting Prometheus (``monitoring``) scrape a server whose metrics share its port."""
    allow = NetworkAllow(
        name=f"{name}-metrics",
        direction="Ingress",
        peers=(Peer(namespaces=(MONITORING_NAMESPACE,)),),
        ports=(PolicyPort(port),),
        pod_labels=pod_labels,
        reason=f"Prometheus scrapes /metrics on {name}'s serving port",
    )
    return network_policy(scope, construct_id, namespace=NAMESPACE, allow=allow)


def mesh_access(
    scope: constructs.Construct,
    *,
    name: str,
    pod_labels: Mapping[str, str],
    port: str,
    client_namespaces: Sequence[str],
    networks: Mapping[str, Sequence[str]],
) -> None:
    """Add the Linkerd objects admitting meshed and unmeshed clients to one port of a server's pods.

    Once a ``Server`` selects the port, Linkerd refuses every client no ``AuthorizationPolicy`` admits (the
    kubelet's probe paths stay authorized while the Server has no HTTPRoute). Meshed clients are admitted by
    the mTLS identity of any service account of ``client_namespaces``; unmeshed ones by network, one
    ``NetworkAuthentication`` and ``AuthorizationPolicy`` per entry of ``networks`` (group -> CIDRs, empty
    groups skipped), since an AuthorizationPolicy requires all of its authentications.
    """
    server = f"{name}-{port}"
    api_object(
        scope,
        f"{name}-server",
        api_version=f"{LINKERD_POLICY}/v1beta3",
        kind="Server",
        name=server,
        body={"spec": {"podSelector": {"matchLabels": dict(pod_labels)}, "port": port}},
    )
    target = {"group": LINKERD_POLICY, "kind": "Server", "name": server}

    def authorize(group: str, kind: str, spec: Mapping[str, Any]) -> None:
        auth = f"{name}-{group}"
        api_object(
            scope,
            f"{auth}-authentication",
            api_version=f"{LINKERD_POLICY}/v1alpha1",
            kind=kind,
            name=auth,
            body={"spec": dict(spec)},
        )
        api_object(
            scope,
            f"{auth}-authorization",
            api_version=f"{LINKERD_POLICY}/v1alpha1",
            kind="AuthorizationPolicy",
            name=auth,
            body={
                "spec": {
                    "targetRef": target,
                    "requiredAuthenticationRefs": [{"group": LINKERD_POLICY, "kind": kind, "name": auth}],
                }
            },
        )

    if client_namespaces:
        refs = [{"kind": "ServiceAccount", "namespace": ns} for ns in client_namespaces]
        authorize("clients", "MeshTLSAuthentication", {"identityRefs": refs})
    for group, cidrs in networks.items():
        if cidrs:
            authorize(group, "NetworkAuthentication", {"networks": [{"cidr": c} for c in cidrs]})


@dataclass(frozen=True)
class ServerPod:
    """Define the pod of one model server Deployment (what differs between vLLM, Triton and TGI).

    Args:
        container: the server container (name, image, args, ports, probes, resources ...).
        init_containers: containers that run to completion first (the model download).
        volumes: the pod's volumes.
        service_account: the pod's service account.
        placement: node selector, tolerations, priority.
        termination_grace_seconds: time to finish in-flight requests. Defaults to 60.
        extra_annotations: further pod annotations. Defaults to none.
    """

    container: Mapping[str, Any]
    service_account: str
    placement: Placement
    init_containers: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    termination_grace_seconds: int = 60
    extra_annotations: Mapping[str, str] = field(default_factory=dict)

    def template(self, labels: Mapping[str, str], *, mesh: bool) -> dict[str, Any]:
        """Return the pod template with ``labels``; ``mesh`` adds the Linkerd injection annotations."""
        annotations = {**(MESH_POD_ANNOTATIONS if mesh else {}), **self.extra_annotations}
        spec: dict[str, Any] = {
            "serviceAccountName": self.service_account,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "terminationGracePeriodSeconds": self.termination_grace_seconds,
            "containers": [dict(self.container)],
            "volumes": [dict(v) for v in self.volumes],
        }
        if self.init_containers:
            spec["initContainers"] = [dict(c) for c in self.init_containers]
        self.placement.apply(spec)
        metadata: dict[str, Any] = {"labels": dict(labels)}
        if annotations:
            metadata["annotations"] = annotations
        return {"metadata": metadata, "spec": spec}


def deployment(
    scope: constructs.Construct, construct_id: str, *, name: str, labels: Mapping[str, str], pod: ServerPod,
    replicas: int | None, mesh: bool,
) -> cdk8s.ApiObject:  # fmt: skip
    """Return a Deployment of ``pod``; ``replicas`` None leaves the count to an autoscaler.

    A GPU server takes minutes to load, so a rollout adds one new pod before it removes an old one
    (``maxUnavailable: 0``) and never drops serving capacity.
    """
    spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(labels)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": pod.template(labels, mesh=mesh),
    }
    if replicas is not None:
        # Only without an autoscaler: a count here would reset the autoscaler's on every deploy.
        spec["replicas"] = replicas
    return api_object(
        scope, construct_id, api_version="apps/v1", kind="Deployment", name=name, labels=labels, body={"spec": spec}
    )


def empty_dir(name: str, *, size_gib: int | None = None, memory: bool = False) -> dict[str, Any]:
    """Return an emptyDir volume, optionally bounded and in memory (``/dev/shm``)."""
    source: dict[str, Any] = {}
    if memory:
        source["medium"] = "Memory"
    if size_gib:
        source["sizeLimit"] = f"{size_gib}Gi"
    return {"name": name, "emptyDir": source}


def models_volume(*, source: str, size_gib: int) -> dict[str, Any]:
    """Return the ``models`` volume: an emptyDir the init container fills, or the EFS models claim."""
    if source == "efs":
        return {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}}
    return empty_dir("models", size_gib=size_gib)


def cache_env(*, host: str, port: int) -> list[dict[str, Any]]:
    """Return the prediction cache's endpoint and AUTH token (from the ExternalSecret) as environment."""
    return [
        {"name": "PREDICTION_CACHE_HOST", "value": host},
        {"name": "PREDICTION_CACHE_PORT", "value": str(port)},
        {"name": "PREDICTION_CACHE_TLS", "value": "true"},
        {
            "name": "PREDICTION_CACHE_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": PREDICTION_CACHE_SECRET, "key": PREDICTION_CACHE_TOKEN_KEY}},
        },
    ]


class InferenceCommonChart(cdk8s.Chart):
    """Define what the inference namespace's servers share: the cache token, its egress, the EFS models.

    Args:
        cache_auth_secret: ARN (or name) of the cache's AUTH token in Secrets Manager. Defaults to none: no
            ExternalSecret and no cache egress.
        cache_port: the cache's port (egress is allowed to it). Defaults to 6379.
        data_cidrs: the isolated data subnets the cache lives in. Defaults to none.
        secret_store: the ClusterSecretStore to read the token through. Defaults to ``aws-secrets-manager``.
        file_system_id: the shared EFS file system. Defaults to none: no models volume.
        models_access_point_id: its models access point (root ``/models``). Needed with ``file_system_id``.
        models_volume_gib: nominal capacity of the read-only models volume (EFS is elastic). Defaults to 1024.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        cache_auth_secret: str | None = None,
        cache_port: int = 6379,
        data_cidrs: Sequence[str] = (),
        secret_store: str = CLUSTER_SECRET_STORE,
        file_system_id: str | None = None,
        models_access_point_id: str | None = None,
        models_volume_gib: int = 1024,
    ) -> None:
        super().__init__(scope, construct_id)
        if cache_auth_secret is not None:
            if not data_cidrs:
                raise ValueError("data_cidrs is empty: the cache egress allow needs the data subnets' CIDRs")
            external_secret(
                self,
                "prediction-cache-auth",
                name=PREDICTION_CACHE_SECRET,
                namespace=NAMESPACE,
                secret_arn_or_name=cache_auth_secret,
                keys={PREDICTION_CACHE_TOKEN_KEY: None},
                store=secret_store,
            )
            network_policy(
                self,
                "allow-prediction-cache",
                namespace=NAMESPACE,
                allow=NetworkAllow(
                    name="prediction-cache",
                    direction="Egress",
                    peers=tuple(Peer(cidr=c) for c in data_cidrs),
                    ports=(PolicyPort(cache_port),),
                    reason="model servers read and write cached predictions in the Valkey cluster (TLS, AUTH)",
                ),
            )
        if file_system_id is not None:
            if models_access_point_id is None:
                raise ValueError("file_system_id is set without models_access_point_id: give the models access point")
            self._efs_models(file_system_id, models_access_point_id, models_volume_gib)

    def _efs_models(self, file_system_id: str, access_point_id: str, size_gib: int) -> None:
        pv_name = f"{NAMESPACE}-{MODELS_CLAIM}"
        api_object(
            self,
            "models-pv",
            api_version="v1",
            kind="PersistentVolume",
            name=pv_name,
            namespace=None,
            body={
                "spec": {
                    "capacity": {"storage": f"{size_gib}Gi"},
                    "accessModes": ["ReadOnlyMany"],
                    # Static and retained: the weights belong to the models access point, not to this claim.
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "mountOptions": ["tls", "iam"],
                    "csi": {
                        "driver": "efs.csi.aws.com",
                        "volumeHandle": f"{file_system_id}::{access_point_id}",
                        "readOnly": True,
                    },
                    # Only this namespace's claim may bind it.
                    "claimRef": {"namespace": NAMESPACE, "name": MODELS_CLAIM},
                }
            },
        )
        api_object(
            self,
            "models-pvc",
            api_version="v1",
            kind="PersistentVolumeClaim",
            name=MODELS_CLAIM,
            body={
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "volumeName": pv_name,
                    "resources": {"requests": {"storage": f"{size_gib}Gi"}},
                }
            },
        )


# --- KEDA ---------------------------------------------------------------------------------------------------


def prometheus_trigger(*, name: str, query: str, threshold: float, metric_type: str = "AverageValue") -> dict[str, Any]:
    """Return a KEDA prometheus trigger on ``query`` against the in-cluster Prometheus.

    ``AverageValue`` scales to ceil(query / threshold) replicas (for totals such as queued requests);
    ``Value`` scales in proportion to query / threshold (for per-request figures such as queue time).
    """
    return {
        "type": "prometheus",
        "name": name,
        "metricType": metric_type,
        "metadata": {
            "serverAddress": PROMETHEUS_SERVER_ADDRESS,
            "query": query,
            "threshold": f"{threshold:g}",
            # No series (no pod yet, or a scrape gap) reads as 0 instead of failing the scaler.
            "ignoreNullValues": "true",
        },
    }


def cron_trigger(autoscaling: Autoscaling) -> dict[str, Any] | None:
    """Return the KEDA cron trigger holding ``peak_replicas`` during the daily peak (UTC), or None."""
    if autoscaling.peak_replicas is None:
        return None
    return {
        "type": "cron",
        "name": "daily-peak",
        "metadata": {
            "timezone": "UTC",
            "start": f"0 {autoscaling.peak_start_hour_utc} * * *",
            "end": f"0 {autoscaling.peak_end_hour_utc} * * *",
            "desiredReplicas": str(autoscaling.peak_replicas),
        },
    }


def scaled_object(
    scope: constructs.Construct, construct_id: str, *, name: str, deployment_name: str, autoscaling: Autoscaling,
    load_trigger: Mapping[str, Any],
) -> cdk8s.ApiObject:  # fmt: skip
    """Return the KEDA ScaledObject of a model server Deployment: its load trigger plus the daily peak."""
    triggers = [dict(load_trigger)]
    peak = cron_trigger(autoscaling)
    if peak is not None:
        triggers.append(peak)
    return api_object(
        scope,
        construct_id,
        api_version="keda.sh/v1alpha1",
        kind="ScaledObject",
        name=name,
        body={
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name},
                "minReplicaCount": autoscaling.min_replicas,
                "maxReplicaCount": autoscaling.max_replicas,
                "pollingInterval": 30,
                # Scale to zero only after 30 idle minutes: a cold start reloads the weights (minutes).
                "cooldownPeriod": 1800,
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {
                            # Remove one replica per 5 minutes after 15 calm minutes: capacity that took
                            # minutes to load is not dropped on a short lull.
                            "scaleDown": {
                                "stabilizationWindowSeconds": 900,
                                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
                            }
                        }
                    }
                },
                "triggers": triggers,
            }
        },
    )


def model_server(
    scope: constructs.Construct,
    *,
    name: str,
    pod: ServerPod,
    ports: Sequence[tuple[str, int]],
    metrics_port: str,
    replicas: int,
    autoscaling: Autoscaling | None,
    load_trigger: Mapping[str, Any] | None,
    client_namespaces: Sequence[str],
    service_mesh: bool,
    monitoring: bool,
    monitor_labels: Mapping[str, str],
    scraper_cidrs: Sequence[str] = (),
) -> None:
    """Add the objects of a single-version model server to ``scope``.

    ServiceAccount, Deployment, Service, PodDisruptionBudget (more than one replica), PodMonitor (with
    ``monitoring``), KEDA ScaledObject (with ``autoscaling``; ``load_trigger`` plus the daily peak) and the
    NetworkPolicy admitting ``client_namespaces`` to ``ports``. When the metrics share a serving port (not
    one named ``metrics``), Prometheus is let in on it: by NetworkPolicy, and with the mesh by a Linkerd
    Server admitting ``client_namespaces`` by identity and ``scraper_cidrs`` (the pod subnets) by network.
    """
    labels = {"app": name, "track": "stable"}
    service_account(scope, "service-account", name=pod.service_account)
    deployment(
        scope,
        "deployment",
        name=name,
        labels=labels,
        pod=pod,
        replicas=None if autoscaling else replicas,
        mesh=service_mesh,
    )
    service(scope, "service", name=name, selector=labels, ports=ports)
    pdb(
        scope,
        "pdb",
        name=name,
        namespace=NAMESPACE,
        match_labels=labels,
        replicas=autoscaling.max_replicas if autoscaling else replicas,
    )
    if monitoring:
        pod_monitor(
            scope,
            "pod-monitor",
            name=name,
            match_labels={"app": name},
            port=metrics_port,
            target_labels=("app", "track"),
            monitor_labels=monitor_labels,
        )
    if autoscaling is not None:
        if load_trigger is None:
            raise ValueError(f"{name}: autoscaling needs a load trigger")
        scaled_object(
            scope, "scaled-object", name=name, deployment_name=name, autoscaling=autoscaling, load_trigger=load_trigger
        )
    client_ingress(
        scope,
        "allow-clients",
        name=f"{name}-clients",
        pod_labels={"app": name},
        ports=tuple(p for _, p in ports),
        namespaces=client_namespaces,
        reason=f"agents call {name}'s inference API",
    )
    shared = dict(ports).get(metrics_port)
    if monitoring and shared is not None:
        metrics_ingress(scope, "allow-metrics", name=name, pod_labels={"app": name}, port=shared)
        if service_mesh:
            mesh_access(
                scope,
                name=name,
                pod_labels={"app": name},
                port=metrics_port,
                client_namespaces=client_namespaces,
                networks={"scrapers": scraper_cidrs},
            )
