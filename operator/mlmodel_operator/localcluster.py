"""A real, local, Docker-free Kubernetes control plane for tests and the demo.

envtest-style: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
(fake nodes whose Pods become Running and Ready) built from their Go modules by
``hack/build-tools.sh``, plus a real MinIO server and Debian's Prometheus. Every process
listens on a free 127.0.0.1 port, is waited for with a time limit, and is stopped on
exit; all data lives in one temporary directory.

Used by the pytest fixtures (tests/conftest.py) and by ``make demo``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
# The operator's allocator, as its image sets it (operator/Dockerfile, and why there).
OPERATOR_PYTHONMALLOC = "malloc"


SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"


class HarnessError(RuntimeError):
    """A local server could not be started; the message names it and shows its log."""


def cache_dir() -> Path:
    """Where hack/build-tools.sh puts the binaries (``$MLMODEL_CACHE`` overrides)."""
    env = os.environ.get("MLMODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mlmodel-lifecycle"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse hack/versions.env (KEY=VALUE lines, # comments)."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def binary(component: str, name: str | None = None) -> Path:
    """Path of a cached binary, e.g. ``binary("kubernetes", "kube-apiserver")``."""
    versions = read_versions()
    key = f"{component.upper()}_VERSION"
    if key not in versions:
        raise HarnessError(f"hack/versions.env has no {key}")
    path = cache_dir() / "bin" / f"{component}-{versions[key]}" / (name or component)
    if not path.is_file():
        raise HarnessError(f"{path} is missing: run `make tools` (hack/build-tools.sh) first")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    """Poll ``check`` until it returns True; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # a server that is still starting refuses connections
            last_error = exc
        time.sleep(interval)
    suffix = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s{suffix}")


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """One child process with its log file; stopped by :meth:`stop`."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = dict(os.environ)
        env.update(self.env or {})
        self.popen = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: Ctrl-C reaches us, not it
        )
        log.close()

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        def ready() -> bool:
            if not self.running():
                code = self.popen.returncode if self.popen else None
                raise HarnessError(
                    f"{self.name} exited with code {code} while starting; last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            return check()

        try:
            wait_until(self.name, ready, timeout)
        except TimeoutError as exc:
            raise HarnessError(
                f"{exc}; last lines of {self.log_path}:\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        pgid = self.popen.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        """Stop at once, as a crash would (SIGKILL to the whole process group)."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


_LIVE: list[Process] = []


def _stop_all_at_exit() -> None:
    for proc in reversed(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=5)


atexit.register(_stop_all_at_exit)


def _start(proc: Process) -> Process:
    proc.start()
    _LIVE.append(proc)
    return proc


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 2xx (False for an HTTP error status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return bool(200 <= resp.status < 300)
    except urllib.error.HTTPError:
        return False


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    """Certificates for one local cluster, all made here, all under ``directory``."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def issue_certificate(
    pki: Pki,
    name: str,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    server: bool = False,
    ips: Sequence[str] = (),
    dns_names: Sequence[str] = (),
) -> tuple[Path, Path]:
    """A leaf certificate signed by the cluster CA: ``<name>.crt`` and ``<name>.key``.

    ``server=True`` makes a serving certificate (with the given IP and DNS names),
    otherwise a client certificate whose user is ``common_name`` in ``organizations``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(dns) for dns in dns_names]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = pki.directory / f"{name}.crt", pki.directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def make_pki(directory: Path, apiserver_ips: Sequence[str] = ("127.0.0.1",)) -> Pki:
    """A CA, an apiserver serving cert for ``apiserver_ips``, an admin client cert in
    ``system:masters`` and a service-account signing key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    now = dt.datetime.now(dt.UTC)
    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlmodel-local-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)
    issue_certificate(
        pki,
        "apiserver",
        "kube-apiserver",
        server=True,
        # 10.96.0.1: the `kubernetes` Service, which pods on a real node dial
        ips=[*apiserver_ips, "10.96.0.1"],
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    )
    issue_certificate(pki, "admin", "mlmodel-admin", organizations=["system:masters"])
    sa = _new_key()
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """A kubeconfig for the admin user, with absolute paths to the PKI files."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mlmodel-local",
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "mlmodel-admin",
                "user": {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "mlmodel-local",
                "context": {"cluster": "mlmodel-local", "user": "mlmodel-admin"},
            }
        ],
        "current-context": "mlmodel-local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


