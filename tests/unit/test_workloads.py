"""Workloads (issue #6): config, agent/MLOps/training charts, MLflow values, and the wired WorkloadsStack.

Charts are synthesized with ``cdk8s.Testing`` from the stage configs; the stack is read from the session's
synthesized app (``assembly``), never built again here.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import cdk8s
import pytest
from pydantic import ValidationError

from config.loader import load_stage
from config.model import StageConfig
from config.scheduling import pool_problems, quota_problems, workloads_from_objects
from config.workloads import VLLM_BASE_URL, AgentsConfig, ImageRef, TrainingConfig, WorkloadsConfig
from k8s_charts.agents import OTEL_COLLECTOR_ENDPOINT, AgentsChart, AgentService, LlmBackendSpec
from k8s_charts.agents import VLLM_BASE_URL as CHART_VLLM_BASE_URL
from k8s_charts.mlops import DATABASE_SECRET, DataProcessingChart, MlopsChart
from k8s_charts.training import (
    PIPELINE_SCRIPT,
    TEMPLATES_CONFIG_MAP,
    TUNE_SCRIPT,
    WANDB_LABEL,
    GpuPlacement,
    JobSettings,
    TrainingChart,
    find_gpu_pool,
    gpu_placement,
    pipeline_job,
    pytorch_example,
    ray_tune_example,
    torch_runtime,
    with_wandb,
)
from platform_constructs.mlflow import CHART as MLFLOW_CHART
from platform_constructs.mlflow import mlflow_values
from platform_constructs.template_manifests import PLACEHOLDER
from platform_constructs.training_operators import (
    KUBERAY_CHART,
    TRAINER_CHART,
    base36,
    emr_service_accounts,
    kubeflow_trainer_values,
    kuberay_operator_values,
)
from stacks.workloads_stack import agent_services
from tests.support.assembly import CloudAssembly
from tests.support.deployed import deployed_objects, helm_releases
from tests.support.k8s_reference import require_reference_dir, validate_helm_values, validate_object

REPO = Path(__file__).resolve().parents[2]
STAGES = {name: load_stage(REPO / "config" / f"{name}.yaml") for name in ("dev", "staging", "prod")}
PROD = STAGES["prod"]
K8S = PROD.cluster.kubernetes_version
Manifests = list[dict[str, Any]]


@pytest.fixture(scope="module", autouse=True)
def _reference() -> None:
    require_reference_dir()


def find(manifests: Manifests, kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def invalid(objects: Manifests) -> list[str]:
    return [e for obj in objects for e in validate_object(obj, K8S)]


def settings(cfg: StageConfig = PROD, *, wandb: bool = False) -> JobSettings:
    t = cfg.workloads.training
    return JobSettings(
        region=cfg.region,
        datasets_bucket="ml-platform-prod-datasets",
        models_bucket="ml-platform-prod-models",
        pytorch_image=t.pytorch_image.ref,
        ray_image=t.ray_image.ref,
        ray_version=t.ray_version,
        data_sync_image=t.data_sync_image.ref,
        termination_grace_seconds=t.termination_grace_seconds,
        checkpoint_interval_minutes=t.checkpoint_interval_minutes,
        workers=t.example_workers,
        promotion_threshold=t.promotion_threshold,
        wandb_secret=cfg.workloads.wandb.secret_name if wandb else None,
    )


def placement(cfg: StageConfig, taint: str) -> GpuPlacement:
    pool = find_gpu_pool(cfg.cluster.node_pools, taint_value=taint)
    assert pool is not None, f"{cfg.stage} has no training pool with gpu={taint}"
    return gpu_placement(pool, spot_allowed=cfg.workloads.training.spot_allowed)


def synth_agents(cfg: StageConfig = PROD, **kwargs: Any) -> Manifests:
    chart = AgentsChart(cdk8s.Testing.app(), "agents", agents=agent_services(cfg.workloads.agents), **kwargs)
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def synth_mlops(cfg: StageConfig = PROD) -> Manifests:
    work = cfg.workloads
    chart = MlopsChart(
        cdk8s.Testing.app(),
        "mlops",
        region=cfg.region,
        database_host="postgres.example.internal",
        database_secret_arn="arn:aws:secretsmanager:us-east-1:333333333333:secret:rds-AbCdEf",
        cache_host="cache.example.internal",
        cache_auth_secret_arn="arn:aws:secretsmanager:us-east-1:333333333333:secret:auth-AbCdEf",
        data_subnet_cidrs=cfg.network.data_subnets,
        databases=(work.mlflow.database, work.feast.database),
        database_client_image=work.database_client_image.ref,
        feast_image=work.feast.image.ref,
        feast_database=work.feast.database,
        feast_project=work.feast.project,
        features_uri="s3://ml-platform-prod-datasets/processed/features/",
        node_selector={"workload-type": "control"},
        feast_replicas=work.feast.replicas,
        materialization_schedule=work.feast.materialization_schedule,
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def synth_training(cfg: StageConfig = PROD, *, wandb: bool = False) -> Manifests:
    h100 = find_gpu_pool(cfg.cluster.node_pools, taint_value="h100")
    chart = TrainingChart(
        cdk8s.Testing.app(),
        "training",
        settings=settings(cfg, wandb=wandb),
        file_system_id="fs-0123456789abcdef0",
        checkpoints_access_point_id="fsap-0000000000000000c",
        datasets_access_point_id="fsap-0000000000000000d",
        a100=placement(cfg, "true"),
        h100=gpu_placement(h100) if h100 else None,
        wandb_remote_secret="ml-platform-prod/wandb" if wandb else None,
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every pod template of a RayJob, TrainingRuntime or built-in workload."""
    spec = obj["spec"]
    if obj["kind"] == "RayJob":
        cluster = spec["rayClusterSpec"]
        return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    if obj["kind"] == "TrainingRuntime":
        return [j["template"]["spec"]["template"] for j in spec["template"]["spec"]["replicatedJobs"]]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return [spec["template"]]


