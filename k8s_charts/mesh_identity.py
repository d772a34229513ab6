"""Define the Linkerd mesh identity: trust anchor and identity issuer renewed by cert-manager, and the bundle.

No certificate or key is in this repository or in any Helm value: cert-manager creates them in the cluster.

::

    Issuer linkerd-self-signed (selfSigned)
      └─ Certificate linkerd-trust-anchor  (root CA, ECDSA P-256, 1 year, renewed 30 days before expiry)
           └─ Issuer linkerd-trust-anchor (CA, signs with Secret linkerd-trust-anchor)
                └─ Certificate linkerd-identity-issuer (intermediate CA, 48h, renewed 25h before expiry)
                     └─ Secret linkerd-identity-issuer ── read by linkerd-identity (identity.issuer.scheme
                                                           kubernetes.io/tls), which signs the workload
                                                           certificates (24h)
    CronJob linkerd-trust-roots-sync (hourly, plus a Job at install)
      Secret linkerd-trust-anchor (tls.crt only) ──► ConfigMap linkerd-identity-trust-roots (ca-bundle.crt)
    Issuer linkerd-self-signed
      └─ Certificate linkerd-webhook-ca ─ Issuer linkerd-webhook-ca (a chain of its own: WEBHOOK_CA)
           └─ Certificates linkerd-proxy-injector, linkerd-sp-validator, linkerd-policy-validator

Everything lives in the ``linkerd`` namespace, which this chart creates. The issuers are namespaced on
purpose: with a ClusterIssuer signing from the trust anchor (upstream's layout, which keeps the anchor in
the ``cert-manager`` namespace), anyone allowed to create a cert-manager Certificate in any namespace
(cert-manager aggregates that right into the ``edit`` and ``admin`` roles) could obtain a CA certificate
under the mesh's trust anchor and mint any workload identity. The price: the anchor's key sits next to
the control plane, where ``linkerd-destination`` may read Secrets (its ``remote-discovery`` Role, for
multicluster). That component can already read the identity issuer's key; the anchor's key would let a
compromised destination controller outlast the issuer's 48h, which is why the key rotation runbook below
exists.

Why a job writes the trust bundle. Linkerd reads the trust roots from the ConfigMap
``linkerd-identity-trust-roots`` (key ``ca-bundle.crt``). The linkerd-control-plane chart writes that
ConfigMap only from the ``identityTrustAnchorsPEM`` value and only when ``identity.externalCA`` is false,
i.e. from a certificate committed to the values; with ``externalCA: true`` it expects the ConfigMap to
exist. Upstream fills it with trust-manager, which is not in the pinned reference. A small CronJob does the
same job here: it reads only ``tls.crt`` of the trust anchor Secret (a volume item; the job's service
account has no access to Secrets) and writes the ConfigMap.

The rotation flow:

1. The identity issuer rotates fully automatically: cert-manager issues a new one (new key) every 23h;
   linkerd-identity watches its Secret and signs new workload certificates with it. Nothing restarts.
2. The trust anchor is renewed by cert-manager 30 days before it expires. Its ``privateKey.rotationPolicy``
   is ``Never``: the renewed certificate keeps the subject and the key. Every proxy keeps the trust
   bundle it was injected with until its pod restarts, and the identity issuer switches to the renewed
   anchor at its next renewal (within 23h); because the renewed anchor has the same key, proxies that
   only know the previous anchor still verify certificates issued under the renewed one (their TLS stack
   anchors trust on the subject and public key). A new key would break every pod that was not restarted
   after the bundle changed, which cert-manager cannot orchestrate.
3. Within an hour of the renewal the job appends the renewed root to the bundle (old and new side by
   side during the overlap) and restarts linkerd-identity, linkerd-destination and linkerd-proxy-injector,
   which read the bundle once at start-up and check the issuer against it (the control plane does check a
   root's validity period, so it must know the renewed root before the old one expires). New pods get
   both roots from the injector.
4. Once the previous root has expired the job drops it from the bundle and restarts the same three
   Deployments. The job never re-adds a root that is not the current anchor, so a root removed by hand
   stays removed.

Rotating the trust anchor's key is a planned operation (Linkerd's "rotating the trust anchor" runbook):
right after an identity issuer renewal, delete the Secret ``linkerd-trust-anchor`` (cert-manager then
issues a new root with a new key), run the sync job (``kubectl -n linkerd create job
--from=cronjob/linkerd-trust-roots-sync rotate``), and restart every meshed workload before the issuer's
next renewal (23h later) signs with the new key; then renew the issuer (``cmctl renew -n linkerd
linkerd-identity-issuer``), restart the workloads again, and remove the old root from the ConfigMap by
hand (or let the job drop it when it expires).

Image choice: ``registry.k8s.io/kubectl`` is built on go-runner (distroless): it has no shell. An init
container copies a statically linked busybox into an emptyDir, and the kubectl container runs the script
with it. Both images are official and pinned to exact tags. There is no openssl in either, so the job
reads a certificate's ``notAfter`` with a short DER walk in awk (``NOT_AFTER_AWK``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import cdk8s
import constructs

from k8s_charts.objects import api_object

LINKERD_NAMESPACE: Final = "linkerd"
# identityTrustDomain of linkerd-control-plane defaults to clusterDomain.
TRUST_DOMAIN: Final = "cluster.local"

SELF_SIGNED_ISSUER: Final = "linkerd-self-signed"
# The trust anchor's Certificate, its Secret and the CA Issuer that signs with it share this name.
TRUST_ANCHOR: Final = "linkerd-trust-anchor"
TRUST_ANCHOR_COMMON_NAME: Final = f"root.{LINKERD_NAMESPACE}.{TRUST_DOMAIN}"
# Certificate and Secret; linkerd-control-plane reads this Secret by name.
IDENTITY_ISSUER: Final = "linkerd-identity-issuer"
IDENTITY_ISSUER_COMMON_NAME: Final = f"identity.{LINKERD_NAMESPACE}.{TRUST_DOMAIN}"
# The ConfigMap and key linkerd-control-plane reads the trust roots from.
TRUST_ROOTS_CONFIG_MAP: Final = "linkerd-identity-trust-roots"
TRUST_ROOTS_KEY: Final = "ca-bundle.crt"

# The API server calls the control plane's admission webhooks over TLS of their own (a chain separate from
# the mesh's). The chart would generate those certificates with a one-year life at every `helm upgrade`,
# so a release left alone for a year stops admitting pods (webhookFailurePolicy Fail in HA). cert-manager
# issues them instead, from a CA of their own, and its cainjector writes the CA into the webhook
# configurations. linkerd-control-plane values key -> Certificate name (Secret ``<name>-k8s-tls``, DNS
# name ``<name>.linkerd.svc``: the names the chart's Deployments and Services use).
WEBHOOK_CA: Final = "linkerd-webhook-ca"
WEBHOOK_CERTIFICATES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "proxyInjector": "linkerd-proxy-injector",
        "profileValidator": "linkerd-sp-validator",
        "policyValidator": "linkerd-policy-validator",
    }
)
# The policy validator (Rust) reads PKCS#8 keys only.
_PKCS8_WEBHOOKS = frozenset({"linkerd-policy-validator"})

# Workload certificates live 24h (linkerd-control-plane identity.issuer.issuanceLifetime). The issuer must
# be renewed more than that before it expires, or the identity controller would sign workload
# certificates that outlive their issuer.
WORKLOAD_CERTIFICATE_HOURS: Final = 24

SYNC_NAME: Final = "linkerd-trust-roots-sync"
# Hourly. Concurrent runs are forbidden, and a run that misses its slot by 10 minutes waits for the next.
SYNC_SCHEDULE: Final = "0 * * * *"
# The control plane Deployments that read the trust bundle once at start-up (linkerd-control-plane names).
CONTROL_PLANE_DEPLOYMENTS: Final = ("linkerd-identity", "linkerd-destination", "linkerd-proxy-injector")
KUBECTL_IMAGE: Final = "registry.k8s.io/kubectl:v1.35.0"
# The musl variant is statically linked, so it runs inside the distroless kubectl image.
BUSYBOX_IMAGE: Final = "docker.io/library/busybox:1.37.0-musl"
# The busybox applets the sync script calls (ash builtins such as test and echo need none).
BUSYBOX_APPLETS: Final = (
    "awk",
    "base64",
    "cat",
    "cp",
    "date",
    "dirname",
    "grep",
    "mktemp",
    "od",
    "rm",
    "sed",
    "sh",
    "tr",
)
# Nobody: the job needs no file ownership, only the API.
SYNC_UID: Final = 65534

_TOOLS_DIR = "/tools"
_SCRIPTS_DIR = "/scripts"
_ANCHOR_DIR = "/var/run/linkerd-trust-anchor"
# kubectl's JSONPath needs the dot in the key escaped.
_JSONPATH_KEY = TRUST_ROOTS_KEY.replace(".", "\\.")

# Print the notAfter of one DER-encoded X.509 certificate as YYYYMMDDHHMMSS (UTC). Input: its bytes as
# decimal numbers (od -An -v -tu1). Certificate and TBSCertificate are SEQUENCEs; in the TBSCertificate
# the optional [0] version, serialNumber, signature and issuer come before validity, a SEQUENCE of
# notBefore and notAfter, each a UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or a GeneralizedTime
# (YYYYMMDDHHMMSSZ).
NOT_AFTER_AWK: Final = r"""
function header(p,   n, j) {
    if (b[p + 1] < 128) { LEN = b[p + 1]; return p + 2 }
    n = b[p + 1] - 128; LEN = 0
    for (j = 0; j < n; j++) LEN = LEN * 256 + b[p + 2 + j]
    return p + 2 + n
}
function skip(p,   start) { start = header(p); return start + LEN }
{ for (i = 1; i <= NF; i++) b[count++] = $i + 0 }
END {
    if (count < 2 || b[0] != 48) exit 1
    p = header(0)
    if (b[p] != 48) exit 1
    p = header(p)
    if (b[p] == 160) p = skip(p)
    p = skip(p); p = skip(p); p = skip(p)
    if (b[p] != 48) exit 1
    p = skip(header(p))
    tag = b[p]; start = header(p); s = ""
    for (i = 0; i < LEN; i++) s = s sprintf("%c", b[start + i])
    if (tag == 23 && LEN == 13) s = (substr(s, 1, 2) < "50" ? "20" : "19") s
    else if (!(tag == 24 && LEN == 15)) exit 1
    if (s !~ /^[0-9]+Z$/) exit 1
    print substr(s, 1, 14)
}
"""

# POSIX sh (busybox ash in the job). The PEM markers are matched without their dashes.
SYNC_SCRIPT: Final = rf"""#!/bin/sh
# Keep ConfigMap {TRUST_ROOTS_CONFIG_MAP} (key {TRUST_ROOTS_KEY}) equal to the current trust anchor followed
# by every earlier root in it that has not expired yet. During a renewal overlap the bundle therefore holds
# the old and the new root; an expired root is dropped. When the bundle changes, the control plane
# Deployments that read it at start-up are restarted.
set -eu
namespace={LINKERD_NAMESPACE}
config_map={TRUST_ROOTS_CONFIG_MAP}
# The anchor file is a setting only so that tests can run the script outside a pod.
anchor=${{TRUST_ANCHOR_FILE:-{_ANCHOR_DIR}/tls.crt}}
here=$(dirname "$0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now=$(date -u +%Y%m%d%H%M%S)

# A certificate's base64 body without marker lines and whitespace, to compare certificates.
body() {{ sed '/CERTIFICATE/d' "$1" | tr -d ' \t\r\n'; }}

# The notAfter of the certificate in a one-certificate PEM file, YYYYMMDDHHMMSS UTC.
not_after() {{
    body "$1" | base64 -d > "$work/der"
    od -An -v -tu1 "$work/der" | awk -f "$here/not-after.awk"
}}

later() {{ awk -v a="$1" -v b="$2" 'BEGIN {{ exit !((a "") > (b "")) }}'; }}

cp "$anchor" "$work/anchor.pem"
if [ "$(grep -c 'BEGIN CERTIFICATE' "$work/anchor.pem")" != 1 ]; then
    echo "$anchor must hold exactly one certificate" >&2
    exit 1
fi
anchor_expiry=$(not_after "$work/anchor.pem") || {{
    echo "cannot read the notAfter of $anchor" >&2
    exit 1
}}
echo "current trust anchor expires at $anchor_expiry UTC"

kubectl -n "$namespace" get configmap "$config_map" --ignore-not-found \
    -o jsonpath='{{.data.{_JSONPATH_KEY}}}' > "$work/old.bundle"
awk -v dir="$work" '
    /BEGIN CERTIFICATE/ {{ n += 1; file = sprintf("%s/old.%03d.pem", dir, n) }}
    file != "" {{ print > file }}
    /END CERTIFICATE/ {{ if (file != "") close(file); file = "" }}
' "$work/old.bundle"

cp "$work/anchor.pem" "$work/new.bundle"
current=$(body "$work/anchor.pem")
for root in "$work"/old.*.pem; do
    [ -e "$root" ] || continue
    [ "$(body "$root")" != "$current" ] || continue
    expiry=$(not_after "$root") || {{
        echo "cannot read the notAfter of a root in $config_map: repair its {TRUST_ROOTS_KEY} by hand" >&2
        exit 1
    }}
    if later "$expiry" "$now"; then
        echo "keeping an earlier root that expires at $expiry UTC"
        cat "$root" >> "$work/new.bundle"
    else
        echo "dropping a root that expired at $expiry UTC"
    fi
done

if [ "$(body "$work/new.bundle")" = "$(body "$work/old.bundle")" ]; then
    echo "trust roots unchanged"
    exit 0
fi
kubectl -n "$namespace" create configmap "$config_map" --from-file={TRUST_ROOTS_KEY}="$work/new.bundle" \
    --dry-run=client -o yaml > "$work/config-map.yaml"
kubectl apply -f "$work/config-map.yaml"
echo "wrote $(grep -c 'BEGIN CERTIFICATE' "$work/new.bundle") root(s) to $config_map"
for deployment in {" ".join(CONTROL_PLANE_DEPLOYMENTS)}; do
    if [ -n "$(kubectl -n "$namespace" get deployment "$deployment" --ignore-not-found -o name)" ]; then
        kubectl -n "$namespace" rollout restart deployment "$deployment"
    fi
done
"""

_DURATION_FIELDS = (
    "trust_anchor_lifetime_hours",
    "trust_anchor_renew_before_hours",
    "issuer_lifetime_hours",
    "issuer_renew_before_hours",
)


class MeshIdentityChart(cdk8s.Chart):
    """Define the ``linkerd`` namespace, the trust anchor, the identity issuer and the trust bundle job.

    The chart needs the cert-manager CRDs and webhook (attach it after the cert-manager release) and must
    be applied before linkerd-control-plane, whose pods mount the issuer Secret and the trust roots.

    Args:
        node_selector: node labels that place the trust-roots job on the system pool.
        trust_anchor_lifetime_hours: validity of the trust anchor. Defaults to one year (8760).
        trust_anchor_renew_before_hours: how long before expiry cert-manager renews the anchor; also how
            long old and new roots overlap in the bundle. Defaults to 30 days (720).
        issuer_lifetime_hours: validity of the identity issuer. Defaults to 48.
        issuer_renew_before_hours: how long before expiry cert-manager renews the issuer; it must exceed
            the 24h workload certificate lifetime. Defaults to 25.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        node_selector: Mapping[str, str],
        trust_anchor_lifetime_hours: int = 8760,
        trust_anchor_renew_before_hours: int = 720,
        issuer_lifetime_hours: int = 48,
        issuer_renew_before_hours: int = 25,
    ) -> None:
        _check_lifetimes(
            trust_anchor_lifetime_hours,
            trust_anchor_renew_before_hours,
            issuer_lifetime_hours,
            issuer_renew_before_hours,
        )
        if not node_selector:
            raise ValueError(
                "node_selector is empty: give the system pool's label (ml-platform/pool: system) for the "
                "trust-roots job"
            )
        super().__init__(scope, construct_id)
        namespace = _api_object(
            self,
            "namespace",
            api_version="v1",
            kind="Namespace",
            name=LINKERD_NAMESPACE,
            namespace=None,
            labels={
                # The labels `linkerd install` puts on its namespace: the control plane finds itself by them,
                # and the admission webhooks (injector, validators) skip it.
                "linkerd.io/is-control-plane": "true",
                "linkerd.io/control-plane-ns": LINKERD_NAMESPACE,
                "config.linkerd.io/admission-webhooks": "disabled",
                # The control plane pods are meshed with the linkerd-init container (NET_ADMIN, NET_RAW),
                # which only the privileged level admits (see platform_constructs/linkerd.py).
                "pod-security.kubernetes.io/enforce": "privileged",
            },
            annotations={"linkerd.io/inject": "disabled"},
        )
        objects = [
            _issuer(self, SELF_SIGNED_ISSUER, {"selfSigned": {}}),
            _certificate(
                self,
                TRUST_ANCHOR,
                issuer=SELF_SIGNED_ISSUER,
                common_name=TRUST_ANCHOR_COMMON_NAME,
                lifetime_hours=trust_anchor_lifetime_hours,
                renew_before_hours=trust_anchor_renew_before_hours,
                # Renewal keeps the key, so pods injected with the previous root keep trusting the renewed
                # one (see the module docstring); a new key is a planned rotation.
                rotation_policy="Never",
                usages=["cert sign", "crl sign"],
            ),
            _issuer(self, TRUST_ANCHOR, {"ca": {"secretName": TRUST_ANCHOR}}),
            _certificate(
                self,
                IDENTITY_ISSUER,
                issuer=TRUST_ANCHOR,
                common_name=IDENTITY_ISSUER_COMMON_NAME,
                lifetime_hours=issuer_lifetime_hours,
                renew_before_hours=issuer_renew_before_hours,
                rotation_policy="Always",
                usages=["cert sign", "crl sign", "server auth", "client auth"],
                dns_names=[IDENTITY_ISSUER_COMMON_NAME],
            ),
            *_webhook_certificates(self),
            *_trust_roots_sync(self, node_selector),
        ]
        for obj in objects:
            # kubectl applies the manifest in order: the namespace must exist first.
            obj.node.add_dependency(namespace)


