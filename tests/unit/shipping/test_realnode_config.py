"""The real node's configuration, pure: what keeps Pod traffic on the machine, what this
kind of machine needs from containerd and the kubelet, and which mounts get unmounted."""

from __future__ import annotations

import copy
import ipaddress
import tomllib
from pathlib import Path

from mlmodel_operator.realnode import (
    BRIDGE,
    NODE_IP,
    POD_SUBNET,
    check_cni_isolated,
    cni_config,
    containerd_config,
    kubelet_config,
    mounts_under,
    parse_mountinfo,
)

MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
101 22 0:50 / /tmp/mlmn-x/containerd/state/sandboxes/abc/shm rw - tmpfs shm rw
102 22 0:51 / /tmp/mlmn-x/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access rw - tmpfs tmpfs rw
103 22 0:52 / /tmp/mlmn-x/containerd/root/rootfs rw - overlay overlay rw
104 22 0:53 / /tmp/mlmn-xy/other rw - tmpfs tmpfs rw
105 22 0:54 / /tmp/mlmn-x/with\\040space rw - tmpfs tmpfs rw
"""


def test_the_pod_network_has_no_way_off_the_machine() -> None:
    config = cni_config(Path("/tmp/ipam"))
    assert check_cni_isolated(config) == []
    (bridge,) = config["plugins"]
    assert bridge["bridge"] == BRIDGE
    assert bridge["ipMasq"] is False and bridge["isDefaultGateway"] is False
    routes = [ipaddress.ip_network(r["dst"]) for r in bridge["ipam"]["routes"]]
    assert all(r.prefixlen > 0 for r in routes)
    (subnet,) = bridge["ipam"]["ranges"][0]
    assert ipaddress.ip_address(subnet["gateway"]) in POD_SUBNET
    assert subnet["gateway"] == NODE_IP


def test_a_masquerade_or_a_default_route_is_named() -> None:
    config = cni_config(Path("/tmp/ipam"))
    leaky = copy.deepcopy(config)
    leaky["plugins"][0]["ipMasq"] = True
    leaky["plugins"][0]["ipam"]["routes"].append({"dst": "0.0.0.0/0"})
    problems = check_cni_isolated(leaky)
    assert any("masquerades" in p for p in problems)
    assert any("0.0.0.0/0 is a default route" in p for p in problems)
    gateway = copy.deepcopy(config)
    gateway["plugins"][0]["isDefaultGateway"] = True
    assert check_cni_isolated(gateway) == ["plugin 'bridge' sets a default route"]


def test_containerd_config_fits_this_kind_of_machine() -> None:
    text = containerd_config(Path("/tmp/n/c"), "localhost/mlmodel/pause:1.0", Path("/tmp/n/cni"))
    config = tomllib.loads(text)
    assert config["version"] == 3
    assert config["grpc"]["address"] == "/tmp/n/c/containerd.sock"
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE
    assert runtime["disable_apparmor"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert runtime["cni"]["conf_dir"] == "/tmp/n/cni"
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/mlmodel/pause:1.0"


def test_kubelet_config_serves_on_the_bridge_only_and_keeps_imported_images() -> None:
    config = kubelet_config(
        workdir=Path("/tmp/n"),
        runtime_socket=Path("/tmp/n/c.sock"),
        ca_file=Path("/ca"),
        tls_cert=Path("/crt"),
        tls_key=Path("/key"),
        port=10250,
        healthz_port=10248,
        resolv_conf=Path("/tmp/n/resolv.conf"),
    )
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["oomScoreAdj"] == 0
    assert config["address"] == NODE_IP and config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["clusterDNS"] == [NODE_IP]
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["containerRuntimeEndpoint"] == "unix:///tmp/n/c.sock"


def test_mounts_under_a_directory_deepest_first() -> None:
    assert "/tmp/mlmn-x/with space" in parse_mountinfo(MOUNTINFO)
    found = mounts_under(Path("/tmp/mlmn-x"), MOUNTINFO)
    assert "/tmp/mlmn-xy/other" not in found and "/" not in found
    assert set(found) == {
        "/tmp/mlmn-x/containerd/state/sandboxes/abc/shm",
        "/tmp/mlmn-x/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access",
        "/tmp/mlmn-x/containerd/root/rootfs",
        "/tmp/mlmn-x/with space",
    }
    depths = [p.count("/") for p in found]
    assert depths == sorted(depths, reverse=True)
