"""The ETag recorded on a Deployment spares a restarted operator a download of every
artifact in a fleet change, and never lets changed bytes through (verify.py)."""

from __future__ import annotations

import hashlib

from test_bounded_memory import Body, Stat, artifact

from mlmodel_operator.verify import ArtifactVerifier


class CountingStore:
    """Each key holds its own bytes (or ``swapped`` ones) with an MD5 ETag, like MinIO's."""

    def __init__(self) -> None:
        self.gets = 0
        self.swapped: dict[str, bytes] = {}

    def _data(self, key: str) -> bytes:
        return self.swapped.get(key, key.encode())

    def stat_object(self, bucket: str, key: str) -> Stat:
        return Stat(hashlib.md5(self._data(key)).hexdigest())

    def get_object(self, bucket: str, key: str) -> Body:
        self.gets += 1
        return Body(self._data(key))


def test_the_etag_a_deployment_was_made_with_needs_no_download_after_a_restart() -> None:
    store = CountingStore()
    first = ArtifactVerifier(store).check(artifact(1), owner="u1")
    assert first.status == "True" and first.etag and store.gets == 1
    restarted = ArtifactVerifier(store)  # its memory of what it hashed is empty
    again = restarted.check(artifact(1), owner="u1", verified_etag=first.etag)
    assert again.status == "True" and again.etag == first.etag
    assert store.gets == 1  # a stat, no GetObject


def test_bytes_written_anew_under_the_key_are_downloaded_and_refused() -> None:
    store = CountingStore()
    first = ArtifactVerifier(store).check(artifact(1), owner="u1")
    store.swapped["churn/1/model.joblib"] = b"other bytes"
    verdict = ArtifactVerifier(store).check(artifact(1), owner="u1", verified_etag=first.etag)
    assert verdict.status == "False" and verdict.reason == "DigestMismatch"
    assert store.gets == 2
