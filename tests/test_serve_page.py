"""The page on `featx serve`, in a real headless Chromium: token prompt, upload, prediction, neighbours, phone width."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from featx.serve.packed_map import unpack_map

from conftest import run_cli, start_serve, stop_serve

TOKEN = "page-t0ken"


def _browser():
    """Playwright with the system Chromium (Playwright cannot download its own browsers here), or a skip."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; it is in the dev extra)")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium on this machine: `make setup` installs Debian's chromium when it runs as root; "
                    "elsewhere `sudo apt-get install chromium`")
    return sync_playwright, executable


@pytest.fixture(scope="module")
def server(digits_head_cache, tmp_path_factory):
    # so the page has findings to show: digits' labels are clean and the default recipe flags none of them at
    # 32 px, so the page serves a copy's final-layer store (and a head on it), where the audit flags a few
    cache = tmp_path_factory.mktemp("page") / "cache"
    shutil.copytree(digits_head_cache, cache)
    run_cli("embed", "digits", "--image-size", 32, "--layers", "final", "--workers", 0, "--cache", cache)
    run_cli("train", "digits", "--layers", "final", "--cache", cache, "--out", cache / "final.npz")
    run_cli("audit", "digits", "--layers", "final", "--cache", cache)
    # as the help advises, the map is made beforehand: the server reads it from beside the store (computing it
    # in the server's process would compile UMAP's numba code again, about 15 s)
    run_cli("map", "digits", "--layers", "final", "--cache", cache)
    proc, base = start_serve("--head", cache / "final.npz", "--dataset", "digits", "--cache",
                             cache, env={"FEATX_TOKEN": TOKEN, "FEATX_LOG_LEVEL": "warning"})
    yield base
    stop_serve(proc)


