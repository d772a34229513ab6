"""EdgeStack from the synthesized app (ALB, listeners, WAF, logs, controller), and the edge config's bad inputs.

Stack tests read the session ``assembly``; expected values come from the stage configs where a stage sets
them, and are literal where the issue fixes them (1000 requests per 60 s, TLS 1.3, 429).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from config.edge import EdgeConfig
from config.loader import CONFIG_DIR
from config.model import StageConfig
from platform_constructs.load_balancer_controller import SERVICE_ACCOUNT, load_balancer_controller_values
from platform_constructs.web_acl import (
    COMMON_RULE_SET,
    IP_REPUTATION,
    KNOWN_BAD_INPUTS,
    SIZE_RESTRICTIONS_BODY,
    SIZE_RESTRICTIONS_BODY_LABEL,
    openai_path_statement,
)
from tests.support.assembly import CloudAssembly, StackArtifact
from tests.support.deployed import helm_releases

STAGES = ("Dev", "Staging", "Prod")
TLS13_ONLY_POLICY = "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09"


# --- helpers ---------------------------------------------------------------------------------------------


def one(stack: StackArtifact, cfn_type: str) -> tuple[str, dict[str, Any]]:
    """Return the logical ID and properties of the stack's only resource of ``cfn_type``."""
    ((logical_id, resource),) = stack.resources_of(cfn_type).items()
    return logical_id, resource["Properties"]


def rules(stack: StackArtifact) -> dict[str, dict[str, Any]]:
    _, acl = one(stack, "AWS::WAFv2::WebACL")
    return {r["Name"]: r for r in acl["Rules"]}


def attributes(stack: StackArtifact) -> dict[str, Any]:
    _, alb = one(stack, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    return {a["Key"]: a["Value"] for a in alb["LoadBalancerAttributes"]}


def listener(stack: StackArtifact, port: int) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (k, r["Properties"])
        for k, r in stack.resources_of("AWS::ElasticLoadBalancingV2::Listener").items()
        if r["Properties"]["Port"] == port
    ]
    return found


def stage_name(config: StageConfig) -> str:
    return config.stage.capitalize()


@pytest.fixture(scope="module")
def prod(assembly: CloudAssembly) -> StackArtifact:
    return assembly.stack("Prod", "Edge")


@pytest.fixture(scope="module")
def dev(assembly: CloudAssembly) -> StackArtifact:
    return assembly.stack("Dev", "Edge")


# --- WAF -------------------------------------------------------------------------------------------------


def test_rate_limit_blocks_with_429_per_ip(prod: StackArtifact) -> None:
    rule = rules(prod)["RateLimit"]
    assert rule["Priority"] == 0
    assert rule["Statement"]["RateBasedStatement"] == {
        "Limit": 1000,
        "EvaluationWindowSec": 60,
        "AggregateKeyType": "IP",
    }
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429
    _, acl = one(prod, "AWS::WAFv2::WebACL")
    body = acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]
    assert body["ContentType"] == "APPLICATION_JSON"
    assert json.loads(body["Content"])["error"]["message"] == "rate limit exceeded"


def test_rate_limit_follows_each_stage_config(assembly: CloudAssembly, stage_configs: dict[str, StageConfig]) -> None:
    for config in stage_configs.values():
        statement = rules(assembly.stack(stage_name(config), "Edge"))["RateLimit"]["Statement"]
        assert statement["RateBasedStatement"]["Limit"] == config.edge.rate_limit_per_window
        assert statement["RateBasedStatement"]["EvaluationWindowSec"] == config.edge.rate_limit_window_seconds


def test_managed_rule_groups_in_priority_order(prod: StackArtifact) -> None:
    _, acl = one(prod, "AWS::WAFv2::WebACL")
    ordered = sorted(acl["Rules"], key=lambda r: r["Priority"])
    managed = [
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in ordered
        if "ManagedRuleGroupStatement" in r["Statement"]
    ]
    assert managed == [IP_REPUTATION, KNOWN_BAD_INPUTS, COMMON_RULE_SET]
    assert ordered[0]["Name"] == "RateLimit"
    for rule in ordered:
        if "ManagedRuleGroupStatement" in rule["Statement"]:
            assert rule["Statement"]["ManagedRuleGroupStatement"]["VendorName"] == "AWS"
            # Rule groups keep their own actions (no group-wide Count).
            assert rule["OverrideAction"] == {"None": {}}
    assert len({r["Priority"] for r in ordered}) == len(ordered)


