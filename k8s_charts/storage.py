"""Storage classes: encrypted gp3 block volumes (default) and shared EFS volumes (ReadWriteMany)."""

from __future__ import annotations

from typing import Final

import cdk8s
import constructs

GP3: Final = "gp3"
EFS: Final = "efs"


class StorageClassesChart(cdk8s.Chart):
    """Define the cluster's storage classes.

    Args:
        file_system_id: the DataStack's EFS file system; without one, no EFS class is defined.
    """

    def __init__(self, scope: constructs.Construct, construct_id: str, *, file_system_id: str | None) -> None:
        super().__init__(scope, construct_id)
        cdk8s.ApiObject(
            self,
            "gp3",
            api_version="storage.k8s.io/v1",
            kind="StorageClass",
            metadata=cdk8s.ApiObjectMetadata(
                name=GP3, annotations={"storageclass.kubernetes.io/is-default-class": "true"}
            ),
        ).add_json_patch(
            cdk8s.JsonPatch.add("/provisioner", "ebs.csi.aws.com"),
            # The tag puts every provisioned volume into the AWS Backup plan's EBS selection (BackupStack).
            cdk8s.JsonPatch.add(
                "/parameters",
                {"type": "gp3", "encrypted": "true", "fsType": "ext4", "tagSpecification_1": "ml-platform/backup=true"},
            ),
            # Bind where the pod lands, so the volume is created in the pod's zone.
            cdk8s.JsonPatch.add("/volumeBindingMode", "WaitForFirstConsumer"),
            cdk8s.JsonPatch.add("/allowVolumeExpansion", True),
            cdk8s.JsonPatch.add("/reclaimPolicy", "Delete"),
        )
        if file_system_id:
            cdk8s.ApiObject(
                self,
                "efs",
                api_version="storage.k8s.io/v1",
                kind="StorageClass",
                metadata=cdk8s.ApiObjectMetadata(name=EFS),
            ).add_json_patch(
                cdk8s.JsonPatch.add("/provisioner", "efs.csi.aws.com"),
                # One access point per volume, under /dynamic, owned by the pod's uid (1000 in platform images).
                cdk8s.JsonPatch.add(
                    "/parameters",
                    {
                        "provisioningMode": "efs-ap",
                        "fileSystemId": file_system_id,
                        "directoryPerms": "750",
                        "uid": "1000",
                        "gid": "1000",
                        "basePath": "/dynamic",
                    },
                ),
                # Shared datasets and checkpoints outlive the claims that mount them.
                cdk8s.JsonPatch.add("/reclaimPolicy", "Retain"),
                cdk8s.JsonPatch.add("/volumeBindingMode", "Immediate"),
            )
