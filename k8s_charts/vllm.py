"""Define the vLLM OpenAI-compatible model server: stable and canary versions, scaling, traffic and access.

Objects (namespace ``inference``; see ``k8s_charts/inference.py`` for what every model server shares):

- ``ServiceAccount`` ``vllm``, bound by EKS Pod Identity to a role that reads ``production/*`` of the models
  bucket only (``stacks/inference_stack.py``).
- ``Deployment`` ``vllm`` (``track: stable``) and, with a canary, ``vllm-canary`` (``track: canary``):
  weights copied from ``s3://<models bucket>/production/<model>/`` by an init container (or mounted from
  the EFS models access point), served offline on port 8000 (``http``; ``/metrics`` on the same port).
- ``Service`` ``vllm`` (stable pods) and ``vllm-canary``; a ``PodDisruptionBudget`` per version with more
  than one replica; a ``PodMonitor`` that copies the ``app`` and ``track`` pod labels onto the series.
- ``ScaledObject`` (KEDA) on the stable Deployment: ``vllm:num_requests_waiting`` per replica, plus a
  cron trigger holding the peak replicas from 08:00 to 22:00 UTC (the only trigger that can wake a server
  scaled to zero: with no pod there is no queue to measure).
- ``HTTPRoute`` (Gateway API ``v1``, applied by Linkerd to meshed clients): parent the ``vllm`` Service,
  backends ``vllm`` and ``vllm-canary`` weighted ``100 - canary.weight`` and ``canary.weight``. Rollback is
  ``canary.weight: 0`` in the stage config: every request goes to the stable Service again.
- ``TargetGroupBinding`` (AWS Load Balancer Controller): registers the stable pods' IPs in the edge ALB's
  target group. ALB traffic is not meshed, so it always reaches the stable version.
- Access: a ``NetworkPolicy`` admitting port 8000 only from the agentic namespace and the public subnets
  (the ALB), one admitting Prometheus (``monitoring``) to it for ``/metrics``, and Linkerd
  ``Server``/``AuthorizationPolicy`` objects admitting the same clients at the proxy: the agentic
  namespace's mTLS identities, and the ALB's and the pod subnets' networks (the ALB and the unmeshed
  Prometheus have no mesh identity). Without them the namespace's ``all-authenticated`` policy would
  refuse both. Linkerd authorizes the kubelet's probe paths itself while the Server has no HTTPRoute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import cdk8s
import constructs

from config.inference import Autoscaling, Canary
from k8s_charts.inference import (
    CLIENT_NAMESPACE,
    MODELS_MOUNT,
    MONITOR_LABELS,
    NAMESPACE,
    Placement,
    ServerPod,
    api_object,
    cache_env,
    client_ingress,
    deployment,
    empty_dir,
    mesh_access,
    metrics_ingress,
    model_dir,
    model_sync_container,
    model_uri,
    models_volume,
    pod_monitor,
    probes,
    prometheus_trigger,
    resources,
    scaled_object,
    service,
)
from k8s_charts.inference import service_account as create_service_account
from k8s_charts.objects import (
    container_security_context,
)
from k8s_charts.tenancy import pdb

IMAGE: Final = "vllm/vllm-openai"
PORT: Final = 8000
PORT_NAME: Final = "http"


class VllmChart(cdk8s.Chart):
    """Define one vLLM model (stable, optionally a canary) in the inference namespace.

    Args:
        image_tag: exact ``vllm/vllm-openai`` tag.
        models_bucket_name: the stage's models bucket (may be a deploy-time token).
        model_path: the model's key under ``production/`` (``production/llama-3-8b-instruct/``).
        served_model_name: the model name clients send.
        placement: node selector, tolerations, priority and the GPU (or MIG) resource of the pool.
        region: the stage's region (the AWS CLI's S3 calls).
        tensor_parallel_size: GPUs the model is sharded over. Defaults to 1.
        gpu_memory_utilization: share of GPU memory vLLM may take, in (0, 0.95]. Defaults to 0.9.
        max_model_len: the longest context served. Defaults to 8192.
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes. Defaults to True.
        replicas: stable replicas without autoscaling. Defaults to 1.
        cpu: CPU request per pod. Defaults to 8.
        memory_gib: memory request and limit per pod (the namespace's default limit is 1Gi). Defaults to 64.
        model_storage_gib: node disk for the copied weights. Defaults to 40.
        model_source: ``s3`` (copy at start) or ``efs`` (the ``models-production`` claim of
            ``InferenceCommonChart``). Defaults to ``s3``.
        autoscaling: KEDA scaling of the stable Deployment. Defaults to none (``replicas`` fixed).
        canary: a second model version and its traffic weight. Defaults to none.
        name: name of the Deployment, Service and related objects. Defaults to ``vllm``.
        service_account: the pods' service account (its Pod Identity role reads the models). Defaults to
            ``vllm``.
        target_group_arn: the edge ALB's target group (IP targets). Defaults to none: no TargetGroupBinding.
        alb_cidrs: the public subnets the ALB's nodes live in. Needed with ``target_group_arn``.
        client_namespaces: namespaces whose pods may call the server. Defaults to ``agentic``.
        scraper_cidrs: the pod subnets, from which the unmeshed Prometheus scrapes ``/metrics`` on port 8000
            (admitted by network at the proxy). Defaults to none.
        cache_host: the prediction cache's endpoint, put in the environment with its port and the AUTH token
            of ``InferenceCommonChart``'s ExternalSecret. Defaults to none.
        cache_port: the prediction cache's port. Defaults to 6379.
        service_mesh: Linkerd runs in the cluster (injection, mesh policy, the canary route). Defaults to True.
        monitoring: the Prometheus Operator runs in the cluster (the PodMonitor). Defaults to True.
        monitor_labels: labels Prometheus selects PodMonitors by. Defaults to ``release: kube-prometheus-stack``.
        shm_gib: size of ``/dev/shm`` (NCCL between tensor-parallel workers). Defaults to 2.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        image_tag: str,
        models_bucket_name: str,
        model_path: str,
        served_model_name: str,
        placement: Placement,
        region: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int = 8192,
        enable_prefix_caching: bool = True,
        replicas: int = 1,
        cpu: int = 8,
        memory_gib: int = 64,
        model_storage_gib: int = 40,
        model_source: Literal["s3", "efs"] = "s3",
        autoscaling: Autoscaling | None = None,
        canary: Canary | None = None,
        name: str = "vllm",
        service_account: str = "vllm",
        target_group_arn: str | None = None,
        alb_cidrs: Sequence[str] = (),
        client_namespaces: Sequence[str] = (CLIENT_NAMESPACE,),
        scraper_cidrs: Sequence[str] = (),
        cache_host: str | None = None,
        cache_port: int = 6379,
        service_mesh: bool = True,
        monitoring: bool = True,
        monitor_labels: Mapping[str, str] = MONITOR_LABELS,
        shm_gib: int = 2,
    ) -> None:
        _check(
            placement, tensor_parallel_size, gpu_memory_utilization, target_group_arn, alb_cidrs, canary, service_mesh
        )
        super().__init__(scope, construct_id)
        self.name = name
        self.canary_name = f"{name}-canary"
        common: dict[str, Any] = {
            "image_tag": image_tag,
            "models_bucket_name": models_bucket_name,
            "served_model_name": served_model_name,
            "placement": placement,
            "region": region,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "enable_prefix_caching": enable_prefix_caching,
            "cpu": cpu,
            "memory_gib": memory_gib,
            "model_storage_gib": model_storage_gib,
            "model_source": model_source,
            "service_account": service_account,
            "cache": (cache_host, cache_port),
            "shm_gib": shm_gib,
        }
        create_service_account(self, "service-account", name=service_account)

        stable = {"app": name, "track": "stable"}
        deployment(
            self,
            "deployment",
            name=name,
            labels=stable,
            pod=_pod(model_path=model_path, **common),
            replicas=None if autoscaling else replicas,
            mesh=service_mesh,
        )
        service(self, "service", name=name, selector=stable, ports=[(PORT_NAME, PORT)])
        pdb(
            self,
            "pdb",
            name=name,
            namespace=NAMESPACE,
            match_labels=stable,
            replicas=autoscaling.max_replicas if autoscaling else replicas,
        )

        if canary is not None:
            track = {"app": name, "track": "canary"}
            deployment(
                self,
                "canary-deployment",
                name=self.canary_name,
                labels=track,
                pod=_pod(model_path=canary.model_path, **common),
                replicas=canary.replicas,
                mesh=service_mesh,
            )
            service(self, "canary-service", name=self.canary_name, selector=track, ports=[(PORT_NAME, PORT)])
            pdb(
                self,
                "canary-pdb",
                name=self.canary_name,
                namespace=NAMESPACE,
                match_labels=track,
                replicas=canary.replicas,
            )
            self._route(canary.weight)

        if monitoring:
            pod_monitor(
                self,
                "pod-monitor",
                name=name,
                match_labels={"app": name},
                port=PORT_NAME,
                target_labels=("app", "track"),
                monitor_labels=monitor_labels,
            )
        if autoscaling is not None:
            query = f'sum(vllm:num_requests_waiting{{namespace="{NAMESPACE}",app="{name}",track="stable"}})'
            scaled_object(
                self,
                "scaled-object",
                name=name,
                deployment_name=name,
                autoscaling=autoscaling,
                load_trigger=prometheus_trigger(name="requests-waiting", query=query, threshold=autoscaling.threshold),
            )
        if target_group_arn is not None:
            api_object(
                self,
                "target-group-binding",
                api_version="elbv2.k8s.aws/v1beta1",
                kind="TargetGroupBinding",
                name=name,
                body={
                    "spec": {
                        "serviceRef": {"name": name, "port": PORT},
                        "targetGroupARN": target_group_arn,
                        # Pod IPs: the ALB calls the pods directly, with no extra hop through a node port.
                        "targetType": "ip",
                    }
                },
            )
        client_ingress(
            self,
            "allow-clients",
            name=f"{name}-clients",
            pod_labels={"app": name},
            ports=(PORT,),
            namespaces=client_namespaces,
            cidrs=alb_cidrs if target_group_arn is not None else (),
            reason="agents call the OpenAI-compatible API on 8000; the edge ALB (public subnets) forwards "
            "external clients and health checks to the pods' IPs",
        )
        if monitoring:
            metrics_ingress(self, "allow-metrics", name=name, pod_labels={"app": name}, port=PORT)
        if service_mesh:
            networks = {
                "load-balancer": alb_cidrs if target_group_arn is not None else (),
                "scrapers": scraper_cidrs if monitoring else (),
            }
            mesh_access(
                self,
                name=name,
                pod_labels={"app": name},
                port=PORT_NAME,
                client_namespaces=client_namespaces,
                networks=networks,
            )

    def _route(self, canary_weight: int) -> None:
        backend = {"group": "", "kind": "Service", "port": PORT}
        api_object(
            self,
            "http-route",
            api_version="gateway.networking.k8s.io/v1",
            kind="HTTPRoute",
            name=self.name,
            annotations={"ml-platform/rollback": "set inference.vllm.canary.weight to 0 in the stage config"},
            body={
                "spec": {
                    # GAMMA: a Service as the parent routes what meshed clients send to that Service.
                    "parentRefs": [{"group": "", "kind": "Service", "name": self.name, "port": PORT}],
                    "rules": [
                        {
                            "backendRefs": [
                                {**backend, "name": self.name, "weight": 100 - canary_weight},
                                {**backend, "name": self.canary_name, "weight": canary_weight},
                            ]
                        }
                    ],
                }
            },
        )


