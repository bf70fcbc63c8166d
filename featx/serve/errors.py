"""The service's side of errors: the HTTP status of each library error, and the service's own."""

from __future__ import annotations

from ..errors import (
    DamagedStoreError, DataError, FeatxError, ImageError, ParameterError, StoreBusyError, StoreError,
)

# The most specific class listed decides (a DamagedStoreError is a StoreError: 409, not 404); others are 400.
STATUS = {ParameterError: 422, ImageError: 422, StoreError: 404, DamagedStoreError: 409, StoreBusyError: 409,
          DataError: 409}


class ServiceError(FeatxError):
    """A request the service cannot answer; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def http_status(e: FeatxError) -> int:
    """The status the service answers ``e`` with."""
    if isinstance(e, ServiceError):
        return e.status
    return next((STATUS[c] for c in type(e).__mro__ if c in STATUS), 400)
