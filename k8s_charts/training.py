"""Define distributed training (issue #6): shared volumes, runtimes, job templates and the pipeline.

Operators (``platform_constructs/training_operators.py``):

- **Kubeflow Trainer v2** (chart ``kubeflow-trainer`` 2.3.0) serves ``TrainJob``, ``TrainingRuntime`` and
  ``ClusterTrainingRuntime``. The v1 training operator that serves ``PyTorchJob`` has no Helm chart (a
  kustomize overlay we could neither pin in the reference nor render offline at synth) and is in
  maintenance; an example must be a kind the installed operator serves, so the PyTorch example is a
  ``TrainJob`` on the ``torch-a100`` ``TrainingRuntime`` below, the v2 form of a PyTorchJob.
- **KubeRay** (chart ``kuberay-operator`` 1.7.0) serves ``RayJob``: the H100 example and the pipeline.

Choices:

- Data parallelism: **PyTorch DDP via torchrun**. Trainer v2's torch policy injects the ``PET_*`` variables
  that torchrun reads, NCCL does the all-reduce, and the model code stays plain PyTorch. Ray Train (also DDP
  underneath) is used where Ray is there anyway: the pipeline and the tuning example.
- Hyperparameter tuning: **Ray Tune** (ASHA early stopping) on KubeRay. Katib has no Helm chart and would add
  a controller, a database and a second job model; Ray Tune runs trials as Ray tasks in the same RayJob,
  and an interrupted search resumes with ``Tuner.restore``.
- Checkpoints: every job mounts the EFS ``Checkpoints`` access point through a static PersistentVolume
  (``efs.csi.aws.com``, ``<fs-id>::<access-point-id>``, ReadWriteMany) and resumes from the newest
  checkpoint of its run (the example commands show it). On spot capacity the pods tolerate their pool's
  taint and get ``terminationGracePeriodSeconds`` to write a checkpoint on the interruption notice (SIGTERM
  from the drain Karpenter starts when the notice arrives).
- Training pods are off the Linkerd mesh (``linkerd.io/inject: disabled``): NCCL, Gloo and the torch
  rendezvous use ports chosen at run time. The tenancy baseline lets them reach each other; they reach
  MLflow directly (``allow-mlflow-egress`` here and ``mlflow-from-training`` in ``mlops``).
- The job examples are **templates**, not running jobs: a ConfigMap ``training-job-templates`` holds them as
  ready-to-submit manifests for this stage (``kubectl get cm training-job-templates -o jsonpath=...`` piped to
  ``kubectl create -f -``). Applying them from CloudFormation would start GPU jobs on every deploy and
  fight Kubernetes over immutable fields of finished jobs. The ``TrainingRuntime`` is a template by design
  and is applied.
- The pipeline (stage -> train -> validate -> register -> promote) is **one RayJob**: its driver copies
  ``s3://<datasets>/processed/`` to the EFS datasets volume, trains with Ray Train and checkpoints, validates,
  exposes the score as a Ray metric that a PodMonitor scrapes (and logs it to MLflow), registers the model
  in MLflow only when the score passes the threshold, and then copies it to ``s3://<models>/production/``.
  There is no Pushgateway in the platform: the job stays up for two scrape intervals after validating.
- Weights & Biases is opt-in per pod: ``with_wandb`` labels a pod template ``ml-platform/wandb: "true"`` and
  adds the API key Secret (an ExternalSecret) to its containers through ``envFrom``.
- No VerticalPodAutoscaler: its CRD is not in the pinned reference, so no VPA object could pass the CRD gate.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cdk8s
import constructs

from config.model import NodePoolConfig
from config.pools import WORKLOAD_TYPE_LABEL, workload_label
from k8s_charts.mlops import (
    MLFLOW_CONTAINER_PORT,
    MLFLOW_POD_LABELS,
    MLFLOW_TRACKING_URI,
    add_object,
    resources,
)
from k8s_charts.mlops import NAMESPACE as MLOPS_NAMESPACE
from k8s_charts.objects import (
    api_object,
    aws_env,
    container_security_context,
    pod_security_context,
)
from k8s_charts.secrets import external_secret
from k8s_charts.tenancy import NetworkAllow, Peer, PolicyPort, network_policy

NAMESPACE: Final = "training"
TRAINER_NAMESPACE: Final = "kubeflow-system"
KUBERAY_NAMESPACE: Final = "kuberay-system"
TRAINING_SERVICE_ACCOUNT: Final = "training"
PIPELINE_SERVICE_ACCOUNT: Final = "training-pipeline"
CHECKPOINTS_CLAIM: Final = "checkpoints"
DATASETS_CLAIM: Final = "datasets"
CHECKPOINTS_MOUNT: Final = "/mnt/checkpoints"
DATASETS_MOUNT: Final = "/mnt/datasets"
SCRIPTS_MOUNT: Final = "/opt/scripts"
SCRIPTS_CONFIG_MAP: Final = "training-scripts"
TEMPLATES_CONFIG_MAP: Final = "training-job-templates"
TORCH_RUNTIME: Final = "torch-a100"
TRAINER_API: Final = "trainer.kubeflow.org/v1alpha1"
RAY_API: Final = "ray.io/v1"
EFS_CSI_DRIVER: Final = "efs.csi.aws.com"
# EFS is elastic; a PersistentVolume must still state a size, which nothing enforces.
EFS_NOMINAL_CAPACITY: Final = "10Ti"
TRAINING_PRIORITY_CLASS: Final = "training"
WANDB_LABEL: Final = "ml-platform/wandb"
METRICS_LABEL: Final[Mapping[str, str]] = {"ml-platform/metrics": "true"}
# kube-prometheus-stack's Prometheus selects PodMonitors by its release label.
MONITOR_LABELS: Final[Mapping[str, str]] = {"release": "kube-prometheus-stack"}
# NCCL/Gloo/torch rendezvous ports are chosen at run time: keep the Linkerd proxy out of training pods.
SKIP_MESH: Final[Mapping[str, str]] = {"linkerd.io/inject": "disabled"}
PART_OF: Final[Mapping[str, str]] = {"app.kubernetes.io/part-of": "training"}
# Ray heads are CPU-only and must not be preempted or reclaimed: the on-demand system pool.
HEAD_NODE_SELECTOR: Final[Mapping[str, str]] = {WORKLOAD_TYPE_LABEL: "control"}
# Copying data sets is CPU and network work: the pool serving data processing.
STAGING_NODE_SELECTOR: Final[Mapping[str, str]] = {workload_label("data-processing"): "true"}
RAY_DASHBOARD_PORT: Final = 8265
RAY_METRICS_PORT: Final = 8080
RAY_GCS_PORT: Final = 6379
RAY_CLIENT_PORT: Final = 10001
# One time-sliced GPU per worker: the device plugin fails requests for more than one shared GPU.
GPUS_PER_WORKER: Final = 1
WORKER_CPU_MILLICORES: Final = 8000
WORKER_MEMORY_MIB: Final = 64 * 1024
SHM_SIZE: Final = "16Gi"


@dataclass(frozen=True)
class GpuPlacement:
    """Define where GPU workers go: node labels to select and the pool taints to tolerate.

    Args:
        pool: the pool's name (for labels and messages).
        node_selector: node labels the workers select.
        tolerations: tolerations of the pool's taints.
    """

    pool: str
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, str], ...]


def find_gpu_pool(
    pools: Sequence[NodePoolConfig], *, taint_value: str, workload_type: str = "training"
) -> NodePoolConfig | None:
    """Return the pool serving ``workload_type`` whose ``gpu`` taint has ``taint_value``, or None.

    Args:
        workload_type: the workload type the pool must serve. Defaults to ``training``.
    """
    for pool in pools:
        if workload_type in pool.workload_types and any(t.key == "gpu" and t.value == taint_value for t in pool.taints):
            return pool
    return None


def gpu_placement(pool: NodePoolConfig, *, workload_type: str = "training", spot_allowed: bool = True) -> GpuPlacement:
    """Return the placement of ``workload_type`` workers on ``pool``: its workload label and its taints.

    Args:
        workload_type: the workload label to select. Defaults to ``training``.
        spot_allowed: let the workers land on spot nodes. Defaults to True; when False they select on-demand.
    """
    if workload_type not in pool.workload_types:
        raise ValueError(
            f"pool {pool.name} does not serve {workload_type} (it serves {', '.join(pool.workload_types)})"
        )
    selector = {workload_label(workload_type): "true"}
    if not spot_allowed:
        if "on-demand" not in pool.capacity_types:
            raise ValueError(f"pool {pool.name} has no on-demand capacity and spot is not allowed for training")
        selector["karpenter.sh/capacity-type"] = "on-demand"
    tolerations = tuple({"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} for t in pool.taints)
    return GpuPlacement(pool=pool.name, node_selector=selector, tolerations=tolerations)


def with_wandb(pod_template: Mapping[str, Any], *, secret_name: str) -> dict[str, Any]:
    """Return a copy of ``pod_template`` opted in to Weights & Biases.

    The pod gets the ``ml-platform/wandb: "true"`` label (so the opt-in is visible and selectable) and every
    container reads the W&B API key Secret through ``envFrom`` (the Secret holds ``WANDB_API_KEY``).
    """
    template = copy.deepcopy(dict(pod_template))
    metadata = template.setdefault("metadata", {})
    metadata.setdefault("labels", {})[WANDB_LABEL] = "true"
    containers = template.get("spec", {}).get("containers", [])
    if not containers:
        raise ValueError("pod template has no containers to give the W&B API key to")
    for container in containers:
        env_from = container.setdefault("envFrom", [])
        if not any(e.get("secretRef", {}).get("name") == secret_name for e in env_from):
            env_from.append({"secretRef": {"name": secret_name}})
    return template


@dataclass(frozen=True)
class JobSettings:
    """Define what every training job of a stage shares.

    Args:
        region: the stage's region.
        datasets_bucket: the datasets bucket's name.
        models_bucket: the models bucket's name.
        pytorch_image: the PyTorch image of the TrainJob example.
        ray_image: the Ray image of the RayJobs.
        ray_version: the Ray version inside ``ray_image``.
        data_sync_image: the AWS CLI image that stages data sets.
        termination_grace_seconds: time a worker gets to write a checkpoint after SIGTERM.
        checkpoint_interval_minutes: how often training writes a checkpoint.
        workers: GPU workers of the examples and the pipeline.
        promotion_threshold: the validation score a model needs to be registered and promoted.
        mlflow_tracking_uri: MLflow's in-cluster URL. Defaults to the mlops release's Service.
        wandb_secret: the W&B API key Secret opted-in pods read. Defaults to none (W&B off).
    """

    region: str
    datasets_bucket: str
    models_bucket: str
    pytorch_image: str
    ray_image: str
    ray_version: str
    data_sync_image: str
    termination_grace_seconds: int
    checkpoint_interval_minutes: int
    workers: int
    promotion_threshold: float
    mlflow_tracking_uri: str = MLFLOW_TRACKING_URI
    wandb_secret: str | None = None


def _volumes() -> list[dict[str, Any]]:
    return [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": CHECKPOINTS_CLAIM}},
        {"name": "datasets", "persistentVolumeClaim": {"claimName": DATASETS_CLAIM}},
        # NCCL and data loaders exchange tensors through /dev/shm; the 64Mi default is far too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
    ]


def _mounts(*, datasets_read_only: bool = True, scripts: bool = False) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "checkpoints", "mountPath": CHECKPOINTS_MOUNT},
        {"name": "datasets", "mountPath": DATASETS_MOUNT, "readOnly": datasets_read_only},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if scripts:
        mounts.append({"name": "scripts", "mountPath": SCRIPTS_MOUNT, "readOnly": True})
    return mounts


def _job_env(settings: JobSettings) -> list[dict[str, Any]]:
    return [
        *aws_env(settings.region),
        {"name": "MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri},
        {"name": "DATA_DIR", "value": f"{DATASETS_MOUNT}/processed"},
        {"name": "CHECKPOINT_ROOT", "value": CHECKPOINTS_MOUNT},
        {"name": "CHECKPOINT_INTERVAL_MINUTES", "value": str(settings.checkpoint_interval_minutes)},
    ]


def _gpu_pod(
    settings: JobSettings,
    placement: GpuPlacement,
    *,
    service_account: str,
    container: Mapping[str, Any],
    labels: Mapping[str, str],
    restart_policy: str | None = None,
    extra_volumes: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "priorityClassName": TRAINING_PRIORITY_CLASS,
        # SIGTERM arrives with the drain that the spot interruption notice starts; this is the time to checkpoint.
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": pod_security_context(),
        "nodeSelector": dict(placement.node_selector),
        "tolerations": [dict(t) for t in placement.tolerations],
        "containers": [dict(container)],
        "volumes": [*_volumes(), *(dict(v) for v in extra_volumes)],
    }
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    template = {"metadata": {"labels": {**PART_OF, **labels}, "annotations": dict(SKIP_MESH)}, "spec": spec}
    return with_wandb(template, secret_name=settings.wandb_secret) if settings.wandb_secret else template


def torch_runtime(settings: JobSettings, placement: GpuPlacement, *, name: str = TORCH_RUNTIME) -> dict[str, Any]:
    """Return the ``TrainingRuntime`` of PyTorch DDP jobs on ``placement`` (a TrainJob picks it by name).

    Two steps (JobSet replicated jobs): ``dataset-initializer`` syncs ``s3://<datasets>/processed/`` into the
    EFS datasets volume, then ``node`` runs torchrun on every node with one GPU each, checkpoints on EFS.
    """
    staging_container = {
        "name": "dataset-initializer",
        "image": settings.data_sync_image,
        "command": ["aws"],
        "args": [
            "s3",
            "sync",
            f"s3://{settings.datasets_bucket}/processed/",
            f"{DATASETS_MOUNT}/processed/",
            "--only-show-errors",
            "--no-progress",
        ],
        "env": aws_env(settings.region),
        "resources": resources(cpu_millicores=2000, memory_mib=4096),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "datasets", "mountPath": DATASETS_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    staging_pod: dict[str, Any] = {
        "metadata": {"labels": {**PART_OF}, "annotations": dict(SKIP_MESH)},
        "spec": {
            "serviceAccountName": TRAINING_SERVICE_ACCOUNT,
            "restartPolicy": "OnFailure",
            "securityContext": pod_security_context(),
            "nodeSelector": dict(STAGING_NODE_SELECTOR),
            "containers": [staging_container],
            "volumes": [
                {"name": "datasets", "persistentVolumeClaim": {"claimName": DATASETS_CLAIM}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
        },
    }
    node_container = {
        "name": "node",
        "image": settings.pytorch_image,
        "env": [
            *_job_env(settings),
            {
                "name": "TRAINJOB_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['jobset.sigs.k8s.io/jobset-name']"}},
            },
        ],
        "resources": resources(
            cpu_millicores=WORKER_CPU_MILLICORES,
            memory_mib=WORKER_MEMORY_MIB,
            extra={"nvidia.com/gpu": GPUS_PER_WORKER},
        ),
        # PyTorch writes caches next to the code; the image root stays writable, the rest is restricted.
        "securityContext": container_security_context(read_only_root=False),
        "volumeMounts": _mounts(),
    }
    node_pod = _gpu_pod(
        settings,
        placement,
        service_account=TRAINING_SERVICE_ACCOUNT,
        container=node_container,
        labels={"ml-platform/gpu-pool": placement.pool},
        restart_policy="Never",
    )
    return {
        "apiVersion": TRAINER_API,
        "kind": "TrainingRuntime",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {
                "spec": {
                    # A lost node (spot) fails its Job; JobSet restarts all of them and torchrun resumes.
                    "failurePolicy": {"maxRestarts": 3},
                    "replicatedJobs": [
                        {
                            "name": "dataset-initializer",
                            "replicas": 1,
                            "template": {
                                "metadata": {
                                    "labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "dataset-initializer"}
                                },
                                "spec": {"template": staging_pod},
                            },
                        },
                        {
                            "name": "node",
                            "dependsOn": [{"name": "dataset-initializer", "status": "Complete"}],
                            "template": {
                                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                                "spec": {"template": node_pod},
                            },
                        },
                    ],
                }
            },
        },
    }


# Resume from the newest complete checkpoint of this run (train.py writes step-<n>/ and then a COMPLETE
# marker in it, and saves one more on SIGTERM); torchrun reads the PET_* variables Trainer v2 injects.
_TORCHRUN_SCRIPT: Final = """set -eu
RUN_DIR="${CHECKPOINT_ROOT}/${TRAINJOB_NAME}"
mkdir -p "${RUN_DIR}"
LATEST="$(ls -1d "${RUN_DIR}"/step-*/COMPLETE 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname)"
echo "resuming from: ${LATEST:-nothing, starting fresh}"
exec torchrun /workspace/train.py \\
  --data-dir "${DATA_DIR}" \\
  --checkpoint-dir "${RUN_DIR}" \\
  --checkpoint-every-minutes "${CHECKPOINT_INTERVAL_MINUTES}" \\
  ${LATEST:+--resume-from "${LATEST}"}
