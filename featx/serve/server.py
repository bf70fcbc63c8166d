"""Running an app under uvicorn with a graceful shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

from fastapi import FastAPI


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM, then finish requests in flight and stop."""
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again under the handler
    # that was there before it: a no-op here, so a clean shutdown exits 0 instead of "killed by SIGTERM".
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level,
                    timeout_graceful_shutdown=30)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