# --------------------------------------------------------------------------- servers


@dataclass
class MinioServer:
    """A real MinIO server on a free loopback port, with generated credentials."""

    workdir: Path
    access_key: str = field(default_factory=lambda: "mlmodel-" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    process: Process | None = None
    # Serve the Prometheus metrics without a bearer token (MINIO_PROMETHEUS_AUTH_TYPE=public),
    # so s3_requests() can read them; loopback only.
    metrics_public: bool = False

    @property
    def endpoint(self) -> str:
        """``host:port``, the form the ``minio`` client takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self, timeout: float = 60.0) -> MinioServer:
        data = self.workdir / "minio-data"
        data.mkdir(parents=True, exist_ok=True)
        console = free_port()
        self.process = _start(
            Process(
                "minio",
                [
                    str(binary("minio")),
                    "server",
                    str(data),
                    "--address",
                    self.endpoint,
                    "--console-address",
                    f"127.0.0.1:{console}",
                    "--quiet",
                ],
                self.workdir / "logs" / "minio.log",
                env={
                    "MINIO_ROOT_USER": self.access_key,
                    "MINIO_ROOT_PASSWORD": self.secret_key,
                    "MINIO_BROWSER": "off",
                    "MINIO_UPDATE": "off",
                    "MINIO_CI_CD": "1",
                    **({"MINIO_PROMETHEUS_AUTH_TYPE": "public"} if self.metrics_public else {}),
                },
            )
        )
        self.process.wait_ready(lambda: http_ok(f"{self.url}/minio/health/ready"), timeout)
        return self

    def s3_requests(self, timeout: float = 10.0) -> dict[str, float]:
        """S3 API requests this server has answered since it started, by API name
        (``GetObject``, ``HeadObject``, ...): ``minio_api_requests_total{type="s3"}`` from
        its metrics v3 endpoint ``/minio/metrics/v3/api/requests`` (needs
        ``metrics_public``). Reading the metrics is not an S3 request and is not counted."""
        url = f"{self.url}/minio/metrics/v3/api/requests"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("minio_api_requests_total{"):
                continue
            labels_text, _, value = line[len("minio_api_requests_total{") :].rpartition("} ")
            labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
            if labels.get("type", '"s3"') != '"s3"':
                continue
            name = labels.get("name", '""').strip('"')
            counts[name] = counts.get(name, 0.0) + float(value.split()[0])
        return counts

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def client(self) -> Any:
        """A ``minio.Minio`` client for this server."""
        from minio import Minio

        return Minio(
            self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False
        )


@dataclass
class PrometheusServer:
    """Debian's Prometheus with a config the caller writes."""

    workdir: Path
    config: str
    port: int = field(default_factory=free_port)
    process: Process | None = None
    # where it listens: 127.0.0.1, or the real node's bridge address when the Pods of the
    # node (an operator reading a canary's metrics) must reach it
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        exe = shutil.which("prometheus")
        if exe is None:
            raise HarnessError("prometheus is not installed: run `make tools`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(self.config)
        self.process = _start(
            Process(
                "prometheus",
                [
                    exe,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--web.enable-lifecycle",
                ],
                self.workdir / "prometheus.log",
            )
        )
        self.process.wait_ready(lambda: http_ok(f"{self.url}/-/ready"), timeout)
        return self

    def query(self, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Run an instant query; returns the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise HarnessError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process:
            self.process.stop()


# --------------------------------------------------------------------------- audit log

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


@dataclass(frozen=True)
class AuditEntry:
    """One request as the apiserver's audit log (level Metadata) records it."""

    received: float  # requestReceivedTimestamp, seconds since the epoch
    username: str
    user_agent: str
    verb: str  # get, list, watch, create, update, patch (server-side apply too), delete ...
    resource: str  # "deployments", "mlmodels/status"; the path for a non-resource URL
    namespace: str
    code: int | None
    audit_id: str = ""  # one per request: a watch read in two pieces has one


def parse_audit_lines(lines: Iterable[str]) -> list[AuditEntry]:
    """Audit events (JSON lines) -> one entry per request.

    A long-running request (a watch) is logged at ResponseStarted and again at
    ResponseComplete under one auditID: it is counted once. Lines that are not JSON (a
    line cut by a read while the apiserver writes it) are skipped.
    """
    seen: set[str] = set()
    out: list[AuditEntry] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or not event.get("requestReceivedTimestamp"):
            continue  # not an audit event
        audit_id = str(event.get("auditID", ""))
        if audit_id in seen:
            continue
        seen.add(audit_id)
        ref = event.get("objectRef") or {}
        resource = ref.get("resource") or ""
        if resource and ref.get("subresource"):
            resource += "/" + ref["subresource"]
        if not resource:
            resource = urllib.parse.urlsplit(event.get("requestURI", "")).path
        received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        out.append(
            AuditEntry(
                received=received,
                username=(event.get("user") or {}).get("username", ""),
                user_agent=event.get("userAgent", ""),
                verb=event.get("verb", ""),
                resource=resource,
                namespace=ref.get("namespace") or "",
                code=(event.get("responseStatus") or {}).get("code"),
                audit_id=audit_id,
            )
        )
    return out


def read_audit_log(path: Path, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """The entries written to ``path`` from byte ``offset`` on, and the offset after the
    last whole line (pass it to the next call to read only what is new)."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return parse_audit_lines(data[:end].decode(errors="replace").splitlines()), offset + end


def count_audit(
    entries: Iterable[AuditEntry],
    start: float,
    end: float,
    *,
    username: str | None = None,
    by: Sequence[str] = ("user_agent", "verb", "resource"),
) -> dict[tuple[str, ...], int]:
    """Requests received in [start, end) (epoch seconds), by the fields named in ``by``;
    only ``username``'s when given."""
    counts: dict[tuple[str, ...], int] = {}
    for e in entries:
        if not start <= e.received < end or (username is not None and e.username != username):
            continue
        key = tuple(str(getattr(e, f)) for f in by)
        counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass
class LocalCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok, all on loopback.

    ``with LocalCluster.up() as cluster:`` starts everything and stops it on exit.
    ``cluster.kubeconfig`` is a kubeconfig for a ``system:masters`` user.
    """

    workdir: Path
    nodes: int = 1
    # Set for a real node (realnode.py): the apiserver listens on this address of the
    # node's bridge instead of 127.0.0.1, so Pods reach it through the `kubernetes`
    # Service, and it authorizes kubelets with the Node authorizer.
    node_ip: str | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    apiserver_port: int = 0
    pki: Pki | None = None
    # Write the apiserver's audit log (level Metadata, one JSON line per request, no
    # RequestReceived stage) to ``audit_log_path``: who asked what, by user and user
    # agent, which apiserver_request_total cannot tell. Read it with read_audit_log().
    audit_log: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def audit_log_path(self) -> Path:
        return self.logs / "audit.log"

    @property
    def server(self) -> str:
        return f"https://{self.node_ip or '127.0.0.1'}:{self.apiserver_port}"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @classmethod
    @contextlib.contextmanager
    def up(
        cls,
        workdir: Path | None = None,
        nodes: int = 1,
        node_ip: str | None = None,
        audit_log: bool = False,
    ) -> Iterator[LocalCluster]:
        own_tmp = workdir is None
        path = Path(tempfile.mkdtemp(prefix="mlmodel-cluster-")) if workdir is None else workdir
        cluster = cls(path, nodes=nodes, node_ip=node_ip, audit_log=audit_log)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            if own_tmp and not os.environ.get("MLMODEL_KEEP_CLUSTER_DIR"):
                shutil.rmtree(path, ignore_errors=True)

    # -- lifecycle

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ips = ["127.0.0.1"] + ([self.node_ip] if self.node_ip else [])
        self.pki = make_pki(self.workdir / "pki", apiserver_ips=ips)
        self._start_etcd(timeout)
        self._start_apiserver(timeout)
        write_kubeconfig(self.kubeconfig, self.server, self.pki)
        self._start_controller_manager(timeout)
        self._start_scheduler(timeout)
        if self.nodes:
            self._start_kwok(timeout)
        for i in range(self.nodes):
            self.create_node(f"kwok-node-{i}")
        wait_until(
            "a Ready kwok node", lambda: self.ready_nodes() >= self.nodes, timeout, interval=0.25
        )

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.get(name)
            if proc:
                proc.stop()

    def restart_apiserver(self, down_seconds: float = 2.0, timeout: float = 90.0) -> None:
        """Stop kube-apiserver, wait ``down_seconds``, start it again on the same port (a
        control-plane upgrade or crash, as its clients see it); returns once it is ready."""
        proc = self.processes["kube-apiserver"]
        proc.stop()
        time.sleep(down_seconds)
        proc.start()
        ctx = self._ssl()
        proc.wait_ready(lambda: http_ok(f"{self.server}/readyz", ctx), timeout)

    def _ssl(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _insecure_ssl(self) -> ssl.SSLContext:
        # controller-manager and scheduler serve /healthz with self-signed certs
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _add(self, proc: Process) -> Process:
        self.processes[proc.name] = _start(proc)
        return proc

    def _start_etcd(self, timeout: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self._add(
            Process(
                "etcd",
                [
                    str(binary("etcd")),
                    "--name=mlmodel-local",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=mlmodel-local=http://127.0.0.1:{peer}",
                    "--unsafe-no-fsync",  # test data: durability is not the point
                    "--log-level=warn",
                ],
                self.logs / "etcd.log",
            )
        )
        proc.wait_ready(lambda: http_ok(f"{self.etcd_url}/health"), timeout)

    def _start_apiserver(self, timeout: float) -> None:
        assert self.pki is not None
        self.apiserver_port = free_port()
        pki = self.pki
        if self.node_ip:
            kubelet_cert, kubelet_key = issue_certificate(
                pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                organizations=["system:masters"],
            )  # fmt: skip
            network = [
                f"--bind-address={self.node_ip}",
                f"--advertise-address={self.node_ip}",
                # the `kubernetes` Service points at node_ip, for Pods' in-cluster clients
                "--endpoint-reconciler-type=lease",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                # `kubectl logs/exec` dial the kubelet at its InternalIP (the bridge
                # address), never by hostname: no DNS lookup leaves the machine
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={kubelet_cert}",
                f"--kubelet-client-key={kubelet_key}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
            ]
        else:
            network = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--authorization-mode=RBAC",
                # a loopback advertise address cannot be put in the `kubernetes`
                # Endpoints object, so nothing reconciles it (as in envtest)
                "--endpoint-reconciler-type=none",
            ]
        audit: list[str] = []
        if self.audit_log:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            self.logs.mkdir(parents=True, exist_ok=True)
            audit = [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log_path}",
                # 0 would mean lumberjack's default: a new file every 100 MB
                "--audit-log-maxsize=1000000",
            ]
        proc = self._add(
            Process(
                "kube-apiserver",
                [
                    str(binary("kubernetes", "kube-apiserver")),
                    f"--etcd-servers={self.etcd_url}",
                    *network,
                    f"--secure-port={self.apiserver_port}",
                    f"--cert-dir={self.workdir / 'apiserver-certs'}",
                    f"--tls-cert-file={pki.server_cert}",
                    f"--tls-private-key-file={pki.server_key}",
                    f"--client-ca-file={pki.ca_cert}",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    "--api-audiences=https://kubernetes.default.svc.cluster.local",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    "--allow-privileged=false",
                    # MutatingAdmissionPolicy is beta in 1.35 and off by default: on here,
                    # so crds/admission (the archive finalizer at creation) can be tested
                    "--feature-gates=MutatingAdmissionPolicy=true",
                    "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
                    "--profiling=false",
                    *audit,
                    "--v=1",
                ],
                self.logs / "kube-apiserver.log",
            )
        )
        ctx = self._ssl()
        proc.wait_ready(lambda: http_ok(f"{self.server}/readyz", ctx), timeout)

    def _start_controller_manager(self, timeout: float) -> None:
        assert self.pki is not None
        port = free_port()
        proc = self._add(
            Process(
                "kube-controller-manager",
                [
                    str(binary("kubernetes", "kube-controller-manager")),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--cert-dir={self.workdir / 'kcm-certs'}",
                    f"--service-account-private-key-file={self.pki.sa_key}",
                    f"--root-ca-file={self.pki.ca_cert}",
                    "--use-service-account-credentials=false",
                    "--leader-elect=false",
                    "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                    "--v=1",
                ],
                self.logs / "kube-controller-manager.log",
            )
        )
        ctx = self._insecure_ssl()
        proc.wait_ready(lambda: http_ok(f"https://127.0.0.1:{port}/healthz", ctx), timeout)

    def _start_scheduler(self, timeout: float) -> None:
        port = free_port()
        proc = self._add(
            Process(
                "kube-scheduler",
                [
                    str(binary("kubernetes", "kube-scheduler")),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--cert-dir={self.workdir / 'scheduler-certs'}",
                    "--leader-elect=false",
                    "--v=1",
                ],
                self.logs / "kube-scheduler.log",
            )
        )
        ctx = self._insecure_ssl()
        proc.wait_ready(lambda: http_ok(f"https://127.0.0.1:{port}/healthz", ctx), timeout)

    def _start_kwok(self, timeout: float) -> None:
        port = free_port()
        proc = self._add(
            Process(
                "kwok",
                [
                    str(binary("kwok")),
                    f"--kubeconfig={self.kubeconfig}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                    "--cidr=10.244.0.0/16",
                    "--node-ip=10.244.0.1",
                    f"--server-address=127.0.0.1:{port}",
                    "--node-lease-duration-seconds=40",
                    "--v=1",
                ],
                self.logs / "kwok.log",
            )
        )
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout)

    # -- API helpers (plain HTTPS, so the harness needs no client library)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One request to the apiserver as the admin user; returns the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl()) as resp:
            return json.load(resp)

    def create_node(self, name: str) -> None:
        """A fake Node that kwok keeps Ready and whose Pods kwok makes Running."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
            },
        }
        try:
            self.api("POST", "/api/v1/nodes", node)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already there (a reused data directory): fine
                raise

    def ready_nodes(self) -> int:
        nodes = self.api("GET", "/api/v1/nodes")
        count = 0
        for node in nodes.get("items", []):
            for cond in node.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    count += 1
        return count

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0, stdin: str | None = None
    ) -> str:
        """Run the kubectl built from the same release against this cluster."""
        result = subprocess.run(
            [str(binary("kubernetes", "kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


@dataclass
class OperatorRunner:
    """`mlmodel run` as a real subprocess against a local cluster and MinIO.

    It can be killed (as a crash would) and started again, like a restarted Pod.
    ``kubeconfig`` overrides the cluster's admin kubeconfig (e.g. a ServiceAccount token's).
    ``health_port`` is where its probes answer (``/healthz``, ``/readyz``) once started.
    """

    cluster: LocalCluster
    minio: MinioServer
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    process: Process | None = None
    metrics_port: int = 0
    starts: int = 0
    kubeconfig: Path | None = None
    health_port: int = 0

    def start(self, timeout: float = 60.0) -> OperatorRunner:
        """Start it; a port taken between free_port() and the bind (another process of a
        busy machine) gets fresh ports, at most three times."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except HarnessError as exc:
                if "address already in use" not in str(exc).lower() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> OperatorRunner:
        import sys

        health, self.metrics_port = free_port(), free_port()
        self.health_port = health
        self.starts += 1
        exe = Path(sys.executable).parent / "mlmodel"
        env = {
            "MLMODEL_S3_ENDPOINT": self.minio.endpoint,
            "MLMODEL_S3_ACCESS_KEY": self.minio.access_key,
            "MLMODEL_S3_SECRET_KEY": self.minio.secret_key,
            "PYTHONUNBUFFERED": "1",
            "PYTHONMALLOC": OPERATOR_PYTHONMALLOC,  # as the image sets it (operator/Dockerfile)
            **self.env,
        }
        self.process = _start(
            Process(
                "operator",
                [
                    str(exe),
                    "run",
                    f"--kubeconfig={self.kubeconfig or self.cluster.kubeconfig}",
                    "--all-namespaces",
                    f"--liveness=http://127.0.0.1:{health}/healthz",
                    f"--metrics-port={self.metrics_port}",
                    *self.args,
                ],
                self.workdir / f"operator-{self.starts}.log",
                env=env,
            )
        )
        self.process.wait_ready(lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), timeout)
        return self

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("operator-*.log"))
        )


def prometheus_operator_crds() -> list[Path]:
    """The Prometheus operator's ServiceMonitor and PrometheusRule CRD files.

    Fetched once from the prometheus-operator Go module (PROMETHEUS_OPERATOR_VERSION in
    hack/versions.env) by ``hack/build-tools.sh prometheus-operator-crds``; cached after.
    """
    version = read_versions()["PROMETHEUS_OPERATOR_VERSION"]
    directory = cache_dir() / "crds" / f"prometheus-operator-{version}"
    files = [
        directory / f"monitoring.coreos.com_{plural}.yaml"
        for plural in ("servicemonitors", "prometheusrules")
    ]
    if not all(f.is_file() for f in files):
        subprocess.run(
            [str(REPO_ROOT / "hack" / "build-tools.sh"), "prometheus-operator-crds"],
            check=True,
            timeout=600,
        )
    return files
