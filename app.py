#!/usr/bin/env python3
"""The CDK app: the only place that reads context; one PlatformStage per stage config.

``cdk synth`` builds every stage; ``-c stages=dev`` (``make synth STAGE=dev``) builds only those named.
Every stage file is validated first, so a broken file fails before anything is synthesized.
The pipeline stack (``config/delivery/pipeline.yaml``) deploys those same stage objects; it is built when
every stage it promotes through is built, unless ``-c pipeline=false``.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from config.delivery import PIPELINE_FILE, cdk_cli_version, load_pipeline_config
from config.loader import load_stages
from stacks.platform_stage import PlatformStage, stage_construct_id


def build_app(stages: list[str] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app for ``stages`` (all when None), with cdk-nag AwsSolutions on every stack."""
    # cdk.json's feature flags also apply when tests build the app in-process (the CLI passes them itself).
    flags = json.loads((Path(__file__).parent / "cdk.json").read_text())["context"]
    # Stack traces of every construct cost synth time and bloat cdk.out. CDK's built-in CloudFormation
    # validation is off: `make test` lints every template with cfn-lint (zero errors, a gate), which covers
    # the same rules; the built-in pass cost about 3 s and 350 MB on every synth (measured, all stages).
    app = cdk.App(context=flags, outdir=outdir, stack_traces=False, builtin_cloud_formation_validation=False)
    if stages is None:
        selected = app.node.try_get_context("stages")
        stages = [s for s in str(selected).split(",") if s] if selected else None
    configs = load_stages(stages)
    built = {config.stage: PlatformStage(app, stage_construct_id(config.stage), config=config) for config in configs}
    if PIPELINE_FILE.exists() and str(app.node.try_get_context("pipeline")).lower() != "false":
        pipeline = load_pipeline_config(stage_configs=configs if stages is None else load_stages())
        # A one-stage synth (STAGE=dev) is the fast inner loop: the pipeline needs all its stages. Built last:
        # add_stage synthesizes each stage it is given, so nothing may be added to a stage after this.
        if all(name in built for name in pipeline.stages):
            # Imported here: aws_cdk.pipelines and its CodeBuild/CodePipeline modules take 2 s to import,
            # which a one-stage synth should not pay.
            from stacks.pipeline_stack import PipelineStack

            tiers = {stage_construct_id(c.stage): c.tier for c in configs}
            PipelineStack(
                app,
                "Pipeline",
                stack_name="ml-platform-pipeline",
                description="ml-platform: the CDK pipeline (toolchain account) promoting dev -> staging -> prod",
                env=cdk.Environment(account=pipeline.account, region=pipeline.region),
                repository=pipeline.repository,
                branch=pipeline.branch,
                connection_arn=pipeline.connection_arn,
                stages=[built[name] for name in pipeline.stages],
                cli_version=cdk_cli_version(),
                smoke_test_urls={i: pipeline.staging_health_checks for i, t in tiers.items() if t == "staging"},
                approval_stages=[i for i, t in tiers.items() if t == "prod"],
                approvers=pipeline.prod_approvers,
            )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
