"""Define the tenancy guardrails of the shared GPU platform (issue #4).

Every platform namespace gets the same set of guardrails:

- Pod Security Standards labels: the level ``PLATFORM_NAMESPACES`` gives the namespace enforced (and
  the reason next to it), ``restricted`` audited and warned everywhere, so every deviation from
  ``restricted`` is still reported where less is enforced.
- The Linkerd mesh in ``MESHED_NAMESPACES`` only (see "Which namespaces are meshed" below): mesh
  injection and ``all-authenticated`` as the default inbound policy, so traffic between meshed pods is
  mTLS and a pod that is not on the mesh cannot call a meshed one unless a Linkerd AuthorizationPolicy
  (with a NetworkAuthentication, k8s_charts/mesh_policy.py) says so.
- A LimitRange that gives containers without requests sane ones (and a memory limit), so that every pod
  counts against the ResourceQuota and none lands on a node with no reservation at all.
- A default-deny NetworkPolicy for Ingress and Egress plus explicit, data-driven allows (``NetworkAllow``):
  DNS, metrics scraping from ``monitoring``, EKS Pod Identity credentials and HTTPS to AWS APIs and the
  Kubernetes API everywhere; the Linkerd control plane and the mesh's inbound proxy port (4143) between
  meshed namespaces only. Other charts add their own allows with ``network_policy`` (or the chart's
  ``extra_allows``), never by loosening these. Kubelet probes need no rule: the EKS network policy agent
  always admits traffic between a pod and its own node's address (aws/aws-network-policy-agent#65).
  Admission webhooks served from a platform namespace (the Prometheus operator's, in ``monitoring``) are
  called by the control plane's ENIs and need an allow from the add-on that deploys them.
- A ResourceQuota for the namespaces with an entry in the stage's ``tenancy.quotas``: CPU and memory
  requests, a memory limit, whole GPUs and every MIG profile the cluster's layouts advertise.

The cluster-wide PriorityClasses come from ``tenancy.priority_classes``. ``pdb`` is the helper workload
charts call for "a PodDisruptionBudget for every workload with more than one replica".

Which namespaces are meshed, and the Pod Security level that follows. Linkerd 2.20 runs here without its
CNI plugin (``cniEnabled: false`` in platform_constructs/linkerd.py: the linkerd2-cni chart is not in the
pinned k8s-reference), so the injector adds the ``linkerd-init`` init container to every meshed pod, with
the ``NET_ADMIN`` and ``NET_RAW`` capabilities it needs to write the pod's iptables rules. ``restricted``
and ``baseline`` both reject those capabilities, and 2.20 has no iptables-free mode (``proxy.nativeSidecar``
still runs linkerd-init first). A namespace can therefore be meshed or enforce ``restricted``, not both:

- Meshed (``MESHED_NAMESPACES``): ``inference``, ``agentic`` and ``mlops``, the services that call each
  other, where mTLS between them is the point of the mesh. They enforce ``privileged``; ``audit`` and
  ``warn`` stay ``restricted``, so every deviation other than the mesh's init container is still reported.
  Once the linkerd2-cni chart is pinned in k8s-reference (and ``cniEnabled: true``), they return to
  ``restricted``.
- Not meshed, enforcing ``restricted``: ``training`` (``linkerd.io/inject: disabled``: NCCL and Gloo
  traffic would bypass the proxy anyway), ``research`` and ``development`` (notebooks) and ``monitoring``
  (Prometheus scrapes the meshed pods' metrics ports as an unmeshed client, which the mesh admits through
  the NetworkAuthentication rules of k8s_charts/mesh_policy.py).

Prerequisites this chart relies on (the add-on that deploys them must keep these settings):
kube-prometheus-stack installs prometheus-node-exporter into ``NODE_EXPORTER_NAMESPACE``
(``prometheus-node-exporter.namespaceOverride``), because node-exporter needs hostNetwork, hostPID and
hostPath mounts; that is what lets ``monitoring`` itself stay ``restricted``. Grafana keeps
``initChownData.enabled: false`` (the chown init container runs as root with CAP_CHOWN).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

import cdk8s
import constructs

from config.model import NamespaceQuota
from k8s_charts.objects import api_object

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]
Direction = Literal["Ingress", "Egress"]
Protocol = Literal["TCP", "UDP", "SCTP"]

# Platform namespace -> the Pod Security Standards level enforced there (audit and warn are ``restricted``
# everywhere). ``restricted`` wherever the namespace is not meshed; the meshed ones are ``privileged`` only
# for Linkerd's init container (see the module docstring).
PLATFORM_NAMESPACES: Final[Mapping[str, PodSecurityLevel]] = MappingProxyType(
    {
        # Not meshed (linkerd.io/inject: disabled): NCCL and Gloo open direct TCP connections between ranks
        # on ports chosen at run time, which would bypass the proxy anyway, and EFA traffic never reaches the
        # IP stack. GPUs come from the NVIDIA device plugin (a resource request, no privileged container or
        # hostPath), EFA interfaces from the EFA device plugin (``vpc.amazonaws.com/efa``), and NCCL's shared
        # memory from an emptyDir with ``medium: Memory``, a volume type restricted allows. The EKS AL2023
        # AMIs run containerd with an unlimited memlock limit, so EFA's pinned memory needs no IPC_LOCK
        # capability (which only privileged would allow). Images must run as a non-root UID (runAsNonRoot).
        "training": "restricted",
        # inference, agentic and mlops are MESHED_NAMESPACES and enforce privileged ONLY because Linkerd runs
        # without its CNI plugin (cniEnabled: false): the injector adds the linkerd-init init container, which
        # needs the NET_ADMIN and NET_RAW capabilities to write the pod's iptables rules, and both restricted
        # and baseline reject those. Once the linkerd2-cni chart is pinned in k8s-reference (and cniEnabled is
        # true), these three return to restricted. Until then audit and warn stay restricted, so any other
        # deviation shows up in the audit log and in kubectl/Helm warnings.
        # KServe/Triton/vLLM servers listen on unprivileged ports and need no host access; the GPU and MIG
        # devices come from the device plugin. Their own init containers (KServe's storage-initializer) keep a
        # restricted securityContext, so that audit and warn report only linkerd-init.
        "inference": "privileged",
        # Agents are ordinary HTTP services and workers calling models and tools over the network.
        "agentic": "privileged",
        # MLflow, pipelines and the feature registry: web services and batch jobs with no host access.
        "mlops": "privileged",
        # Not meshed. Prometheus, Alertmanager, Grafana, kube-state-metrics and the operator all ship
        # restricted securityContexts in kube-prometheus-stack. The one component that cannot be restricted,
        # node-exporter (hostNetwork, hostPID, hostPath /, /proc, /sys), runs in NODE_EXPORTER_NAMESPACE, so
        # the namespace that holds Prometheus's cluster-wide read access is not privileged. Prometheus scrapes
        # the meshed pods' metrics ports as an unmeshed client; the mesh admits it through the
        # NetworkAuthentication rules of k8s_charts/mesh_policy.py.
        "monitoring": "restricted",
        # Not meshed. Notebooks and experiments: the notebook images run as a non-root user (jovyan, UID
        # 1000); a researcher who needs root installs packages in the image, not in a running pod.
        "research": "restricted",
        # Not meshed, the same as research: development pods are the most likely to try root, hostPath or
        # privileged debugging, which is exactly what must not reach a shared GPU node.
        "development": "restricted",
    }
)
# The namespaces whose pods run a Linkerd proxy: the services that call each other, where mTLS between them
# is the point of the mesh. Each enforces privileged in PLATFORM_NAMESPACES (linkerd-init, see there).
MESHED_NAMESPACES: Final[frozenset[str]] = frozenset({"inference", "agentic", "mlops"})
# prometheus-node-exporter reads the host's /proc, /sys and root file system from the host's network and
# PID namespaces: that is the privileged profile (baseline already forbids hostNetwork, hostPID and
# hostPath). It gets a namespace of its own, unmeshed (host-network pods are never injected) and without
# NetworkPolicies (they do not apply to host-network pods).
NODE_EXPORTER_NAMESPACE: Final = "node-exporter"
NODE_AGENT_NAMESPACES: Final[Mapping[str, PodSecurityLevel]] = MappingProxyType({NODE_EXPORTER_NAMESPACE: "privileged"})

PSS_LABEL_PREFIX: Final = "pod-security.kubernetes.io"
MONITORING_NAMESPACE: Final = "monitoring"
LINKERD_NAMESPACE: Final = "linkerd"
LINKERD_ANNOTATIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "linkerd.io/inject": "enabled",
        # Only mTLS-authenticated (meshed) clients may connect unless an AuthorizationPolicy allows more.
        "config.linkerd.io/default-inbound-policy": "all-authenticated",
    }
)
# Namespace annotations of the platform namespaces that are not meshed. Training states its opt-out, since
# its pods are the ones a chart might mesh by habit; a pod's own linkerd.io/inject annotation overrides the
# namespace's, and restricted then rejects the injected linkerd-init at admission, which is the actual guard.
UNMESHED_NAMESPACE_ANNOTATIONS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {"training": MappingProxyType({"linkerd.io/inject": "disabled"})}
)
# Linkerd proxy ports (linkerd-control-plane values ``proxy.ports``).
LINKERD_PROXY_INBOUND_PORT: Final = 4143
LINKERD_PROXY_ADMIN_PORT: Final = 4191
# Control plane gRPC ports the proxies call: linkerd-identity (certificates), linkerd-destination
# (service discovery) and its policy container (Server/AuthorizationPolicy). The proxy-injector (8443) and
# sp-validator (9443) webhooks are called by the API server, never by workloads.
LINKERD_IDENTITY_PORT: Final = 8080
LINKERD_DESTINATION_PORT: Final = 8086
LINKERD_POLICY_PORT: Final = 8090
# Workloads name the container port that serves Prometheus metrics "metrics"; the allow uses the name,
# so every serving runtime (vLLM, Triton, Ray, MLflow) keeps its own port number.
METRICS_PORT_NAME: Final = "metrics"
# The EKS Pod Identity Agent (host network, link-local address): pods fetch their AWS credentials here.
POD_IDENTITY_AGENT_CIDR: Final = "169.254.170.23/32"
POD_IDENTITY_AGENT_PORT: Final = 80
NODE_EXPORTER_PORT: Final = 9100
KUBELET_PORT: Final = 10250

PRIORITY_CLASS_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "production-inference": "Production model serving: preempts everything else on shared GPU nodes.",
        "critical-agents": "Business-critical agent services: second only to production inference.",
        "training": "Scheduled training and fine-tuning jobs: preempt research and development.",
        "research": "Research experiments and notebooks: preempt only development work.",
        "development": "Development work: lowest priority; waits for free capacity and never preempts.",
    }
)
# Development pods never preempt: at priority 50 they would otherwise evict every pod that has no
# PriorityClass (priority 0), platform services included, to make room for interactive experiments.
# They still queue ahead of priority-0 pods and are the first to be preempted themselves.
NON_PREEMPTING_PRIORITY_CLASSES: Final = frozenset({"development"})

DEFAULT_CPU_REQUEST_MILLICORES: Final = 250
DEFAULT_MEMORY_REQUEST_MIB: Final = 512
DEFAULT_MEMORY_LIMIT_MIB: Final = 1024
# Larger than any one pod of the platform needs (half a p5.48xlarge, most of a p4d/p4de), small enough
# to reject a typo such as 10000Gi at admission rather than leave a pod pending for a node that cannot exist.
MAX_CONTAINER_MEMORY_GIB: Final = 1024

_KUBERNETES_VERSION_PATTERN = re.compile(r"^1\.\d{2}$")
_MIG_PROFILE_PATTERN = re.compile(r"^\d+g\.\d+gb$")
_POLICY_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,45}[a-z0-9])?$")


# --- quotas -------------------------------------------------------------------------------------------------


def mig_resources_per_gpu(mig_layouts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Return MIG profile -> the most devices of that profile one GPU holds in any of the layouts.

    ``mig_layouts`` is the cluster's ``mig_layouts`` (layout name -> profile -> count per GPU). A profile
    used by several layouts counts with its largest per-GPU count, since each layout is one whole GPU.
    """
    per_gpu: dict[str, int] = {}
    for layout in mig_layouts.values():
        for profile, count in layout.items():
            per_gpu[profile] = max(per_gpu.get(profile, 0), count)
    return dict(sorted(per_gpu.items()))