def _check_lifetimes(
    anchor_lifetime: int, anchor_renew_before: int, issuer_lifetime: int, issuer_renew_before: int
) -> None:
    for name, hours in zip(
        _DURATION_FIELDS,
        (anchor_lifetime, anchor_renew_before, issuer_lifetime, issuer_renew_before),
        strict=True,
    ):
        if hours <= 0:
            raise ValueError(f"{name} is {hours}: give a positive number of hours")
    if anchor_renew_before >= anchor_lifetime:
        raise ValueError(
            f"trust_anchor_renew_before_hours ({anchor_renew_before}) must be below "
            f"trust_anchor_lifetime_hours ({anchor_lifetime}), or cert-manager renews the anchor continuously"
        )
    if issuer_renew_before >= issuer_lifetime:
        raise ValueError(
            f"issuer_renew_before_hours ({issuer_renew_before}) must be below issuer_lifetime_hours "
            f"({issuer_lifetime}), or cert-manager renews the issuer continuously"
        )
    if issuer_renew_before <= WORKLOAD_CERTIFICATE_HOURS:
        raise ValueError(
            f"issuer_renew_before_hours ({issuer_renew_before}) must exceed the "
            f"{WORKLOAD_CERTIFICATE_HOURS}h workload certificate lifetime, or linkerd-identity signs "
            f"certificates that outlive their issuer: use {WORKLOAD_CERTIFICATE_HOURS + 1} or more"
        )
    if issuer_lifetime > anchor_renew_before:
        raise ValueError(
            f"issuer_lifetime_hours ({issuer_lifetime}) exceeds trust_anchor_renew_before_hours "
            f"({anchor_renew_before}): an issuer signed just before the anchor renews would outlive it"
        )