def test_body_size_rule_counts_only_on_openai_paths(prod: StackArtifact, stage_configs: dict[str, StageConfig]) -> None:
    by_name = rules(prod)
    crs = by_name[COMMON_RULE_SET]
    # The Common Rule Set overrides exactly one rule, and only to Count.
    assert crs["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"] == [
        {"Name": SIZE_RESTRICTIONS_BODY, "ActionToUse": {"Count": {}}}
    ]
    assert "ScopeDownStatement" not in crs["Statement"]["ManagedRuleGroupStatement"]
    # Right after it, a request the size rule labelled is blocked unless its path is an OpenAI path.
    (reblock,) = [r for r in by_name.values() if r["Priority"] == crs["Priority"] + 1]
    assert reblock["Action"] == {"Block": {}}
    label, negated = reblock["Statement"]["AndStatement"]["Statements"]
    assert label == {"LabelMatchStatement": {"Scope": "LABEL", "Key": SIZE_RESTRICTIONS_BODY_LABEL}}
    matches = negated["NotStatement"]["Statement"]["OrStatement"]["Statements"]
    paths = [m["ByteMatchStatement"]["SearchString"] for m in matches]
    assert paths == list(stage_configs["prod"].edge.openai_paths)
    assert "/v1/chat/completions" in paths
    for match in matches:
        statement = match["ByteMatchStatement"]
        assert statement["FieldToMatch"] == {"UriPath": {}}
        assert statement["PositionalConstraint"] == "STARTS_WITH"
        assert statement["TextTransformations"] == [{"Priority": 0, "Type": "NORMALIZE_PATH"}]
    # No other rule relaxes anything.
    for rule in by_name.values():
        if rule is not crs:
            assert "RuleActionOverrides" not in json.dumps(rule)
            assert "Count" not in json.dumps(rule.get("Action", {}))


def test_every_rule_and_the_acl_have_metrics_and_samples(prod: StackArtifact) -> None:
    _, acl = one(prod, "AWS::WAFv2::WebACL")
    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    configs = [acl["VisibilityConfig"]] + [r["VisibilityConfig"] for r in acl["Rules"]]
    for visibility in configs:
        assert visibility["CloudWatchMetricsEnabled"] is True
        assert visibility["SampledRequestsEnabled"] is True
    names = [v["MetricName"] for v in configs]
    assert len(set(names)) == len(names)
    assert all(name.startswith("ml-platform-prod-") for name in names)


def test_web_acl_is_associated_with_the_load_balancer(prod: StackArtifact) -> None:
    alb_id, _ = one(prod, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    acl_id, _ = one(prod, "AWS::WAFv2::WebACL")
    _, association = one(prod, "AWS::WAFv2::WebACLAssociation")
    assert association["ResourceArn"] == {"Ref": alb_id}
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}