def quota_hard(quota: NamespaceQuota, mig_resources: Mapping[str, int]) -> dict[str, str]:
    """Return the ResourceQuota ``spec.hard`` of a namespace's share of the cluster.

    - ``requests.cpu`` and ``requests.memory``: the share the scheduler reserves for the namespace.
    - ``limits.memory``: the same figure. Memory cannot be reclaimed from a running pod, so limits above
      the namespace's share would let its pods OOM-kill their neighbours on a shared node; CPU is
      compressible, so there is no ``limits.cpu`` (CPU limits only throttle latency-sensitive serving).
    - ``requests.nvidia.com/gpu``: whole (or time-sliced) GPUs; ``0`` keeps a namespace off GPUs.
    - ``requests.nvidia.com/mig-<profile>``: gpus x the devices of that profile one GPU holds
      (``mig_resources``). The GPU Operator's mixed MIG strategy advertises each profile as a resource of
      its own that ``nvidia.com/gpu`` does not count, so without these a namespace could take MIG slices
      beyond its GPU share, and one with ``gpus: 0`` could take them at all. The profiles of one layout
      together make up one GPU, so the namespace's MIG devices add up to at most ``gpus`` GPUs. A
      ResourceQuota cannot cap a weighted sum across resources, so whole GPUs and MIG devices are bounded
      separately: a namespace holding its full share of both uses up to 2 x gpus physical GPUs.
    """
    hard = {
        "requests.cpu": str(quota.cpu),
        "requests.memory": f"{quota.memory_gib}Gi",
        "limits.memory": f"{quota.memory_gib}Gi",
        "requests.nvidia.com/gpu": str(quota.gpus),
    }
    for profile, per_gpu in sorted(mig_resources.items()):
        if not _MIG_PROFILE_PATTERN.match(profile):
            raise ValueError(f"mig profile {profile!r} is not a profile name such as 1g.10gb")
        if per_gpu < 1:
            raise ValueError(f"mig profile {profile}: {per_gpu} devices per GPU; a layout holds at least 1")
        hard[f"requests.nvidia.com/mig-{profile}"] = str(quota.gpus * per_gpu)
    return hard


