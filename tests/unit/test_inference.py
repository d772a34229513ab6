"""Inference: config rules, the model server charts, the secrets path, the add-on values and the stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cdk8s
import pytest

from config.inference import (
    BatchConfig,
    InferenceConfig,
    MigSlice,
    TritonConfig,
    VllmConfig,
    check_inference,
)
from config.loader import load_stage
from config.model import NoSharing, StageConfig
from k8s_charts.batch_inference import BatchInferenceChart
from k8s_charts.inference import (
    PROMETHEUS_SERVER_ADDRESS,
    InferenceCommonChart,
    Placement,
    model_uri,
    placement,
)
from k8s_charts.kserve_models import KServeModelChart
from k8s_charts.secrets import SecretStoreChart, external_secret
from k8s_charts.tgi import TgiChart
from k8s_charts.triton import TritonChart
from k8s_charts.vllm import VllmChart
from platform_constructs.external_secrets import CHART as ESO_CHART
from platform_constructs.external_secrets import external_secrets_values
from platform_constructs.keda import CHART as KEDA_CHART
from platform_constructs.keda import keda_values
from platform_constructs.kserve import CHART as KSERVE_CHART
from platform_constructs.kserve import CRD_CHART as KSERVE_CRD_CHART
from platform_constructs.kserve import kserve_values
from platform_constructs.template_manifests import template_objects
from tests.support.assembly import CloudAssembly
from tests.support.deployed import helm_releases
from tests.support.k8s_reference import (
    pinned_chart_versions,
    require_reference_dir,
    validate_helm_values,
    validate_object,
)

REPO = Path(__file__).resolve().parents[2]
DEV = load_stage(REPO / "config" / "dev.yaml")
PROD = load_stage(REPO / "config" / "prod.yaml")
SYSTEM = {"ml-platform/pool": "system"}
BUCKET = "ml-platform-prod-models-333333333333-us-east-1"
CACHE_SECRET = "arn:aws:secretsmanager:us-east-1:333333333333:secret:CacheAuthToken-AbCdEf"
Manifests = list[dict[str, Any]]


# --- helpers --------------------------------------------------------------------------------------------------


def pools(cfg: StageConfig) -> dict[str, Any]:
    return {p.name: p for p in cfg.cluster.node_pools}


def vllm_chart(cfg: StageConfig, **overrides: Any) -> Manifests:
    """Synthesize the stage's vLLM chart the way InferenceStack builds it."""
    vllm = cfg.inference.vllm
    assert vllm is not None
    args: dict[str, Any] = {
        "image_tag": vllm.image_tag,
        "models_bucket_name": BUCKET,
        "model_path": vllm.model_path,
        "served_model_name": vllm.served_model_name,
        "placement": placement(
            pools(cfg)[vllm.pool], workload_type=vllm.workload_type, gpu=vllm.gpu, priority_class=vllm.priority_class
        ),
        "region": cfg.region,
        "tensor_parallel_size": vllm.tensor_parallel_size,
        "gpu_memory_utilization": vllm.gpu_memory_utilization,
        "max_model_len": vllm.max_model_len,
        "enable_prefix_caching": vllm.enable_prefix_caching,
        "replicas": vllm.replicas,
        "memory_gib": vllm.memory_gib,
        "autoscaling": vllm.autoscaling,
        "canary": vllm.canary,
        "target_group_arn": "arn:aws:elasticloadbalancing:us-east-1:333333333333:targetgroup/vllm/0123456789abcdef",
        "alb_cidrs": cfg.network.public_subnets,
        "scraper_cidrs": cfg.network.node_subnets,
        "cache_host": "clustercfg.cache.example.use1.cache.amazonaws.com",
    }
    args.update(overrides)
    manifests: Manifests = cdk8s.Testing.synth(VllmChart(cdk8s.Testing.app(), "vllm", **args))
    return manifests