def _digit_png(folder: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = folder / "seven.png"
    i = int(np.flatnonzero(digits.target == 7)[3])
    Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((64, 64), Image.NEAREST).save(path)
    return path


def _shoot(page, name: str) -> None:
    """Screenshots for docs/ when FEATX_SCREENSHOTS names a folder (the README's come from this test's run)."""
    folder = os.environ.get("FEATX_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


NEIGHBOURS_LOADED = """(k) => {
  const imgs = [...document.querySelectorAll('#neighbours img')];
  return imgs.length === k && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


MILLION_POINTS = """() => {
  const n = 1000000;
  let header = JSON.stringify({dataset: "synthetic", method: "pca", n, labels: ["a", "b", "c"], splits: ["train"]});
  if (header.length % 2) header += " ";
  const h = new TextEncoder().encode(header);
  const buffer = new ArrayBuffer(16 + h.length + 7 * n);
  new Uint8Array(buffer).set(new TextEncoder().encode("FXMAP001"), 0);
  const view = new DataView(buffer);
  view.setUint32(8, n, true);
  view.setUint32(12, h.length, true);
  new Uint8Array(buffer, 16, h.length).set(h);
  const xs = new Uint16Array(buffer, 16 + h.length, n), ys = new Uint16Array(buffer, 16 + h.length + 2 * n, n);
  const labels = new Uint16Array(buffer, 16 + h.length + 4 * n, n);
  for (let i = 0; i < n; i++) { xs[i] = (i * 7919) % 65536; ys[i] = (i * 104729) % 65536; labels[i] = i % 3; }
  const before = state.map, started = performance.now();
  state.map = unpackMap(buffer);
  drawMap();
  const ms = performance.now() - started, canvas = $("map");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) lit++;
  const drawn = {n: Number(canvas.dataset.points), lit, ms};
  state.map = before;
  drawMap();
  return drawn;
}"""


def test_the_page_asks_for_the_token_then_predicts_and_finds_neighbours(server, tmp_path):
    sync_playwright, executable = _browser()
    digit = _digit_png(tmp_path)
    expected = httpx.post(f"{server}/predict", files={"files": ("seven.png", digit.read_bytes(), "image/png")},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()
    top = expected["results"][0]["predictions"][0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server)
        # the token prompt: a wrong token is refused, the right one opens the page
        page.wait_for_selector("#token-form:not([hidden])")
        assert page.get_by_label("This service needs its token").is_visible() and not page.is_visible("#drop")
        _shoot(page, "page-token.png")
        page.fill("#token", "wrong")
        page.click("#token-form button")
        page.wait_for_function("document.getElementById('token-error').textContent.includes('not accepted')")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("#main:not([hidden])")
        assert "dataset digits" in page.text_content("#loaded")
        assert not page.is_visible("#token-form") and page.is_visible("#drop")

        # upload a digit: the head's top class, and k neighbour thumbnails that decoded
        page.fill("#k", "9")
        page.set_input_files("#file", str(digit))
        page.wait_for_selector("#predictions li")
        assert page.text_content("#predictions li").startswith(f"{top['label']}: ")
        page.wait_for_function(NEIGHBOURS_LOADED, arg=9)
        buttons = page.locator("#neighbours button")
        assert buttons.count() == 9
        labels = [buttons.nth(i).get_attribute("aria-label") for i in range(9)]
        assert all(a.startswith(f"search from neighbour {i + 1}: ") for i, a in enumerate(labels))
        _shoot(page, "page-query.png")

        # clicking a neighbour searches from it: it comes back first, as its own nearest sample
        clicked = buttons.nth(2).get_attribute("data-key")
        buttons.nth(2).click()
        page.wait_for_function(f"document.querySelector('#neighbours button')?.dataset.key === '{clicked}'")
        page.wait_for_function(NEIGHBOURS_LOADED, arg=9)
        assert clicked[:12] in page.text_content("#query-caption")
        # the keyboard reaches the neighbours
        page.focus("#neighbours button")
        assert page.evaluate("document.activeElement.dataset.key") == clicked

        # the map: a point per image; pointing at one shows its thumbnail, clicking searches from it
        answer = httpx.get(f"{server}/map", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        assert answer.headers.get("content-encoding") == "gzip"  # a map is large: it travels compressed
        mapped = answer.json()
        assert mapped["n"] == len(set(mapped["keys"])) == 1797 and len(mapped["x"]) == 1797
        # what the page reads: the packed map, 7 bytes a point, and a point's key when it is asked for
        packed = httpx.get(f"{server}/map?format=binary", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        assert packed.headers["content-type"] == "application/octet-stream" and len(packed.content) < 8 * 1797 + 400
        unpacked = unpack_map(packed.content)
        assert unpacked["n"] == 1797 and unpacked["labels"] == mapped["labels"] and unpacked["splits"] == mapped["splits"]
        assert np.abs(unpacked["x"] - np.array(mapped["x"])).max() < 1e-4
        point = httpx.get(f"{server}/map/point/100", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
        assert point["key"] == mapped["keys"][100] and point["label"] == mapped["labels"][100]
        page.locator("#map").scroll_into_view_if_needed()
        page.wait_for_selector("#map[data-points='1797']", timeout=120_000)
        # the page decoded the same points from the bytes
        seen = page.evaluate("[state.map.n, state.map.x[100], state.map.y[100], valueOf(state.map, 'labels', 100)]")
        assert seen[0] == 1797 and seen[3] == mapped["labels"][100]
        assert abs(seen[1] - mapped["x"][100]) < 1e-4 and abs(seen[2] - mapped["y"][100]) < 1e-4
        # a million points (packed here as the service packs them) are decoded and drawn into the canvas's pixels
        drawn = page.evaluate(MILLION_POINTS)
        assert drawn["n"] == 1_000_000 and drawn["lit"] > 10_000, drawn
        print(f"a million points decoded and drawn in {drawn['ms']:.0f} ms")
        box = page.locator("#map").bounding_box()
        i = 100
        x = box["x"] + 8 + mapped["x"][i] * (box["width"] - 16)
        y = box["y"] + 8 + mapped["y"][i] * (box["height"] - 16)
        page.mouse.move(x, y)
        page.wait_for_selector("#tip:not([hidden])")
        page.wait_for_function("document.getElementById('tip-image').naturalWidth > 0")
        pointed = page.text_content("#tip-label")
        _shoot(page, "page-map.png")
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#neighbours button')?.dataset.key !== '{clicked}'")
        first = page.locator("#neighbours button").first.get_attribute("data-key")
        near = [k for k, px, py in zip(mapped["keys"], mapped["x"], mapped["y"])
                if (px - mapped["x"][i]) ** 2 + (py - mapped["y"][i]) ** 2 < 1e-4]
        assert first in near and pointed.split(" · ")[0] in mapped["labels"]

        # the audit's findings, as thumbnails that decoded
        audit = httpx.get(f"{server}/audit", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
        n_issues = len(audit["label_issues"])
        assert n_issues > 0
        page.locator("#audit-section").scroll_into_view_if_needed()
        page.wait_for_function("""(n) => {
          const imgs = [...document.querySelectorAll('#audit-issues img')];
          return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", arg=n_issues)
        first_issue = audit["label_issues"][0]
        assert page.text_content("#audit-issues span") == f"{first_issue['given']} → {first_issue['suggested']}"
        _shoot(page, "page-audit.png")

        # the images worth labelling first, as thumbnails; a pick searches from itself when pressed
        chosen = httpx.get(f"{server}/select", params={"budget": 12}, headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=120).json()
        page.locator("#select-section").scroll_into_view_if_needed()
        page.fill("#select-budget", "12")
        page.click("#select-form button")
        page.wait_for_function("""() => {
          const imgs = [...document.querySelectorAll('#select-picks img')];
          return imgs.length === 12 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", timeout=120_000)
        shown = [b.get_attribute("data-key") for b in page.locator("#select-picks button").all()]
        assert shown == [p["key"] for p in chosen["picks"]]
        _shoot(page, "page-select.png")
        page.locator("#select-picks button").first.click()
        page.wait_for_function(f"document.querySelector('#neighbours button')?.dataset.key === '{shown[0]}'")

        # a phone: nothing wider than the screen
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        _shoot(page, "page-phone.png")
        browser.close()


def test_thumbnails_are_served_only_for_loaded_samples(server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    key = httpx.post(f"{server}/search?k=1", files={"files": ("x.png", _png_bytes(), "image/png")}, headers=auth,
                     timeout=30).json()["results"][0]["results"][0]["key"]
    ok = httpx.get(f"{server}/thumbnail/{key}", headers=auth, timeout=30)
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(ok.content)).size[0] >= 48
    assert httpx.get(f"{server}/thumbnail/{key}", timeout=30).status_code == 401  # the token guards it
    for bad in ("f" * 64, key[:12], "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", key.upper()):
        r = httpx.get(f"{server}/thumbnail/{bad}", headers=auth, timeout=30)
        assert r.status_code == 404 and "error" in r.json(), bad
    assert httpx.get(f"{server}/thumbnail/../../etc/passwd", headers=auth, timeout=30).status_code == 404
    assert httpx.get(f"{server}/", timeout=30).status_code == 200  # the page itself holds no data: no token


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, "PNG")
    return buf.getvalue()