# --- network policies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyPort:
    """Define one port of an allow: a number or a container port name, and the protocol.

    Args:
        port: port number, or the name of the destination container's port.
        protocol: defaults to TCP.
        end_port: last port of a range starting at ``port`` (numeric ports only). Defaults to no range.
    """

    port: int | str
    protocol: Protocol = "TCP"
    end_port: int | None = None

    def render(self) -> dict[str, Any]:
        rendered: dict[str, Any] = {"protocol": self.protocol, "port": self.port}
        if self.end_port is not None:
            rendered["endPort"] = self.end_port
        return rendered


@dataclass(frozen=True)
class Peer:
    """Define the other end of an allowed connection: pods selected by namespace and labels, or an IP block.

    Args:
        namespaces: names of the namespaces whose pods match. Defaults to the policy's own namespace.
        all_namespaces: match pods in every namespace (``namespaces`` must then be empty).
        pod_labels: labels the pods must carry. Defaults to every pod of the matched namespaces.
        cidr: an IP block instead of pods (no ``namespaces``, ``all_namespaces`` or ``pod_labels``).
    """

    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    cidr: str | None = None

    def render(self) -> dict[str, Any]:
        if self.cidr is not None:
            if self.namespaces or self.all_namespaces or self.pod_labels:
                raise ValueError(f"peer {self.cidr} is an IP block: it cannot also select namespaces or pods")
            return {"ipBlock": {"cidr": self.cidr}}
        if self.all_namespaces and self.namespaces:
            raise ValueError(f"peer selects all namespaces and also {', '.join(self.namespaces)}: pick one")
        rendered: dict[str, Any] = {}
        if self.all_namespaces:
            rendered["namespaceSelector"] = {}
        elif len(self.namespaces) == 1:
            # The API server sets kubernetes.io/metadata.name on every namespace (immutable, unlike a name
            # label a tenant could copy onto its own namespace).
            rendered["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": self.namespaces[0]}}
        elif self.namespaces:
            rendered["namespaceSelector"] = {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(self.namespaces)}
                ]
            }
        # Without a namespaceSelector, a podSelector means pods of the policy's own namespace.
        if self.pod_labels or not rendered:
            rendered["podSelector"] = {"matchLabels": dict(self.pod_labels)} if self.pod_labels else {}
        return rendered


