"""Building blocks every chart shares: one way to write an object, the restricted security contexts, AWS env.

Plain cdk8s, no aws_cdk import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import cdk8s
import constructs

# The platform images' user, and the owner of the EFS access points.
RUN_AS_USER: Final = 1000
# Pod annotations of meshed workloads: Linkerd injection, with the proxy as a native sidecar so that init
# containers (model and data downloads) have network and Jobs finish.
MESH_POD_ANNOTATIONS: Final[Mapping[str, str]] = {
    "linkerd.io/inject": "enabled",
    "config.alpha.linkerd.io/proxy-enable-native-sidecar": "true",
}


def api_object(
    scope: constructs.Construct,
    construct_id: str,
    *,
    api_version: str,
    kind: str,
    name: str,
    body: Mapping[str, Any] | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> cdk8s.ApiObject:
    """Return one Kubernetes object whose top-level fields besides metadata come from ``body``.

    Args:
        body: the object's other top-level fields (spec, data, rules, ...). Defaults to none.
        namespace: the object's namespace. Defaults to none (cluster-scoped objects).
        labels: metadata labels. Defaults to none.
        annotations: metadata annotations. Defaults to none.
    """
    obj = cdk8s.ApiObject(
        scope,
        construct_id,
        api_version=api_version,
        kind=kind,
        metadata=cdk8s.ApiObjectMetadata(
            name=name,
            namespace=namespace,
            labels=dict(labels) if labels else None,
            annotations=dict(annotations) if annotations else None,
        ),
    )
    # The Python ApiObject takes no arbitrary props, so the body goes in as patches on the synthesized object.
    for key, value in (body or {}).items():
        obj.add_json_patch(cdk8s.JsonPatch.add(f"/{key}", value))
    return obj


def pod_security_context(uid: int = RUN_AS_USER) -> dict[str, Any]:
    """Return the pod securityContext of the Pod Security Standard ``restricted``, running as ``uid``.

    Args:
        uid: user, group and fsGroup of the pod. Defaults to RUN_AS_USER.
    """
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(*, read_only_root: bool | None = True) -> dict[str, Any]:
    """Return the container securityContext of the Pod Security Standard ``restricted``.

    Args:
        read_only_root: mount the image's file system read-only (writable paths are emptyDir volumes).
            Defaults to True; None leaves the field out (the image's file system stays writable).
    """
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }
    if read_only_root is not None:
        context["readOnlyRootFilesystem"] = read_only_root
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def aws_env(region: str) -> list[dict[str, str]]:
    """Return the AWS SDK environment: the region and a writable HOME (for the CLI's cache)."""
    return [
        {"name": "AWS_REGION", "value": region},
        {"name": "AWS_DEFAULT_REGION", "value": region},
        {"name": "HOME", "value": "/tmp"},
    ]
