"""Define the agent services (issue #6): one Deployment per framework (CrewAI, LangGraph, AutoGen).

Each agent runs in the ``agentic`` namespace (``k8s_charts/tenancy.py``: Pod Security ``restricted``,
Linkerd, default-deny) as a thin HTTP service image that wraps its framework, and gets:

- ``OPENAI_BASE_URL`` pointing at the in-cluster vLLM service (OpenAI-compatible, ``VLLM_BASE_URL``), and
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the OpenTelemetry collector in ``monitoring``;
- its prompt templates as an immutable ConfigMap whose name carries the template version
  (``<agent>-prompts-v3``), mounted read-only: a new version is a new ConfigMap and a rolling update (running
  pods keep the files they mounted while the deploy prunes the old one), and a rollback is a one-line config
  change that brings the previous version back;
- its LLM backends (model, endpoint, token and rate limits) as a ConfigMap, mounted read-only; a change
  rolls the pods through a checksum annotation;
- a restricted securityContext, explicit memory limits, a PodDisruptionBudget from two replicas on
  (``tenancy.pdb``), ``critical-agents`` priority where the stage asks for it, and a nodeSelector onto the
  pool serving ``control`` (the system pool: agents are CPU services);
- one egress allow: the model servers in ``inference`` on 8000, besides the tenancy baseline (DNS, Linkerd,
  the mesh, Pod Identity, HTTPS). Agent-to-model traffic is meshed, so on the wire it goes to the server's
  proxy (4143, the baseline's mesh-egress); the 8000 allow keeps the call working for a server that is not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cdk8s
import constructs

from config.pools import WORKLOAD_TYPE_LABEL
from k8s_charts.inference import NAMESPACE as VLLM_NAMESPACE
from k8s_charts.mlops import (
    content_hash,
    resources,
)
from k8s_charts.objects import (
    MESH_POD_ANNOTATIONS,
    api_object,
    container_security_context,
    pod_security_context,
)
from k8s_charts.tenancy import NetworkAllow, Peer, PolicyPort, network_policy, pdb
from k8s_charts.vllm import PORT as VLLM_PORT

NAMESPACE: Final = "agentic"
# VllmChart's default name: its Service in the inference namespace.
VLLM_SERVICE: Final = "vllm"
VLLM_BASE_URL: Final = f"http://{VLLM_SERVICE}.{VLLM_NAMESPACE}.svc.cluster.local:{VLLM_PORT}/v1"
OTEL_COLLECTOR_ENDPOINT: Final = "http://otel-collector.monitoring.svc:4317"
# CPU agents run where the system pool's nodes are (its single-valued workload-type label is "control").
AGENT_NODE_SELECTOR: Final[Mapping[str, str]] = {WORKLOAD_TYPE_LABEL: "control"}
PROMPTS_MOUNT: Final = "/etc/agent/prompts"
BACKENDS_MOUNT: Final = "/etc/agent/llm"
BACKENDS_FILE: Final = "backends.json"
HTTP_PORT: Final = 8080
METRICS_PORT: Final = 9090
PART_OF: Final = "agents"


@dataclass(frozen=True)
class LlmBackendSpec:
    """Define one model endpoint an agent may call."""

    model: str
    endpoint: str
    max_tokens: int
    requests_per_minute: int


@dataclass(frozen=True)
class AgentService:
    """Define one agent service.

    Args:
        name: the framework's service name (``crewai``); names the Deployment, Service and ConfigMaps.
        image: the image reference with its exact tag.
        replicas: pods behind the Service.
        backends: backend name -> the model endpoint the agent may use.
        prompt_template_version: the version of its prompt templates (``v3``), part of the ConfigMap name.
        prompt_templates: file name -> template text. Defaults to a minimal system prompt.
        cpu_millicores: CPU request. Defaults to 500.
        memory_mib: memory request and limit. Defaults to 1024.
    """

    name: str
    image: str
    replicas: int
    backends: Mapping[str, LlmBackendSpec]
    prompt_template_version: str
    prompt_templates: Mapping[str, str] = field(default_factory=dict)
    cpu_millicores: int = 500
    memory_mib: int = 1024


def default_prompt_templates(framework: str) -> dict[str, str]:
    """Return the minimal prompt set every agent image understands (the real ones ship with the agent)."""
    return {
        "system.md": (
            f"You are the {framework} agent of the ML platform. Answer with facts from your tools, cite the "
            "tool output you used, and say so when you do not know.\n"
        ),
    }


def prompts_config_map_name(agent: AgentService) -> str:
    """Return the versioned ConfigMap name of an agent's prompt templates (dots become dashes)."""
    return f"{agent.name}-prompts-{agent.prompt_template_version.replace('.', '-')}"


