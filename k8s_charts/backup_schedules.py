"""Velero schedules: one ``velero.io/v1 Schedule`` per backed-up namespace.

Each schedule backs up one namespace's objects (and, when asked, snapshots its EBS volumes) into the
default storage location on its own cron, and each backup expires after its TTL. Cluster-scoped objects
come with the namespaced ones that use them (a PVC's PV); everything else cluster-wide (CRDs, classes,
priorities, RBAC) is rebuilt from this app, not restored.

Events are left out: they describe the past of objects that a restore recreates, and Velero's restore
skips them anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import cdk8s
import constructs

SCHEDULE_API_VERSION: Final = "velero.io/v1"
EXCLUDED_RESOURCES: Final = ("events", "events.events.k8s.io")
# Schedule names are <namespace>-<suffix>; backups are named <schedule>-<timestamp> (15 characters).
NAME_SUFFIX: Final = "backup"

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CRON_FIELDS = 5
_TTL = re.compile(r"^\d+h0m0s$")


@dataclass(frozen=True)
class NamespaceSchedule:
    """One namespace's backup: a 5-field cron (UTC), the TTL as a Go duration, and EBS snapshots or not."""

    cron: str
    ttl: str
    snapshot_volumes: bool = True


class BackupSchedulesChart(cdk8s.Chart):
    """Define one Velero Schedule per namespace, in Velero's namespace.

    Args:
        namespace: where Velero runs (the Schedules live there).
        schedules: backed-up namespace -> its schedule.
        storage_location: the BackupStorageLocation backups go to.
        snapshot_location: the VolumeSnapshotLocation of the EBS snapshots.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        namespace: str,
        schedules: Mapping[str, NamespaceSchedule],
        storage_location: str,
        snapshot_location: str,
    ) -> None:
        super().__init__(scope, construct_id)
        if not schedules:
            raise ValueError("schedules is empty: list at least one namespace to back up (or turn backups off)")
        for backed_up, schedule in sorted(schedules.items()):
            _check(backed_up, schedule)
            name = f"{backed_up}-{NAME_SUFFIX}"
            template: dict[str, object] = {
                "includedNamespaces": [backed_up],
                "excludedNamespaceScopedResources": list(EXCLUDED_RESOURCES),
                "storageLocation": storage_location,
                "ttl": schedule.ttl,
                "snapshotVolumes": schedule.snapshot_volumes,
                # EFS volumes are in the AWS Backup plan; file-system backup would copy them file by file.
                "defaultVolumesToFsBackup": False,
            }
            if schedule.snapshot_volumes:
                template["volumeSnapshotLocations"] = [snapshot_location]
            cdk8s.ApiObject(
                self,
                name,
                api_version=SCHEDULE_API_VERSION,
                kind="Schedule",
                metadata=cdk8s.ApiObjectMetadata(
                    name=name,
                    namespace=namespace,
                    labels={"app.kubernetes.io/part-of": "ml-platform-backup", "ml-platform/backed-up": backed_up},
                ),
            ).add_json_patch(
                cdk8s.JsonPatch.add(
                    "/spec",
                    {
                        "schedule": schedule.cron,
                        # Backups outlive their Schedule: deleting a Schedule must not delete the backups.
                        "useOwnerReferencesInBackup": False,
                        "template": template,
                    },
                )
            )


def _check(namespace: str, schedule: NamespaceSchedule) -> None:
    if not _NAMESPACE.match(namespace) or len(f"{namespace}-{NAME_SUFFIX}") > 63 - 15:
        raise ValueError(
            f"namespace {namespace!r}: not a namespace name, or too long for the backup names "
            f"<namespace>-{NAME_SUFFIX}-<timestamp> (at most 63 characters)"
        )
    if len(schedule.cron.split()) != _CRON_FIELDS:
        raise ValueError(f"namespace {namespace}: cron {schedule.cron!r} must have 5 fields, such as '0 2 * * *'")
    if not _TTL.match(schedule.ttl):
        raise ValueError(
            f"namespace {namespace}: ttl {schedule.ttl!r} must be hours as a Go duration, such as 720h0m0s"
        )