def test_waf_logs_redact_credentials_into_an_encrypted_log_group(
    prod: StackArtifact, stage_configs: dict[str, StageConfig]
) -> None:
    acl_id, _ = one(prod, "AWS::WAFv2::WebACL")
    group_id, group = one(prod, "AWS::Logs::LogGroup")
    _, logging = one(prod, "AWS::WAFv2::LoggingConfiguration")
    assert logging["ResourceArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    redacted = [f["SingleHeader"]["Name"] for f in logging["RedactedFields"]]
    assert redacted == ["authorization", "cookie"]
    # WAF only delivers to log groups named aws-waf-logs-*, given by ARN without the ":*" suffix.
    assert group["LogGroupName"] == "aws-waf-logs-ml-platform-prod"
    (destination,) = logging["LogDestinationConfigs"]
    assert destination == {"Fn::Join": ["", ["arn:aws:logs:us-east-1:333333333333:log-group:", {"Ref": group_id}]]}
    assert "Fn::GetStackOutput" in group["KmsKeyId"]  # the logs key of the keys stack
    assert group["RetentionInDays"] == stage_configs["prod"].edge.waf_log_retention_days


# --- load balancer and listeners -------------------------------------------------------------------------


def test_https_listener_is_tls13_only_with_the_imported_certificate(
    prod: StackArtifact, stage_configs: dict[str, StageConfig]
) -> None:
    _, https = listener(prod, 443)
    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"] == TLS13_ONLY_POLICY
    assert https["Certificates"] == [{"CertificateArn": stage_configs["prod"].edge.certificate_arn}]
    (action,) = https["DefaultActions"]
    assert action["Type"] == "fixed-response"
    assert action["FixedResponseConfig"]["StatusCode"] == "404"
    assert prod.resources_of("AWS::CertificateManager::Certificate") == {}


def test_dev_creates_a_dns_validated_certificate_in_its_zone(
    dev: StackArtifact, stage_configs: dict[str, StageConfig]
) -> None:
    edge = stage_configs["dev"].edge
    cert_id, cert = one(dev, "AWS::CertificateManager::Certificate")
    assert cert["DomainName"] == edge.domain_name
    assert cert["ValidationMethod"] == "DNS"
    assert cert["DomainValidationOptions"] == [{"DomainName": edge.domain_name, "HostedZoneId": edge.hosted_zone_id}]
    _, https = listener(dev, 443)
    assert https["Certificates"] == [{"CertificateArn": {"Ref": cert_id}}]
    assert https["SslPolicy"] == TLS13_ONLY_POLICY


def test_http_only_redirects_permanently_to_https(prod: StackArtifact) -> None:
    _, http = listener(prod, 80)
    assert http["Protocol"] == "HTTP"
    assert http["DefaultActions"] == [
        {"Type": "redirect", "RedirectConfig": {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"}}
    ]
    rules_on_http = [
        r
        for r in prod.resources_of("AWS::ElasticLoadBalancingV2::ListenerRule").values()
        if r["Properties"]["ListenerArn"] == {"Ref": listener(prod, 80)[0]}
    ]
    assert rules_on_http == []


def test_v1_routes_to_the_vllm_ip_target_group(prod: StackArtifact) -> None:
    https_id, _ = listener(prod, 443)
    group_id, group = one(prod, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert group["TargetType"] == "ip"
    assert group["Protocol"] == "HTTP"
    assert group["HealthCheckPath"] == "/health"
    _, rule = one(prod, "AWS::ElasticLoadBalancingV2::ListenerRule")
    assert rule["ListenerArn"] == {"Ref": https_id}
    assert rule["Conditions"] == [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/v1/*"]}}]
    assert rule["Actions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": group_id}}]


def test_load_balancer_hardening_attributes(assembly: CloudAssembly) -> None:
    for stage in STAGES:
        attrs = attributes(assembly.stack(stage, "Edge"))
        assert attrs["routing.http.drop_invalid_header_fields.enabled"] == "true", stage
        assert attrs["routing.http.desync_mitigation_mode"] == "strictest", stage


def test_deletion_protection_in_prod_and_staging_not_dev(assembly: CloudAssembly) -> None:
    protected = {s: attributes(assembly.stack(s, "Edge"))["deletion_protection.enabled"] for s in STAGES}
    assert protected == {"Dev": "false", "Staging": "true", "Prod": "true"}


def test_access_logs_go_to_a_private_sse_s3_bucket(prod: StackArtifact, stage_configs: dict[str, StageConfig]) -> None:
    attrs = attributes(prod)
    bucket_id, bucket = one(prod, "AWS::S3::Bucket")
    assert attrs["access_logs.s3.enabled"] == "true"
    assert attrs["access_logs.s3.bucket"] == {"Ref": bucket_id}
    # ALB access logs cannot be delivered to an SSE-KMS bucket.
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    days = stage_configs["prod"].edge.access_log_expire_after_days
    assert rule["ExpirationInDays"] == days
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": days}
    _, policy = one(prod, "AWS::S3::BucketPolicy")
    denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s["Condition"] for s in denies]


def test_security_groups_open_443_and_80_and_reach_pods_only(prod: StackArtifact) -> None:
    sg_id, sg = one(prod, "AWS::EC2::SecurityGroup")
    ingress = {(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in sg["SecurityGroupIngress"]}
    assert ingress == {(443, 443, "0.0.0.0/0"), (80, 80, "0.0.0.0/0")}
    (egress,) = sg["SecurityGroupEgress"]
    assert (egress["FromPort"], egress["ToPort"]) == (8000, 8080)
    _, node_rule = one(prod, "AWS::EC2::SecurityGroupIngress")
    assert node_rule["SourceSecurityGroupId"] == {"Fn::GetAtt": [sg_id, "GroupId"]}
    assert (node_rule["FromPort"], node_rule["ToPort"], node_rule["IpProtocol"]) == (8000, 8080, "tcp")
    # The node group belongs to the network stack: the rule names it by the published output.
    assert node_rule["GroupId"] == egress["DestinationSecurityGroupId"]
    assert "Fn::GetStackOutput" in node_rule["GroupId"]


def test_alias_record_points_the_domain_at_the_load_balancer(
    prod: StackArtifact, stage_configs: dict[str, StageConfig]
) -> None:
    alb_id, _ = one(prod, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    _, record = one(prod, "AWS::Route53::RecordSet")
    edge = stage_configs["prod"].edge
    assert record["Name"] == f"{edge.domain_name}."
    assert record["HostedZoneId"] == edge.hosted_zone_id
    assert record["AliasTarget"]["HostedZoneId"] == {"Fn::GetAtt": [alb_id, "CanonicalHostedZoneID"]}


# --- load balancer controller ----------------------------------------------------------------------------


def test_controller_only_binds_target_groups(assembly: CloudAssembly) -> None:
    (release,) = [r for r in helm_releases(assembly) if r.stage == "Prod" and r.stack == "Edge"]
    assert (release.chart, release.version, release.namespace) == (
        "aws-load-balancer-controller",
        "3.5.0",
        "kube-system",
    )
    values = release.values
    assert values["clusterName"] == "ml-platform-prod"
    assert values["replicaCount"] == 2
    assert values["nodeSelector"] == {"ml-platform/pool": "system"}
    assert values["serviceAccount"] == {"create": True, "name": SERVICE_ACCOUNT}
    assert values["enableServiceMutatorWebhook"] is False
    assert values["createIngressClassResource"] is False
    assert values["ingressClassConfig"] == {"default": False}
    assert values["controllerConfig"]["featureGates"]["EnableServiceController"] is False


def test_controller_registers_targets_only_in_this_stage_target_groups(prod: StackArtifact) -> None:
    group_id, _ = one(prod, "AWS::ElasticLoadBalancingV2::TargetGroup")
    role_id, _ = one(prod, "AWS::IAM::Role")
    _, association = one(prod, "AWS::EKS::PodIdentityAssociation")
    assert (association["Namespace"], association["ServiceAccount"]) == ("kube-system", SERVICE_ACCOUNT)
    assert association["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    _, policy = one(prod, "AWS::IAM::Policy")
    statements = policy["PolicyDocument"]["Statement"]
    writes = [s for s in statements if s["Resource"] != "*"]
    assert writes == [
        {
            "Sid": "RegisterPodTargets",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"],
            "Resource": {"Ref": group_id},
        }
    ]
    for statement in statements:
        if statement["Resource"] == "*":
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(":Describe" in a or ":Get" in a for a in actions), actions
            assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}


def test_controller_values_keep_the_controller_from_creating_load_balancers() -> None:
    values = load_balancer_controller_values(
        cluster_name="c", region="us-east-1", vpc_id="vpc-1", node_selector={"ml-platform/pool": "system"}
    )
    assert values["ingressClassParams"] == {"create": False}
    assert values["disableIngressClassAnnotation"] is True
    assert values["enableBackendSecurityGroup"] is False
    assert (values["enableWaf"], values["enableWafv2"], values["enableShield"]) == (False, False, False)
    gates = values["controllerConfig"]["featureGates"]
    assert gates == {"EnableServiceController": False, "ALBGatewayAPI": False, "NLBGatewayAPI": False}


# --- config ----------------------------------------------------------------------------------------------


def _prod() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIG_DIR / "prod.yaml").read_text())
    return data


def _with_edge(**edge: Any) -> dict[str, Any]:
    data = _prod()
    data["edge"] = {**data["edge"], **edge}
    return data


def test_shipped_stages_have_a_certificate_source(stage_configs: dict[str, StageConfig]) -> None:
    sources = {name: c.edge.certificate_source for name, c in stage_configs.items()}
    assert sources == {"dev": "dns-validated", "staging": "dns-validated", "prod": "imported"}


def test_defaults_match_the_issue() -> None:
    edge = EdgeConfig(
        certificate_arn="arn:aws:acm:us-east-1:333333333333:certificate/00000000-0000-0000-0000-000000000000"
    )
    assert (edge.rate_limit_per_window, edge.rate_limit_window_seconds) == (1000, 60)
    assert edge.openai_paths == ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
    assert edge.internet_facing and edge.deletion_protection


def test_fails_when_the_rate_limit_is_below_100() -> None:
    with pytest.raises(ValueError, match=r"rate_limit_per_window 99 is below 100 requests per window"):
        EdgeConfig(rate_limit_per_window=99)
    EdgeConfig(rate_limit_per_window=100)


def test_fails_when_the_window_is_not_a_waf_window() -> None:
    with pytest.raises(ValueError, match=r"rate_limit_window_seconds 90 is not an AWS WAF evaluation window"):
        EdgeConfig(rate_limit_window_seconds=90)


def test_fails_when_edge_is_enabled_without_certificate_or_domain() -> None:
    data = _prod()
    del data["edge"]
    with pytest.raises(ValueError, match=r"the edge component is on but has no certificate"):
        StageConfig.model_validate(data)
    # A domain alone is not enough either: the certificate needs a zone to validate in.
    data["edge"] = {"domain_name": "api.example.com"}
    with pytest.raises(ValueError, match=r"the edge component is on but has no certificate"):
        StageConfig.model_validate(data)


def test_edge_needs_no_certificate_when_it_is_off() -> None:
    data = _prod()
    del data["edge"]
    data["components"] = {"edge": False}
    assert StageConfig.model_validate(data).edge.certificate_source is None


def test_fails_when_prod_edge_is_not_deletion_protected() -> None:
    with pytest.raises(ValueError, match=r"prod load balancer must be deletion-protected"):
        StageConfig.model_validate(_with_edge(deletion_protection=False))


BAD_EDGE: list[tuple[str, dict[str, Any], str]] = [
    ("malformed ARN", {"certificate_arn": "arn:aws:acm:us-east-1:333333333333:cert/x"}, r"not an ACM certificate ARN"),
    (
        "certificate of another region",
        {"certificate_arn": "arn:aws:acm:eu-west-1:333333333333:certificate/00000000-0000-0000-0000-000000000000"},
        r"certificate_arn is in eu-west-1, the stage's load balancer is in us-east-1",
    ),
    (
        "certificate of another account",
        {"certificate_arn": "arn:aws:acm:us-east-1:999999999999:certificate/00000000-0000-0000-0000-000000000000"},
        r"certificate_arn is in account 999999999999, the stage deploys to 333333333333",
    ),
    ("domain outside the zone", {"domain_name": "api.example.org"}, r"api.example.org is not inside the hosted zone"),
    ("zone ID without its name", {"hosted_zone_name": None}, r"hosted_zone_id and edge.hosted_zone_name go together"),
    ("bad zone ID", {"hosted_zone_id": "zone-1"}, r"not a Route 53 hosted zone ID"),
    ("wildcard domain", {"domain_name": "*.example.com"}, r"not a lowercase DNS name"),
    ("path without a slash", {"openai_paths": ["v1/chat"]}, r"must start with /"),
    ("no OpenAI paths", {"openai_paths": []}, r"openai_paths is empty"),
    ("bad log retention", {"waf_log_retention_days": 45}, r"waf_log_retention_days 45 is not a CloudWatch Logs"),
    ("idle timeout over 4000 s", {"idle_timeout_seconds": 4001}, r"idle_timeout_seconds"),
    ("unknown key", {"waf_limit": 5}, r"waf_limit"),
]


@pytest.mark.parametrize(("edge", "expected"), [(e, m) for _, e, m in BAD_EDGE], ids=[i for i, _, _ in BAD_EDGE])
def test_fails_on_bad_edge_input(edge: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        StageConfig.model_validate(_with_edge(**edge))


def test_openai_path_statement_needs_no_or_for_one_path() -> None:
    statement = openai_path_statement(["/v1/chat/completions"])
    assert statement["ByteMatchStatement"]["SearchString"] == "/v1/chat/completions"
    with pytest.raises(ValueError, match=r"openai_paths is empty"):
        openai_path_statement([])
