"""Fixtures of the real-node tier: the project's images, and a control plane with a real
node (containerd, runc, kubelet, kube-proxy) whose Pods run those images.

The node needs root and changes the machine (a bridge, iptables chains, sysctls), all
undone at the end; a machine where it cannot run fails these tests, it never skips them.

One node, with one installation of the project on it (CRDs, the operator from its image,
MinIO), serves every module that asks for ``real_node``: bringing both up takes minutes.
Each module keeps its models in its own namespace. The node is torn down after the last
module that uses it (so that ``test_real_node_teardown.py``, which runs its own node,
finds the machine free), or at the latest when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shared_node import Installation, SharedNode

from mlmodel_operator.nodeimages import ImageArchive, build_image_archives
from mlmodel_operator.realnode import RealNode


@pytest.fixture(scope="session")
def node_images() -> dict[str, ImageArchive]:
    """The operator, serving, MinIO and pause images, built once (cached by their inputs)."""
    return build_image_archives()


@pytest.fixture(scope="session")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedNode]:
    """The session's real node and installation, made when a module first asks."""
    shared = SharedNode(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.down()


@pytest.fixture(scope="module")
def real_node(
    shared_node: SharedNode,
    node_images: dict[str, ImageArchive],
    request: pytest.FixtureRequest,
) -> Iterator[RealNode]:
    """A control plane and one real node with the project's images imported (shared
    with the session's other modules; down after the last of them)."""
    yield shared_node.up(node_images)
    items = request.session.items
    here = [i for i, item in enumerate(items) if item.path == request.path]
    later = items[max(here) + 1 :] if here else []
    if not any("real_node" in getattr(item, "fixturenames", ()) for item in later):
        shared_node.down()


@pytest.fixture(scope="module")
def installation(
    real_node: RealNode, shared_node: SharedNode, node_images: dict[str, ImageArchive]
) -> Installation:
    """The project installed on the shared node, once (``realstack.install``)."""
    return shared_node.install(node_images)


@pytest.fixture
def no_shared_node(shared_node: SharedNode) -> None:
    """The machine without the shared node (a test that brings up its own)."""
    shared_node.down()