# --- config -------------------------------------------------------------------------------------------------


def test_defaults_need_no_yaml_and_pin_every_image() -> None:
    work = WorkloadsConfig()
    images = [a.image for _, a in work.agents.items()]
    images += [work.mlflow.image, work.feast.image, work.database_client_image]
    images += [work.training.pytorch_image, work.training.ray_image, work.training.data_sync_image]
    assert all(i.tag and i.tag != "latest" for i in images)
    assert work.training.ray_version == "2.60.0"


def test_agent_sections_merge_over_their_framework_defaults() -> None:
    agents = AgentsConfig.model_validate({"crewai": {"replicas": 5, "image": {"tag": "0.2.0"}}})
    assert agents.crewai.replicas == 5
    assert agents.crewai.image.ref == "ghcr.io/ml-platform/crewai-service:0.2.0"
    assert agents.langgraph.image.repository == "ghcr.io/ml-platform/langgraph-service"
    assert agents.autogen.backends["vllm"].endpoint == VLLM_BASE_URL


def test_dev_yaml_runs_single_replicas() -> None:
    dev = STAGES["dev"].workloads
    assert [a.replicas for _, a in dev.agents.items()] == [1, 1, 1]
    assert dev.mlflow.replicas == 1


@pytest.mark.parametrize("tag", ["latest", "LATEST", ""])
def test_fails_when_an_image_tag_is_latest_or_empty(tag: str) -> None:
    with pytest.raises(ValidationError, match="not an exact version"):
        ImageRef(repository="ghcr.io/ml-platform/crewai-service", tag=tag)


def test_fails_when_an_agent_image_in_yaml_floats() -> None:
    with pytest.raises(ValidationError, match="not an exact version"):
        AgentsConfig.model_validate({"autogen": {"image": {"tag": "latest"}}})


def test_fails_when_the_repository_carries_a_tag() -> None:
    with pytest.raises(ValidationError, match="carries a tag or digest"):
        ImageRef(repository="ghcr.io/ml-platform/crewai-service:1.0", tag="1.0")


def test_fails_when_a_prompt_version_cannot_name_a_config_map() -> None:
    with pytest.raises(ValidationError, match="must look like v3"):
        AgentsConfig.model_validate({"crewai": {"prompt_template_version": "Latest Prompts"}})


def test_fails_when_a_backend_endpoint_is_not_a_url() -> None:
    with pytest.raises(ValidationError, match="not an http"):
        AgentsConfig.model_validate({"crewai": {"backends": {"vllm": {"model": "m", "endpoint": "vllm:8000"}}}})


