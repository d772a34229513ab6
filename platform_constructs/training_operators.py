"""Training operators (Kubeflow Trainer v2, KubeRay) and the managed services beside the cluster (EMR, SageMaker).

- ``KubeflowTrainer``: chart ``kubeflow-trainer`` 2.3.0 (TrainJob, TrainingRuntime, ClusterTrainingRuntime, and
  JobSet as its subchart) in ``kubeflow-system``. No built-in runtimes: the platform's ``TrainingRuntime``
  (``k8s_charts/training.py``) carries the pools, volumes and security the built-in ones lack. Why v2 and not
  the v1 training operator's PyTorchJob: see ``k8s_charts/training.py``.
- ``KubeRayOperator``: chart ``kuberay-operator`` 1.7.0 (RayCluster, RayJob, RayService) in ``kuberay-system``.
- ``EmrOnEks``: an EMR on EKS virtual cluster on the ``emr-jobs`` namespace and its job execution role, scoped
  to the datasets bucket. The role reaches Spark pods through EKS Pod Identity (EMR 7.3.0 and later): the
  associations name EMR's own service accounts, ``emr-containers-sa-spark-{client,driver,executor}-<account>-
  <base36 of the role name>`` (the names ``aws emr-containers create-role-associations`` uses), so the role has
  a fixed name. EMR creates the access entry of its service-linked role itself when the virtual cluster is
  created; EKS refuses access entries for service-linked roles from anyone else, so there is none here.
- ``SageMakerTraining``: the execution role of SageMaker training jobs (both buckets and their key) and the
  security group a job in the VPC needs; the stack outputs them with the subnet IDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_emrcontainers as emrcontainers
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from k8s_charts.mlops import EMR_NAMESPACE
from k8s_charts.training import KUBERAY_NAMESPACE, TRAINER_NAMESPACE
from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.mlflow import acknowledge_wildcards, bucket_access_statements

# ../shared/k8s-reference/SOURCES.md: oci://ghcr.io/kubeflow/charts/kubeflow-trainer --version 2.3.0
TRAINER_CHART: Final = HelmChartRef(
    repository="oci://ghcr.io/kubeflow/charts/kubeflow-trainer", chart="kubeflow-trainer", version="2.3.0"
)
# The chart's images are released as v<chart version>; pinned here instead of the chart's implicit default.
TRAINER_IMAGE_TAG: Final = "v2.3.0"
# ../shared/k8s-reference/SOURCES.md: https://ray-project.github.io/kuberay-helm/ -> kuberay-operator 1.7.0
KUBERAY_CHART: Final = HelmChartRef(
    repository="https://ray-project.github.io/kuberay-helm/", chart="kuberay-operator", version="1.7.0"
)
KUBERAY_IMAGE_TAG: Final = "v1.7.0"
EMR_SPARK_COMPONENTS: Final = ("client", "driver", "executor")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def kubeflow_trainer_values(*, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Return the chart values of the Kubeflow Trainer release (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels that place the controller on the system pool.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: name the system pool the controller runs on")
    return {
        "image": {"tag": TRAINER_IMAGE_TAG},
        "manager": {
            "replicas": 1,
            "nodeSelector": dict(node_selector),
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        },
        # The platform brings its own TrainingRuntime; the built-in ones would land on no pool.
        "runtimes": {"defaultEnabled": False},
        "jobset": {"install": True},
    }


def kuberay_operator_values(*, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Return the chart values of the KubeRay operator release (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels that place the operator on the system pool.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: name the system pool the operator runs on")
    return {
        "image": {"repository": "quay.io/kuberay/operator", "tag": KUBERAY_IMAGE_TAG},
        "nodeSelector": dict(node_selector),
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}},
    }


class KubeflowTrainer(Construct):
    """Define the Kubeflow Trainer v2 release (TrainJob and TrainingRuntime CRDs, controller, JobSet).

    Args:
        cluster: the cluster to install into.
        node_selector: node labels that place the controller.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=TRAINER_CHART,
            namespace=TRAINER_NAMESPACE,
            values=kubeflow_trainer_values(node_selector=node_selector),
            overrides=overrides,
        )


class KubeRayOperator(Construct):
    """Define the KubeRay operator release (RayCluster, RayJob and RayService CRDs and controller).

    Args:
        cluster: the cluster to install into.
        node_selector: node labels that place the operator.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=KUBERAY_CHART,
            namespace=KUBERAY_NAMESPACE,
            values=kuberay_operator_values(node_selector=node_selector),
            overrides=overrides,
        )


def base36(text: str) -> str:
    """Return ``text`` base36-encoded the way EMR on EKS names its service accounts (bytes as one number)."""
    number = int.from_bytes(text.encode(), "big")
    digits = ""
    while number:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
    return digits or "0"


def emr_service_accounts(*, account: str, role_name: str) -> tuple[str, ...]:
    """Return the service accounts EMR on EKS runs a StartJobRun's Spark client, driver and executors as."""
    encoded = base36(role_name)
    names = tuple(f"emr-containers-sa-spark-{c}-{account}-{encoded}" for c in EMR_SPARK_COMPONENTS)
    for name in names:
        if len(name) > 253:
            raise ValueError(
                f"role name {role_name!r} is too long: EMR's service account {name} exceeds 253 characters"
            )
    return names


