"""A real node beside the local control plane: containerd, runc, kubelet and kube-proxy.

kwok's nodes mark every Pod Ready whatever it holds; this one runs the Pods for real,
from images built out of the project's own Dockerfiles (``nodeimages.py``). It needs
root, and it changes the machine only in ways it undoes on :meth:`RealNode.stop`:

- a bridge (``mlmodel0``, 10.245.0.1/24) for the Pod network, with no default route in
  the Pods, no masquerade, and an iptables chain that drops anything forwarded between
  the bridge and any other interface: nothing a Pod sends leaves the machine;
- ``net.ipv4.ip_forward`` (and the bridge netfilter switch), put back as they were;
- the iptables chains kube-proxy and the kubelet make, removed at the end;
- mounts and cgroups that Pods need, all under its own directory or named ``kubepods``;
- CoreDNS on the bridge address, answering ``cluster.local`` only (nothing forwarded).

A state file (``/run/mlmodel-realnode.json``) records what was set up, so a harness
killed before it could clean up is cleaned up by the next start (or by
``python -m mlmodel_operator.realnode cleanup``). The facts behind the settings are in
docs/real-node.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .localcluster import (
    SERVICE_CLUSTER_IP_RANGE,
    HarnessError,
    LocalCluster,
    Process,
    _start,
    binary,
    cache_dir,
    free_port,
    http_ok,
    issue_certificate,
    wait_until,
)

BRIDGE = "mlmodel0"
POD_SUBNET = ipaddress.ip_network("10.245.0.0/24")
NODE_IP = "10.245.0.1"  # the bridge's own address: the node, the apiserver and the DNS
FORWARD_CHAIN = "MLMODEL-NODE-FORWARD"
STATE_FILE = Path("/run/mlmodel-realnode.json")
LOCK_FILE = Path("/run/mlmodel-realnode.lock")
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
# Chains the kubelet makes and `kube-proxy --cleanup` leaves (REAL_NODE.md).
KUBELET_CHAINS = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"),
}


# --------------------------------------------------------------------------- pure config


def containerd_config(root: Path, sandbox_image: str, cni_conf_dir: Path) -> str:
    """containerd 2.x configuration (TOML) for a cgroupfs node on this kind of machine."""
    return f"""version = 3
root = "{root / "root"}"
state = "{root / "state"}"

[grpc]
  address = "{root / "containerd.sock"}"

[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # no AppArmor in this kernel
  disable_apparmor = true
  # no CAP_SYS_RESOURCE in the bounding set: nothing may lower oom_score_adj
  restrict_oom_score_adj = true
  # Pods' network namespaces under our state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
"""


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """The Pod network: our bridge, addresses from POD_SUBNET, and only two routes.

    No default route and no masquerade: a Pod reaches other Pods, the node address
    (apiserver, DNS) and the Service range through the node, and nothing else.
    """
    return {
        "cniVersion": "1.0.0",
        "name": "mlmodel-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(POD_SUBNET), "gateway": NODE_IP}]],
                    "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE, "gw": NODE_IP}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def check_cni_isolated(config: dict[str, Any]) -> list[str]:
    """What in a CNI config would let Pod traffic leave the machine (empty: nothing)."""
    problems = []
    for plugin in config.get("plugins", []):
        if plugin.get("ipMasq"):
            problems.append(f"plugin {plugin.get('type')!r} masquerades (ipMasq: true)")
        if plugin.get("isDefaultGateway"):
            problems.append(f"plugin {plugin.get('type')!r} sets a default route")
        for route in plugin.get("ipam", {}).get("routes", []):
            if ipaddress.ip_network(route["dst"]).prefixlen == 0:
                problems.append(f"route {route['dst']} is a default route")
    return problems


def kubelet_config(
    *,
    workdir: Path,
    runtime_socket: Path,
    ca_file: Path,
    tls_cert: Path,
    tls_key: Path,
    port: int,
    healthz_port: int,
    resolv_conf: Path,
) -> dict[str, Any]:
    """KubeletConfiguration for a cgroup v1 machine without systemd or swap accounting."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # 1.35 refuses cgroup v1 unless told
        "cgroupDriver": "cgroupfs",  # no systemd as PID 1
        "failSwapOn": False,
        "oomScoreAdj": 0,  # nothing here may lower oom_score_adj
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(workdir / "pod-logs"),
        "volumePluginDir": str(workdir / "volume-plugins"),
        "staticPodPath": "",
        "maxPods": 110,
        "serializeImagePulls": False,
        "registerNode": True,
        # the images are imported, never pulled: never garbage-collect them, and never
        # evict Pods for a full disk of a machine shared with builds
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }  # fmt: skip