def _api_object(
    scope: constructs.Construct,
    construct_id: str,
    *,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = LINKERD_NAMESPACE,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
) -> cdk8s.ApiObject:
    """Return an object of the mesh identity (``api_object`` with the linkerd namespace as default)."""
    return api_object(
        scope,
        construct_id,
        api_version=api_version,
        kind=kind,
        name=name,
        body=body,
        namespace=namespace,
        labels=labels,
        annotations=annotations,
    )


def _issuer(scope: constructs.Construct, name: str, spec: Mapping[str, Any]) -> cdk8s.ApiObject:
    return _api_object(
        scope,
        f"{name}-issuer",
        api_version="cert-manager.io/v1",
        kind="Issuer",
        name=name,
        body={"spec": spec},
    )


def _certificate(
    scope: constructs.Construct,
    name: str,
    *,
    issuer: str,
    common_name: str,
    lifetime_hours: int,
    renew_before_hours: int,
    rotation_policy: str,
    usages: list[str],
    dns_names: list[str] | None = None,
    secret_name: str | None = None,
    is_ca: bool = True,
    key_encoding: str | None = None,
) -> cdk8s.ApiObject:
    private_key: dict[str, Any] = {"algorithm": "ECDSA", "size": 256, "rotationPolicy": rotation_policy}
    if key_encoding:
        private_key["encoding"] = key_encoding
    spec: dict[str, Any] = {
        "secretName": secret_name or name,
        # Linkerd needs ECDSA P-256 keys.
        "isCA": is_ca,
        "commonName": common_name,
        "duration": f"{lifetime_hours}h",
        "renewBefore": f"{renew_before_hours}h",
        "privateKey": private_key,
        "usages": usages,
        "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": issuer},
    }
    if dns_names:
        spec["dnsNames"] = dns_names
    return _api_object(
        scope,
        f"{name}-certificate",
        api_version="cert-manager.io/v1",
        kind="Certificate",
        name=name,
        body={"spec": spec},
    )