class EmrOnEks(Construct):
    """Define an EMR on EKS virtual cluster and its job execution role (Pod Identity, datasets bucket only).

    Args:
        cluster: the EKS cluster.
        role_name: the job execution role's name (fixed: EMR derives its service account names from it).
        datasets_bucket: the bucket jobs read (``raw/``, ``external/``, ``interim/``, ``processed/``) and write
            (``interim/``, ``processed/``).
        data_key: the key encrypting it.
        namespace: the virtual cluster's namespace. Defaults to ``emr-jobs``.
        virtual_cluster_name: the virtual cluster's name. Defaults to the role name.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        role_name: str,
        datasets_bucket: s3.IBucket,
        data_key: kms.IKey,
        namespace: str = EMR_NAMESPACE,
        virtual_cluster_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        if cdk.Token.is_unresolved(stack.account):
            raise ValueError("EmrOnEks needs the stack's account as a literal: EMR's service account names contain it")
        self.role = iam.Role(
            self,
            "JobExecutionRole",
            role_name=role_name,
            description="EMR on EKS job execution: Spark jobs on the datasets bucket",
            assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com").with_session_tags(),
        )
        statements = bucket_access_statements(
            bucket=datasets_bucket,
            key=data_key,
            region=stack.region,
            read_prefixes=("raw/", "external/", "interim/", "processed/"),
            write_prefixes=("interim/", "processed/"),
            delete_prefixes=("interim/",),
        )
        policy = iam.Policy(self, "JobExecutionPolicy", statements=statements)
        policy.attach_to_role(self.role)
        acknowledge_wildcards(
            policy,
            statements,
            "Spark jobs read and write whole data sets: object keys under the datasets bucket's named prefixes "
            "only (S3 keys have no finer name), ListBucket limited to them by an s3:prefix condition",
        )
        self.associations = [
            eks.CfnPodIdentityAssociation(
                self,
                f"{component.capitalize()}Association",
                cluster_name=cluster.cluster_name,
                namespace=namespace,
                service_account=service_account,
                role_arn=self.role.role_arn,
            )
            for component, service_account in zip(
                EMR_SPARK_COMPONENTS, emr_service_accounts(account=stack.account, role_name=role_name), strict=True
            )
        ]
        self.virtual_cluster = emrcontainers.CfnVirtualCluster(
            self,
            "VirtualCluster",
            name=virtual_cluster_name or role_name,
            container_provider=emrcontainers.CfnVirtualCluster.ContainerProviderProperty(
                id=cluster.cluster_name,
                type="EKS",
                info=emrcontainers.CfnVirtualCluster.ContainerInfoProperty(
                    eks_info=emrcontainers.CfnVirtualCluster.EksInfoProperty(namespace=namespace)
                ),
            ),
        )


class SageMakerTraining(Construct):
    """Define the SageMaker training execution role and the security group of training jobs in the VPC.

    Args:
        vpc: the stage's VPC.
        datasets_bucket: training input (read ``processed/``).
        models_bucket: training output (write ``trained/`` and ``experiments/``, read them back).
        data_key: the key encrypting both buckets.
        log_group_prefix: CloudWatch Logs group prefix of SageMaker training jobs. Defaults to SageMaker's.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        datasets_bucket: s3.IBucket,
        models_bucket: s3.IBucket,
        data_key: kms.IKey,
        log_group_prefix: str = "/aws/sagemaker/TrainingJobs",
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="SageMaker training jobs: between their own instances, and HTTPS out",
            allow_all_outbound=False,
        )
        # Distributed training (NCCL, parameter servers) talks between the job's own instances on any port.
        self.security_group.add_ingress_rule(self.security_group, ec2.Port.all_traffic(), "between training instances")
        self.security_group.add_egress_rule(self.security_group, ec2.Port.all_traffic(), "between training instances")
        # S3 (gateway endpoint, public addresses), the interface endpoints and the rest of AWS over HTTPS only.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs and S3 over HTTPS")
        self.role = iam.Role(
            self,
            "ExecutionRole",
            description="SageMaker training jobs: data sets in, models out",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        )
        statements = [
            *bucket_access_statements(
                bucket=datasets_bucket, key=data_key, region=stack.region, read_prefixes=("processed/",)
            ),
            *bucket_access_statements(
                bucket=models_bucket,
                key=data_key,
                region=stack.region,
                read_prefixes=("trained/", "experiments/"),
                write_prefixes=("trained/", "experiments/"),
            ),
            iam.PolicyStatement(
                sid="Logs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{log_group_prefix}:*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            ),
            # Training in the VPC: SageMaker creates and removes the jobs' network interfaces. The EC2 API
            # offers no resource scoping for Describe* and takes the subnet/group on Create only as conditions.
            iam.PolicyStatement(
                sid="VpcNetworkInterfaces",
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],
                conditions={"StringEquals": {"aws:RequestedRegion": stack.region}},
            ),
            iam.PolicyStatement(
                sid="Metrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            ),
            iam.PolicyStatement(sid="PullImagesToken", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="PullImages",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[stack.format_arn(service="ecr", resource="repository", resource_name="*")],
            ),
        ]
        policy = iam.Policy(self, "ExecutionPolicy", statements=statements)
        policy.attach_to_role(self.role)
        s3_statements = [st for st in statements if any(a.startswith("s3:") for a in st.actions)]
        acknowledge_wildcards(
            policy,
            s3_statements,
            "training jobs read data sets and write models under named prefixes of the two buckets only (S3 "
            "keys have no finer name); ListBucket is limited to the same prefixes by an s3:prefix condition",
        )
        acknowledge_wildcards(
            policy,
            [st for st in statements if st not in s3_statements],
            "EC2 network-interface and Describe calls, ECR's GetAuthorizationToken and CloudWatch PutMetricData "
            "take no resource ARNs (conditions pin the region and the metric namespace); log streams are named by "
            "each job inside SageMaker's training log group, images by the job's repository in this account",
        )
