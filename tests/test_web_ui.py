"""The web page in a real headless Chromium (Debian's package, driven by Playwright) against the
served tiny model: what the page draws is compared pixel for pixel with what ``/segment`` answers
for the same request, and every test ends with no console error.

Run with ``make test-browser`` (installs playwright and chromium when missing).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from bench.server import free_port
from tests.photos import photo_bytes, small_photo_png
from tests.test_emulate import Served, instance  # noqa: F401  (the emulator's server process, a fixture)
from tests.test_ui_forward import serverless_endpoint

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test-browser)")

CHROMIUM = os.environ.get("SEGANY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NETWORK_LINE = "Failed to load resource: the server responded with a status of {status}"
READ_LAYER = """() => {
  const canvas = document.getElementById('masks');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let text = '';
  for (let i = 0; i < pixels.length; i += 32768) text += String.fromCharCode.apply(null, pixels.subarray(i, i + 32768));
  return [canvas.width, canvas.height, btoa(text)];
}"""


# --- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        missing = "no chromium: apt-get install chromium (make browser), or set SEGANY_CHROMIUM"
        if os.environ.get("CI"):  # CI installs it (make test): a missing browser there is a failure, not a skip
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


class Console:
    """The page's console errors and uncaught exceptions; ``expect(status)`` allows the browser's own
    network line for an HTTP status (or a refused connection) that a test provokes on purpose:
    Chromium logs every failed fetch, whatever the page does with the answer."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.allowed: set[str] = set()
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def expect(self, status: int | str) -> None:
        self.allowed.add(NETWORK_LINE.format(status=status) if isinstance(status, int) else status)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(e.startswith(line) for line in self.allowed)]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    opened = context.new_page()
    opened.console = Console(opened)
    yield opened
    errors = opened.console.unexpected()
    context.close()
    assert not errors, f"console errors: {errors}"


# --- driving the page ------------------------------------------------------------------------------


def settled(page: Any, action: Any) -> None:
    """Run ``action`` and wait until the page has drawn its answer and is idle again."""
    renders = page.get_attribute("body", "data-renders")
    action()
    page.wait_for_selector(f"body:not([data-renders='{renders}'])[data-state=idle]", timeout=60_000)


def failed(page: Any, action: Any) -> str:
    """Run ``action``, which must end in an error message on the page; that message."""
    errors = page.get_attribute("body", "data-errors")
    action()
    page.wait_for_selector(f"body:not([data-errors='{errors}'])[data-state=idle]", timeout=60_000)
    return page.inner_text("#error")


def open_file(page: Any, name: str, data: bytes, mime: str = "image/jpeg") -> None:
    settled(page, lambda: page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}]))
    page.wait_for_selector("#layers:not([hidden])")


def at(page: Any, fx: float, fy: float) -> tuple[float, float]:
    box = page.locator("#prompts").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def click(page: Any, fx: float, fy: float, button: str = "left") -> dict:
    """Click at a fraction of the image; the JSON body the page sent to /segment."""
    with page.expect_request(lambda r: r.url.endswith("/segment") and r.method == "POST") as sent:
        settled(page, lambda: page.mouse.click(*at(page, fx, fy), button=button))
    return json.loads(sent.value.post_data)


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> dict:
    def draw() -> None:
        page.mouse.move(*at(page, *start))
        page.mouse.down()
        page.mouse.move(*at(page, *end), steps=5)
        page.mouse.up()

    with page.expect_request(lambda r: r.url.endswith("/segment") and r.method == "POST") as sent:
        settled(page, draw)
    return json.loads(sent.value.post_data)


def layer(page: Any) -> np.ndarray:
    """The mask layer's RGBA pixels, (H, W, 4)."""
    width, height, data = page.evaluate(READ_LAYER)
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)


def overlay(page: Any) -> np.ndarray:
    return (layer(page)[..., 3] > 0).astype(np.uint8)


