"""Request body size limits, enforced before the body reaches any parser.

A declared Content-Length over the limit is refused at once; a chunked body is counted as it
streams and cut off at the limit. Document uploads get a larger limit than JSON.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mamori.web.errors import BodyTooLarge, error_body


class BodyLimit:
    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    def _limit(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        return self.upload_limit if path.endswith("/documents") else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = True
            if too_big:
                await _refuse(send, limit)
                return
        seen = 0
        exceeded = False
        replaced = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            # Body parsers may turn our exception into their own 400; once the limit was
            # crossed, whatever the app answers is replaced by the 413.
            nonlocal replaced
            if exceeded:
                if not replaced:
                    replaced = True
                    await _refuse(send, limit)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not replaced:
                await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body: dict[str, Any] = error_body(
        "body_too_large",
        f"送信データが大きすぎます（上限 {limit} バイト）。",
        f"Request body too large (limit {limit} bytes).",
    )
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
