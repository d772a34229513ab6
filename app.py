#!/usr/bin/env python3
"""The CDK app: the only place that reads context; one PlatformStage per stage config.

``cdk synth`` builds every stage; ``-c stages=dev`` (``make synth STAGE=dev``) builds only those named.
Every stage file is validated first, so a broken file fails before anything is synthesized.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from config.loader import load_stages
from stacks.platform_stage import PlatformStage, stage_construct_id


def build_app(stages: list[str] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app for ``stages`` (all when None), with cdk-nag AwsSolutions on every stack."""
    # cdk.json's feature flags also apply when tests build the app in-process (the CLI passes them itself).
    flags = json.loads((Path(__file__).parent / "cdk.json").read_text())["context"]
    # Stack traces of every construct cost synth time and bloat cdk.out.
    app = cdk.App(context=flags, outdir=outdir, stack_traces=False)
    if stages is None:
        selected = app.node.try_get_context("stages")
        stages = [s for s in str(selected).split(",") if s] if selected else None
    configs = load_stages(stages)
    for config in configs:
        PlatformStage(app, stage_construct_id(config.stage), config=config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
