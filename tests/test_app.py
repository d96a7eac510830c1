"""`clipaway-jax app` in a real browser: the server runs in a subprocess on a free localhost port and
headless Chromium (Debian's package, driven by Playwright's client; nothing is downloaded) uploads an
image, paints a mask with mouse strokes, presses Remove and reads the result; a bad input gets a
message on the page; the same server answers the HTTP API through gradio_client.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
H, W = 96, 128  # not the mini model's 64x64: the result must come back at the input's size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on the shipped mini model (the default), once ready to serve."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", GRADIO_ANALYTICS_ENABLED="False")
    log_path = tmp_path_factory.mktemp("app") / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "clipaway_jax.cli", "app", "--port", str(port), "--cache-dir",
                                 ""], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium package is needed (make test installs it)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


SCENE = 21_159  # a red cross on grass, alone, in the middle: the object the browser test brushes over


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A mini-world scene, resized to 96x128: something the mini model knows, at a size it does not."""
    from clipaway_jax.mini.scenes import render

    scene = render(0, SCENE)
    path = tmp_path_factory.mktemp("photo") / "scene.png"
    Image.fromarray(scene.image).resize((W, H), Image.BICUBIC).save(path)
    return path


def _object_mask() -> np.ndarray:
    """The scene's object at the photo's size (what the stroke must cover)."""
    from clipaway_jax.mini.scenes import render

    return np.asarray(Image.fromarray(render(0, SCENE).mask).resize((W, H), Image.NEAREST)) >= 128


def _brush_over_the_object(page, box, zoom: float = 3.0, margin: float = -10.0) -> None:
    """Zigzag strokes over the object's bounding box shrunk by `margin` (the brush is ~20 photo px
    wide), many mouse moves with the button held, as a person paints. The editor shows the photo centred
    at `zoom` screen px per photo px (its "300%"); the test's coverage check says if that ever changes."""
    ys, xs = np.nonzero(_object_mask())
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    at = lambda x, y: (cx + zoom * (x - W / 2), cy + zoom * (y - H / 2))
    x0, x1, y0, y1 = xs.min() - margin, xs.max() + margin, ys.min() - margin, ys.max() + margin
    page.mouse.move(*at(x0, y0))
    page.mouse.down()
    for row, y in enumerate(np.arange(y0, y1 + 1, 4.0)):
        page.mouse.move(*at(x1 if row % 2 == 0 else x0, y), steps=8)
        page.mouse.move(*at(x1 if row % 2 == 0 else x0, y + 4.0), steps=2)
    page.mouse.up()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(url, wait_until="networkidle")
    return page


def _fetch(page, selector) -> np.ndarray:
    src = page.locator(f"{selector} img").first.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


def test_paint_a_mask_remove_and_compare(server, browser, photo, tmp_path):
    page = _open(browser, server)
    page.locator("#upload input[type=file]").first.set_input_files(str(photo))
    page.locator("#editor canvas").first.wait_for()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Brush", exact=True).click()
    _brush_over_the_object(page, page.locator("#editor canvas").first.bounding_box())
    page.locator("#paste-back input[type=number]").fill("2")
    page.locator("#paste-back input[type=number]").press("Enter")
    start = time.perf_counter()
    page.locator("#remove").click()
    page.locator("#result img").wait_for(timeout=240_000)
    seconds = time.perf_counter() - start
    page.screenshot(path=os.environ.get("CLIPAWAY_APP_SCREENSHOT", str(tmp_path / "app.png")), full_page=True)
    print(f"click to result: {seconds:.1f} s; {page.locator('#status').inner_text()}")

    # the controls took the checkpoint's own defaults once it loaded (the mini model's guidance, not SD's 7.5)
    from clipaway_jax.checkpoint import read_manifest
    from clipaway_jax.mini import shipped

    own = read_manifest(shipped.SHIPPED)["pipeline_defaults"]
    assert own["guidance_scale"] != 7.5
    assert float(page.locator("#guidance input[type=number]").input_value()) == own["guidance_scale"]
    assert page.locator("#seamless input[type=checkbox]").is_checked() == own["seamless"]
    result, used = _fetch(page, "#result"), _fetch(page, "#mask-used")
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert result.shape == original.shape == (H, W, 3)
    mask = used[..., 0] >= 128
    assert 0.005 < mask.mean() < 0.5, "the painted stroke is the mask"
    assert mask[_object_mask()].mean() > 0.95, "the strokes cover the object"
    # paste-back: outside the mask grown by dilation + feather (scaled to this size, with a margin), exact input
    far = ~np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(__import__("PIL.ImageFilter").ImageFilter
                                                                          .MaxFilter(33))).astype(bool)  # fmt: skip
    assert far.mean() > 0.2
    np.testing.assert_array_equal(result[far], original[far])
    assert np.abs(result[mask].astype(int) - original[mask]).mean() > 2, "the masked pixels were repainted"


def test_bad_input_gets_a_message_on_the_page(server, browser, photo):
    page = _open(browser, server)
    page.locator("#editor input[type=file]").first.set_input_files(str(photo))
    page.locator("#remove").click()  # no mask painted
    assert page.get_by_text("No mask: brush over the object").first.is_visible() or page.get_by_text(
        "No mask: brush over the object").first.wait_for(timeout=60_000) is None
    assert "Traceback" not in page.content()


def test_the_http_api_answers_on_the_same_server(server, photo, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    mask = np.zeros((H, W), np.uint8)
    mask[30:60, 40:80] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    editor = {"background": handle_file(str(photo)), "layers": [], "composite": None}
    settings = ("clipaway", 25, "ddim", 7.5, 1, 1, 2, False, False)  # the browser test's program: compiled once
    out = client.predict(None, editor, handle_file(str(tmp_path / "mask.png")), *settings, api_name="/run")
    result = np.asarray(Image.open(out[0]).convert("RGB"))
    assert result.shape == (H, W, 3)
    with pytest.raises(Exception, match="same size"):
        Image.fromarray(mask[:50]).save(tmp_path / "small.png")
        client.predict(None, editor, handle_file(str(tmp_path / "small.png")), *settings, api_name="/run")