def test_fails_when_the_materialization_schedule_is_not_cron() -> None:
    with pytest.raises(ValidationError, match="five-field cron"):
        WorkloadsConfig.model_validate({"feast": {"materialization_schedule": "every hour"}})


def test_fails_when_the_grace_period_outlasts_the_spot_notice() -> None:
    with pytest.raises(ValidationError, match="120 s spot interruption notice"):
        TrainingConfig(spot_allowed=True, termination_grace_seconds=300)
    assert TrainingConfig(spot_allowed=False, termination_grace_seconds=300).termination_grace_seconds == 300


def test_fails_when_mlflow_and_feast_share_a_database() -> None:
    with pytest.raises(ValidationError, match="separate databases"):
        WorkloadsConfig.model_validate({"mlflow": {"database": "ml"}, "feast": {"database": "ml"}})


# --- agents ---------------------------------------------------------------------------------------------------


def test_every_agent_object_is_valid() -> None:
    manifests = synth_agents(priority_class="critical-agents")
    assert {m["kind"] for m in manifests} >= {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget"}
    assert invalid(manifests) == []


def test_agents_call_vllm_and_export_traces_to_the_collector() -> None:
    assert CHART_VLLM_BASE_URL == VLLM_BASE_URL == "http://vllm.inference.svc.cluster.local:8000/v1"
    for name in ("crewai", "langgraph", "autogen"):
        container = find(synth_agents(), "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OPENAI_BASE_URL"] == VLLM_BASE_URL
        assert (
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] == OTEL_COLLECTOR_ENDPOINT == "http://otel-collector.monitoring.svc:4317"
        )


def test_prompt_templates_are_a_versioned_read_only_config_map() -> None:
    cfg = PROD.model_copy(
        update={
            "workloads": WorkloadsConfig.model_validate({"agents": {"crewai": {"prompt_template_version": "v3.1"}}})
        }
    )
    manifests = synth_agents(cfg)
    prompts = find(manifests, "ConfigMap", "crewai-prompts-v3-1")
    assert prompts["immutable"] is True
    pod = find(manifests, "Deployment", "crewai")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "prompts")
    assert volume["configMap"]["name"] == "crewai-prompts-v3-1"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "prompts")
    assert mount["readOnly"] is True


def test_llm_backends_config_map_holds_every_backend_and_rolls_the_pods() -> None:
    backends = {"vllm": LlmBackendSpec(model="m", endpoint=VLLM_BASE_URL, max_tokens=100, requests_per_minute=10)}
    agent = AgentService(name="crewai", image="x/crewai:1", replicas=2, backends=backends, prompt_template_version="v1")

    def checksum(spec: AgentService) -> str:
        chart = AgentsChart(cdk8s.Testing.app(), "agents", agents=[spec])
        manifests: Manifests = cdk8s.Testing.synth(chart)
        document = json.loads(find(manifests, "ConfigMap", "crewai-llm-backends")["data"]["backends.json"])
        limit = spec.backends["vllm"].max_tokens
        assert document["vllm"] == {
            "model": "m",
            "endpoint": VLLM_BASE_URL,
            "max_tokens": limit,
            "requests_per_minute": 10,
        }
        annotations = find(manifests, "Deployment", "crewai")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["ml-platform/llm-backends-checksum"])

    changed = {"vllm": LlmBackendSpec(model="m", endpoint=VLLM_BASE_URL, max_tokens=200, requests_per_minute=10)}
    assert checksum(agent) != checksum(AgentService(**{**agent.__dict__, "backends": changed}))


def test_agent_pods_are_restricted_with_memory_limits_on_the_control_pool() -> None:
    for name in ("crewai", "langgraph", "autogen"):
        pod = find(synth_agents(), "Deployment", name)["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"workload-type": "control"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["limits"]["memory"]


def test_agents_fit_the_control_pool_of_every_stage() -> None:
    for cfg in STAGES.values():
        for workload in workloads_from_objects(synth_agents(cfg)):
            fits = [p.name for p in cfg.cluster.node_pools if not pool_problems(workload, p, cfg.cluster.mig_layouts)]
            assert fits == ["system"], f"{cfg.stage}: {workload.label} fits {fits}"
            assert quota_problems(workload, cfg.tenancy.quotas.get(workload.namespace)) == []


def test_agents_get_a_disruption_budget_only_from_two_replicas() -> None:
    assert len([m for m in synth_agents(PROD) if m["kind"] == "PodDisruptionBudget"]) == 3
    assert [m for m in synth_agents(STAGES["dev"]) if m["kind"] == "PodDisruptionBudget"] == []


def test_agents_may_reach_only_the_model_servers_on_8000() -> None:
    policies = [m for m in synth_agents() if m["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["allow-agents-to-models"]
    egress = policies[0]["spec"]["egress"]
    assert egress == [
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "inference"}}}],
            "ports": [{"protocol": "TCP", "port": 8000}],
        }
    ]


