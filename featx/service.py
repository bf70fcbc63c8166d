"""The HTTP service: /embed, /predict, /search, /health and /info over the library (FastAPI)."""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from . import __version__
from .backbones import DEFAULT_BACKBONE, Backbone, create_backbone, create_backbone_for, sha256_file
from .batching import MicroBatcher
from .bundles import HeadBundle, load_bundle
from .embed import Embedder
from .errors import FeatxError, ImageError, StoreError
from .images import load_input
from .index import VectorIndex, open_index
from .search import member_info, resolve_ids
from .sources import content_hash
from .store import FeatureStore, find_dataset, store_dir

MAX_K = 1000
MAX_FILES = 64


class ServiceError(FeatxError):
    """A request the service cannot answer; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Resources:
    """What the service serves: a backbone, and optionally a head and a dataset to search."""

    backbone: Backbone
    bundle: HeadBundle | None = None
    store: FeatureStore | None = None
    dataset: str | None = None
    index: VectorIndex | None = None
    unindexed: int | None = None
    members: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def open_resources(
    *, dataset: str | None = None, head: str | None = None, backbone: str | None = None,
    weights: str | None = None, image_size: int | None = None, precision: str = "auto", cache: str | None = None,
) -> Resources:
    """Load the head (its backbone configuration wins), the dataset's store and index, and the backbone."""
    bundle = load_bundle(head) if head else None
    store = None
    if dataset and bundle is not None:
        path = store_dir(bundle.config, cache)
        if not path.is_dir():
            raise StoreError(f"no store for the head's backbone configuration ({bundle.config.describe()}) under "
                             f"{path.parent}; embed {dataset} with it first.")
        store = FeatureStore(path)
    elif dataset:
        store = find_dataset(dataset, cache, backbone, image_size=image_size, precision=precision,
                             weights_sha256=sha256_file(weights) if weights else None)
    try:
        if store is not None:
            store.dataset(dataset)  # raises, naming the datasets there, when it is missing
        if bundle is not None:
            model = create_backbone_for(bundle.config, weights)
        elif store is not None:
            model = create_backbone_for(store.config, weights)
        else:
            model = create_backbone(backbone or DEFAULT_BACKBONE, weights=weights, image_size=image_size,
                                    precision=precision)
        resources = Resources(backbone=model, bundle=bundle, store=store, dataset=dataset)
        if store is not None:
            resources.index, resources.unindexed = open_index(store, dataset)
            resources.members = member_info(store, dataset)
    except BaseException:
        if store is not None:
            store.close()
        raise
    return resources


# --- response schemas (they make the OpenAPI document) ----------------------------------------


class ErrorBody(BaseModel):
    error: str


class Embedding(BaseModel):
    filename: str | None
    key: str = Field(description="SHA-256 of the uploaded bytes: the key featx stores this image's vector under")
    vector: list[float]


class EmbedResponse(BaseModel):
    backbone: str
    store_key: str = Field(description="the backbone configuration's key: vectors are comparable within one key")
    dim: int
    results: list[Embedding]


class ClassScore(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    filename: str | None
    key: str
    predictions: list[ClassScore]


class PredictResponse(BaseModel):
    head: str
    dataset: str
    results: list[Prediction]


class Neighbour(BaseModel):
    rank: int
    key: str
    path: str
    label: str | None
    score: float


class SearchResponse(BaseModel):
    dataset: str
    query: str
    exact: bool
    results: list[Neighbour]


ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 422)}


# --- the application --------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
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
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        mb = self.max_bytes / 2**20
        await _error(413, f"the request is larger than the limit of {mb:g} MB; send fewer or smaller images, or "
                          "start featx serve with a larger --max-upload-mb.")(scope, receive, send)


class _TooLarge(Exception):
    pass


