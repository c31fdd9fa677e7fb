"""One real node and one installation of the project on it, shared by the modules of the
real-node tier (conftest.py makes and ends it): bringing both up takes minutes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlmodel_operator import realstack
from mlmodel_operator.localcluster import LocalCluster
from mlmodel_operator.nodeimages import ImageArchive
from mlmodel_operator.realnode import RealNode


@dataclass
class Installation:
    """The project as a user installs it on the shared node (``realstack.install``):
    CRDs, the operator (two peering replicas) and MinIO with its buckets and keys."""

    cluster: LocalCluster
    minio: Any  # minio.Minio on the Service's ClusterIP, as MinIO's root user
    workdir: Path


class SharedNode:
    """The session's real node and installation, made when first asked for."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.node: RealNode | None = None
        self.installation: Installation | None = None
        self._exit = contextlib.ExitStack()

    def up(self, images: dict[str, ImageArchive]) -> RealNode:
        if self.node is None:
            self.node = self._exit.enter_context(
                RealNode.up(
                    sandbox_image=images["pause"].name,
                    images=[image.path for image in images.values()],
                    cluster_dir=self.tmp.mktemp("real-cluster"),
                )
            )
        return self.node

    def install(self, images: dict[str, ImageArchive]) -> Installation:
        if self.installation is None:
            cluster = self.up(images).api_cluster
            workdir = self.tmp.mktemp("real-install")
            realstack.install(cluster, images["minio"].name, workdir)
            self.installation = Installation(cluster, realstack.minio_client(cluster), workdir)
        return self.installation

    def down(self) -> None:
        """Tear the node down (every change to the machine undone); a no-op if none runs."""
        self.node, self.installation = None, None
        self._exit.close()