def _webhook_certificates(scope: constructs.Construct) -> list[cdk8s.ApiObject]:
    """Return the webhooks' CA (Certificate and Issuer) and one serving Certificate per webhook."""
    objects = [
        _certificate(
            scope,
            WEBHOOK_CA,
            issuer=SELF_SIGNED_ISSUER,
            common_name=f"webhook.{LINKERD_NAMESPACE}.{TRUST_DOMAIN}",
            lifetime_hours=8760,
            renew_before_hours=720,
            # Keeping the key keeps a serving certificate issued before a CA renewal valid under the renewed
            # CA, whichever of the two the cainjector wrote last.
            rotation_policy="Never",
            usages=["cert sign", "crl sign"],
        ),
        _issuer(scope, WEBHOOK_CA, {"ca": {"secretName": WEBHOOK_CA}}),
    ]
    for name in WEBHOOK_CERTIFICATES.values():
        host = f"{name}.{LINKERD_NAMESPACE}.svc"
        objects.append(
            _certificate(
                scope,
                name,
                issuer=WEBHOOK_CA,
                common_name=host,
                dns_names=[host],
                secret_name=f"{name}-k8s-tls",
                is_ca=False,
                lifetime_hours=720,
                renew_before_hours=240,
                rotation_policy="Always",
                usages=["server auth"],
                key_encoding="PKCS8" if name in _PKCS8_WEBHOOKS else None,
            )
        )
    return objects


