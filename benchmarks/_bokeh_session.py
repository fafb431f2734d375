"""A page load as the browser does it with the dashboard's server, without a browser.

``GET /`` (the page's HTML, with the session token Bokeh put in it), then the page's Bokeh
websocket (``/ws``, the token as subprotocol): the server's ``ACK``, ``PULL-DOC-REQ``, and
— like BokehJS once it has shown the document — ``document_ready``, until the message that
brings the page's models arrives (the pull reply, or the later ``PATCH-DOC`` of a server
that builds the page only once it is shown). Only the messages needed for that are spoken.

Shared by ``benchmarks/dashboard_load.py`` and ``tests/test_dashboard_security.py`` (the
leading underscore keeps ``python -m benchmarks`` from running it as a benchmark).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import orjson
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

#: The session token BokehJS reads from the page to open the websocket.
TOKEN_RE = re.compile(r'"token":"([^"]+)"')
#: In a document's JSON once the page's models are there (the breakdown table's name).
PAGE_MARK = "breakdown-table"
#: What BokehJS sends once it has shown a document (``PATCH-DOC`` content).
DOCUMENT_READY = {
    "events": [
        {
            "kind": "MessageSent",
            "msg_type": "bokeh_event",
            "msg_data": {"type": "event", "name": "document_ready", "values": {"type": "map"}},
        }
    ]
}


class SessionError(RuntimeError):
    """The server did not hold up its side: no token, an ``ERROR`` reply, a closed socket."""


async def fetch_page(client: AsyncHTTPClient, url: str, *, timeout_s: float) -> str:
    """``GET url``: the page's HTML (Bokeh creates the session's document for it)."""
    response = await client.fetch(url, request_timeout=timeout_s)
    return response.body.decode()


def session_token(page_html: str) -> str:
    """The Bokeh session token in a page's HTML."""
    match = TOKEN_RE.search(page_html)
    if match is None:
        raise SessionError("no session token in the page")
    return match.group(1)


async def pull_document(url: str, token: str, *, timeout_s: float) -> str:
    """Open the page's websocket and wait until the page's models have arrived.

    Returns the content (JSON text, not parsed) of the message that brought them. Raises
    :class:`TimeoutError` after ``timeout_s`` in all, :class:`SessionError` when the server
    answers an error or closes the websocket.
    """
    origin = url.rstrip("/")
    request = HTTPRequest(
        "ws" + origin.removeprefix("http") + "/ws",
        headers={"Origin": origin},
        request_timeout=timeout_s,
    )
    async with asyncio.timeout(timeout_s):
        conn = await websocket_connect(request, subprotocols=["bokeh", token])
        try:
            await read_message(conn)  # ACK
            pull = await send_message(conn, "PULL-DOC-REQ", {})
            while True:
                header, content = await read_message(conn)
                if header.get("msgtype") == "ERROR":
                    raise SessionError(f"the server answered an error: {content[:300]!r}")
                if header.get("msgtype") in ("PULL-DOC-REPLY", "PATCH-DOC") and (
                    PAGE_MARK in content
                ):
                    return content
                if header.get("reqid") == pull:
                    await send_message(conn, "PATCH-DOC", DOCUMENT_READY)
        finally:
            conn.close()


async def load_page(client: AsyncHTTPClient, url: str, *, timeout_s: float = 60.0) -> str:
    """:func:`fetch_page` then :func:`pull_document`: the content that brought the models."""
    page_html = await fetch_page(client, url, timeout_s=timeout_s)
    return await pull_document(url, session_token(page_html), timeout_s=timeout_s)


async def send_message(
    conn: WebSocketClientConnection, msgtype: str, content: dict[str, Any]
) -> str:
    """Send one Bokeh protocol message (no metadata, no buffers); its ``msgid``."""
    msgid = uuid.uuid4().hex
    for frame in ({"msgid": msgid, "msgtype": msgtype}, {}, content):
        await conn.write_message(orjson.dumps(frame).decode())
    return msgid


async def read_message(conn: WebSocketClientConnection) -> tuple[dict[str, Any], str]:
    """Read one Bokeh protocol message (header, metadata, content, buffers).

    Returns its header and its content (as received, JSON text); buffers are skipped.
    """
    frames: list[str | bytes] = []
    for _ in range(3):
        frame = await conn.read_message()
        if frame is None:
            raise SessionError("the websocket closed")
        frames.append(frame)
    header: dict[str, Any] = orjson.loads(frames[0])
    buffers = header.get("num_buffers", 0)
    for _ in range(2 * (buffers if isinstance(buffers, int) else 0)):
        if await conn.read_message() is None:
            raise SessionError("the websocket closed mid-message")
    content = frames[2]
    return header, content if isinstance(content, str) else content.decode()
