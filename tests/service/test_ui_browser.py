"""The demo page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium),
loaded from a real server with the embedded COCO default model.

It uploads the README's sample photo and checks what a person sees against the API: the detections table lists
the classes and scores ``POST /v1/detect`` answers, the canvas has the boxes drawn at their edges over the photo,
the timing table is filled; the webcam (Chromium's fake camera) streams frames; with API keys on, the page asks
for the key, and with a small body limit it says the image is too large and what the limit is; a 503 says when to
retry. No CSP violation or script error may reach the console. ``make test`` installs the browser (as root); where
it is missing these tests skip. ``UI_SCREENSHOT=docs/ui.png`` also writes the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from model.bn_unfold import DEFAULT_CALIBRATION_DIR
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHELSEA = DEFAULT_CALIBRATION_DIR / "chelsea.jpg"  # the README's sample photo: one cat
KEY = "ui-test-key"
# Known-good headless flags on these machines: no sandbox (root), and no background connections to a closed network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--use-fake-device-for-media-stream",  # a synthetic camera...
    "--use-fake-ui-for-media-stream",  # ...granted without a prompt
)
WAIT_S = 20


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): `make test` installs "
            "them when run as root with apt-get"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")  # new and empty
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def default_server() -> Iterator[ServerThread]:
    with ServerThread(server_settings(Path(), bundles=[])) as running:  # no bundle: the embedded default model
        yield running


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerThread]:
    settings = server_settings(Path(), bundles=[], api_keys=[KEY], max_request_bytes=16 * 1024)
    with ServerThread(settings) as running:
        yield running


def wait(driver: webdriver.Chrome, condition, message: str):
    """Explicit wait on ``condition(driver)``; the page's status line goes with a timeout."""

    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except Exception as exc:
        raise AssertionError(f"{message}; the page says: {status(driver)!r}") from exc


def open_page(driver: webdriver.Chrome, server: ServerThread) -> None:
    driver.get_log("browser")  # each page starts with an empty console
    driver.get(server.http_url + "/")


def wait_for_models(driver: webdriver.Chrome) -> None:
    wait(driver, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "yolox-nano-coco", "no model list")


def upload(driver: webdriver.Chrome, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def drawn(driver: webdriver.Chrome) -> int:
    return int(driver.find_element(By.ID, "stage").get_attribute("data-drawn") or 0)


def status(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "status").text


def table_rows(driver: webdriver.Chrome) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#detections tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def pixel(driver: webdriver.Chrome, canvas: str, x: int, y: int) -> list[int]:
    """RGBA of one canvas pixel (the canvas holds the image's own pixels; CSS only scales it)."""
    script = "const [id, x, y] = arguments; const ctx = document.getElementById(id).getContext('2d');"
    return driver.execute_script(script + "return Array.from(ctx.getImageData(x, y, 1, 1).data);", canvas, x, y)


def console_problems(driver: webdriver.Chrome) -> list[str]:
    """Console errors and CSP reports since the last call."""
    entries = driver.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]


