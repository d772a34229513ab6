"""Define who may call what inside the Linkerd mesh, as data.

The control plane's default inbound policy is ``all-authenticated``: any meshed client may call any meshed
port, and unmeshed clients are refused. Each ``ServerAccess`` narrows one port of one set of pods to the
clients it lists and, for unmeshed callers such as the ALB, opens it to the networks it lists:

- a ``Server`` (policy.linkerd.io/v1beta3) selecting the pods and the port;
- for meshed clients, a ``MeshTLSAuthentication`` with their mTLS identities (a service account, or every
  service account of a namespace) and an ``AuthorizationPolicy`` that requires it;
- for unmeshed clients, a ``NetworkAuthentication`` with their CIDRs and a second ``AuthorizationPolicy``.
  An AuthorizationPolicy requires *all* its authentications, so identities and networks get one each:
  either admits a connection.

Once a Server selects a port, Linkerd denies every client no AuthorizationPolicy admits. Kubelet probes
stay allowed: Linkerd authorizes the pod's probe paths itself as long as no HTTPRoute is attached to the
Server, and these Servers have none.

The chart needs the policy CRDs (linkerd-crds) and the control plane's policy validator, and the
namespaces it writes into must exist.

Training pods are a separate case: NCCL, Gloo and torch.distributed open their own TCP connections on
ports chosen at run time, which must bypass the proxy (``training_pod_annotations``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import cdk8s
import constructs

from k8s_charts.mesh_identity import identity_name
from k8s_charts.objects import api_object

ProxyProtocol = Literal["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"]

INFERENCE_NAMESPACE: Final = "inference"
AGENTIC_NAMESPACE: Final = "agentic"
MONITORING_NAMESPACE: Final = "monitoring"
# KServe labels the pods of every InferenceService predictor with component=predictor; the platform's
# serving runtimes listen on 8080 there (k8s_charts/kserve_models.py, --http_port) and serve /metrics on it.
KSERVE_PREDICTOR_SELECTOR: Final[Mapping[str, str]] = {"component": "predictor"}
KSERVE_PREDICTOR_PORT: Final = 8080
# Workloads name the container port that serves Prometheus metrics "metrics" (see k8s_charts/tenancy.py).
METRICS_PORT_NAME: Final = "metrics"

# torch.distributed's default MASTER_PORT: the c10d TCPStore / rendezvous endpoint of rank 0.
TORCH_DISTRIBUTED_PORT: Final = 29500
# NCCL's socket transport and bootstrap, and Gloo's pairs, listen on port 0: the kernel picks a port from
# net.ipv4.ip_local_port_range, 32768-60999 on the EKS AL2023 AMI (the Linux default). EFA traffic uses
# SRD below the IP stack and never reaches iptables.
EPHEMERAL_PORT_RANGE: Final = (32768, 60999)
TRAINING_SKIP_PORTS: Final = (
    str(TORCH_DISTRIBUTED_PORT),
    f"{EPHEMERAL_PORT_RANGE[0]}-{EPHEMERAL_PORT_RANGE[1]}",
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The longest suffix the chart adds to a Server's name ("-network-clients").
_MAX_SERVER_NAME = 63 - len("-network-clients")


def training_pod_annotations() -> dict[str, str]:
    """Return the pod annotations that keep a meshed training pod's collective traffic out of the proxy.

    NCCL, Gloo and the torch.distributed rendezvous open direct TCP connections between ranks on
    ``TRAINING_SKIP_PORTS``; through the proxy they would pay mTLS on every byte of gradient traffic and
    fail protocol detection on their binary handshakes. Skipped ports are governed by NetworkPolicy only.
    """
    ports = ",".join(TRAINING_SKIP_PORTS)
    return {"config.linkerd.io/skip-inbound-ports": ports, "config.linkerd.io/skip-outbound-ports": ports}


@dataclass(frozen=True)
class ServerAccess:
    """One port of a set of pods and the clients allowed to call it.

    Args:
        namespace: the namespace of the pods.
        server: the Server's name (and the prefix of its authentication and policy objects).
        pod_selector: labels of the pods; empty selects every pod of the namespace.
        port: the container port, by number or by name.
        client_namespaces: namespaces all of whose service accounts may call (meshed clients).
        client_service_accounts: ``(namespace, service account)`` pairs that may call (meshed clients).
        client_networks: CIDRs of unmeshed clients that may call, such as the ALB's subnets.
        proxy_protocol: the protocol the proxy assumes on the port. Defaults to ``unknown`` (detected).
    """

    namespace: str
    server: str
    pod_selector: Mapping[str, str]
    port: int | str
    client_namespaces: tuple[str, ...] = ()
    client_service_accounts: tuple[tuple[str, str], ...] = ()
    client_networks: tuple[str, ...] = ()
    proxy_protocol: ProxyProtocol = "unknown"

    def __post_init__(self) -> None:
        where = f"mesh rule {self.namespace}/{self.server}"
        if not _DNS_LABEL.match(self.namespace):
            raise ValueError(f"{where}: namespace {self.namespace!r} is not a valid namespace name")
        if not _DNS_LABEL.match(self.server) or len(self.server) > _MAX_SERVER_NAME:
            raise ValueError(
                f"{where}: server name must be lowercase alphanumerics and '-', at most {_MAX_SERVER_NAME} "
                "characters (the chart appends -network-clients)"
            )
        if isinstance(self.port, bool) or (isinstance(self.port, int) and not 1 <= self.port <= 65535):
            raise ValueError(f"{where}: port {self.port!r} is outside 1-65535")
        if isinstance(self.port, str) and not (len(self.port) <= 15 and _PORT_NAME.match(self.port)):
            raise ValueError(f"{where}: port {self.port!r} is not a container port name (IANA_SVC_NAME)")
        if not (self.client_namespaces or self.client_service_accounts or self.client_networks):
            raise ValueError(
                f"{where}: no clients: list client_namespaces, client_service_accounts or client_networks "
                "(a Server without authorizations denies every caller)"
            )
        for namespace in (*self.client_namespaces, *(ns for ns, _ in self.client_service_accounts)):
            if not _DNS_LABEL.match(namespace):
                raise ValueError(f"{where}: client namespace {namespace!r} is not a valid namespace name")
        for namespace, account in self.client_service_accounts:
            if not _DNS_LABEL.match(account):
                raise ValueError(f"{where}: service account {namespace}/{account!r} is not a valid name")
        for cidr in self.client_networks:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as error:
                raise ValueError(f"{where}: client network {cidr!r} is not a CIDR such as 10.0.1.0/24") from error

    @property
    def identities(self) -> tuple[str, ...]:
        """Return the mTLS identities of the meshed clients (``*.<namespace>...`` for a whole namespace)."""
        identities = [identity_name(namespace) for namespace in self.client_namespaces]
        identities += [identity_name(namespace, account) for namespace, account in self.client_service_accounts]
        return tuple(dict.fromkeys(identities))


def platform_mesh_rules(*, scraper_networks: Sequence[str]) -> tuple[ServerAccess, ...]:
    """Return the platform's mesh rules: who may call the KServe predictors, and who may scrape metrics.

    Prometheus runs unmeshed in ``monitoring`` (k8s_charts/tenancy.py meshes only the service namespaces),
    so it has no mesh identity: its scrapes are admitted by network, from ``scraper_networks`` (the node
    subnets, where pod addresses live), and only on the ports named ``metrics``.

    vLLM, the one model server behind the ALB, is not here: k8s_charts/vllm.py writes its own Server and
    AuthorizationPolicies (agentic and monitoring identities, the ALB's subnets as a NetworkAuthentication)
    for its pods' port 8000. These rules select other pods and ports, since Linkerd honours only one Server
    per pod and port.
    """
    return (
        ServerAccess(
            namespace=INFERENCE_NAMESPACE,
            server="kserve-predictor",
            pod_selector=KSERVE_PREDICTOR_SELECTOR,
            port=KSERVE_PREDICTOR_PORT,
            # Agents call the models; Prometheus (unmeshed) scrapes /metrics on the same port.
            client_namespaces=(AGENTIC_NAMESPACE,),
            client_networks=tuple(scraper_networks),
        ),
        *(
            ServerAccess(
                namespace=namespace,
                server="metrics",
                pod_selector={},
                port=METRICS_PORT_NAME,
                # Prometheus runs unmeshed: admitted by the network its pods live in.
                client_networks=tuple(scraper_networks),
            )
            for namespace in (INFERENCE_NAMESPACE, AGENTIC_NAMESPACE)
        ),
    )


class MeshPolicyChart(cdk8s.Chart):
    """Define the Server, authentications and AuthorizationPolicies of every mesh rule.

    Args:
        rules: the rules; each (namespace, server) and each (namespace, pod selector, port) once.
    """

    def __init__(self, scope: constructs.Construct, construct_id: str, *, rules: Sequence[ServerAccess]) -> None:
        _check_unique(rules)
        super().__init__(scope, construct_id)
        for rule in rules:
            prefix = f"{rule.namespace}-{rule.server}"
            server = _policy_object(
                self,
                f"{prefix}-server",
                api_version="policy.linkerd.io/v1beta3",
                kind="Server",
                rule=rule,
                name=rule.server,
                spec={
                    "podSelector": {"matchLabels": dict(rule.pod_selector)},
                    "port": rule.port,
                    "proxyProtocol": rule.proxy_protocol,
                },
            )
            if rule.identities:
                self._authorize(
                    rule,
                    server,
                    f"{rule.server}-mesh-clients",
                    kind="MeshTLSAuthentication",
                    spec={"identities": list(rule.identities)},
                )
            if rule.client_networks:
                self._authorize(
                    rule,
                    server,
                    f"{rule.server}-network-clients",
                    kind="NetworkAuthentication",
                    spec={"networks": [{"cidr": cidr} for cidr in rule.client_networks]},
                )

    def _authorize(
        self, rule: ServerAccess, server: cdk8s.ApiObject, name: str, *, kind: str, spec: dict[str, object]
    ) -> None:
        authentication = _policy_object(
            self,
            f"{rule.namespace}-{name}-{kind.lower()}",
            api_version="policy.linkerd.io/v1alpha1",
            kind=kind,
            rule=rule,
            name=name,
            spec=spec,
        )
        policy = _policy_object(
            self,
            f"{rule.namespace}-{name}-authorizationpolicy",
            api_version="policy.linkerd.io/v1alpha1",
            kind="AuthorizationPolicy",
            rule=rule,
            name=name,
            spec={
                "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": rule.server},
                "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": kind, "name": name}],
            },
        )
        # An AuthorizationPolicy whose references are missing is ignored: create what it points at first.
        policy.node.add_dependency(server, authentication)


def _policy_object(
    scope: constructs.Construct,
    construct_id: str,
    *,
    api_version: str,
    kind: str,
    rule: ServerAccess,
    name: str,
    spec: Mapping[str, object],
) -> cdk8s.ApiObject:
    return api_object(
        scope,
        construct_id,
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=rule.namespace,
        labels={"ml-platform/mesh-server": rule.server},
        body={"spec": dict(spec)},
    )


def _check_unique(rules: Sequence[ServerAccess]) -> None:
    names: set[tuple[str, str]] = set()
    targets: dict[tuple[str, tuple[tuple[str, str], ...], int | str], str] = {}
    for rule in rules:
        key = (rule.namespace, rule.server)
        if key in names:
            raise ValueError(f"mesh rule {rule.namespace}/{rule.server} appears twice: merge its clients")
        names.add(key)
        target = (rule.namespace, tuple(sorted(rule.pod_selector.items())), rule.port)
        if target in targets:
            raise ValueError(
                f"mesh rules {rule.namespace}/{targets[target]} and {rule.namespace}/{rule.server} select "
                f"the same pods and port {rule.port}: Linkerd uses only one Server per port, so merge them"
            )
        targets[target] = rule.server