def api_masks(server_url: str, image: bytes, request: dict) -> list[dict]:
    """/segment's masks for ``request`` with the image itself (not the page's image_id)."""
    fields = {k: v for k, v in request.items() if k != "image_id"}
    answer = httpx.post(f"{server_url}/segment", json={**fields, "image": base64.b64encode(image).decode()}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["masks"]


def decoded(mask: dict) -> np.ndarray:
    return mask_utils.decode({"size": mask["segmentation"]["size"], "counts": mask["segmentation"]["counts"].encode()})


def best(masks: list[dict]) -> tuple[int, np.ndarray]:
    index = max(range(len(masks)), key=lambda i: masks[i]["score"])
    return index, decoded(masks[index])


def noise_png(seed: int, side: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def ui(page: Any, server: Any) -> Any:
    page.goto(f"{server.url}/ui/")
    return page


# --- the page on the service ----------------------------------------------------------------------


def test_click_draws_the_mask_segment_answers(ui: Any, server: Any) -> None:
    truck = photo_bytes("truck")
    with ui.expect_request(lambda r: r.url.endswith("/segment_everything")) as opened:
        open_file(ui, "truck.jpg", truck)
    sent = click(ui, 0.4, 0.55)
    masks = api_masks(server.url, truck, sent)
    chosen, expected = best(masks)
    height, width = expected.shape
    first = json.loads(opened.value.post_data)
    assert first["image"].startswith("data:image/jpeg;base64,") and base64.b64decode(first["image"].split(",", 1)[1]) == truck
    assert "image" not in sent and len(sent["image_id"]) == 64  # the image went once; the click reuses its image_id
    assert sent["labels"] == [1] and sent["points"][0] == pytest.approx([0.4 * width, 0.55 * height], abs=2)
    assert overlay(ui).shape == expected.shape and expected.any()
    np.testing.assert_array_equal(overlay(ui), expected)
    candidates = ui.locator("#candidates button")
    assert candidates.count() == 3 == len(masks)
    assert candidates.nth(chosen).get_attribute("aria-checked") == "true"
    assert candidates.nth(chosen).inner_text() == f"{chosen + 1} · {masks[chosen]['score']:.2f}"
    other = (chosen + 1) % 3
    settled(ui, lambda: ui.keyboard.press(str(other + 1)))  # shortcut: candidate N
    np.testing.assert_array_equal(overlay(ui), decoded(masks[other]))
    assert int(ui.get_attribute("body", "data-click-ms")) > 0


def test_box_and_background_point(ui: Any, server: Any) -> None:
    dog = small_photo_png("dog", 640)
    open_file(ui, "dog.png", dog, "image/png")
    boxed = drag(ui, (0.2, 0.2), (0.7, 0.8))
    w, h = ui.evaluate("[document.getElementById('masks').width, document.getElementById('masks').height]")
    assert boxed["boxes"][0] == pytest.approx([0.2 * w, 0.2 * h, 0.7 * w, 0.8 * h], abs=2) and "points" not in boxed
    (only,) = api_masks(server.url, dog, boxed)  # a box alone: one mask
    np.testing.assert_array_equal(overlay(ui), decoded(only))
    both = click(ui, 0.45, 0.5, button="right")
    assert both["boxes"] == boxed["boxes"] and both["labels"] == [0]
    (mask,) = api_masks(server.url, dog, both)
    np.testing.assert_array_equal(overlay(ui), decoded(mask))
    ui.keyboard.down("Shift")  # Shift + left click: background too
    shifted = click(ui, 0.3, 0.4)
    ui.keyboard.up("Shift")
    assert shifted["labels"] == [0, 0]
    ui.keyboard.press("m")  # mode: left click now adds background
    assert ui.is_checked("input[name=mode][value='0']")


def test_everything_in_distinct_colours(ui: Any, server: Any) -> None:
    groceries = small_photo_png("groceries", 320)
    open_file(ui, "groceries.png", groceries, "image/png")
    ui.click("details:has(#everything-settings) > summary")
    for name, value in (("points_per_side", "4"), ("pred_iou_thresh", "0"), ("stability_score_thresh", "0"),
                        ("box_nms_thresh", "1")):
        ui.fill(f"#everything-settings input[name={name}]", value)
    with ui.expect_request(lambda r: r.url.endswith("/segment_everything")) as sent:
        ui.click("h1")  # out of the settings' fields, where keys type digits
        settled(ui, lambda: ui.keyboard.press("e"))
    fields = json.loads(sent.value.post_data)
    assert fields == {"image_id": fields["image_id"], "points_per_side": 4, "pred_iou_thresh": 0,
                      "stability_score_thresh": 0, "box_nms_thresh": 1, "output": "rle"}
    answer = httpx.post(f"{server.url}/segment_everything", json={**fields, "image_id": None,
                        "image": base64.b64encode(groceries).decode()}, timeout=120).json()
    instances = [decoded(i) for i in answer["instances"]]
    assert len(instances) > 1
    top = np.full(instances[0].shape, -1)
    for i, mask in enumerate(instances):  # later instances are drawn over earlier ones
        top[mask > 0] = i
    pixels = layer(ui)
    np.testing.assert_array_equal(pixels[..., 3] > 0, top >= 0)
    colours = {i: {tuple(c) for c in pixels[top == i][:, :3]} for i in np.unique(top[top >= 0])}
    assert all(len(c) == 1 for c in colours.values())  # one colour per instance
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and no two alike
    assert ui.inner_text("#status").startswith(f"{len(instances)} instance(s)")
    settled(ui, lambda: ui.click("#keep-all"))
    assert ui.locator("#objects li").count() == len(instances)


def test_url_image_is_fetched_by_the_server_and_shown(ui: Any, server: Any, local_http: Any) -> None:
    """A URL is sent as image_url; the photo shown is the server's own copy (no remote image under the CSP)."""
    dog = small_photo_png("dog", 300)
    local_http.add("/photos/dog.png", body=dog, headers={"Content-Type": "image/png"})
    with ui.expect_request(lambda r: r.url.endswith("/segment_everything")) as opened:
        ui.fill("#url", local_http.url_for("/photos/dog.png"))
        settled(ui, lambda: ui.click("text=Load URL"))
    assert json.loads(opened.value.post_data) == {"image_url": local_http.url_for("/photos/dog.png"), "points_per_side": 1,
                                                  "pred_iou_thresh": 2, "output": "overlay"}
    width, height, data = ui.evaluate(READ_LAYER.replace("'masks'", "'photo'"))
    shown = np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)[..., :3]
    np.testing.assert_array_equal(shown, np.asarray(Image.open(io.BytesIO(dog)).convert("RGB")))
    sent = click(ui, 0.5, 0.5)
    np.testing.assert_array_equal(overlay(ui), best(api_masks(server.url, dog, sent))[1])
    ui.fill("#url", "ftp://example.com/x.jpg")
    assert "ftp: URLs are not fetched" in failed(ui, lambda: ui.click("text=Load URL"))


def test_undo_and_clear(ui: Any, server: Any) -> None:
    truck = small_photo_png("truck", 500)
    open_file(ui, "truck.png", truck, "image/png")
    first = click(ui, 0.3, 0.6)
    one = overlay(ui)
    second = click(ui, 0.7, 0.6)
    assert second["points"][0] == first["points"][0] and len(second["points"]) == 2
    np.testing.assert_array_equal(overlay(ui), decoded(api_masks(server.url, truck, second)[0]))
    settled(ui, lambda: ui.keyboard.press("Control+z"))
    np.testing.assert_array_equal(overlay(ui), one)
    np.testing.assert_array_equal(one, best(api_masks(server.url, truck, first))[1])
    settled(ui, lambda: ui.click("#undo"))
    assert not overlay(ui).any() and ui.is_disabled("#undo")
    click(ui, 0.5, 0.5)
    settled(ui, lambda: ui.keyboard.press("Escape"))
    assert not overlay(ui).any()


def test_corrupt_files_show_a_message_and_the_page_keeps_working(ui: Any, server: Any) -> None:
    truck = small_photo_png("truck", 500)
    open_file(ui, "truck.png", truck, "image/png")
    message = failed(ui, lambda: ui.set_input_files("#file", files=[{"name": "broken.jpg", "mimeType": "image/jpeg",
                                                                   "buffer": b"\xff\xd8\xff\xe0 not really a jpeg"}]))
    assert "broken.jpg is not an image this browser can read" in message
    gif = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(gif, format="GIF")  # Chromium shows it, the server refuses it
    ui.console.expect(400)
    message = failed(ui, lambda: ui.set_input_files("#file", files=[{"name": "red.gif", "mimeType": "image/gif",
                                                                   "buffer": gif.getvalue()}]))
    assert "[400 invalid_image]" in message
    sent = click(ui, 0.5, 0.5)  # the truck is still open
    assert ui.is_hidden("#error") and ui.evaluate("document.getElementById('masks').width") == 500
    np.testing.assert_array_equal(overlay(ui), best(api_masks(server.url, truck, sent))[1])


def test_evicted_image_is_sent_again(ui: Any, server: Any) -> None:
    dog = small_photo_png("dog", 300)
    open_file(ui, "dog.png", dog, "image/png")
    for seed in range(16):  # more images than the server's 48 MB cache holds (4 MiB embeddings)
        answer = httpx.post(f"{server.url}/segment", json={"image": base64.b64encode(noise_png(seed)).decode(),
                            "points": [[5, 5]], "labels": [1]}, timeout=120)
        assert answer.status_code == 200
    seen: list[tuple[int, dict]] = []
    ui.on("requestfinished", lambda r: r.url.endswith("/segment") and seen.append(
        (r.response().status, json.loads(r.post_data))))
    ui.console.expect(404)
    click(ui, 0.5, 0.5)
    assert [status for status, _ in seen] == [404, 200]
    assert "image_id" in seen[0][1] and "image" not in seen[0][1]
    assert base64.b64decode(seen[1][1]["image"].split(",", 1)[1]) == dog and seen[1][1]["points"] == seen[0][1]["points"]
    assert ui.is_hidden("#error")
    np.testing.assert_array_equal(overlay(ui), best(api_masks(server.url, dog, seen[1][1]))[1])


def test_not_ready_too_large_and_network_errors(ui: Any, server: Any) -> None:
    """A 503 not_ready (with Retry-After) is waited out; a 413 makes the page send a smaller copy; a
    network error leaves a message and the image open. The 503 and 413 come from the real API's
    shapes, put in front of the first call by Playwright's routing (the tiny model is always ready)."""
    dog = photo_bytes("dog")
    ui.console.expect(503)
    ui.console.expect(413)
    calls: list[str] = []
    sent_bodies: list[str] = []

    def first_not_ready(route: Any) -> None:
        calls.append(route.request.url)
        sent_bodies.append(route.request.post_data)
        if len(calls) == 1:
            return route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json",
                                 body=json.dumps({"error": {"code": "not_ready", "message": "the model is loading"}}))
        if len(calls) == 2:
            return route.fulfill(status=413, content_type="application/json", body=json.dumps(
                {"error": {"code": "payload_too_large", "message": "the request body exceeds 3 MiB"}}))
        return route.continue_()

    ui.route("**/segment_everything", first_not_ready)
    ui.set_input_files("#file", files=[{"name": "dog.jpg", "mimeType": "image/jpeg", "buffer": dog}])
    ui.wait_for_selector("#layers:not([hidden])", timeout=60_000)
    assert len(calls) == 3
    copy = base64.b64decode(json.loads(sent_bodies[2])["image"].split(",", 1)[1])
    assert max(Image.open(io.BytesIO(copy)).size) == min(2048, max(Image.open(io.BytesIO(dog)).size))
    width, height = Image.open(io.BytesIO(copy)).size
    assert f"a {width}×{height} copy was sent instead" in ui.inner_text("#status")
    ui.unroute("**/segment_everything")
    ui.route("**/segment", lambda route: route.abort("connectionrefused"))
    ui.console.expect("Failed to load resource: net::ERR_CONNECTION_REFUSED")
    assert "cannot reach the server" in failed(ui, lambda: ui.mouse.click(*at(ui, 0.5, 0.5)))
    ui.unroute("**/segment")
    sent = click(ui, 0.5, 0.5)
    assert len(sent["points"]) == 1  # the failed click was not kept
    np.testing.assert_array_equal(overlay(ui), best(api_masks(server.url, copy, sent))[1])


