"""The operator's liveness and readiness endpoints (mlmodel_operator.probes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlmodel_operator.localcluster import free_port
from mlmodel_operator.probes import ProbeAddress, ProbeServer, probe_address


def test_the_readiness_is_served_on_the_liveness_address() -> None:
    assert probe_address("http://0.0.0.0:8081/healthz", "/readyz") == ProbeAddress(
        "0.0.0.0", 8081, "/healthz", "/readyz"
    )
    assert probe_address("http://127.0.0.1:9/healthz", "").readiness is None


@pytest.mark.parametrize(
    ("liveness", "readiness", "named"),
    [
        ("https://0.0.0.0:8081/healthz", "/readyz", "--liveness"),
        ("http://0.0.0.0/healthz", "/readyz", "--liveness"),
        ("http://0.0.0.0:8081/healthz", "readyz", "--readiness"),
        ("http://0.0.0.0:8081/healthz", "/healthz", "--readiness"),
    ],
)
def test_an_address_that_cannot_be_served_is_refused_naming_the_flag(
    liveness: str, readiness: str, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        probe_address(liveness, readiness)


def server(ready: bool) -> ProbeServer:
    address = ProbeAddress("127.0.0.1", free_port(), "/healthz", "/readyz")
    return ProbeServer(address, lambda: (ready, {"ready": ready, "reason": "why"}))


def test_answers() -> None:
    probes = server(ready=False)
    assert probes.answer("GET", "/healthz") == (200, {})
    assert probes.answer("GET", "/readyz?verbose=1") == (503, {"ready": False, "reason": "why"})
    assert server(ready=True).answer("HEAD", "/readyz")[0] == 200
    assert probes.answer("POST", "/readyz")[0] == 405
    code, body = probes.answer("GET", "/metrics")
    assert code == 404 and "/healthz, /readyz" in body["error"]


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def test_a_real_probe_gets_an_http_answer_and_junk_gets_closed() -> None:
    probes = server(ready=False)

    async def scenario() -> list[Any]:
        await probes.start()
        try:
            port = probes.address.port
            return [
                await _get(
                    port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe\r\n\r\n"
                ),
                await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n"),
                await _get(port, b"X" * 10_000),  # no request line end within the limit
            ]
        finally:
            await probes.stop()

    not_ready, alive, junk = asyncio.run(scenario())
    assert not_ready.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert not_ready.endswith(b'{"ready": false, "reason": "why"}')
    assert alive.startswith(b"HTTP/1.1 200 OK\r\n") and alive.endswith(b"{}")
    assert junk == b""


def test_the_shipped_deployment_probes_the_paths_the_operator_serves() -> None:
    import yaml

    from mlmodel_operator.cli import build_parser
    from mlmodel_operator.localcluster import REPO_ROOT

    dep = yaml.safe_load((REPO_ROOT / "manifests" / "operator" / "deployment.yaml").read_text())
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    address = probe_address(args.liveness, args.readiness)
    health = next(p for p in container["ports"] if p["name"] == "health")
    assert health["containerPort"] == address.port
    assert container["livenessProbe"]["httpGet"] == {"path": address.liveness, "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": address.readiness, "port": "health"}
