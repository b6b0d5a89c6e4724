"""End to end in headless Chromium: open a short video, click an object, propagate, correct a later frame,
propagate again, export COCO; the exported masks equal the Python API's masks for the same prompts."""
from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, tiny_sam2, write_clip

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
    "/usr/bin/chromedriver"
pytest.importorskip("fastapi", reason="the app needs the [app] extra: pip install 'masklet[app]'")
pytest.importorskip("uvicorn", reason="the app needs the [app] extra: pip install 'masklet[app]'")
selenium = pytest.importorskip("selenium", reason="browser tests need selenium: pip install 'masklet[app]'")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"headless browser test needs Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER} not found; "
                "apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium.webdriver import ActionChains, Chrome, ChromeOptions, Keys
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

FRAMES = 6


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


class Server:
    """uvicorn serving the app in a thread on a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.sock = sock
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture()
def browser():
    opts = ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860"):
        opts.add_argument(arg)
    driver = Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def _wait_status(driver, text: str, timeout: float = 60) -> str:
    WebDriverWait(driver, timeout).until(lambda d: text in _status(d) or "error" in
                                         (d.find_element(By.ID, "status").get_attribute("class") or ""))
    assert text in _status(driver), _status(driver)
    return _status(driver)


def _click_image(driver, x: float, y: float, width: int, height: int, shift: bool = False) -> None:
    """Click image pixel (x, y) on the canvas, whatever its displayed size."""
    canvas = driver.find_element(By.ID, "canvas")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    ox, oy = x * rect[0] / width - rect[0] / 2, y * rect[1] / height - rect[1] / 2
    chain = ActionChains(driver)
    if shift:
        chain.key_down(Keys.SHIFT)
    chain.move_to_element_with_offset(canvas, ox, oy).click()
    if shift:
        chain.key_up(Keys.SHIFT)
    chain.perform()


def test_browser_click_propagate_correct_export(tmp_path, browser):
    from masklet.app.server import create_app
    from masklet.app.session import Annotator, video_predictor_kwargs
    from masklet.predictors.video import VideoPredictor
    from masklet.utils.rle import coco_rle_to_mask

    src = DATA_DIR / "videos" / "bedroom.mp4"
    if not src.exists():
        pytest.skip(f"test data {src} not found (set MASKLET_DATA)")
    root = tmp_path / "media"
    root.mkdir()
    clip = write_clip(src, root / "clip.mp4", FRAMES, size=(320, 180))
    model = tiny_sam2()
    annotator = Annotator(root, model, tmp_path / "project", "sam2_test")
    server = Server(create_app(annotator))
    try:
        d = browser
        d.get(server.url)
        WebDriverWait(d, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".media-item"))
        d.find_element(By.CSS_SELECTOR, '.media-item[data-path="clip.mp4"]').click()
        _wait_status(d, "320×180, 6 frame(s)")
        _click_image(d, 150, 100, 320, 180)
        _wait_status(d, "mask in")
        d.find_element(By.ID, "propagate-forward").click()
        _wait_status(d, "propagated 6 frames")
        for _ in range(3):
            d.find_element(By.ID, "next-frame").click()
        WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "frame-label").text.startswith("3 "))
        _click_image(d, 220, 60, 320, 180, shift=True)  # a negative click corrects frame 3
        _wait_status(d, "frame 3: mask in")
        d.find_element(By.ID, "propagate-forward").click()
        _wait_status(d, "propagated 3 frames")
        d.find_element(By.ID, "export-coco").click()
        _wait_status(d, "exported coco")
        d.save_screenshot(str(tmp_path / "app.png"))
        assert d.execute_script("return window.masklet.lastLatencyMs") > 0
        # the presence strip shows one row per object
        assert len(d.find_elements(By.CSS_SELECTOR, "#presence .row")) == 1
    finally:
        server.stop()
        annotator.close()

    state = json.loads(next((tmp_path / "project" / "media").glob("*/state.json")).read_text())
    prompts = state["prompts"]["1"]
    assert sorted(prompts, key=int) == ["0", "3"]
    assert prompts["3"]["points"][0][2] == 0  # shift-click was negative
    doc = json.loads(next((tmp_path / "project" / "exports").glob("*/coco.json")).read_text())
    got = {a["image_id"] - 1: coco_rle_to_mask(a["segmentation"]) for a in doc["annotations"] if a["track_id"] == 1}

    # the same prompts through the Python API
    vp = VideoPredictor(model, **video_predictor_kwargs())
    st = vp.init_state(clip)
    expected = {}

    def prompt(t: int) -> None:
        pts = prompts[str(t)]["points"]
        _, _, logits = vp.add_new_points_or_box(st, t, 1, points=[p[:2] for p in pts], labels=[p[2] for p in pts])
        expected[t] = (logits[0, 0] > 0).numpy()

    def propagate(start: int) -> None:
        for t, ids, logits in vp.propagate_in_video(st, start_frame_idx=start, progress=False):
            if str(t) not in prompts:  # a prompted frame keeps the mask of its prompt
                expected[t] = (logits[0, 0] > 0).numpy()

    prompt(0)
    propagate(0)
    prompt(3)
    propagate(3)
    for t in range(FRAMES):
        e = expected[t]
        g = got.get(t, np.zeros_like(e))
        assert np.array_equal(g, e), f"frame {t}: {int((g != e).sum())} pixels differ"
    assert any(m.any() for m in expected.values())