def test_exports(ui: Any, server: Any, tmp_path: Path) -> None:
    truck = small_photo_png("truck", 400)
    open_file(ui, "truck.png", truck, "image/png")
    sent = click(ui, 0.4, 0.6)
    _, mask = best(api_masks(server.url, truck, sent))
    with ui.expect_download() as cut:
        ui.click("#export-cutout")
    cutout = np.asarray(Image.open(cut.value.path()).convert("RGBA"))
    x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))).astype(int)
    assert cutout.shape[:2] == (h, w)
    np.testing.assert_array_equal(cutout[..., 3] > 0, mask[y:y + h, x:x + w] > 0)
    settled(ui, lambda: ui.keyboard.press("k"))
    assert ui.locator("#objects li").count() == 1 and not overlay(ui).any()
    with ui.expect_download() as coco_file:
        ui.click("#export-coco")
    coco = json.loads(Path(coco_file.value.path()).read_text())
    (annotation,) = coco["annotations"]
    np.testing.assert_array_equal(mask_utils.decode({**annotation["segmentation"],
                                                     "counts": annotation["segmentation"]["counts"].encode()}), mask)
    assert coco["images"][0]["width"] == mask.shape[1] and annotation["area"] == int(mask.sum())
    with ui.expect_download() as png:
        ui.click("#export-png")
    np.testing.assert_array_equal(np.asarray(Image.open(png.value.path()).convert("L")), mask * 255)


