"""The HTTP app: /embed, /predict, /search, /thumbnail, /map, /audit, /select, /health, /info and the page at / (FastAPI)."""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..data import content_hash, decode_input
from ..data.images import image_decode_bytes
from ..embed import Embedder
from ..errors import FeatxError, ImageError, ParameterError
from .errors import ServiceError, http_status
from ..heads.workflows import top_classes
from ..search import answer_queries, check_k, resolve_ids
from ..select.runner import STRATEGIES
from .batching import MicroBatcher
from .middleware import BearerAuth, BodyLimit, error_response
from .resources import Resources
from .thumbnails import STATIC, MapCache, ThumbnailCache, audit_findings
from .budget import DecodeBudget
from .schemas import ERRORS, EmbedResponse, PredictResponse, SearchResponse

MAX_K = 1000
MAX_SELECT = 200  # picks /select makes at once (seconds on the page's thread pool); more belong to `featx select`
MAX_FILES = 64
# Decoding work the service does at once, over all requests: 64 twelve-megapixel photos fit, sixteen
# 9000×9000 PNGs (1.3 MB of bytes, 10 s of decoding and +550 MB before this bound) do not.
MAX_DECODE_BYTES = 3_200_000_000  # server-wide, all requests together (800 million RGB pixels and their source)


def check_limits(max_upload_mb: float, max_batch: int, max_wait_ms: float) -> None:
    """Refuse limits that would make the service useless or unbounded, naming the parameter."""
    if not max_upload_mb > 0:
        raise ParameterError("max_upload_mb", f"must be more than 0, not {max_upload_mb}.")
    if max_batch < 1:
        raise ParameterError("max_batch", f"must be at least 1, not {max_batch}.")
    if not max_wait_ms >= 0:
        raise ParameterError("max_wait_ms", f"must be 0 or more, not {max_wait_ms}.")