@dataclass(frozen=True)
class NetworkAllow:
    """Define one allowed kind of traffic, rendered as one NetworkPolicy named ``allow-<name>``.

    Args:
        name: lowercase-kebab name of the allow.
        direction: ``Ingress`` (peers may connect to the selected pods) or ``Egress`` (the selected pods
            may connect to the peers).
        peers: who is on the other end; at least one.
        ports: the destination ports allowed. Defaults to every port.
        pod_labels: labels of the pods in the namespace the allow applies to. Defaults to every pod.
        reason: why the traffic is needed; recorded as the policy's ``ml-platform/reason`` annotation.
    """

    name: str
    direction: Direction
    peers: tuple[Peer, ...]
    reason: str
    ports: tuple[PolicyPort, ...] = ()
    pod_labels: Mapping[str, str] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """Return the NetworkPolicy spec of this allow."""
        if not _POLICY_NAME_PATTERN.match(self.name):
            raise ValueError(f"allow name {self.name!r} must be lowercase alphanumerics and '-' (at most 47)")
        if not self.peers:
            raise ValueError(f"allow {self.name} has no peers: an allow without peers would allow everyone")
        rule: dict[str, Any] = {("from" if self.direction == "Ingress" else "to"): [p.render() for p in self.peers]}
        if self.ports:
            rule["ports"] = [p.render() for p in self.ports]
        return {
            "podSelector": {"matchLabels": dict(self.pod_labels)} if self.pod_labels else {},
            "policyTypes": [self.direction],
            self.direction.lower(): [rule],
        }