def test_agents_chart_refuses_a_floating_image() -> None:
    backends = {"v": LlmBackendSpec(model="m", endpoint=VLLM_BASE_URL, max_tokens=1, requests_per_minute=1)}
    agent = AgentService(
        name="crewai", image="ghcr.io/x/crewai:latest", replicas=1, backends=backends, prompt_template_version="v1"
    )
    with pytest.raises(ValueError, match="exact tag"):
        AgentsChart(cdk8s.Testing.app(), "agents", agents=[agent])


def test_critical_agents_priority_in_prod_only(assembly: CloudAssembly) -> None:
    priorities: dict[str, set[str | None]] = {}
    for deployed in deployed_objects(assembly):
        obj = deployed.obj
        if deployed.stack == "Workloads" and obj["kind"] == "Deployment" and obj["metadata"]["namespace"] == "agentic":
            priorities.setdefault(deployed.stage, set()).add(obj["spec"]["template"]["spec"].get("priorityClassName"))
    assert priorities == {"Prod": {"critical-agents"}, "Staging": {None}, "Dev": {None}}


# --- MLOps ----------------------------------------------------------------------------------------------------


def prod_mlflow_values(**overrides: Any) -> dict[str, Any]:
    work = PROD.workloads.mlflow
    args: dict[str, Any] = {
        "image_repository": work.image.repository,
        "image_tag": work.image.tag,
        "replicas": work.replicas,
        "database_host": "postgres.example.internal",
        "database": work.database,
        "artifacts_bucket": "ml-platform-prod-models",
        "region": PROD.region,
        "node_selector": {"workload-type": "control"},
    }
    return mlflow_values(**{**args, **overrides})


def test_mlflow_values_keys_exist_in_the_pinned_chart() -> None:
    assert (MLFLOW_CHART.chart, MLFLOW_CHART.version) == ("mlflow", "1.11.5")
    assert validate_helm_values("mlflow", "1.11.5", prod_mlflow_values()) == []


def test_mlflow_values_check_can_fail() -> None:
    values = prod_mlflow_values()
    values["backendStore"]["postgres"]["port"] = "5432"  # the schema wants an integer
    values["backendStore"]["existingSecret"] = {"name": "x"}  # not a key of the chart
    errors = validate_helm_values("mlflow", "1.11.5", values)
    assert any("existingSecret" in e for e in errors) and any("port" in e for e in errors)


def test_mlflow_uses_rds_through_the_external_secret_and_s3_through_its_role() -> None:
    values = prod_mlflow_values()
    store = values["backendStore"]
    assert store["postgres"] == {
        "enabled": True,
        "host": "postgres.example.internal",
        "port": 5432,
        "database": "mlflow",
        "driver": "psycopg2",
    }
    assert store["existingDatabaseSecret"]["name"] == DATABASE_SECRET
    assert "user" not in store["postgres"] and "password" not in store["postgres"]
    assert values["artifactRoot"]["s3"] == {"enabled": True, "bucket": "ml-platform-prod-models", "path": "experiments"}
    assert values["artifactRoot"]["proxiedArtifactStorage"] is True
    assert values["ingress"] == {"enabled": False} and values["service"]["type"] == "ClusterIP"
    rendered = json.dumps(values).lower()
    for secret_key in ("awsaccesskeyid", "awssecretaccesskey", 'password": "', "flaskserversecretkey"):
        assert secret_key not in rendered