"""


def pytorch_example(
    settings: JobSettings, *, name: str = "pytorch-a100-example", runtime: str = TORCH_RUNTIME
) -> dict[str, Any]:
    """Return the example TrainJob: DDP with torchrun on the A100 time-sliced pool, resuming its checkpoints.

    Args:
        name: the TrainJob's name (also its checkpoint directory). Defaults to ``pytorch-a100-example``.
        runtime: the TrainingRuntime to run on. Defaults to ``torch-a100``.
    """
    return {
        "apiVersion": TRAINER_API,
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {**PART_OF}},
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": runtime},
            "trainer": {
                "image": settings.pytorch_image,
                "command": ["bash", "-c", _TORCHRUN_SCRIPT],
                "numNodes": settings.workers,
                "numProcPerNode": GPUS_PER_WORKER,
                "resourcesPerNode": resources(
                    cpu_millicores=WORKER_CPU_MILLICORES,
                    memory_mib=WORKER_MEMORY_MIB,
                    extra={"nvidia.com/gpu": GPUS_PER_WORKER},
                ),
            },
        },
    }


def _ray_cluster(
    settings: JobSettings,
    placement: GpuPlacement,
    *,
    service_account: str,
    head_env: Sequence[Mapping[str, Any]],
    worker_group: str,
) -> dict[str, Any]:
    scripts_volume = {"name": "scripts", "configMap": {"name": SCRIPTS_CONFIG_MAP}}
    ports = [
        {"name": "gcs-server", "containerPort": RAY_GCS_PORT},
        {"name": "dashboard", "containerPort": RAY_DASHBOARD_PORT},
        {"name": "client", "containerPort": RAY_CLIENT_PORT},
        # Ray's metrics agent: the PodMonitor scrapes ports named "metrics".
        {"name": "metrics", "containerPort": RAY_METRICS_PORT},
    ]
    head_container = {
        "name": "ray-head",
        "image": settings.ray_image,
        "ports": ports,
        "env": [*_job_env(settings), *(dict(e) for e in head_env)],
        "resources": resources(cpu_millicores=2000, memory_mib=8192),
        "securityContext": container_security_context(read_only_root=False),
        "volumeMounts": _mounts(datasets_read_only=False, scripts=True),
    }
    head_pod: dict[str, Any] = {
        "metadata": {"labels": {**PART_OF, **METRICS_LABEL}, "annotations": dict(SKIP_MESH)},
        "spec": {
            "serviceAccountName": service_account,
            "priorityClassName": TRAINING_PRIORITY_CLASS,
            "securityContext": pod_security_context(),
            "nodeSelector": dict(HEAD_NODE_SELECTOR),
            "containers": [head_container],
            "volumes": [*_volumes(), scripts_volume],
        },
    }
    worker_container = {
        "name": "ray-worker",
        "image": settings.ray_image,
        "ports": [{"name": "metrics", "containerPort": RAY_METRICS_PORT}],
        "env": _job_env(settings),
        "resources": resources(
            cpu_millicores=WORKER_CPU_MILLICORES,
            memory_mib=WORKER_MEMORY_MIB,
            extra={"nvidia.com/gpu": GPUS_PER_WORKER},
        ),
        "securityContext": container_security_context(read_only_root=False),
        "volumeMounts": _mounts(),
    }
    worker_pod = _gpu_pod(
        settings,
        placement,
        service_account=service_account,
        container=worker_container,
        labels={**METRICS_LABEL, "ml-platform/gpu-pool": placement.pool},
    )
    if settings.wandb_secret:
        head_pod = with_wandb(head_pod, secret_name=settings.wandb_secret)
    return {
        "rayVersion": settings.ray_version,
        "enableInTreeAutoscaling": False,
        "headGroupSpec": {
            # The head only drives: no tasks on it (num-cpus 0), dashboard for the job submitter.
            "rayStartParams": {
                "dashboard-host": "0.0.0.0",
                "num-cpus": "0",
                "metrics-export-port": str(RAY_METRICS_PORT),
            },
            "template": head_pod,
        },
        "workerGroupSpecs": [
            {
                "groupName": worker_group,
                "replicas": settings.workers,
                "minReplicas": settings.workers,
                "maxReplicas": settings.workers,
                "rayStartParams": {"metrics-export-port": str(RAY_METRICS_PORT)},
                "template": worker_pod,
            }
        ],
    }


def _ray_job(
    settings: JobSettings,
    placement: GpuPlacement,
    *,
    name: str,
    entrypoint: str,
    service_account: str,
    head_env: Sequence[Mapping[str, Any]],
    worker_group: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    submitter: dict[str, Any] = {
        "metadata": {"labels": {**PART_OF}, "annotations": dict(SKIP_MESH)},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "nodeSelector": dict(HEAD_NODE_SELECTOR),
            # KubeRay fills in the `ray job submit` command and the dashboard address.
            "containers": [
                {
                    "name": "ray-job-submitter",
                    "image": settings.ray_image,
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "resources": resources(cpu_millicores=500, memory_mib=1024),
                    "securityContext": container_security_context(read_only_root=False),
                }
            ],
        },
    }
    return {
        "apiVersion": RAY_API,
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {**PART_OF, **labels}},
        "spec": {
            "entrypoint": entrypoint,
            # A retry (after a lost head or node) re-runs the driver, which resumes from the run's checkpoints.
            "backoffLimit": 2,
            "activeDeadlineSeconds": 7 * 24 * 3600,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "submitterPodTemplate": submitter,
            "rayClusterSpec": _ray_cluster(
                settings, placement, service_account=service_account, head_env=head_env, worker_group=worker_group
            ),
        },
    }


def ray_tune_example(
    settings: JobSettings, placement: GpuPlacement, *, name: str = "ray-tune-h100-example"
) -> dict[str, Any]:
    """Return the example RayJob: a Ray Tune search over Ray Train (DDP) trials on ``placement`` (H100).

    Args:
        name: the RayJob's name (also the search's directory, so a resubmission resumes it). Defaults to
            ``ray-tune-h100-example``.
    """
    return _ray_job(
        settings,
        placement,
        name=name,
        entrypoint=f"python {SCRIPTS_MOUNT}/tune.py",
        service_account=TRAINING_SERVICE_ACCOUNT,
        head_env=[
            {"name": "TUNE_RUN", "value": name},
            {"name": "NUM_TRIALS", "value": "16"},
            {"name": "PIPELINE_MODULE", "value": "model.pipeline"},
        ],
        worker_group="gpu",
        labels={},
    )


def pipeline_job(
    settings: JobSettings,
    placement: GpuPlacement,
    *,
    name: str = "training-pipeline",
    model_name: str = "example-model",
) -> dict[str, Any]:
    """Return the pipeline RayJob: stage -> train -> validate -> register -> promote (``pipeline.py``).

    Args:
        name: the RayJob's name, also the run name (a resubmission under it resumes the run). Defaults to
            ``training-pipeline``.
        model_name: the registered model's name. Defaults to ``example-model``.
    """
    return _ray_job(
        settings,
        placement,
        name=name,
        entrypoint=f"python {SCRIPTS_MOUNT}/pipeline.py",
        service_account=PIPELINE_SERVICE_ACCOUNT,
        head_env=[
            {"name": "PIPELINE_RUN", "value": name},
            {"name": "PIPELINE_MODULE", "value": "model.pipeline"},
            {"name": "MODEL_NAME", "value": model_name},
            {"name": "NUM_WORKERS", "value": str(settings.workers)},
            {"name": "DATASETS_BUCKET", "value": settings.datasets_bucket},
            {"name": "MODELS_BUCKET", "value": settings.models_bucket},
            {"name": "PROMOTION_THRESHOLD", "value": str(settings.promotion_threshold)},
        ],
        worker_group="gpu",
        labels={"ml-platform/pipeline": name},
    )


PIPELINE_SCRIPT: Final = '''"""Training pipeline in one Ray job: stage -> train -> validate -> register -> promote.