def _trust_roots_sync(scope: constructs.Construct, node_selector: Mapping[str, str]) -> list[cdk8s.ApiObject]:
    """Return the service account, RBAC, script, install-time Job and hourly CronJob of the bundle sync."""
    labels = {"app.kubernetes.io/name": SYNC_NAME, "app.kubernetes.io/part-of": "ml-platform"}
    account = _api_object(scope, "sync-service-account", api_version="v1", kind="ServiceAccount", name=SYNC_NAME)
    role = _api_object(
        scope,
        "sync-role",
        api_version="rbac.authorization.k8s.io/v1",
        kind="Role",
        name=SYNC_NAME,
        body={
            "rules": [
                # `kubectl apply` reads and patches the one ConfigMap; RBAC cannot limit create to a name.
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [TRUST_ROOTS_CONFIG_MAP],
                    "verbs": ["get", "patch"],
                },
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
                # `kubectl rollout restart` reads and patches the control plane Deployments.
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments"],
                    "resourceNames": list(CONTROL_PLANE_DEPLOYMENTS),
                    "verbs": ["get", "patch"],
                },
            ]
        },
    )
    binding = _api_object(
        scope,
        "sync-role-binding",
        api_version="rbac.authorization.k8s.io/v1",
        kind="RoleBinding",
        name=SYNC_NAME,
        body={
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SYNC_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": SYNC_NAME, "namespace": LINKERD_NAMESPACE}],
        },
    )
    script = _api_object(
        scope,
        "sync-script",
        api_version="v1",
        kind="ConfigMap",
        name=SYNC_NAME,
        body={"data": {"sync-trust-roots.sh": SYNC_SCRIPT, "not-after.awk": NOT_AFTER_AWK}},
    )
    pod = {"metadata": {"labels": labels}, "spec": sync_pod_spec(node_selector)}
    # Runs once when the chart is applied, so the bundle exists before linkerd-control-plane starts (its pods
    # wait for the ConfigMap; this pod waits for cert-manager to issue the anchor Secret it mounts). A Job's
    # pod template is immutable: the name carries a digest of the template, so a changed template is a new
    # Job (the old one is pruned) instead of a failed apply.
    digest = hashlib.sha256(json.dumps(pod, sort_keys=True).encode()).hexdigest()[:8]
    install_job = _api_object(
        scope,
        "sync-install-job",
        api_version="batch/v1",
        kind="Job",
        name=f"{SYNC_NAME}-{digest}",
        labels=labels,
        body={
            "spec": {
                **_job_spec(active_deadline_seconds=900),
                "ttlSecondsAfterFinished": 86400,
                "template": pod,
            }
        },
    )
    cron_job = _api_object(
        scope,
        "sync-cron-job",
        api_version="batch/v1",
        kind="CronJob",
        name=SYNC_NAME,
        labels=labels,
        body={
            "spec": {
                "schedule": SYNC_SCHEDULE,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 600,
                "successfulJobsHistoryLimit": 1,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": {"labels": labels},
                    "spec": {**_job_spec(active_deadline_seconds=300), "template": pod},
                },
            }
        },
    )
    for dependent in (role, binding, install_job, cron_job):
        dependent.node.add_dependency(account)
    for dependent in (install_job, cron_job):
        dependent.node.add_dependency(binding, script)
    return [account, role, binding, script, install_job, cron_job]


