"""Click to mask in the browser: the web page (runners/web) in headless Chromium against a local
server, per model shape (tiny, random-init vit_b), on the shared photos at full size.

For each photo: the time to open it (the image sent once, encoded, its image_id back), then
clicks at spread points, each a fresh single-point prompt (SAM's three candidates): the page's own
measure from the pointer event to the frame that shows the mask (``data-click-ms``), and the
server's time for the same request by image_id (httpx, same machine), the difference being the
browser's share (the JSON, the RLE decoding, the painting). Needs playwright and chromium
(``make test-browser`` installs them). Writes bench/results/ui.json, and with the tiny model the
page's screenshots in docs/ui-*.png.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import CACHE, PHOTO_NAMES, PHOTOS, ROOT, bench_env, random_checkpoint, summary, write_result
from bench.server import ServerProcess

logger = logging.getLogger("bench.ui")
CLICKS = [(0.2 + 0.15 * (i % 5), 0.3 + 0.2 * (i // 5)) for i in range(15)]  # 5 x 3 grid


def _checkpoint(model_type: str) -> Any:
    if model_type == "tiny":
        from runners.models import write_checkpoint
        from runners.specs import get_spec

        path = CACHE / "sam_tiny.pth"
        if not path.is_file():
            write_checkpoint(get_spec("tiny"), path)
        return path
    return random_checkpoint(model_type)


def _ms(values: list[float]) -> dict[str, float]:
    seconds = summary([v / 1000 for v in values])
    return {"median_ms": round(seconds["median_s"] * 1000, 1), "p95_ms": round(seconds["p95_s"] * 1000, 1),
            "min_ms": round(seconds["min_s"] * 1000, 1), "n": seconds["n"]}


def _settled(page: Any, action: Any) -> None:
    renders = page.get_attribute("body", "data-renders")
    action()
    page.wait_for_selector(f"body:not([data-renders='{renders}'])[data-state=idle]", timeout=600_000)


def _photo(page: Any, server: str, client: httpx.Client, name: str) -> dict[str, Any]:
    data = (PHOTOS / f"{name}.jpg").read_bytes()
    started = time.perf_counter()
    with page.expect_request(lambda r: r.url.endswith("/segment_everything")) as opened:
        _settled(page, lambda: page.set_input_files("#file", files=[{"name": f"{name}.jpg", "mimeType": "image/jpeg",
                                                                      "buffer": data}]))
    open_ms = (time.perf_counter() - started) * 1000
    image_id = None
    box = page.locator("#prompts").bounding_box()
    browser, served = [], []
    for fx, fy in CLICKS:
        page.keyboard.press("Escape")
        with page.expect_request(lambda r: r.url.endswith("/segment")) as sent:
            _settled(page, lambda: page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy))
        browser.append(float(page.get_attribute("body", "data-click-ms")))
        request = json.loads(sent.value.post_data)
        image_id = request["image_id"]
        t = time.perf_counter()
        client.post(f"{server}/segment", json=request).raise_for_status()
        served.append((time.perf_counter() - t) * 1000)
    assert json.loads(opened.value.post_data)["image"].endswith(base64.b64encode(data).decode()[-64:])
    width, height = page.evaluate("[document.getElementById('masks').width, document.getElementById('masks').height]")
    click, server_ms = _ms(browser[1:]), _ms(served[1:])  # the first click warms up
    return {"photo": name, "size": [width, height], "image_id": image_id, "open_ms": round(open_ms),
            "click_to_mask_ms": click, "server_segment_ms": server_ms,
            "browser_share_ms": round(click["median_ms"] - server_ms["median_ms"], 1)}


def screenshots(page: Any, out: Path) -> list[str]:
    """The page on the truck (a click, its candidates) and on groceries (everything, kept objects),
    at a laptop's and a tablet's size, into ``out`` (docs/ui-*.png)."""
    def shoot(name: str) -> str:
        path = out / f"ui-{name}.png"
        page.screenshot(path=str(path))
        return str(path.relative_to(ROOT))

    truck = (PHOTOS / "truck.jpg").read_bytes()
    page.keyboard.press("Escape")
    _settled(page, lambda: page.set_input_files("#file", files=[{"name": "truck.jpg", "mimeType": "image/jpeg",
                                                                  "buffer": truck}]))
    box = page.locator("#prompts").bounding_box()
    for fx, fy, button in ((0.45, 0.55, "left"), (0.85, 0.5, "right")):
        _settled(page, lambda: page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy,
                                                button=button))
    shots = [shoot("click")]
    groceries = (PHOTOS / "groceries.jpg").read_bytes()
    _settled(page, lambda: page.set_input_files("#file", files=[{"name": "groceries.jpg", "mimeType": "image/jpeg",
                                                                  "buffer": groceries}]))
    page.click("details:has(#everything-settings) > summary")
    for name, value in (("points_per_side", "4"), ("pred_iou_thresh", "0"), ("stability_score_thresh", "0"),
                        ("box_nms_thresh", "1")):  # random weights: every mask kept, or NMS leaves one
        page.fill(f"#everything-settings input[name={name}]", value)
    _settled(page, lambda: page.click("#everything"))
    shots.append(shoot("everything"))
    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, portrait
    _settled(page, lambda: page.click("#keep-all"))
    shots.append(shoot("tablet"))
    return shots


def measure(model_type: str, chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    env = bench_env(model_type, _checkpoint(model_type))
    server = ServerProcess(env, CACHE / f"ui-{model_type}.log").start()
    try:
        started = time.monotonic()
        server.wait_ready(timeout_s=1800)  # vit_b: converted to OpenVINO on the first start (cached after)
        logger.info("%s ready in %.0f s", model_type, time.monotonic() - started)
        with sync_playwright() as playwright, httpx.Client(timeout=600) as client:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server.url}/ui/")
            photos = [_photo(page, server.url, client, name) for name in PHOTO_NAMES]
            shots = screenshots(page, ROOT / "docs") if model_type == "tiny" else []
            browser.close()
    finally:
        server.stop()
    return {"model": model_type, "encoder": env.get("SEGANY_ENCODER", "auto"), "photos": photos, "screenshots": shots}


def run(models: tuple[str, ...] = ("tiny", "vit_b")) -> dict[str, Any]:
    chromium = os.environ.get("SEGANY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium: apt-get install chromium (or make test-browser), or set SEGANY_CHROMIUM")
    results = [measure(model, chromium) for model in models]
    write_result("ui", {"clicks_per_photo": len(CLICKS), "viewport": [1280, 800], "results": results})
    for result in results:
        for p in result["photos"]:
            logger.info("%-5s %-9s %4dx%-4d open %5d ms | click to mask median %4.0f ms, p95 %4.0f | server %4.0f ms | "
                        "browser %4.0f ms", result["model"], p["photo"], *p["size"], p["open_ms"],
                        p["click_to_mask_ms"]["median_ms"], p["click_to_mask_ms"]["p95_ms"],
                        p["server_segment_ms"]["median_ms"], p["browser_share_ms"])
    return {"results": results}