PIPELINE_MODULE (from the image) provides train_loop_per_worker(config), a Ray Train loop that reports
checkpoints, and evaluate(checkpoint_dir, data_dir) -> float, the validation score (higher is better).
"""

import importlib
import os
import time
from pathlib import Path

import boto3
import mlflow
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.metrics import Gauge

ENV = os.environ
RUN = ENV["PIPELINE_RUN"]
MODEL = ENV["MODEL_NAME"]
DATA_DIR = Path(ENV["DATA_DIR"])
THRESHOLD = float(ENV["PROMOTION_THRESHOLD"])


def stage(s3):
    """Copy s3://<datasets>/processed/ to the EFS datasets volume, skipping files already there."""
    bucket, prefix = ENV["DATASETS_BUCKET"], "processed/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = DATA_DIR / item["Key"][len(prefix):]
            if item["Key"].endswith("/") or (target.exists() and target.stat().st_size == item["Size"]):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))


def train(module):
    """Train with Ray Train (PyTorch DDP); an interrupted run resumes from its latest checkpoint."""
    path = f"{ENV['CHECKPOINT_ROOT']}/{RUN}"
    if TorchTrainer.can_restore(path):
        return TorchTrainer.restore(path, train_loop_per_worker=module.train_loop_per_worker).fit()
    config = {"data_dir": str(DATA_DIR), "checkpoint_interval_minutes": int(ENV["CHECKPOINT_INTERVAL_MINUTES"])}
    trainer = TorchTrainer(
        module.train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=int(ENV["NUM_WORKERS"]), use_gpu=True),
        run_config=RunConfig(
            name=RUN,
            storage_path=ENV["CHECKPOINT_ROOT"],
            checkpoint_config=CheckpointConfig(num_to_keep=3),
            failure_config=FailureConfig(max_failures=3),
        ),
    )
    return trainer.fit()


