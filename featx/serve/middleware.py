"""ASGI middleware in front of the app: the body-size limit, bearer-token auth, and the one error shape."""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before it is all read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        seen, too_large, responded = 0, False, False

        async def counted():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                too_large = True
                raise _TooLarge
            return message

        async def guarded(message):
            # The form parser turns any error while reading into its own 400; once the limit is passed, that
            # answer is dropped and the 413 below is sent instead.
            nonlocal responded
            if not too_large:
                responded = True
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _TooLarge:
            pass
        if too_large and not responded:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        mb = self.max_bytes / 2**20
        await error_response(413, f"the request is larger than the limit of {mb:g} MB; send fewer or smaller images, or "
                          "start featx serve with a larger --max-upload-mb.")(scope, receive, send)


class _TooLarge(Exception):
    pass


def is_public(path: str) -> bool:
    """/health, and the page with its static files: they hold no data (the page asks for the token itself)."""
    return path in ("/health", "/") or path.startswith("/static/")


class BearerAuth:
    """ASGI middleware: every path but the public ones needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_public(scope["path"]):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                response = error_response(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'.",
                                  {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