def backends_document(agent: AgentService) -> str:
    """Return the JSON document of an agent's LLM backends, as the agent reads it."""
    return json.dumps(
        {
            name: {
                "model": b.model,
                "endpoint": b.endpoint,
                "max_tokens": b.max_tokens,
                "requests_per_minute": b.requests_per_minute,
            }
            for name, b in sorted(agent.backends.items())
        },
        indent=2,
        sort_keys=True,
    )


class AgentsChart(cdk8s.Chart):
    """Define the agent Deployments, their ConfigMaps, Services, budgets and the egress allow.

    Args:
        agents: the agent services.
        priority_class: the PriorityClass of the agent pods (``critical-agents`` in prod). Defaults to none.
        node_selector: node labels that place the agents. Defaults to ``AGENT_NODE_SELECTOR``.
        llm_base_url: the OpenAI-compatible base URL. Defaults to the in-cluster vLLM service.
        otel_endpoint: the OTLP gRPC endpoint. Defaults to the collector in ``monitoring``.
        llm_namespace: the namespace of the model servers the agents may call. Defaults to ``inference``.
        llm_port: the model servers' port. Defaults to 8000.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        agents: Sequence[AgentService],
        priority_class: str | None = None,
        node_selector: Mapping[str, str] = AGENT_NODE_SELECTOR,
        llm_base_url: str = VLLM_BASE_URL,
        otel_endpoint: str = OTEL_COLLECTOR_ENDPOINT,
        llm_namespace: str = VLLM_NAMESPACE,
        llm_port: int = VLLM_PORT,
    ) -> None:
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique: {names}")
        for agent in agents:
            _check(agent)
        super().__init__(scope, construct_id)
        for agent in agents:
            self._agent(agent, priority_class, dict(node_selector), llm_base_url, otel_endpoint)
        if agents:
            allow = NetworkAllow(
                name="agents-to-models",
                direction="Egress",
                peers=(Peer(namespaces=(llm_namespace,)),),
                ports=(PolicyPort(llm_port),),
                pod_labels={"app.kubernetes.io/part-of": PART_OF},
                reason="agents call the OpenAI-compatible model servers (vLLM) in the inference namespace",
            )
            network_policy(self, "allow-agents-to-models", namespace=NAMESPACE, allow=allow)

    def _agent(
        self,
        agent: AgentService,
        priority_class: str | None,
        node_selector: dict[str, str],
        llm_base_url: str,
        otel_endpoint: str,
    ) -> None:
        name = agent.name
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}
        prompts = prompts_config_map_name(agent)
        templates = dict(agent.prompt_templates) or default_prompt_templates(name)
        api_object(
            self,
            f"{name}-prompts",
            api_version="v1",
            kind="ConfigMap",
            name=prompts,
            namespace=NAMESPACE,
            labels={**labels, "ml-platform/prompt-version": agent.prompt_template_version},
            # A version's templates never change: a change is a new version (and a new ConfigMap).
            body={"data": templates, "immutable": True},
        )
        backends = {BACKENDS_FILE: backends_document(agent)}
        api_object(
            self,
            f"{name}-llm-backends",
            api_version="v1",
            kind="ConfigMap",
            name=f"{name}-llm-backends",
            namespace=NAMESPACE,
            labels=labels,
            body={"data": backends},
        )
        api_object(
            self,
            f"{name}-service-account",
            api_version="v1",
            kind="ServiceAccount",
            name=name,
            namespace=NAMESPACE,
            labels=labels,
            # Agents never call the Kubernetes API; the Linkerd proxy projects its own token.
            body={"automountServiceAccountToken": False},
        )
        container = {
            "name": name,
            "image": agent.image,
            "ports": [
                {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                # Named "metrics": the tenancy baseline lets Prometheus scrape ports of that name.
                {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            ],
            "env": [
                {"name": "OPENAI_BASE_URL", "value": llm_base_url},
                {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": otel_endpoint},
                {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"},
                {"name": "OTEL_SERVICE_NAME", "value": name},
                {"name": "PROMPT_TEMPLATE_DIR", "value": PROMPTS_MOUNT},
                {"name": "PROMPT_TEMPLATE_VERSION", "value": agent.prompt_template_version},
                {"name": "LLM_BACKENDS_FILE", "value": f"{BACKENDS_MOUNT}/{BACKENDS_FILE}"},
                {"name": "HOME", "value": "/tmp"},
            ],
            "resources": resources(cpu_millicores=agent.cpu_millicores, memory_mib=agent.memory_mib),
            "securityContext": container_security_context(),
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 20,
                "failureThreshold": 3,
            },
            "volumeMounts": [
                {"name": "prompts", "mountPath": PROMPTS_MOUNT, "readOnly": True},
                {"name": "llm-backends", "mountPath": BACKENDS_MOUNT, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        pod_spec: dict[str, Any] = {
            "serviceAccountName": name,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "nodeSelector": node_selector,
            # Replicas in different zones: one zone's outage leaves the agent serving.
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                }
            ],
            "containers": [container],
            "volumes": [
                {"name": "prompts", "configMap": {"name": prompts}},
                {"name": "llm-backends", "configMap": {"name": f"{name}-llm-backends"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
        }
        if priority_class:
            pod_spec["priorityClassName"] = priority_class
        api_object(
            self,
            f"{name}-deployment",
            api_version="apps/v1",
            kind="Deployment",
            name=name,
            namespace=NAMESPACE,
            labels=labels,
            body={
                "spec": {
                    "replicas": agent.replicas,
                    "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                    # Never below the current replicas during a rollout (new pods first).
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                    "template": {
                        "metadata": {
                            "labels": labels,
                            "annotations": {
                                **MESH_POD_ANNOTATIONS,
                                # The backends ConfigMap keeps its name, so its content rolls the pods.
                                "ml-platform/llm-backends-checksum": content_hash(backends),
                            },
                        },
                        "spec": pod_spec,
                    },
                }
            },
        )
        api_object(
            self,
            f"{name}-service",
            api_version="v1",
            kind="Service",
            name=name,
            namespace=NAMESPACE,
            labels=labels,
            body={
                "spec": {
                    "selector": {"app.kubernetes.io/name": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
                }
            },
        )
        pdb(
            self,
            f"{name}-pdb",
            name=name,
            namespace=NAMESPACE,
            match_labels={"app.kubernetes.io/name": name},
            replicas=agent.replicas,
        )


def _check(agent: AgentService) -> None:
    if not agent.backends:
        raise ValueError(f"agent {agent.name}: no LLM backends; give it at least one")
    tag = agent.image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag or tag == "latest":
        raise ValueError(f"agent {agent.name}: image {agent.image!r} must carry an exact tag (never latest)")
    if agent.replicas < 1:
        raise ValueError(f"agent {agent.name}: replicas {agent.replicas} must be at least 1")
    for file_name in agent.prompt_templates:
        if "/" in file_name or not file_name:
            raise ValueError(f"agent {agent.name}: prompt template name {file_name!r} must be a plain file name")
