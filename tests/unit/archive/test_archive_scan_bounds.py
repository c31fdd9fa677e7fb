"""The static pickle scan has bounds: a decompression bomb, a huge pickle argument or a
pickle built to keep the scan busy is refused early, in little memory, with a reason that
names the limit and what was seen.

Memory is measured in a child process (its peak RSS, VmHWM, before and after the scan);
work is measured as bytes inflated and read, never as time.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.pickle_scan import HashingReader, ScanLimits, scan_artifact

MiB = 1 << 20
BOMB_BYTES = 300 * 10**6  # the security review's artifact: 300 MB of zeros, ~300 KB zlib

# Runs the scan on a file the way the archiver does (through a HashingReader) and reports
# the peak RSS it added, the bytes it inflated and the compressed bytes it read.
CHILD = """
import json, sys
from mlmodel_operator.pickle_scan import HashingReader, scan_artifact

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

with open(sys.argv[1], "rb") as f:
    reader = HashingReader(f)
    before = hwm()
    result = scan_artifact(reader)
    grown = hwm() - before
    read = reader.size
print(json.dumps({
    "complete": result.complete,
    "note": result.note,
    "refused": getattr(result, "refused", None),
    "stream_bytes": getattr(result, "stream_bytes", None),
    "read_bytes": read,
    "rss_growth": grown,
    "sklearn_version": result.sklearn_version,
}))
"""


def scan_in_child(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def zlib_stream(tmp_path: Path, name: str, head: bytes, zeros: int, tail: bytes) -> Path:
    """``head + zeros * b"\\0" + tail``, zlib-compressed as it is written (never whole)."""
    z = zlib.compressobj(9)
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(z.compress(head))
        block = bytes(MiB)
        for _ in range(zeros // MiB):
            f.write(z.compress(block))
        f.write(z.compress(bytes(zeros % MiB)))
        f.write(z.compress(tail))
        f.write(z.flush())
    return path


@pytest.fixture(scope="module")
def logreg() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(x, y)


def test_a_real_joblib_zlib_bomb_is_refused_in_little_memory_and_work(tmp_path: Path) -> None:
    path = tmp_path / "bomb.joblib"
    joblib.dump(np.zeros(BOMB_BYTES // 8), path, compress=("zlib", 9))
    assert path.stat().st_size < 400_000  # ~1000x: what makes it a bomb

    seen = scan_in_child(path)

    assert not seen["complete"]
    refused = seen["refused"]
    assert refused, seen["note"]
    assert "zlib" in refused and "limit" in refused and "200x" in refused
    # it stopped after a fraction of the 300 MB: the work is bounded by bytes inflated
    assert seen["stream_bytes"] <= ScanLimits().ratio_after + 2 * MiB
    assert seen["read_bytes"] <= 400_000
    assert seen["rss_growth"] < 32 * MiB, seen


def test_a_crafted_zlib_bomb_of_one_huge_bytes_argument_is_refused(tmp_path: Path) -> None:
    """One BINBYTES8 opcode claiming 400 MiB of zeros: nothing here is joblib's."""
    size = 400 * MiB
    head = b"\x80\x05\x8e" + struct.pack("<Q", size)  # PROTO 5, BINBYTES8 <size>
    path = zlib_stream(tmp_path, "crafted.bin", head, size, b".")

    seen = scan_in_child(path)

    assert not seen["complete"] and seen["refused"], seen
    assert "limit" in seen["refused"]
    assert seen["stream_bytes"] <= ScanLimits().ratio_after + 2 * MiB
    assert seen["rss_growth"] < 32 * MiB, seen


def test_a_large_argument_is_stepped_over_not_held(
    tmp_path: Path, logreg: LogisticRegression
) -> None:
    """An uncompressed model carrying 64 MiB of bytes and of text in its state: the scan
    reads past both in chunks and still finds the version written after them."""
    est = pickle.loads(pickle.dumps(logreg))
    est.blob = bytes(64 * MiB)
    est.text = "x" * (64 * MiB)
    path = tmp_path / "big-args.joblib"
    joblib.dump(est, path)
    del est

    seen = scan_in_child(path)

    assert seen["complete"], seen["note"]
    assert seen["sklearn_version"] == sklearn.__version__
    assert seen["stream_bytes"] == path.stat().st_size
    assert seen["rss_growth"] < 32 * MiB, seen


def test_a_pickle_built_to_fill_the_memo_is_refused_in_little_memory(tmp_path: Path) -> None:
    """1.2 million ``EMPTY_DICT MEMOIZE POP``: 3.5 KB of zlib, every dict kept if followed."""
    head = b"\x80\x04"
    z = zlib.compressobj(9)
    path = tmp_path / "memo.bin"
    with open(path, "wb") as f:
        f.write(z.compress(head))
        for _ in range(12):
            f.write(z.compress(b"}\x940" * 100_000))
        f.write(z.compress(b"."))
        f.write(z.flush())

    seen = scan_in_child(path)

    assert not seen["complete"] and seen["refused"], seen
    assert f"{ScanLimits().max_memo} memoized values" in seen["refused"]
    assert seen["rss_growth"] < 48 * MiB, seen


def test_every_bound_names_its_limit_and_what_was_seen() -> None:
    x, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    buf = io.BytesIO()
    joblib.dump(forest, buf, compress=3)
    data = buf.getvalue()

    cases = [
        (ScanLimits(max_inflated_bytes=4096), "4096 bytes"),
        (ScanLimits(max_opcodes=100), "100 opcodes"),
        (ScanLimits(max_memo=10), "10 memoized values"),
        (ScanLimits(max_seconds=0.0), "0 s"),
    ]
    for limits, named in cases:
        result = scan_artifact(io.BytesIO(data), limits)
        assert not result.complete
        assert named in result.refused and "limit" in result.refused, (named, result.refused)
        assert result.note == f"scan refused: {result.refused}"
    assert scan_artifact(io.BytesIO(data)).complete  # and the defaults let a forest through


def test_a_long_line_argument_is_refused() -> None:
    """A protocol-0 opcode's argument runs to a newline: one that never comes is bounded."""
    data = b"S'" + b"a" * (256 * 1024) + b"'\n."
    result = scan_artifact(io.BytesIO(data))
    assert not result.complete and "line" in result.refused and "limit" in result.refused


def test_an_xz_stream_asking_for_a_huge_dictionary_is_refused() -> None:
    """The .lzma (alone) header names the dictionary size the decoder must allocate."""
    import lzma

    data = lzma.compress(pickle.dumps([1, 2, 3]), format=lzma.FORMAT_ALONE)
    props, _dict, rest = data[:1], data[1:5], data[5:]
    crafted = props + struct.pack("<I", 1 << 31) + rest  # a 2 GiB dictionary
    result = scan_artifact(io.BytesIO(crafted))
    assert not result.complete and "limit" in result.refused and "lzma" in result.refused


def test_the_hashing_reader_still_sees_every_byte_after_a_refusal(tmp_path: Path) -> None:
    import hashlib

    head = b"\x80\x05\x8e" + struct.pack("<Q", 100 * MiB)
    path = zlib_stream(tmp_path, "b.bin", head, 100 * MiB, b".")
    data = path.read_bytes()
    reader = HashingReader(io.BytesIO(data))
    result = scan_artifact(reader, ScanLimits(ratio_after=MiB))
    assert result.refused
    reader.drain()
    assert reader.size == len(data) and reader.hexdigest() == hashlib.sha256(data).hexdigest()
