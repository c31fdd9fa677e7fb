"""The operator's own apiserver calls (kube.py) give up on a hung apiserver, and say where.

The apiserver is a TCP listener on 127.0.0.1 that accepts connections and never answers
(not a mock: what a hung apiserver looks like from the client). Before, the kubernetes
client had no timeout at all: the call, and the model's lock with it, waited forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlmodel_operator.kube import ApiUnreachable, Kube, load_api_client

pytestmark = pytest.mark.integration

BOUND = 30.0  # generous: kube.py's own bounds are 5 s to connect and 20 s to read


def kubeconfig_for(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: hung
  cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: not-a-real-token}}
contexts:
- name: hung
  context: {{cluster: hung, user: u}}
current-context: hung
"""
    )
    return path


@pytest.mark.parametrize("scheme", ["https", "http"])  # stuck in the TLS handshake, or after
def test_kube_calls_give_up_on_a_hung_apiserver_and_name_it(
    hung_peer: str,
    tmp_path: Path,
    scheme: str,
    within_bound: Callable[..., tuple[float, Any]],
) -> None:
    kube = Kube(load_api_client(str(kubeconfig_for(tmp_path, f"{scheme}://{hung_peer}"))))

    elapsed, outcome = within_bound(lambda: kube.get_model("ns", "churn"), BOUND)

    assert elapsed < BOUND
    assert isinstance(outcome, ApiUnreachable), repr(outcome)
    assert hung_peer in str(outcome) and "no answer" in str(outcome)
    assert "GET /apis/ml.lifecycle.io/v1alpha1/namespaces/ns/mlmodels/churn" in str(outcome)