def parse_mountinfo(text: str) -> list[str]:
    """Mount points listed in /proc/self/mountinfo (the 5th field, octal escapes undone)."""
    points = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 4:
            points.append(parts[4].encode().decode("unicode_escape"))
    return points


def mounts_under(directory: Path, mountinfo: str) -> list[str]:
    """Mount points at or below ``directory``, deepest first (the order to unmount)."""
    root = str(directory).rstrip("/")
    found = [p for p in parse_mountinfo(mountinfo) if p == root or p.startswith(root + "/")]
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


# --------------------------------------------------------------------------- host calls


def _run(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise HarnessError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value)


def _iptables_chains(table: str, binary_name: str = "iptables") -> set[str]:
    result = _run(binary_name, "-w", "-t", table, "-S", check=False)
    return {line.split()[1] for line in result.stdout.splitlines() if line.startswith("-N ")}


def _delete_chain(table: str, chain: str, binary_name: str = "iptables") -> None:
    """Remove every jump to ``chain`` from the table, then flush and delete it."""
    if chain not in _iptables_chains(table, binary_name):
        return
    listing = _run(binary_name, "-w", "-t", table, "-S", check=False).stdout.splitlines()
    for line in listing:
        parts = line.split()
        if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] == chain:
            _run(binary_name, "-w", "-t", table, "-D", *parts[1:], check=False)
    _run(binary_name, "-w", "-t", table, "-F", chain, check=False)
    _run(binary_name, "-w", "-t", table, "-X", chain, check=False)


def _bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE).exists()


