"""Define a Triton Inference Server over the models bucket's ``production/triton/`` model repository.

The repository is copied into the pod at start (the same init container as every model server, see
``k8s_charts/inference.py``), so Triton needs no S3 credentials of its own at run time. HTTP on 8000, gRPC
on 8001, Prometheus metrics on 8002 (named ``metrics``, which the namespace's scraping allow admits).
KEDA scales on the average queue time per request, ``rate(nv_inference_queue_duration_us) /
rate(nv_inference_request_success)``, as a ``Value`` metric: replicas grow in proportion to how far the
queue time is above the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import cdk8s
import constructs

from config.inference import Autoscaling
from k8s_charts.inference import (
    CLIENT_NAMESPACE,
    MODELS_MOUNT,
    MONITOR_LABELS,
    NAMESPACE,
    Placement,
    ServerPod,
    empty_dir,
    model_dir,
    model_server,
    model_sync_container,
    model_uri,
    probes,
    prometheus_trigger,
    resources,
)
from k8s_charts.objects import (
    container_security_context,
)

IMAGE: Final = "nvcr.io/nvidia/tritonserver"
HTTP_PORT: Final = 8000
GRPC_PORT: Final = 8001
METRICS_PORT: Final = 8002


def queue_time_query(name: str, window: str = "2m") -> str:
    """Return the PromQL of the average queue time per request (microseconds) of one Triton Deployment."""
    selector = f'{{namespace="{NAMESPACE}",app="{name}"}}'
    return (
        f"sum(rate(nv_inference_queue_duration_us{selector}[{window}])) / "
        f"clamp_min(sum(rate(nv_inference_request_success{selector}[{window}])), 1)"
    )


class TritonChart(cdk8s.Chart):
    """Define a Triton Inference Server Deployment in the inference namespace.

    Args:
        image_tag: exact ``nvcr.io/nvidia/tritonserver`` tag (``25.06-py3``).
        models_bucket_name: the stage's models bucket (may be a deploy-time token).
        model_repository: the repository's key under ``production/``. Defaults to ``production/triton/``.
        placement: node selector, tolerations, priority and the GPU (or MIG) resource.
        region: the stage's region.
        replicas: replicas without autoscaling. Defaults to 1.
        cpu: CPU request. Defaults to 4.
        memory_gib: memory request and limit. Defaults to 32.
        model_storage_gib: node disk for the copied repository. Defaults to 40.
        autoscaling: KEDA scaling; ``threshold`` is the queue time per request in microseconds. Defaults to
            none.
        name: name of the objects. Defaults to ``triton``.
        service_account: the pods' service account (Pod Identity reads the models). Defaults to ``triton``.
        client_namespaces: namespaces whose pods may call the server. Defaults to ``agentic``.
        service_mesh: inject the Linkerd proxy. Defaults to True.
        monitoring: emit the PodMonitor. Defaults to True.
        monitor_labels: labels Prometheus selects PodMonitors by. Defaults to ``release: kube-prometheus-stack``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        image_tag: str,
        models_bucket_name: str,
        placement: Placement,
        region: str,
        model_repository: str = "production/triton/",
        replicas: int = 1,
        cpu: int = 4,
        memory_gib: int = 32,
        model_storage_gib: int = 40,
        autoscaling: Autoscaling | None = None,
        name: str = "triton",
        service_account: str = "triton",
        client_namespaces: Sequence[str] = (CLIENT_NAMESPACE,),
        service_mesh: bool = True,
        monitoring: bool = True,
        monitor_labels: Mapping[str, str] = MONITOR_LABELS,
    ) -> None:
        if placement.gpu_resource is None:
            raise ValueError("placement has no GPU resource: this Triton deployment serves from a GPU or MIG slice")
        super().__init__(scope, construct_id)
        repository = model_dir(model_repository)
        container = {
            "name": "triton",
            "image": f"{IMAGE}:{image_tag}",
            "command": ["tritonserver"],
            "args": [
                f"--model-repository={repository}",
                f"--http-port={HTTP_PORT}",
                f"--grpc-port={GRPC_PORT}",
                f"--metrics-port={METRICS_PORT}",
                # Ready only when every model loaded: no traffic to a half-loaded repository.
                "--strict-readiness=true",
            ],
            "ports": [
                {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            ],
            **probes(
                port="http", startup_path="/v2/health/ready", ready_path="/v2/health/ready", live_path="/v2/health/live"
            ),
            "resources": resources(cpu=cpu, memory=f"{memory_gib}Gi", gpu=placement, storage_gib=model_storage_gib),
            "securityContext": container_security_context(read_only_root=None),
            "volumeMounts": [
                {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        }
        pod = ServerPod(
            container=container,
            service_account=service_account,
            placement=placement,
            init_containers=(
                model_sync_container(
                    source_uri=model_uri(models_bucket_name, model_repository), target_dir=repository, region=region
                ),
            ),
            volumes=(
                empty_dir("models", size_gib=model_storage_gib),
                # Python backends exchange tensors with the server through shared memory.
                empty_dir("shm", size_gib=1, memory=True),
                empty_dir("tmp", size_gib=1),
            ),
        )
        trigger = None
        if autoscaling is not None:
            trigger = prometheus_trigger(name="queue-time", query=queue_time_query(name),
                                         threshold=autoscaling.threshold, metric_type="Value")  # fmt: skip
        model_server(
            self,
            name=name,
            pod=pod,
            ports=[("http", HTTP_PORT), ("grpc", GRPC_PORT)],
            metrics_port="metrics",
            replicas=replicas,
            autoscaling=autoscaling,
            load_trigger=trigger,
            client_namespaces=client_namespaces,
            service_mesh=service_mesh,
            monitoring=monitoring,
            monitor_labels=monitor_labels,
        )
