"""The raw "hello" floor: an asyncio protocol on uvloop feeding httptools directly.

No framework, no ASGI: the least a Python HTTP/1.1 server on this stack can do per
request (parse it, read its body, write a fixed keep-alive response). The model server
under test is built on the same two libraries, so this is its ceiling for small models.

Usage: python hello_raw_server.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop

BODY = b'{"outputs":[{"name":"hello","shape":[1],"datatype":"INT64","data":[0]}]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class HelloProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, host="127.0.0.1", port=port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