def create_app(resources: Resources, *, token: str | None = None, max_upload_mb: float = 20.0,
               max_batch: int = 32, max_wait_ms: float = 5.0, max_decode_bytes: int = MAX_DECODE_BYTES) -> FastAPI:
    """The FastAPI application over ``resources``; concurrent requests share forward passes, and the bytes
    their images decode to share ``max_decode_bytes`` (a request wants more alone: 413)."""
    check_limits(max_upload_mb, max_batch, max_wait_ms)
    if token is not None and not token.strip():
        raise ParameterError("token", "must not be empty: an empty token would turn authentication off.")
    embedder = Embedder(resources.runtime)
    preprocess = resources.runtime.config.preprocess
    store_lock = threading.Lock()  # one SQLite connection, shared by request threads
    decoding = DecodeBudget(max_decode_bytes)
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
        return error_response(http_status(e), str(e))

    @app.exception_handler(Exception)
    async def server_error(_request: Request, e: Exception):  # a bug still answers in the one error shape
        return error_response(500, f"internal error ({type(e).__name__}); the server's log has the details.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, e: StarletteHTTPException):  # 404, 405…: the same error shape
        return error_response(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(422, "; ".join(parts) or "invalid request")

    async def embed_uploads(files: list[UploadFile]) -> tuple[np.ndarray, list[str]]:
        if not files:
            raise ServiceError("send at least one image in the 'files' field.", 422)
        if len(files) > MAX_FILES:
            raise ServiceError(f"at most {MAX_FILES} images per request, not {len(files)}.", 413)
        blobs = [await f.read() for f in files]
        sizes = [image_decode_bytes(b) for b in blobs]  # from the headers: nothing decoded yet

        def decode(i: int) -> np.ndarray:
            try:
                return decode_input(blobs[i], preprocess)
            except ImageError as e:
                raise ImageError(f"{files[i].filename or f'file {i + 1}'}: {e}") from None

        async with decoding.hold(sum(n for _, n in sizes), sum(p for p, _ in sizes)):
            crops = await run_in_threadpool(lambda: [decode(i) for i in range(len(blobs))])
        vectors = await asyncio.wrap_future(batcher().submit(np.stack(crops)))
        return vectors, [content_hash(b) for b in blobs]

    @app.get("/health", summary="Liveness: 200 while the service runs (no token needed)")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info", summary="What is loaded: backbone, store, head, dataset and index")
    async def info() -> dict:
        cfg = resources.runtime.config
        running = state.get("batcher")
        index = resources.index
        store = None
        if resources.store is not None:
            with store_lock:
                store = await run_in_threadpool(resources.store.describe)
        return {
            "featx_version": __version__,
            "backbone": {"name": cfg.name, "describe": cfg.describe(), "dim": cfg.dim,
                         "image_size": cfg.preprocess.input_size, "precision": cfg.precision,
                         "weights_sha256": cfg.weights_sha256},
            "runtime": resources.runtime.choice.to_dict(),
            "store_key": cfg.key,
            "store": store,
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
        return {"backbone": resources.runtime.config.name, "store_key": resources.runtime.config.key,
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
        ranked = await run_in_threadpool(top_classes, bundle, vectors, top_k)
        return {"head": bundle.head_name, "dataset": bundle.dataset,
                "results": [{"filename": f.filename, "key": k, "predictions": preds}
                            for f, k, preds in zip(files, keys, ranked)]}

    @app.post("/search", response_model=SearchResponse, responses=ERRORS,
              summary="Nearest images in the dataset to uploaded images, or to a stored sample's key")
    async def search(files: Annotated[list[UploadFile] | None, File(description="query images")] = None,
                     key: Annotated[str | None, Form(description="or: a stored sample's key (8+ characters)")] = None,
                     k: Annotated[int, Query(ge=1, le=MAX_K, description="neighbours per query")] = 10):
        index = resources.index
        if index is None or resources.store is None:
            raise ServiceError("no dataset is loaded: start featx serve with --dataset NAME.", 409)
        if bool(files) == (key is not None):
            raise ServiceError("send exactly one of 'files' (query images) or 'key' (a stored sample).", 422)
        check_k(k, index.n)
        if files:
            vectors, _ = await embed_uploads(files)
            queries = [f.filename or f"upload {i + 1}" for i, f in enumerate(files)]
        else:
            try:
                full = resolve_ids(list(resources.members), [key.strip()])[0]
            except FeatxError as e:
                raise ServiceError(str(e), 404) from None
            with store_lock:
                vectors = resources.store.vectors([full])
            queries = [f"id:{full}"]  # as featx search names a stored sample
        results = await run_in_threadpool(answer_queries, index, vectors, queries, k, resources.members)
        return {"dataset": resources.dataset, "exact": resources.unindexed is None, "results": results}

    thumbnails = ThumbnailCache(resources)
    maps = MapCache(resources, store_lock)

    @app.get("/thumbnail/{key}", summary="A small JPEG of a sample of the loaded dataset (by its full key)",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **ERRORS})
    async def thumbnail(key: str):
        data = await run_in_threadpool(thumbnails.get, key)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    async def loaded_map(what=maps.get):
        if resources.store is None:
            raise ServiceError("no dataset is loaded: start featx serve with --dataset NAME.", 409)
        return await run_in_threadpool(what)

    @app.get("/map", summary="The loaded dataset's 2-D map: a point per sample with its key, label and split",
             responses={200: {"content": {"application/json": {}, "application/octet-stream": {}}}, **ERRORS})
    async def dataset_map(packing: Annotated[Literal["json", "binary"], Query(
                alias="format", description="json: every point with its key; binary: coordinates and label codes packed "
                                         "in 7 bytes a point, keys from /map/point/{i} (featx.serve.packed_map; what "
                                         "the page reads)")] = "json"):
        if packing == "binary":
            return Response(await loaded_map(maps.packed), media_type="application/octet-stream")
        layout = await loaded_map()
        info = maps.point_info(layout)
        return {"dataset": resources.dataset, "method": layout.method, "n": len(layout.keys),
                "keys": layout.keys.tolist(), "x": np.round(layout.points[:, 0], 4).tolist(),
                "y": np.round(layout.points[:, 1], 4).tolist(),
                "labels": [i[1] for i in info], "splits": [i[2] for i in info]}

    @app.get("/map/point/{i}", summary="One point of the map: its sample's key, path, label and split")
    async def map_point(i: Annotated[int, Path(ge=0, description="the point's position in the map")]) -> dict:
        layout = await loaded_map()
        if i >= len(layout.keys):
            raise ServiceError(f"the map has {len(layout.keys)} points; there is no point {i}.", 404)
        key = str(layout.keys[i])
        path, label, split = resources.members.get(key, ("?", None, None))
        return {"i": i, "key": key, "path": path, "label": label, "split": split}

    @app.get("/audit", summary="The loaded dataset's `featx audit` findings (the top ones of each kind)")
    async def audit(top: Annotated[int, Query(ge=1, le=MAX_K, description="findings per kind")] = 48) -> dict:
        if resources.store is None:
            raise ServiceError("no dataset is loaded: start featx serve with --dataset NAME.", 409)
        return await run_in_threadpool(audit_findings, resources, top)

    chosen: dict = {}  # (budget, strategy, seed) -> the selection: the store the service holds does not change

    @app.get("/select", summary="Images of the loaded dataset worth labelling first, best first (`featx select`)")
    async def select(budget: Annotated[int, Query(ge=1, le=MAX_SELECT, description="how many images")] = 24,
                     strategy: Annotated[Literal[STRATEGIES], Query(description="as featx select --strategy")] = "auto",
                     seed: Annotated[int, Query(ge=0, description="seed of the clustering")] = 0) -> dict:
        if resources.store is None:
            raise ServiceError("no dataset is loaded: start featx serve with --dataset NAME.", 409)

        def choose() -> dict:
            from ..select.runner import choose_in_store

            with store_lock:
                return choose_in_store(resources.store, resources.dataset, budget, strategy=strategy, seed=seed)

        key = (budget, strategy, seed)
        if key not in chosen:
            chosen[key] = await run_in_threadpool(choose)
        return chosen[key]

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(GZipMiddleware, minimum_size=64_000)  # /map: 70,000 hex keys shrink about 2x
    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * 2**20))
    if token:
        app.add_middleware(BearerAuth, token=token)
    return app