def find(manifests: Manifests, kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def kinds(manifests: Manifests) -> set[str]:
    return {m["kind"] for m in manifests}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "ScaledJob":
        spec = spec["jobTargetRef"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(obj)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def triton_chart(**overrides: Any) -> Manifests:
    triton = PROD.inference.triton
    assert triton is not None
    args: dict[str, Any] = {
        "image_tag": triton.image_tag,
        "models_bucket_name": BUCKET,
        "model_repository": triton.model_repository,
        "placement": placement(
            pools(PROD)[triton.pool],
            workload_type=triton.workload_type,
            gpu=triton.gpu,
            priority_class=triton.priority_class,
        ),
        "region": PROD.region,
        "autoscaling": triton.autoscaling,
    }
    args.update(overrides)
    manifests: Manifests = cdk8s.Testing.synth(TritonChart(cdk8s.Testing.app(), "triton", **args))
    return manifests


def tgi_chart() -> Manifests:
    tgi = PROD.inference.tgi
    assert tgi is not None
    chart = TgiChart(
        cdk8s.Testing.app(),
        "tgi",
        image_tag=tgi.image_tag,
        models_bucket_name=BUCKET,
        model_path=tgi.model_path,
        placement=placement(
            pools(PROD)[tgi.pool], workload_type=tgi.workload_type, gpu=tgi.gpu, priority_class=tgi.priority_class
        ),
        region=PROD.region,
        max_input_tokens=tgi.max_input_tokens,
        max_total_tokens=tgi.max_total_tokens,
        scraper_cidrs=PROD.network.node_subnets,
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def kserve_chart() -> Manifests:
    model = PROD.inference.kserve
    assert model is not None
    chart = KServeModelChart(
        cdk8s.Testing.app(),
        "kserve-models",
        name=model.name,
        model_format=model.model_format,
        runtime_image_tag=model.runtime_image_tag,
        models_bucket_name=BUCKET,
        storage_path=model.storage_path,
        placement=placement(
            pools(PROD)[model.pool], workload_type=model.workload_type, gpu=None, priority_class=model.priority_class
        ),
        min_replicas=model.min_replicas,
        max_replicas=model.max_replicas,
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def batch_chart(cfg: StageConfig = PROD) -> Manifests:
    batch = cfg.inference.batch
    assert batch is not None
    chart = BatchInferenceChart(
        cdk8s.Testing.app(),
        "batch-inference",
        queue_url="https://sqs.us-east-1.amazonaws.com/333333333333/batch-requests",
        region=cfg.region,
        image_tag=batch.image_tag,
        models_bucket_name=BUCKET,
        model_path=batch.model_path,
        datasets_bucket_name="ml-platform-prod-datasets-333333333333-us-east-1",
        placement=placement(
            pools(cfg)[batch.pool],
            workload_type=batch.workload_type,
            gpu=batch.gpu,
            priority_class=batch.priority_class,
        ),
        max_parallel_jobs=batch.max_parallel_jobs,
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def common_chart() -> Manifests:
    chart = InferenceCommonChart(
        cdk8s.Testing.app(),
        "inference-common",
        cache_auth_secret=CACHE_SECRET,
        data_cidrs=PROD.network.data_subnets,
        file_system_id="fs-0123456789abcdef0",
        models_access_point_id="fsap-0123456789abcdef0",
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def store_chart() -> Manifests:
    manifests: Manifests = cdk8s.Testing.synth(
        SecretStoreChart(cdk8s.Testing.app(), "secret-store", region="us-east-1")
    )
    return manifests


@pytest.fixture(scope="module")
def prod_vllm() -> Manifests:
    return vllm_chart(PROD)


@pytest.fixture(scope="module")
def dev_vllm() -> Manifests:
    return vllm_chart(DEV)


@pytest.fixture(scope="module")
def every_chart(prod_vllm: Manifests, dev_vllm: Manifests) -> Manifests:
    return [
        *prod_vllm, *dev_vllm, *triton_chart(), *tgi_chart(), *kserve_chart(), *batch_chart(), *batch_chart(DEV),
        *common_chart(), *store_chart(),
    ]  # fmt: skip


# --- config ---------------------------------------------------------------------------------------------------


def test_every_stage_file_passes_the_inference_check() -> None:
    for stage in ("dev", "staging", "prod"):
        cfg = load_stage(REPO / "config" / f"{stage}.yaml")
        check_inference(
            cfg.inference,
            pools=cfg.cluster.node_pools,
            mig_layouts=cfg.cluster.mig_layouts,
            priority_classes=cfg.tenancy.priority_classes,
            service_mesh=cfg.components.linkerd,
        )


def vllm_config(**overrides: Any) -> VllmConfig:
    fields: dict[str, Any] = {
        "image_tag": "v0.18.0",
        "model_path": "production/llama-3-8b-instruct/",
        "served_model_name": "llama-3-8b-instruct",
        "pool": "a100-mig",
        "gpu": {"mig_profile": "3g.40gb"},
    }
    fields.update(overrides)
    return VllmConfig.model_validate(fields)


def check(inference: InferenceConfig, cfg: StageConfig = PROD, *, service_mesh: bool = True) -> None:
    check_inference(
        inference,
        pools=cfg.cluster.node_pools,
        mig_layouts=cfg.cluster.mig_layouts,
        priority_classes=cfg.tenancy.priority_classes,
        service_mesh=service_mesh,
    )


@pytest.mark.parametrize(
    "path",
    [
        "s3://someone-elses-bucket/production/llama/",
        "/models/production/llama/",
        "trained/llama-3-8b/",
        "production/../trained/llama/",
        "production/",
    ],
)
def test_fails_when_the_model_path_is_outside_the_models_bucket_production_prefix(path: str) -> None:
    with pytest.raises(ValueError, match=r"production/"):
        vllm_config(model_path=path)


def test_the_chart_also_refuses_a_model_path_outside_production() -> None:
    with pytest.raises(ValueError, match="is outside the models bucket's production/ prefix"):
        model_uri(BUCKET, "experiments/run-42/")
    assert model_uri(BUCKET, "production/llama/") == f"s3://{BUCKET}/production/llama/"


def test_fails_when_an_inference_server_sits_on_a_pool_without_gpus() -> None:
    server = vllm_config(pool="cpu-inference", workload_type="cpu-inference", gpu={"gpus": 1})
    with pytest.raises(ValueError, match=r"inference.vllm.pool: cpu-inference has no GPUs \(m5.2xlarge"):
        check(InferenceConfig(vllm=server))


def test_fails_when_tensor_parallelism_exceeds_what_a_mig_slice_gives() -> None:
    with pytest.raises(ValueError, match=r"tensor_parallel_size: 2 is larger than .* pool a100-mig \(1: a MIG slice"):
        check(InferenceConfig(vllm=vllm_config(tensor_parallel_size=2)))


def test_fails_when_tensor_parallelism_exceeds_the_gpus_of_a_node() -> None:
    pool = pools(PROD)["a100-timeslice"].model_copy(update={"gpu_sharing": NoSharing(), "name": "a100-whole"})
    server = vllm_config(pool="a100-whole", workload_type="training", gpu={"gpus": 8}, tensor_parallel_size=16)
    with pytest.raises(ValueError, match=r"tensor_parallel_size: 16 is larger .* a100-whole \(8: a node has 8 GPUs"):
        check_inference(InferenceConfig(vllm=server), pools=[pool], mig_layouts={},
                        priority_classes=PROD.tenancy.priority_classes)  # fmt: skip


def test_fails_when_tensor_parallelism_is_asked_of_a_time_sliced_gpu() -> None:
    server = vllm_config(pool="a100-timeslice", workload_type="production-inference", gpu={"gpus": 2},
                         tensor_parallel_size=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"larger than the GPUs one pod can get on pool a100-timeslice \(1: time"):
        check(InferenceConfig(vllm=server), DEV)


def test_fails_when_no_pool_offers_the_mig_profile() -> None:
    with pytest.raises(ValueError, match=r"no node pool offers MIG profile 7g.80gb \(offered: 1g.10gb on a100-mig"):
        check(InferenceConfig(vllm=vllm_config(gpu={"mig_profile": "7g.80gb"})))


def test_fails_when_the_pool_does_not_partition_its_gpus_with_mig() -> None:
    server = vllm_config(pool="a100-timeslice", workload_type="batch-inference")
    with pytest.raises(ValueError, match=r"pool a100-timeslice does not offer MIG profile 3g.40gb; a100-mig does"):
        check(InferenceConfig(vllm=server))


def test_fails_when_whole_gpus_are_asked_of_a_mig_pool() -> None:
    with pytest.raises(ValueError, match="pool a100-mig partitions its GPUs with MIG: request a mig_profile"):
        check(InferenceConfig(vllm=vllm_config(gpu={"gpus": 1})))


def test_fails_when_the_pool_does_not_exist_or_serve_the_workload_type() -> None:
    with pytest.raises(ValueError, match=r"inference.vllm.pool: no node pool named 'a10g'"):
        check(InferenceConfig(vllm=vllm_config(pool="a10g")))
    with pytest.raises(ValueError, match="pool t4-inference serves online-inference, not production-inference"):
        check(InferenceConfig(vllm=vllm_config(pool="t4-inference", gpu={"gpus": 1})))


def test_fails_when_a_canary_has_no_mesh_to_split_traffic() -> None:
    server = vllm_config(canary={"model_path": "production/llama-3.1-8b-instruct/", "weight": 10})
    with pytest.raises(ValueError, match=r"inference.vllm.canary: .* enable components.linkerd"):
        check(InferenceConfig(vllm=server), service_mesh=False)


def test_fails_when_a_triton_or_batch_server_misplaces_its_gpu() -> None:
    triton = TritonConfig(image_tag="25.06-py3", pool="a100-mig", gpu=MigSlice(mig_profile="4g.40gb"))
    with pytest.raises(ValueError, match=r"inference.triton.gpu.mig_profile: no node pool offers MIG profile 4g.40gb"):
        check(InferenceConfig(triton=triton))
    batch = BatchConfig(image_tag="v0.18.0", model_path="production/llama/", pool="memory-optimized",
                        workload_type="data-processing")  # fmt: skip
    with pytest.raises(ValueError, match=r"inference.batch.pool: memory-optimized has no GPUs"):
        check(InferenceConfig(batch=batch))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpu_memory_utilization": 0.97}, "less than or equal to 0.95"),
        ({"gpu_memory_utilization": 0}, "greater than 0"),
        ({"image_tag": "latest"}, "not an exact version tag"),
        ({"gpu": {"mig_profile": "big"}}, "not a profile name such as 3g.40gb"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2, "threshold": 5}}, r"min_replicas \(3\) is larger"),
        ({"canary": {"model_path": "production/x/", "weight": 101}}, "less than or equal to 100"),
    ],
)
def test_fails_on_bad_server_fields(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vllm_config(**overrides)


def test_whole_gpus_must_match_tensor_parallelism() -> None:
    pool = pools(PROD)["a100-timeslice"].model_copy(update={"gpu_sharing": NoSharing()})
    server = vllm_config(pool="a100-timeslice", workload_type="training", gpu={"gpus": 2}, tensor_parallel_size=4)
    with pytest.raises(ValueError, match=r"gpu.gpus \(2\) must equal tensor_parallel_size \(4\)"):
        check_inference(InferenceConfig(vllm=server), pools=[pool], mig_layouts={},
                        priority_classes=PROD.tenancy.priority_classes)  # fmt: skip


# --- every chart ----------------------------------------------------------------------------------------------


def test_every_object_of_every_chart_is_valid(every_chart: Manifests) -> None:
    require_reference_dir()
    errors = [f"{m['kind']}/{m['metadata']['name']}: {e}" for m in every_chart for e in validate_object(m, "1.35")]
    assert errors == []


def test_no_chart_emits_a_secret_with_data(every_chart: Manifests) -> None:
    assert not [m for m in every_chart if m["kind"] == "Secret"]
    secrets = [m for m in every_chart if m["kind"] == "ExternalSecret"]
    assert secrets, "the cache token must arrive through an ExternalSecret"
    serialized = json.dumps(every_chart)
    assert '"stringData"' not in serialized


def test_every_container_is_restricted_and_has_a_memory_limit(every_chart: Manifests) -> None:
    workloads = [m for m in every_chart if m["kind"] in ("Deployment", "ScaledJob")]
    assert len(workloads) >= 6
    for obj in workloads:
        pod = pod_spec(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(obj):
            context = container["securityContext"]
            label = f"{obj['metadata']['name']}/{container['name']}"
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["capabilities"] == {"drop": ["ALL"]}, label
            # The namespace's LimitRange would otherwise cap the container at 1Gi.
            assert container["resources"]["limits"]["memory"], label
            assert ":" in container["image"] and not container["image"].endswith(":latest"), label


def test_every_model_server_copies_its_weights_from_the_models_bucket_and_stays_offline(every_chart: Manifests) -> None:
    for obj in (m for m in every_chart if m["kind"] == "Deployment"):
        fetch = next(c for c in pod_spec(obj)["initContainers"] if c["name"] == "fetch-model")
        assert fetch["image"].startswith("public.ecr.aws/aws-cli/aws-cli:2.")
        source = fetch["args"][2]
        assert source.startswith(f"s3://{BUCKET}/production/"), source
        env = {e["name"]: e.get("value") for e in pod_spec(obj)["containers"][0].get("env", [])}
        if "HF_HOME" in env or "HUGGINGFACE_HUB_CACHE" in env:
            assert env["HF_HUB_OFFLINE"] == "1", obj["metadata"]["name"]


# --- vLLM -----------------------------------------------------------------------------------------------------


def server_container(manifests: Manifests, name: str = "vllm") -> dict[str, Any]:
    return pod_spec(find(manifests, "Deployment", name))["containers"][0]  # type: ignore[no-any-return]


def test_vllm_serves_openai_on_port_8000_from_the_copied_weights(prod_vllm: Manifests) -> None:
    container = server_container(prod_vllm)
    assert container["image"] == "vllm/vllm-openai:v0.18.0"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    args = container["args"]
    assert args[args.index("--model") + 1] == "/models/production/llama-3-8b-instruct"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.9"
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert "--enable-prefix-caching" in args
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"
    init = pod_spec(find(prod_vllm, "Deployment", "vllm"))["initContainers"][0]
    assert init["args"][:4] == ["s3", "sync", f"s3://{BUCKET}/production/llama-3-8b-instruct/",
                                "/models/production/llama-3-8b-instruct"]  # fmt: skip


def test_vllm_probes_give_the_model_ten_minutes_to_load(prod_vllm: Manifests) -> None:
    container = server_container(prod_vllm)
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def test_prod_vllm_takes_a_3g40gb_mig_slice_at_production_priority(prod_vllm: Manifests) -> None:
    pod = pod_spec(find(prod_vllm, "Deployment", "vllm"))
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/mig-3g.40gb"] == 1
    assert resources["requests"]["nvidia.com/mig-3g.40gb"] == 1
    assert "nvidia.com/gpu" not in resources["limits"]
    assert pod["priorityClassName"] == "production-inference"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "mig", "effect": "NoSchedule"}]
    assert pod["nodeSelector"]["workload-type.ml-platform.io/production-inference"] == "true"
    assert pod["nodeSelector"]["ml-platform/pool"] == "a100-mig"


def test_dev_vllm_takes_one_time_sliced_gpu(dev_vllm: Manifests) -> None:
    pod = pod_spec(find(dev_vllm, "Deployment", "vllm"))
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    assert pod["nodeSelector"]["ml-platform/pool"] == "a100-timeslice"


def test_vllm_is_meshed_with_a_native_sidecar_and_reads_models_with_its_own_identity(prod_vllm: Manifests) -> None:
    template = find(prod_vllm, "Deployment", "vllm")["spec"]["template"]
    assert template["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    assert template["metadata"]["annotations"]["config.alpha.linkerd.io/proxy-enable-native-sidecar"] == "true"
    assert template["spec"]["serviceAccountName"] == "vllm"
    assert find(prod_vllm, "ServiceAccount", "vllm")["automountServiceAccountToken"] is False


def test_an_autoscaled_deployment_leaves_its_replicas_to_keda(prod_vllm: Manifests) -> None:
    assert "replicas" not in find(prod_vllm, "Deployment", "vllm")["spec"]
    assert find(prod_vllm, "Deployment", "vllm-canary")["spec"]["replicas"] == 1
    fixed = vllm_chart(PROD, autoscaling=None, canary=None, replicas=3)
    assert find(fixed, "Deployment", "vllm")["spec"]["replicas"] == 3


def test_vllm_has_a_budget_only_with_more_than_one_replica(prod_vllm: Manifests, dev_vllm: Manifests) -> None:
    budget = find(prod_vllm, "PodDisruptionBudget", "vllm")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == {"app": "vllm", "track": "stable"}
    # Dev scales between 0 and 1 replica: a budget would only block node drains.
    assert "PodDisruptionBudget" not in kinds(dev_vllm)


def test_vllm_scales_on_waiting_requests_and_holds_the_peak_from_8_to_22_utc(prod_vllm: Manifests) -> None:
    spec = find(prod_vllm, "ScaledObject", "vllm")["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    load, peak = spec["triggers"]
    assert load["type"] == "prometheus"
    assert load["metadata"]["serverAddress"] == PROMETHEUS_SERVER_ADDRESS
    assert PROMETHEUS_SERVER_ADDRESS == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    assert load["metadata"]["query"].startswith("sum(vllm:num_requests_waiting{")
    assert 'track="stable"' in load["metadata"]["query"]
    assert load["metadata"]["threshold"] == "5"
    assert peak == {
        "type": "cron",
        "name": "daily-peak",
        "metadata": {"timezone": "UTC", "start": "0 8 * * *", "end": "0 22 * * *", "desiredReplicas": "4"},
    }


def test_dev_vllm_scales_to_zero(dev_vllm: Manifests) -> None:
    assert find(dev_vllm, "ScaledObject", "vllm")["spec"]["minReplicaCount"] == 0


def test_canary_route_splits_meshed_traffic_by_weight(prod_vllm: Manifests) -> None:
    route = find(prod_vllm, "HTTPRoute", "vllm")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "vllm", "port": 8000}]
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"vllm": 90, "vllm-canary": 10}
    canary = pod_spec(find(prod_vllm, "Deployment", "vllm-canary"))
    assert "/models/production/llama-3.1-8b-instruct" in canary["containers"][0]["args"]
    assert find(prod_vllm, "Service", "vllm-canary")["spec"]["selector"] == {"app": "vllm", "track": "canary"}


def test_rollback_sets_the_canary_weight_to_zero_and_sends_everything_to_stable() -> None:
    vllm = PROD.inference.vllm
    assert vllm is not None and vllm.canary is not None
    rolled_back = vllm.canary.model_copy(update={"weight": 0})
    route = find(vllm_chart(PROD, canary=rolled_back), "HTTPRoute", "vllm")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"vllm": 100, "vllm-canary": 0}


