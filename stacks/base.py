"""The base of every platform stack: fixed availability zones and termination protection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from constructs import Construct


class PlatformStack(cdk.Stack):
    """Define a stack whose availability zones come from the stage config, never from a lookup.

    ``cdk.Stack.availability_zones`` asks the account for its zone list (a context lookup that needs
    credentials) whenever the stack has an explicit environment; overriding it keeps synth offline.

    Args:
        availability_zones: the stage's zones, in order.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, availability_zones: Sequence[str], **kwargs: Any
    ) -> None:
        self._platform_azs = list(availability_zones)
        super().__init__(scope, construct_id, **kwargs)

    @property
    def availability_zones(self) -> list[str]:
        return self._platform_azs