class BearerAuth:
    """ASGI middleware: every path but /health needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health":
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                response = _error(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'.",
                                  {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(resources: Resources, *, token: str | None = None, max_upload_mb: float = 20.0,
               max_batch: int = 32, max_wait_ms: float = 5.0) -> FastAPI:
    """The FastAPI application over ``resources``; concurrent requests share forward passes."""
    embedder = Embedder(resources.backbone)
    preprocess = resources.backbone.config.preprocess
    store_lock = threading.Lock()  # one SQLite connection, shared by request threads
    state: dict = {}
    state_lock = threading.Lock()

    def batcher() -> MicroBatcher:
        # Started on first use as well as at start-up, so an app served again after a shutdown works.
        with state_lock:
            if state.get("batcher") is None:
                state["batcher"] = MicroBatcher(lambda crops: embedder.embed_crops(list(crops), max_batch),
                                                max_batch, max_wait_ms / 1000.0)
            return state["batcher"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher()
        yield
        # uvicorn has finished the requests in flight by now (graceful shutdown): stop the worker.
        with state_lock:
            running = state.pop("batcher", None)
        if running is not None:
            running.close()

    app = FastAPI(
        title="featx", version=__version__, lifespan=lifespan,
        description="Embed images with a frozen backbone, classify them with a trained head, and find similar "
                    "images in an indexed dataset.",
    )

    @app.exception_handler(FeatxError)
    async def featx_error(_request: Request, e: FeatxError):
        return _error(getattr(e, "status", 422 if isinstance(e, ImageError) else 400), str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _error(422, "; ".join(parts) or "invalid request")

    async def embed_uploads(files: list[UploadFile]) -> tuple[np.ndarray, list[str]]:
        if not files:
            raise ServiceError("send at least one image in the 'files' field.", 422)
        if len(files) > MAX_FILES:
            raise ServiceError(f"at most {MAX_FILES} images per request, not {len(files)}.", 413)
        blobs = [await f.read() for f in files]

        def decode(i: int) -> np.ndarray:
            try:
                return load_input(blobs[i], preprocess)
            except ImageError as e:
                raise ImageError(f"{files[i].filename or f'file {i + 1}'}: {e}") from None

        crops = await run_in_threadpool(lambda: [decode(i) for i in range(len(blobs))])
        vectors = await asyncio.wrap_future(batcher().submit(np.stack(crops)))
        return vectors, [content_hash(b) for b in blobs]

    @app.get("/health", summary="Liveness: 200 while the service runs (no token needed)")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info", summary="What is loaded: backbone, store key, head, dataset and index")
    async def info() -> dict:
        cfg = resources.backbone.config
        running = state.get("batcher")
        index = resources.index
        return {
            "featx_version": __version__,
            "backbone": {"name": cfg.name, "describe": cfg.describe(), "dim": cfg.dim,
                         "image_size": cfg.preprocess.input_size, "precision": cfg.precision,
                         "weights_sha256": cfg.weights_sha256},
            "store_key": cfg.key,
            "head": None if resources.bundle is None else {
                "name": resources.bundle.head_name, "dataset": resources.bundle.dataset,
                "classes": resources.bundle.classes, "metrics": resources.bundle.metrics.get("test")},
            "dataset": resources.dataset,
            "index": None if index is None else {
                "kind": index.kind, "n": index.n, "recall_at_10": index.recall_at_10,
                "exact": resources.unindexed is None, "unindexed": resources.unindexed or 0},
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms,
                         "forward_passes": running.batches if running else 0,
                         "images": running.images if running else 0},
        }

    @app.post("/embed", response_model=EmbedResponse, responses=ERRORS,
              summary="Feature vectors of one or more uploaded images")
    async def embed(files: Annotated[list[UploadFile], File(description="image files")]):
        vectors, keys = await embed_uploads(files)
        return {"backbone": resources.backbone.name, "store_key": resources.backbone.config.key,
                "dim": int(vectors.shape[1]),
                "results": [{"filename": f.filename, "key": k, "vector": v.tolist()}
                            for f, k, v in zip(files, keys, vectors)]}

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="Top-k classes with probabilities from the loaded head")
    async def predict(files: Annotated[list[UploadFile], File(description="image files")],
                      top_k: Annotated[int, Query(ge=1, le=MAX_K, description="classes per image")] = 3):
        bundle = resources.bundle
        if bundle is None:
            raise ServiceError("no head is loaded: start featx serve with --head FILE (from `featx train`).", 409)
        vectors, keys = await embed_uploads(files)
        proba = await run_in_threadpool(bundle.head.predict_proba, vectors)
        classes = bundle.classes
        results = []
        for f, k, p in zip(files, keys, proba):
            order = np.argsort(-p)[:top_k]
            results.append({"filename": f.filename, "key": k,
                            "predictions": [{"label": classes[j], "probability": float(p[j])} for j in order]})
        return {"head": bundle.head_name, "dataset": bundle.dataset, "results": results}

    @app.post("/search", response_model=SearchResponse, responses=ERRORS,
              summary="Nearest images in the dataset to an uploaded image or a stored sample's key")
    async def search(file: Annotated[UploadFile | None, File(description="a query image")] = None,
                     key: Annotated[str | None, Form(description="or: a stored sample's key (8+ characters)")] = None,
                     k: Annotated[int, Query(ge=1, le=MAX_K, description="neighbours to return")] = 10):
        index = resources.index
        if index is None or resources.store is None:
            raise ServiceError("no dataset is loaded: start featx serve with --dataset NAME.", 409)
        if (file is None) == (key is None):
            raise ServiceError("send exactly one of 'file' (an image) or 'key' (a stored sample).", 422)
        if k > index.n:
            raise ServiceError(f"k must be at most the dataset's size ({index.n}), not {k}.", 422)
        if file is not None:
            vectors, _ = await embed_uploads([file])
            query = file.filename or "upload"
        else:
            try:
                full = resolve_ids(list(resources.members), [key.strip()])[0]
            except FeatxError as e:
                raise ServiceError(str(e).replace("id:", "key "), 404) from None
            with store_lock:
                vectors = resources.store.vectors([full])
            query = f"key:{full}"
        D, I = await run_in_threadpool(index.search, vectors, k)
        rows = []
        for rank, (score, i) in enumerate(((s, i) for s, i in zip(D[0], I[0]) if i >= 0), start=1):
            member = str(index.keys[i])
            path, label = resources.members.get(member, ("?", None))
            rows.append({"rank": rank, "key": member, "path": path, "label": label, "score": float(score)})
        return {"dataset": resources.dataset, "query": query, "exact": resources.unindexed is None, "results": rows}

    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * 2**20))
    if token:
        app.add_middleware(BearerAuth, token=token)
    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM, then finish requests in flight and stop."""
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again under the handler
    # that was there before it: a no-op here, so a clean shutdown exits 0 instead of "killed by SIGTERM".
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(app, host=host, port=port, log_level=os.environ.get("FEATX_LOG_LEVEL", "info"),
                    timeout_graceful_shutdown=30)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

