"""What the templates deploy into Kubernetes: manifests and Helm releases, with CloudFormation intrinsics rendered.

A manifest that carries a CDK token (a role name, a queue URL) is an ``Fn::Join`` in the template. For
schema checks each intrinsic is rendered as a placeholder string, which is what it resolves to at deploy
time: a string.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from platform_constructs.template_manifests import PLACEHOLDER, render, template_helm_releases, template_objects
from tests.support.assembly import CloudAssembly, StackArtifact

__all__ = ["PLACEHOLDER", "DeployedObject", "HelmRelease", "deployed_objects", "helm_releases", "render"]


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
        for logical_id, obj in template_objects(stack.template):
            found.append(DeployedObject(stack.stage, stack.construct_id, logical_id, obj))
    return found


def helm_releases(assembly: CloudAssembly) -> list[HelmRelease]:
    """Return every Helm release the app's templates install, in every stage."""
    found = []
    for stack in _stacks(assembly):
        for logical_id, props in template_helm_releases(stack.template):
            values = props["Values"]
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
