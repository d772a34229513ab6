"""WorkloadsStack: agents, MLOps services, training and data processing on the stage's cluster (issue #6).

Kubernetes objects come from ``k8s_charts/{agents,mlops,training}.py``; Helm releases (MLflow, Kubeflow
Trainer, KubeRay) from ``platform_constructs``; the AWS side (Pod Identity roles, the W&B secret, EMR on EKS,
SageMaker) is created here next to the workloads that use it. Stateless: nothing here holds data (the data
lives in the DataStack), so the stack can be replaced at any time.

Deploy order this stack relies on (stack dependencies are added by ``PlatformStage``): the tenancy namespaces
(platform services), the External Secrets operator and its ClusterSecretStore, and, for the PodMonitor, the
Prometheus Operator CRDs (observability).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from config.model import NodePoolConfig
from config.workloads import AgentsConfig
from k8s_charts.agents import AGENT_NODE_SELECTOR, AgentsChart, AgentService, LlmBackendSpec
from k8s_charts.mlops import FEAST_SERVICE_ACCOUNT, DataProcessingChart, MlopsChart
from k8s_charts.mlops import NAMESPACE as MLOPS_NAMESPACE
from k8s_charts.training import (
    NAMESPACE as TRAINING_NAMESPACE,
)
from k8s_charts.training import (
    PIPELINE_SERVICE_ACCOUNT,
    TRAINING_SERVICE_ACCOUNT,
    JobSettings,
    TrainingChart,
    find_gpu_pool,
    gpu_placement,
)
from platform_constructs.k8s_manifest import attach_chart
from platform_constructs.mlflow import Mlflow, acknowledge_wildcards, bucket_access_statements, mlflow_values
from platform_constructs.pod_identity import PodIdentityRole
from platform_constructs.training_operators import EmrOnEks, KubeflowTrainer, KubeRayOperator, SageMakerTraining
from stacks.base import PlatformStack

# Controllers and CPU services run on the system pool (its single-valued workload-type label is "control").
SYSTEM_NODE_SELECTOR = dict(AGENT_NODE_SELECTOR)
FEATURES_PREFIX = "processed/features/"
_PREFIX_REASON = (
    "object ARNs end in named key prefixes of the stage's buckets only (S3 object keys have no finer name), and "
    "ListBucket is limited to the same prefixes by an s3:prefix condition"
)


def agent_services(agents: AgentsConfig) -> list[AgentService]:
    """Return the agent services of a stage's ``workloads.agents`` (used by ``PlatformStage`` to unpack it)."""
    return [
        AgentService(
            name=name,
            image=agent.image.ref,
            replicas=agent.replicas,
            backends={
                backend_name: LlmBackendSpec(
                    model=b.model,
                    endpoint=b.endpoint,
                    max_tokens=b.max_tokens,
                    requests_per_minute=b.requests_per_minute,
                )
                for backend_name, b in agent.backends.items()
            },
            prompt_template_version=agent.prompt_template_version,
            cpu_millicores=agent.cpu_millicores,
            memory_mib=agent.memory_mib,
        )
        for name, agent in agents.items()
    ]


