"""MlWorkstation: one EC2 instance for notebooks and experiments, reached through SSM Session Manager.

The instance runs in a private node subnet with no public address and, by default, no inbound rule:
people open a shell with ``aws ssm start-session`` and reach JupyterLab (8888) and TensorBoard (6006)
with SSM port forwarding (``AWS-StartPortForwardingSession``). Networks listed in the stage config may
reach SSH, JupyterLab and TensorBoard directly.

The boot script (``workstation_user_data``) is plain data so tests read it without synthesizing.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Final

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from platform_constructs.retention import retention_days

# Python packages of the workstation, pinned: a rebuilt instance gets the same tools. Top-level pins;
# pip resolves their own dependencies (numpy 2.5 satisfies TensorFlow 2.21's numpy>=1.26).
PYTHON: Final = "python3.12"
PIP_PACKAGES: Final = {
    "pip": "26.3",
    "numpy": "2.5.5",
    "pandas": "3.1.1",
    "scikit-learn": "1.9.1",
    "torch": "2.15.0",
    "tensorflow": "2.21.0",
    "tensorboard": "2.21.0",
    "jupyterlab": "4.6.6",
}
# CPU instances take PyTorch's CPU-only wheel (about 200 MB instead of several GB of CUDA libraries).
TORCH_CPU_INDEX: Final = "https://download.pytorch.org/whl/cpu"
# Amazon Linux 2023 packages (AWS CLI v2 ships with AL2023 as awscli-2; installing it is a no-op there).
DNF_PACKAGES: Final = (
    PYTHON,
    f"{PYTHON}-pip",
    "awscli-2",
    "git",
    "vim-enhanced",
    "tmux",
    "amazon-cloudwatch-agent",
)
VENV: Final = "/opt/ml"
USER: Final = "ec2-user"
JUPYTER_PORT: Final = 8888
TENSORBOARD_PORT: Final = 6006
SSH_PORT: Final = 22
# What a configured network may reach.
PORTS: Final = {"SSH": SSH_PORT, "JupyterLab": JUPYTER_PORT, "TensorBoard": TENSORBOARD_PORT}
# AWS's public parameters (CloudFormation resolves them at deploy time): the newest Amazon Linux 2023 with
# the kernel AL2023 recommends (kernel-default; CDK's latest_amazon_linux2023() pins kernel 6.1), and the
# newest Deep Learning Base OSS NVIDIA Driver GPU AMI (Amazon Linux 2023) with the NVIDIA driver, CUDA
# and the container toolkit installed.
AL2023_AMI_PARAMETER: Final = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEEP_LEARNING_AMI_PARAMETER: Final = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
)
JUPYTER_LOG: Final = "/var/log/jupyterlab/jupyterlab.log"
SETUP_LOG: Final = "/var/log/cloud-init-output.log"


def cloudwatch_agent_config(*, setup_log_group: str, jupyter_log_group: str, gpu: bool) -> dict[str, object]:
    """Return the CloudWatch agent's configuration: memory and disk metrics (and GPU ones), two log files."""
    metrics: dict[str, object] = {
        "mem": {"measurement": ["mem_used_percent"]},
        "disk": {"measurement": ["used_percent"], "resources": ["/"]},
    }
    if gpu:
        metrics["nvidia_gpu"] = {"measurement": ["utilization_gpu", "memory_used", "temperature_gpu"]}
    return {
        "agent": {"metrics_collection_interval": 60, "run_as_user": "root"},
        "metrics": {
            "namespace": "CWAgent",
            "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
            "metrics_collected": metrics,
        },
        "logs": {
            "logs_collected": {
                "files": {
                    "collect_list": [
                        {
                            "file_path": SETUP_LOG,
                            "log_group_name": setup_log_group,
                            "log_stream_name": "{instance_id}",
                        },
                        {
                            "file_path": JUPYTER_LOG,
                            "log_group_name": jupyter_log_group,
                            "log_stream_name": "{instance_id}",
                        },
                    ]
                }
            }
        },
    }