def _check(
    placement: Placement, tensor_parallel_size: int, gpu_memory_utilization: float, target_group_arn: str | None,
    alb_cidrs: Sequence[str], canary: Canary | None, service_mesh: bool,
) -> None:  # fmt: skip
    if placement.gpu_resource is None:
        raise ValueError("placement has no GPU resource: vLLM serves from a GPU or a MIG slice")
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size {tensor_parallel_size} must be at least 1")
    if not 0 < gpu_memory_utilization <= 0.95:
        raise ValueError(f"gpu_memory_utilization {gpu_memory_utilization} must lie in (0, 0.95]")
    if target_group_arn is not None and not alb_cidrs:
        raise ValueError("target_group_arn is set without alb_cidrs: the ALB's subnets must be let in")
    if canary is not None and not service_mesh:
        raise ValueError("a canary needs the service mesh: Linkerd applies the HTTPRoute that splits traffic")


def _pod(
    *, image_tag: str, models_bucket_name: str, model_path: str, served_model_name: str, placement: Placement,
    region: str, tensor_parallel_size: int, gpu_memory_utilization: float, max_model_len: int,
    enable_prefix_caching: bool, cpu: int, memory_gib: int, model_storage_gib: int, model_source: str,
    service_account: str, cache: tuple[str | None, int], shm_gib: int,
) -> ServerPod:  # fmt: skip
    target = model_dir(model_path)
    args = [
        "--model", target,
        "--served-model-name", served_model_name,
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--tensor-parallel-size", str(tensor_parallel_size),
        "--gpu-memory-utilization", f"{gpu_memory_utilization:g}",
        "--max-model-len", str(max_model_len),
        "--enable-prefix-caching" if enable_prefix_caching else "--no-enable-prefix-caching",
    ]  # fmt: skip
    env: list[dict[str, Any]] = [
        # Weights come from the models bucket only: never reach for a model hub.
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        # The image's user has no home: caches (torch.compile, Triton kernels) go to an emptyDir.
        {"name": "HOME", "value": "/cache"},
        {"name": "HF_HOME", "value": "/cache/huggingface"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    cache_host, cache_port = cache
    if cache_host is not None:
        env += cache_env(host=cache_host, port=cache_port)
    container = {
        "name": "vllm",
        "image": f"{IMAGE}:{image_tag}",
        "args": args,
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        **probes(port=PORT_NAME, startup_path="/health", ready_path="/health", live_path="/health"),
        "resources": resources(
            cpu=cpu,
            memory=f"{memory_gib}Gi",
            gpu=placement,
            storage_gib=model_storage_gib if model_source == "s3" else 0,
        ),
        "securityContext": container_security_context(read_only_root=None),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    init: tuple[dict[str, Any], ...] = ()
    if model_source == "s3":
        init = (
            model_sync_container(
                source_uri=model_uri(models_bucket_name, model_path), target_dir=target, region=region
            ),
        )
    return ServerPod(
        container=container,
        service_account=service_account,
        placement=placement,
        init_containers=init,
        volumes=(
            models_volume(source=model_source, size_gib=model_storage_gib),
            empty_dir("cache", size_gib=10),
            empty_dir("shm", size_gib=shm_gib, memory=True),
            empty_dir("tmp", size_gib=1),
        ),
        # In-flight generations (streamed answers) finish before the pod stops.
        termination_grace_seconds=120,
    )
