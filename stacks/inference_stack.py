"""InferenceStack: model serving in the cluster, plus the secrets path every platform namespace uses.

Helm add-ons: the External Secrets Operator (Secrets Manager -> Kubernetes Secrets), KEDA (event-driven
scaling) and KServe (Standard mode). cdk8s charts: the ClusterSecretStore, the inference namespace's
shared objects (prediction cache token, EFS models volume), vLLM (stable and canary), Triton, TGI, a
KServe InferenceService and batch inference on SQS. Every pod reaches AWS through its own EKS Pod
Identity role, scoped here: model servers read ``production/*`` of the models bucket and nothing else.

The stack only wires: what each object contains lives in ``k8s_charts/`` and ``platform_constructs/``.
Charts are applied from this stack (``attach_chart``), so the cluster stack's template stays small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from config.inference import BatchConfig, KServeModelConfig, TgiConfig, TritonConfig, VllmConfig
from config.model import NodePoolConfig
from k8s_charts import inference as chart_base
from k8s_charts.batch_inference import REQUESTS_PREFIX, RESULTS_PREFIX, BatchInferenceChart
from k8s_charts.inference import InferenceCommonChart, Placement, placement
from k8s_charts.kserve_models import KServeModelChart
from k8s_charts.tgi import TgiChart
from k8s_charts.triton import TritonChart
from k8s_charts.vllm import VllmChart
from platform_constructs.cache import CACHE_PORT
from platform_constructs.k8s_manifest import attach_chart
from platform_constructs.keda import Keda
from platform_constructs.kserve import KServe
from platform_constructs.pod_identity import PodIdentityRole
from platform_constructs.secure_bucket import bucket_name
from stacks.base import PlatformStack

SYSTEM_NODES = {"ml-platform/pool": "system"}
MODELS_PREFIX = "production/"


class InferenceStack(PlatformStack):
    """Define the stage's model serving and its secrets path.

    Args:
        cluster: the stage's EKS cluster (in the cluster stack).
        name_prefix: ``<project>-<stage>``; ESO may read secrets named ``<name_prefix>/...``.
        node_pools: the stage's pools (placement of each server: labels, taints, GPU resource).
        models_bucket: the bucket whose ``production/`` prefix holds the served models.
        datasets_bucket: the bucket batch inference reads requests from and writes results to.
        data_key: the key both buckets and the stage's secrets are encrypted with.
        cache_auth_secret: the cache's AUTH token (brought into the inference namespace).
        secret_store: the External Secrets store (platform services stack) the ExternalSecrets use.
        cache_endpoint_address: the cache's configuration endpoint.
        data_subnet_cidrs: the isolated subnets of the cache (the servers' egress allow).
        public_subnet_cidrs: the public subnets (the ALB, admitted to vLLM's port).
        node_subnet_cidrs: the node subnets, where pods (the unmeshed Prometheus) get their addresses.
        vllm: the vLLM server. Defaults to none.
        triton: the Triton server. Defaults to none.
        tgi: the TGI server. Defaults to none.
        kserve: the KServe InferenceService; KServe itself is installed only with one. Defaults to none.
        batch: batch inference (SQS queue, dead-letter queue, ScaledJob). Defaults to none.
        file_system_id: the shared EFS file system, for servers with ``model_source: efs``. Defaults to none.
        models_access_point_id: its models access point. Defaults to none.
        system_node_selector: where the add-ons' controllers run. Defaults to the system pool.
        service_mesh: Linkerd runs in the cluster (injection, mesh policies, canary routes). Defaults to True.
        monitoring: the Prometheus Operator runs in the cluster (PodMonitors). Defaults to True.
        target_group_arn: the edge ALB's vLLM target group. Defaults to none: no TargetGroupBinding.
        load_balancer_controller: the release that serves TargetGroupBindings. Defaults to none.
        namespaces_ready: what creates the platform namespaces (the tenancy chart). Defaults to none.
        cert_manager: the cert-manager release KServe's webhook certificate needs. Defaults to none.
        crds_ready: releases providing further CRDs the charts use (Linkerd policy and Gateway API, the
            Prometheus Operator's PodMonitor). Defaults to none.
        cache_port: the cache's port. Defaults to the DataStack's (6379).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        name_prefix: str,
        node_pools: Sequence[NodePoolConfig],
        models_bucket: s3.IBucket,
        datasets_bucket: s3.IBucket,
        data_key: kms.IKey,
        cache_auth_secret: secretsmanager.ISecret,
        secret_store: Construct,
        cache_endpoint_address: str,
        data_subnet_cidrs: Sequence[str],
        public_subnet_cidrs: Sequence[str],
        node_subnet_cidrs: Sequence[str],
        vllm: VllmConfig | None = None,
        triton: TritonConfig | None = None,
        tgi: TgiConfig | None = None,
        kserve: KServeModelConfig | None = None,
        batch: BatchConfig | None = None,
        file_system_id: str | None = None,
        models_access_point_id: str | None = None,
        system_node_selector: Mapping[str, str] = SYSTEM_NODES,
        service_mesh: bool = True,
        monitoring: bool = True,
        target_group_arn: str | None = None,
        load_balancer_controller: Construct | None = None,
        namespaces_ready: Construct | None = None,
        cert_manager: Construct | None = None,
        crds_ready: Sequence[Construct] = (),
        cache_port: int = CACHE_PORT,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._cluster = cluster
        self._models_bucket = models_bucket
        # IAM statements name the buckets by their deterministic names (secure_bucket.bucket_name): the ARN is
        # then a literal that each cdk-nag acknowledgement can quote, where the cross-stack token would render
        # as an Fn::GetStackOutput. The manifests keep the bucket tokens, which also order this stack after data.
        self._models_arn = self._bucket_arn(name_prefix, "models")
        self._datasets_arn = self._bucket_arn(name_prefix, "datasets")
        self._data_key = data_key
        self._pools = {p.name: p for p in node_pools}
        region = self.region
        charts = cdk8s.App()
        # Every chart writes into platform namespaces (or, for the store, serves them): they must exist first.
        prerequisites = [c for c in (namespaces_ready, *crds_ready) if c is not None]

        # The External Secrets store lives in the platform services stack (monitoring and workloads use it too).
        self.secret_store = secret_store

        self.keda = Keda(self, "Keda", cluster=cluster, node_selector=system_node_selector)

        # Only vLLM can read its weights from the EFS models access point instead of copying them from S3.
        efs_models = vllm is not None and vllm.model_source == "efs"
        common = attach_chart(
            self,
            "InferenceCommon",
            cluster=cluster,
            chart=InferenceCommonChart(
                charts,
                "inference-common",
                cache_auth_secret=cache_auth_secret.secret_arn,
                cache_port=cache_port,
                data_cidrs=data_subnet_cidrs,
                file_system_id=file_system_id if efs_models else None,
                models_access_point_id=models_access_point_id if efs_models else None,
            ),
        )
        # The ExternalSecret needs ESO's CRD and the store it reads through; the namespace must exist.
        common.node.add_dependency(self.secret_store, *prerequisites)
        # Servers' environment names the cache token Secret: create it before the pods that mount it.
        server_prerequisites = [common, self.keda.release, *prerequisites]

        self.vllm: eks.KubernetesManifest | None = None
        if vllm is not None:
            role = self._models_reader("VllmRole", "vllm", "vLLM: read the production models")
            self.vllm = attach_chart(
                self,
                "Vllm",
                cluster=cluster,
                chart=VllmChart(
                    charts,
                    "vllm",
                    image_tag=vllm.image_tag,
                    models_bucket_name=models_bucket.bucket_name,
                    model_path=vllm.model_path,
                    served_model_name=vllm.served_model_name,
                    placement=self._placement(vllm.pool, vllm.workload_type, vllm.gpu, vllm.priority_class),
                    region=region,
                    tensor_parallel_size=vllm.tensor_parallel_size,
                    gpu_memory_utilization=vllm.gpu_memory_utilization,
                    max_model_len=vllm.max_model_len,
                    enable_prefix_caching=vllm.enable_prefix_caching,
                    replicas=vllm.replicas,
                    cpu=vllm.cpu,
                    memory_gib=vllm.memory_gib,
                    model_storage_gib=vllm.model_storage_gib,
                    model_source=vllm.model_source,
                    autoscaling=vllm.autoscaling,
                    canary=vllm.canary,
                    target_group_arn=target_group_arn,
                    alb_cidrs=public_subnet_cidrs,
                    scraper_cidrs=node_subnet_cidrs,
                    cache_host=cache_endpoint_address,
                    cache_port=cache_port,
                    service_mesh=service_mesh,
                    monitoring=monitoring,
                ),
            )
            # KEDA's CRDs (ScaledObject), the cache token Secret, the namespace; the pods' AWS identity before
            # their first model download.
            self.vllm.node.add_dependency(*server_prerequisites, role.association, role.node.find_child("Policy"))
            if target_group_arn is not None and load_balancer_controller is not None:
                # The controller installs the TargetGroupBinding CRD and registers the pods in the group.
                self.vllm.node.add_dependency(load_balancer_controller)

        if triton is not None:
            role = self._models_reader("TritonRole", "triton", "Triton: read the production model repository")
            chart = attach_chart(
                self,
                "Triton",
                cluster=cluster,
                chart=TritonChart(
                    charts,
                    "triton",
                    image_tag=triton.image_tag,
                    models_bucket_name=models_bucket.bucket_name,
                    model_repository=triton.model_repository,
                    placement=self._placement(triton.pool, triton.workload_type, triton.gpu, triton.priority_class),
                    region=region,
                    replicas=triton.replicas,
                    cpu=triton.cpu,
                    memory_gib=triton.memory_gib,
                    model_storage_gib=triton.model_storage_gib,
                    autoscaling=triton.autoscaling,
                    service_mesh=service_mesh,
                    monitoring=monitoring,
                ),
            )
            # KEDA's CRDs and the namespace; the pods' AWS identity before the repository download.
            chart.node.add_dependency(*server_prerequisites, role.association, role.node.find_child("Policy"))

        if tgi is not None:
            role = self._models_reader("TgiRole", "tgi", "TGI: read the production models")
            chart = attach_chart(
                self,
                "Tgi",
                cluster=cluster,
                chart=TgiChart(
                    charts,
                    "tgi",
                    image_tag=tgi.image_tag,
                    models_bucket_name=models_bucket.bucket_name,
                    model_path=tgi.model_path,
                    placement=self._placement(tgi.pool, tgi.workload_type, tgi.gpu, tgi.priority_class),
                    region=region,
                    max_input_tokens=tgi.max_input_tokens,
                    max_total_tokens=tgi.max_total_tokens,
                    replicas=tgi.replicas,
                    cpu=tgi.cpu,
                    memory_gib=tgi.memory_gib,
                    model_storage_gib=tgi.model_storage_gib,
                    scraper_cidrs=node_subnet_cidrs,
                    service_mesh=service_mesh,
                    monitoring=monitoring,
                ),
            )
            # The namespace; the pods' AWS identity before the model download.
            chart.node.add_dependency(*prerequisites, role.association, role.node.find_child("Policy"))

        self.kserve: KServe | None = None
        if kserve is not None:
            self.kserve = KServe(self, "KServe", cluster=cluster, node_selector=system_node_selector, region=region)
            if cert_manager is not None:
                # The controller's webhook certificate is a cert-manager Certificate in the release.
                self.kserve.release.node.add_dependency(cert_manager)
            role = self._models_reader("KServeRole", "kserve-models", "KServe predictors: read the production models")
            chart = attach_chart(
                self,
                "KServeModels",
                cluster=cluster,
                chart=KServeModelChart(
                    charts,
                    "kserve-models",
                    name=kserve.name,
                    model_format=kserve.model_format,
                    runtime_image_tag=kserve.runtime_image_tag,
                    models_bucket_name=models_bucket.bucket_name,
                    storage_path=kserve.storage_path,
                    placement=self._placement(kserve.pool, kserve.workload_type, None, kserve.priority_class),
                    min_replicas=kserve.min_replicas,
                    max_replicas=kserve.max_replicas,
                    cpu=kserve.cpu,
                    memory_gib=kserve.memory_gib,
                    service_mesh=service_mesh,
                ),
            )
            # KServe's CRDs and webhooks (InferenceService, ServingRuntime); the storage initializer's identity.
            chart.node.add_dependency(
                self.kserve.release, *prerequisites, role.association, role.node.find_child("Policy")
            )

        self.queue: sqs.Queue | None = None
        self.dead_letter_queue: sqs.Queue | None = None
        if batch is not None:
            self._batch(batch, charts, datasets_bucket, prerequisites)

    def _bucket_arn(self, name_prefix: str, purpose: str) -> str:
        name = bucket_name(prefix=name_prefix, purpose=purpose, account=self.account, region=self.region)
        return f"arn:{self.partition}:s3:::{name}"

    def _placement(self, pool_name: str, workload_type: str, gpu: Any, priority_class: str | None) -> Placement:
        pool = self._pools.get(pool_name)
        if pool is None:
            raise ValueError(f"no node pool named {pool_name!r} (pools: {', '.join(self._pools)})")
        return placement(pool, workload_type=workload_type, gpu=gpu, priority_class=priority_class)

    def _models_reader(self, construct_id: str, service_account: str, description: str) -> PodIdentityRole:
        """Return a Pod Identity role for ``inference/<service_account>`` that reads the production models."""
        role = PodIdentityRole(
            self,
            construct_id,
            cluster=self._cluster,
            namespace=chart_base.NAMESPACE,
            service_account=service_account,
            description=description,
        )
        policy = iam.Policy(role, "Policy", statements=self._models_statements())
        policy.attach_to_role(role.role)
        self._acknowledge_models_read(policy)
        return role

    def _models_statements(self) -> list[iam.PolicyStatement]:
        return [
            iam.PolicyStatement(
                sid="ReadProductionModels",
                actions=["s3:GetObject"],
                resources=[f"{self._models_arn}/{MODELS_PREFIX}*"],
            ),
            iam.PolicyStatement(
                sid="ListProductionModels",
                actions=["s3:ListBucket"],
                resources=[self._models_arn],
                # aws s3 sync lists the folder first; the listing is limited to the same prefix.
                conditions={"StringLike": {"s3:prefix": [MODELS_PREFIX, f"{MODELS_PREFIX}*"]}},
            ),
            self._decrypt_through_s3(["kms:Decrypt"]),
        ]

    def _decrypt_through_s3(self, actions: list[str]) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="UseDataKeyThroughS3",
            actions=actions,
            resources=[self._data_key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
        )

    def _acknowledge_models_read(self, policy: iam.Policy) -> None:
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{self._models_arn}/{MODELS_PREFIX}*]",
                reason="Model servers read whichever model release is promoted under production/; the wildcard is "
                "limited to that prefix of the stage's models bucket and to s3:GetObject.",
            )
        )

    def _batch(
        self, batch: BatchConfig, charts: cdk8s.App, datasets_bucket: s3.IBucket, prerequisites: list[Construct]
    ) -> None:
        visibility = cdk.Duration.minutes(batch.visibility_timeout_minutes)
        self.dead_letter_queue = sqs.Queue(
            self,
            "BatchRequestsDeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Failed requests wait two weeks (the SQS maximum) for someone to look at them.
            retention_period=cdk.Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "BatchRequests",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=visibility,
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=batch.max_receive_count, queue=self.dead_letter_queue
            ),
        )
        cdk.Validations.of(self.dead_letter_queue).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is the dead-letter queue of the batch requests queue; a dead-letter queue of "
                "its own would only move the failed requests once more.",
            )
        )
        # KEDA's operator reads the queue length for the ScaledJob's trigger, nothing else.
        keda_policy = iam.Policy(
            self,
            "KedaQueueLength",
            statements=[
                iam.PolicyStatement(
                    sid="ReadQueueLength", actions=["sqs:GetQueueAttributes"], resources=[self.queue.queue_arn]
                )
            ],
        )
        keda_policy.attach_to_role(self.keda.operator_role)

        role = PodIdentityRole(
            self,
            "BatchRole",
            cluster=self._cluster,
            namespace=chart_base.NAMESPACE,
            service_account="batch-inference",
            description="Batch inference jobs: take requests from the queue, read the model, write results",
        )
        requests_objects = f"{self._datasets_arn}/{REQUESTS_PREFIX}*"
        results_objects = f"{self._datasets_arn}/{RESULTS_PREFIX}*"
        statements = [
            *self._models_statements()[:2],
            iam.PolicyStatement(
                sid="TakeRequests",
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                resources=[self.queue.queue_arn],
            ),
            iam.PolicyStatement(sid="ReadRequests", actions=["s3:GetObject"], resources=[requests_objects]),
            iam.PolicyStatement(sid="WriteResults", actions=["s3:PutObject"], resources=[results_objects]),
            self._decrypt_through_s3(["kms:Decrypt", "kms:GenerateDataKey"]),
        ]
        policy = iam.Policy(role, "Policy", statements=statements)
        policy.attach_to_role(role.role)
        self._acknowledge_models_read(policy)
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{requests_objects}]",
                reason="Each job reads the one request file its SQS message names; the wildcard is limited to the "
                "datasets bucket's processed/batch-requests/ prefix and to s3:GetObject.",
            ),
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{results_objects}]",
                reason="Each job writes the results of its request under a name derived from it; the wildcard is "
                "limited to the datasets bucket's processed/batch-results/ prefix and to s3:PutObject.",
            ),
        )
        chart = attach_chart(
            self,
            "BatchInference",
            cluster=self._cluster,
            chart=BatchInferenceChart(
                charts,
                "batch-inference",
                queue_url=self.queue.queue_url,
                region=self.region,
                image_tag=batch.image_tag,
                models_bucket_name=self._models_bucket.bucket_name,
                model_path=batch.model_path,
                datasets_bucket_name=datasets_bucket.bucket_name,
                placement=self._placement(batch.pool, batch.workload_type, batch.gpu, batch.priority_class),
                visibility_timeout_minutes=batch.visibility_timeout_minutes,
                max_parallel_jobs=batch.max_parallel_jobs,
                cpu=batch.cpu,
                memory_gib=batch.memory_gib,
                model_storage_gib=batch.model_storage_gib,
                max_model_len=batch.max_model_len,
                gpu_memory_utilization=batch.gpu_memory_utilization,
            ),
        )
        # KEDA's CRDs (ScaledJob, TriggerAuthentication) and the operator's queue permission; the jobs' identity.
        chart.node.add_dependency(self.keda.release, keda_policy, *prerequisites, role.association, policy)
