"""The status write carries the resourceVersion it was computed from, and a 409 makes the
reconcile read and compute again, a bounded number of times (issue 16, item 9a).

The apiserver is a stand-in here (its 409 is the real one's in
tests/integration/controller/test_status_conflicts.py); the MLModel has a spec the parser
refuses, so a reconcile needs nothing but the object and its status write.
"""

from __future__ import annotations

from typing import Any

from mlmodel_operator.archive import no_archive
from mlmodel_operator.kube import ApiConflict, Kube
from mlmodel_operator.reconcile import STATUS_WRITE_ATTEMPTS, Reconciler
from mlmodel_operator.settings import Settings
from mlmodel_operator.verify import ArtifactVerifier

META = {"name": "churn", "namespace": "team-a", "uid": "u-1"}


class StatusKube(Kube):
    """Each read finds the object one resourceVersion newer, with another writer's
    condition in its status; the first ``conflicts`` status writes get 409."""

    def __init__(self, conflicts: int, status: dict[str, Any] | None = None) -> None:
        self.reads = 0
        self.conflicts = conflicts
        self.status = status
        self.writes: list[tuple[str | None, dict[str, Any]]] = []

    def get_model(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        status = self.status or {
            "conditions": [
                {
                    "type": "example.com/Reviewed",
                    "status": "True",
                    "reason": "Reviewed",
                    "message": f"written before read {self.reads}",
                    "lastTransitionTime": "2026-03-01T00:00:00Z",
                }
            ]
        }
        return {
            "metadata": {**META, "generation": 1, "resourceVersion": str(100 + self.reads)},
            "spec": {
                "version": "ledger",  # refused by the parser: SpecValid False
                "artifact": {"uri": "s3://models/churn/1/model.joblib", "sha256": "a" * 64},
            },
            "status": status,
        }

    def patch_model_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        if self.conflicts > 0:
            self.conflicts -= 1
            raise ApiConflict(
                "PATCH", "/status", 409, b'{"message": "the object has been modified"}'
            )
        self.writes.append((resource_version, status))


def reconciler(kube: Kube) -> Reconciler:
    return Reconciler(kube, Settings(), ArtifactVerifier(None), no_archive)


def test_the_write_carries_the_version_read_and_a_409_reads_again() -> None:
    kube = StatusKube(conflicts=2)
    outcome = reconciler(kube).reconcile({"metadata": META})
    assert kube.reads == 3
    ((version, status),) = kube.writes
    assert version == "103"  # the object the written status was computed from
    reviewed = next(c for c in status["conditions"] if c["type"] == "example.com/Reviewed")
    assert reviewed["message"] == "written before read 3"  # the newest, kept
    assert next(c for c in status["conditions"] if c["type"] == "SpecValid")["status"] == "False"
    assert outcome.written and outcome.status == status
    # the Event of the refused spec is posted once, not once per attempt
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]


def test_the_retries_are_bounded_and_leave_the_write_to_a_later_reconcile() -> None:
    kube = StatusKube(conflicts=1000)
    outcome = reconciler(kube).reconcile({"metadata": META})
    assert kube.reads == STATUS_WRITE_ATTEMPTS
    assert kube.writes == [] and not outcome.written
    assert outcome.requeue_after is not None and outcome.requeue_after <= 2.0


def test_an_unchanged_status_is_not_written() -> None:
    first = StatusKube(conflicts=0)
    written = reconciler(first).reconcile({"metadata": META}).status
    again = StatusKube(conflicts=0, status=written)
    outcome = reconciler(again).reconcile({"metadata": META})
    assert again.writes == [] and not outcome.written
