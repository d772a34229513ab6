"""StageBudget: a monthly AWS Budgets cost budget for one stage, alerting an SNS topic."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct


def budgets_publish_statement(*, topic_arn: str, account: str, partition: str) -> iam.PolicyStatement:
    """Return the topic policy statement that lets AWS Budgets of ``account`` (and no other) publish."""
    return iam.PolicyStatement(
        sid="AllowBudgetsOfThisAccountToPublish",
        principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
        actions=["sns:Publish"],
        resources=[topic_arn],
        conditions={
            "StringEquals": {"aws:SourceAccount": account},
            "ArnLike": {"aws:SourceArn": f"arn:{partition}:budgets::{account}:*"},
        },
    )


class StageBudget(Construct):
    """Define a monthly cost budget over the resources tagged with the stage's cost-allocation tag.

    The filter is the user-defined tag ``<tag_key>=<stage>`` (``user:stage$prod``): every resource of the
    stage carries it, and it must be activated once as a cost-allocation tag in the billing console of
    the paying account before Budgets sees it. Notifications compare actual spend with the limit.

    Args:
        budget_name: the budget's name, unique in the account.
        stage: the stage name, the value of the cost-allocation tag.
        limit_usd: the monthly limit.
        topic: receives the notifications; this construct adds the statement that lets Budgets publish.
        topic_key: the topic's KMS key; this construct lets Budgets of this account use it. Defaults to
            none (an unencrypted topic, or one whose key already admits Budgets).
        alert_percentages: notify when actual spend passes these percentages of the limit. Defaults to 80
            and 100.
        tag_key: the cost-allocation tag's key. Defaults to ``stage``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        budget_name: str,
        stage: str,
        limit_usd: float,
        topic: sns.ITopic,
        topic_key: kms.IKey | None = None,
        alert_percentages: Sequence[float] = (80, 100),
        tag_key: str = "stage",
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        if limit_usd <= 0:
            raise ValueError(f"budget {budget_name}: limit_usd must be positive (got {limit_usd})")
        self.topic = topic
        self.policy_result = topic.add_to_resource_policy(
            budgets_publish_statement(
                topic_arn=topic.topic_arn,
                account=stack.account,
                partition=stack.partition,
            )
        )
        self.budget = budgets.CfnBudget(
            self,
            "Resource",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=budget_name,
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=limit_usd, unit="USD"),
                cost_filters={"TagKeyValue": [f"user:{tag_key}${stage}"]},
            ),
            notifications_with_subscribers=[
                budgets.CfnBudget.NotificationWithSubscribersProperty(
                    notification=budgets.CfnBudget.NotificationProperty(
                        notification_type="ACTUAL",
                        comparison_operator="GREATER_THAN",
                        threshold=percentage,
                        threshold_type="PERCENTAGE",
                    ),
                    subscribers=[
                        budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=topic.topic_arn)
                    ],
                )
                for percentage in alert_percentages
            ],
        )
        # Budgets checks that it may publish when the budget is created: the topic policy must exist first.
        if self.policy_result.policy_dependable is not None:
            self.budget.node.add_dependency(self.policy_result.policy_dependable)
        if topic_key is not None:
            # Budgets encrypts what it publishes to an encrypted topic with the topic's key.
            topic_key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="AllowBudgetsOfThisAccount",
                    principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
                    actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
                )
            )
