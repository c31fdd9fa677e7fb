"""kube.py's client: every call bounded, no hidden retries, errors that say where."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from mlmodel_operator.kube import ApiUnreachable, Kube, load_api_client


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: t}}
contexts:
- name: c
  context: {{cluster: c, user: u}}
current-context: c
"""
    )
    return path


def test_no_retries_and_a_refused_apiserver_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = load_api_client(str(kubeconfig(tmp_path, f"https://127.0.0.1:{port}")))
    assert api.configuration.retries is False
    started = time.monotonic()
    with pytest.raises(ApiUnreachable) as info:
        Kube(api).get_model("ns", "churn")
    assert time.monotonic() - started < 5  # refused at once, not retried
    message = str(info.value)
    assert f"cannot reach https://127.0.0.1:{port}" in message
    assert message.startswith("GET /apis/ml.lifecycle.io/v1alpha1/namespaces/ns/mlmodels/churn")
