"""Backups: the backup config, the Velero values, role and schedules, and the BackupStack/VeleroStack templates.

Config, values and chart tests need no synth; stack tests read the session's synthesized app. Logical IDs
of the stateful resources are literal on purpose: a change to one means CloudFormation replaces the
resource (a vault or bucket full of recovery points).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml
from pydantic import ValidationError

from config.backup import (
    DEFAULT_TARGETS,
    WORKLOAD_CLASSES,
    BackupConfig,
    BackupRetention,
    RecoveryTarget,
    VaultLock,
    VeleroSchedule,
    WorkloadClass,
    cron_max_gap_minutes,
)
from config.loader import load_stage
from config.model import StageConfig
from k8s_charts.backup_schedules import BackupSchedulesChart, NamespaceSchedule
from platform_constructs import velero
from platform_constructs.velero import velero_statements, velero_values
from tests.support.assembly import CloudAssembly, StackArtifact
from tests.support.deployed import deployed_objects, helm_releases
from tests.support.k8s_reference import require_reference_dir, validate_helm_values, validate_object

REPO = Path(__file__).resolve().parents[2]
STAGES = ("Dev", "Staging", "Prod")
# Logical IDs of the stateful resources of the BackupStack.
BACKUP_STATEFUL_IDS = {
    "VeleroStorageKeyA1AE0A70": "AWS::KMS::Key",
    "VeleroStorageBucketDF422161": "AWS::S3::Bucket",
    "AccessLogs247031D9": "AWS::S3::Bucket",
    "VaultKey22C7D747": "AWS::KMS::Key",
    "Vault23237E5B": "AWS::Backup::BackupVault",
}
VELERO_BUCKET, VELERO_KEY, ACCESS_LOGS = "VeleroStorageBucketDF422161", "VeleroStorageKeyA1AE0A70", "AccessLogs247031D9"
VAULT = "Vault23237E5B"
# The DataStack's logical IDs the plan must select (tests/unit/test_data_stack.py pins them too).
DATABASE, FILE_SYSTEM = "DatabaseF44359DD", "FileSystem74E8793E"


def raw_stage(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    return data


# --- cron -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("0 2 * * *", 24 * 60),
        ("15 */6 * * *", 6 * 60),
        ("*/5 * * * *", 5),
        ("0 3 * * 1-5", 3 * 24 * 60),  # Friday to Monday
        ("30 1 * * 0", 7 * 24 * 60),
        ("0 0 1 * *", 31 * 24 * 60),
        ("0 0 13 * 5", 7 * 24 * 60),  # day of month OR day of week: every Friday at least
        ("0 0,12 * * *", 12 * 60),
    ],
)
def test_cron_gap_is_the_longest_time_between_two_runs(expression: str, gap: int) -> None:
    assert cron_max_gap_minutes(expression) == gap


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("@daily", "must have 5 fields"),
        ("0 2 * *", "must have 5 fields"),
        ("0 25 * * *", "hour field '25' is outside 0-23"),
        ("0 2 * * MON", "use numbers"),
        ("0 0 30 2 *", "fewer than two days"),
    ],
)
def test_fails_when_cron_is_not_a_five_field_schedule_that_runs(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron_max_gap_minutes(expression)


# --- config -----------------------------------------------------------------------------------------------


def test_stage_files_set_the_retention_and_lock_per_tier() -> None:
    dev, staging, prod = (load_stage(REPO / "config" / f"{n}.yaml") for n in ("dev", "staging", "prod"))
    assert dev.backup.retention.rule_days == {"Daily": 7}
    assert staging.backup.retention.rule_days == {"Daily": 14, "Weekly": 35}
    assert prod.backup.retention.rule_days == {"Daily": 35, "Weekly": 91, "Monthly": 365}
    assert (dev.backup.vault_lock, staging.backup.vault_lock) == (None, None)
    assert prod.backup.vault_lock == VaultLock(mode="governance", min_retention_days=7, max_retention_days=730)


def test_fails_when_rarer_backups_expire_first() -> None:
    with pytest.raises(ValidationError, match="weekly recovery points \\(10 days\\) would expire before the daily"):
        BackupRetention(daily_days=14, weekly_days=10)


def test_fails_when_cold_storage_has_no_monthly_rule_or_too_little_time() -> None:
    with pytest.raises(ValidationError, match="applies to monthly backups"):
        BackupRetention(daily_days=7, cold_storage_after_days=30)
    with pytest.raises(ValidationError, match="at least 90 days after cold_storage_after_days"):
        BackupRetention(daily_days=7, monthly_days=100, cold_storage_after_days=30)


def test_fails_when_compliance_lock_has_no_grace_time_or_governance_has_one() -> None:
    with pytest.raises(ValidationError, match="compliance mode needs changeable_for_days"):
        VaultLock(mode="compliance")
    with pytest.raises(ValidationError, match="turns the lock into compliance mode"):
        VaultLock(changeable_for_days=3)
    with pytest.raises(ValidationError, match="greater than or equal to 3"):
        VaultLock(mode="compliance", changeable_for_days=2)
    with pytest.raises(ValidationError, match="is below min_retention_days"):
        VaultLock(min_retention_days=30, max_retention_days=7)


def test_fails_when_a_rule_keeps_backups_outside_the_lock_range() -> None:
    lock = VaultLock(min_retention_days=7, max_retention_days=365)
    with pytest.raises(ValidationError, match="monthly rule keeps 400 days, outside the vault lock's 7-365 days"):
        BackupConfig(retention=BackupRetention(daily_days=7, monthly_days=400), vault_lock=lock)
    with pytest.raises(ValidationError, match="daily rule keeps 3 days"):
        BackupConfig(retention=BackupRetention(daily_days=3), vault_lock=lock)


def test_fails_when_velero_backups_expire_before_the_next_run() -> None:
    with pytest.raises(ValidationError, match="ttl_hours 12 expires backups before the next run"):
        VeleroSchedule(cron="0 2 * * *", ttl_hours=12)
    assert VeleroSchedule(cron="0 */6 * * *", ttl_hours=6).ttl == "6h0m0s"


def test_fails_when_a_schedule_misses_the_kubernetes_rpo() -> None:
    targets = dict(DEFAULT_TARGETS)
    targets["kubernetes-objects"] = RecoveryTarget(rpo_minutes=360, rto_minutes=60)
    with pytest.raises(ValidationError, match=re.escape("velero_schedules.mlops: '0 2 * * *' runs up to 1440 minutes")):
        BackupConfig(targets=targets, velero_schedules={"mlops": VeleroSchedule(cron="0 2 * * *")})
    ok = BackupConfig(targets=targets, velero_schedules={"mlops": VeleroSchedule(cron="0 */6 * * *")})
    assert ok.velero_schedules["mlops"].max_gap_minutes == 360


@pytest.mark.parametrize(
    ("workload", "rpo", "message"),
    [
        ("shared-file-system", 60, "below the 1440 minutes of the daily AWS Backup rule"),
        ("block-volumes", 720, "below the 1440 minutes of the daily AWS Backup rule"),
        ("database", 1, "below the 5 minutes between RDS transaction log uploads"),
    ],
)
def test_fails_when_a_target_promises_more_than_its_schedule(workload: WorkloadClass, rpo: int, message: str) -> None:
    targets = {**DEFAULT_TARGETS, workload: RecoveryTarget(rpo_minutes=rpo, rto_minutes=60)}
    with pytest.raises(ValidationError, match=message):
        BackupConfig(targets=targets)


def test_fails_when_a_workload_class_has_no_target() -> None:
    targets = {k: v for k, v in DEFAULT_TARGETS.items() if k != "cache"}
    with pytest.raises(ValidationError, match="no RPO/RTO for cache"):
        BackupConfig(targets=targets)


def test_fails_when_a_namespace_name_is_invalid() -> None:
    with pytest.raises(ValidationError, match="'ML_Ops' is not a Kubernetes namespace name"):
        BackupConfig(velero_schedules={"ML_Ops": VeleroSchedule()})


def test_fails_when_prod_has_no_vault_lock() -> None:
    raw = raw_stage("prod")
    del raw["backup"]["vault_lock"]
    with pytest.raises(ValidationError, match="prod locks its backup vault"):
        StageConfig.model_validate(raw)


def test_fails_when_a_compliance_lock_is_set_outside_prod() -> None:
    raw = raw_stage("staging")
    raw["backup"]["vault_lock"] = {"mode": "compliance", "min_retention_days": 7, "changeable_for_days": 3}
    with pytest.raises(ValidationError, match="a compliance lock is permanent after its grace time"):
        StageConfig.model_validate(raw)
    prod = raw_stage("prod")
    prod["backup"]["vault_lock"] = {
        "mode": "compliance",
        "min_retention_days": 7,
        "max_retention_days": 730,
        "changeable_for_days": 3,
    }
    assert StageConfig.model_validate(prod).backup.vault_lock is not None


def test_documented_targets_match_the_config_defaults() -> None:
    doc = (REPO / "docs" / "backup-and-restore.md").read_text()
    section = doc.split("## Recovery targets", 1)[1].split("\n## ", 1)[0]
    rows = {
        m[1]: RecoveryTarget(rpo_minutes=int(m[2]), rto_minutes=int(m[3]))
        for m in re.finditer(r"^\| ([a-z-]+) \| (\d+) min[^|]*\| (\d+) min \|", section, re.MULTILINE)
    }
    assert rows == dict(DEFAULT_TARGETS)
    assert set(rows) == set(WORKLOAD_CLASSES)


# --- Velero values, permissions, schedules ----------------------------------------------------------------


VALUES = velero_values(
    bucket_name="ml-platform-prod-velero-333333333333-us-east-1",
    region="us-east-1",
    kms_key_arn="arn:aws:kms:us-east-1:333333333333:key/00000000-0000-0000-0000-000000000000",
    node_selector={"ml-platform/pool": "system"},
)


def test_velero_values_exist_in_the_pinned_chart_and_pass_its_schema() -> None:
    require_reference_dir()
    assert validate_helm_values(velero.CHART.chart, velero.CHART.version, VALUES) == []


def test_velero_values_check_catches_a_misspelled_key() -> None:
    require_reference_dir()
    broken = copy.deepcopy(VALUES)
    broken["credentials"]["useSecrets"] = False
    assert any("credentials.useSecrets" in e for e in validate_helm_values("velero", "12.1.0", broken))


def test_velero_uses_pod_identity_and_the_kms_encrypted_bucket() -> None:
    assert VALUES["credentials"] == {"useSecret": False}
    assert VALUES["serviceAccount"]["server"]["name"] == velero.SERVICE_ACCOUNT
    assert VALUES["deployNodeAgent"] is False
    [location] = VALUES["configuration"]["backupStorageLocation"]
    assert location["provider"] == "aws" and location["default"] is True
    assert set(location["config"]) == {"region", "kmsKeyId"}
    assert VALUES["configuration"]["volumeSnapshotLocation"] == [
        {"name": "default", "provider": "aws", "config": {"region": "us-east-1"}}
    ]


def test_velero_images_are_pinned_to_the_chart_release() -> None:
    require_reference_dir()
    chart = yaml.safe_load((require_reference_dir() / "charts" / "velero" / "12.1.0" / "Chart.yaml").read_text())
    assert VALUES["image"]["tag"] == f"v{chart['appVersion']}"
    [plugin] = VALUES["initContainers"]
    match = re.fullmatch(r"docker\.io/velero/velero-plugin-for-aws:v(\d+)\.(\d+)\.(\d+)", plugin["image"])
    assert match, plugin["image"]
    # The plugin's compatibility matrix: plugin 1.(N-4) for Velero 1.N.
    velero_minor = int(chart["appVersion"].split(".")[1])
    assert (int(match[1]), int(match[2])) == (1, velero_minor - 4)


def test_velero_service_account_is_the_charts_default_name() -> None:
    # <fullname>-server, where fullname is the release name "velero" (it contains the chart name).
    assert f"{velero.CHART.chart}-server" == velero.SERVICE_ACCOUNT


def test_fails_without_a_node_selector_or_bucket() -> None:
    with pytest.raises(ValueError, match="node_selector is empty"):
        velero_values(bucket_name="b", region="us-east-1", kms_key_arn="k", node_selector={})
    with pytest.raises(ValueError, match="bucket_name is empty"):
        velero_values(bucket_name="", region="us-east-1", kms_key_arn="k", node_selector={"a": "b"})


def test_velero_permissions_are_scoped() -> None:
    statements = [
        s.to_statement_json()
        for s in velero_statements(
            partition="aws", region="us-east-1", account="333333333333", bucket_name="bkt", key_arn="arn:key"
        )
    ]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), statement
        if "*" in resources:
            assert all(a.startswith("ec2:Describe") for a in actions), statement
        if any(
            a in ("ec2:CreateSnapshot", "ec2:CreateVolume", "ec2:DeleteSnapshot", "ec2:CreateTags") for a in actions
        ):
            assert "Condition" in statement, f"mutating EC2 statement without a condition: {statement}"
        if any(a.startswith("s3:") for a in actions):
            assert set(resources) <= {"arn:aws:s3:::bkt", "arn:aws:s3:::bkt/*"}, statement
    delete = next(s for s in statements if s["Action"] == "ec2:DeleteSnapshot")
    assert delete["Condition"] == {"StringLike": {"aws:ResourceTag/velero.io/backup": "*"}}


def synth_schedules(schedules: dict[str, NamespaceSchedule]) -> list[dict[str, Any]]:
    chart = BackupSchedulesChart(
        cdk8s.Testing.app(),
        "backup-schedules",
        namespace=velero.NAMESPACE,
        schedules=schedules,
        storage_location=velero.STORAGE_LOCATION,
        snapshot_location=velero.SNAPSHOT_LOCATION,
    )
    manifests: list[dict[str, Any]] = cdk8s.Testing.synth(chart)
    return manifests


def test_prod_schedules_are_valid_velero_schedules() -> None:
    require_reference_dir()
    prod = load_stage(REPO / "config" / "prod.yaml")
    manifests = synth_schedules(
        {ns: NamespaceSchedule(cron=s.cron, ttl=s.ttl) for ns, s in prod.backup.velero_schedules.items()}
    )
    assert sorted(m["metadata"]["name"] for m in manifests) == sorted(
        f"{ns}-backup" for ns in prod.backup.velero_schedules
    )
    for manifest in manifests:
        assert validate_object(manifest, prod.cluster.kubernetes_version) == []
        namespace = manifest["spec"]["template"]["includedNamespaces"][0]
        expected = prod.backup.velero_schedules[namespace]
        assert manifest["metadata"]["namespace"] == "velero"
        assert manifest["spec"]["schedule"] == expected.cron
        assert manifest["spec"]["template"]["ttl"] == expected.ttl
        assert manifest["spec"]["template"]["volumeSnapshotLocations"] == ["default"]


def test_schedule_check_catches_an_unknown_field() -> None:
    require_reference_dir()
    [manifest] = synth_schedules({"mlops": NamespaceSchedule(cron="0 2 * * *", ttl="720h0m0s")})
    manifest["spec"]["template"]["snapshotVolume"] = True
    assert any("snapshotVolume: unknown field" in e for e in validate_object(manifest, "1.35"))


def test_schedule_without_snapshots_names_no_snapshot_location() -> None:
    [manifest] = synth_schedules(
        {"research": NamespaceSchedule(cron="0 2 * * *", ttl="720h0m0s", snapshot_volumes=False)}
    )
    assert manifest["spec"]["template"]["snapshotVolumes"] is False
    assert "volumeSnapshotLocations" not in manifest["spec"]["template"]


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        ({}, "schedules is empty"),
        ({"ML": NamespaceSchedule(cron="0 2 * * *", ttl="720h0m0s")}, "not a namespace name"),
        ({"mlops": NamespaceSchedule(cron="@daily", ttl="720h0m0s")}, "must have 5 fields"),
        ({"mlops": NamespaceSchedule(cron="0 2 * * *", ttl="30d")}, "must be hours as a Go duration"),
    ],
)
def test_fails_when_a_schedule_is_invalid(schedules: dict[str, NamespaceSchedule], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synth_schedules(schedules)


# --- BackupStack ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def configs(stage_configs: dict[str, StageConfig]) -> dict[str, StageConfig]:
    return {name.capitalize(): config for name, config in stage_configs.items()}


def backup_stack(assembly: CloudAssembly, stage: str) -> StackArtifact:
    return assembly.stack(stage, "Backup")


def only(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(resources) == 1, list(resources)
    return next(iter(resources.values()))


@pytest.mark.parametrize("stage", STAGES)
def test_stateful_logical_ids_are_stable(assembly: CloudAssembly, stage: str) -> None:
    resources = backup_stack(assembly, stage).resources
    for logical_id, resource_type in BACKUP_STATEFUL_IDS.items():
        assert logical_id in resources, f"{stage}: {logical_id} ({resource_type}) renamed: it would be replaced"
        assert resources[logical_id]["Type"] == resource_type


@pytest.mark.parametrize("stage", STAGES)
def test_state_is_retained_outside_dev_and_stack_protected_per_config(
    assembly: CloudAssembly, configs: dict[str, StageConfig], stage: str
) -> None:
    stack = backup_stack(assembly, stage)
    expected = "Delete" if configs[stage].data.removal_policy == "destroy" else "Retain"
    for logical_id in BACKUP_STATEFUL_IDS:
        resource = stack.resources[logical_id]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (expected, expected), logical_id
    assert stack.properties.get("terminationProtection", False) is configs[stage].termination_protection
    assert (expected, stage) != ("Delete", "Prod")


@pytest.mark.parametrize("stage", STAGES)
def test_velero_bucket_is_encrypted_versioned_private_logged_and_tls_only(assembly: CloudAssembly, stage: str) -> None:
    stack = backup_stack(assembly, stage)
    props = stack.resources[VELERO_BUCKET]["Properties"]
    [encryption] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "KMSMasterKeyID": {"Fn::GetAtt": [VELERO_KEY, "Arn"]},
        "SSEAlgorithm": "aws:kms",
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["LoggingConfiguration"] == {"DestinationBucketName": {"Ref": ACCESS_LOGS}, "LogFilePrefix": "velero/"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireDeletedBackups"]["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0
    policy = only(
        {
            k: v
            for k, v in stack.resources_of("AWS::S3::BucketPolicy").items()
            if v["Properties"]["Bucket"] == {"Ref": VELERO_BUCKET}
        }
    )
    denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s["Condition"] for s in denies]
    for key in (VELERO_KEY, "VaultKey22C7D747"):
        assert stack.resources[key]["Properties"]["EnableKeyRotation"] is True


@pytest.mark.parametrize("stage", STAGES)
def test_plan_rules_and_retention_follow_the_stage(
    assembly: CloudAssembly, configs: dict[str, StageConfig], stage: str
) -> None:
    config = configs[stage].backup
    plan = only(backup_stack(assembly, stage).resources_of("AWS::Backup::BackupPlan"))
    rules = {r["RuleName"]: r for r in plan["Properties"]["BackupPlan"]["BackupPlanRule"]}
    assert {name: r["Lifecycle"]["DeleteAfterDays"] for name, r in rules.items()} == config.retention.rule_days
    hour = config.schedule_hour_utc
    expressions = {
        "Daily": f"cron(0 {hour} * * ? *)",
        "Weekly": f"cron(0 {hour} ? * SUN *)",
        "Monthly": f"cron(0 {hour} 1 * ? *)",
    }
    for name, rule in rules.items():
        assert rule["ScheduleExpression"] == expressions[name]
        assert rule["TargetBackupVault"] == {"Fn::GetAtt": [VAULT, "BackupVaultName"]}
        cold = config.retention.cold_storage_after_days if name == "Monthly" else None
        assert rule["Lifecycle"].get("MoveToColdStorageAfterDays") == cold


def test_prod_moves_monthlies_to_cold_storage(assembly: CloudAssembly) -> None:
    plan = only(backup_stack(assembly, "Prod").resources_of("AWS::Backup::BackupPlan"))
    monthly = next(r for r in plan["Properties"]["BackupPlan"]["BackupPlanRule"] if r["RuleName"] == "Monthly")
    assert monthly["Lifecycle"] == {"DeleteAfterDays": 365, "MoveToColdStorageAfterDays": 90}


@pytest.mark.parametrize("stage", STAGES)
def test_vault_is_encrypted_and_locked_only_in_prod(
    assembly: CloudAssembly, configs: dict[str, StageConfig], stage: str
) -> None:
    props = backup_stack(assembly, stage).resources[VAULT]["Properties"]
    assert props["EncryptionKeyArn"] == {"Fn::GetAtt": ["VaultKey22C7D747", "Arn"]}
    lock = configs[stage].backup.vault_lock
    if stage == "Prod":
        assert lock is not None
        assert props["LockConfiguration"] == {
            "MinRetentionDays": lock.min_retention_days,
            "MaxRetentionDays": lock.max_retention_days,
        }
        # Governance mode: no ChangeableForDays, so the lock never becomes permanent.
        assert "ChangeableForDays" not in props["LockConfiguration"]
    else:
        assert "LockConfiguration" not in props
    blocks_deletion = "AccessPolicy" in props
    assert blocks_deletion is (configs[stage].data.removal_policy == "retain")


def _output_names(value: Any) -> list[str]:
    """Return the DataStack output names a selection's resource refers to."""
    text = repr(value)
    return re.findall(r"'OutputName': '([A-Za-z0-9]+)'", text)


