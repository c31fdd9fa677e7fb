"""A parsed MLModel for unit tests: the same small model, with only what a test changes."""

from __future__ import annotations

from typing import Any

from mlmodel_operator.spec import ModelSpec, parse_model

SHA = "3b2c6f0e8d4a1957c0f5e2b7a9d8c6e4f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9"
UID = "0b9f6a52-3d1c-4c8e-9a57-2f0e4b1c7d63"
# The owner reference every object built for make_model() carries.
OWNER = {
    "apiVersion": "ml.lifecycle.io/v1alpha1",
    "kind": "MLModel",
    "name": "churn",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}


def make_model(*, uid: str = UID, generation: int = 2, sha256: str = SHA, **spec: Any) -> ModelSpec:
    """MLModel churn in team-a at version 3 (``spec`` keys replace the spec's fields)."""
    version = spec.get("version", "3")
    body: dict[str, Any] = {
        "metadata": {"name": "churn", "namespace": "team-a", "uid": uid, "generation": generation},
        "spec": {
            "version": version,
            "artifact": {"uri": f"s3://models/churn/{version}/model.joblib", "sha256": sha256},
        },
    }
    body["spec"].update(spec)
    return parse_model(body)
