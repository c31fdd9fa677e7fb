"""Least-privilege object-store keys: one for the operator, one per model namespace.

MinIO's root key can do anything to every bucket; nothing that runs all the time should
hold it. This module makes, with the root key, one MinIO user and IAM policy per key:

* the operator's (user ``mlmodel-operator``, Secret ``mlmodel-operator-s3``): read the
  models' buckets; read and write the archive bucket (copies, manifests, ledger, a wrong
  copy removed), set retention, and make the archive bucket if it is missing;
* a namespace's (user ``mlmodel-ns-<namespace>``, Secret ``mlmodel-s3-credentials`` in
  that namespace): read ``s3://<models>/<namespace>/*`` (artifacts, drift baselines) and
  write ``s3://<archive>/decisions/<namespace>/*`` (decision records, with retention
  where the bucket has object lock). Nothing else: not another namespace's models, not
  a listing, not a delete.

``build_*`` return the policy documents and Secrets (pure); ``apply_*`` make them.

Re-running is safe and keeps keys: a Secret that already holds the user's access key
keeps its secret key (the MinIO user is set to it again, so a MinIO that lost its data
gets the same key back), the policy is written again and is the user's only policy.
``--rotate`` (``rotate=True``) gives every key a new secret instead. Secret keys come from
:mod:`secrets` and go only into the MinIO user and the Kubernetes Secret: never into a
log line, an error message or stdout.

    python -m mlmodel_operator.s3keys --endpoint minio.mlmodel-system.svc:9000 \\
        --create-buckets --operator --namespace team-a

reads the root key from ``MLMODEL_S3_ROOT_ACCESS_KEY`` / ``MLMODEL_S3_ROOT_SECRET_KEY``
and writes the Secrets through the Kubernetes API (in the cluster, else the kubeconfig).
manifests/minio runs it as the Job ``minio-buckets``; `make demo`, the real-node stack
and ``make kind-up`` use it too.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

OPERATOR_USER: Final = "mlmodel-operator"
NAMESPACE_USER_PREFIX: Final = "mlmodel-ns-"
OPERATOR_SECRET: Final = "mlmodel-operator-s3"
NAMESPACE_SECRET: Final = "mlmodel-s3-credentials"  # settings.DEFAULT_S3_SECRET_NAME
OPERATOR_NAMESPACE: Final = "mlmodel-system"
MODELS_BUCKET: Final = "models"
ARCHIVE_BUCKET: Final = "model-archive"
DECISIONS_PREFIX: Final = "decisions"  # the serving default (MLMODEL_DECISION_LOG_PREFIX)
# 30 random bytes are 40 URL-safe characters: MinIO's longest secret key.
SECRET_KEY_BYTES: Final = 30
MIN_SECRET_KEY_LENGTH: Final = 8  # MinIO's shortest
POLICY_VERSION: Final = "2012-10-17"
MANAGED_BY: Final = "mlmodel-s3keys"

# Bounds on every call to MinIO's admin and S3 API (seconds), as everywhere else.
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 20.0

# minio-py asks each bucket's region (GetBucketLocation) before its first request unless
# it was told the region: every key may ask that of the buckets it uses.
_LOCATE: Final = "s3:GetBucketLocation"

_NAMESPACE_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")


class KeySetupError(Exception):
    """A key could not be made; the message names what, and never holds a secret."""


def validate_namespace(namespace: str, what: str = "namespace") -> str:
    """A Kubernetes namespace name (DNS-1123 label), else ValueError naming ``what``."""
    if not (isinstance(namespace, str) and len(namespace) <= 63 and _NAMESPACE_RE.match(namespace)):
        raise ValueError(
            f"invalid {what} {namespace!r}: expected a Kubernetes namespace name (at most 63 "
            "lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    return namespace


def validate_bucket(bucket: str, what: str) -> str:
    """An S3 bucket name, else ValueError naming ``what`` (the option or field)."""
    if not (isinstance(bucket, str) and _BUCKET_RE.match(bucket) and ".." not in bucket):
        raise ValueError(
            f"invalid {what} {bucket!r}: expected an S3 bucket name (3-63 lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit)"
        )
    return bucket


@dataclass(frozen=True)
class Buckets:
    """The buckets the keys are about: where models are, where archives and decisions go."""

    models: tuple[str, ...] = (MODELS_BUCKET,)
    archive: str = ARCHIVE_BUCKET
    decisions_prefix: str = DECISIONS_PREFIX

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models buckets: expected at least one bucket name, got none")
        for bucket in self.models:
            validate_bucket(bucket, "models bucket")
        validate_bucket(self.archive, "archive bucket")
        if not _PREFIX_RE.match(self.decisions_prefix):
            raise ValueError(
                f"invalid decisions prefix {self.decisions_prefix!r}: expected a key prefix "
                "without a leading or trailing '/' (the serving Pods' "
                "MLMODEL_DECISION_LOG_PREFIX, default 'decisions')"
            )


@dataclass(frozen=True)
class S3Key:
    """An access key and its secret; the secret is left out of repr()."""

    access_key: str
    secret_key: str = field(repr=False)


def _bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def _objects_arn(bucket: str, prefix: str = "") -> str:
    return f"arn:aws:s3:::{bucket}/{prefix}*"


def _statement(sid: str, actions: Iterable[str], resources: Iterable[str]) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": sorted(set(resources)),
    }


def namespace_user(namespace: str) -> str:
    """The MinIO user (the access key) of a model namespace."""
    return NAMESPACE_USER_PREFIX + validate_namespace(namespace)


def build_operator_policy(buckets: Buckets) -> dict[str, Any]:
    """The operator's policy: exactly the S3 calls of archive.py, ledger.py, verify.py
    and decision_log.py.

    * models buckets: GetObject (the digest check streams the artifact, the archive
      stats it and reads it as the source of a server-side copy);
    * archive bucket: HeadBucket (does it exist), CreateBucket (make it when missing, as
      the archive and the decision-log check do), GetBucketObjectLockConfiguration (is it
      locked), ListBucket (the ledger lists a model's records); objects: GetObject,
      PutObject (copies, manifests, ledger records), DeleteObject (a copy whose digest is
      wrong is removed, never a locked version: DeleteObjectVersion is not granted),
      GetObjectRetention and PutObjectRetention (retention under object lock).
    """
    archive = buckets.archive
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            _statement(
                "LocateBuckets", [_LOCATE], [_bucket_arn(b) for b in (*buckets.models, archive)]
            ),
            _statement("ReadModels", ["s3:GetObject"], [_objects_arn(b) for b in buckets.models]),
            _statement(
                "ArchiveBucket",
                [
                    "s3:CreateBucket",
                    "s3:GetBucketObjectLockConfiguration",
                    "s3:HeadBucket",
                    "s3:ListBucket",
                ],
                [_bucket_arn(archive)],
            ),
            _statement(
                "ArchiveObjects",
                [
                    "s3:DeleteObject",
                    "s3:GetObject",
                    "s3:GetObjectRetention",
                    "s3:PutObject",
                    "s3:PutObjectRetention",
                ],
                [_objects_arn(archive)],
            ),
        ],
    }


def build_namespace_policy(namespace: str, buckets: Buckets) -> dict[str, Any]:
    """A model namespace's policy: exactly the serving Pods' S3 calls.

    * ``<models>/<namespace>/*``: GetObject (the artifact, the drift baseline);
    * archive bucket: HeadBucket (the decision log's check that the bucket is there) and
      GetBucketObjectLockConfiguration (records get a retention where it is locked);
    * ``<archive>/<decisions>/<namespace>/*``: PutObject and PutObjectRetention (the
      decision records).

    No ListBucket, no DeleteObject, nothing of another namespace.
    """
    validate_namespace(namespace)
    archive = buckets.archive
    records = f"{buckets.decisions_prefix}/{namespace}/"
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            _statement(
                "LocateBuckets", [_LOCATE], [_bucket_arn(b) for b in (*buckets.models, archive)]
            ),
            _statement(
                "ReadOwnModels",
                ["s3:GetObject"],
                [_objects_arn(b, f"{namespace}/") for b in buckets.models],
            ),
            _statement(
                "DecisionLogBucket",
                ["s3:GetBucketObjectLockConfiguration", "s3:HeadBucket"],
                [_bucket_arn(archive)],
            ),
            _statement(
                "WriteOwnDecisions",
                ["s3:PutObject", "s3:PutObjectRetention"],
                [_objects_arn(archive, records)],
            ),
        ],
    }


def new_secret_key() -> str:
    """A fresh secret key (40 URL-safe characters from :mod:`secrets`)."""
    return secrets.token_urlsafe(SECRET_KEY_BYTES)


def build_secret(namespace: str, name: str, key: S3Key) -> dict[str, Any]:
    """The Secret (keys ``accessKey``, ``secretKey``) the operator or serving Pods read."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": validate_namespace(namespace),
            "labels": {
                "app.kubernetes.io/part-of": "mlmodel-lifecycle",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "stringData": {"accessKey": key.access_key, "secretKey": key.secret_key},
    }


def key_to_keep(secret_data: Mapping[str, str] | None, access_key: str) -> S3Key | None:
    """The key a Secret already holds for ``access_key``, or None when it holds none
    (no Secret, another access key such as MinIO's root, or no usable secret)."""
    if not secret_data or secret_data.get("accessKey") != access_key:
        return None
    secret = secret_data.get("secretKey") or ""
    if not MIN_SECRET_KEY_LENGTH <= len(secret) <= 40:
        return None
    return S3Key(access_key, secret)


# ------------------------------------------------------------------------------ MinIO


def _admin_error_code(exc: BaseException) -> str:
    """The ``Code`` of a MinIO admin error (its body is JSON), else ""."""
    import json

    body = getattr(exc, "_body", None) or ""  # minio.error.MinioAdminException
    try:
        return str(json.loads(body).get("Code", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


def _http_client() -> Any:
    import certifi
    import urllib3

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        retries=False,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


def make_admin(endpoint: str, root: S3Key, secure: bool = False) -> Any:
    """A ``minio.MinioAdmin`` with the root key, its calls bounded in time."""
    from minio import MinioAdmin
    from minio.credentials.providers import StaticProvider

    return MinioAdmin(
        endpoint=endpoint,
        credentials=StaticProvider(root.access_key, root.secret_key),
        secure=secure,
        http_client=_http_client(),
    )


def make_root_client(endpoint: str, root: S3Key, secure: bool = False) -> Any:
    """A ``minio.Minio`` S3 client with the root key (to make buckets), bounded in time."""
    from minio import Minio

    return Minio(
        endpoint,
        access_key=root.access_key,
        secret_key=root.secret_key,
        secure=secure,
        http_client=_http_client(),
    )


def apply_user(admin: Any, user: str, policy: Mapping[str, Any], secret_key: str) -> None:
    """Make (or update) the policy named ``user``, the user with ``secret_key``, and make
    that policy the user's only one."""
    import json

    try:
        admin.policy_add(user, policy=dict(policy))
        admin.user_add(user, secret_key)
        info = json.loads(admin.user_info(user) or "{}")
        attached = {p for p in str(info.get("policyName") or "").split(",") if p}
        others = sorted(attached - {user})
        if others:
            admin.detach_policy(others, user=user)
        if user not in attached:
            try:
                admin.attach_policy([user], user=user)
            except Exception as exc:  # attached meanwhile: the state wanted
                if _admin_error_code(exc) != "XMinioAdminPolicyChangeAlreadyApplied":
                    raise
    except Exception as exc:  # the admin API's errors, or the store not answering
        code = _admin_error_code(exc) or f"HTTP {getattr(exc, '_code', '')}".strip()
        if code == "HTTP":
            code = type(exc).__name__
        raise KeySetupError(f"MinIO user and policy {user!r}: {code}") from None


def apply_key(
    admin: Any, user: str, policy: Mapping[str, Any], keep: S3Key | None, rotate: bool = False
) -> tuple[S3Key, bool]:
    """The user's key, set up in MinIO: ``keep`` unless it is None or ``rotate``; returns
    the key and whether it is a new one."""
    if keep is not None and not rotate and keep.access_key == user:
        key, fresh = keep, False
    else:
        key, fresh = S3Key(user, new_secret_key()), True
    apply_user(admin, user, policy, key.secret_key)
    return key, fresh


def ensure_buckets(client: Any, buckets: Buckets) -> list[str]:
    """Make the buckets that are missing; the names of those made."""
    made = []
    for bucket in (*buckets.models, buckets.archive):
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
                made.append(bucket)
        except Exception as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            raise KeySetupError(f"bucket {bucket}: {code}") from None
    return made


def wait_for_store(
    client: Any, timeout: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Until the store answers a request with the root key, ``timeout`` seconds at most."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return
        except Exception as exc:  # refused while MinIO starts
            if time.monotonic() >= deadline:
                raise KeySetupError(
                    f"object store not answering after {timeout:.0f} s "
                    f"({getattr(exc, 'code', None) or type(exc).__name__})"
                ) from None
            sleep(2.0)


# -------------------------------------------------------------------------- the Secrets


class SecretStore(Protocol):
    """Where the keys go: Kubernetes Secrets (or a dict in tests)."""

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's decoded data, or None when there is no such Secret."""

    def write(self, secret: Mapping[str, Any]) -> None:
        """Create the Secret or replace the one of that name."""


class KubeSecrets:
    """Secrets through the Kubernetes API (``kubernetes.client.ApiClient``)."""

    TIMEOUT: Final = (5.0, 20.0)

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.core.read_namespaced_secret(
                name, namespace, _request_timeout=self.TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KeySetupError(
                f"reading Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KeySetupError(
                f"reading Secret {namespace}/{name}: the apiserver did not answer "
                f"({type(exc).__name__})"
            ) from None
        data = secret.data or {}
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}

    def write(self, secret: Mapping[str, Any]) -> None:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        meta = secret["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        body = dict(secret)
        try:
            try:
                self.core.create_namespaced_secret(namespace, body, _request_timeout=self.TIMEOUT)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.replace_namespaced_secret(
                    name, namespace, body, _request_timeout=self.TIMEOUT
                )
        except ApiException as exc:
            raise KeySetupError(
                f"writing Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KeySetupError(
                f"writing Secret {namespace}/{name}: the apiserver did not answer "
                f"({type(exc).__name__})"
            ) from None


@dataclass(frozen=True)
class KeyTarget:
    """One key to set up: its MinIO user and policy, and the Secret it goes into."""

    user: str
    policy: Mapping[str, Any]
    secret_namespace: str
    secret_name: str


def operator_target(buckets: Buckets, namespace: str = OPERATOR_NAMESPACE) -> KeyTarget:
    return KeyTarget(
        OPERATOR_USER, build_operator_policy(buckets), validate_namespace(namespace),
        OPERATOR_SECRET,
    )  # fmt: skip


def namespace_target(namespace: str, buckets: Buckets) -> KeyTarget:
    return KeyTarget(
        namespace_user(namespace), build_namespace_policy(namespace, buckets), namespace,
        NAMESPACE_SECRET,
    )  # fmt: skip


def apply_target(
    admin: Any, store: SecretStore, target: KeyTarget, rotate: bool = False
) -> tuple[S3Key, str]:
    """Set up one key and write its Secret; returns the key and a line saying what was
    done (with no secret in it)."""
    where = f"Secret {target.secret_namespace}/{target.secret_name}"
    keep = key_to_keep(store.read(target.secret_namespace, target.secret_name), target.user)
    key, fresh = apply_key(admin, target.user, target.policy, keep, rotate)
    if fresh:
        store.write(build_secret(target.secret_namespace, target.secret_name, key))
    done = "new secret key, written to" if fresh else "secret key kept, as in"
    return key, f"key {target.user}: policy {target.user}; {done} {where}"


# ---------------------------------------------------------------------------- the command


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``python -m mlmodel_operator.s3keys``; ``env`` defaults to the process environment."""
    environ = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m mlmodel_operator.s3keys",
        description="Make the operator's and each model namespace's least-privilege MinIO "
        "keys with the root key, and write them into their Kubernetes Secrets.",
    )
    parser.add_argument(
        "--endpoint",
        default=environ.get("MLMODEL_S3_ENDPOINT", "127.0.0.1:9000"),
        help="host:port of MinIO [MLMODEL_S3_ENDPOINT, else %(default)s]",
    )
    parser.add_argument("--secure", action="store_true", help="use TLS")
    parser.add_argument(
        "--operator", action="store_true", help=f"the operator's key (Secret {OPERATOR_SECRET})"
    )
    parser.add_argument(
        "--operator-namespace",
        default=OPERATOR_NAMESPACE,
        help="the operator's namespace, where its Secret goes (%(default)s)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help=f"a model namespace to make a key for (Secret {NAMESPACE_SECRET}; repeatable)",
    )
    parser.add_argument(
        "--models-bucket",
        action="append",
        default=[],
        help=f"a bucket models are read from (repeatable; default {MODELS_BUCKET})",
    )
    parser.add_argument("--archive-bucket", default=ARCHIVE_BUCKET, help="(%(default)s)")
    parser.add_argument(
        "--decisions-prefix",
        default=DECISIONS_PREFIX,
        help="key prefix of the decision records in the archive bucket (%(default)s)",
    )
    parser.add_argument(
        "--create-buckets", action="store_true", help="make the buckets that are missing"
    )
    parser.add_argument(
        "--rotate", action="store_true", help="new secret keys even where a Secret has one"
    )
    parser.add_argument("--kubeconfig", help="else in-cluster, else the default kubeconfig")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for MinIO (%(default)s)"
    )
    args = parser.parse_args(argv)

    root = S3Key(
        environ.get("MLMODEL_S3_ROOT_ACCESS_KEY", ""), environ.get("MLMODEL_S3_ROOT_SECRET_KEY", "")
    )
    if not root.access_key or not root.secret_key:
        parser.error(
            "set MLMODEL_S3_ROOT_ACCESS_KEY and MLMODEL_S3_ROOT_SECRET_KEY (MinIO's root "
            "user; only this setup step holds it)"
        )
    if not args.operator and not args.namespace:
        parser.error("nothing to do: give --operator and/or --namespace NAME")
    try:
        buckets = Buckets(
            tuple(args.models_bucket) or (MODELS_BUCKET,), args.archive_bucket,
            args.decisions_prefix,
        )  # fmt: skip
        targets = [operator_target(buckets, args.operator_namespace)] if args.operator else []
        targets += [namespace_target(validate_namespace(ns), buckets) for ns in args.namespace]
    except ValueError as exc:
        parser.error(str(exc))

    from mlmodel_operator.kube import load_api_client

    try:
        client = make_root_client(args.endpoint, root, args.secure)
        wait_for_store(client, args.wait)
        if args.create_buckets:
            for bucket in ensure_buckets(client, buckets):
                print(f"bucket {bucket}: created", flush=True)
        admin = make_admin(args.endpoint, root, args.secure)
        store = KubeSecrets(load_api_client(args.kubeconfig))
        for target in targets:
            _, line = apply_target(admin, store, target, args.rotate)
            print(line, flush=True)
    except KeySetupError as exc:
        print(f"s3keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