def _mesh_ports(*ports: int) -> tuple[PolicyPort, ...]:
    return tuple(PolicyPort(port) for port in ports)


def baseline_allows(
    namespace: str, *, meshed_namespaces: Sequence[str], node_cidrs: Sequence[str] = ()
) -> tuple[NetworkAllow, ...]:
    """Return the allows every platform namespace gets, the mesh's if it is meshed, and its own.

    Args:
        namespace: the platform namespace the allows are for.
        meshed_namespaces: the namespaces whose pods run a Linkerd proxy (``MESHED_NAMESPACES`` in the
            chart). Only these get the Linkerd control plane and mesh (4143) allows and the proxy admin
            port in their metrics allow, and they are the peers of the mesh rules.
        node_cidrs: the node subnets; when given, ``monitoring`` may scrape node-exporter and the kubelets
            on them. Defaults to none (no node scraping allowed).
    """
    meshed = tuple(meshed_namespaces)
    is_meshed = namespace in meshed
    # Only meshed pods have a Linkerd proxy whose admin port (4191) serves metrics.
    scraped = (PolicyPort(LINKERD_PROXY_ADMIN_PORT),) if is_meshed else ()
    allows = [
        NetworkAllow(
            name="dns",
            direction="Egress",
            peers=(Peer(namespaces=("kube-system",), pod_labels={"k8s-app": "kube-dns"}),),
            ports=(PolicyPort(53, "UDP"), PolicyPort(53, "TCP")),
            reason="name resolution through CoreDNS (TCP for answers larger than a UDP datagram)",
        ),
        NetworkAllow(
            name="metrics-scraping",
            direction="Ingress",
            peers=(Peer(namespaces=(MONITORING_NAMESPACE,)),),
            ports=(*scraped, PolicyPort(METRICS_PORT_NAME)),
            reason="Prometheus scrapes containers' ports named 'metrics'"
            + (" and the Linkerd proxy's admin port (4191)" if is_meshed else ""),
        ),
        NetworkAllow(
            name="pod-identity",
            direction="Egress",
            peers=(Peer(cidr=POD_IDENTITY_AGENT_CIDR),),
            ports=_mesh_ports(POD_IDENTITY_AGENT_PORT),
            reason="the AWS SDKs fetch EKS Pod Identity credentials from the node's Pod Identity Agent",
        ),
        NetworkAllow(
            name="https-egress",
            direction="Egress",
            peers=(Peer(cidr="0.0.0.0/0"),),
            ports=_mesh_ports(443),
            reason="AWS APIs (S3 through the gateway endpoint, STS, ECR, CloudWatch Logs, Secrets Manager "
            "through interface endpoints, the rest through NAT) and the EKS API server, all on 443; S3 and "
            "the endpoints have no fixed addresses a NetworkPolicy could name, so only the port is pinned",
        ),
    ]
    if is_meshed:
        allows += _mesh_allows(meshed)
    allows += _namespace_allows(namespace, node_cidrs=node_cidrs)
    return tuple(allows)


def _mesh_allows(meshed: tuple[str, ...]) -> list[NetworkAllow]:
    """Return the allows of a meshed namespace: its proxies' control plane, and 4143 to and from meshed peers.

    An unmeshed client (Prometheus, a notebook) calling a meshed pod connects to the application port: the
    pod's iptables rules redirect it to the proxy only inside the pod, after the NetworkPolicy has seen it, so
    such callers need allows on the application port from the chart that serves it, not these.
    """
    return [
        NetworkAllow(
            name="linkerd-control-plane",
            direction="Egress",
            peers=(Peer(namespaces=(LINKERD_NAMESPACE,)),),
            ports=_mesh_ports(LINKERD_IDENTITY_PORT, LINKERD_DESTINATION_PORT, LINKERD_POLICY_PORT),
            reason="the Linkerd proxy fetches its certificate (identity 8080), endpoints (destination 8086) "
            "and authorization policy (policy 8090); without them no meshed pod becomes ready",
        ),
        # Linkerd's default outbound transport mode (transport-header) sends all meshed-to-meshed traffic to
        # the server's inbound proxy port, whatever the application port (linkerd/linkerd2#13715). On the
        # wire the NetworkPolicy therefore only sees 4143: it decides which namespaces may talk over the
        # mesh, and Linkerd's policy objects decide which ports and identities (linkerd/linkerd2#15246).
        NetworkAllow(
            name="mesh-egress",
            direction="Egress",
            peers=(Peer(namespaces=meshed),),
            ports=_mesh_ports(LINKERD_PROXY_INBOUND_PORT),
            reason="a meshed client's proxy connects to the server pod's inbound proxy port (4143) and "
            "carries the application port in the transport header",
        ),
        NetworkAllow(
            name="mesh-ingress",
            direction="Ingress",
            peers=(Peer(namespaces=meshed),),
            ports=_mesh_ports(LINKERD_PROXY_INBOUND_PORT),
            reason="meshed clients reach this namespace's pods through their inbound proxy (4143); Linkerd's "
            "all-authenticated policy then admits only mTLS clients, and per-port rules between meshed pods "
            "belong in Linkerd Server/AuthorizationPolicy objects",
        ),
    ]