@pytest.mark.parametrize("stage", STAGES)
def test_selections_cover_the_database_the_file_system_and_tagged_volumes(
    assembly: CloudAssembly, configs: dict[str, StageConfig], stage: str
) -> None:
    stack = backup_stack(assembly, stage)
    config = configs[stage]
    selections = {
        v["Properties"]["BackupSelection"]["SelectionName"]: v["Properties"]["BackupSelection"]
        for v in stack.resources_of("AWS::Backup::BackupSelection").values()
    }
    prefix = f"{config.project}-{config.stage}"
    data_stores = selections[f"{prefix}-data-stores"]
    [database, file_system] = data_stores["Resources"]
    account, region = config.account, config.region
    assert database["Fn::Join"][1][0] == f"arn:aws:rds:{region}:{account}:db:"
    assert any(DATABASE in name for name in _output_names(database))
    assert file_system["Fn::Join"][1][0] == f"arn:aws:elasticfilesystem:{region}:{account}:file-system/"
    assert any(FILE_SYSTEM in name for name in _output_names(file_system))
    # The outputs exist in the data stack and hold the instance identifier and file system ID.
    outputs = assembly.stack(stage, "Data").template["Outputs"]
    for ref, name in ((DATABASE, _output_names(database)[0]), (FILE_SYSTEM, _output_names(file_system)[0])):
        assert outputs[name]["Value"] == {"Ref": ref}
    tagged = selections[f"{prefix}-tagged-volumes"]
    assert tagged["Resources"] == [f"arn:aws:ec2:{region}:{account}:volume/*"]
    assert tagged["Conditions"] == {
        "StringEquals": [{"ConditionKey": "aws:ResourceTag/ml-platform/backup", "ConditionValue": "true"}]
    }
    role = {"Fn::GetAtt": [next(iter(stack.resources_of("AWS::IAM::Role"))), "Arn"]}
    assert data_stores["IamRoleArn"] == role and tagged["IamRoleArn"] == role