def test_the_page_draws_the_sample_photo_as_the_api_detects_it(
    browser: webdriver.Chrome, default_server: ServerThread, tmp_path: Path
) -> None:
    expected = httpx.post(
        default_server.http_url + "/v1/detect",
        content=CHELSEA.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    ).json()["results"][0]
    assert expected["detections"], "the sample photo should show a cat"
    open_page(browser, default_server)
    wait_for_models(browser)
    upload(browser, CHELSEA)
    wait(browser, lambda d: drawn(d) == 1, "the photo was not drawn")

    # The table shows what the API answers, in the same order, as a person reads it.
    want = [(d["class_name"], f"{d['score']:.3f}") for d in expected["detections"]]
    assert [(row[1], row[2]) for row in table_rows(browser)] == want
    assert "1 detection" in status(browser) and "yolox-nano-coco" in status(browser)
    timing = {td.get_attribute("data-stage"): td.text for td in browser.find_elements(By.CSS_SELECTOR, "#timing td")}
    assert set(timing) == {"decode", "queue", "inference", "postprocess", "total", "round_trip"}
    assert all(float(v) >= 0 for v in timing.values()) and float(timing["inference"]) > 0

    # The image canvas holds the photo at its own size; the overlay has the boxes' edges drawn over it, and
    # nothing inside the boxes.
    photo = cv2.imread(str(CHELSEA))  # BGR [H, W, 3]
    height, width = photo.shape[:2]
    size = browser.execute_script("const c = document.getElementById('image'); return [c.width, c.height];")
    assert size == [width, height]
    for x, y in ((width // 3, height // 2), (2 * width // 3, height // 3)):
        rgb = pixel(browser, "image", x, y)[:3]
        assert max(abs(a - int(b)) for a, b in zip(rgb, photo[y, x, ::-1], strict=True)) <= 12, (x, y)
    for det in expected["detections"]:
        x1, y1, x2, y2 = det["box"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        for x, y in ((x1, cy), (x2, cy), (cx, y1), (cx, y2)):
            px, py = min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)
            edge, under = pixel(browser, "overlay", px, py), pixel(browser, "image", px, py)
            assert edge[3] >= 128, f"no box edge at ({px}, {py})"
            assert edge[:3] != under[:3], f"the edge at ({px}, {py}) does not change the picture"
    x1, y1, x2, y2 = expected["detections"][0]["box"]
    assert pixel(browser, "overlay", int((x1 + x2) / 2), int((y1 + y2) / 2))[3] == 0, "a box is filled, not drawn"

    shot = tmp_path / "ui.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["UI_SCREENSHOT"])
    assert console_problems(browser) == []


def test_options_redraw_and_the_webcam_streams_frames(browser: webdriver.Chrome, default_server: ServerThread) -> None:
    open_page(browser, default_server)
    wait_for_models(browser)
    upload(browser, CHELSEA)
    wait(browser, lambda d: drawn(d) == 1, "the photo was not drawn")
    classes = browser.find_element(By.ID, "classes")
    classes.send_keys("dog" + Keys.TAB)  # a class filter with no dog in the photo: no boxes
    wait(browser, lambda d: drawn(d) == 2, "the class filter did not redraw")
    assert table_rows(browser) == [] and "0 detections" in status(browser)

    browser.find_element(By.ID, "webcam").click()
    wait(browser, lambda d: int(d.find_element(By.ID, "stage").get_attribute("data-frames") or 0) >= 3, "no frames")
    assert "Webcam frame" in status(browser)
    browser.find_element(By.ID, "webcam").click()
    assert browser.find_element(By.ID, "webcam").text == "Start webcam"
    assert console_problems(browser) == []


def test_a_busy_server_says_when_to_retry(browser: webdriver.Chrome, default_server: ServerThread) -> None:
    open_page(browser, default_server)
    wait_for_models(browser)
    # A real 503 needs a saturated queue; the page's handling is what is tested here: answer its request with
    # the server's 503 (error envelope + Retry-After).
    browser.execute_script(
        "window.fetch = async () => new Response("
        "JSON.stringify({error: {code: 'overloaded', message: 'queue is full (64 of 64 requests pending)'}}),"
        "{status: 503, headers: {'Retry-After': '7', 'Content-Type': 'application/json'}});"
    )
    upload(browser, CHELSEA)
    wait(browser, lambda d: "busy" in status(d), "no busy message")
    assert "retry in 7 s" in status(browser)
    assert "busy" in browser.find_element(By.ID, "status").get_attribute("class")


def test_with_keys_the_page_asks_for_one_and_explains_the_size_limit(
    browser: webdriver.Chrome, keyed_server: ServerThread, tmp_path: Path
) -> None:
    open_page(browser, keyed_server)
    key = browser.find_element(By.ID, "api-key")
    wait(browser, lambda d: key.is_displayed(), "no API key prompt")
    assert browser.switch_to.active_element == key
    assert "needs an API key" in status(browser)

    key.send_keys("not-the-key" + Keys.ENTER)
    wait(browser, lambda d: "refused this API key" in status(d), "a wrong key was not reported")
    key.clear()
    key.send_keys(KEY + Keys.ENTER)
    wait_for_models(browser)

    upload(browser, CHELSEA)  # 34 KiB over a 16 KiB limit
    wait(browser, lambda d: "too large" in status(d), "no size message")
    assert "at most 16 KiB" in status(browser)
    assert "error" in browser.find_element(By.ID, "status").get_attribute("class")

    small = tmp_path / "small-cat.jpg"
    photo = cv2.imread(str(CHELSEA))
    smaller = cv2.resize(photo, (300, 200), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", smaller, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok and len(jpeg) < 16 * 1024
    small.write_bytes(jpeg.tobytes())
    upload(browser, small)
    wait(browser, lambda d: drawn(d) == 1, "no drawing with the key")
    assert [row[1] for row in table_rows(browser)][:1] == ["cat"]
    # The key went in the header only: neither the page's URL nor any storage holds it.
    assert KEY not in browser.current_url
    assert browser.execute_script("return localStorage.length + sessionStorage.length + document.cookie.length") == 0
    problems = [p for p in console_problems(browser) if "401" not in p and "413" not in p]  # the answers tested
    assert problems == []


def test_the_browser_enforces_the_policy(browser: webdriver.Chrome, default_server: ServerThread) -> None:
    open_page(browser, default_server)
    wait_for_models(browser)
    assert console_problems(browser) == []
    # An inline script injected into the page (as an XSS would) does not run, and the browser says why.
    refused = browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.injected = 1;';"
        "document.body.append(s); return window.injected === undefined;"
    )
    assert refused, "an inline script ran"
    assert any("Content Security Policy" in p for p in console_problems(browser))