def promote(s3, checkpoint_dir, version):
    """Copy the registered model to s3://<models>/production/<model>/<version>/, where serving reads it."""
    root = Path(checkpoint_dir)
    for path in root.rglob("*"):
        if path.is_file():
            key = f"production/{MODEL}/{version}/{path.relative_to(root).as_posix()}"
            s3.upload_file(str(path), ENV["MODELS_BUCKET"], key)


def main():
    module = importlib.import_module(ENV["PIPELINE_MODULE"])
    s3 = boto3.client("s3")
    stage(s3)
    result = train(module)
    if result.checkpoint is None:
        raise SystemExit("training reported no checkpoint: nothing to validate")
    with result.checkpoint.as_directory() as checkpoint_dir:
        score = float(module.evaluate(checkpoint_dir, str(DATA_DIR)))
        passed = score >= THRESHOLD
        # Exported by Ray's metrics agent on the head's "metrics" port; the PodMonitor scrapes it.
        gauge = Gauge("validation_score", description="validation score of a pipeline run", tag_keys=("model", "run"))
        gauge.set(score, tags={"model": MODEL, "run": RUN})
        mlflow.set_experiment(MODEL)
        with mlflow.start_run(run_name=RUN) as run:
            mlflow.log_metric("validation_score", score)
            mlflow.log_param("promotion_threshold", THRESHOLD)
            mlflow.set_tag("validation", "passed" if passed else "failed")
            if passed:
                mlflow.log_artifacts(checkpoint_dir, artifact_path="model")
                version = mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL).version
                promote(s3, checkpoint_dir, version)
                print(f"registered {MODEL} version {version} and promoted it to production/")
            else:
                print(f"validation score {score:.4f} is below {THRESHOLD}: not registered, not promoted")
    # No Pushgateway: keep the cluster up for two scrape intervals so Prometheus records the score.
    time.sleep(int(ENV.get("METRICS_GRACE_SECONDS", "90")))


