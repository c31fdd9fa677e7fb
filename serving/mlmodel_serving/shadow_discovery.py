"""Shadow discovery: ask a URL whether a candidate offers to take copies.

The operator gives every serving Pod of a model ``MLMODEL_SHADOW_DISCOVERY``
(``http://<model>-shadow.<namespace>.svc.<domain>:8080``). While a shadow rollout runs, that
Service selects the candidate's Pods, which answer ``GET /v2/shadow/offer`` with their model,
version and sample; outside one the name does not resolve. So the stable asks every few
seconds, off the request path, and turns each answer into the same
:class:`~mlmodel_serving.shadow_config.ShadowConfig` the file would give: the target is the
URL asked. No ConfigMap to write, and no Pod restarted to start or stop a shadow.

What :class:`ShadowTraffic <mlmodel_serving.shadow.ShadowTraffic>` does with an answer (and
what it logs) is decided there; this module only asks and reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlmodel_serving.httpclient import HttpClientError, HttpPool
from mlmodel_serving.shadow_config import (
    MAX_CONFIG_BYTES,
    OFFER_PATH,
    ShadowConfig,
    ShadowConfigError,
    format_target,
    parse_discovery_url,
    parse_offer,
)

#: The whole exchange of one ask (resolve, connect, answer): a candidate's offer is a few
#: bytes, so a slow answer means no candidate worth mirroring to.
DISCOVERY_TIMEOUT_SECONDS = 2.0

#: ``offer``: a valid offer; ``none``: nobody offers (unresolvable, refused, timed out, 404
#: or another status); ``invalid``: an answer that is not a valid offer; ``own_version``: a
#: valid offer naming the asking server's own version (set by the asker, which knows it).
OfferState = Literal["offer", "none", "invalid", "own_version"]


@dataclass(frozen=True, slots=True)
class Discovered:
    """What one ask found."""

    state: OfferState
    config: ShadowConfig | None = None  # set when ``state`` is ``offer``
    detail: str = ""  # why there is no offer (for the status endpoint and the log)


class ShadowDiscovery:
    """Asks ``url`` + ``/v2/shadow/offer``; one short-lived connection per ask (the Service
    behind the URL may be deleted and created again with another address)."""

    def __init__(
        self, url: str, *, interval: float, timeout: float = DISCOVERY_TIMEOUT_SECONDS
    ) -> None:
        self.host, self.port, self._authorization = parse_discovery_url(url)
        self.url = format_target(self.host, self.port)  # without credentials
        self._target = url
        self.interval = interval
        self.timeout = timeout
        # max_idle=0: the connection is closed after each answer, never kept.
        self._pool = HttpPool(self.host, self.port, max_idle=0, max_body_bytes=MAX_CONFIG_BYTES)
        self.asked = 0  # asks so far (the status endpoint shows it)

    async def ask(self) -> Discovered:
        """Ask once. Never raises for what the network or the other side does."""
        self.asked += 1
        headers = [(b"accept", b"application/json")]
        if self._authorization is not None:
            headers.append((b"authorization", self._authorization.encode()))
        try:
            answer = await self._pool.get(OFFER_PATH, headers, timeout=self.timeout)
        except TimeoutError:
            return Discovered("none", detail=f"no answer within {self.timeout:g} s")
        except (OSError, HttpClientError) as exc:  # unresolvable, refused, reset
            return Discovered("none", detail=f"cannot connect: {exc}")
        if answer.status == 404:
            return Discovered("none", detail="404: the server there offers no copies")
        if answer.status != 200:  # e.g. 503 while the candidate still loads its model
            return Discovered("none", detail=f"answered {answer.status}")
        try:
            return Discovered("offer", parse_offer(answer.body, self._target))
        except ShadowConfigError as exc:
            return Discovered("invalid", detail=str(exc))

    def close(self) -> None:
        self._pool.close()