class WorkloadsStack(PlatformStack):
    """Define the workloads of one stage's cluster.

    Args:
        cluster: the stage's EKS cluster.
        name_prefix: ``<project>-<stage>``, the start of every name.
        kubernetes_version: the cluster's minor version (Pod Security labels of the EMR namespace).
        vpc: the stage's VPC.
        node_subnets: the cluster's subnets (SageMaker training jobs run there too).
        data_subnet_cidrs: the data subnets (PostgreSQL and Valkey egress allows).
        datasets_bucket: the datasets bucket.
        models_bucket: the models bucket.
        data_key: the key of both buckets, EFS and the data secrets.
        file_system: the shared EFS file system.
        checkpoints_access_point: its ``Checkpoints`` access point.
        datasets_access_point: its ``Datasets`` access point.
        database: the PostgreSQL instance (MLflow tracking, Feast registry).
        database_secret: its admin secret.
        cache_endpoint_address: the Valkey configuration endpoint.
        cache_auth_secret: the Valkey AUTH token secret.
        node_pools: the stage's pool specs (where the GPU workers go).
        agents: the agent services; empty for none.
        agents_priority_class: PriorityClass of the agents (``critical-agents`` in prod), or None.
        mlflow_image_repository, mlflow_image_tag, mlflow_replicas, mlflow_cpu_millicores, mlflow_memory_mib,
        mlflow_database: the MLflow server.
        database_client_image: the psql image of the database job.
        feast_image, feast_replicas, feast_cpu_millicores, feast_memory_mib, feast_materialization_schedule,
        feast_project, feast_database: the Feast feature server and materialization.
        wandb_enabled: create the W&B API key secret and its ExternalSecret.
        wandb_secret_name: the Kubernetes Secret opted-in training pods read.
        pytorch_image, ray_image, ray_version, data_sync_image, checkpoint_interval_minutes, spot_allowed,
        termination_grace_seconds, example_workers, promotion_threshold: the training jobs.
        emr_on_eks: create the EMR on EKS virtual cluster.
        sagemaker: create the SageMaker training role, security group and outputs.
        agents_enabled: deploy the agents.
        mlops_enabled: deploy MLflow, Feast and their objects.
        training_enabled: deploy the training operators, runtime and templates.
        pod_monitor: create the PodMonitor of training metrics (needs the Prometheus Operator CRDs).
        prerequisites: what must be applied before any workload (the tenancy namespaces, the External
            Secrets store). Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        name_prefix: str,
        kubernetes_version: str,
        vpc: ec2.IVpc,
        node_subnets: ec2.SubnetSelection,
        data_subnet_cidrs: Sequence[str],
        datasets_bucket: s3.IBucket,
        models_bucket: s3.IBucket,
        data_key: kms.IKey,
        file_system: efs.IFileSystem,
        checkpoints_access_point: efs.IAccessPoint,
        datasets_access_point: efs.IAccessPoint,
        database: rds.IDatabaseInstance,
        database_secret: secretsmanager.ISecret,
        cache_endpoint_address: str,
        cache_auth_secret: secretsmanager.ISecret,
        node_pools: Sequence[NodePoolConfig],
        agents: Sequence[AgentService],
        agents_priority_class: str | None,
        mlflow_image_repository: str,
        mlflow_image_tag: str,
        mlflow_replicas: int,
        mlflow_cpu_millicores: int,
        mlflow_memory_mib: int,
        mlflow_database: str,
        database_client_image: str,
        feast_image: str,
        feast_replicas: int,
        feast_cpu_millicores: int,
        feast_memory_mib: int,
        feast_materialization_schedule: str,
        feast_project: str,
        feast_database: str,
        wandb_enabled: bool,
        wandb_secret_name: str,
        pytorch_image: str,
        ray_image: str,
        ray_version: str,
        data_sync_image: str,
        checkpoint_interval_minutes: int,
        spot_allowed: bool,
        termination_grace_seconds: int,
        example_workers: int,
        promotion_threshold: float,
        emr_on_eks: bool,
        sagemaker: bool,
        agents_enabled: bool,
        mlops_enabled: bool,
        training_enabled: bool,
        pod_monitor: bool,
        prerequisites: Sequence[Construct] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        charts = cdk8s.App()
        self.charts: dict[str, eks.KubernetesManifest] = {}
        self.releases: list[Construct] = []

        if agents_enabled and agents:
            self.charts["agents"] = attach_chart(
                self,
                "Agents",
                cluster=cluster,
                chart=AgentsChart(charts, "agents", agents=agents, priority_class=agents_priority_class),
            )

        self.wandb_secret: secretsmanager.Secret | None = None
        # The Secrets Manager name ESO reads (a literal: no token parsing of the secret's ARN at deploy).
        self.wandb_secret_name: str | None = f"{name_prefix}/wandb" if wandb_enabled else None
        if wandb_enabled:
            # Holds a generated placeholder until an operator puts the real key (put-secret-value); CloudFormation
            # never overwrites it afterwards. ESO copies it into the training namespace.
            self.wandb_secret = secretsmanager.Secret(
                self,
                "WandbApiKey",
                secret_name=self.wandb_secret_name,
                description=f"{name_prefix}: Weights & Biases API key (set by an operator; the value is a placeholder)",
                encryption_key=data_key,
                generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True),
            )
            cdk.Validations.of(self.wandb_secret).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-SMG4",
                    reason="a third-party API key: it is rotated in Weights & Biases and put here by an operator; "
                    "Secrets Manager has no rotation function that could mint a new W&B key",
                )
            )

        self.mlflow: Mlflow | None = None
        if mlops_enabled:
            mlops = attach_chart(
                self,
                "Mlops",
                cluster=cluster,
                chart=MlopsChart(
                    charts,
                    "mlops",
                    region=self.region,
                    database_host=database.db_instance_endpoint_address,
                    database_secret_arn=database_secret.secret_arn,
                    cache_host=cache_endpoint_address,
                    cache_auth_secret_arn=cache_auth_secret.secret_arn,
                    data_subnet_cidrs=data_subnet_cidrs,
                    databases=(mlflow_database, feast_database),
                    database_client_image=database_client_image,
                    feast_image=feast_image,
                    feast_database=feast_database,
                    feast_project=feast_project,
                    features_uri=f"s3://{datasets_bucket.bucket_name}/{FEATURES_PREFIX}",
                    node_selector=SYSTEM_NODE_SELECTOR,
                    feast_replicas=feast_replicas,
                    feast_cpu_millicores=feast_cpu_millicores,
                    feast_memory_mib=feast_memory_mib,
                    materialization_schedule=feast_materialization_schedule,
                ),
            )
            self.charts["mlops"] = mlops
            self._workload_role(
                "FeastRole",
                cluster=cluster,
                namespace=MLOPS_NAMESPACE,
                service_account=FEAST_SERVICE_ACCOUNT,
                description="Feast: offline features in the datasets bucket",
                statements=bucket_access_statements(
                    bucket=datasets_bucket,
                    key=data_key,
                    region=self.region,
                    read_prefixes=(FEATURES_PREFIX,),
                    write_prefixes=(FEATURES_PREFIX,),
                    delete_prefixes=(FEATURES_PREFIX,),
                ),
                before=mlops,
            )
            self.mlflow = Mlflow(
                self,
                "Mlflow",
                cluster=cluster,
                models_bucket=models_bucket,
                data_key=data_key,
                values=mlflow_values(
                    image_repository=mlflow_image_repository,
                    image_tag=mlflow_image_tag,
                    replicas=mlflow_replicas,
                    database_host=database.db_instance_endpoint_address,
                    database=mlflow_database,
                    artifacts_bucket=models_bucket.bucket_name,
                    region=self.region,
                    node_selector=SYSTEM_NODE_SELECTOR,
                    cpu_millicores=mlflow_cpu_millicores,
                    memory_mib=mlflow_memory_mib,
                ),
            )
            # The release waits for ready pods, which need the database credentials Secret and the database.
            self.mlflow.release.node.add_dependency(mlops)
            self.releases.append(self.mlflow.release)

        if training_enabled:
            self._training(
                cluster=cluster,
                file_system=file_system,
                checkpoints_access_point=checkpoints_access_point,
                datasets_access_point=datasets_access_point,
                datasets_bucket=datasets_bucket,
                models_bucket=models_bucket,
                data_key=data_key,
                node_pools=node_pools,
                pod_monitor=pod_monitor,
                settings=JobSettings(
                    region=self.region,
                    datasets_bucket=datasets_bucket.bucket_name,
                    models_bucket=models_bucket.bucket_name,
                    pytorch_image=pytorch_image,
                    ray_image=ray_image,
                    ray_version=ray_version,
                    data_sync_image=data_sync_image,
                    termination_grace_seconds=termination_grace_seconds,
                    checkpoint_interval_minutes=checkpoint_interval_minutes,
                    workers=example_workers,
                    promotion_threshold=promotion_threshold,
                    wandb_secret=wandb_secret_name if wandb_enabled else None,
                ),
                spot_allowed=spot_allowed,
            )

        self.emr: EmrOnEks | None = None
        if emr_on_eks:
            namespace = attach_chart(
                self,
                "DataProcessing",
                cluster=cluster,
                chart=DataProcessingChart(charts, "data-processing", kubernetes_version=kubernetes_version),
            )
            self.charts["data-processing"] = namespace
            self.emr = EmrOnEks(
                self,
                "Emr",
                cluster=cluster,
                role_name=f"{name_prefix}-emr-job-execution",
                datasets_bucket=datasets_bucket,
                data_key=data_key,
            )
            # EMR validates the namespace and sets up its access there when the virtual cluster is created.
            self.emr.virtual_cluster.node.add_dependency(namespace)
            cdk.CfnOutput(
                self,
                "EmrVirtualClusterId",
                value=self.emr.virtual_cluster.attr_id,
                description=f"{name_prefix}: EMR on EKS virtual cluster (start-job-run --virtual-cluster-id)",
            )
            cdk.CfnOutput(
                self,
                "EmrJobExecutionRoleArn",
                value=self.emr.role.role_arn,
                description=f"{name_prefix}: EMR on EKS job execution role (datasets bucket)",
            )

        self.sagemaker: SageMakerTraining | None = None
        if sagemaker:
            self.sagemaker = SageMakerTraining(
                self,
                "SageMaker",
                vpc=vpc,
                datasets_bucket=datasets_bucket,
                models_bucket=models_bucket,
                data_key=data_key,
            )
            subnet_ids = vpc.select_subnets(subnet_group_name=node_subnets.subnet_group_name).subnet_ids
            for output_id, value, description in (
                ("SageMakerExecutionRoleArn", self.sagemaker.role.role_arn, "SageMaker training execution role"),
                (
                    "SageMakerSecurityGroupId",
                    self.sagemaker.security_group.security_group_id,
                    "security group of SageMaker training jobs in the VPC",
                ),
                ("SageMakerSubnetIds", cdk.Fn.join(",", subnet_ids), "private subnets of SageMaker training jobs"),
            ):
                cdk.CfnOutput(self, output_id, value=value, description=f"{name_prefix}: {description}")

        # Every object lands in a namespace the tenancy chart creates; ExternalSecrets need the operator's store.
        for applied in (*self.charts.values(), *self.releases):
            applied.node.add_dependency(*prerequisites)

    def _workload_role(
        self,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str,
        service_account: str,
        description: str,
        statements: Sequence[iam.PolicyStatement],
        before: Construct | None = None,
    ) -> PodIdentityRole:
        """Return a Pod Identity role with its own policy, associated before ``before`` is applied."""
        identity = PodIdentityRole(
            self,
            construct_id,
            cluster=cluster,
            namespace=namespace,
            service_account=service_account,
            description=description,
        )
        policy = iam.Policy(self, f"{construct_id}Policy", statements=list(statements))
        policy.attach_to_role(identity.role)
        acknowledge_wildcards(policy, statements, _PREFIX_REASON)
        if before is not None:
            # Pods started by ``before`` call AWS at once: their role must be associated first.
            before.node.add_dependency(identity.association, policy)
        return identity

    def _training(
        self,
        *,
        cluster: eks.ICluster,
        file_system: efs.IFileSystem,
        checkpoints_access_point: efs.IAccessPoint,
        datasets_access_point: efs.IAccessPoint,
        datasets_bucket: s3.IBucket,
        models_bucket: s3.IBucket,
        data_key: kms.IKey,
        node_pools: Sequence[NodePoolConfig],
        pod_monitor: bool,
        settings: JobSettings,
        spot_allowed: bool,
    ) -> None:
        a100_pool = find_gpu_pool(node_pools, taint_value="true")
        if a100_pool is None:
            raise ValueError(
                "components.training is on, but no node pool serves training with the gpu=true taint (the A100 "
                "time-sliced pool): add one or turn training off"
            )
        h100_pool = find_gpu_pool(node_pools, taint_value="h100")
        trainer = KubeflowTrainer(self, "KubeflowTrainer", cluster=cluster, node_selector=SYSTEM_NODE_SELECTOR)
        kuberay = KubeRayOperator(self, "KubeRay", cluster=cluster, node_selector=SYSTEM_NODE_SELECTOR)
        charts = cdk8s.App()
        training = attach_chart(
            self,
            "Training",
            cluster=cluster,
            chart=TrainingChart(
                charts,
                "training",
                settings=settings,
                file_system_id=file_system.file_system_id,
                checkpoints_access_point_id=checkpoints_access_point.access_point_id,
                datasets_access_point_id=datasets_access_point.access_point_id,
                a100=gpu_placement(a100_pool, spot_allowed=spot_allowed),
                h100=gpu_placement(h100_pool, spot_allowed=spot_allowed) if h100_pool else None,
                wandb_remote_secret=self.wandb_secret_name,
                pod_monitor=pod_monitor,
            ),
        )
        self.charts["training"] = training
        # The TrainingRuntime needs the Trainer CRDs and its validating webhook serving.
        training.node.add_dependency(trainer.release, kuberay.release)
        self.releases += [trainer.release, kuberay.release]
        self._workload_role(
            "TrainingRole",
            cluster=cluster,
            namespace=TRAINING_NAMESPACE,
            service_account=TRAINING_SERVICE_ACCOUNT,
            description="Training jobs: processed data sets in, trained models out",
            statements=[
                *bucket_access_statements(
                    bucket=datasets_bucket, key=data_key, region=self.region, read_prefixes=("processed/",)
                ),
                *bucket_access_statements(
                    bucket=models_bucket,
                    key=data_key,
                    region=self.region,
                    read_prefixes=("trained/",),
                    write_prefixes=("trained/",),
                ),
            ],
        )
        self._workload_role(
            "PipelineRole",
            cluster=cluster,
            namespace=TRAINING_NAMESPACE,
            service_account=PIPELINE_SERVICE_ACCOUNT,
            description="Training pipeline: processed data sets in, validated models promoted to production/",
            statements=[
                *bucket_access_statements(
                    bucket=datasets_bucket, key=data_key, region=self.region, read_prefixes=("processed/",)
                ),
                *bucket_access_statements(
                    bucket=models_bucket,
                    key=data_key,
                    region=self.region,
                    read_prefixes=("trained/", "production/"),
                    write_prefixes=("trained/", "production/"),
                ),
            ],
        )
