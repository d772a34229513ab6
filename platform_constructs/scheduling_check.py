"""A validation plugin that runs the scheduling consistency check on every synth of a stage.

Registered like cdk-nag (``cdk.Validations.of(stage).add_plugins(...)``): it reads the stage's
synthesized templates, finds every workload the platform applies, and fails synth when one fits no
node pool or its namespace quota, naming the workload, each candidate pool and why it was rejected.
The findings land in cdk.out/validation-report.json next to cdk-nag's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import aws_cdk as cdk
import jsii

from config.model import NamespaceQuota, NodePoolConfig
from config.scheduling import Workload, pool_problems, quota_problems, workloads_from_objects
from platform_constructs.template_manifests import template_objects

RULE = "workload-fits-a-node-pool"


@jsii.implements(cdk.IPolicyValidationPlugin)
class SchedulingCheck:
    """Check every workload of one stage against its node pools, taints, instance sizes and quotas."""

    def __init__(
        self,
        *,
        pools: Sequence[NodePoolConfig],
        quotas: Mapping[str, NamespaceQuota],
        mig_layouts: Mapping[str, Mapping[str, int]],
    ) -> None:
        self._pools = list(pools)
        self._quotas = dict(quotas)
        self._mig_layouts = {k: dict(v) for k, v in mig_layouts.items()}

    @property
    def name(self) -> str:
        return "ml-platform-scheduling"

    @property
    def version(self) -> str:
        return "1.0.0"

    @property
    def rule_ids(self) -> list[str]:
        return [RULE]

    def validate(self, context: cdk.IPolicyValidationContext) -> cdk.PolicyValidationPluginReport:
        violations = []
        for template_path in context.template_paths:
            template = json.loads(Path(template_path).read_text())
            for logical_id, obj in template_objects(template):
                for workload in workloads_from_objects([obj]):
                    problems = self._problems(workload)
                    if problems:
                        violations.append(
                            cdk.PolicyViolation(
                                rule_name=RULE,
                                description=f"workload {workload.label}: " + " | ".join(problems),
                                fix="give the workload a nodeSelector, tolerations and requests that a node pool "
                                "of the stage config can satisfy, within its namespace quota",
                                violating_resources=[
                                    cdk.PolicyViolatingResource(
                                        resource_logical_id=logical_id,
                                        template_path=template_path,
                                        locations=[f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"],
                                    )
                                ],
                            )
                        )
        return cdk.PolicyValidationPluginReport(success=not violations, violations=violations)

    def _problems(self, workload: Workload) -> list[str]:
        rejections = {p.name: pool_problems(workload, p, self._mig_layouts) for p in self._pools}
        problems = []
        if all(rejections.values()):
            problems.append(
                "fits no node pool: " + "; ".join(f"{name}: {', '.join(why)}" for name, why in rejections.items())
            )
        problems += quota_problems(workload, self._quotas.get(workload.namespace))
        return problems
