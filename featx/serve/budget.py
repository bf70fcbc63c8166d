"""The server-wide decoding budget: concurrent requests share one bound on the bytes their images decode to."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from .errors import ServiceError


class DecodeBudget:
    """At most ``limit`` bytes of decoded images at once, over every request the service is answering.

    A request larger than the whole budget is refused (413); others wait for their share, so three
    concurrent requests of huge 16-bit PNGs cost what one costs instead of three times as much.
    """

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._changed: asyncio.Condition | None = None
        self._loop = None

    @asynccontextmanager
    async def hold(self, n: int, pixels: int):
        if n > self.limit:
            raise ServiceError(f"the images hold {pixels / 1e6:,.0f} million pixels ({n / 1e9:.1f} GB decoded), more "
                               f"than this service decodes at once ({self.limit / 1e9:.1f} GB); send fewer or smaller "
                               "images.", 413)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # made inside the serving event loop (an app may be served again later)
            self._changed, self._loop, self.used = asyncio.Condition(), loop, 0
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            async with self._changed:
                self.used -= n
                self._changed.notify_all()