def _namespace_allows(namespace: str, *, node_cidrs: Sequence[str]) -> list[NetworkAllow]:
    allows: list[NetworkAllow] = []
    if namespace == "training":
        # Distributed training is not meshed (the namespace has linkerd.io/inject: disabled): NCCL and Gloo
        # socket transports, torch c10d rendezvous and MPI use ports chosen at run time. EFA traffic uses
        # SRD below the IP stack and is not subject to NetworkPolicy at all.
        same_namespace = (Peer(),)
        allows += [
            NetworkAllow(
                name="job-peers-ingress",
                direction="Ingress",
                peers=same_namespace,
                reason="distributed training workers connect to each other on run-time ports",
            ),
            NetworkAllow(
                name="job-peers-egress",
                direction="Egress",
                peers=same_namespace,
                reason="distributed training workers connect to each other on run-time ports",
            ),
        ]
    if namespace == MONITORING_NAMESPACE:
        allows.append(
            NetworkAllow(
                name="scrape-pods",
                direction="Egress",
                peers=(Peer(all_namespaces=True),),
                # Prometheus is not meshed: it connects to the metrics port itself, which a meshed pod's
                # iptables rules redirect to the proxy only inside the pod, so 4143 is never on the wire.
                ports=(PolicyPort(LINKERD_PROXY_ADMIN_PORT), PolicyPort(METRICS_PORT_NAME)),
                reason="Prometheus scrapes Linkerd proxies (4191: meshed namespaces and the Linkerd control "
                "plane) and 'metrics' ports in every namespace",
            )
        )
        if node_cidrs:
            allows.append(
                NetworkAllow(
                    name="scrape-nodes",
                    direction="Egress",
                    peers=tuple(Peer(cidr=cidr) for cidr in node_cidrs),
                    ports=_mesh_ports(NODE_EXPORTER_PORT, KUBELET_PORT),
                    reason="node-exporter and kubelet/cAdvisor listen on the node's address; host-network "
                    "pods cannot be selected by labels",
                )
            )
    return allows


def default_deny_policy(scope: constructs.Construct, construct_id: str, *, namespace: str) -> cdk8s.ApiObject:
    """Return the NetworkPolicy that denies all ingress and egress of every pod in ``namespace``."""
    return api_object(
        scope,
        construct_id,
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        name="default-deny",
        namespace=namespace,
        annotations={"ml-platform/reason": "nothing is allowed unless an allow-* policy says so"},
        body={"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
    )


def network_policy(
    scope: constructs.Construct, construct_id: str, *, namespace: str, allow: NetworkAllow
) -> cdk8s.ApiObject:
    """Return the NetworkPolicy ``allow-<name>`` in ``namespace`` that permits the traffic of ``allow``."""
    return api_object(
        scope,
        construct_id,
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        name=f"allow-{allow.name}",
        namespace=namespace,
        annotations={"ml-platform/reason": allow.reason},
        body={"spec": allow.spec()},
    )


# --- disruption budgets -------------------------------------------------------------------------------------


def pdb(
    scope: constructs.Construct,
    construct_id: str,
    *,
    name: str,
    namespace: str,
    match_labels: Mapping[str, str],
    replicas: int,
) -> cdk8s.ApiObject | None:
    """Return a PodDisruptionBudget for a workload with more than one replica, else None.

    A single replica is unavailable during any disruption whatever the budget says; a budget would only
    block node drains (Karpenter consolidation, upgrades) forever. With more replicas, at most one pod is
    evicted at a time: ``maxUnavailable: 1`` follows the current scale when an autoscaler changes it, where
    ``minAvailable: replicas - 1`` would block every eviction once the workload scaled down to that number.
    """
    if replicas < 0:
        raise ValueError(f"replicas {replicas} is negative")
    if not match_labels:
        raise ValueError(f"pdb {namespace}/{name}: match_labels is empty, which would select every pod")
    if replicas <= 1:
        return None
    return api_object(
        scope,
        construct_id,
        api_version="policy/v1",
        kind="PodDisruptionBudget",
        name=name,
        namespace=namespace,
        body={
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": dict(match_labels)},
                # A crash-looping pod must not hold up a node drain: it is not serving anyway.
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            }
        },
    )