def _pids_of(predicate: Callable[[list[str]], bool]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if predicate([part.decode(errors="replace") for part in cmdline if part]):
            pids.append(int(entry.name))
    return pids


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_dirs(name: str) -> list[Path]:
    """``/sys/fs/cgroup/<controller>/<name>`` for every mounted v1 controller."""
    base = Path("/sys/fs/cgroup")
    if not base.is_dir():
        return []
    return [d / name for d in base.iterdir() if (d / name).is_dir()]


def _remove_cgroup_tree(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (cgroupfs only allows rmdir)."""
    dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for d in [*dirs, path]:
        with contextlib.suppress(OSError):
            d.rmdir()


# --------------------------------------------------------------------------- teardown


@dataclass
class NodeState:
    """What one real node set up on the machine, written before each change it makes."""

    workdir: str
    sysctls: dict[str, str | None] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def save(self) -> None:
        STATE_FILE.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls) -> NodeState | None:
        try:
            data = json.loads(STATE_FILE.read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)


def teardown(state: NodeState, log: list[str] | None = None) -> list[str]:
    """Undo everything a node set up (idempotent). Returns what was left and not removed.

    Order (REAL_NODE.md): containers and shims, kube-proxy's and the kubelet's chains,
    our forward chain, mounts under the node's directory, the kubepods cgroups, the
    bridge, and the sysctls as they were.
    """
    notes = log if log is not None else []
    workdir = Path(state.workdir)
    _kill_pids([p for p in state.pids if _ours(p)])
    shims = _shims(workdir)
    # container processes: anything whose cgroup is under kubepods
    in_pods = _pids_in_cgroup("kubepods")
    _kill_pids(shims + in_pods)
    if shims or in_pods:
        notes.append(f"killed {len(shims)} shims and {len(in_pods)} container processes")
        time.sleep(0.5)
    with contextlib.suppress(Exception):
        kube_proxy = binary("kubernetes", "kube-proxy")
        _run(str(kube_proxy), "--cleanup", check=False, timeout=60)
    for iptables in ("iptables", "ip6tables"):
        if shutil.which(iptables) is None:
            continue
        for table, chains in KUBELET_CHAINS.items():
            for chain in chains:
                _delete_chain(table, chain, iptables)
    _delete_chain("filter", FORWARD_CHAIN)
    for point in mounts_under(workdir, Path("/proc/self/mountinfo").read_text()):
        result = _run("umount", "-l", point, check=False)
        if result.returncode != 0:
            notes.append(f"umount {point}: {result.stderr.strip()}")
    for name in ("kubepods", "k8s.io"):
        for cgroup in _cgroup_dirs(name):
            _remove_cgroup_tree(cgroup)
    if _bridge_exists():
        _run("ip", "link", "delete", BRIDGE, check=False)
    _run("ip", "route", "del", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, check=False)
    for name, value in state.sysctls.items():
        if value is not None:
            _write_sysctl(name, value)
    return leftovers(state)


def _shims(workdir: Path) -> list[int]:
    """containerd's shims of the node in ``workdir``: they outlive containerd (their own
    sessions), so they are found by the containerd socket address they were given."""
    socket_path = str(workdir / "containerd" / "containerd.sock")
    return _pids_of(
        lambda argv: (
            bool(argv) and "containerd-shim" in argv[0] and any(socket_path in a for a in argv)
        )
    )


def _ours(pid: int) -> bool:
    """Whether ``pid`` still runs one of the harness's binaries (not a reused pid)."""
    try:
        argv0 = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return argv0.decode(errors="replace").startswith(str(cache_dir()))


def _pids_in_cgroup(name: str) -> list[int]:
    pids: set[int] = set()
    for cgroup in _cgroup_dirs(name):
        for procs in cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return sorted(pids)


def leftovers(state: NodeState) -> list[str]:
    """What of a node is still on the machine: empty after a complete teardown."""
    found = []
    workdir = Path(state.workdir)
    alive = [p for p in state.pids if _ours(p)]
    if alive:
        found.append(f"processes still running: {alive}")
    shims = _shims(workdir)
    if shims:
        found.append(f"shims still running: {shims}")
    if _bridge_exists():
        found.append(f"bridge {BRIDGE} still exists")
    if FORWARD_CHAIN in _iptables_chains("filter"):
        found.append(f"iptables chain {FORWARD_CHAIN} still exists")
    for iptables in ("iptables", "ip6tables"):
        if shutil.which(iptables) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            kube = sorted(c for c in _iptables_chains(table, iptables) if c.startswith("KUBE-"))
            if kube:
                found.append(f"{iptables} {table} chains still exist: {kube}")
    mounts = mounts_under(workdir, Path("/proc/self/mountinfo").read_text())
    if mounts:
        found.append(f"mounts still under {workdir}: {mounts[:5]}")
    for name in ("kubepods", "k8s.io"):
        cgroups = _cgroup_dirs(name)
        if cgroups:
            found.append(f"cgroups still exist: {[str(c) for c in cgroups]}")
    for name, value in state.sysctls.items():
        now = _read_sysctl(name)
        if value is not None and now != value:
            found.append(f"sysctl {name} is {now}, was {value}")
    return found


def cleanup_previous() -> list[str]:
    """Tear down what a killed harness left (from its state file); notes what was done."""
    state = NodeState.load()
    notes: list[str] = []
    if state is None:
        return notes
    notes.append(f"cleaning up a previous real node ({state.workdir})")
    remaining = teardown(state, notes)
    if remaining:
        raise HarnessError("a previous real node could not be cleaned up: " + "; ".join(remaining))
    STATE_FILE.unlink(missing_ok=True)
    shutil.rmtree(state.workdir, ignore_errors=True)
    return notes


# --------------------------------------------------------------------------- the node


@dataclass
class RealNode:
    """A local control plane with one real node: ``with RealNode.up(sandbox_image, images)``.

    Order matters: the bridge comes first (the apiserver listens on its address), then
    the control plane, then containerd (with ``images``, docker-archive tarballs, imported;
    ``sandbox_image`` must be among them), CoreDNS, the kubelet and kube-proxy. Teardown
    runs backwards, Pods first, while the apiserver still answers.
    """

    workdir: Path
    sandbox_image: str
    images: Sequence[Path] = ()
    name: str = "mlmodel-node-0"
    cluster: LocalCluster | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    state: NodeState | None = None
    _lock: Any = None

    @classmethod
    @contextlib.contextmanager
    def up(
        cls,
        sandbox_image: str,
        images: Sequence[Path] = (),
        cluster_dir: Path | None = None,
        timeout: float = 120.0,
    ) -> Iterator[RealNode]:
        # a short path: containerd's shim sockets must fit in 108 bytes
        workdir = Path(tempfile.mkdtemp(prefix="mlmn-", dir="/tmp"))
        node = cls(workdir, sandbox_image, images)
        remaining: list[str] = []
        try:
            node.start_network()
            cluster_dir = cluster_dir or workdir / "cluster"
            with LocalCluster.up(cluster_dir, nodes=0, node_ip=NODE_IP) as cluster:
                node.cluster = cluster
                node.track(cluster.processes.values())
                try:
                    node.start_runtime(timeout)
                    yield node
                finally:
                    node.stop_runtime()
        finally:
            remaining = node.stop()
            if not os.environ.get("MLMODEL_KEEP_CLUSTER_DIR") and not remaining:
                shutil.rmtree(workdir, ignore_errors=True)
        if remaining:
            raise HarnessError("the real node left things behind: " + "; ".join(remaining))

    @property
    def api_cluster(self) -> LocalCluster:
        if self.cluster is None:
            raise HarnessError("the real node has no control plane yet")
        return self.cluster

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def runtime_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    # -- start

    def start_network(self) -> None:
        """Take the machine-wide lock, clean up a killed run's leftovers, make the bridge."""
        if os.geteuid() != 0:
            raise HarnessError("a real node needs root (network, mounts, cgroups)")
        self._check_tools()
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        self._lock = LOCK_FILE.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HarnessError(f"another real node runs on this machine ({LOCK_FILE})") from None
        for note in cleanup_previous():
            print(f"realnode: {note}", file=sys.stderr)
        self.state = NodeState(str(self.workdir))
        self.state.save()
        self._start_network()

    def start_runtime(self, timeout: float = 120.0) -> None:
        """containerd with the images, CoreDNS, the kubelet (until Ready) and kube-proxy."""
        if self.api_cluster.node_ip != NODE_IP:
            raise HarnessError(f"the cluster must run with node_ip={NODE_IP} for a real node")
        self._start_containerd(timeout)
        self._import_images(timeout)
        self._start_coredns(timeout)
        self._start_kubelet(timeout)
        self._start_kube_proxy(timeout)

    def _check_tools(self) -> None:
        missing = [t for t in ("runc", "iptables", "ip", "conntrack") if shutil.which(t) is None]
        missing += [str(p) for p in (CNI_BIN_DIR / "bridge", CNI_BIN_DIR / "host-local")
                    if not p.exists()]  # fmt: skip
        if missing:
            raise HarnessError(
                f"the real node needs {', '.join(missing)}: run `make tools` "
                "(hack/build-tools.sh debian)"
            )

    def check_isolated(self) -> None:
        """Refuse to start Pods unless their traffic cannot leave the machine."""
        problems = check_cni_isolated(json.loads(self._cni_path().read_text()))
        rules = _run("iptables", "-w", "-S", "FORWARD").stdout.splitlines()
        jumps = [r for r in rules if r.startswith("-A FORWARD")]
        if not jumps or f"-j {FORWARD_CHAIN}" not in jumps[0]:
            problems.append(f"FORWARD does not start with the jump to {FORWARD_CHAIN}")
        chain = _run("iptables", "-w", "-S", FORWARD_CHAIN).stdout
        for rule in (f"-i {BRIDGE} ! -o {BRIDGE} -j DROP", f"! -i {BRIDGE} -o {BRIDGE} -j DROP"):
            if rule not in chain:
                problems.append(f"{FORWARD_CHAIN} lacks '{rule}'")
        nat = _run("iptables", "-w", "-t", "nat", "-S", "POSTROUTING").stdout
        for line in nat.splitlines():
            if "MASQUERADE" in line and str(POD_SUBNET) in line:
                problems.append(f"Pod traffic is masqueraded: {line}")
        if problems:
            raise HarnessError("the Pod network is not isolated: " + "; ".join(problems))

    def _cni_path(self) -> Path:
        return self.workdir / "cni" / "net.d" / "10-mlmodel.conflist"

    def _start_network(self) -> None:
        assert self.state is not None
        self.state.sysctls = {name: _read_sysctl(name) for name in SYSCTLS}
        self.state.save()
        if _bridge_exists():
            raise HarnessError(f"bridge {BRIDGE} already exists: another node, or a leftover")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/{POD_SUBNET.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # host -> ClusterIP: the route is chosen before kube-proxy rewrites the address
        _run("ip", "route", "replace", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, "src", NODE_IP)
        _run("iptables", "-w", "-N", FORWARD_CHAIN)
        _run("iptables", "-w", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        _run("iptables", "-w", "-A", FORWARD_CHAIN, "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP")
        _run("iptables", "-w", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)
        # Pod -> Service -> Pod on the same bridge crosses FORWARD and needs conntrack
        _write_sysctl("net/ipv4/ip_forward", "1")
        _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        cni = self._cni_path()
        cni.parent.mkdir(parents=True, exist_ok=True)
        cni.write_text(json.dumps(cni_config(self.workdir / "cni" / "ipam"), indent=2))
        self.check_isolated()

    def track(self, processes: Iterable[Process]) -> None:
        """Record processes in the state file, so a cleanup after a crash stops them too."""
        assert self.state is not None
        self.state.pids.extend(p.popen.pid for p in processes if p.popen is not None)
        self.state.save()

    def _add(self, proc: Process) -> Process:
        self.processes[proc.name] = _start(proc)
        assert self.state is not None and proc.popen is not None
        self.state.pids.append(proc.popen.pid)
        self.state.save()
        return proc

    def _start_containerd(self, timeout: float) -> None:
        root = self.workdir / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.toml"
        config.write_text(containerd_config(root, self.sandbox_image, self._cni_path().parent))
        containerd = binary("containerd")
        proc = self._add(
            Process(
                "containerd",
                [str(containerd), f"--config={config}", "--log-level=warn"],
                self.logs / "containerd.log",
                # the runc shim is found on the PATH
                env={"PATH": f"{containerd.parent}:{os.environ.get('PATH', '')}"},
            )
        )
        proc.wait_ready(lambda: self._ctr("version", check=False).returncode == 0, timeout)

    def _ctr(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            str(binary("containerd", "ctr")), f"--address={self.runtime_socket}",
            "--namespace=k8s.io", *args, check=check, timeout=timeout,
        )  # fmt: skip

    def _import_images(self, timeout: float) -> None:
        for archive in self.images:
            self._ctr("images", "import", "--no-unpack", str(archive), timeout=timeout)
        listed = self.images_listed()
        if self.sandbox_image not in listed and f"docker.io/{self.sandbox_image}" not in listed:
            raise HarnessError(
                f"the sandbox image {self.sandbox_image} is not in containerd after the "
                f"import (images: {listed})"
            )

    def images_listed(self) -> list[str]:
        """The image names (and digests) containerd holds for Kubernetes."""
        return self._ctr("images", "list", "--quiet").stdout.split()

    def _start_coredns(self, timeout: float) -> None:
        assert self.api_cluster.pki is not None
        health = free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {self.api_cluster.kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""
        )
        proc = self._add(
            Process(
                "coredns",
                [str(binary("coredns")), "-conf", str(corefile)],
                self.logs / "coredns.log",
            )
        )
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{health}/health"), timeout)

    def _start_kubelet(self, timeout: float) -> None:
        assert self.api_cluster.pki is not None
        pki = self.api_cluster.pki
        kubelet_dir = self.workdir / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        client_cert, client_key = issue_certificate(
            pki, f"kubelet-{self.name}", f"system:node:{self.name}", organizations=["system:nodes"]
        )
        serving_cert, serving_key = issue_certificate(
            pki, f"kubelet-{self.name}-serving", self.name, server=True,
            ips=[NODE_IP], dns_names=[self.name],
        )  # fmt: skip
        kubeconfig = self.workdir / "kubelet.kubeconfig"
        _write_client_kubeconfig(kubeconfig, self.api_cluster, client_cert, client_key)
        resolv = self.workdir / "resolv.conf"
        # Pods with dnsPolicy Default get no nameserver: no lookup leaves the machine
        resolv.write_text("")
        healthz = free_port()
        config = self.workdir / "kubelet-config.json"
        config.write_text(
            json.dumps(
                kubelet_config(
                    workdir=self.workdir,
                    runtime_socket=self.runtime_socket,
                    ca_file=pki.ca_cert,
                    tls_cert=serving_cert,
                    tls_key=serving_key,
                    port=free_port(),
                    healthz_port=healthz,
                    resolv_conf=resolv,
                ),
                indent=2,
            )
        )
        proc = self._add(
            Process(
                "kubelet",
                [
                    str(binary("kubernetes", "kubelet")),
                    f"--config={config}",
                    f"--kubeconfig={kubeconfig}",
                    f"--root-dir={kubelet_dir}",
                    f"--cert-dir={self.workdir / 'kubelet-pki'}",
                    f"--hostname-override={self.name}",
                    f"--node-ip={NODE_IP}",
                    "--node-labels=mlmodel.lifecycle.io/real-node=true",
                    "--v=1",
                ],
                self.logs / "kubelet.log",
            )
        )
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{healthz}/healthz"), timeout)
        try:
            wait_until(f"node {self.name} Ready", self.ready, timeout, interval=0.25)
        except TimeoutError as exc:
            raise HarnessError(
                f"{exc}; last lines of {proc.log_path}:\n{proc.log_tail()}"
            ) from None

    def ready(self) -> bool:
        try:
            node = self.api_cluster.api("GET", f"/api/v1/nodes/{self.name}")
        except urllib.error.HTTPError:
            return False
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )

    def _start_kube_proxy(self, timeout: float) -> None:
        assert self.api_cluster.pki is not None
        cert, key = issue_certificate(self.api_cluster.pki, "kube-proxy", "system:kube-proxy")
        kubeconfig = self.workdir / "kube-proxy.kubeconfig"
        _write_client_kubeconfig(kubeconfig, self.api_cluster, cert, key)
        healthz = free_port()
        proc = self._add(
            Process(
                "kube-proxy",
                [
                    str(binary("kubernetes", "kube-proxy")),
                    f"--kubeconfig={kubeconfig}",
                    "--proxy-mode=iptables",
                    f"--hostname-override={self.name}",
                    f"--bind-address={NODE_IP}",
                    f"--healthz-bind-address=127.0.0.1:{healthz}",
                    f"--metrics-bind-address=127.0.0.1:{free_port()}",
                    # NodePorts on the bridge address only, never on the outside interface
                    f"--nodeport-addresses={NODE_IP}/32",
                    f"--cluster-cidr={POD_SUBNET}",
                    # leave the machine's conntrack sysctls alone
                    "--conntrack-max-per-core=0",
                    "--conntrack-tcp-timeout-established=0",
                    "--conntrack-tcp-timeout-close-wait=0",
                    "--v=1",
                ],
                self.logs / "kube-proxy.log",
            )
        )
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{healthz}/healthz"), timeout)

    # -- stop

    def stop_runtime(self, grace_seconds: int = 2, timeout: float = 60.0) -> None:
        """Delete the Pods while the apiserver answers, then stop the node's processes."""
        kubelet = self.processes.get("kubelet")
        if kubelet is not None and kubelet.running():
            # no controller may replace a deleted Pod, no scheduler place it
            for name in ("kube-controller-manager", "kube-scheduler"):
                if self.cluster is not None and name in self.cluster.processes:
                    self.cluster.processes[name].stop()
            with contextlib.suppress(Exception):
                self._delete_pods(grace_seconds, timeout)
        for name in ("kube-proxy", "kubelet", "coredns"):
            if name in self.processes:
                self.processes[name].stop()
        containerd = self.processes.get("containerd")
        if containerd is not None and containerd.running():
            with contextlib.suppress(Exception):
                self._remove_containers()
            containerd.stop()

    def stop(self) -> list[str]:
        """Undo every change to the machine (after :meth:`stop_runtime`). Leftovers."""
        remaining: list[str] = []
        if self.state is not None:
            for proc in self.processes.values():
                proc.stop()
            remaining = teardown(self.state)
            if not remaining:
                STATE_FILE.unlink(missing_ok=True)
                self.state = None
        if self._lock is not None:  # also when the lock was held by another node
            self._lock.close()
            self._lock = None
        return remaining

    def _delete_pods(self, grace_seconds: int, timeout: float) -> None:
        """Delete every Pod bound to this node and wait until the kubelet has stopped it."""
        selector = f"spec.nodeName={self.name}"
        pods = self.api_cluster.api("GET", f"/api/v1/pods?fieldSelector={selector}")
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            with contextlib.suppress(urllib.error.HTTPError):
                self.api_cluster.api(
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"gracePeriodSeconds": grace_seconds},
                )

        def gone() -> bool:
            left = self.api_cluster.api("GET", f"/api/v1/pods?fieldSelector={selector}")
            return not left.get("items")

        with contextlib.suppress(TimeoutError):
            wait_until("the node's Pods deleted", gone, timeout, interval=0.5)

    def _remove_containers(self) -> None:
        """What the kubelet did not stop: kill every task, delete every container."""
        for line in self._ctr("tasks", "list", "--quiet", check=False).stdout.split():
            self._ctr("tasks", "kill", "--signal=SIGKILL", line, check=False)
        time.sleep(0.5)
        for line in self._ctr("tasks", "list", "--quiet", check=False).stdout.split():
            self._ctr("tasks", "delete", "--force", line, check=False)
        for line in self._ctr("containers", "list", "--quiet", check=False).stdout.split():
            self._ctr("containers", "delete", line, check=False)


def _write_client_kubeconfig(path: Path, cluster: LocalCluster, cert: Path, key: Path) -> None:
    import yaml

    assert cluster.pki is not None
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {
                    "server": cluster.server, "certificate-authority": str(cluster.pki.ca_cert)}}],
                "users": [{"name": "node", "user": {
                    "client-certificate": str(cert), "client-key": str(key)}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "node"}}],
                "current-context": "local",
            }
        )
    )  # fmt: skip
    path.chmod(0o600)


