"""Define batch inference: one Kubernetes Job per SQS message, started from zero by a KEDA ScaledJob.

A producer puts the key of an OpenAI batch-format JSONL file (under the datasets bucket's
``processed/batch-requests/``) on the queue. KEDA polls the queue's length through the operator's own
EKS Pod Identity role (``TriggerAuthentication`` with the ``aws`` pod identity provider, owner ``keda``)
and starts one Job per visible message, up to ``max_parallel_jobs``; with an empty queue nothing runs.

Each Job's pod runs three steps in order; the first two are init containers, which Kubernetes runs one
after another, so no step needs a scheduler of its own:

1. ``fetch`` (AWS CLI): receive one message (it stays invisible for the queue's visibility timeout), copy
   the input file and the model's weights into the pod; an empty queue (another Job took the message)
   ends the pod successfully.
2. ``infer`` (vLLM, on the GPU): ``vllm.entrypoints.openai.run_batch`` over the input, offline.
3. ``publish`` (AWS CLI): write the results to ``processed/batch-results/<input name>.jsonl`` and delete
   the message. A failure leaves the message on the queue; after ``max_receive_count`` receipts it moves to
   the dead-letter queue.

The Job's deadline equals the visibility timeout, so a message never becomes visible (and is taken by a
second Job) while the first still works on it. Job pods are not meshed: they serve nothing and talk only
to AWS APIs (HTTPS, outside the mesh).
"""

from __future__ import annotations

from typing import Any, Final

import cdk8s
import constructs

from k8s_charts.inference import (
    AWS_CLI_IMAGE,
    MODELS_MOUNT,
    Placement,
    api_object,
    empty_dir,
    model_dir,
    model_uri,
    resources,
)
from k8s_charts.inference import service_account as create_service_account
from k8s_charts.objects import (
    aws_env,
    container_security_context,
    pod_security_context,
)
from k8s_charts.vllm import IMAGE as VLLM_IMAGE

REQUESTS_PREFIX: Final = "processed/batch-requests/"
RESULTS_PREFIX: Final = "processed/batch-results/"
TRIGGER_AUTHENTICATION: Final = "keda-aws-operator"
WORK: Final = "/work"

_FETCH = f"""set -eu
out=$(aws sqs receive-message --queue-url "$QUEUE_URL" --max-number-of-messages 1 --wait-time-seconds 20 \\
  --query 'Messages[0].[ReceiptHandle,Body]' --output text)
if [ -z "$out" ] || [ "$out" = "None" ]; then
  echo "queue empty: another job took the message"; touch {WORK}/skip; exit 0
fi
receipt=$(printf '%s' "$out" | cut -f1)
key=$(printf '%s' "$out" | cut -f2)
case "$key" in
  {REQUESTS_PREFIX}*.jsonl) ;;
  *) echo "refusing message: $key is not a .jsonl key under {REQUESTS_PREFIX}"; exit 1 ;;
esac
printf '%s' "$receipt" > {WORK}/receipt
printf '%s' "$key" > {WORK}/key
aws s3 cp "s3://$DATASETS_BUCKET/$key" {WORK}/input.jsonl --only-show-errors
aws s3 sync "$MODEL_URI" "$MODEL_DIR" --only-show-errors --no-progress
"""
_INFER = f"""set -eu
if [ -f {WORK}/skip ]; then exit 0; fi
exec python3 -m vllm.entrypoints.openai.run_batch -i {WORK}/input.jsonl -o {WORK}/output.jsonl \\
  --model "$MODEL_DIR" --served-model-name "$SERVED_MODEL_NAME" --max-model-len "$MAX_MODEL_LEN" \\
  --gpu-memory-utilization "$GPU_MEMORY_UTILIZATION"
"""
_PUBLISH = f"""set -eu
if [ -f {WORK}/skip ]; then exit 0; fi
name=$(basename "$(cat {WORK}/key)" .jsonl)
aws s3 cp {WORK}/output.jsonl "s3://$DATASETS_BUCKET/{RESULTS_PREFIX}$name.jsonl" --only-show-errors
aws sqs delete-message --queue-url "$QUEUE_URL" --receipt-handle "$(cat {WORK}/receipt)"
"""


