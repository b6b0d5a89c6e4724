"""Annotation app latency: click-to-mask time (inside the server, over HTTP, and as the browser sees it) and
propagation seconds per frame, with the app served by uvicorn exactly as `masklet app` does.

    python bench/app_latency.py                  # reference tiny SAM 2.1: truck.jpg and 20 frames of bedroom.mp4
    python bench/app_latency.py --no-browser     # without headless Chromium
    python bench/app_latency.py --quick          # smoke test (tiny test variant, 4 frames)

server_ms is the server's own time for POST /api/prompts (its Server-Timing header); http_ms adds the HTTP round
trip; browser_ms is what the frontend measures from the click to the new overlay drawn (prompt request, state
and overlay PNG). Image clicks after the first only decode (the embedding is kept); the first click includes the
image encoder. A video click on a frame the app has encoded ahead (the scrubber rested there) only decodes;
propagation seconds per frame include writing each frame's masks to the project folder.
"""
from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def _server_ms(response: Any) -> float:
    timing = response.headers.get("server-timing", "")
    return float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")


def _write_clip(src: Path, dst: Path, frames: int) -> None:
    import cv2

    cap = cv2.VideoCapture(str(src))
    writer = None
    for _ in range(frames):
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, frame.shape[1::-1])
        writer.write(frame)
    if writer is not None:
        writer.release()
    cap.release()