def _job_spec(*, active_deadline_seconds: int) -> dict[str, Any]:
    return {"backoffLimit": 3, "activeDeadlineSeconds": active_deadline_seconds}


def sync_pod_spec(node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Return the pod spec of the trust-roots sync: busybox tools copied in, then the script under kubectl."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    resources = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
    links = " && ".join(f"ln -s busybox {_TOOLS_DIR}/{applet}" for applet in BUSYBOX_APPLETS)
    return {
        "serviceAccountName": SYNC_NAME,
        # kubectl talks to the API with the pod's service account token.
        "automountServiceAccountToken": True,
        "restartPolicy": "Never",
        "nodeSelector": dict(node_selector),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SYNC_UID,
            "runAsGroup": SYNC_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [
            {
                "name": "tools",
                "image": BUSYBOX_IMAGE,
                "command": ["/bin/busybox", "sh", "-c", f"cp /bin/busybox {_TOOLS_DIR}/busybox && {links}"],
                "securityContext": restricted,
                "resources": resources,
                "volumeMounts": [{"name": "tools", "mountPath": _TOOLS_DIR}],
            }
        ],
        "containers": [
            {
                "name": "sync",
                "image": KUBECTL_IMAGE,
                "command": [f"{_TOOLS_DIR}/sh", f"{_SCRIPTS_DIR}/sync-trust-roots.sh"],
                "env": [
                    # kubectl is /usr/local/bin/kubectl in the image; the busybox applets come first.
                    {"name": "PATH", "value": f"{_TOOLS_DIR}:/usr/local/bin:/bin"},
                    # kubectl's discovery cache goes to $HOME/.kube: the writable /tmp.
                    {"name": "HOME", "value": "/tmp"},
                ],
                "securityContext": restricted,
                "resources": resources,
                "volumeMounts": [
                    {"name": "tools", "mountPath": _TOOLS_DIR, "readOnly": True},
                    {"name": "scripts", "mountPath": _SCRIPTS_DIR, "readOnly": True},
                    {"name": "trust-anchor", "mountPath": _ANCHOR_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "tools", "emptyDir": {"sizeLimit": "16Mi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
            {"name": "scripts", "configMap": {"name": SYNC_NAME, "defaultMode": 0o555}},
            # Only the certificate: the kubelet mounts the one key, and the pod never sees tls.key.
            {
                "name": "trust-anchor",
                "secret": {"secretName": TRUST_ANCHOR, "items": [{"key": "tls.crt", "path": "tls.crt"}]},
            },
        ],
    }


def identity_name(namespace: str, service_account: str | None = None) -> str:
    """Return the mesh identity of a service account, or ``*``-prefixed for every account of a namespace."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace):
        raise ValueError(f"namespace {namespace!r} is not a valid Kubernetes namespace name")
    account = "*" if service_account is None else service_account
    return f"{account}.{namespace}.serviceaccount.identity.{LINKERD_NAMESPACE}.{TRUST_DOMAIN}"
