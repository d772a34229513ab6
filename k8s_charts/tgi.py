"""Define a Hugging Face Text Generation Inference (TGI) server for one model of the models bucket.

The weights are copied from ``s3://<models bucket>/production/<model>/`` at start and TGI runs offline
(``HF_HUB_OFFLINE=1``), so it never downloads from the Hub. HTTP API and ``/metrics`` on 8080.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import cdk8s
import constructs

from k8s_charts.inference import (
    CLIENT_NAMESPACE,
    MODELS_MOUNT,
    MONITOR_LABELS,
    Placement,
    ServerPod,
    empty_dir,
    model_dir,
    model_server,
    model_sync_container,
    model_uri,
    probes,
    resources,
)
from k8s_charts.objects import (
    container_security_context,
)

IMAGE: Final = "ghcr.io/huggingface/text-generation-inference"
PORT: Final = 8080


class TgiChart(cdk8s.Chart):
    """Define a TGI Deployment in the inference namespace.

    Args:
        image_tag: exact ``ghcr.io/huggingface/text-generation-inference`` tag.
        models_bucket_name: the stage's models bucket (may be a deploy-time token).
        model_path: the model's key under ``production/``.
        placement: node selector, tolerations, priority and the GPU (or MIG) resource.
        region: the stage's region.
        max_input_tokens: longest prompt. Defaults to 4096.
        max_total_tokens: prompt plus generated tokens. Defaults to 8192.
        replicas: replicas. Defaults to 1.
        cpu: CPU request. Defaults to 4.
        memory_gib: memory request and limit. Defaults to 32.
        model_storage_gib: node disk for the copied weights. Defaults to 40.
        name: name of the objects. Defaults to ``tgi``.
        service_account: the pods' service account (Pod Identity reads the models). Defaults to ``tgi``.
        client_namespaces: namespaces whose pods may call the server. Defaults to ``agentic``.
        scraper_cidrs: the pod subnets, from which the unmeshed Prometheus scrapes ``/metrics`` on 8080.
            Defaults to none.
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
        model_path: str,
        placement: Placement,
        region: str,
        max_input_tokens: int = 4096,
        max_total_tokens: int = 8192,
        replicas: int = 1,
        cpu: int = 4,
        memory_gib: int = 32,
        model_storage_gib: int = 40,
        name: str = "tgi",
        service_account: str = "tgi",
        client_namespaces: Sequence[str] = (CLIENT_NAMESPACE,),
        scraper_cidrs: Sequence[str] = (),
        service_mesh: bool = True,
        monitoring: bool = True,
        monitor_labels: Mapping[str, str] = MONITOR_LABELS,
    ) -> None:
        if placement.gpu_resource is None:
            raise ValueError("placement has no GPU resource: TGI serves from a GPU or a MIG slice")
        if max_input_tokens >= max_total_tokens:
            raise ValueError(
                f"max_input_tokens ({max_input_tokens}) must be below max_total_tokens ({max_total_tokens})"
            )
        super().__init__(scope, construct_id)
        target = model_dir(model_path)
        container = {
            "name": "tgi",
            "image": f"{IMAGE}:{image_tag}",
            "args": [
                "--model-id",
                target,
                "--hostname",
                "0.0.0.0",
                "--port",
                str(PORT),
                "--max-input-tokens",
                str(max_input_tokens),
                "--max-total-tokens",
                str(max_total_tokens),
            ],
            "env": [
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
                {"name": "HOME", "value": "/cache"},
                {"name": "HUGGINGFACE_HUB_CACHE", "value": "/cache/huggingface"},
            ],
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            **probes(port="http", startup_path="/health", ready_path="/health", live_path="/health"),
            "resources": resources(cpu=cpu, memory=f"{memory_gib}Gi", gpu=placement, storage_gib=model_storage_gib),
            "securityContext": container_security_context(read_only_root=None),
            "volumeMounts": [
                {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
                {"name": "cache", "mountPath": "/cache"},
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        }
        pod = ServerPod(
            container=container,
            service_account=service_account,
            placement=placement,
            init_containers=(
                model_sync_container(
                    source_uri=model_uri(models_bucket_name, model_path), target_dir=target, region=region
                ),
            ),
            volumes=(
                empty_dir("models", size_gib=model_storage_gib),
                empty_dir("cache", size_gib=10),
                empty_dir("shm", size_gib=1, memory=True),
                empty_dir("tmp", size_gib=1),
            ),
            termination_grace_seconds=120,
        )
        model_server(
            self,
            name=name,
            pod=pod,
            ports=[("http", PORT)],
            metrics_port="http",
            replicas=replicas,
            autoscaling=None,
            load_trigger=None,
            client_namespaces=client_namespaces,
            service_mesh=service_mesh,
            monitoring=monitoring,
            monitor_labels=monitor_labels,
            scraper_cidrs=scraper_cidrs,
        )