# --- segany ui TARGET ----------------------------------------------------------------------------------


def serve_ui(target: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``segany ui TARGET`` on a free port, waited for."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "deploy.cli", "ui", target, "--port", str(port)],
                               env={**os.environ, "COLUMNS": "200", **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            if httpx.get(f"{url}/ui/", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"segany ui {target} did not answer")


def test_segany_ui_url(page: Any, server: Any) -> None:
    process, url = serve_ui(server.url)
    try:
        page.goto(url)  # / redirects to the page
        truck = small_photo_png("truck", 600)
        open_file(page, "truck.png", truck, "image/png")
        sent = click(page, 0.5, 0.6)
        assert page.url == f"{url}/ui/"
        np.testing.assert_array_equal(overlay(page), best(api_masks(server.url, truck, sent))[1])
    finally:
        process.terminate()
        process.wait(10)


def test_segany_ui_aws(page: Any, server: Any, instance: Any, moto_aws: Any) -> None:  # noqa: F811
    """``segany ui aws:sam``: boto3 (SigV4) to moto's control plane and the emulator's runtime."""
    from deploy.emulate import build

    serverless_endpoint(moto_aws)
    with Served(build("sagemaker-serverless", instance, endpoint="sam")) as runtime:
        process, url = serve_ui("aws:sam", {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime.url})
        try:
            page.goto(f"{url}/ui/")
            dog = small_photo_png("dog", 400)
            open_file(page, "dog.png", dog, "image/png")
            sent = click(page, 0.5, 0.5)
            np.testing.assert_array_equal(overlay(page), best(api_masks(server.url, dog, sent))[1])
        finally:
            process.terminate()
            process.wait(10)
    log = process.stdout.read().decode()
    assert "/segment_everything -> SageMaker endpoint sam (serverless): 200" in log  # the image, once
    assert "/segment -> SageMaker endpoint sam (serverless): 200" in log and "image" not in sent
