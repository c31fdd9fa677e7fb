"""Shadow discovery without a server process: the environment values, the offer (its
parsing and its endpoint), what ShadowTraffic puts in force and logs, one ask against a
socket in this process, and copies leaving no decision record on a candidate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import Client, make_settings, v2_body

from mlmodel_serving.app import create_app
from mlmodel_serving.cli import main
from mlmodel_serving.decisions import Decision
from mlmodel_serving.metrics import ShadowMetrics
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.settings import load_settings
from mlmodel_serving.shadow import ShadowTraffic
from mlmodel_serving.shadow_config import (
    ShadowConfig,
    ShadowConfigError,
    parse_discovery_seconds,
    parse_discovery_url,
    parse_offer,
    parse_shadow_sample,
)
from mlmodel_serving.shadow_discovery import Discovered, ShadowDiscovery

SHA = "a" * 64
BASE = {
    "MLMODEL_MODEL_NAME": "churn",
    "MLMODEL_MODEL_VERSION": "1",
    "MLMODEL_ARTIFACT_URI": "/models/churn.joblib",
    "MLMODEL_ARTIFACT_SHA256": SHA,
}
URL = "http://churn-shadow.team-a.svc.cluster.local:8080"
ROW = [5.1, 3.5, 1.4, 0.2]

# -- the environment ------------------------------------------------------------------


def test_the_environment_contract() -> None:
    s = load_settings(
        [],
        {
            **BASE,
            "MLMODEL_SHADOW_DISCOVERY": URL,
            "MLMODEL_SHADOW_DISCOVERY_SECONDS": "2.5",
            "MLMODEL_SHADOW_SAMPLE": "0.25",
        },
    )
    assert (s.shadow_discovery, s.shadow_discovery_seconds, s.shadow_sample) == (URL, 2.5, 0.25)
    default = load_settings([], BASE)
    assert (default.shadow_discovery, default.shadow_discovery_seconds) == ("", 5.0)
    assert default.shadow_sample is None  # unset: no offer
    assert load_settings([], {**BASE, "MLMODEL_SHADOW_SAMPLE": ""}).shadow_sample is None


@pytest.mark.parametrize("value", ["0", "1", "0.5", " 1.0 ", "1e-3"])
def test_a_sample_from_0_to_1_is_accepted(value: str) -> None:
    assert parse_shadow_sample(value) == float(value)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half", "nan", "inf", "50%", "0,5"])
def test_a_bad_sample_names_the_variable_the_value_and_what_is_accepted(value: str) -> None:
    with pytest.raises(ValueError) as info:
        load_settings([], {**BASE, "MLMODEL_SHADOW_SAMPLE": value})
    message = str(info.value)
    assert "MLMODEL_SHADOW_SAMPLE" in message and repr(value) in message
    assert "from 0.0 to 1.0" in message


def test_a_bad_sample_stops_the_server_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {**BASE, "MLMODEL_SHADOW_SAMPLE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "invalid MLMODEL_SHADOW_SAMPLE (--shadow-sample) '2'" in err
    assert "from 0.0 to 1.0" in err


@pytest.mark.parametrize("value", ["http://c:8080", "http://c:8080/", "http://10.0.0.7:1"])
def test_a_discovery_url_is_http_host_and_port(value: str) -> None:
    host, port, authorization = parse_discovery_url(value)
    assert (host, port, authorization) == (value[7:].split(":")[0], port, None)


@pytest.mark.parametrize(
    "value",
    [
        "https://c:8080",
        "http://c",
        "http://c:8080/v2/shadow/offer",
        "http://c:8080?x=1",
        "c:8080",
        "http://:8080",
        "http://c:0",
        "http://c:99999",
    ],
)
def test_a_bad_discovery_url_names_the_variable_the_value_and_what_is_accepted(
    value: str,
) -> None:
    with pytest.raises(ValueError) as info:
        load_settings([], {**BASE, "MLMODEL_SHADOW_DISCOVERY": value})
    message = str(info.value)
    assert "MLMODEL_SHADOW_DISCOVERY" in message and repr(value) in message
    assert "http://<host>:<port>" in message


def test_credentials_in_a_bad_discovery_url_are_not_shown() -> None:
    with pytest.raises(ValueError) as info:
        parse_discovery_url("https://user:secret@c:8080")
    assert "secret" not in str(info.value) and "***@c:8080" in str(info.value)


@pytest.mark.parametrize("value", ["1", "5", "300", "0.5e1"])
def test_discovery_seconds_from_1_to_300(value: str) -> None:
    assert parse_discovery_seconds(value) == float(value)


@pytest.mark.parametrize("value", ["0", "0.5", "301", "soon", "nan"])
def test_bad_discovery_seconds_name_the_variable_and_the_range(value: str) -> None:
    with pytest.raises(ValueError) as info:
        load_settings([], {**BASE, "MLMODEL_SHADOW_DISCOVERY_SECONDS": value})
    message = str(info.value)
    assert "MLMODEL_SHADOW_DISCOVERY_SECONDS" in message and repr(value) in message
    assert "from 1 to 300" in message


# -- the offer ------------------------------------------------------------------------


def test_an_offer_becomes_the_config_the_file_would_give() -> None:
    offer = orjson.dumps({"model": "churn", "version": "2", "sample": 0.25})
    config = parse_offer(offer, URL)
    assert config == ShadowConfig("churn-shadow.team-a.svc.cluster.local", 8080, "churn", "2", 0.25)
    assert config.describe() == {"target": URL, "model": "churn", "version": "2", "sample": 0.25}


@pytest.mark.parametrize(
    ("offer", "names"),
    [
        (b"<html>", ["not JSON", "accepted"]),
        (b"[]", ["JSON list", "accepted"]),
        (b'{"model": "churn", "version": "2"}', ["field 'sample' is missing"]),
        (b'{"model": "churn", "version": "2", "sample": 2}', ["'sample' is 2", "0.0 to 1.0"]),
        (b'{"model": "churn", "version": 2, "sample": 1}', ["'version' is 2"]),
        (
            b'{"model": "churn", "version": "2", "sample": 1, "target": "http://x:1"}',
            ["'target'", "only the fields model, version, sample"],
        ),
    ],
)
def test_an_invalid_offer_names_where_it_came_from_the_field_and_what_is_accepted(
    offer: bytes, names: list[str]
) -> None:
    with pytest.raises(ShadowConfigError) as info:
        parse_offer(offer, URL)
    message = str(info.value)
    assert message.startswith(f"shadow offer {URL}/v2/shadow/offer: ")
    for name in names:
        assert name in message


def test_the_offer_endpoint_answers_only_on_a_candidate(
    iris_model: SklearnModel, registry: CollectorRegistry
) -> None:
    candidate = Client(create_app(make_settings(shadow_sample=0.25), iris_model, registry))
    try:
        reply = candidate.get("/v2/shadow/offer")
        assert reply.status == 200
        assert reply.json() == {"model": "iris", "version": "3", "sample": 0.25}
    finally:
        candidate.close()
    stable = Client(create_app(make_settings(), iris_model, CollectorRegistry()))
    try:
        reply = stable.get("/v2/shadow/offer")
        assert reply.status == 404 and "MLMODEL_SHADOW_SAMPLE" in reply.json()["error"]
    finally:
        stable.close()
    loading = Client(create_app(make_settings(shadow_sample=1.0), None, CollectorRegistry()))
    try:
        assert loading.get("/v2/shadow/offer").status == 503  # no loaded version yet
    finally:
        loading.close()


# -- what is put in force, and logged ----------------------------------------------------


def offered(version: str, sample: float = 1.0, port: int = 8080) -> Discovered:
    return Discovered("offer", ShadowConfig("cand", port, "churn", version, sample))


NOBODY = Discovered("none", detail="cannot connect: [Errno -2] Name or service not known")


def traffic(tmp_path: Path, *, discovery: bool = True) -> tuple[ShadowTraffic, list[bool]]:
    changes: list[bool] = []
    shadow = ShadowTraffic(
        str(tmp_path / "shadow.json"),
        ShadowMetrics(CollectorRegistry(), "churn"),
        timeout=2.0,
        max_in_flight=4,
        model_version=lambda: "1",
        on_change=changes.append,
        discovery=ShadowDiscovery("http://cand:8080", interval=5.0) if discovery else None,
        own_version="1",
    )
    return shadow, changes


def shadow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlmodel_serving.shadow"]


def test_an_offer_turns_mirroring_on_and_no_offer_off_logging_only_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shadow, changes = traffic(tmp_path)
    caplog.set_level(logging.INFO, "mlmodel_serving.shadow")
    for _ in range(3):
        shadow.discovered(offered("2"))
    assert shadow.config == offered("2").config and shadow.source == "discovery"
    assert shadow.status()["config"]["target"] == "http://cand:8080"
    for found in (NOBODY, Discovered("none", detail="no answer within 2 s"), NOBODY):
        shadow.discovered(found)  # another reason is not another state
    assert shadow.config is None
    for _ in range(3):
        shadow.discovered(offered("3"))
    lines = shadow_lines(caplog)
    assert [line.split(":")[0].split(" (")[0] for line in lines] == [
        "shadow traffic on",
        "shadow traffic off",
        "shadow traffic on",
    ]
    assert "no candidate offers copies at http://cand:8080" in lines[1]
    assert changes == [True, False, True]
    assert shadow.stats is not None and shadow.stats.candidate.version == "3"


def test_counts_go_on_when_the_same_candidate_is_found_again(tmp_path: Path) -> None:
    shadow, _ = traffic(tmp_path)
    shadow.discovered(offered("2"))
    assert shadow.stats is not None
    shadow.stats.counts["agree"] = 7
    shadow.discovered(NOBODY)  # one ask that timed out
    shadow.discovered(offered("2"))
    assert shadow.stats.counts["agree"] == 7
    shadow.discovered(offered("3"))  # another candidate: its own counts
    assert shadow.stats.counts["agree"] == 0


def test_an_offer_of_the_own_version_is_ignored_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shadow, changes = traffic(tmp_path)
    caplog.set_level(logging.INFO, "mlmodel_serving.shadow")
    for _ in range(5):
        shadow.discovered(offered("1"))
    assert shadow.config is None
    status = shadow.status()
    assert status["discovery"]["state"] == "own_version" and status["active"] is False
    lines = shadow_lines(caplog)
    assert len(lines) == 1 and "this server's own version" in lines[0]
    assert True not in changes


def test_a_config_file_naming_the_own_version_is_not_applied(tmp_path: Path) -> None:
    shadow, _ = traffic(tmp_path, discovery=False)
    doc = {"target": "http://cand:8080", "model": "churn", "version": "1", "sample": 1.0}
    (tmp_path / "shadow.json").write_bytes(orjson.dumps(doc))
    shadow.check_config()
    assert shadow.config is None
    assert shadow.config_error is not None and "own version" in shadow.config_error


def test_the_file_wins_over_discovery_when_it_has_content(tmp_path: Path) -> None:
    shadow, _ = traffic(tmp_path)
    path = tmp_path / "shadow.json"
    shadow.discovered(offered("2"))
    path.write_bytes(
        orjson.dumps({"target": "http://other:9000", "model": "churn", "version": "5",
                      "sample": 0.5})
    )  # fmt: skip
    shadow.check_config()
    assert shadow.source == "file" and shadow.config is not None
    assert shadow.config.version == "5"
    shadow.discovered(offered("3"))  # discovery goes on, the file stays in force
    assert shadow.config.version == "5"
    path.write_bytes(b"{broken")  # content, but invalid: no mirroring, not discovery's
    shadow.check_config()
    assert shadow.config is None and shadow.config_error is not None
    path.write_bytes(b"{}")  # no content: discovery's offer is in force again
    shadow.check_config()
    assert shadow.source == "discovery" and shadow.config == offered("3").config


def test_an_invalid_offer_is_logged_once_and_not_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shadow, _ = traffic(tmp_path)
    caplog.set_level(logging.INFO, "mlmodel_serving.shadow")
    bad = Discovered("invalid", detail="shadow offer http://cand:8080/v2/shadow/offer: ...")
    for _ in range(4):
        shadow.discovered(bad)
    assert shadow.config is None and shadow.config_error == bad.detail
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


# -- one ask, against a socket in this process -------------------------------------------


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def listening(answer: Answer) -> AsyncIterator[int]:
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def replying(status: int, body: bytes) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /v2/shadow/offer HTTP/1.1\r\n")
        writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
        await writer.drain()
        writer.close()

    return answer


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


def ask(answer: Answer | None, timeout: float = 2.0) -> Discovered:
    async def run() -> Discovered:
        if answer is None:
            async with listening(silent) as port:
                pass  # closed again: nobody listens on this port now
            return await ShadowDiscovery(f"http://127.0.0.1:{port}", interval=1).ask()
        async with listening(answer) as port:
            discovery = ShadowDiscovery(f"http://127.0.0.1:{port}", interval=1, timeout=timeout)
            return await discovery.ask()

    return asyncio.run(run())


def test_asking_finds_an_offer() -> None:
    found = ask(replying(200, b'{"model": "churn", "version": "2", "sample": 0.5}'))
    assert found.state == "offer" and found.config is not None
    assert (found.config.host, found.config.version, found.config.sample) == ("127.0.0.1", "2", 0.5)


@pytest.mark.parametrize(
    ("answer", "state", "detail"),
    [
        (replying(404, b'{"error": "no"}'), "none", "404"),
        (replying(503, b'{"error": "loading"}'), "none", "503"),
        (replying(200, b'{"model": "churn"}'), "invalid", "field 'version' is missing"),
        (silent, "none", "no answer within 0.2 s"),
        (None, "none", "cannot connect"),
    ],
)
def test_asking_finds_no_offer(answer: Answer | None, state: str, detail: str) -> None:
    found = ask(answer, timeout=0.2)
    assert found.state == state and found.config is None and detail in found.detail


# -- a copy leaves no decision record on a candidate -------------------------------------


class RecordingLog:
    """What ServingApp needs of a DecisionLog: it accepts, and keeps what it is given."""

    accepting = True

    def __init__(self) -> None:
        self.records: list[Decision] = []

    def add(self, decision: Decision) -> None:
        self.records.append(decision)


@pytest.mark.parametrize(("sample", "recorded_copies"), [(1.0, 0), (None, 1)])
def test_a_copy_is_answered_and_counted_but_not_recorded_on_a_candidate(
    iris_model: SklearnModel, sample: float | None, recorded_copies: int
) -> None:
    """A candidate (it offers copies) records none; a server that offers none records
    every request, so the header cannot leave a client's decision unrecorded there."""
    app = create_app(make_settings(shadow_sample=sample), iris_model, CollectorRegistry())
    recording = RecordingLog()
    app.decision_log = recording  # type: ignore[assignment]
    client = Client(app)
    body = orjson.dumps(v2_body([ROW]))
    copy = [(b"x-mlmodel-shadow", b"1"), (b"x-request-id", b"copy-1")]
    try:
        assert client.call("POST", "/v2/models/iris/infer", body, headers=copy).status == 200
        assert client.call("POST", "/v1/models/iris:predict",
                           orjson.dumps({"instances": [ROW]}), headers=copy).status == 200  # fmt: skip
        direct = [(b"x-request-id", b"direct-1")]
        assert client.call("POST", "/v2/models/iris/infer", body, headers=direct).status == 200
        metrics = client.get("/metrics").body.decode()
    finally:
        client.close()
    ids = [d.request_id for d in recording.records]
    assert ids.count("copy-1") == 2 * recorded_copies and ids.count("direct-1") == 1
    counted = 'mlmodel_requests_total{code="200",model="iris",protocol="v2",route="/v2/models/{model_name}/infer"} 2.0'
    assert counted in metrics
