"""Define KServe model serving: a namespaced ServingRuntime and an InferenceService predictor.

KServe runs in Standard mode (the mode KServe called RawDeployment before v0.15: plain Deployments,
Services and HPAs, no Knative), so an InferenceService becomes a Deployment in the inference namespace.
The platform brings its own ``ServingRuntime`` instead of installing KServe's runtime catalogue: one
pinned image per model format actually served, with a ``restricted`` securityContext (the namespace
enforces Pod Security ``restricted``).

KServe's storage initializer (an init container it injects) copies ``storageUri`` from the models bucket
with the predictor's service account, whose EKS Pod Identity role reads ``production/*`` only. The pod
runs the Linkerd proxy as a native sidecar so the initializer has network (see ``k8s_charts/inference.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

import cdk8s
import constructs

from k8s_charts.inference import (
    CLIENT_NAMESPACE,
    Placement,
    api_object,
    client_ingress,
    model_uri,
    resources,
)
from k8s_charts.inference import service_account as create_service_account
from k8s_charts.objects import (
    MESH_POD_ANNOTATIONS,
    container_security_context,
    pod_security_context,
)

# KServe's own ServingRuntime images per model format (kserve-runtime-configs v0.20.0 names them).
RUNTIME_IMAGES: Final = {"sklearn": "kserve/sklearnserver", "xgboost": "kserve/xgbserver"}
DEPLOYMENT_MODE: Final = "Standard"
PREDICTOR_PORT: Final = 8080


class KServeModelChart(cdk8s.Chart):
    """Define one InferenceService with the ServingRuntime of its model format.

    Args:
        name: the InferenceService's name.
        model_format: ``sklearn`` or ``xgboost``.
        runtime_image_tag: exact tag of the runtime image (``v0.20.0``).
        models_bucket_name: the stage's models bucket (may be a deploy-time token).
        storage_path: the model's key under ``production/``.
        placement: node selector, tolerations and priority of the predictor pods.
        min_replicas: fewest predictor pods. Defaults to 1.
        max_replicas: most predictor pods (KServe's HPA). Defaults to 3.
        cpu: CPU request per pod. Defaults to 1.
        memory_gib: memory request and limit per pod. Defaults to 2.
        service_account: the predictor's service account (Pod Identity reads the models). Defaults to
            ``kserve-models``.
        client_namespaces: namespaces whose pods may call the predictor. Defaults to ``agentic``.
        service_mesh: inject the Linkerd proxy as a native sidecar. Defaults to True.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        name: str,
        model_format: Literal["sklearn", "xgboost"],
        runtime_image_tag: str,
        models_bucket_name: str,
        storage_path: str,
        placement: Placement,
        min_replicas: int = 1,
        max_replicas: int = 3,
        cpu: int = 1,
        memory_gib: int = 2,
        service_account: str = "kserve-models",
        client_namespaces: Sequence[str] = (CLIENT_NAMESPACE,),
        service_mesh: bool = True,
    ) -> None:
        if model_format not in RUNTIME_IMAGES:
            raise ValueError(f"model_format {model_format!r} has no runtime: use one of {', '.join(RUNTIME_IMAGES)}")
        if not 1 <= min_replicas <= max_replicas:
            raise ValueError(
                f"replicas must satisfy 1 <= min_replicas ({min_replicas}) <= max_replicas ({max_replicas})"
            )
        super().__init__(scope, construct_id)
        runtime = f"kserve-{model_format}server"
        create_service_account(self, "service-account", name=service_account)
        api_object(
            self,
            "serving-runtime",
            api_version="serving.kserve.io/v1alpha1",
            kind="ServingRuntime",
            name=runtime,
            body={
                "spec": {
                    "supportedModelFormats": [
                        {"name": model_format, "version": "1", "autoSelect": True, "priority": 1}
                    ],
                    "protocolVersions": ["v1", "v2"],
                    "containers": [
                        {
                            "name": "kserve-container",
                            "image": f"{RUNTIME_IMAGES[model_format]}:{runtime_image_tag}",
                            "args": [
                                "--model_name={{.Name}}",
                                "--model_dir=/mnt/models",
                                f"--http_port={PREDICTOR_PORT}",
                            ],
                            "resources": resources(cpu=cpu, memory=f"{memory_gib}Gi"),
                            "securityContext": container_security_context(read_only_root=None),
                        }
                    ],
                }
            },
        )
        predictor: dict[str, Any] = {
            "serviceAccountName": service_account,
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "securityContext": pod_security_context(),
            "model": {
                "modelFormat": {"name": model_format},
                "runtime": runtime,
                "storageUri": model_uri(models_bucket_name, storage_path),
                "resources": resources(cpu=cpu, memory=f"{memory_gib}Gi"),
                "securityContext": container_security_context(read_only_root=None),
            },
        }
        if service_mesh:
            predictor["annotations"] = dict(MESH_POD_ANNOTATIONS)
        placement.apply(predictor)
        api_object(
            self,
            "inference-service",
            api_version="serving.kserve.io/v1beta1",
            kind="InferenceService",
            name=name,
            annotations={"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE},
            body={"spec": {"predictor": predictor}},
        )
        client_ingress(
            self,
            "allow-clients",
            name=f"{name}-clients",
            pod_labels={"serving.kserve.io/inferenceservice": name},
            ports=(PREDICTOR_PORT,),
            namespaces=client_namespaces,
            reason=f"agents call the {name} predictor (KServe v1/v2 protocol)",
        )