def test_deployed_mlflow_release_points_at_the_data_stack(assembly: CloudAssembly) -> None:
    releases = [r for r in helm_releases(assembly) if r.chart == "mlflow"]
    assert {r.stage for r in releases} == {"Dev", "Staging", "Prod"}
    for release in releases:
        assert release.namespace == "mlops" and release.version == "1.11.5"
        # Deploy-time values from the data stack (endpoint, bucket), never literals in the template.
        assert release.values["backendStore"]["postgres"]["host"] == PLACEHOLDER
        assert release.values["artifactRoot"]["s3"]["bucket"] == PLACEHOLDER
    raw = json.dumps(assembly.stack("Prod", "Workloads").template)
    assert "ml-platform-prod-data" in raw and "Fn::GetStackOutput" in raw


def test_every_mlops_object_is_valid_and_holds_no_secret_value() -> None:
    manifests = synth_mlops() + cdk8s.Testing.synth(DataProcessingChart(cdk8s.Testing.app(), "dp"))
    assert invalid(manifests) == []
    assert [m for m in manifests if m["kind"] == "Secret"] == []
    external = {m["metadata"]["name"]: m["spec"] for m in manifests if m["kind"] == "ExternalSecret"}
    assert {d["secretKey"] for d in external["postgres-credentials"]["data"]} == {"username", "password"}
    assert external["valkey-auth"]["data"] == [
        {
            "secretKey": "password",
            "remoteRef": {"key": "arn:aws:secretsmanager:us-east-1:333333333333:secret:auth-AbCdEf"},
        }
    ]


