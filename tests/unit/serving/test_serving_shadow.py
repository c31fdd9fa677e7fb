"""Shadow traffic, the pure parts: the configuration file, reading answers, comparing them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlmodel_serving.protocol import (
    encode_v1_response,
    encode_v2_binary_response,
    encode_v2_response,
)
from mlmodel_serving.shadow import RateLimit, mirror_path
from mlmodel_serving.shadow_compare import (
    FLOAT_TOLERANCE,
    UnreadableAnswer,
    compare,
    read_v1,
    read_v2,
)
from mlmodel_serving.shadow_config import (
    ShadowConfig,
    ShadowConfigError,
    ShadowConfigFile,
    parse_shadow_config,
)

PATH = "/etc/mlmodel/rollout/shadow.json"
GOOD = {"target": "http://churn-v2.ns.svc:8080", "model": "churn", "version": "2", "sample": 0.5}


def config_bytes(**changes: Any) -> bytes:
    doc = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


# -- configuration -------------------------------------------------------------------


def test_a_valid_config_is_parsed() -> None:
    config = parse_shadow_config(config_bytes(), PATH)
    assert config == ShadowConfig("churn-v2.ns.svc", 8080, "churn", "2", 0.5)
    assert config.target == "http://churn-v2.ns.svc:8080"
    assert config.describe() == GOOD


@pytest.mark.parametrize("data", [b"", b"  \n", b"{}"])
def test_an_empty_file_means_no_mirroring(data: bytes) -> None:
    assert parse_shadow_config(data, PATH) is None


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (b"{not json", ["not JSON", "accepted"]),
        (b"[1, 2]", ["JSON list", "accepted"]),
        (config_bytes(target=...), ["field 'target' is missing", "accepted"]),
        (config_bytes(sampling=0.1), ["field 'sampling' is 0.1", "only the fields"]),
        (config_bytes(target="https://c:8080"), ["'target' is 'https://c:8080'", "plain HTTP"]),
        (config_bytes(target="http://c"), ["'target' is 'http://c'", "explicit port"]),
        (config_bytes(target="http://c:8080/v2"), ["'target'", "no path"]),
        (config_bytes(target="http://c:99999"), ["'target'", "http://<host>:<port>"]),
        (config_bytes(target=8080), ["'target' is 8080", "http://<host>:<port>"]),
        (config_bytes(model=""), ["'model' is ''", "non-empty model name"]),
        (config_bytes(model="a/b"), ["'model' is 'a/b'", "without '/'"]),
        (config_bytes(version=2), ["'version' is 2", "version string"]),
        (config_bytes(sample=1.5), ["'sample' is 1.5", "0.0 to 1.0"]),
        (config_bytes(sample=-0.1), ["'sample' is -0.1", "0.0 to 1.0"]),
        (config_bytes(sample="0.5"), ["'sample' is '0.5'", "0.0 to 1.0"]),
        (config_bytes(sample=True), ["'sample' is True", "0.0 to 1.0"]),
    ],
)
def test_an_invalid_config_names_the_file_the_field_the_value_and_what_is_accepted(
    data: bytes, names: list[str]
) -> None:
    with pytest.raises(ShadowConfigError) as info:
        parse_shadow_config(data, PATH)
    message = str(info.value)
    assert message.startswith(f"shadow config {PATH}: ")
    for name in names:
        assert name in message


def test_credentials_in_the_target_become_a_header_and_are_never_shown() -> None:
    config = parse_shadow_config(config_bytes(target="http://user:s%40cret@cand:9000"), PATH)
    assert config is not None
    assert config.authorization == "Basic dXNlcjpzQGNyZXQ="  # user:s@cret
    assert config.target == "http://cand:9000"
    assert "cret" not in repr(config.describe())
    with pytest.raises(ShadowConfigError) as info:
        parse_shadow_config(config_bytes(target="https://user:secret@cand:9000"), PATH)
    assert "secret" not in str(info.value)
    assert "***@cand:9000" in str(info.value)


def test_the_config_file_is_reported_once_per_distinct_content(tmp_path: Path) -> None:
    path = tmp_path / "shadow.json"
    watched = ShadowConfigFile(path)
    assert watched.check() is None  # absent from the start: nothing changed
    path.write_bytes(config_bytes())
    change = watched.check()
    assert change is not None and change.config is not None and change.error is None
    assert watched.check() is None  # same stat
    # Rewritten with the same content (a new inode, as the kubelet's swap makes it).
    replace_atomically(path, config_bytes())
    assert watched.check() is None
    replace_atomically(path, b"{broken")
    change = watched.check()
    assert change is not None and change.config is None and change.error is not None
    replace_atomically(path, b"{broken")
    assert watched.check() is None  # the same invalid content: not reported again
    replace_atomically(path, config_bytes(sample=1.0))
    change = watched.check()
    assert change is not None and change.config is not None and change.config.sample == 1.0
    path.unlink()
    change = watched.check()
    assert change is not None and change.config is None and change.error is None


def test_a_kubelet_style_symlink_swap_is_seen(tmp_path: Path) -> None:
    """``shadow.json`` -> ``..data/shadow.json``, ``..data`` -> a timestamped directory."""
    for name, content in (("..2026_01", config_bytes()), ("..2026_02", config_bytes(sample=0.1))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shadow.json").write_bytes(content)
    os.symlink("..2026_01", tmp_path / "..data")
    os.symlink("..data/shadow.json", tmp_path / "shadow.json")
    watched = ShadowConfigFile(tmp_path / "shadow.json")
    first = watched.check()
    assert first is not None and first.config is not None and first.config.sample == 0.5
    os.symlink("..2026_02", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    second = watched.check()
    assert second is not None and second.config is not None and second.config.sample == 0.1


def replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- reading answers and comparing them -------------------------------------------------


def v2(outputs: dict[str, np.ndarray[Any, Any]]) -> bytes:
    return encode_v2_response("churn", "1", "r-1", outputs)


def v2_binary(outputs: dict[str, np.ndarray[Any, Any]]) -> tuple[bytes, int]:
    return encode_v2_binary_response("churn", "1", "r-1", outputs, lambda name: True)


def test_labels_are_compared_exactly_row_by_row() -> None:
    stable = read_v2(v2({"predict": np.array([0, 1, 2]), "predict_proba": np.eye(3)}))
    assert list(stable.outputs) == ["predict"]  # the labels, not the probabilities
    same = read_v2(v2({"predict": np.array([0, 1, 2]), "predict_proba": np.eye(3) / 2}))
    assert compare(stable, same).agree
    other = read_v2(v2({"predict": np.array([0, 2, 2]), "predict_proba": np.eye(3)}))
    verdict = compare(stable, other)
    assert not verdict.agree and verdict.differing_rows == (1,) and verdict.rows == 3


def test_text_labels_json_binary_and_v1_read_the_same() -> None:
    labels = np.array(["stay", "churn"], dtype=object)
    json_answer = read_v2(v2({"predict": labels}))
    body, length = v2_binary({"predict": labels})
    binary_answer = read_v2(body, length)
    assert compare(json_answer, binary_answer).agree
    v1 = read_v1(encode_v1_response({"predict": labels}))
    assert compare(v1, read_v1(b'{"predictions": ["stay", "churn"]}')).agree
    assert not compare(v1, read_v1(b'{"predictions": ["stay", "stay"]}')).agree
    assert not compare(read_v1(b'{"predictions": [1]}'), read_v1(b'{"predictions": ["1"]}')).agree


def test_regressor_values_agree_within_the_documented_tolerance() -> None:
    a = np.array([0.0, 1e-12, 1000.0, -5e6, np.nan])
    near = a + np.array([0.9e-9, 0.9e-9, 0.9e-6, 4e-3, 0.0])
    assert compare(read_v2(v2({"predict": a})), read_v2(v2({"predict": near}))).agree
    far = a.copy()
    far[2] += 1.1e-6  # 1.1e-9 of 1000
    verdict = compare(read_v2(v2({"predict": a})), read_v2(v2({"predict": far})))
    assert not verdict.agree and verdict.differing_rows == (2,)
    assert FLOAT_TOLERANCE == 1e-9
    v1 = read_v1(encode_v1_response({"predict": a[:3]}))
    assert compare(v1, read_v1(orjson.dumps({"predictions": near[:3].tolist()}))).agree


def test_probabilities_are_compared_when_they_are_the_only_output() -> None:
    p = np.array([[0.25, 0.75], [0.5, 0.5]])
    stable = read_v2(v2({"predict_proba": p}))
    assert compare(stable, read_v2(v2({"predict_proba": p + 1e-12}))).agree
    verdict = compare(stable, read_v2(v2({"predict_proba": p[::-1].copy()})))
    assert not verdict.agree and verdict.differing_rows == (0, 1)


@pytest.mark.parametrize(
    "candidate",
    [
        b"not json",
        b'{"error": "boom"}',
        b'{"outputs": [{"name": "predict", "shape": [3], "datatype": "INT64", "data": [1, 2]}]}',
        b'{"outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [1]}]}',
        b'{"outputs": [{"name": "predict_proba", "shape": [2, 2], "datatype": "FP64",'
        b' "data": [1, 0, 0, 1]}]}',
    ],
)
def test_an_answer_that_cannot_be_compared_is_an_error_not_a_disagreement(
    candidate: bytes,
) -> None:
    stable = read_v2(v2({"predict": np.array([1, 2])}))
    with pytest.raises(UnreadableAnswer):
        compare(stable, read_v2(candidate))


def test_a_binary_answer_whose_sizes_do_not_add_up_is_unreadable() -> None:
    body, length = v2_binary({"predict": np.array([1, 2])})
    with pytest.raises(UnreadableAnswer):
        read_v2(body + b"x", length)
    with pytest.raises(UnreadableAnswer):
        read_v2(body[:-1], length)
    with pytest.raises(UnreadableAnswer):
        read_v2(body, len(body) + 1)


def test_shown_predictions_are_bounded() -> None:
    answer = read_v2(v2({"predict": np.arange(1000)}))
    shown = answer.shown()
    assert shown == {"predict": {"values": list(range(16)), "of": 1000}}


# -- the rest ------------------------------------------------------------------------


def test_the_mirrored_path_names_the_candidate() -> None:
    config = ShadowConfig("c", 80, "churn-b", "7", 1.0)
    assert mirror_path("/v2/models/{model_name}/infer", config) == "/v2/models/churn-b/infer"
    assert (
        mirror_path("/v2/models/{model_name}/versions/{model_version}/infer", config)
        == "/v2/models/churn-b/versions/7/infer"
    )
    assert mirror_path("/v1/models/{model_name}:predict", config) == "/v1/models/churn-b:predict"


def test_the_rate_limit_allows_ten_a_second_and_counts_the_rest() -> None:
    limit = RateLimit(10)
    allowed = [limit.allow(100.0 + i * 0.01) for i in range(25)]
    assert [a for a, _ in allowed].count(True) == 10
    assert limit.suppressed == 15
    assert limit.allow(101.5) == (True, 15)  # the next line says how many were not logged
    assert limit.allow(101.6) == (True, 0)
