"""CostStack: the stage's monthly budget, alerting the stage's alarm topic (or a topic of its own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from platform_constructs.budget import StageBudget
from platform_constructs.encryption_key import EncryptionKey
from stacks.base import PlatformStack


class CostStack(PlatformStack):
    """Define the stage's AWS Budgets budget; a budget covers the whole stage, so it has its own small stack.

    Public attributes: ``budget`` (the ``StageBudget``) and ``topic`` (the topic it notifies).

    Args:
        name_prefix: ``<project>-<stage>``, the start of every name.
        stage: the stage name, the value of the ``stage`` cost-allocation tag the budget filters on.
        limit_usd: the monthly limit.
        alert_percentages: percentages of the limit (actual spend) that notify the topic.
        alarm_topic: the stage's alarm topic (observability). Defaults to a KMS-encrypted topic of this
            stack, ``<name_prefix>-budget``, that people subscribe to.
        alarm_topic_key: the alarm topic's KMS key; the budget lets AWS Budgets use it. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        stage: str,
        limit_usd: float,
        alert_percentages: Sequence[float] = (80, 100),
        alarm_topic: sns.ITopic | None = None,
        alarm_topic_key: kms.IKey | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if alarm_topic is None:
            # Notifications are transient: the key protects messages in flight, so it may go with the stack.
            alarm_topic_key = EncryptionKey(
                self,
                "BudgetTopicKey",
                alias=f"{name_prefix}/budget-topic",
                description=f"{name_prefix}: SNS topic of the budget notifications",
                removal_policy=cdk.RemovalPolicy.DESTROY,
            ).key
            alarm_topic = sns.Topic(
                self,
                "BudgetTopic",
                topic_name=f"{name_prefix}-budget",
                display_name=f"{name_prefix} budget",
                master_key=alarm_topic_key,
                enforce_ssl=True,
            )
        self.topic = alarm_topic
        self.budget = StageBudget(
            self,
            "Budget",
            budget_name=f"{name_prefix}-monthly",
            stage=stage,
            limit_usd=limit_usd,
            topic=alarm_topic,
            topic_key=alarm_topic_key,
            alert_percentages=alert_percentages,
        )
