"""Fixtures of the real-node tier: the project's images, and a control plane with a real
node (containerd, runc, kubelet, kube-proxy) whose Pods run those images.

The node needs root and changes the machine (a bridge, iptables chains, sysctls), all
undone at the end; a machine where it cannot run fails these tests, it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlmodel_operator.nodeimages import ImageArchive, build_image_archives
from mlmodel_operator.realnode import RealNode


@pytest.fixture(scope="session")
def node_images() -> dict[str, ImageArchive]:
    """The operator, serving, MinIO and pause images, built once (cached by their inputs)."""
    return build_image_archives()


@pytest.fixture(scope="module")
def real_node(
    node_images: dict[str, ImageArchive], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealNode]:
    """A control plane and one real node with the project's images imported."""
    with RealNode.up(
        sandbox_image=node_images["pause"].name,
        images=[image.path for image in node_images.values()],
        cluster_dir=tmp_path_factory.mktemp("real-cluster"),
    ) as node:
        yield node
