"""Read the Kubernetes objects and Helm releases a synthesized template deploys (plain Python, no jsii).

A manifest that carries a CDK token (a role name, a queue URL) is an ``Fn::Join`` in the template; each
intrinsic is rendered as a placeholder string, which is what it resolves to at deploy time: a string.
Used by the synth-time scheduling check, the tests and ``make manifests``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

PLACEHOLDER: Final = "deploy-time-value"
MANIFEST_TYPE: Final = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_TYPE: Final = "Custom::AWSCDK-EKS-HelmChart"


def render(value: Any) -> str:
    """Render a template string value: literal strings as they are, intrinsics as placeholders."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(render(p) for p in parts)
    return PLACEHOLDER


def template_objects(template: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (logical ID, object) for every Kubernetes object a template applies."""
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == MANIFEST_TYPE:
            for obj in json.loads(render(resource["Properties"]["Manifest"])):
                yield logical_id, obj


def template_helm_releases(template: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (logical ID, properties with Values parsed) for every Helm release a template installs."""
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == HELM_TYPE:
            props = dict(resource["Properties"])
            props["Values"] = json.loads(render(props["Values"])) if "Values" in props else {}
            yield logical_id, props