# --- the chart ----------------------------------------------------------------------------------------------


class TenancyChart(cdk8s.Chart):
    """Define the platform namespaces with their guardrails, and the PriorityClasses.

    Args:
        kubernetes_version: the control plane's minor version (``1.35``); the Pod Security Standards
            labels pin the policy to it.
        priority_classes: PriorityClass name -> value, emitted exactly as given.
        quotas: namespace -> its share of the cluster; namespaces without an entry get no ResourceQuota.
        mig_resources: MIG profile -> devices of that profile per GPU (``mig_resources_per_gpu`` of the
            cluster's layouts); each becomes a quota of gpus x that count.
        node_cidrs: the node subnets, for Prometheus to scrape node-exporter and kubelets. Defaults to none.
        extra_allows: namespace -> further allows for that namespace. Defaults to none.
        non_preempting: PriorityClasses that never preempt. Defaults to ``NON_PREEMPTING_PRIORITY_CLASSES``.
        default_cpu_request_millicores: CPU request of a container that sets none. Defaults to 250.
        default_memory_request_mib: memory request of a container that sets none. Defaults to 512.
        default_memory_limit_mib: memory limit of a container that sets none. Defaults to 1024. A container
            requesting more memory than this must set its own limit.
        max_container_memory_gib: largest memory limit of one container; in a namespace with a quota, its
            memory share if that is smaller. Defaults to 1024.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        kubernetes_version: str,
        priority_classes: Mapping[str, int],
        quotas: Mapping[str, NamespaceQuota],
        mig_resources: Mapping[str, int],
        node_cidrs: Sequence[str] = (),
        extra_allows: Mapping[str, Sequence[NetworkAllow]] | None = None,
        non_preempting: Collection[str] = NON_PREEMPTING_PRIORITY_CLASSES,
        default_cpu_request_millicores: int = DEFAULT_CPU_REQUEST_MILLICORES,
        default_memory_request_mib: int = DEFAULT_MEMORY_REQUEST_MIB,
        default_memory_limit_mib: int = DEFAULT_MEMORY_LIMIT_MIB,
        max_container_memory_gib: int = MAX_CONTAINER_MEMORY_GIB,
    ) -> None:
        extra = dict(extra_allows or {})
        _check_args(kubernetes_version, quotas, extra)
        if not 0 < default_memory_request_mib <= default_memory_limit_mib <= max_container_memory_gib * 1024:
            raise ValueError(
                f"default_memory_request_mib ({default_memory_request_mib}) <= "
                f"default_memory_limit_mib ({default_memory_limit_mib}) <= "
                f"max_container_memory_gib ({max_container_memory_gib}) x 1024 must hold: "
                "a default above the limit or the maximum would reject every pod that sets none"
            )
        if default_cpu_request_millicores <= 0:
            raise ValueError(f"default_cpu_request_millicores {default_cpu_request_millicores} must be positive")
        super().__init__(scope, construct_id)
        version = f"v{kubernetes_version}"
        meshed = tuple(namespace for namespace in PLATFORM_NAMESPACES if namespace in MESHED_NAMESPACES)

        for name, value in priority_classes.items():
            _priority_class(self, name, value, preempts=name not in non_preempting)

        for namespace, level in NODE_AGENT_NAMESPACES.items():
            _namespace(self, namespace, level=level, version=version, annotations=None)

        for namespace, level in PLATFORM_NAMESPACES.items():
            annotations = (
                LINKERD_ANNOTATIONS if namespace in MESHED_NAMESPACES else UNMESHED_NAMESPACE_ANNOTATIONS.get(namespace)
            )
            _namespace(self, namespace, level=level, version=version, annotations=annotations)
            quota = quotas.get(namespace)
            max_memory_gib = min(max_container_memory_gib, quota.memory_gib) if quota else max_container_memory_gib
            if max_memory_gib * 1024 < default_memory_limit_mib:
                raise ValueError(
                    f"quotas.{namespace}.memory_gib ({max_memory_gib}) is below default_memory_limit_mib "
                    f"({default_memory_limit_mib}): every pod without a memory limit would be rejected"
                )
            _limit_range(
                self,
                namespace,
                cpu_request=f"{default_cpu_request_millicores}m",
                memory_request=_mebibytes(default_memory_request_mib),
                memory_limit=_mebibytes(default_memory_limit_mib),
                max_memory=f"{max_memory_gib}Gi",
            )
            if quota is not None:
                api_object(
                    self,
                    f"{namespace}-resourcequota",
                    api_version="v1",
                    kind="ResourceQuota",
                    name="tenant-quota",
                    namespace=namespace,
                    body={"spec": {"hard": quota_hard(quota, mig_resources)}},
                )
            default_deny_policy(self, f"{namespace}-default-deny", namespace=namespace)
            allows = (
                *baseline_allows(namespace, meshed_namespaces=meshed, node_cidrs=node_cidrs),
                *extra.get(namespace, ()),
            )
            _check_unique(namespace, allows)
            for allow in allows:
                network_policy(self, f"{namespace}-allow-{allow.name}", namespace=namespace, allow=allow)


def _check_args(
    kubernetes_version: str, quotas: Mapping[str, NamespaceQuota], extra: Mapping[str, Sequence[NetworkAllow]]
) -> None:
    if not _KUBERNETES_VERSION_PATTERN.match(kubernetes_version):
        raise ValueError(f"kubernetes_version {kubernetes_version!r} is not a minor version such as 1.35")
    for what, names in (("quotas", quotas), ("extra_allows", extra)):
        unknown = sorted(set(names) - set(PLATFORM_NAMESPACES))
        if unknown:
            raise ValueError(
                f"{what}: {', '.join(unknown)} is not a platform namespace: use one of "
                f"{', '.join(PLATFORM_NAMESPACES)} or add it to PLATFORM_NAMESPACES in k8s_charts/tenancy.py"
            )


def _mebibytes(mib: int) -> str:
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _check_unique(namespace: str, allows: Iterable[NetworkAllow]) -> None:
    seen: set[str] = set()
    for allow in allows:
        if allow.name in seen:
            raise ValueError(f"namespace {namespace}: two allows are named {allow.name}; give each its own name")
        seen.add(allow.name)


def _namespace(
    scope: constructs.Construct,
    name: str,
    *,
    level: PodSecurityLevel,
    version: str,
    annotations: Mapping[str, str] | None,
) -> cdk8s.ApiObject:
    labels = {f"{PSS_LABEL_PREFIX}/enforce": level, f"{PSS_LABEL_PREFIX}/enforce-version": version}
    # Audit and warn at restricted everywhere, also where less is enforced, so every exception shows up in
    # the audit log and in kubectl/Helm warnings.
    for mode in ("audit", "warn"):
        labels[f"{PSS_LABEL_PREFIX}/{mode}"] = "restricted"
        labels[f"{PSS_LABEL_PREFIX}/{mode}-version"] = version
    return cdk8s.ApiObject(
        scope,
        f"{name}-namespace",
        api_version="v1",
        kind="Namespace",
        metadata=cdk8s.ApiObjectMetadata(
            name=name, labels=labels, annotations=dict(annotations) if annotations else None
        ),
    )


def _priority_class(scope: constructs.Construct, name: str, value: int, *, preempts: bool) -> cdk8s.ApiObject:
    description = PRIORITY_CLASS_DESCRIPTIONS.get(name, f"Platform priority {value}.")
    return api_object(
        scope,
        f"{name}-priorityclass",
        api_version="scheduling.k8s.io/v1",
        kind="PriorityClass",
        name=name,
        body={
            "value": value,
            # Pods without a priorityClassName keep priority 0 instead of silently joining a tier.
            "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority" if preempts else "Never",
            "description": description,
        },
    )


def _limit_range(
    scope: constructs.Construct,
    namespace: str,
    *,
    cpu_request: str,
    memory_request: str,
    memory_limit: str,
    max_memory: str,
) -> cdk8s.ApiObject:
    # No CPU default limit and no CPU max: a LimitRange max without a default becomes every container's
    # default limit, and CPU limits throttle serving latency while the CPU quota already bounds requests.
    return api_object(
        scope,
        f"{namespace}-limitrange",
        api_version="v1",
        kind="LimitRange",
        name="container-defaults",
        namespace=namespace,
        body={
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": {"cpu": cpu_request, "memory": memory_request},
                        "default": {"memory": memory_limit},
                        "max": {"memory": max_memory},
                    }
                ]
            }
        },
    )