def run_until_signal(ready_file: Path | None = None) -> int:
    """Build the images if needed, run a control plane with a real node until SIGINT or
    SIGTERM, then tear it all down. Prints the kubeconfig; writes ``ready_file`` once the
    node is Ready (the teardown test waits for it)."""
    from mlmodel_operator.nodeimages import build_image_archives

    images = build_image_archives()
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with RealNode.up(images["pause"].name, [a.path for a in images.values()]) as node:
        cluster = node.api_cluster
        print(f"real node {node.name} Ready; export KUBECONFIG={cluster.kubeconfig}", flush=True)
        if ready_file is not None:
            ready_file.write_text(json.dumps({"kubeconfig": str(cluster.kubeconfig),
                                              "workdir": str(node.workdir)}))  # fmt: skip
        while not stop["signal"]:
            time.sleep(0.2)
        print(f"signal {stop['signal']}: tearing down", flush=True)
    print("torn down: nothing left", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlmodel_operator.realnode up|cleanup|leftovers``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlmodel_operator.realnode",
        description="up: a control plane with a real node until Ctrl-C; cleanup: undo what "
        "a killed run left; leftovers: list it (exit 1 if any).",
    )
    parser.add_argument("command", choices=["up", "cleanup", "leftovers"])
    parser.add_argument("--ready-file", type=Path, help="up: written once the node is Ready")
    args = parser.parse_args(argv)
    if args.command == "up":
        return run_until_signal(args.ready_file)
    state = NodeState.load()
    if state is None:
        print(f"no real node recorded in {STATE_FILE}: nothing to do")
        return 0
    if args.command == "leftovers":
        found = leftovers(state)
        print("\n".join(found) or "nothing left")
        return 1 if found else 0
    for note in cleanup_previous():
        print(note)
    print("clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