class BatchInferenceChart(cdk8s.Chart):
    """Define the batch inference ScaledJob, its service account and KEDA's AWS authentication.

    Args:
        queue_url: the requests queue (may be a deploy-time token).
        region: the queue's and buckets' region.
        image_tag: exact ``vllm/vllm-openai`` tag of the batch runner.
        models_bucket_name: the stage's models bucket.
        model_path: the model's key under ``production/``.
        datasets_bucket_name: the bucket holding requests and results.
        placement: node selector, tolerations, priority and the GPU resource (the batch-inference pool).
        visibility_timeout_minutes: the queue's visibility timeout, the Jobs' deadline. Defaults to 120.
        max_parallel_jobs: most Jobs at once. Defaults to 4.
        cpu: CPU request of the inference step. Defaults to 8.
        memory_gib: memory request and limit of the inference step. Defaults to 64.
        model_storage_gib: node disk for the weights. Defaults to 40.
        max_model_len: the longest context. Defaults to 8192.
        gpu_memory_utilization: share of the GPU's memory vLLM may take; keep it low on a time-sliced GPU,
            whose memory the other replicas share. Defaults to 0.9.
        name: name of the ScaledJob and its Jobs. Defaults to ``batch-inference``.
        service_account: the Jobs' service account (its Pod Identity role reads the queue, the model and the
            requests and writes the results). Defaults to ``batch-inference``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        queue_url: str,
        region: str,
        image_tag: str,
        models_bucket_name: str,
        model_path: str,
        datasets_bucket_name: str,
        placement: Placement,
        visibility_timeout_minutes: int = 120,
        max_parallel_jobs: int = 4,
        cpu: int = 8,
        memory_gib: int = 64,
        model_storage_gib: int = 40,
        max_model_len: int = 8192,
        gpu_memory_utilization: float = 0.9,
        name: str = "batch-inference",
        service_account: str = "batch-inference",
    ) -> None:
        if placement.gpu_resource is None:
            raise ValueError("placement has no GPU resource: the batch runner needs a GPU")
        if not 1 <= max_parallel_jobs <= 100:
            raise ValueError(f"max_parallel_jobs {max_parallel_jobs} must lie in 1..100")
        super().__init__(scope, construct_id)
        create_service_account(self, "service-account", name=service_account)
        api_object(
            self,
            "trigger-authentication",
            api_version="keda.sh/v1alpha1",
            kind="TriggerAuthentication",
            name=TRIGGER_AUTHENTICATION,
            # The KEDA operator's own Pod Identity role (GetQueueAttributes on this queue): no keys anywhere.
            body={"spec": {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}},
        )
        target = model_dir(model_path)
        served = model_path.rstrip("/").rsplit("/", 1)[-1]
        env = [
            *aws_env(region),
            {"name": "QUEUE_URL", "value": queue_url},
            {"name": "DATASETS_BUCKET", "value": datasets_bucket_name},
            {"name": "MODEL_URI", "value": model_uri(models_bucket_name, model_path)},
            {"name": "MODEL_DIR", "value": target},
        ]
        mounts = [
            {"name": "work", "mountPath": WORK},
            {"name": "models", "mountPath": MODELS_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ]

        def cli_step(step: str, script: str) -> dict[str, Any]:
            return {
                "name": step,
                "image": AWS_CLI_IMAGE,
                "command": ["/bin/sh", "-c", script],
                "env": env,
                "resources": resources(cpu=1, memory="2Gi"),
                "securityContext": container_security_context(read_only_root=None),
                "volumeMounts": mounts,
            }

        infer = {
            "name": "infer",
            "image": f"{VLLM_IMAGE}:{image_tag}",
            "command": ["/bin/sh", "-c", _INFER],
            "env": [
                {"name": "MODEL_DIR", "value": target},
                {"name": "SERVED_MODEL_NAME", "value": served},
                {"name": "MAX_MODEL_LEN", "value": str(max_model_len)},
                {"name": "GPU_MEMORY_UTILIZATION", "value": f"{gpu_memory_utilization:g}"},
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
                {"name": "HOME", "value": "/tmp"},
                {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            ],
            "resources": resources(cpu=cpu, memory=f"{memory_gib}Gi", gpu=placement, storage_gib=model_storage_gib),
            "securityContext": container_security_context(read_only_root=None),
            "volumeMounts": [*mounts, {"name": "shm", "mountPath": "/dev/shm"}],
        }
        pod: dict[str, Any] = {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "initContainers": [cli_step("fetch", _FETCH), infer],
            "containers": [cli_step("publish", _PUBLISH)],
            "volumes": [
                empty_dir("work", size_gib=5),
                empty_dir("models", size_gib=model_storage_gib),
                empty_dir("shm", size_gib=2, memory=True),
                empty_dir("tmp", size_gib=5),
            ],
        }
        placement.apply(pod)
        deadline = visibility_timeout_minutes * 60
        api_object(
            self,
            "scaled-job",
            api_version="keda.sh/v1alpha1",
            kind="ScaledJob",
            name=name,
            body={
                "spec": {
                    "jobTargetRef": {
                        "parallelism": 1,
                        "completions": 1,
                        # Retries come from the queue (redelivery, then the dead-letter queue), not the Job.
                        "backoffLimit": 0,
                        "activeDeadlineSeconds": deadline,
                        "ttlSecondsAfterFinished": 3600,
                        "template": {
                            "metadata": {
                                "labels": {"app": name},
                                "annotations": {"linkerd.io/inject": "disabled"},
                            },
                            "spec": pod,
                        },
                    },
                    "pollingInterval": 30,
                    "minReplicaCount": 0,
                    "maxReplicaCount": max_parallel_jobs,
                    "successfulJobsHistoryLimit": 5,
                    "failedJobsHistoryLimit": 5,
                    # Messages a running Job holds are invisible and not counted (scaleOnInFlight false), so
                    # "accurate" starts one Job per visible message without subtracting the running ones.
                    "scalingStrategy": {"strategy": "accurate"},
                    "triggers": [
                        {
                            "type": "aws-sqs-queue",
                            "authenticationRef": {"name": TRIGGER_AUTHENTICATION},
                            "metadata": {
                                "queueURL": queue_url,
                                "queueLength": "1",
                                "awsRegion": region,
                                "scaleOnInFlight": "false",
                            },
                        }
                    ],
                }
            },
        )
