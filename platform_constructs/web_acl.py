"""InferenceWebAcl: the WAF in front of the inference load balancer, with its rules and its logs.

Rules, first match wins:

0. ``RateLimit``: more than ``rate_limit_per_window`` requests from one client IP within the window are
   blocked with 429 and an OpenAI-style JSON error, so SDK clients back off and retry.
1. ``AWSManagedRulesAmazonIpReputationList``: known bots, scanners and malicious addresses.
2. ``AWSManagedRulesKnownBadInputsRuleSet``: exploit patterns (Log4Shell, Java deserialization, ...).
3. ``AWSManagedRulesCommonRuleSet``: the OWASP-style baseline, every rule enforced except
   ``SizeRestrictions_BODY``, which only counts (and labels the request).
4. ``BlockLargeBodyOutsideOpenAiPaths``: blocks a request carrying that label unless its path starts with
   one of the OpenAI paths.

Rules 3 and 4 together make ``SizeRestrictions_BODY`` count on the OpenAI paths and block everywhere else.
An ALB hands WAF only the first 8 KB of a body and the rule matches any body over 8 KB, so enforced on
``/v1/chat/completions`` it would refuse every long prompt. Re-blocking by label keeps one evaluation of
the Common Rule Set (700 WCU) instead of two scoped copies (1,400 WCU), which would push the web ACL over
the 1,500 WCU included in its base price.

The rule list is plain data (``web_acl_rules``) so that tests read it without synthesizing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from platform_constructs.retention import retention_days

IP_REPUTATION: Final = "AWSManagedRulesAmazonIpReputationList"
KNOWN_BAD_INPUTS: Final = "AWSManagedRulesKnownBadInputsRuleSet"
COMMON_RULE_SET: Final = "AWSManagedRulesCommonRuleSet"
# The Common Rule Set's rule that matches bodies over 8 KB, and the label it adds when it matches.
SIZE_RESTRICTIONS_BODY: Final = "SizeRestrictions_BODY"
SIZE_RESTRICTIONS_BODY_LABEL: Final = "awswaf:managed:aws:core-rule-set:SizeRestrictions_Body"
RATE_LIMIT_BODY_KEY: Final = "rate-limit-exceeded"
# The shape of an OpenAI API error, so OpenAI SDK clients report it and back off.
RATE_LIMIT_BODY: Final = json.dumps(
    {
        "error": {
            "message": "rate limit exceeded",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    separators=(",", ":"),
)
# Headers that carry credentials (API keys as bearer tokens, session cookies) never reach the logs.
REDACTED_HEADERS: Final = ("authorization", "cookie")


def visibility(metric_name: str) -> dict[str, Any]:
    """Return a rule's visibility: CloudWatch metrics and sampled requests, under ``metric_name``."""
    return {"CloudWatchMetricsEnabled": True, "MetricName": metric_name, "SampledRequestsEnabled": True}


def openai_path_statement(openai_paths: Sequence[str]) -> dict[str, Any]:
    """Return a statement matching requests whose path starts with one of ``openai_paths``.

    The path is normalized first (duplicate slashes and ``.``/``..`` segments removed), so a path
    written differently cannot slip into, or out of, the OpenAI scope.
    """
    matches = [
        {
            "ByteMatchStatement": {
                "FieldToMatch": {"UriPath": {}},
                "PositionalConstraint": "STARTS_WITH",
                "SearchString": path,
                "TextTransformations": [{"Priority": 0, "Type": "NORMALIZE_PATH"}],
            }
        }
        for path in openai_paths
    ]
    if not matches:
        raise ValueError("openai_paths is empty: the web ACL needs at least one OpenAI path to scope the body rule")
    # An OrStatement needs at least two statements.
    return matches[0] if len(matches) == 1 else {"OrStatement": {"Statements": matches}}


def _managed(name: str, priority: int, metric_prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "Priority": priority,
        "OverrideAction": {"None": {}},
        "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": name, **extra}},
        "VisibilityConfig": visibility(f"{metric_prefix}-{name}"),
    }


