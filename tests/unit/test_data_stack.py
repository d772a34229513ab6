"""DataStack and ReplicaStack: the stateful tier of dev (disposable) and prod (retained, replicated).

The app is built once for the module (jsii calls are slow); every test reads its templates. Expected
values come from the stage configs, so a config change moves the assertions with it; logical IDs of
stateful resources are literal on purpose: a change to one means CloudFormation replaces the resource.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from config.model import StageConfig
from platform_constructs.cache import ENGINES
from platform_constructs.data_buckets import DATASETS_PREFIXES, MODELS_PREFIXES
from platform_constructs.secure_bucket import bucket_name
from tests.support.assembly import CloudAssembly, StackArtifact

# Logical IDs of the stateful resources: changing one makes CloudFormation replace (or orphan) the resource.
DATA_STATEFUL_IDS = {
    "DataKey5CEB6F76": "AWS::KMS::Key",
    "AccessLogs247031D9": "AWS::S3::Bucket",
    "Datasets9A172240": "AWS::S3::Bucket",
    "Models7F217E31": "AWS::S3::Bucket",
    "FileSystem74E8793E": "AWS::EFS::FileSystem",
    "DatabaseF44359DD": "AWS::RDS::DBInstance",
    "Cache18F6EE16": "AWS::ElastiCache::ReplicationGroup",
    "CacheAuthToken04672416": "AWS::SecretsManager::Secret",
}
REPLICA_STATEFUL_IDS = {
    "ReplicaKey5BA10654": "AWS::KMS::Key",
    "AccessLogs247031D9": "AWS::S3::Bucket",
    "DatasetsReplica244CF368": "AWS::S3::Bucket",
    "ModelsReplica20CF3DB5": "AWS::S3::Bucket",
}
DATASETS = "Datasets9A172240"
MODELS = "Models7F217E31"
ACCESS_LOGS = "AccessLogs247031D9"
DATA_KEY = "DataKey5CEB6F76"
REPLICA_KEY = "ReplicaKey5BA10654"


@dataclass(frozen=True)
class Built:
    """One stage's data tier, read from the session's synthesized app."""

    config: StageConfig
    data: StackArtifact
    template: Template
    replica: StackArtifact | None
    replica_template: Template | None

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template.to_json()["Resources"]
        return resources


@dataclass(frozen=True)
class Synthesized:
    stages: dict[str, Built]
    report: dict[str, Any]


@pytest.fixture(scope="module")
def synthesized(assembly: CloudAssembly, stage_configs: dict[str, StageConfig]) -> Synthesized:
    stages: dict[str, Built] = {}
    for name in ("dev", "prod"):
        stage = name.capitalize()
        data = assembly.stack(stage, "Data")
        replica = next((s for s in assembly.stacks if s.stage == stage and s.construct_id == "Replica"), None)
        stages[name] = Built(
            config=stage_configs[name],
            data=data,
            template=Template.from_json(data.template),
            replica=replica,
            replica_template=Template.from_json(replica.template) if replica else None,
        )
    return Synthesized(stages=stages, report=assembly.validation_report)


def _region(stack: StackArtifact, assembly: CloudAssembly) -> str:
    manifest = json.loads((stack.template_path.parent / "manifest.json").read_text())
    env: str = manifest["artifacts"][stack.artifact_id]["environment"]
    return env.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def dev(synthesized: Synthesized) -> Built:
    return synthesized.stages["dev"]


@pytest.fixture(scope="module")
def prod(synthesized: Synthesized) -> Built:
    return synthesized.stages["prod"]


def _name(config: StageConfig, purpose: str, region: str | None = None) -> str:
    return f"{config.project}-{config.stage}-{purpose}-{config.account}-{region or config.region}"


# --- logical IDs, removal and protection ---------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_stateful_logical_ids_are_stable(synthesized: Synthesized, stage: str) -> None:
    resources = synthesized.stages[stage].resources
    for logical_id, resource_type in DATA_STATEFUL_IDS.items():
        assert logical_id in resources, f"{stage}: {logical_id} ({resource_type}) renamed: it would be replaced"
        assert resources[logical_id]["Type"] == resource_type


def test_replica_logical_ids_are_stable(prod: Built) -> None:
    assert prod.replica_template is not None
    resources = prod.replica_template.to_json()["Resources"]
    for logical_id, resource_type in REPLICA_STATEFUL_IDS.items():
        assert resources[logical_id]["Type"] == resource_type


def test_prod_retains_state_and_snapshots_the_database(prod: Built) -> None:
    for logical_id in DATA_STATEFUL_IDS:
        expected = "Snapshot" if logical_id == "DatabaseF44359DD" else "Retain"
        resource = prod.resources[logical_id]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (expected, expected), logical_id
    assert prod.replica_template is not None
    replica = prod.replica_template.to_json()["Resources"]
    for logical_id in REPLICA_STATEFUL_IDS:
        assert (replica[logical_id]["DeletionPolicy"], replica[logical_id]["UpdateReplacePolicy"]) == (
            "Retain",
            "Retain",
        )


def test_prod_keeps_the_database_secret_with_its_snapshot(prod: Built) -> None:
    # A final snapshot is useless without the admin password.
    secrets = [
        resource
        for resource in prod.resources.values()
        if resource["Type"] == "AWS::SecretsManager::Secret"
        and resource["Properties"].get("GenerateSecretString", {}).get("GenerateStringKey") == "password"
    ]
    assert [s["DeletionPolicy"] for s in secrets] == ["Retain"]


def test_dev_destroys_its_state(dev: Built) -> None:
    assert dev.config.data.removal_policy == "destroy"
    for logical_id in DATA_STATEFUL_IDS:
        resource = dev.resources[logical_id]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Delete", "Delete"), logical_id


def test_termination_protection_follows_config(dev: Built, prod: Built) -> None:
    assert dev.data.properties.get("terminationProtection", False) is False
    assert prod.data.properties["terminationProtection"] is True
    assert prod.replica is not None and prod.replica.properties["terminationProtection"] is True


# --- buckets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize(("logical_id", "purpose"), [(DATASETS, "datasets"), (MODELS, "models")])
def test_data_buckets_are_kms_encrypted_versioned_private_and_logged(
    synthesized: Synthesized, stage: str, logical_id: str, purpose: str
) -> None:
    built = synthesized.stages[stage]
    props = built.resources[logical_id]["Properties"]
    assert props["BucketName"] == _name(built.config, purpose)
    assert props["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {
                "BucketKeyEnabled": True,
                "ServerSideEncryptionByDefault": {
                    "KMSMasterKeyID": {"Fn::GetAtt": [DATA_KEY, "Arn"]},
                    "SSEAlgorithm": "aws:kms",
                },
            }
        ]
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": ACCESS_LOGS},
        "LogFilePrefix": f"{purpose}/",
    }
    abort = {
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        "Id": "AbortIncompleteMultipartUploads",
        "Status": "Enabled",
    }
    assert abort in props["LifecycleConfiguration"]["Rules"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize("logical_id", [DATASETS, MODELS, ACCESS_LOGS])
def test_buckets_deny_plain_http(synthesized: Synthesized, stage: str, logical_id: str) -> None:
    synthesized.stages[stage].template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logical_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "s3:*",
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_lifecycle_days_come_from_config(synthesized: Synthesized, stage: str) -> None:
    built = synthesized.stages[stage]
    buckets = built.config.data.buckets
    datasets_rules = built.resources[DATASETS]["Properties"]["LifecycleConfiguration"]["Rules"]
    glacier = [{"StorageClass": "GLACIER", "TransitionInDays": buckets.datasets_glacier_after_days}]
    archive = {"Id": "ArchiveDatasets", "Status": "Enabled", "Transitions": glacier}
    assert {**archive, "NoncurrentVersionTransitions": glacier} in datasets_rules
    models_rules = built.resources[MODELS]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {
        "Id": "ArchiveSupersededModels",
        "Status": "Enabled",
        "NoncurrentVersionTransitions": [
            {"StorageClass": "GLACIER", "TransitionInDays": buckets.models_noncurrent_archive_after_days}
        ],
        "NoncurrentVersionExpiration": {"NoncurrentDays": buckets.models_noncurrent_expire_after_days},
    } in models_rules


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_access_log_bucket_is_sse_s3_and_expires(synthesized: Synthesized, stage: str) -> None:
    built = synthesized.stages[stage]
    props = built.resources[ACCESS_LOGS]["Properties"]
    assert props["BucketName"] == _name(built.config, "access-logs")
    # S3 server access logging cannot deliver into an SSE-KMS bucket.
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == (
        built.config.data.buckets.access_log_expire_after_days
    )


def test_prefix_conventions_are_exported() -> None:
    assert DATASETS_PREFIXES == ("raw/", "processed/", "interim/", "external/")
    assert MODELS_PREFIXES == ("trained/", "artifacts/", "experiments/", "production/")


def test_fails_when_bucket_name_exceeds_63_characters() -> None:
    with pytest.raises(ValueError, match=r"is \d+ characters and S3 allows at most 63: shorten the project"):
        bucket_name(
            prefix="ml-platform-longstagename1",
            purpose="datasets-replica",
            account="1" * 12,
            region="ap-southeast-2",
        )


def test_fails_when_bucket_name_breaks_s3_rules() -> None:
    with pytest.raises(ValueError, match="breaks the S3 naming rules"):
        bucket_name(prefix="ML Platform-dev", purpose="datasets", account="1" * 12, region="us-east-1")


def test_fails_when_bucket_name_gets_an_unresolved_account() -> None:
    with pytest.raises(ValueError, match="explicit env"):
        bucket_name(prefix="ml-platform-dev", purpose="datasets", account=cdk.Aws.ACCOUNT_ID, region="us-east-1")


# --- cross-region replication ----------------------------------------------------------------------------


def test_dev_has_no_replication(dev: Built) -> None:
    assert dev.replica is None
    dev.template.resource_properties_count_is("AWS::S3::Bucket", {"ReplicationConfiguration": Match.any_value()}, 0)


@pytest.mark.parametrize(("logical_id", "purpose"), [(DATASETS, "datasets"), (MODELS, "models")])
def test_prod_replicates_buckets_to_the_replica_region(prod: Built, logical_id: str, purpose: str) -> None:
    config = prod.config
    region = config.data.buckets.replication_region
    assert region is not None
    replication = prod.resources[logical_id]["Properties"]["ReplicationConfiguration"]
    assert replication["Role"]["Fn::GetAtt"][0].startswith("ReplicationRole")
    assert replication["Rules"] == [
        {
            "Id": "ReplicateEverything",
            "Status": "Enabled",
            "Priority": 1,
            "Filter": {"Prefix": ""},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "SourceSelectionCriteria": {"SseKmsEncryptedObjects": {"Status": "Enabled"}},
            "Destination": {
                "Bucket": f"arn:aws:s3:::{_name(config, f'{purpose}-replica', region)}",
                "EncryptionConfiguration": {
                    "ReplicaKmsKeyID": (
                        f"arn:aws:kms:{region}:{config.account}:alias/{config.project}-{config.stage}/replica"
                    )
                },
            },
        }
    ]


def test_replication_role_encrypts_only_with_the_aliased_replica_key(prod: Built) -> None:
    config = prod.config
    prefix = f"{config.project}-{config.stage}"
    region = config.data.buckets.replication_region
    prod.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "EncryptReplicasWithReplicaKey",
                                "Effect": "Allow",
                                "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                                "Resource": f"arn:aws:kms:{region}:{config.account}:key/*",
                                "Condition": Match.object_like(
                                    {
                                        "ForAnyValue:StringEquals": {"kms:ResourceAliases": f"alias/{prefix}/replica"},
                                        "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
                                    }
                                ),
                            }
                        )
                    ]
                )
            }
        },
    )


def test_prod_data_stack_deploys_after_the_replica(prod: Built, assembly: CloudAssembly) -> None:
    assert prod.replica is not None
    manifest = json.loads((prod.data.template_path.parent / "manifest.json").read_text())
    assert prod.replica.artifact_id in manifest["artifacts"][prod.data.artifact_id]["dependencies"]
    assert _region(prod.replica, assembly) == prod.config.data.buckets.replication_region
    assert _region(prod.replica, assembly) != _region(prod.data, assembly)


def test_replica_key_rotates_and_carries_the_alias(prod: Built) -> None:
    assert prod.replica_template is not None
    prod.replica_template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    prod.replica_template.has_resource_properties(
        "AWS::KMS::Alias",
        {
            "AliasName": f"alias/{prod.config.project}-{prod.config.stage}/replica",
            "TargetKeyId": Match.any_value(),
        },
    )


@pytest.mark.parametrize(
    ("logical_id", "purpose"),
    [("DatasetsReplica244CF368", "datasets-replica"), ("ModelsReplica20CF3DB5", "models-replica")],
)
def test_replica_buckets_are_versioned_encrypted_and_private(prod: Built, logical_id: str, purpose: str) -> None:
    assert prod.replica_template is not None and prod.replica is not None
    props = prod.replica_template.to_json()["Resources"][logical_id]["Properties"]
    assert props["BucketName"] == _name(prod.config, purpose, prod.config.data.buckets.replication_region)
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert encryption == {"KMSMasterKeyID": {"Fn::GetAtt": [REPLICA_KEY, "Arn"]}, "SSEAlgorithm": "aws:kms"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    prod.replica_template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logical_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )


# --- EFS -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_file_system_is_encrypted_backed_up_and_elastic(synthesized: Synthesized, stage: str) -> None:
    built = synthesized.stages[stage]
    props = built.resources["FileSystem74E8793E"]["Properties"]
    assert props["Encrypted"] is True
    assert props["KmsKeyId"] == {"Fn::GetAtt": [DATA_KEY, "Arn"]}
    assert props["BackupPolicy"] == {"Status": "ENABLED" if built.config.data.efs_backup else "DISABLED"}
    assert props["ThroughputMode"] == "elastic"
    assert props["LifecyclePolicies"] == [
        {"TransitionToIA": "AFTER_30_DAYS"},
        {"TransitionToPrimaryStorageClass": "AFTER_1_ACCESS"},
    ]
    statements = props["FileSystemPolicy"]["Statement"]
    deny_plain_nfs = {
        "Sid": "DenyWithoutTls",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    assert deny_plain_nfs in statements
    # Mount targets: one per zone, in the node subnets.
    built.template.resource_count_is("AWS::EFS::MountTarget", len(built.config.availability_zones))


def test_access_points_root_clients_as_uid_1000(prod: Built) -> None:
    for path in ("/datasets", "/models", "/checkpoints"):
        prod.template.has_resource_properties(
            "AWS::EFS::AccessPoint",
            {
                "FileSystemId": {"Ref": "FileSystem74E8793E"},
                "PosixUser": {"Uid": "1000", "Gid": "1000"},
                "RootDirectory": {
                    "Path": path,
                    "CreationInfo": {"OwnerUid": "1000", "OwnerGid": "1000", "Permissions": "0750"},
                },
            },
        )
    access_points = prod.data.resources_of("AWS::EFS::AccessPoint").values()
    paths = {r["Properties"]["RootDirectory"]["Path"] for r in access_points}
    assert paths == {"/datasets", "/models", "/checkpoints"}


def _ingress_to(built: Built, group_prefix: str) -> list[dict[str, Any]]:
    rules = []
    for resource in built.resources.values():
        if resource["Type"] != "AWS::EC2::SecurityGroupIngress":
            continue
        group = resource["Properties"]["GroupId"]["Fn::GetAtt"][0]
        if group.startswith(group_prefix):
            rules.append(resource["Properties"])
    return rules


def _is_node_security_group(source: Any) -> bool:
    output = source.get("Fn::GetStackOutput", {}) if isinstance(source, dict) else {}
    return "NodeSecurityGroup" in output.get("OutputName", "") and output.get("StackName", "").endswith("-network")


@pytest.mark.parametrize(
    ("group_prefix", "port"),
    [("FileSystemSecurityGroup", 2049), ("CacheSecurityGroup", 6379), ("DatabaseSecurityGroup", 5432)],
)
def test_stores_admit_their_port_from_the_node_security_group_only(prod: Built, group_prefix: str, port: int) -> None:
    rules = _ingress_to(prod, group_prefix)
    from_nodes = [r for r in rules if _is_node_security_group(r["SourceSecurityGroupId"])]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in from_nodes] == [("tcp", port, port)]
    others = [r["SourceSecurityGroupId"] for r in rules if r not in from_nodes]
    if group_prefix == "DatabaseSecurityGroup":
        # ... and the database also from its secret rotation function, which must log in to rotate.
        rotation = next(k for k in prod.resources if k.startswith("DatabaseRotationSecurityGroup"))
        assert others == [{"Fn::GetAtt": [rotation, "GroupId"]}]
    else:
        assert others == []
    group = next(
        v for k, v in prod.resources.items() if k.startswith(group_prefix) and v["Type"] == "AWS::EC2::SecurityGroup"
    )
    assert "SecurityGroupIngress" not in group["Properties"]


# --- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_database_follows_config(synthesized: Synthesized, stage: str) -> None:
    built = synthesized.stages[stage]
    rds = built.config.data.rds
    props = built.resources["DatabaseF44359DD"]["Properties"]
    assert props["Engine"] == "postgres"
    assert props["EngineVersion"] == rds.engine_version
    assert props["DBInstanceClass"] == rds.instance_class
    assert props["MultiAZ"] is rds.multi_az
    assert props["BackupRetentionPeriod"] == rds.backup_retention_days
    assert props["AllocatedStorage"] == str(rds.allocated_storage_gib)
    assert props["MaxAllocatedStorage"] == rds.max_allocated_storage_gib
    assert props["DeletionProtection"] is (built.config.tier != "dev")
    assert props["StorageType"] == "gp3"
    assert props["StorageEncrypted"] is True
    assert props["KmsKeyId"] == {"Fn::GetAtt": [DATA_KEY, "Arn"]}
    assert props["EnablePerformanceInsights"] is True
    assert props["PerformanceInsightsKMSKeyId"] == {"Fn::GetAtt": [DATA_KEY, "Arn"]}
    assert props["MonitoringInterval"] == 60
    assert props["EnableCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    assert props["EnableIAMDatabaseAuthentication"] is True
    assert props["AutoMinorVersionUpgrade"] is True
    assert props["PubliclyAccessible"] is False


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_database_forces_tls(synthesized: Synthesized, stage: str) -> None:
    built = synthesized.stages[stage]
    built.template.has_resource_properties(
        "AWS::RDS::DBParameterGroup",
        {
            "Family": f"postgres{built.config.data.rds.engine_version}",
            "Parameters": Match.object_like({"rds.force_ssl": "1"}),
        },
    )


def test_database_lives_in_the_data_subnets(prod: Built) -> None:
    subnet_group = next(v for v in prod.resources.values() if v["Type"] == "AWS::RDS::DBSubnetGroup")
    outputs = [s["Fn::GetStackOutput"]["OutputName"] for s in subnet_group["Properties"]["SubnetIds"]]
    assert outputs and all("DataSubnet" in name for name in outputs)


def test_database_secret_is_encrypted_and_rotates_every_30_days(prod: Built) -> None:
    prod.template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {
            "GenerateSecretString": Match.object_like({"GenerateStringKey": "password"}),
            "KmsKeyId": {"Fn::GetAtt": [DATA_KEY, "Arn"]},
        },
    )
    prod.template.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule", {"RotationRules": {"ScheduleExpression": "rate(30 days)"}}
    )


def test_database_log_groups_exist_before_the_instance(prod: Built) -> None:
    prefix = f"{prod.config.project}-{prod.config.stage}"
    depends_on = prod.resources["DatabaseF44359DD"]["DependsOn"]
    for export in ("postgresql", "upgrade"):
        prod.template.has_resource_properties(
            "AWS::Logs::LogGroup",
            {
                "LogGroupName": f"/aws/rds/instance/{prefix}-postgres/{export}",
                "RetentionInDays": prod.config.log_retention_days,
            },
        )
    assert len([d for d in depends_on if d.startswith("Database") and "Logs" in d]) == 2


# --- cache -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cache_follows_config(synthesized: Synthesized, stage: str) -> None:
    built = synthesized.stages[stage]
    cache = built.config.data.cache
    props = built.resources["Cache18F6EE16"]["Properties"]
    assert props["Engine"] == cache.engine
    assert props["EngineVersion"] == ENGINES[cache.engine].version
    assert props["CacheParameterGroupName"] == ENGINES[cache.engine].parameter_group
    assert props["CacheNodeType"] == cache.node_type
    assert props["ClusterMode"] == "enabled"
    assert props["NumNodeGroups"] == cache.shards
    assert props["ReplicasPerNodeGroup"] == cache.replicas_per_shard
    assert props["SnapshotRetentionLimit"] == cache.snapshot_retention_days
    assert props["AutomaticFailoverEnabled"] is True
    assert props["MultiAZEnabled"] is (cache.replicas_per_shard >= 1)
    assert props["AtRestEncryptionEnabled"] is True
    assert props["KmsKeyId"] == {"Fn::GetAtt": [DATA_KEY, "Arn"]}
    assert props["TransitEncryptionEnabled"] is True
    assert props["TransitEncryptionMode"] == "required"
    assert props["Port"] == 6379


def test_prod_cache_fails_over_across_zones(prod: Built) -> None:
    props = prod.resources["Cache18F6EE16"]["Properties"]
    assert props["ReplicasPerNodeGroup"] >= 1
    assert props["MultiAZEnabled"] is True


def test_cache_auth_token_is_a_dynamic_reference(prod: Built) -> None:
    token = prod.resources["Cache18F6EE16"]["Properties"]["AuthToken"]
    reference = ["{{resolve:secretsmanager:", {"Ref": "CacheAuthToken04672416"}, ":SecretString:::}}"]
    assert token == {"Fn::Join": ["", reference]}
    generator = prod.resources["CacheAuthToken04672416"]["Properties"]["GenerateSecretString"]
    assert generator["PasswordLength"] == 64
    assert set('/"@ ') <= set(generator["ExcludeCharacters"])
    assert generator.get("IncludeSpace") is False
    assert prod.resources["CacheAuthToken04672416"]["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [DATA_KEY, "Arn"]}


def test_cache_lives_in_the_data_subnets(prod: Built) -> None:
    subnet_group = next(v for v in prod.resources.values() if v["Type"] == "AWS::ElastiCache::SubnetGroup")
    outputs = [s["Fn::GetStackOutput"]["OutputName"] for s in subnet_group["Properties"]["SubnetIds"]]
    assert len(outputs) == len(prod.config.availability_zones)
    assert all("DataSubnet" in name for name in outputs)


# --- keys, attributes, cdk-nag ---------------------------------------------------------------------------


def test_data_key_rotates(prod: Built) -> None:
    props = prod.resources[DATA_KEY]["Properties"]
    assert props["EnableKeyRotation"] is True
    prod.template.has_resource_properties(
        "AWS::KMS::Alias", {"AliasName": f"alias/{prod.config.project}-{prod.config.stage}/data"}
    )


def test_outputs_for_the_cluster(prod: Built) -> None:
    outputs = prod.template.to_json()["Outputs"]
    assert outputs["CacheEndpoint"]["Value"] == {"Fn::GetAtt": ["Cache18F6EE16", "ConfigurationEndPoint.Address"]}


def test_data_tier_has_no_unacknowledged_nag_findings(synthesized: Synthesized) -> None:
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for report in synthesized.report["pluginReports"]
        for violation in report["violations"]
        for construct in violation["violatingConstructs"]
        if construct["constructPath"].split("/")[1] in ("Data", "Replica")
    ]
    assert findings == []