def _serve(app: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _click(http: Any, obj: int, frame: int, x: float, y: float) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = http.post("/api/prompts", json={"object": obj, "frame": frame, "points": [[x, y, 1]]})
    r.raise_for_status()
    return _server_ms(r), (time.perf_counter() - t0) * 1e3


def _stats_ms(values: list[float]) -> dict[str, Any]:
    stats = common.summarize([v / 1e3 for v in values])
    return {"n": stats["n"], **{k.replace("_s", "_ms"): v * 1e3 for k, v in stats.items() if k.endswith("_s")}}


def bench_image(http: Any, args: Any, width: int, height: int) -> dict[str, Any]:
    http.post("/api/open", json={"path": "image.jpg"}).raise_for_status()
    obj = http.post("/api/objects", json={}).json()["id"]
    points = common.spread_points(args.clicks + 1, width, height)
    first_server, first_http = _click(http, obj, 0, *points[0])
    server, total = zip(*[_click(http, obj, 0, *p) for p in points[1:]])
    return {"first_click_server_ms": first_server, "first_click_http_ms": first_http,
            "click_server_ms": _stats_ms(list(server)), "click_http_ms": _stats_ms(list(total))}


def bench_video(http: Any, annotator: Any, args: Any, width: int, height: int) -> dict[str, Any]:
    http.post("/api/open", json={"path": "clip.mp4"}).raise_for_status()
    obj = http.post("/api/objects", json={}).json()["id"]

    def rest_on(frame: int) -> None:
        # the scrubber rests on `frame`: the app encodes it (and a few ahead) in the background
        http.put("/api/frame", json={"frame": frame}).raise_for_status()
        deadline = time.time() + 120
        while not annotator.is_prefetched(frame) and time.time() < deadline:
            time.sleep(0.05)

    rest_on(0)
    x, y = width * 0.5, height * 0.55
    click0 = _click(http, obj, 0, x, y)
    http.post("/api/propagate", json={"frame": 0, "direction": "forward"}).raise_for_status()
    while (job := http.get("/api/propagate").json())["running"]:
        time.sleep(0.05)
    if job["error"]:
        raise RuntimeError(job["error"])
    mid = args.frames // 2
    rest_on(mid)
    correction = _click(http, obj, mid, x * 0.8, y)
    return {"frames": args.frames, "width": width, "height": height,
            "click_prefetched_frame_server_ms": click0[0], "click_prefetched_frame_http_ms": click0[1],
            "correction_click_server_ms": correction[0], "correction_click_http_ms": correction[1],
            "propagate_frames": job["done"], "propagate_s": job["seconds"],
            "propagate_s_per_frame": job["seconds"] / max(1, job["done"])}


def bench_browser(url: str, args: Any, width: int, height: int) -> dict[str, Any]:
    """Clicks in headless Chromium on the image: the frontend's own click-to-overlay time (lastLatencyMs)."""
    chromium, driver_path = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
        "/usr/bin/chromedriver"
    if not (Path(chromium).exists() and Path(driver_path).exists()):
        return {"skipped": f"Chromium / chromedriver not found ({chromium}, {driver_path})"}
    from selenium.webdriver import ActionChains, Chrome, ChromeOptions
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,860"):
        opts.add_argument(arg)
    driver = Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '.media-item[data-path="image.jpg"]'))
        driver.find_element(By.CSS_SELECTOR, '.media-item[data-path="image.jpg"]').click()
        WebDriverWait(driver, 60).until(lambda d: "frame(s)" in d.find_element(By.ID, "status").text)
        canvas = driver.find_element(By.ID, "canvas")
        rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                     canvas)
        times = []
        for k, (x, y) in enumerate(common.spread_points(args.clicks, width, height)):
            driver.execute_script("window.masklet.lastLatencyMs = null;")
            ActionChains(driver).move_to_element_with_offset(canvas, x * rect[0] / width - rect[0] / 2,
                                                             y * rect[1] / height - rect[1] / 2).click().perform()
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.masklet.lastLatencyMs"))
            times.append(driver.execute_script("return window.masklet.lastLatencyMs"))
        return {"click_browser_ms": _stats_ms(times), "points_per_object": args.clicks}
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--video", default=None, help="video to cut the clip from (default: shared bedroom.mp4)")
    parser.add_argument("--image", default=None, help="image to click (default: shared images/truck.jpg)")
    parser.add_argument("--frames", type=int, default=None, help="frames of the clip to propagate over (default 20)")
    parser.add_argument("--clicks", type=int, default=None, help="timed clicks per case (default 10)")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless Chromium measurement")
    args = parser.parse_args(argv)
    common.fill_defaults(args, normal={"frames": 20, "clicks": 10}, quick={"frames": 4, "clicks": 2})
    device = common.setup(args)

    import cv2

    from masklet.app.server import create_app
    from masklet.app.session import Annotator, video_predictor_kwargs

    model, result = common.load_run_model("app_latency", args, device, sam2_only=True)
    tmp = Path(tempfile.mkdtemp(prefix="masklet-app-bench-"))
    try:
        root = tmp / "media"
        root.mkdir()
        image_path = Path(args.image) if args.image else common.data_file("images/truck.jpg")
        shutil.copy(image_path, root / "image.jpg")
        _write_clip(Path(args.video) if args.video else common.data_file("videos/bedroom.mp4"), root / "clip.mp4",
                    args.frames)
        ih, iw = cv2.imread(str(root / "image.jpg")).shape[:2]
        cap = cv2.VideoCapture(str(root / "clip.mp4"))
        vw, vh = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
        annotator = Annotator(root, model, tmp / "project", result["model"]["variant"])
        result["video_predictor"] = {k: v for k, v in video_predictor_kwargs().items()}
        server, thread, url = _serve(create_app(annotator))
        import httpx

        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                common.log("[app_latency] image clicks")
                result["image"] = {"width": iw, "height": ih, **bench_image(http, args, iw, ih)}
                common.log("[app_latency] video click, propagate, correction")
                result["video"] = bench_video(http, annotator, args, vw, vh)
            if not args.no_browser:
                common.log("[app_latency] browser clicks")
                result["browser"] = bench_browser(url, args, iw, ih)
        finally:
            server.should_exit = True
            thread.join(10)
            annotator.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return common.finish(result, args.output, device)


if __name__ == "__main__":
    main()
