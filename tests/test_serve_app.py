"""`featx serve`: every endpoint and every bad input through TestClient, micro-batching, auth, schemathesis."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from featx.config import StoreQuery
from featx.serve.batching import MicroBatcher
from featx.cli import main
from featx.embed import Embedder
from featx.data.images import load_input
from featx.serve import create_app, open_resources

from conftest import png_with_size, truncated_jpeg, write_class_folder

TINY = 32
TOKEN = "s3cret-token"


def png(value: int, size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(digits_head_cache):
    """Digits embedded at 32 px with a logreg head: the resources every app here serves."""
    cache = digits_head_cache
    resources = open_resources(dataset="digits", head=str(cache / "digits.npz"), cache=str(cache))
    yield resources, cache
    resources.close()


@pytest.fixture(scope="module")
def client(served):
    resources, _ = served
    with TestClient(create_app(resources, max_upload_mb=1.0, max_wait_ms=20)) as c:
        yield c


def files(*blobs, name="img.png"):
    return [("files", (f"{i}-{name}", b, "image/png")) for i, b in enumerate(blobs)]


def test_health_and_info(client, served):
    resources, _ = served
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["store_key"] == resources.runtime.config.key
    assert info["backbone"]["image_size"] == TINY and info["backbone"]["dim"] == 3328
    assert info["head"]["name"] == "logreg" and info["head"]["classes"] == [str(c) for c in range(10)]
    assert info["dataset"] == "digits" and info["index"]["n"] == 1797 and info["index"]["kind"] == "flat"
    assert info["featx_version"]
    # the service runs the backbone on the runtime `featx embed` chose (or would choose) for this store
    assert info["runtime"]["runtime"] == resources.runtime.name and info["runtime"]["detail"]
    assert info["runtime"]["how"] in ("measured", "remembered", "fallback")
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/embed", "/predict", "/search", "/health", "/info"}
    assert client.get("/docs").status_code == 200


def test_embed_returns_the_librarys_vectors_and_content_keys(client, served):
    resources, _ = served
    blobs = [png(1), png(2)]
    body = client.post("/embed", files=files(*blobs)).json()
    assert body["store_key"] == resources.runtime.config.key and body["dim"] == 3328
    assert [r["key"] for r in body["results"]] == [hashlib.sha256(b).hexdigest() for b in blobs]
    expected = Embedder(resources.runtime).embed_crops([load_input(b, resources.runtime.config.preprocess)
                                                         for b in blobs])
    got = np.array([r["vector"] for r in body["results"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_predict_gives_the_heads_top_k(client, served):
    resources, _ = served
    blob = png(3)
    body = client.post("/predict", files=files(blob), params={"top_k": 4}).json()
    preds = body["results"][0]["predictions"]
    assert body["head"] == "logreg" and len(preds) == 4
    x = Embedder(resources.runtime).embed_crops([load_input(blob, resources.runtime.config.preprocess)])
    proba = resources.bundle.head.predict_proba(x)[0]
    assert preds[0]["label"] == resources.bundle.classes[int(np.argmax(proba))]
    assert preds[0]["probability"] == pytest.approx(float(proba.max()), abs=1e-3)
    assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)


def test_search_by_upload_and_by_key(client, served):
    resources, _ = served
    key = next(iter(resources.members))
    answer = client.post("/search", data={"key": key[:12]}, params={"k": 5}).json()
    (by_key,) = answer["results"]
    assert by_key["query"] == f"id:{key}" and len(by_key["results"]) == 5
    top = by_key["results"][0]
    assert top["key"] == key and top["similarity"] == pytest.approx(1.0, abs=1e-4) and top["path"].startswith("digits:")
    # Query images go in 'files', as for /embed and /predict: one result list per image, in order.
    uploads = [("files", ("q.png", png(4), "image/png")), ("files", ("r.png", png(7), "image/png"))]
    by_upload = client.post("/search", files=uploads, params={"k": 3}).json()["results"]
    assert [q["query"] for q in by_upload] == ["q.png", "r.png"]
    for q in by_upload:
        assert [r["rank"] for r in q["results"]] == [1, 2, 3]
    assert by_upload[0]["results"] != by_upload[1]["results"]


@pytest.mark.parametrize("blob, word", [(b"this is not an image", "not an image"), (truncated_jpeg(), "truncated"),
                                        (b"", "empty"), (png_with_size(30000, 30000), "bomb")])
@pytest.mark.parametrize("endpoint", ["/embed", "/predict"])
def test_bad_images_get_422_naming_the_file(client, endpoint, blob, word):
    response = client.post(endpoint, files=[("files", ("bad.jpg", blob, "image/jpeg"))])
    assert response.status_code == 422 and "bad.jpg" in response.json()["error"] and word in response.json()["error"]


@pytest.mark.parametrize("method, path, kwargs, status, words", [
    ("post", "/embed", {}, 422, "files"),
    ("post", "/embed", {"files": files(np.zeros(2 * 2**20, np.uint8).tobytes())}, 413, "larger than the limit"),
    ("post", "/search", {"data": {"key": "0123456789abcdef"}}, 404, "is not a sample"),
    ("post", "/search", {}, 422, "exactly one of"),
    ("post", "/search", {"data": {"key": "abc"}, "params": {"k": 0}}, 422, "greater than or equal to 1"),
    ("post", "/search", {"data": {"key": "abc"}, "params": {"k": 1001}}, 422, "less than or equal to 1000"),
    ("post", "/predict", {"files": files(png(5)), "params": {"top_k": "many"}}, 422, "top_k"),
])
def test_bad_requests_get_a_4xx_json_error(client, method, path, kwargs, status, words):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_k_above_the_dataset_size_is_refused(tmp_path):
    cache = tmp_path / "cache"  # its own: the session's digits cache is shared with other test files
    write_class_folder(tmp_path / "tiny", per_class=3)
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "tiny"), "--image-size", str(TINY), "--workers", "0",
                                       "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    tiny = open_resources(dataset="tiny", cache=str(cache))
    with TestClient(create_app(tiny)) as c:
        response = c.post("/search", data={"key": next(iter(tiny.members))}, params={"k": 7})
    tiny.close()
    assert response.status_code == 422 and "between 1 and the dataset's size (6)" in response.json()["error"]


def test_predict_without_a_head_and_search_without_a_dataset_say_what_to_start(served):
    resources, cache = served
    bare = open_resources(store_query=StoreQuery(backbone="efficientnet_lite0", image_size=TINY), cache=str(cache))
    with TestClient(create_app(bare)) as c:
        predict = c.post("/predict", files=files(png(6)))
        search = c.post("/search", data={"key": "abc"})
        assert c.post("/embed", files=files(png(6))).status_code == 200
    assert predict.status_code == 409 and "--head FILE" in predict.json()["error"]
    assert search.status_code == 409 and "--dataset NAME" in search.json()["error"]


def test_token_guards_everything_but_health(served):
    resources, _ = served
    with TestClient(create_app(resources, token=TOKEN)) as c:
        assert c.get("/health").status_code == 200
        for path in ("/info", "/openapi.json", "/docs"):
            assert c.get(path).status_code == 401
        denied = c.post("/embed", files=files(png(7)), headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and "Bearer" in denied.json()["error"]
        assert denied.headers["www-authenticate"] == "Bearer"
        ok = c.post("/embed", files=files(png(7)), headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_concurrent_requests_share_forward_passes(served):
    resources, _ = served
    with TestClient(create_app(resources, max_wait_ms=200, max_batch=64)) as c:
        before = c.get("/info").json()["batching"]
        statuses = []
        barrier = threading.Barrier(8)

        def one(i):
            barrier.wait()
            statuses.append(c.post("/embed", files=files(png(100 + i))).status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = c.get("/info").json()["batching"]
    assert statuses == [200] * 8
    assert after["images"] - before["images"] == 8
    assert after["forward_passes"] - before["forward_passes"] < 8  # some requests rode together


def test_micro_batcher_routes_rows_and_errors_to_their_callers():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        if (batch == 99).any():
            raise ValueError("poisoned")
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True).astype(np.float32)

    batcher = MicroBatcher(fn, max_batch=16, max_wait=0.05)
    try:
        futures = [batcher.submit(np.full((n, 1, 1, 1), v, np.uint8)) for n, v in ((1, 1), (3, 2), (2, 3))]
        results = [f.result(timeout=5) for f in futures]
        assert [r.ravel().tolist() for r in results] == [[1.0], [2.0] * 3, [3.0] * 2]
        assert calls == [6]  # one forward pass for all three
        bad = batcher.submit(np.full((1, 1, 1, 1), 99, np.uint8))
        with pytest.raises(ValueError, match="poisoned"):
            bad.result(timeout=5)
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.zeros((1, 1, 1, 1), np.uint8)).result()


def test_a_dataset_the_heads_store_lacks_is_named(served):
    _, cache = served
    from featx.errors import StoreError

    with pytest.raises(StoreError, match="'nope'"):
        open_resources(dataset="nope", head=str(cache / "digits.npz"), cache=str(cache))


def test_hostile_images_are_4xx_and_cheap(client):
    from test_hostile_input import wide_png

    started = time.perf_counter()
    for endpoint in ("/predict", "/embed"):
        response = client.post(endpoint, files=[("files", ("wide.png", wide_png(), "image/png"))])
        assert response.status_code == 422 and "wide.png" in response.json()["error"]
        assert "extreme aspect ratio" in response.json()["error"]
    big = [("files", (f"{i}.png", png_with_size(9000, 9000), "image/png")) for i in range(16)]
    response = client.post("/predict", files=big)
    assert response.status_code == 413 and "million pixels" in response.json()["error"]
    assert time.perf_counter() - started < 5.0


def test_the_decoding_budget_is_shared_by_concurrent_requests_not_multiplied():
    import asyncio

    from featx.data.images import image_decode_bytes
    from featx.serve.errors import ServiceError
    from featx.serve.budget import DecodeBudget

    buf = io.BytesIO()
    Image.new("I;16", (100, 50)).save(buf, "PNG")
    assert image_decode_bytes(buf.getvalue()) == (5000, 5000 * (2 + 3))  # 16-bit samples count twice
    budget = DecodeBudget(100)
    peak = []

    async def request(n: int):
        async with budget.hold(n, n):
            peak.append(budget.used)
            await asyncio.sleep(0.01)

    async def main():
        await asyncio.gather(*(request(60) for _ in range(3)))
        with pytest.raises(ServiceError, match="million pixels"):
            async with budget.hold(101, 101):
                pass

    asyncio.run(main())
    assert peak == [60, 60, 60] and budget.used == 0
