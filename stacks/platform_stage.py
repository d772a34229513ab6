"""PlatformStage: every stack of one stage, wired from its config. The pipeline deploys this class too."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from config.model import StageConfig
from platform_constructs.scheduling_check import SchedulingCheck
from stacks.cluster_stack import ClusterStack
from stacks.cost_stack import CostStack
from stacks.data_stack import DataStack
from stacks.edge_stack import EdgeStack
from stacks.keys_stack import KeysStack
from stacks.network_stack import NetworkStack
from stacks.platform_services_stack import PlatformServicesStack
from stacks.replica_stack import ReplicaStack
from stacks.workstation_stack import WorkstationStack


def stage_construct_id(stage: str) -> str:
    """Return the Stage's construct ID (``dev`` -> ``Dev``): ``cdk deploy 'Dev/*'`` deploys the stage."""
    return stage[:1].upper() + stage[1:]


class PlatformStage(cdk.Stage):
    """Define one stage of the platform (dev, staging, prod or any other stage file).

    Args:
        config: the validated stage config; stacks receive flat values unpacked from it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        env = cdk.Environment(account=config.account, region=config.region)
        super().__init__(scope, construct_id, env=env, **kwargs)
        prefix = f"{config.project}-{config.stage}"
        retain = config.data.removal_policy == "retain"
        stateful_removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        common: dict[str, Any] = {"env": env, "availability_zones": config.availability_zones}

        self.keys = KeysStack(
            self,
            "Keys",
            stack_name=f"{prefix}-keys",
            description=f"{prefix}: shared KMS keys (stateful)",
            termination_protection=config.termination_protection,
            name_prefix=prefix,
            removal_policy=stateful_removal,
            **common,
        )
        net = config.network
        self.network = NetworkStack(
            self,
            "Network",
            stack_name=f"{prefix}-network",
            description=f"{prefix}: VPC, subnets, NAT, endpoints, flow logs",
            vpc_cidr=net.vpc_cidr,
            public_subnets=net.public_subnets,
            data_subnets=net.data_subnets,
            node_subnets=net.node_subnets,
            nat_gateways=net.nat_gateways,
            interface_endpoints=net.interface_endpoints,
            flow_log_retention_days=net.flow_log_retention_days,
            logs_key=self.keys.logs_key,
            discovery_tag=prefix,
            removal_policy=cdk.RemovalPolicy.DESTROY if config.tier == "dev" else cdk.RemovalPolicy.RETAIN,
            **common,
        )
        data = config.data
        buckets = data.buckets
        lifecycle: dict[str, int] = {
            "datasets_glacier_after_days": buckets.datasets_glacier_after_days,
            "models_noncurrent_archive_after_days": buckets.models_noncurrent_archive_after_days,
            "models_noncurrent_expire_after_days": buckets.models_noncurrent_expire_after_days,
            "access_log_expire_after_days": buckets.access_log_expire_after_days,
        }
        self.replica: ReplicaStack | None = None
        if buckets.replication_region is not None:
            self.replica = ReplicaStack(
                self,
                "Replica",
                stack_name=f"{prefix}-replica",
                description=f"{prefix}: cross-region replicas of the datasets and models buckets (stateful)",
                termination_protection=config.termination_protection,
                env=cdk.Environment(account=config.account, region=buckets.replication_region),
                # No VPC in the replica region, so no zones to fix.
                availability_zones=(),
                name_prefix=prefix,
                removal_policy=stateful_removal,
                **lifecycle,
            )
        rds = data.rds
        cache = data.cache
        self.data = DataStack(
            self,
            "Data",
            stack_name=f"{prefix}-data",
            description=f"{prefix}: buckets, EFS, PostgreSQL, cache (stateful)",
            termination_protection=config.termination_protection,
            name_prefix=prefix,
            vpc=self.network.vpc,
            node_subnets=self.network.node_subnets,
            data_subnets=self.network.data_subnets,
            node_security_group=self.network.node_security_group,
            logs_key=self.keys.logs_key,
            removal_policy=stateful_removal,
            deletion_protection=config.tier != "dev",
            log_retention_days=config.log_retention_days,
            **lifecycle,
            file_system_backup=data.efs_backup,
            database_engine_version=rds.engine_version,
            database_instance_class=rds.instance_class,
            database_allocated_storage_gib=rds.allocated_storage_gib,
            database_max_allocated_storage_gib=rds.max_allocated_storage_gib,
            database_multi_az=rds.multi_az,
            database_backup_retention_days=rds.backup_retention_days,
            cache_engine=cache.engine,
            cache_node_type=cache.node_type,
            cache_shards=cache.shards,
            cache_replicas_per_shard=cache.replicas_per_shard,
            cache_snapshot_retention_days=cache.snapshot_retention_days,
            replica=self.replica,
            **common,
        )
        if config.components.eks:
            cluster = config.cluster
            self.cluster = ClusterStack(
                self,
                "Cluster",
                stack_name=f"{prefix}-cluster",
                description=f"{prefix}: EKS {cluster.kubernetes_version}, add-ons, node pools, Karpenter",
                vpc=self.network.vpc,
                node_subnets=self.network.node_subnets,
                node_security_group=self.network.node_security_group,
                secrets_key=self.keys.cluster_key,
                logs_key=self.keys.logs_key,
                cluster_name=prefix,
                kubernetes_version=cluster.kubernetes_version,
                public_access_cidrs=cluster.public_access_cidrs,
                admin_role_arns=cluster.admin_role_arns,
                readonly_role_arns=cluster.readonly_role_arns,
                node_pools=cluster.node_pools,
                log_retention_days=config.log_retention_days,
                file_system_id=self.data.file_system.file_system_id,
                karpenter=config.components.karpenter,
                **common,
            )
        if config.components.eks:
            self.platform = PlatformServicesStack(
                self,
                "Platform",
                stack_name=f"{prefix}-platform",
                description=f"{prefix}: tenancy guardrails, GPU Operator, service mesh",
                cluster=self.cluster.cluster_ref,
                kubernetes_version=config.cluster.kubernetes_version,
                node_pools=config.cluster.node_pools,
                mig_layouts=config.cluster.mig_layouts,
                priority_classes=config.tenancy.priority_classes,
                quotas=config.tenancy.quotas,
                node_cidrs=config.network.node_subnets,
                gpu_operator_enabled=config.components.gpu_operator,
                mesh_enabled=config.components.linkerd,
                high_availability=config.is_prod,
                app_secrets=[self.data.database_secret, self.data.cache_auth_secret],
                app_secret_prefix=f"{prefix}/",
                secrets_key=self.data.data_key,
                **common,
            )
            # Every workload the stage applies must fit a node pool and its namespace quota (fails synth if not).
            cdk.Validations.of(self).add_plugins(
                SchedulingCheck(
                    pools=config.cluster.node_pools,
                    quotas=config.tenancy.quotas,
                    mig_layouts=config.cluster.mig_layouts,
                )
            )
        # anchor: platform services stack
        self.edge: EdgeStack | None = None
        if config.components.edge:
            edge = config.edge
            self.edge = EdgeStack(
                self,
                "Edge",
                stack_name=f"{prefix}-edge",
                description=f"{prefix}: inference ALB, WAF, certificate, load balancer controller",
                vpc=self.network.vpc,
                node_security_group=self.network.node_security_group,
                logs_key=self.keys.logs_key,
                name_prefix=prefix,
                internet_facing=edge.internet_facing,
                domain_name=edge.domain_name,
                hosted_zone_id=edge.hosted_zone_id,
                hosted_zone_name=edge.hosted_zone_name,
                certificate_arn=edge.certificate_arn,
                rate_limit_per_window=edge.rate_limit_per_window,
                rate_limit_window_seconds=edge.rate_limit_window_seconds,
                openai_paths=edge.openai_paths,
                idle_timeout_seconds=edge.idle_timeout_seconds,
                waf_log_retention_days=edge.waf_log_retention_days,
                access_log_expire_after_days=edge.access_log_expire_after_days,
                # Config already refuses an unprotected prod edge; the tier keeps prod protected regardless.
                deletion_protection=edge.deletion_protection or config.is_prod,
                removal_policy=cdk.RemovalPolicy.DESTROY if config.tier == "dev" else cdk.RemovalPolicy.RETAIN,
                cluster=self.cluster.cluster_ref if config.components.eks else None,
                cluster_name=prefix if config.components.eks else None,
                **common,
            )
        # anchor: edge stack
        if config.components.eks and config.components.inference:
            # Imported here so that this block stays the stage's one insertion for the inference area.
            from config.inference import check_inference
            from stacks.inference_stack import InferenceStack

            inference = config.inference
            # Refuse servers the pools cannot hold (no GPU, tensor parallelism, MIG profile) before any construct.
            check_inference(
                inference,
                pools=config.cluster.node_pools,
                mig_layouts=config.cluster.mig_layouts,
                priority_classes=config.tenancy.priority_classes,
                service_mesh=config.components.linkerd,
            )
            edge_stack = self.edge
            self.inference = InferenceStack(
                self,
                "Inference",
                stack_name=f"{prefix}-inference",
                description=f"{prefix}: model serving (vLLM, Triton, TGI, KServe, batch), KEDA, External Secrets",
                cluster=self.cluster.cluster_ref,
                name_prefix=prefix,
                node_pools=config.cluster.node_pools,
                models_bucket=self.data.models_bucket,
                datasets_bucket=self.data.datasets_bucket,
                data_key=self.data.data_key,
                cache_auth_secret=self.data.cache_auth_secret,
                secret_store=self.platform.secret_store,
                cache_endpoint_address=self.data.cache_endpoint_address,
                data_subnet_cidrs=config.network.data_subnets,
                public_subnet_cidrs=config.network.public_subnets,
                node_subnet_cidrs=config.network.node_subnets,
                vllm=inference.vllm,
                triton=inference.triton,
                tgi=inference.tgi,
                kserve=inference.kserve,
                batch=inference.batch,
                file_system_id=self.data.file_system.file_system_id,
                models_access_point_id=self.data.models_access_point.access_point_id,
                service_mesh=config.components.linkerd,
                monitoring=config.components.monitoring,
                target_group_arn=edge_stack.vllm_target_group.target_group_arn if edge_stack else None,
                load_balancer_controller=(
                    edge_stack.controller.release if edge_stack is not None and edge_stack.controller else None
                ),
                namespaces_ready=self.platform.tenancy,
                cert_manager=self.platform.cert_manager.release if self.platform.cert_manager else None,
                # The proxy injector and the policy validator (Server, AuthorizationPolicy, HTTPRoute CRDs).
                crds_ready=[self.platform.linkerd.control_plane] if self.platform.linkerd else [],
                **common,
            )
        # anchor: inference stack
        components = config.components
        if components.eks and (components.agents or components.mlops or components.training):
            # Imported here so that this block stays the stage's one insertion for the workloads area.
            from stacks.workloads_stack import WorkloadsStack, agent_services

            work = config.workloads
            training = work.training
            # Namespaces (tenancy) and, when the inference stack installs it, the External Secrets store.
            workload_prerequisites: list[Construct] = [self.platform.tenancy, self.platform.secret_store]
            self.workloads = WorkloadsStack(
                self,
                "Workloads",
                stack_name=f"{prefix}-workloads",
                description=f"{prefix}: agents, MLflow, Feast, Kubeflow Trainer, KubeRay, EMR on EKS, SageMaker",
                cluster=self.cluster.cluster_ref,
                name_prefix=prefix,
                kubernetes_version=config.cluster.kubernetes_version,
                vpc=self.network.vpc,
                node_subnets=self.network.node_subnets,
                data_subnet_cidrs=config.network.data_subnets,
                datasets_bucket=self.data.datasets_bucket,
                models_bucket=self.data.models_bucket,
                data_key=self.data.data_key,
                file_system=self.data.file_system,
                checkpoints_access_point=self.data.checkpoints_access_point,
                datasets_access_point=self.data.datasets_access_point,
                database=self.data.database,
                database_secret=self.data.database_secret,
                cache_endpoint_address=self.data.cache_endpoint_address,
                cache_auth_secret=self.data.cache_auth_secret,
                node_pools=config.cluster.node_pools,
                agents=agent_services(work.agents),
                agents_priority_class="critical-agents" if config.is_prod else None,
                mlflow_image_repository=work.mlflow.image.repository,
                mlflow_image_tag=work.mlflow.image.tag,
                mlflow_replicas=work.mlflow.replicas,
                mlflow_cpu_millicores=work.mlflow.cpu_millicores,
                mlflow_memory_mib=work.mlflow.memory_mib,
                mlflow_database=work.mlflow.database,
                database_client_image=work.database_client_image.ref,
                feast_image=work.feast.image.ref,
                feast_replicas=work.feast.replicas,
                feast_cpu_millicores=work.feast.cpu_millicores,
                feast_memory_mib=work.feast.memory_mib,
                feast_materialization_schedule=work.feast.materialization_schedule,
                feast_project=work.feast.project,
                feast_database=work.feast.database,
                wandb_enabled=work.wandb.enabled,
                wandb_secret_name=work.wandb.secret_name,
                pytorch_image=training.pytorch_image.ref,
                ray_image=training.ray_image.ref,
                ray_version=training.ray_version,
                data_sync_image=training.data_sync_image.ref,
                checkpoint_interval_minutes=training.checkpoint_interval_minutes,
                spot_allowed=training.spot_allowed,
                termination_grace_seconds=training.termination_grace_seconds,
                example_workers=training.example_workers,
                promotion_threshold=training.promotion_threshold,
                emr_on_eks=work.data_processing.emr_on_eks,
                sagemaker=work.data_processing.sagemaker,
                agents_enabled=components.agents,
                mlops_enabled=components.mlops,
                training_enabled=components.training,
                # The PodMonitor needs the Prometheus Operator CRDs: the monitoring stack must deploy first.
                pod_monitor=components.monitoring,
                prerequisites=workload_prerequisites,
                **common,
            )
        # anchor: workloads stack
        # Imported here so that this block stays the stage's one insertion for the observability area.
        from config.catalog import INSTANCE_TYPES
        from config.pools import POOL_LABEL
        from platform_constructs.cache import Cache
        from platform_constructs.logging import container_log_group_name
        from stacks.monitoring_stack import MonitoringStack
        from stacks.observability_stack import ObservabilityStack

        obs = config.observability
        # The DataStack keeps the replication group on its Cache construct and has no attribute for its id.
        cache_construct = self.data.node.find_child("Cache")
        if not isinstance(cache_construct, Cache):
            raise TypeError("DataStack's 'Cache' child is not a platform_constructs.cache.Cache")
        self.observability = ObservabilityStack(
            self,
            "Observability",
            stack_name=f"{prefix}-observability",
            description=f"{prefix}: alarm topic, CloudWatch alarms and dashboard, CloudTrail",
            termination_protection=config.termination_protection,
            name_prefix=prefix,
            thresholds=obs.thresholds,
            alarm_emails=obs.alarm_emails,
            logs_key=self.keys.logs_key,
            log_group_prefix=f"/{config.project}/{config.stage}",
            log_retention_days=config.log_retention_days,
            removal_policy=stateful_removal,
            database=self.data.database,
            database_allocated_storage_gib=config.data.rds.allocated_storage_gib,
            cache_replication_group_id=cache_construct.replication_group.ref,
            cache_shards=config.data.cache.shards,
            cache_replicas_per_shard=config.data.cache.replicas_per_shard,
            file_system=self.data.file_system,
            load_balancer=self.edge.load_balancer if self.edge is not None else None,
            web_acl=self.edge.web_acl.web_acl if self.edge is not None else None,
            cloudtrail_enabled=obs.cloudtrail.enabled,
            cloudtrail_glacier_after_days=obs.cloudtrail.glacier_after_days,
            cloudtrail_expire_after_days=obs.cloudtrail.expire_after_days,
            cloudtrail_cloudwatch_logs=obs.cloudtrail.cloudwatch_logs,
            **common,
        )
        if config.components.eks and config.components.monitoring:
            pools = config.cluster.node_pools
            # The tenancy chart creates the monitoring and node-exporter namespaces; Grafana's ExternalSecret
            # needs the External Secrets store (platform services stack).
            monitoring_prerequisites: list[Construct] = [self.platform.tenancy, self.platform.secret_store]
            prometheus = obs.prometheus
            self.monitoring = MonitoringStack(
                self,
                "Monitoring",
                stack_name=f"{prefix}-monitoring",
                description=f"{prefix}: Prometheus, Alertmanager, Grafana, Fluent Bit, OpenTelemetry collector",
                cluster=self.cluster.cluster_ref,
                name_prefix=prefix,
                kubernetes_version=config.cluster.kubernetes_version,
                alert_topic=self.observability.alarm_topic,
                alert_topic_key=self.observability.alarm_topic_key,
                logs_key=self.keys.logs_key,
                node_selector={POOL_LABEL: "system"},
                node_taints=sorted({(t.key, t.effect) for p in pools for t in p.taints}),
                node_cidrs=config.network.node_subnets,
                instance_hourly_usd={t: INSTANCE_TYPES[t].hourly_usd for p in pools for t in p.instance_types},
                thresholds=obs.thresholds,
                container_log_group_name=container_log_group_name(config.project, config.stage),
                container_log_retention_days=obs.container_log_retention_days,
                removal_policy=stateful_removal,
                prometheus_retention=prometheus.retention,
                prometheus_volume_gib=prometheus.volume_gib,
                prometheus_replicas=prometheus.replicas,
                prometheus_memory_gib=prometheus.memory_gib,
                alertmanager_replicas=obs.alertmanager.replicas,
                notify_severities=obs.alertmanager.notify_severities,
                opentelemetry_operator=obs.opentelemetry_operator,
                prerequisites=monitoring_prerequisites,
                **common,
            )
            # The inference servers' and training jobs' PodMonitors need the Prometheus Operator CRDs that the
            # monitoring stack's release installs.
            for consumer in (getattr(self, "inference", None), getattr(self, "workloads", None)):
                if consumer is not None:
                    consumer.add_stack_dependency(self.monitoring, "PodMonitor objects need the monitoring CRDs")
        # anchor: observability stack
        if config.components.backup:
            # Imported here so that this block stays the stage's one insertion for the backup area.
            from config.pools import POOL_LABEL
            from k8s_charts.backup_schedules import NamespaceSchedule
            from stacks.backup_stack import BackupStack, VeleroStack
            from stacks.cluster_stack import SYSTEM_POOL

            backups = config.backup
            retention = backups.retention
            lock = backups.vault_lock
            self.backup = BackupStack(
                self,
                "Backup",
                stack_name=f"{prefix}-backup",
                description=f"{prefix}: AWS Backup vault and plan, Velero bucket (stateful)",
                termination_protection=config.termination_protection,
                name_prefix=prefix,
                database=self.data.database,
                file_system=self.data.file_system,
                removal_policy=stateful_removal,
                schedule_hour_utc=backups.schedule_hour_utc,
                daily_days=retention.daily_days,
                weekly_days=retention.weekly_days,
                monthly_days=retention.monthly_days,
                cold_storage_after_days=retention.cold_storage_after_days,
                vault_lock_min_retention_days=lock.min_retention_days if lock else None,
                vault_lock_max_retention_days=lock.max_retention_days if lock else None,
                vault_lock_changeable_for_days=lock.changeable_for_days if lock else None,
                velero_noncurrent_expire_after_days=backups.velero_bucket_noncurrent_days,
                access_log_expire_after_days=data.buckets.access_log_expire_after_days,
                **common,
            )
            if config.components.eks:
                self.velero = VeleroStack(
                    self,
                    "Velero",
                    stack_name=f"{prefix}-velero",
                    description=f"{prefix}: Velero server and schedules",
                    cluster=self.cluster.cluster_ref,
                    bucket_name=self.backup.velero_bucket_name,
                    key=self.backup.velero_key,
                    node_selector={POOL_LABEL: SYSTEM_POOL},
                    schedules={
                        namespace: NamespaceSchedule(cron=s.cron, ttl=s.ttl, snapshot_volumes=s.snapshot_volumes)
                        for namespace, s in backups.velero_schedules.items()
                    },
                    **common,
                )
        # anchor: backup stack
        workstation = config.workstation
        if config.components.workstation or workstation.enabled:
            self.workstation = WorkstationStack(
                self,
                "Workstation",
                stack_name=f"{prefix}-workstation",
                description=f"{prefix}: ML workstation (EC2, SSM Session Manager, JupyterLab)",
                termination_protection=config.termination_protection,
                name_prefix=prefix,
                vpc=self.network.vpc,
                subnets=self.network.node_subnets,
                datasets_bucket=self.data.datasets_bucket,
                models_bucket=self.data.models_bucket,
                data_key=self.data.data_key,
                logs_key=self.keys.logs_key,
                log_group_prefix=f"/{config.project}/{config.stage}/workstation",
                log_retention_days=config.log_retention_days,
                instance_type=workstation.instance_type,
                gpu=workstation.gpu,
                recoverable=workstation.recoverable,
                root_volume_gib=workstation.root_volume_gib,
                ingress_cidrs=workstation.ingress_cidrs,
                instance_termination_protection=config.tier != "dev",
                removal_policy=cdk.RemovalPolicy.DESTROY if config.tier == "dev" else cdk.RemovalPolicy.RETAIN,
                cpu_alarm_percent=workstation.cpu_alarm_percent,
                stop_hour_utc=workstation.stop_hour_utc,
                ami_id=workstation.ami_id,
                alarm_topic=self.observability.alarm_topic,
                **common,
            )
        if config.cost.budget_monthly_usd is not None:
            # A budget covers the whole stage; it alerts the stage's alarm topic.
            self.cost = CostStack(
                self,
                "Cost",
                stack_name=f"{prefix}-cost",
                description=f"{prefix}: monthly budget and its notifications",
                termination_protection=config.termination_protection,
                name_prefix=prefix,
                stage=config.stage,
                limit_usd=config.cost.budget_monthly_usd,
                alert_percentages=config.cost.budget_alert_percentages,
                alarm_topic=self.observability.alarm_topic,
                alarm_topic_key=self.observability.alarm_topic_key,
                **common,
            )
        # anchor: workstation stack
        for key, value in config.tags.items():
            cdk.Tags.of(self).add(key, value)
