"""ObservabilityStack: the stage's alarm topic, CloudWatch alarms and dashboard, and its CloudTrail trail.

Alarms watch what lives outside the cluster: PostgreSQL (CPU, free storage, connections), the cache
(engine CPU, memory, evictions, per shard), EFS (I/O limit: the file system is elastic, so there is no
capacity to alarm on), the inference ALB (5xx, p99 target response time) and its WAF (a spike of blocked
requests, against a learned anomaly band). Every alarm notifies the stage's SNS topic, which Alertmanager
also publishes the in-cluster alerts to, so one subscription sees everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_efs as efs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from config.observability import AlertThresholds
from platform_constructs.encryption_key import EncryptionKey
from platform_constructs.retention import retention_days
from platform_constructs.secure_bucket import AccessLogBucket, SecureBucket, bucket_name
from stacks.base import PlatformStack

FIVE_MINUTES = cdk.Duration.minutes(5)
GIB = 1024**3


def cache_node_ids(replication_group_id: str, *, shards: int, replicas_per_shard: int) -> list[list[str]]:
    """Return the cache cluster (node) ids of a cluster-mode replication group, by shard.

    ElastiCache names them ``<group>-<shard, 4 digits>-<node, 3 digits>`` from 1, and publishes its
    metrics per node (dimension CacheClusterId).
    """
    if shards < 1 or replicas_per_shard < 0:
        raise ValueError(
            f"a replication group has at least 1 shard and 0 replicas (got {shards}, {replicas_per_shard})"
        )
    return [
        [f"{replication_group_id}-{shard:04d}-{node:03d}" for node in range(1, replicas_per_shard + 2)]
        for shard in range(1, shards + 1)
    ]


class ObservabilityStack(PlatformStack):
    """Define the alarm topic, the alarms and dashboard, and the CloudTrail trail of one stage.

    Public attributes: ``alarm_topic``, ``alarm_topic_key``, ``alarms`` (name -> alarm), ``dashboard``,
    ``trail``, ``trail_bucket`` and ``trail_key`` (the last three None without a trail).

    Args:
        name_prefix: ``<project>-<stage>``; names the topic, alarms, dashboard, trail and buckets.
        thresholds: where the alarms fire.
        alarm_emails: mailboxes subscribed to the topic (each confirms by mail); may be empty.
        logs_key: the stage's logs key (the trail's CloudWatch Logs group).
        log_group_prefix: ``/<project>/<stage>``; the trail's log group is ``<prefix>/cloudtrail``.
        log_retention_days: retention of the trail's log group.
        removal_policy: RETAIN outside dev: the keys and the trail bucket hold audit records.
        database: the PostgreSQL instance.
        database_allocated_storage_gib: its storage; the free-storage alarm is a share of it.
        cache_replication_group_id: the cache's replication group id. Defaults to None: no cache alarms.
        cache_shards: the cache's shards. Defaults to 1.
        cache_replicas_per_shard: replicas per shard. Defaults to 0.
        file_system: the shared EFS file system. Defaults to None: no EFS alarm.
        load_balancer: the inference ALB (EdgeStack). Defaults to None: no ALB alarms.
        web_acl: its WAF web ACL (EdgeStack). Defaults to None: no WAF alarm.
        cloudtrail_enabled: create the trail (false where an organization trail records the account).
            Defaults to True.
        cloudtrail_glacier_after_days: days before trail log files move to Glacier. Defaults to 90.
        cloudtrail_expire_after_days: days before trail log files are deleted. Defaults to 365.
        cloudtrail_cloudwatch_logs: also deliver the trail to CloudWatch Logs. Defaults to True.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        thresholds: AlertThresholds,
        alarm_emails: Sequence[str],
        logs_key: kms.IKey,
        log_group_prefix: str,
        log_retention_days: int,
        removal_policy: cdk.RemovalPolicy,
        database: rds.IDatabaseInstance,
        database_allocated_storage_gib: int,
        cache_replication_group_id: str | None = None,
        cache_shards: int = 1,
        cache_replicas_per_shard: int = 0,
        file_system: efs.IFileSystem | None = None,
        load_balancer: elbv2.IApplicationLoadBalancer | None = None,
        web_acl: wafv2.CfnWebACL | None = None,
        cloudtrail_enabled: bool = True,
        cloudtrail_glacier_after_days: int = 90,
        cloudtrail_expire_after_days: int = 365,
        cloudtrail_cloudwatch_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._prefix = name_prefix
        self.alarm_topic_key = EncryptionKey(
            self,
            "AlarmTopicKey",
            alias=f"{name_prefix}/alarms",
            description=f"{name_prefix}: the alarm topic (CloudWatch alarms, Alertmanager)",
            removal_policy=removal_policy,
        ).key
        # CloudWatch publishes alarm notifications as the service: it needs the key to encrypt them.
        self.alarm_topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{name_prefix}-alarms",
            display_name=f"{name_prefix} alarms",
            master_key=self.alarm_topic_key,
            enforce_ssl=True,
        )
        # The topic policy replaces SNS's default one, so CloudWatch alarms of this account are named here.
        self.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.alarm_topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{self.partition}:cloudwatch:{self.region}:{self.account}:alarm:*"
                    },
                    "StringEquals": {"aws:SourceAccount": self.account},
                },
            )
        )
        for address in alarm_emails:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(address))

        self.alarms: dict[str, cloudwatch.Alarm] = {}
        widgets: list[list[cloudwatch.IWidget]] = []
        widgets.append(self._database(database, database_allocated_storage_gib, thresholds))
        if cache_replication_group_id is not None:
            widgets.append(self._cache(cache_replication_group_id, cache_shards, cache_replicas_per_shard, thresholds))
        if file_system is not None:
            widgets.append(self._file_system(file_system, thresholds))
        if load_balancer is not None:
            widgets.append(self._load_balancer(load_balancer, thresholds))
        if web_acl is not None:
            widgets.append(self._web_acl(web_acl, thresholds))
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{name_prefix}-platform",
            widgets=[
                [cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=6)],
                *widgets,
            ],
        )

        self.trail: cloudtrail.Trail | None = None
        self.trail_bucket: s3.IBucket | None = None
        self.trail_key: kms.IKey | None = None
        if cloudtrail_enabled:
            self._trail(
                logs_key=logs_key,
                log_group_prefix=log_group_prefix,
                log_retention_days=log_retention_days,
                removal_policy=removal_policy,
                glacier_after_days=cloudtrail_glacier_after_days,
                expire_after_days=cloudtrail_expire_after_days,
                cloudwatch_logs=cloudtrail_cloudwatch_logs,
            )

    # --- alarms -------------------------------------------------------------------------------------------

    def _alarm(
        self,
        construct_id: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods: int = 3,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self._prefix}-{_kebab(construct_id)}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._notify(alarm)
        self.alarms[construct_id] = alarm
        return alarm

    def _notify(self, alarm: cloudwatch.AlarmBase) -> None:
        action = cloudwatch_actions.SnsAction(self.alarm_topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)

    def _database(
        self, database: rds.IDatabaseInstance, allocated_gib: int, t: AlertThresholds
    ) -> list[cloudwatch.IWidget]:
        cpu = database.metric_cpu_utilization(period=FIVE_MINUTES)
        free = database.metric_free_storage_space(period=FIVE_MINUTES)
        connections = database.metric_database_connections(period=FIVE_MINUTES, statistic="Maximum")
        self._alarm(
            "DatabaseCpu",
            metric=cpu,
            threshold=t.rds_cpu_percent,
            description=f"PostgreSQL CPU above {t.rds_cpu_percent:g}% for 15 minutes",
        )
        self._alarm(
            "DatabaseFreeStorage",
            metric=free,
            threshold=allocated_gib * t.rds_free_storage_ratio * GIB,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            description=f"PostgreSQL free storage below {t.rds_free_storage_ratio:.0%} of {allocated_gib} GiB "
            "(storage autoscaling may be at its ceiling)",
        )
        self._alarm(
            "DatabaseConnections",
            metric=connections,
            threshold=t.rds_connections,
            description=f"PostgreSQL connections above {t.rds_connections} for 15 minutes",
        )
        return [
            cloudwatch.GraphWidget(title="PostgreSQL CPU (%)", left=[cpu], width=8),
            cloudwatch.GraphWidget(title="PostgreSQL free storage (bytes)", left=[free], width=8),
            cloudwatch.GraphWidget(title="PostgreSQL connections", left=[connections], width=8),
        ]

    def _cache(
        self, replication_group_id: str, shards: int, replicas_per_shard: int, t: AlertThresholds
    ) -> list[cloudwatch.IWidget]:
        cpu_series: list[cloudwatch.IMetric] = []
        memory_series: list[cloudwatch.IMetric] = []
        eviction_series: list[cloudwatch.IMetric] = []
        node_ids = cache_node_ids(replication_group_id, shards=shards, replicas_per_shard=replicas_per_shard)
        for shard, nodes in enumerate(node_ids, start=1):

            def node_metrics(
                name: str, statistic: str, nodes: list[str] = nodes, shard: int = shard
            ) -> dict[str, cloudwatch.IMetric]:
                # Ids unique across shards: a graph of several shards' expressions must not see one id twice.
                return {
                    f"s{shard}n{index}": cloudwatch.Metric(
                        namespace="AWS/ElastiCache",
                        metric_name=name,
                        dimensions_map={"CacheClusterId": node},
                        statistic=statistic,
                        period=FIVE_MINUTES,
                    )
                    for index, node in enumerate(nodes)
                }

            ids = ", ".join(f"s{shard}n{index}" for index in range(len(nodes)))
            # One alarm per shard over its nodes (an alarm's math may use at most 10 metrics).
            cpu = cloudwatch.MathExpression(
                expression=f"MAX([{ids}])",
                using_metrics=node_metrics("EngineCPUUtilization", "Maximum"),
                label=f"shard {shard} engine CPU (%)",
                period=FIVE_MINUTES,
            )
            memory = cloudwatch.MathExpression(
                expression=f"MAX([{ids}])",
                using_metrics=node_metrics("DatabaseMemoryUsagePercentage", "Maximum"),
                label=f"shard {shard} memory (%)",
                period=FIVE_MINUTES,
            )
            evictions = cloudwatch.MathExpression(
                expression=f"SUM([{ids}])",
                using_metrics=node_metrics("Evictions", "Sum"),
                label=f"shard {shard} evictions",
                period=FIVE_MINUTES,
            )
            self._alarm(
                f"CacheShard{shard}EngineCpu",
                metric=cpu,
                threshold=t.cache_engine_cpu_percent,
                description=f"Cache shard {shard}: engine CPU above {t.cache_engine_cpu_percent:g}% on a node "
                "for 15 minutes (the engine is single-threaded: this is its real limit)",
            )
            self._alarm(
                f"CacheShard{shard}Memory",
                metric=memory,
                threshold=t.cache_memory_percent,
                description=f"Cache shard {shard}: memory above {t.cache_memory_percent:g}% of maxmemory",
            )
            self._alarm(
                f"CacheShard{shard}Evictions",
                metric=evictions,
                threshold=t.cache_evictions_per_5m,
                evaluation_periods=1,
                description=f"Cache shard {shard}: more than {t.cache_evictions_per_5m} evictions in 5 minutes "
                "(online features are being dropped for lack of memory)",
            )
            cpu_series.append(cpu)
            memory_series.append(memory)
            eviction_series.append(evictions)
        return [
            cloudwatch.GraphWidget(title="Cache engine CPU (%)", left=cpu_series, width=8),
            cloudwatch.GraphWidget(title="Cache memory (%)", left=memory_series, width=8),
            cloudwatch.GraphWidget(title="Cache evictions", left=eviction_series, width=8),
        ]

    def _file_system(self, file_system: efs.IFileSystem, t: AlertThresholds) -> list[cloudwatch.IWidget]:
        dimensions = {"FileSystemId": file_system.file_system_id}
        io_limit = cloudwatch.Metric(
            namespace="AWS/EFS",
            metric_name="PercentIOLimit",
            dimensions_map=dimensions,
            statistic="Maximum",
            period=FIVE_MINUTES,
        )
        stored = cloudwatch.Metric(
            namespace="AWS/EFS",
            metric_name="StorageBytes",
            dimensions_map={**dimensions, "StorageClass": "Total"},
            statistic="Average",
            period=cdk.Duration.hours(1),
        )
        self._alarm(
            "FileSystemIoLimit",
            metric=io_limit,
            threshold=t.efs_io_limit_percent,
            description=f"EFS at {t.efs_io_limit_percent:g}% of its General Purpose I/O limit for 15 minutes: "
            "training reads will slow down",
        )
        return [
            cloudwatch.GraphWidget(title="EFS I/O limit (%)", left=[io_limit], width=12),
            cloudwatch.GraphWidget(title="EFS stored bytes (elastic, no capacity limit)", left=[stored], width=12),
        ]

    def _load_balancer(
        self, load_balancer: elbv2.IApplicationLoadBalancer, t: AlertThresholds
    ) -> list[cloudwatch.IWidget]:
        metrics = load_balancer.metrics
        errors = cloudwatch.MathExpression(
            expression="FILL(elb, 0) + FILL(target, 0)",
            using_metrics={
                "elb": metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=FIVE_MINUTES, statistic="Sum"),
                "target": metrics.http_code_target(
                    elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=FIVE_MINUTES, statistic="Sum"
                ),
            },
            label="5xx (load balancer + targets)",
            period=FIVE_MINUTES,
        )
        latency = metrics.target_response_time(period=FIVE_MINUTES, statistic="p99")
        self._alarm(
            "LoadBalancer5xx",
            metric=errors,
            threshold=t.alb_5xx_per_5m,
            evaluation_periods=2,
            description=f"Inference ALB: more than {t.alb_5xx_per_5m} 5xx responses per 5 minutes for 10 minutes",
        )
        self._alarm(
            "LoadBalancerLatency",
            metric=latency,
            threshold=t.alb_target_p99_seconds,
            description=f"Inference ALB: p99 target response time above {t.alb_target_p99_seconds:g}s for 15 minutes",
        )
        return [
            cloudwatch.GraphWidget(title="ALB 5xx", left=[errors], width=12),
            cloudwatch.GraphWidget(title="ALB p99 target response time (s)", left=[latency], width=12),
        ]

    def _web_acl(self, web_acl: wafv2.CfnWebACL, t: AlertThresholds) -> list[cloudwatch.IWidget]:
        if not web_acl.name:
            raise ValueError("the web ACL has no name: WAF publishes its metrics under the WebACL name dimension")
        blocked = cloudwatch.Metric(
            namespace="AWS/WAFV2",
            metric_name="BlockedRequests",
            dimensions_map={"WebACL": web_acl.name, "Region": self.region, "Rule": "ALL"},
            statistic="Sum",
            period=FIVE_MINUTES,
        )
        spike = cloudwatch.AnomalyDetectionAlarm(
            self,
            "WafBlockedSpike",
            alarm_name=f"{self._prefix}-waf-blocked-spike",
            alarm_description="WAF blocks far more requests than its learned pattern: an attack, a bot, or a "
            "rule that started rejecting real clients",
            metric=blocked,
            std_devs=t.waf_blocked_anomaly_band,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_UPPER_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._notify(spike)
        self.alarms["WafBlockedSpike"] = spike
        return [cloudwatch.GraphWidget(title="WAF blocked requests", left=[blocked], width=24)]

    # --- CloudTrail ---------------------------------------------------------------------------------------

    def _trail(
        self,
        *,
        logs_key: kms.IKey,
        log_group_prefix: str,
        log_retention_days: int,
        removal_policy: cdk.RemovalPolicy,
        glacier_after_days: int,
        expire_after_days: int,
        cloudwatch_logs: bool,
    ) -> None:
        trail_name = f"{self._prefix}-trail"
        trail_arn = f"arn:{self.partition}:cloudtrail:{self.region}:{self.account}:trail/{trail_name}"
        key = EncryptionKey(
            self,
            "TrailKey",
            alias=f"{self._prefix}/cloudtrail",
            description=f"{self._prefix}: CloudTrail log files",
            removal_policy=removal_policy,
        ).key
        # What CloudTrail needs to encrypt log files with a customer-managed key, for this trail only.
        source = {"StringEquals": {"aws:SourceArn": trail_arn}}
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudTrailToEncryptLogs",
                principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
                actions=["kms:GenerateDataKey*"],
                resources=["*"],
                conditions={
                    **source,
                    "StringLike": {
                        "kms:EncryptionContext:aws:cloudtrail:arn": (
                            f"arn:{self.partition}:cloudtrail:*:{self.account}:trail/*"
                        )
                    },
                },
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudTrailToDescribeKey",
                principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
                actions=["kms:DescribeKey"],
                resources=["*"],
                conditions=source,
            )
        )
        access_logs = AccessLogBucket(
            self,
            "TrailAccessLogs",
            bucket_name=bucket_name(
                prefix=self._prefix, purpose="trail-access-logs", account=self.account, region=self.region
            ),
            expire_after_days=expire_after_days,
            removal_policy=removal_policy,
        ).bucket
        bucket = SecureBucket(
            self,
            "TrailBucket",
            bucket_name=bucket_name(
                prefix=self._prefix, purpose="cloudtrail", account=self.account, region=self.region
            ),
            encryption_key=key,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="cloudtrail/",
            removal_policy=removal_policy,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ArchiveThenExpireTrailLogs",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.GLACIER,
                            transition_after=cdk.Duration.days(glacier_after_days),
                        )
                    ],
                    expiration=cdk.Duration.days(expire_after_days),
                    # Log files are never overwritten; this only catches deletions of a current version.
                    noncurrent_version_expiration=cdk.Duration.days(30),
                )
            ],
        ).bucket
        log_group: logs.ILogGroup | None = None
        if cloudwatch_logs:
            log_group = logs.LogGroup(
                self,
                "TrailLogs",
                log_group_name=f"{log_group_prefix}/cloudtrail",
                encryption_key=logs_key,
                retention=retention_days(log_retention_days),
                removal_policy=removal_policy,
            )
        self.trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=trail_name,
            bucket=bucket,
            encryption_key=key,
            enable_file_validation=True,
            is_multi_region_trail=True,
            include_global_service_events=True,
            management_events=cloudtrail.ReadWriteType.ALL,
            send_to_cloud_watch_logs=cloudwatch_logs,
            cloud_watch_log_group=log_group,
        )
        self.trail_bucket = bucket
        self.trail_key = key


def _kebab(name: str) -> str:
    """Return ``CacheShard1EngineCpu`` as ``cache-shard1-engine-cpu`` (alarm names)."""
    out = ""
    for index, char in enumerate(name):
        if char.isupper() and index and not name[index - 1].isupper():
            out += "-"
        out += char.lower()
    return out