if __name__ == "__main__":
    main()
'''

TUNE_SCRIPT: Final = '''"""Hyperparameter search: Ray Tune (ASHA) over Ray Train trials; a rerun resumes the search."""

import importlib
import os

from ray import tune
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.schedulers import ASHAScheduler

ENV = os.environ


def main():
    module = importlib.import_module(ENV["PIPELINE_MODULE"])
    path = f"{ENV['CHECKPOINT_ROOT']}/{ENV['TUNE_RUN']}"
    trainer = TorchTrainer(module.train_loop_per_worker, scaling_config=ScalingConfig(num_workers=1, use_gpu=True))
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainer, resume_errored=True)
    else:
        space = {
            "lr": tune.loguniform(1e-5, 1e-2),
            "batch_size": tune.choice([32, 64, 128]),
            "data_dir": ENV["DATA_DIR"],
        }
        tuner = tune.Tuner(
            trainer,
            param_space={"train_loop_config": space},
            tune_config=tune.TuneConfig(
                metric="loss", mode="min", num_samples=int(ENV["NUM_TRIALS"]), scheduler=ASHAScheduler()
            ),
            run_config=RunConfig(
                name=ENV["TUNE_RUN"], storage_path=ENV["CHECKPOINT_ROOT"], failure_config=FailureConfig(max_failures=3)
            ),
        )
    best = tuner.fit().get_best_result()
    print("best config:", best.config, "metrics:", best.metrics)