def workstation_user_data(
    *, region: str, token_secret_arn: str, setup_log_group: str, jupyter_log_group: str, gpu: bool
) -> list[str]:
    """Return the boot script's commands (bash, run once by cloud-init as root).

    The JupyterLab token never reaches the template or the disk: the server's config file asks Secrets
    Manager for it each time the server starts. ``set -x`` is left off so no command line is echoed
    into the setup log, which is shipped to CloudWatch.
    """
    pins = {name: f"{name}=={version}" for name, version in PIP_PACKAGES.items()}
    pip = f"{VENV}/bin/pip install --no-cache-dir"
    torch = f"{pip} {pins['torch']}" if gpu else f"{pip} --index-url {TORCH_CPU_INDEX} {pins['torch']}"
    frameworks = ("numpy", "pandas", "scikit-learn", "tensorflow", "tensorboard", "jupyterlab")
    rest = " ".join(pins[name] for name in frameworks)
    agent = json.dumps(
        cloudwatch_agent_config(
            setup_log_group=setup_log_group,
            jupyter_log_group=jupyter_log_group,
            gpu=gpu,
        ),
        indent=1,
    )
    token_command = [
        "aws", "secretsmanager", "get-secret-value", "--region", region, "--secret-id", token_secret_arn,
        "--query", "SecretString", "--output", "text",
    ]  # fmt: skip
    jupyter_config = "\n".join(
        [
            "import subprocess",
            f"c.ServerApp.ip = '0.0.0.0'",  # noqa: F541 (a line of the generated file)
            f"c.ServerApp.port = {JUPYTER_PORT}",
            "c.ServerApp.open_browser = False",
            f"c.ServerApp.root_dir = '/home/{USER}'",
            # Token authentication with the generated secret, read at each start: a new token needs a restart.
            f"c.IdentityProvider.token = subprocess.check_output({token_command!r}, text=True).strip()",
        ]
    )
    jupyter_unit = "\n".join(
        [
            "[Unit]",
            "Description=JupyterLab (token from Secrets Manager)",
            "After=network-online.target",
            "Wants=network-online.target",
            "[Service]",
            f"User={USER}",
            f"ExecStart={VENV}/bin/jupyter lab --config=/etc/jupyter/jupyter_server_config.py",
            f"StandardOutput=append:{JUPYTER_LOG}",
            f"StandardError=append:{JUPYTER_LOG}",
            "Restart=on-failure",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    )
    tensorboard_unit = "\n".join(
        [
            "[Unit]",
            "Description=TensorBoard",
            "After=network-online.target",
            "[Service]",
            f"User={USER}",
            f"ExecStart={VENV}/bin/tensorboard --logdir /home/{USER}/tensorboard --host 0.0.0.0 "
            f"--port {TENSORBOARD_PORT}",
            "Restart=on-failure",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    )
    return [
        "set -euo pipefail",
        f"dnf install -y {' '.join(DNF_PACKAGES)}",
        # The CloudWatch agent first, so the rest of the setup log reaches CloudWatch as it is written.
        "mkdir -p /opt/aws/amazon-cloudwatch-agent/etc /var/log/jupyterlab",
        f"touch {JUPYTER_LOG} && chown {USER}:{USER} {JUPYTER_LOG}",
        f"cat > /opt/aws/amazon-cloudwatch-agent/etc/workstation.json <<'AGENT'\n{agent}\nAGENT",
        "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s "
        "-c file:/opt/aws/amazon-cloudwatch-agent/etc/workstation.json",
        f"{PYTHON} -m venv {VENV}",
        f"{VENV}/bin/pip install --no-cache-dir {pins['pip']}",
        torch,
        f"{pip} {rest}",
        f"chown -R {USER}:{USER} {VENV}",
        f"echo 'source {VENV}/bin/activate' >> /home/{USER}/.bashrc",
        f"install -d -o {USER} -g {USER} /home/{USER}/tensorboard",
        "install -d -m 0755 /etc/jupyter",
        f"cat > /etc/jupyter/jupyter_server_config.py <<'JUPYTER'\n{jupyter_config}\nJUPYTER",
        f"chown root:{USER} /etc/jupyter/jupyter_server_config.py",
        "chmod 0640 /etc/jupyter/jupyter_server_config.py",
        f"cat > /etc/systemd/system/jupyterlab.service <<'UNIT'\n{jupyter_unit}\nUNIT",
        f"cat > /etc/systemd/system/tensorboard.service <<'UNIT'\n{tensorboard_unit}\nUNIT",
        "systemctl daemon-reload",
        "systemctl enable --now jupyterlab.service tensorboard.service",
        f"echo {shlex.quote('workstation ready: ' + ', '.join(pins.values()))}",
    ]


class MlWorkstation(Construct):
    """Define the workstation: instance, role, security group, token secret, logs, alarms and a stop schedule.

    Args:
        vpc: the stage's VPC.
        subnets: private subnets to place the instance in (the first one is used).
        instance_type: EC2 instance type.
        gpu: the instance type has NVIDIA GPUs: boot the Deep Learning AMI and collect GPU metrics.
        recoverable: the instance type supports the EC2 recover action (EBS-only families). When False,
            a failed system status check only notifies ``alarm_topic``.
        root_volume_gib: size of the encrypted gp3 root volume.
        ingress_cidrs: networks allowed to reach SSH, JupyterLab and TensorBoard. Empty: no inbound rule.
        datasets_bucket: read and write access (no delete).
        models_bucket: read and write access (no delete).
        data_key: the buckets' KMS key; used only through S3.
        logs_key: encrypts the workstation's log groups.
        log_retention_days: retention of the log groups.
        log_group_prefix: the log groups are ``<prefix>/setup`` and ``<prefix>/jupyterlab``.
        instance_name: the instance's Name tag.
        instance_termination_protection: the instance's API termination protection.
        removal_policy: of the log groups and the token secret.
        cpu_alarm_percent: CPUUtilization above this for two 5-minute periods raises an alarm.
        stop_hour_utc: stop the instance every day at this hour (UTC). Defaults to no schedule.
        ami_id: a fixed AMI instead of AWS's SSM parameter. Defaults to the parameter (newest image).
        alarm_topic: where the alarms notify. Defaults to no notification (the alarms still act and show).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        instance_type: str,
        gpu: bool,
        recoverable: bool,
        root_volume_gib: int,
        ingress_cidrs: Sequence[str],
        datasets_bucket: s3.IBucket,
        models_bucket: s3.IBucket,
        data_key: kms.IKey,
        logs_key: kms.IKey,
        log_retention_days: int,
        log_group_prefix: str,
        instance_name: str,
        instance_termination_protection: bool,
        removal_policy: cdk.RemovalPolicy,
        cpu_alarm_percent: float = 80,
        stop_hour_utc: int | None = None,
        ami_id: str | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)

        self.role = iam.Role(
            self,
            "Role",
            description="ML workstation: SSM Session Manager, CloudWatch agent, datasets and models buckets",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )
        cdk.Validations.of(self.role).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
                reason="Session Manager is the only way into the instance (no key pair, no inbound rule "
                "by default); AWS maintains this policy with exactly the SSM agent's actions as the "
                "service evolves",
            )
        )

        self.token_secret = secretsmanager.Secret(
            self,
            "JupyterToken",
            description=f"{log_group_prefix}: JupyterLab token of the ML workstation (generated)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48, exclude_punctuation=True, include_space=False
            ),
            removal_policy=removal_policy,
        )
        self.token_secret.grant_read(self.role)
        cdk.Validations.of(self.token_secret).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="the token is read by JupyterLab when it starts; a rotation would lock out open "
                "sessions until a restart, so it is changed on demand (put a new value, restart jupyterlab)",
            )
        )

        setup_logs = logs.LogGroup(
            self,
            "SetupLogs",
            log_group_name=f"{log_group_prefix}/setup",
            encryption_key=logs_key,
            retention=retention_days(log_retention_days),
            removal_policy=removal_policy,
        )
        jupyter_logs = logs.LogGroup(
            self,
            "JupyterLogs",
            log_group_name=f"{log_group_prefix}/jupyterlab",
            encryption_key=logs_key,
            retention=retention_days(log_retention_days),
            removal_policy=removal_policy,
        )
        self.log_groups = (setup_logs, jupyter_logs)
        self._grant_cloudwatch_agent(self.log_groups)
        self._grant_buckets((datasets_bucket, models_bucket), data_key)

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="ML workstation: SSH, JupyterLab, TensorBoard from configured networks only",
            # pip, dnf and the AWS APIs (SSM, CloudWatch, S3) are reached through NAT and the endpoints.
            allow_all_outbound=True,
        )
        for cidr in ingress_cidrs:
            peer = ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr)
            for name, port in PORTS.items():
                self.security_group.add_ingress_rule(peer, ec2.Port.tcp(port), f"{name} from {cidr}")

        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            *workstation_user_data(
                region=stack.region,
                token_secret_arn=self.token_secret.secret_arn,
                # The literal names keep the script readable; the dependency below orders the groups first.
                setup_log_group=f"{log_group_prefix}/setup",
                jupyter_log_group=f"{log_group_prefix}/jupyterlab",
                gpu=gpu,
            )
        )
        if ami_id is not None:
            image = ec2.MachineImage.generic_linux({stack.region: ami_id})
        elif gpu:
            image = ec2.MachineImage.from_ssm_parameter(
                DEEP_LEARNING_AMI_PARAMETER,
                os=ec2.OperatingSystemType.LINUX,
            )
        else:
            # Resolved by CloudFormation from AWS's public SSM parameter at deploy time: no lookup at synth.
            image = ec2.MachineImage.from_ssm_parameter(
                AL2023_AMI_PARAMETER,
                os=ec2.OperatingSystemType.LINUX,
            )

        self.instance = ec2.Instance(
            self,
            "Resource",
            vpc=vpc,
            vpc_subnets=subnets,
            instance_type=ec2.InstanceType(instance_type),
            machine_image=image,
            instance_name=instance_name,
            role=self.role,
            security_group=self.security_group,
            user_data=user_data,
            require_imdsv2=True,
            detailed_monitoring=True,
            disable_api_termination=instance_termination_protection,
            associate_public_ip_address=False,
            propagate_tags_to_volume_on_creation=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_gib,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        if not instance_termination_protection:
            cdk.Validations.of(self.instance).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-EC29",
                    reason="termination protection is on outside dev; a dev workstation is disposable (work "
                    "lives in git and the datasets and models buckets) and goes with cdk destroy",
                )
            )
        # The agent starts shipping logs at boot and may not create groups: they must exist by then.
        self.instance.node.add_dependency(setup_logs, jupyter_logs)
        self._alarms(cpu_alarm_percent=cpu_alarm_percent, recoverable=recoverable, alarm_topic=alarm_topic)
        if stop_hour_utc is not None:
            self._stop_schedule(stop_hour_utc)

    def _grant_cloudwatch_agent(self, log_groups: Sequence[logs.LogGroup]) -> None:
        """Let the CloudWatch agent write the two log groups and custom metrics, and nothing else."""
        for group in log_groups:
            group.grant(self.role, "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams")
        policy = iam.Policy(
            self,
            "CloudWatchAgentPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="PutAgentMetrics",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": "CWAgent"}},
                ),
                iam.PolicyStatement(
                    sid="DescribeInstanceForDimensions",
                    actions=["ec2:DescribeTags", "ec2:DescribeVolumes"],
                    resources=["*"],
                ),
            ],
        )
        self.role.attach_inline_policy(policy)
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="cloudwatch:PutMetricData and the EC2 Describe calls support no resource-level "
                "permissions; metrics are limited to the CWAgent namespace by a condition and the Describe "
                "calls only read",
            )
        )

    def _grant_buckets(self, buckets: Sequence[s3.IBucket], data_key: kms.IKey) -> None:
        """Read and write (no delete) on the datasets and models buckets, and their key only through S3."""
        stack = cdk.Stack.of(self)
        # Literal ARNs from the buckets' literal names: the policy holds no cross-stack reference to the
        # buckets, and each wildcard can be acknowledged by its exact resource.
        bucket_arns = [f"arn:{stack.partition}:s3:::{_literal_bucket_name(bucket)}" for bucket in buckets]
        object_arns = [f"{arn}/*" for arn in bucket_arns]
        policy = iam.Policy(
            self,
            "BucketsPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="ListBuckets",
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=bucket_arns,
                ),
                iam.PolicyStatement(
                    sid="ReadWriteObjects",
                    actions=[
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:PutObject",
                        "s3:AbortMultipartUpload",
                    ],
                    resources=object_arns,
                ),
                iam.PolicyStatement(
                    sid="UseDataKeyThroughS3",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[data_key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
                ),
            ],
        )
        self.role.attach_inline_policy(policy)
        for arn in object_arns:
            cdk.Validations.of(policy).acknowledge(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::{arn}]",
                    reason="notebooks read and write data sets and models under any key of this bucket; no "
                    "delete, no other bucket, and the data key is usable only through S3",
                )
            )

    def _alarms(self, *, cpu_alarm_percent: float, recoverable: bool, alarm_topic: sns.ITopic | None) -> None:
        """CPU above the threshold for 10 minutes; failed status checks recover (host) or reboot (guest)."""
        instance_id = self.instance.instance_id

        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/EC2",
                metric_name=name,
                dimensions_map={"InstanceId": instance_id},
                period=cdk.Duration.minutes(5),
                statistic=statistic,
            )

        self.cpu_alarm = cloudwatch.Alarm(
            self,
            "CpuAlarm",
            alarm_description=f"ML workstation CPU above {cpu_alarm_percent:g}% for two 5-minute periods",
            metric=metric("CPUUtilization", "Average"),
            threshold=cpu_alarm_percent,
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        # CloudWatch accepts the recover action only on StatusCheckFailed_System (a host problem): the
        # instance moves to healthy hardware with its ID, addresses and volumes.
        self.status_alarm = cloudwatch.Alarm(
            self,
            "StatusCheckAlarm",
            alarm_description="ML workstation failed its system status check"
            + ("; EC2 recovers it onto healthy hardware" if recoverable else ""),
            metric=metric("StatusCheckFailed_System", "Maximum"),
            threshold=0,
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )
        if recoverable:
            self.status_alarm.add_alarm_action(cw_actions.Ec2Action(cw_actions.Ec2InstanceAction.RECOVER))
        # An impaired guest (kernel panic, exhausted memory) is not a host problem: a reboot clears it.
        self.instance_status_alarm = cloudwatch.Alarm(
            self,
            "InstanceCheckAlarm",
            alarm_description="ML workstation failed its instance status check; EC2 reboots it",
            metric=metric("StatusCheckFailed_Instance", "Maximum"),
            threshold=0,
            evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )
        self.instance_status_alarm.add_alarm_action(cw_actions.Ec2Action(cw_actions.Ec2InstanceAction.REBOOT))
        if alarm_topic is not None:
            for alarm in (self.cpu_alarm, self.status_alarm, self.instance_status_alarm):
                alarm.add_alarm_action(cw_actions.SnsAction(alarm_topic))

    def _stop_schedule(self, hour_utc: int) -> None:
        """Stop the instance every day at ``hour_utc`` with EventBridge Scheduler (people start it again)."""
        stack = cdk.Stack.of(self)
        instance_arn = stack.format_arn(
            service="ec2",
            resource="instance",
            resource_name=self.instance.instance_id,
        )
        role = iam.Role(
            self,
            "StopSchedulerRole",
            description="EventBridge Scheduler: stop the ML workstation every night",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
        )
        role.add_to_policy(iam.PolicyStatement(actions=["ec2:StopInstances"], resources=[instance_arn]))
        scheduler.CfnSchedule(
            self,
            "NightlyStop",
            description=f"Stop the ML workstation at {hour_utc:02d}:00 UTC",
            schedule_expression=f"cron(0 {hour_utc} * * ? *)",
            schedule_expression_timezone="UTC",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn="arn:aws:scheduler:::aws-sdk:ec2:stopInstances",
                role_arn=role.role_arn,
                input=stack.to_json_string({"InstanceIds": [self.instance.instance_id]}),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=3),
            ),
        )


def _literal_bucket_name(bucket: s3.IBucket) -> str:
    """Return the literal name the bucket was created with (the data stack names every bucket)."""
    cfn_bucket = bucket.node.default_child
    name = cfn_bucket.bucket_name if isinstance(cfn_bucket, s3.CfnBucket) else None
    if name is None or cdk.Token.is_unresolved(name):
        raise ValueError(f"{bucket.node.path}: the workstation needs a bucket with a literal bucket_name")
    return name