def web_acl_rules(
    *,
    metric_prefix: str,
    rate_limit_per_window: int,
    rate_limit_window_seconds: int,
    openai_paths: Sequence[str],
) -> list[dict[str, Any]]:
    """Return the web ACL's rules in CloudFormation form, in priority order (see the module docstring).

    Args:
        metric_prefix: prefix of every rule's CloudWatch metric name (unique per stage in the region).
        rate_limit_per_window: requests one client IP may send per window.
        rate_limit_window_seconds: the rate-based rule's evaluation window (60, 120, 300 or 600).
        openai_paths: path prefixes where bodies over 8 KB are allowed (long prompts).
    """
    return [
        {
            "Name": "RateLimit",
            "Priority": 0,
            "Action": {
                "Block": {"CustomResponse": {"ResponseCode": 429, "CustomResponseBodyKey": RATE_LIMIT_BODY_KEY}}
            },
            "Statement": {
                "RateBasedStatement": {
                    "Limit": rate_limit_per_window,
                    "EvaluationWindowSec": rate_limit_window_seconds,
                    "AggregateKeyType": "IP",
                }
            },
            "VisibilityConfig": visibility(f"{metric_prefix}-RateLimit"),
        },
        _managed(IP_REPUTATION, 1, metric_prefix),
        _managed(KNOWN_BAD_INPUTS, 2, metric_prefix),
        _managed(
            COMMON_RULE_SET,
            3,
            metric_prefix,
            RuleActionOverrides=[{"Name": SIZE_RESTRICTIONS_BODY, "ActionToUse": {"Count": {}}}],
        ),
        {
            "Name": "BlockLargeBodyOutsideOpenAiPaths",
            "Priority": 4,
            "Action": {"Block": {}},
            "Statement": {
                "AndStatement": {
                    "Statements": [
                        {"LabelMatchStatement": {"Scope": "LABEL", "Key": SIZE_RESTRICTIONS_BODY_LABEL}},
                        {"NotStatement": {"Statement": openai_path_statement(openai_paths)}},
                    ]
                }
            },
            "VisibilityConfig": visibility(f"{metric_prefix}-BlockLargeBodyOutsideOpenAiPaths"),
        },
    ]


def custom_response_bodies() -> dict[str, Any]:
    """Return the web ACL's custom response bodies, keyed as the rules reference them."""
    return {RATE_LIMIT_BODY_KEY: {"ContentType": "APPLICATION_JSON", "Content": RATE_LIMIT_BODY}}


class InferenceWebAcl(Construct):
    """Define the regional web ACL of the inference ALB, its association and its logging.

    Logs go to the CloudWatch log group ``aws-waf-logs-<name_prefix>`` (WAF requires that prefix),
    encrypted with ``logs_key``: CloudWatch Logs encrypts what WAF delivers, and the logs key already
    lets the logs service of the account use it for any log group. WAF adds the log group resource
    policy that admits its log delivery when it enables logging.

    Args:
        name_prefix: the stage's prefix: names the web ACL, its log group and its metrics.
        load_balancer: the ALB to protect.
        rate_limit_per_window: requests one client IP may send per window before it gets 429.
        rate_limit_window_seconds: the rate limit's window (60, 120, 300 or 600 seconds).
        openai_paths: path prefixes where bodies over 8 KB are counted, not blocked.
        logs_key: KMS key of the log group.
        log_retention_days: retention of the WAF logs.
        removal_policy: what happens to the log group when the stack goes.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        load_balancer: elbv2.IApplicationLoadBalancer,
        rate_limit_per_window: int,
        rate_limit_window_seconds: int,
        openai_paths: Sequence[str],
        logs_key: kms.IKey,
        log_retention_days: int,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        metric_prefix = f"{name_prefix}-inference"
        self.web_acl = wafv2.CfnWebACL(
            self,
            "Resource",
            name=metric_prefix,
            description=f"{name_prefix}: rate limit, IP reputation, known bad inputs, common rule set",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=metric_prefix, sampled_requests_enabled=True
            ),
        )
        # The rules are plain CloudFormation data (see web_acl_rules), set as one property so that the
        # template holds exactly what the tests read.
        self.web_acl.add_property_override(
            "Rules",
            web_acl_rules(
                metric_prefix=metric_prefix,
                rate_limit_per_window=rate_limit_per_window,
                rate_limit_window_seconds=rate_limit_window_seconds,
                openai_paths=openai_paths,
            ),
        )
        self.web_acl.add_property_override("CustomResponseBodies", custom_response_bodies())

        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=load_balancer.load_balancer_arn, web_acl_arn=self.web_acl.attr_arn
        )

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"aws-waf-logs-{name_prefix}",
            encryption_key=logs_key,
            retention=retention_days(log_retention_days),
            removal_policy=removal_policy,
        )
        # WAF wants the log group's ARN without the ":*" suffix that LogGroup.log_group_arn carries.
        destination = cdk.Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=self.log_group.log_group_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.logging = wafv2.CfnLoggingConfiguration(
            self,
            "Logging",
            resource_arn=self.web_acl.attr_arn,
            log_destination_configs=[destination],
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                for header in REDACTED_HEADERS
            ],
        )