if __name__ == "__main__":
    main()
'''


def efs_persistent_volume(
    *, name: str, file_system_id: str, access_point_id: str, claim: str, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """Return a static PersistentVolume of one EFS access point, pre-bound to ``namespace/claim``.

    Args:
        namespace: the claim's namespace. Defaults to ``training``.
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {**PART_OF}},
        "spec": {
            "capacity": {"storage": EFS_NOMINAL_CAPACITY},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteMany"],
            # The data outlives the claim: deleting a claim must never delete checkpoints.
            "persistentVolumeReclaimPolicy": "Retain",
            # Static binding: no storage class, so no provisioner creates a second volume.
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": claim},
            # The driver mounts an access point with TLS (the file system policy refuses anything else).
            "csi": {"driver": EFS_CSI_DRIVER, "volumeHandle": f"{file_system_id}::{access_point_id}"},
        },
    }


def efs_claim(*, name: str, volume: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """Return the PersistentVolumeClaim bound to the static EFS volume ``volume``.

    Args:
        namespace: the claim's namespace. Defaults to ``training``.
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": {**PART_OF}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": EFS_NOMINAL_CAPACITY}},
        },
    }


class TrainingChart(cdk8s.Chart):
    """Define the training namespace's volumes, service accounts, runtime, templates, metrics and allows.

    Args:
        settings: what the jobs share (images, buckets, grace period, workers).
        file_system_id: the shared EFS file system.
        checkpoints_access_point_id: its ``Checkpoints`` access point.
        datasets_access_point_id: its ``Datasets`` access point.
        a100: where A100 time-sliced workers go (the runtime, the TrainJob example and the pipeline).
        h100: where H100 workers go (the Ray Tune example). Defaults to none: no H100 pool, no example.
        wandb_remote_secret: the Secrets Manager secret (ARN or name) holding the W&B API key as plain text.
            Defaults to none; required when ``settings.wandb_secret`` is set.
        pod_monitor: create the PodMonitor that scrapes Ray metrics (needs the Prometheus Operator CRDs).
            Defaults to True.
        monitor_labels: labels Prometheus selects PodMonitors by. Defaults to ``MONITOR_LABELS``.
        kuberay_namespace: the KubeRay operator's namespace, let in to Ray dashboards. Defaults to
            ``kuberay-system``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        settings: JobSettings,
        file_system_id: str,
        checkpoints_access_point_id: str,
        datasets_access_point_id: str,
        a100: GpuPlacement,
        h100: GpuPlacement | None = None,
        wandb_remote_secret: str | None = None,
        pod_monitor: bool = True,
        monitor_labels: Mapping[str, str] = MONITOR_LABELS,
        kuberay_namespace: str = KUBERAY_NAMESPACE,
    ) -> None:
        if settings.wandb_secret and not wandb_remote_secret:
            raise ValueError("settings.wandb_secret is set but wandb_remote_secret is not: the key has no source")
        if settings.termination_grace_seconds < 30:
            raise ValueError(
                f"termination_grace_seconds {settings.termination_grace_seconds} leaves no time to write a checkpoint"
            )
        super().__init__(scope, construct_id)
        for claim, access_point in (
            (CHECKPOINTS_CLAIM, checkpoints_access_point_id),
            (DATASETS_CLAIM, datasets_access_point_id),
        ):
            volume = f"{NAMESPACE}-{claim}"
            self._add(
                f"{claim}-volume",
                efs_persistent_volume(
                    name=volume, file_system_id=file_system_id, access_point_id=access_point, claim=claim
                ),
            )
            self._add(f"{claim}-claim", efs_claim(name=claim, volume=volume))
        for account in (TRAINING_SERVICE_ACCOUNT, PIPELINE_SERVICE_ACCOUNT):
            api_object(
                self,
                f"{account}-service-account",
                api_version="v1",
                kind="ServiceAccount",
                name=account,
                namespace=NAMESPACE,
                # Jobs never call the Kubernetes API; Pod Identity projects its own token.
                body={"automountServiceAccountToken": False},
            )
        self._add("torch-runtime", torch_runtime(settings, a100))
        templates = {"pytorch-a100.json": pytorch_example(settings), "pipeline.json": pipeline_job(settings, a100)}
        if h100 is not None:
            templates["ray-tune-h100.json"] = ray_tune_example(settings, h100)
        api_object(
            self,
            "job-templates",
            api_version="v1",
            kind="ConfigMap",
            name=TEMPLATES_CONFIG_MAP,
            namespace=NAMESPACE,
            labels={**PART_OF},
            annotations={
                "ml-platform/usage": f"kubectl -n {NAMESPACE} get cm {TEMPLATES_CONFIG_MAP} -o "
                "jsonpath='{.data.pipeline\\.json}' | kubectl create -f -"
            },
            body={"data": {key: json.dumps(value, indent=2) for key, value in templates.items()}},
        )
        api_object(
            self,
            "scripts",
            api_version="v1",
            kind="ConfigMap",
            name=SCRIPTS_CONFIG_MAP,
            namespace=NAMESPACE,
            labels={**PART_OF},
            body={"data": {"pipeline.py": PIPELINE_SCRIPT, "tune.py": TUNE_SCRIPT}},
        )
        if settings.wandb_secret and wandb_remote_secret:
            external_secret(
                self,
                "wandb-api-key",
                name=settings.wandb_secret,
                namespace=NAMESPACE,
                secret_arn_or_name=wandb_remote_secret,
                keys={"WANDB_API_KEY": None},
            )
        if pod_monitor:
            api_object(
                self,
                "ray-pod-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                name="training-ray-metrics",
                namespace=NAMESPACE,
                labels=dict(monitor_labels),
                body={
                    "spec": {
                        "selector": {"matchLabels": dict(METRICS_LABEL)},
                        "podMetricsEndpoints": [{"port": "metrics", "interval": "30s"}],
                    }
                },
            )
        self._network_policies(kuberay_namespace)

    def _add(self, construct_id: str, obj: Mapping[str, Any]) -> None:
        add_object(self, construct_id, obj)

    def _network_policies(self, kuberay_namespace: str) -> None:
        allows = (
            NetworkAllow(
                name="mlflow-egress",
                direction="Egress",
                peers=(Peer(namespaces=(MLOPS_NAMESPACE,), pod_labels=MLFLOW_POD_LABELS),),
                ports=(PolicyPort(MLFLOW_CONTAINER_PORT),),
                reason="training pods are off the mesh (NCCL) and log runs, metrics and models to MLflow directly",
            ),
            NetworkAllow(
                name="ray-dashboard-from-operator",
                direction="Ingress",
                peers=(Peer(namespaces=(kuberay_namespace,)),),
                ports=(PolicyPort(RAY_DASHBOARD_PORT),),
                pod_labels={"ray.io/node-type": "head"},
                reason="the KubeRay operator polls the Ray head's dashboard for the status of RayJobs",
            ),
        )
        for allow in allows:
            network_policy(self, f"allow-{allow.name}", namespace=NAMESPACE, allow=allow)
