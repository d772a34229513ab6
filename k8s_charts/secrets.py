"""Define the secrets path: AWS Secrets Manager -> External Secrets Operator -> Kubernetes Secrets.

No secret value ever appears in a manifest or a template. A secret lives in Secrets Manager (generated
there by the DataStack, or put there by an operator under ``<project>-<stage>/``); an ``ExternalSecret``
in the consuming namespace names it, and the External Secrets Operator (ESO) copies its value into a
Kubernetes Secret that the pods reference.

``SecretStoreChart`` defines the one ``ClusterSecretStore`` (``external-secrets.io/v1``, the only
version ESO v2.9.0 serves) that reads Secrets Manager in the stage's region. It carries no credentials:
without an ``auth`` block, ESO's AWS provider uses the SDK's default chain, which resolves the EKS Pod
Identity role of the controller's service account (``platform_constructs/external_secrets.py``). That role
may read only this stage's secrets, and the store's ``conditions`` limit which namespaces may use it.

``external_secret`` is the function every chart calls to bring one secret into its namespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import cdk8s
import constructs

API_VERSION: Final = "external-secrets.io/v1"
CLUSTER_SECRET_STORE: Final = "aws-secrets-manager"
# Namespaces whose workloads hold credentials (database, cache, model and tracking API keys). Research and
# development namespaces run arbitrary code and may not read them.
# Namespaces whose workloads read application secrets: the services, Grafana (monitoring), W&B (training).
SECRET_NAMESPACES: Final = ("inference", "agentic", "mlops", "monitoring", "training")
DEFAULT_REFRESH: Final = "1h"
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class SecretStoreChart(cdk8s.Chart):
    """Define the ClusterSecretStore backed by AWS Secrets Manager.

    Args:
        region: the Secrets Manager region (the stage's).
        namespaces: namespaces allowed to use the store. Defaults to ``SECRET_NAMESPACES``.
        name: the store's name. Defaults to ``aws-secrets-manager``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        region: str,
        namespaces: Sequence[str] = SECRET_NAMESPACES,
        name: str = CLUSTER_SECRET_STORE,
    ) -> None:
        super().__init__(scope, construct_id)
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
            raise ValueError(f"region {region!r} is not an AWS region name such as us-east-1")
        if not namespaces:
            raise ValueError("namespaces is empty: a store no namespace may use serves no secret")
        store = cdk8s.ApiObject(
            self,
            "cluster-secret-store",
            api_version=API_VERSION,
            kind="ClusterSecretStore",
            metadata=cdk8s.ApiObjectMetadata(name=name),
        )
        store.add_json_patch(
            cdk8s.JsonPatch.add(
                "/spec",
                {
                    # No auth block: the controller's EKS Pod Identity role (no static keys anywhere).
                    "provider": {"aws": {"service": "SecretsManager", "region": region}},
                    "conditions": [{"namespaces": list(namespaces)}],
                    "refreshInterval": DEFAULT_REFRESH,
                },
            )
        )


def external_secret(
    scope: constructs.Construct,
    construct_id: str,
    *,
    name: str,
    namespace: str,
    secret_arn_or_name: str,
    keys: Mapping[str, str | None],
    store: str = CLUSTER_SECRET_STORE,
    refresh_interval: str = DEFAULT_REFRESH,
) -> cdk8s.ApiObject:
    """Return an ExternalSecret that keeps the Kubernetes Secret ``namespace/name`` in sync with Secrets Manager.

    Args:
        name: the Kubernetes Secret (and the ExternalSecret) to create.
        namespace: where the Secret is needed.
        secret_arn_or_name: the Secrets Manager secret: its ARN (may be a deploy-time token) or its name.
        keys: Secret key -> the JSON property of the secret value to put there, or None for the whole value
            (a plain-string secret such as a cache AUTH token).
        store: the ClusterSecretStore to read through. Defaults to ``aws-secrets-manager``.
        refresh_interval: how often ESO re-reads the secret (rotation reaches pods within it). Defaults to 1h.
    """
    if not _NAME.match(name):
        raise ValueError(f"secret name {name!r} is not a Kubernetes name (lowercase alphanumerics, '-' and '.')")
    if not keys:
        raise ValueError(f"external secret {namespace}/{name}: keys is empty, the Secret would hold nothing")
    if not secret_arn_or_name:
        raise ValueError(f"external secret {namespace}/{name}: secret_arn_or_name is empty")
    data: list[dict[str, Any]] = []
    for key, prop in keys.items():
        if not _SECRET_KEY.match(key):
            raise ValueError(f"external secret {namespace}/{name}: {key!r} is not a Secret key (letters, digits, -._)")
        remote: dict[str, Any] = {"key": secret_arn_or_name}
        if prop is not None:
            remote["property"] = prop
        data.append({"secretKey": key, "remoteRef": remote})
    obj = cdk8s.ApiObject(
        scope,
        construct_id,
        api_version=API_VERSION,
        kind="ExternalSecret",
        metadata=cdk8s.ApiObjectMetadata(name=name, namespace=namespace),
    )
    obj.add_json_patch(
        cdk8s.JsonPatch.add(
            "/spec",
            {
                "refreshInterval": refresh_interval,
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": store},
                # Owner: the Secret is deleted with the ExternalSecret, so no orphaned copy outlives it.
                "target": {"name": name, "creationPolicy": "Owner"},
                "data": data,
            },
        )
    )
    return obj