def test_feast_uses_the_sql_registry_valkey_with_tls_and_a_pinned_image() -> None:
    manifests = synth_mlops()
    config_map = next(
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("feast-config-")
    )
    feature_store = config_map["data"]["feature_store.yaml"]
    assert "registry_type: sql" in feature_store and "postgres.example.internal:5432/feast" in feature_store
    assert "redis_type: redis_cluster" in feature_store and "ssl=true" in feature_store
    assert "${VALKEY_PASSWORD}" in feature_store and "${PGPASSWORD}" in feature_store
    server = find(manifests, "Deployment", "feast-feature-server")["spec"]["template"]["spec"]
    cron = find(manifests, "CronJob", "feast-materialize")["spec"]
    assert cron["schedule"] == PROD.workloads.feast.materialization_schedule
    for pod in (server, cron["jobTemplate"]["spec"]["template"]["spec"]):
        assert pod["containers"][0]["image"] == "quay.io/feastdev/feature-server:0.67.0"
        assert pod["serviceAccountName"] == "feast"
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["FEATURES_URI"]["value"] == "s3://ml-platform-prod-datasets/processed/features/"
        assert env["VALKEY_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "valkey-auth"


def test_database_job_name_follows_its_spec() -> None:
    names = {m["metadata"]["name"] for m in synth_mlops() if m["kind"] == "Job"}
    assert len(names) == 1 and next(iter(names)).startswith("create-databases-")
    script = next(m for m in synth_mlops() if m["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]
    assert "for db in mlflow feast" in script["command"][2]


def test_mlops_data_egress_goes_only_to_the_data_subnets() -> None:
    policies = {m["metadata"]["name"]: m["spec"] for m in synth_mlops() if m["kind"] == "NetworkPolicy"}
    cidrs = [{"ipBlock": {"cidr": c}} for c in PROD.network.data_subnets]
    assert policies["allow-postgres-egress"]["egress"] == [{"to": cidrs, "ports": [{"protocol": "TCP", "port": 5432}]}]
    assert policies["allow-valkey-egress"]["egress"] == [{"to": cidrs, "ports": [{"protocol": "TCP", "port": 6379}]}]
    ingress = policies["allow-mlflow-from-training"]
    assert ingress["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}


def test_emr_namespace_binds_the_emr_containers_user() -> None:
    manifests = cdk8s.Testing.synth(DataProcessingChart(cdk8s.Testing.app(), "dp"))
    assert find(manifests, "Namespace", "emr-jobs")
    binding = find(manifests, "RoleBinding", "emr-containers")
    assert binding["subjects"] == [{"kind": "User", "name": "emr-containers", "apiGroup": "rbac.authorization.k8s.io"}]
    assert binding["metadata"]["namespace"] == "emr-jobs"


# --- training -------------------------------------------------------------------------------------------------


def test_operator_releases_are_pinned_and_their_values_exist() -> None:
    assert (TRAINER_CHART.chart, TRAINER_CHART.version) == ("kubeflow-trainer", "2.3.0")
    assert (KUBERAY_CHART.chart, KUBERAY_CHART.version) == ("kuberay-operator", "1.7.0")
    selector = {"workload-type": "control"}
    assert validate_helm_values("kubeflow-trainer", "2.3.0", kubeflow_trainer_values(node_selector=selector)) == []
    assert validate_helm_values("kuberay-operator", "1.7.0", kuberay_operator_values(node_selector=selector)) == []


def test_job_templates_are_valid_against_their_crds() -> None:
    a100, h100 = placement(PROD, "true"), placement(PROD, "h100")
    jobs = [torch_runtime(settings(), a100), pytorch_example(settings()), pipeline_job(settings(), a100)]
    jobs.append(ray_tune_example(settings(), h100))
    assert [(j["apiVersion"], j["kind"]) for j in jobs] == [
        ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
        ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
        ("ray.io/v1", "RayJob"),
        ("ray.io/v1", "RayJob"),
    ]
    assert invalid(jobs) == []


def test_crd_check_of_the_templates_can_fail() -> None:
    job = pytorch_example(settings())
    job["spec"]["trainer"]["numProcPerNode"] = "auto"  # v2.3 takes an integer
    ray = pipeline_job(settings(), placement(PROD, "true"))
    ray["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["gpus"] = 1  # not a field
    assert len(invalid([job])) == 1 and len(invalid([ray])) == 1


def test_every_training_object_is_valid_and_the_templates_ship_in_a_config_map() -> None:
    manifests = synth_training(wandb=True)
    assert invalid(manifests) == []
    assert [m for m in manifests if m["kind"] == "Secret"] == []
    templates = find(manifests, "ConfigMap", TEMPLATES_CONFIG_MAP)["data"]
    assert set(templates) == {"pytorch-a100.json", "pipeline.json", "ray-tune-h100.json"}
    assert invalid([json.loads(t) for t in templates.values()]) == []
    # Templates, not running jobs: no TrainJob or RayJob is applied.
    assert not {m["kind"] for m in manifests} & {"TrainJob", "RayJob"}


def test_h100_example_only_where_an_h100_pool_exists() -> None:
    templates = find(synth_training(STAGES["dev"]), "ConfigMap", TEMPLATES_CONFIG_MAP)["data"]
    assert "ray-tune-h100.json" not in templates


def test_checkpoints_mount_efs_through_a_static_read_write_many_volume() -> None:
    manifests = synth_training()
    volume = find(manifests, "PersistentVolume", "training-checkpoints")["spec"]
    assert volume["accessModes"] == ["ReadWriteMany"]
    assert volume["csi"] == {
        "driver": "efs.csi.aws.com",
        "volumeHandle": "fs-0123456789abcdef0::fsap-0000000000000000c",
    }
    assert volume["storageClassName"] == "" and volume["persistentVolumeReclaimPolicy"] == "Retain"
    claim = find(manifests, "PersistentVolumeClaim", "checkpoints")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"] and claim["volumeName"] == "training-checkpoints"


def test_gpu_workers_take_one_time_sliced_gpu_tolerate_their_pool_and_have_time_to_checkpoint() -> None:
    grace = PROD.workloads.training.termination_grace_seconds
    runtime = torch_runtime(settings(), placement(PROD, "true"))
    node_pod = pod_templates(runtime)[1]
    tune = ray_tune_example(settings(), placement(PROD, "h100"))
    worker_pod = pod_templates(tune)[1]
    for pod, taint in ((node_pod, "true"), (worker_pod, "h100")):
        spec = pod["spec"]
        assert spec["nodeSelector"] == {"workload-type.ml-platform.io/training": "true"}
        assert spec["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": taint, "effect": "NoSchedule"}]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["terminationGracePeriodSeconds"] == grace
        assert pod["metadata"]["annotations"]["linkerd.io/inject"] == "disabled"
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["checkpoints"] == "/mnt/checkpoints"


def test_no_spot_means_on_demand_workers() -> None:
    pool = find_gpu_pool(PROD.cluster.node_pools, taint_value="h100")
    assert pool is not None
    assert gpu_placement(pool, spot_allowed=False).node_selector["karpenter.sh/capacity-type"] == "on-demand"


def test_the_pytorch_example_resumes_from_the_latest_checkpoint() -> None:
    trainer = pytorch_example(settings())["spec"]["trainer"]
    script = trainer["command"][2]
    assert "torchrun" in script and '--resume-from "${LATEST}"' in script and "sort -V | tail -n 1" in script
    assert trainer["numProcPerNode"] == 1


def test_job_pods_fit_their_pools_and_quota_in_every_stage() -> None:
    for cfg in STAGES.values():
        jobs = [
            torch_runtime(settings(cfg), placement(cfg, "true")),
            pipeline_job(settings(cfg), placement(cfg, "true")),
        ]
        if find_gpu_pool(cfg.cluster.node_pools, taint_value="h100"):
            jobs.append(ray_tune_example(settings(cfg), placement(cfg, "h100")))
        for job in jobs:
            for index, pod in enumerate(pod_templates(job)):
                as_job = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": f"{job['metadata']['name']}-{index}", "namespace": "training"},
                    "spec": {"parallelism": settings(cfg).workers, "template": pod},
                }
                for workload in workloads_from_objects([as_job]):
                    problems = {
                        p.name: pool_problems(workload, p, cfg.cluster.mig_layouts) for p in cfg.cluster.node_pools
                    }
                    assert not all(problems.values()), f"{cfg.stage}: {workload.label} fits no pool: {problems}"
                    assert quota_problems(workload, cfg.tenancy.quotas.get("training")) == []


def test_the_pipeline_runs_every_stage_and_registers_only_after_validation() -> None:
    job = pipeline_job(settings(), placement(PROD, "true"))
    assert job["spec"]["entrypoint"] == "python /opt/scripts/pipeline.py"
    tree = ast.parse(PIPELINE_SCRIPT)
    ast.parse(TUNE_SCRIPT)
    functions = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    assert {"stage", "train", "promote", "main"} <= functions
    guarded = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "passed"
    ]
    assert len(guarded) == 1

    def calls(node: ast.AST, name: str) -> int:
        return sum(
            1
            for n in ast.walk(node)
            if isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == name
        )

    # Every register and promote call sits under `if passed:` (the validation result).
    for name in ("register_model", "promote"):
        assert calls(guarded[0], name) == calls(tree, name) == 1
    assert "production/" in PIPELINE_SCRIPT and "TorchTrainer.restore" in PIPELINE_SCRIPT


def test_pipeline_metrics_are_scraped_by_a_pod_monitor() -> None:
    monitor = find(synth_training(), "PodMonitor", "training-ray-metrics")
    head = pod_templates(pipeline_job(settings(), placement(PROD, "true")))[0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= head["metadata"]["labels"].items()
    ports = {p["name"] for p in head["spec"]["containers"][0]["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_wandb_opt_in_adds_the_label_and_the_key_to_every_container() -> None:
    pod: dict[str, Any] = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "x"}, {"name": "y"}]}}
    opted = with_wandb(pod, secret_name="wandb-api-key")
    assert opted["metadata"]["labels"] == {"a": "b", WANDB_LABEL: "true"}
    assert all(c["envFrom"] == [{"secretRef": {"name": "wandb-api-key"}}] for c in opted["spec"]["containers"])
    assert "envFrom" not in pod["spec"]["containers"][0]  # the input is left alone
    external = find(synth_training(wandb=True), "ExternalSecret", "wandb-api-key")["spec"]
    assert external["data"] == [{"secretKey": "WANDB_API_KEY", "remoteRef": {"key": "ml-platform-prod/wandb"}}]
    with pytest.raises(ValueError, match="no containers"):
        with_wandb({"spec": {}}, secret_name="wandb-api-key")


def test_training_chart_refuses_wandb_without_a_source() -> None:
    with pytest.raises(ValueError, match="wandb_remote_secret"):
        TrainingChart(
            cdk8s.Testing.app(),
            "training",
            settings=settings(wandb=True),
            file_system_id="fs-1",
            checkpoints_access_point_id="fsap-1",
            datasets_access_point_id="fsap-2",
            a100=placement(PROD, "true"),
        )


# --- the wired stack ------------------------------------------------------------------------------------------


def test_every_workloads_object_is_valid_and_no_secret_carries_data(assembly: CloudAssembly) -> None:
    objects = [d for d in deployed_objects(assembly) if d.stack == "Workloads"]
    assert {d.obj["kind"] for d in objects} >= {"Deployment", "TrainingRuntime", "ExternalSecret", "PersistentVolume"}
    assert [e for d in objects for e in validate_object(d.obj, K8S)] == []
    anywhere = [
        d.label
        for d in deployed_objects(assembly)
        if d.obj["kind"] == "Secret" and (d.obj.get("data") or d.obj.get("stringData"))
    ]
    assert anywhere == []


def _policies(assembly: CloudAssembly, stage: str, path_part: str) -> list[dict[str, Any]]:
    stack = assembly.stack(stage, "Workloads")
    statements = []
    for resource in stack.resources_of("AWS::IAM::Policy").values():
        roles = json.dumps(resource["Properties"].get("Roles", []))
        if path_part in roles:
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    assert statements, f"no policy attached to a role matching {path_part}"
    return statements


@pytest.mark.parametrize(
    ("role", "buckets"), [("EmrJobExecutionRole", {"datasets"}), ("SageMakerExecutionRole", {"datasets", "models"})]
)
def test_emr_and_sagemaker_roles_reach_only_their_buckets_and_the_data_key(
    assembly: CloudAssembly, role: str, buckets: set[str]
) -> None:
    for stage, cfg in STAGES.items():
        names = {b: f"ml-platform-{stage}-{b}-{cfg.account}-{cfg.region}" for b in ("datasets", "models")}
        allowed = {f"arn:aws:s3:::{names[b]}" for b in buckets}
        for statement in _policies(assembly, stage.capitalize(), role):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if any(a.startswith("s3:") for a in actions):
                for resource in resources:
                    assert isinstance(resource, str) and resource != "*", f"{role}: {resource}"
                    assert resource.split("/", 1)[0] in allowed, f"{role} reaches {resource}"
                    assert "/" not in resource or (resource.endswith("/*") and resource.count("*") == 1)
            if any(a.startswith("kms:") for a in actions):
                assert all("Fn::GetStackOutput" in json.dumps(r) and "Data" in json.dumps(r) for r in resources)


def test_emr_virtual_cluster_runs_in_its_namespace_with_pod_identity(assembly: CloudAssembly) -> None:
    stack = assembly.stack("Prod", "Workloads")
    clusters = list(stack.resources_of("AWS::EMRContainers::VirtualCluster").values())
    assert len(clusters) == 1
    assert clusters[0]["Properties"]["ContainerProvider"]["Info"]["EksInfo"] == {"Namespace": "emr-jobs"}
    associations = {
        a["Properties"]["ServiceAccount"]
        for a in stack.resources_of("AWS::EKS::PodIdentityAssociation").values()
        if a["Properties"]["Namespace"] == "emr-jobs"
    }
    assert associations == set(
        emr_service_accounts(account=PROD.account, role_name="ml-platform-prod-emr-job-execution")
    )
    # EKS refuses access entries for service-linked roles; EMR creates its own.
    assert not stack.resources_of("AWS::EKS::AccessEntry")


def test_sagemaker_outputs_name_the_role_security_group_and_subnets(assembly: CloudAssembly) -> None:
    outputs = assembly.stack("Dev", "Workloads").template["Outputs"]
    assert {"SageMakerExecutionRoleArn", "SageMakerSecurityGroupId", "SageMakerSubnetIds"} <= set(outputs)
    assert "Fn::Join" in outputs["SageMakerSubnetIds"]["Value"]


def test_base36_matches_the_aws_cli_encoding() -> None:
    def cli(text: str) -> str:  # awscli/customizations/emrcontainers/base36.py, restated
        number = 0
        for char in text:
            number = number * 256 + ord(char)
        alphabet, out = "0123456789abcdefghijklmnopqrstuvwxyz", ""
        while number:
            number, digit = divmod(number, 36)
            out = alphabet[digit] + out
        return out or "0"

    for name in ("a", "ml-platform-prod-emr-job-execution", "EMR_Role"):
        assert base36(name) == cli(name)
    client, driver, executor = emr_service_accounts(account="333333333333", role_name="r")
    assert client == f"emr-containers-sa-spark-client-333333333333-{cli('r')}"
    assert driver.startswith("emr-containers-sa-spark-driver-") and executor.startswith(
        "emr-containers-sa-spark-executor-"
    )
