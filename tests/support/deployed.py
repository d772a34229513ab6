"""What the templates deploy into Kubernetes: manifests and Helm releases, with CloudFormation intrinsics rendered.

A manifest that carries a CDK token (a role name, a queue URL) is an ``Fn::Join`` in the template. For
schema checks each intrinsic is rendered as a placeholder string, which is what it resolves to at deploy
time: a string.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.assembly import CloudAssembly, StackArtifact

PLACEHOLDER = "deploy-time-value"
MANIFEST_TYPE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_TYPE = "Custom::AWSCDK-EKS-HelmChart"


def render(value: Any) -> str:
    """Render a template string value: literal strings as they are, intrinsics as placeholders."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(render(p) for p in parts)
    return PLACEHOLDER


@dataclass(frozen=True)
class DeployedObject:
    stage: str
    stack: str
    logical_id: str
    obj: dict[str, Any]

    @property
    def label(self) -> str:
        name = self.obj.get("metadata", {}).get("name", "?")
        return f"{self.stage}/{self.stack}/{self.logical_id}: {self.obj.get('kind')}/{name}"


@dataclass(frozen=True)
class HelmRelease:
    stage: str
    stack: str
    logical_id: str
    repository: str
    chart: str
    version: str
    namespace: str
    values: dict[str, Any]
    wait: bool
    timeout: str


def _stacks(assembly: CloudAssembly) -> Iterator[StackArtifact]:
    yield from assembly.stacks


def deployed_objects(assembly: CloudAssembly) -> list[DeployedObject]:
    """Return every Kubernetes object the app's templates apply, in every stage."""
    found = []
    for stack in _stacks(assembly):
        for logical_id, resource in stack.resources_of(MANIFEST_TYPE).items():
            for obj in json.loads(render(resource["Properties"]["Manifest"])):
                found.append(DeployedObject(stack.stage, stack.construct_id, logical_id, obj))
    return found


def helm_releases(assembly: CloudAssembly) -> list[HelmRelease]:
    """Return every Helm release the app's templates install, in every stage."""
    found = []
    for stack in _stacks(assembly):
        for logical_id, resource in stack.resources_of(HELM_TYPE).items():
            props = resource["Properties"]
            values = json.loads(render(props["Values"])) if "Values" in props else {}
            found.append(
                HelmRelease(
                    stage=stack.stage,
                    stack=stack.construct_id,
                    logical_id=logical_id,
                    repository=props.get("Repository", ""),
                    chart=props["Chart"],
                    version=props["Version"],
                    namespace=props.get("Namespace", "default"),
                    values=values,
                    wait=str(props.get("Wait", "false")).lower() == "true",
                    timeout=props.get("Timeout", ""),
                )
            )
    return found