def test_backup_role_is_the_backup_service_role(assembly: CloudAssembly) -> None:
    role = only(backup_stack(assembly, "Prod").resources_of("AWS::IAM::Role"))["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "backup.amazonaws.com"}
    policies = sorted(p["Fn::Join"][1][-1] for p in role["ManagedPolicyArns"])
    assert policies == [
        ":iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
        ":iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores",
    ]


# --- VeleroStack ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_velero_role_is_associated_with_the_server_and_scoped(assembly: CloudAssembly, stage: str) -> None:
    stack = assembly.stack(stage, "Velero")
    association = only(stack.resources_of("AWS::EKS::PodIdentityAssociation"))["Properties"]
    assert (association["Namespace"], association["ServiceAccount"]) == ("velero", "velero-server")
    statements = only(stack.resources_of("AWS::IAM::Policy"))["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a in ("*", "s3:*", "ec2:*", "kms:*") for a in actions), statement
        if statement["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in actions), statement
    s3_resources = {r for s in statements if str(s["Action"]).count("s3:") for r in _as_list(s["Resource"])}
    bucket = f"arn:aws:s3:::{backup_stack(assembly, stage).resources[VELERO_BUCKET]['Properties']['BucketName']}"
    assert s3_resources == {bucket, f"{bucket}/*"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stage", STAGES)
def test_velero_release_and_schedules_are_valid_and_ordered(
    assembly: CloudAssembly, configs: dict[str, StageConfig], stage: str
) -> None:
    require_reference_dir()
    [release] = [r for r in helm_releases(assembly) if r.stage == stage and r.chart == "velero"]
    assert (release.stack, release.namespace, release.version) == ("Velero", "velero", "12.1.0")
    assert release.repository == "https://vmware-tanzu.github.io/helm-charts"
    assert validate_helm_values(release.chart, release.version, release.values) == []
    [location] = release.values["configuration"]["backupStorageLocation"]
    bucket = backup_stack(assembly, stage).resources[VELERO_BUCKET]["Properties"]["BucketName"]
    assert location["bucket"] == bucket
    schedules = [o for o in deployed_objects(assembly) if o.stage == stage and o.obj.get("kind") == "Schedule"]
    config = configs[stage]
    assert sorted(o.obj["metadata"]["name"] for o in schedules) == sorted(
        f"{ns}-backup" for ns in config.backup.velero_schedules
    )
    for schedule in schedules:
        assert validate_object(schedule.obj, config.cluster.kubernetes_version) == []
    stack = assembly.stack(stage, "Velero")
    # The schedules need the release's CRDs; the release needs its role.
    manifest = stack.resources[schedules[0].logical_id]
    assert release.logical_id in manifest.get("DependsOn", [])
    association = next(iter(stack.resources_of("AWS::EKS::PodIdentityAssociation")))
    assert association in stack.resources[release.logical_id].get("DependsOn", [])