def test_no_canary_means_no_route(dev_vllm: Manifests) -> None:
    assert "HTTPRoute" not in kinds(dev_vllm)
    with pytest.raises(ValueError, match="a canary needs the service mesh"):
        vllm_chart(PROD, service_mesh=False)


def test_alb_reaches_vllm_through_a_target_group_binding_and_only_agents_and_the_alb_are_let_in(
    prod_vllm: Manifests,
) -> None:
    binding = find(prod_vllm, "TargetGroupBinding", "vllm")
    assert binding["apiVersion"] == "elbv2.k8s.aws/v1beta1"
    assert binding["spec"]["targetType"] == "ip"
    assert binding["spec"]["serviceRef"] == {"name": "vllm", "port": 8000}
    policy = find(prod_vllm, "NetworkPolicy", "allow-vllm-clients")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    peers = rule["from"]
    assert peers[0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agentic"}}}
    assert [p["ipBlock"]["cidr"] for p in peers[1:]] == list(PROD.network.public_subnets)
    networks = find(prod_vllm, "NetworkAuthentication", "vllm-load-balancer")["spec"]["networks"]
    assert [n["cidr"] for n in networks] == list(PROD.network.public_subnets)
    mesh = find(prod_vllm, "MeshTLSAuthentication", "vllm-clients")["spec"]["identityRefs"]
    assert mesh == [{"kind": "ServiceAccount", "namespace": "agentic"}]
    policies = {
        m["metadata"]["name"]: m["spec"]["requiredAuthenticationRefs"][0]["kind"]
        for m in prod_vllm
        if m["kind"] == "AuthorizationPolicy"
    }
    assert policies == {
        "vllm-clients": "MeshTLSAuthentication",
        "vllm-load-balancer": "NetworkAuthentication",
        "vllm-scrapers": "NetworkAuthentication",
    }
    assert find(prod_vllm, "Server", "vllm-http")["spec"]["port"] == "http"


def test_the_unmeshed_prometheus_may_scrape_vllm_s_serving_port(prod_vllm: Manifests) -> None:
    allow = find(prod_vllm, "NetworkPolicy", "allow-vllm-metrics")["spec"]["ingress"][0]
    assert allow["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert allow["ports"] == [{"protocol": "TCP", "port": 8000}]
    networks = find(prod_vllm, "NetworkAuthentication", "vllm-scrapers")["spec"]["networks"]
    assert [n["cidr"] for n in networks] == list(PROD.network.node_subnets)


def test_without_an_edge_there_is_no_binding_and_no_alb_allow() -> None:
    manifests = vllm_chart(PROD, target_group_arn=None)
    assert "TargetGroupBinding" not in kinds(manifests)
    networks = {m["metadata"]["name"] for m in manifests if m["kind"] == "NetworkAuthentication"}
    assert networks == {"vllm-scrapers"}
    peers = find(manifests, "NetworkPolicy", "allow-vllm-clients")["spec"]["ingress"][0]["from"]
    assert all("ipBlock" not in p for p in peers)


def test_vllm_is_scraped_on_its_serving_port(prod_vllm: Manifests) -> None:
    monitor = find(prod_vllm, "PodMonitor", "vllm")
    assert monitor["metadata"]["labels"] == {"release": "kube-prometheus-stack"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["podTargetLabels"] == ["app", "track"]


def test_vllm_gets_the_prediction_cache_endpoint_and_token_from_the_external_secret(prod_vllm: Manifests) -> None:
    env = {e["name"]: e for e in server_container(prod_vllm)["env"]}
    assert env["PREDICTION_CACHE_PORT"]["value"] == "6379"
    assert env["PREDICTION_CACHE_HOST"]["value"].endswith("cache.amazonaws.com")
    assert env["PREDICTION_CACHE_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "prediction-cache-auth",
        "key": "token",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"placement": Placement(node_selector=SYSTEM)}, "placement has no GPU resource"),
        ({"gpu_memory_utilization": 0.99}, r"must lie in \(0, 0.95\]"),
        ({"alb_cidrs": ()}, "target_group_arn is set without alb_cidrs"),
    ],
)
def test_vllm_chart_refuses_bad_arguments(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vllm_chart(PROD, **overrides)


# --- Triton, TGI, KServe --------------------------------------------------------------------------------------


def test_triton_scales_on_queue_time_per_request() -> None:
    manifests = triton_chart()
    spec = find(manifests, "ScaledObject", "triton")["spec"]
    load = spec["triggers"][0]
    assert "nv_inference_queue_duration_us" in load["metadata"]["query"]
    assert load["metricType"] == "Value"
    assert load["metadata"]["threshold"] == "50000"
    assert spec["triggers"][1]["metadata"]["desiredReplicas"] == "3"
    container = server_container(manifests, "triton")
    assert container["image"] == "nvcr.io/nvidia/tritonserver:25.06-py3"
    assert "--model-repository=/models/production/triton" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/mig-2g.20gb"] == 1
    assert {p["name"] for p in container["ports"]} == {"http", "grpc", "metrics"}
    assert find(manifests, "PodMonitor", "triton")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_tgi_serves_offline_from_the_copied_weights() -> None:
    manifests = tgi_chart()
    container = server_container(manifests, "tgi")
    assert container["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.5"
    assert container["args"][:2] == ["--model-id", "/models/production/phi-3-mini-4k-instruct"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    assert container["startupProbe"]["failureThreshold"] == 60
    assert "ScaledObject" not in kinds(manifests)
    # Metrics share the serving port: Prometheus is let in by NetworkPolicy and, unmeshed, by network.
    assert find(manifests, "NetworkPolicy", "allow-tgi-metrics")["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8080}
    ]
    networks = find(manifests, "NetworkAuthentication", "tgi-scrapers")["spec"]["networks"]
    assert [n["cidr"] for n in networks] == list(PROD.network.node_subnets)


def test_triton_metrics_port_needs_no_extra_access() -> None:
    # A port named "metrics" is covered by the tenancy and mesh policy charts.
    assert not {"Server", "NetworkAuthentication"} & kinds(triton_chart())


def test_kserve_predictor_runs_on_the_t4_pool_from_the_models_bucket() -> None:
    manifests = kserve_chart()
    isvc = find(manifests, "InferenceService", "tabular-classifier")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == f"s3://{BUCKET}/production/sklearn/churn-classifier/"
    assert predictor["model"]["runtime"] == "kserve-sklearnserver"
    assert predictor["nodeSelector"]["ml-platform/pool"] == "t4-inference"
    assert predictor["serviceAccountName"] == "kserve-models"
    runtime = find(manifests, "ServingRuntime", "kserve-sklearnserver")
    assert runtime["spec"]["containers"][0]["image"] == "kserve/sklearnserver:v0.20.0"


# --- batch inference ------------------------------------------------------------------------------------------


def test_batch_jobs_scale_from_zero_on_the_queue_with_keda_s_pod_identity() -> None:
    manifests = batch_chart()
    auth = find(manifests, "TriggerAuthentication", "keda-aws-operator")
    assert auth["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "keda"}
    spec = find(manifests, "ScaledJob", "batch-inference")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 4)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["authenticationRef"] == {"name": "keda-aws-operator"}
    assert trigger["metadata"]["queueLength"] == "1"
    assert trigger["metadata"]["awsRegion"] == "us-east-1"


def test_batch_jobs_run_fetch_infer_publish_on_the_batch_pool() -> None:
    job = find(batch_chart(), "ScaledJob", "batch-inference")
    pod = pod_spec(job)
    assert [c["name"] for c in pod["initContainers"]] == ["fetch", "infer"]
    assert [c["name"] for c in pod["containers"]] == ["publish"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"]["workload-type.ml-platform.io/batch-inference"] == "true"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    assert pod["initContainers"][1]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "processed/batch-results/" in pod["containers"][0]["command"][2]
    assert "vllm.entrypoints.openai.run_batch" in pod["initContainers"][1]["command"][2]
    # A Job never outlives its message's invisibility: no second Job takes the same request meanwhile.
    assert job["spec"]["jobTargetRef"]["activeDeadlineSeconds"] == 120 * 60


# --- secrets path ---------------------------------------------------------------------------------------------


def test_cluster_secret_store_uses_the_controller_identity_and_limits_namespaces() -> None:
    store = find(store_chart(), "ClusterSecretStore", "aws-secrets-manager")
    assert store["apiVersion"] == "external-secrets.io/v1"
    aws = store["spec"]["provider"]["aws"]
    assert aws == {"service": "SecretsManager", "region": "us-east-1"}  # no auth block, no keys
    assert store["spec"]["conditions"] == [{"namespaces": ["inference", "agentic", "mlops", "monitoring", "training"]}]


def test_external_secret_maps_keys_and_properties() -> None:
    chart = cdk8s.Chart(cdk8s.Testing.app(), "test")
    external_secret(chart, "db", name="mlflow-db", namespace="mlops", secret_arn_or_name="ml-platform-prod/db",
                    keys={"username": "username", "password": "password"})  # fmt: skip
    (obj,) = cdk8s.Testing.synth(chart)
    assert obj["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "aws-secrets-manager"}
    assert obj["spec"]["data"][1] == {
        "secretKey": "password",
        "remoteRef": {"key": "ml-platform-prod/db", "property": "password"},
    }
    assert validate_object(obj, "1.35") == []
    with pytest.raises(ValueError, match="keys is empty"):
        external_secret(chart, "none", name="x", namespace="mlops", secret_arn_or_name="s", keys={})


def test_common_chart_brings_the_cache_token_and_allows_egress_to_the_cache() -> None:
    manifests = common_chart()
    secret = find(manifests, "ExternalSecret", "prediction-cache-auth")
    assert secret["metadata"]["namespace"] == "inference"
    assert secret["spec"]["data"] == [
        {
            "secretKey": "token",
            "remoteRef": {"key": "arn:aws:secretsmanager:us-east-1:333333333333:secret:CacheAuthToken-AbCdEf"},
        }
    ]
    egress = find(manifests, "NetworkPolicy", "allow-prediction-cache")["spec"]["egress"][0]
    assert egress["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert [p["ipBlock"]["cidr"] for p in egress["to"]] == list(PROD.network.data_subnets)
    pv = find(manifests, "PersistentVolume", "inference-models-production")
    assert pv["spec"]["csi"]["volumeHandle"] == "fs-0123456789abcdef0::fsap-0123456789abcdef0"
    assert pv["spec"]["csi"]["readOnly"] is True


# --- add-on values --------------------------------------------------------------------------------------------


def test_add_on_values_exist_in_the_pinned_charts() -> None:
    require_reference_dir()
    pins = pinned_chart_versions()
    releases = [
        (ESO_CHART, external_secrets_values(node_selector=SYSTEM)),
        (KEDA_CHART, keda_values(node_selector=SYSTEM)),
        (KSERVE_CHART, kserve_values(node_selector=SYSTEM, region="us-east-1")),
        (KSERVE_CRD_CHART, {}),
    ]
    for chart, values in releases:
        assert pins[chart.chart] == chart.version
        assert validate_helm_values(chart.chart, chart.version, values) == [], chart.chart


def test_add_ons_install_their_crds_and_run_on_the_system_pool() -> None:
    eso = external_secrets_values(node_selector=SYSTEM)
    assert eso["installCRDs"] is True
    assert eso["nodeSelector"] == eso["webhook"]["nodeSelector"] == eso["certController"]["nodeSelector"] == SYSTEM
    keda = keda_values(node_selector=SYSTEM)
    assert keda["crds"]["install"] is True and keda["nodeSelector"] == SYSTEM
    kserve = kserve_values(node_selector=SYSTEM, region="us-east-1")["kserve"]
    # Standard is the mode KServe called RawDeployment: Deployments and HPAs, no Knative.
    assert kserve["controller"]["deploymentMode"] == "Standard"
    assert kserve["controller"]["nodeSelector"] == SYSTEM
    with pytest.raises(ValueError, match="node_selector is empty"):
        keda_values(node_selector={})


# --- the session's synthesized app ----------------------------------------------------------------------------


def objects_of(assembly: CloudAssembly, stage: str) -> Manifests:
    return [o for _, o in template_objects(assembly.stack(stage, "Inference").template)]


def test_each_stage_deploys_the_inference_stack_with_pinned_add_ons(assembly: CloudAssembly) -> None:
    for stage in ("Dev", "Staging", "Prod"):
        charts = {(r.chart, r.version) for r in helm_releases(assembly) if r.stage == stage and r.stack == "Inference"}
        assert charts == {
            ("keda", "2.20.2"),
            ("kserve-crd", "v0.20.0"),
            ("kserve-resources", "v0.20.0"),
        }, stage


def test_batch_queue_has_a_dead_letter_queue_sse_and_tls_only(assembly: CloudAssembly) -> None:
    resources = assembly.stack("Prod", "Inference").resources
    queues = {k: v for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
    assert len(queues) == 2
    main = next(v for v in queues.values() if "RedrivePolicy" in v["Properties"])
    assert main["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 3
    assert main["Properties"]["VisibilityTimeout"] == 7200
    assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues.values())
    policies = [v for v in resources.values() if v["Type"] == "AWS::SQS::QueuePolicy"]
    denies = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert len(denies) == 2 and all(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_model_server_roles_read_only_production_models(assembly: CloudAssembly) -> None:
    resources = assembly.stack("Prod", "Inference").resources
    vllm_policy = next(v for k, v in resources.items() if v["Type"] == "AWS::IAM::Policy" and k.startswith("VllmRole"))
    statements = {s["Sid"]: s for s in vllm_policy["Properties"]["PolicyDocument"]["Statement"]}
    assert set(statements) == {"ReadProductionModels", "ListProductionModels", "UseDataKeyThroughS3"}
    assert statements["ReadProductionModels"]["Action"] == "s3:GetObject"
    assert statements["ReadProductionModels"]["Resource"] == (
        "arn:aws:s3:::ml-platform-prod-models-333333333333-us-east-1/production/*"
    )
    assert statements["UseDataKeyThroughS3"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    }
    associations = [v["Properties"] for v in resources.values() if v["Type"] == "AWS::EKS::PodIdentityAssociation"]
    accounts = {(a["Namespace"], a["ServiceAccount"]) for a in associations}
    assert {("inference", "vllm"), ("keda", "keda-operator"), ("inference", "batch-inference")} <= accounts


def test_external_secrets_reads_only_this_stage_s_secrets(assembly: CloudAssembly) -> None:
    # The operator and its store live in the platform services stack (monitoring and workloads use them too).
    resources = assembly.stack("Dev", "Platform").resources
    policy = next(v for k, v in resources.items() if k.startswith("ExternalSecretsControllerPolicy"))
    read = next(s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Sid"] == "ReadStageSecrets")
    assert sorted(read["Action"]) == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    literal = [r for r in read["Resource"] if isinstance(r, str)]
    assert literal == ["arn:aws:secretsmanager:us-east-1:111111111111:secret:ml-platform-dev/*"]
    assert len(read["Resource"]) == 3  # the database and cache secrets, by ARN


def test_deployed_inference_objects_match_the_stage(assembly: CloudAssembly) -> None:
    prod = objects_of(assembly, "Prod")
    assert {"ExternalSecret", "ScaledObject", "ScaledJob", "HTTPRoute", "InferenceService",
            "TargetGroupBinding"} <= kinds(prod)  # fmt: skip
    platform = [o for _, o in template_objects(assembly.stack("Prod", "Platform").template)]
    assert "ClusterSecretStore" in kinds(platform)
    assert not [o for o in prod if o["kind"] == "Secret"]
    dev = objects_of(assembly, "Dev")
    assert find(dev, "ScaledObject", "vllm")["spec"]["minReplicaCount"] == 0
