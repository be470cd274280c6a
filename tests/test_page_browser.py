"""The HTML page in real headless Chromium against the real app (uvicorn, tiny model).

Also served behind a small reverse proxy that behaves like an API Gateway stage: the page lives
at ``/prod`` (no trailing slash), the stage prefix is stripped before the app, and ``/v1/*``
answers ``403 {"message": "Forbidden"}`` without the right ``x-api-key``.
"""

from __future__ import annotations

import colorsys
import http.client
import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import PAGE_NOT_TESTED

# Debian's package; NERKIT_CHROMIUM names another binary.
CHROMIUM = Path(os.environ.get("NERKIT_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    pytest.skip(f"{PAGE_NOT_TESTED}: no Chromium at {CHROMIUM}", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous waits, polled: a shared CI machine can be slow, and nothing here measures speed.
STARTUP_WAIT_S = 300.0
WAIT_MS = 60_000
STAGE = "/prod"
API_KEY = "page-test-key"
# The shape of a JWT (header.payload.signature, base64url); the stand-in gateway only compares it.
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzY29wZSI6Im5lcmtpdC9pbnZva2UifQ.c2lnbmF0dXJl"
# The emoji is one code point (the API's offsets) but two UTF-16 units (JavaScript's).
TEXT = "Angela Merkel met Tim Cook 😀 in Berlin and flew to Paris."
# Hue bands (degrees) the fixed label colours must fall in: the colour names of the brief.
FIXED_HUES = {"ORG": (90, 160), "LOC": (-15, 15), "PER": (195, 235), "MISC": (255, 290)}
# CIELAB distance (delta E) from which two label colours read as different colours.
DISTINCT = 20.0

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited during startup:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}ready", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the app was not ready in {STARTUP_WAIT_S:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def app_url(tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app (the module-level one Lambda serves) under uvicorn, tiny model loaded."""
    work = tmp_path_factory.mktemp("page-app")
    port = free_port()
    env = {
        **os.environ,
        "MODEL_URI": str(tiny_artifact_dir),
        "MODEL_CACHE_DIR": str(work / "cache"),
        "MODEL_REFRESH_SECONDS": "0",
        "ENABLE_PAGE": "true",
    }
    log = work / "app.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "nerkit.api.app:app", "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=60)


class StageProxy(BaseHTTPRequestHandler):
    """Forwards ``/prod/...`` to the app as ``/...``, like an API Gateway REST stage."""

    server: StageServer

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads ``server.seen`` instead."""

    def _forward(self) -> None:
        self.server.seen.append(self.path)
        inner = self.path.removeprefix(STAGE)
        if inner == self.path or inner[:1] not in ("", "/", "?"):
            self._reply(403, {"message": "Missing Authentication Token"})
            return
        inner = inner if inner.startswith("/") else "/" + inner
        if inner.startswith("/v1/"):
            # A REST stage checks x-api-key; an HTTP API's JWT authorizer, Authorization.
            credentials = (self.headers.get("x-api-key"), self.headers.get("authorization"))
            if credentials not in ((API_KEY, None), (None, f"Bearer {TOKEN}")):
                self._reply(403, {"message": "Forbidden"})
                return
            self.server.credentials.append(credentials)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.app_port, timeout=60)
        forwarded = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
        }
        upstream.request(self.command, inner, body=body or None, headers=forwarded)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reply(self, status: int, body: dict[str, str]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class StageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app_port: int) -> None:
        super().__init__(("127.0.0.1", 0), StageProxy)
        self.app_port = app_port
        self.seen: list[str] = []
        self.credentials: list[tuple[str | None, str | None]] = []


@pytest.fixture(scope="module")
def stage(app_url: str) -> Iterator[StageServer]:
    server = StageServer(int(app_url.rstrip("/").rsplit(":", 1)[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()  # fresh storage per test
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def submit(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#submit")


def wait_for_result(page: Page) -> None:
    expect(page.locator("#status")).to_have_text("Done.", timeout=WAIT_MS)
    expect(page.locator("#result")).to_be_visible(timeout=WAIT_MS)


def marks(page: Page) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#highlighted mark.ent",
        """els => els.map(e => ({
            text: e.textContent, label: e.dataset.label, title: e.title,
            colour: getComputedStyle(e).backgroundColor}))""",
    )


def legend(page: Page) -> dict[str, str]:
    items = page.eval_on_selector_all(
        "#legend li[data-label]",
        """els => els.map(e => [e.dataset.label,
            getComputedStyle(e.querySelector('.swatch')).backgroundColor])""",
    )
    return dict(items)


def hue(css_colour: str) -> float:
    red, green, blue = (int(v) / 255 for v in re.findall(r"\d+", css_colour)[:3])
    return colorsys.rgb_to_hls(red, green, blue)[0] * 360


def lab(css_colour: str) -> tuple[float, float, float]:
    """CIELAB (D65) of an ``rgb(...)`` colour: distances there match what the eye sees."""

    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(int(v) / 255) for v in re.findall(r"\d+", css_colour)[:3])
    x = (0.4124 * red + 0.3576 * green + 0.1805 * blue) / 0.95047
    y = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    z = (0.0193 * red + 0.1192 * green + 0.9505 * blue) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def colour_distance(first: str, second: str) -> float:
    """CIE76 delta E: about 2 is just noticeable; 20 and more reads as another colour."""
    return math.dist(lab(first), lab(second))


def in_band(value: float, band: tuple[int, int]) -> bool:
    low, high = band
    return any(low <= shifted <= high for shifted in (value, value - 360))


def test_entities_are_highlighted_as_the_api_returns_them(page: Page, app_url: str) -> None:
    page.goto(app_url)
    page.select_option("#aggregation", "first")
    page.select_option("#decoding", "argmax")
    page.fill("#min-score", "0")
    submit(page, TEXT)
    wait_for_result(page)

    api = httpx.post(
        f"{app_url}v1/entities",
        json={"text": TEXT, "aggregation": "first", "decoding": "argmax", "min_score": 0},
        timeout=60,
    ).json()
    entities = sorted(api["entities"], key=lambda e: e["start"])
    assert entities, "the tiny model tags a mix of entities; an empty result tests nothing"
    shown = marks(page)
    assert [(m["text"], m["label"]) for m in shown] == [
        (TEXT[e["start"] : e["end"]], e["entity_group"]) for e in entities
    ]
    for mark, entity in zip(shown, entities, strict=True):
        assert in_band(hue(mark["colour"]), FIXED_HUES[entity["entity_group"]]), mark
        assert entity["entity_group"] in mark["title"]
        shown_score = float(re.search(r"score (\d\.\d{3})", mark["title"])[1])
        assert abs(shown_score - entity["score"]) <= 0.0005 + 1e-9

    assert page.text_content("#highlighted") == TEXT

    meta = page.text_content("#meta")
    assert api["model_version"] in meta
    assert "ms" in meta
    expect(page.locator("#model-info")).to_contain_text("test-1", timeout=WAIT_MS)

    colours = legend(page)
    model = httpx.get(f"{app_url}v1/model", timeout=60).json()
    assert set(model["entity_types"]) <= set(colours)
    for mark in shown:
        assert colours[mark["label"]] == mark["colour"]
    first = page.locator("#highlighted mark.ent").first
    first.hover()  # the tooltip on hover is the title attribute
    expect(first).to_have_attribute("title", re.compile(rf"^{entities[0]['entity_group']} · score"))


def test_empty_text_shows_the_api_error(page: Page, app_url: str) -> None:
    page.goto(app_url)
    submit(page, "   ")
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=WAIT_MS)
    expect(error).to_contain_text("HTTP 422", timeout=WAIT_MS)
    expect(error).to_contain_text("text must not be empty", timeout=WAIT_MS)
    expect(error).to_contain_text("Request id:", timeout=WAIT_MS)
    assert page.get_attribute("#error", "role") == "alert"
    expect(page.locator("#result")).to_be_hidden()


def answer_with(page: Page, text: str, spans: list[tuple[str, str]]) -> None:
    """Make ``/v1/entities`` answer these (word, label) spans of ``text``: entity types and
    texts the tiny model does not produce on demand."""
    entities = []
    for word, label in spans:
        start = text.index(word)
        entities.append(
            {
                "entity_group": label,
                "score": 0.9,
                "word": word,
                "start": start,
                "end": start + len(word),
            }
        )
    body = {"entities": entities, "model_version": "fake-1", "took_ms": 1.0}
    page.route("**/v1/entities", lambda route: route.fulfill(status=200, json=body))


def test_user_markup_is_shown_as_text(page: Page, app_url: str) -> None:
    text = 'Hi <img src=x onerror="window.__xss=1"> from <b onmouseover="window.__xss=2">Acme</b>.'
    spans = [('<b onmouseover="window.__xss=2">Acme</b>', "ORG")]
    answer_with(page, text, spans)
    page.goto(app_url)
    submit(page, text)
    wait_for_result(page)
    assert [(m["text"], m["label"]) for m in marks(page)] == [(spans[0][0], "ORG")]
    assert page.text_content("#highlighted") == text
    assert page.locator("#highlighted img, #highlighted b").count() == 0
    page.hover("#highlighted mark.ent")
    assert page.evaluate("window.__xss") is None


def test_other_labels_get_stable_distinct_colours(page: Page, app_url: str) -> None:
    """Labels the page has no fixed colour for, and offsets past astral characters."""
    text = "😀 Ada met 🇫🇷 Acme at Expo 2030."
    spans = [("Ada", "PER"), ("Acme", "PRODUCT"), ("Expo 2030", "EVENT")]
    answer_with(page, text, spans)

    def colours_after_submit() -> dict[str, str]:
        submit(page, text)
        wait_for_result(page)
        shown = marks(page)
        assert [(m["text"], m["label"]) for m in shown] == spans
        return {m["label"]: m["colour"] for m in shown}

    page.goto(app_url)
    first = colours_after_submit()
    page.reload()
    assert colours_after_submit() == first
    fixed = {first["PER"]} | {legend(page)[label] for label in ("ORG", "LOC", "MISC")}
    assert colour_distance(first["PRODUCT"], first["EVENT"]) >= DISTINCT
    for label in ("PRODUCT", "EVENT"):
        assert all(colour_distance(first[label], colour) >= DISTINCT for colour in fixed)
        assert legend(page)[label] == first[label]


def test_gmb_types_get_clearly_different_colours(page: Page, app_url: str) -> None:
    """The GMB corpus's types: none too close to another or to the fixed colours; its
    lower-case per and org are PER and ORG."""
    words = ["art", "eve", "geo", "gpe", "nat", "org", "per", "tim"]
    text = " ".join(f"W{word}" for word in words) + "."
    answer_with(page, text, [(f"W{word}", word) for word in words])
    page.goto(app_url)
    submit(page, text)
    wait_for_result(page)
    colours = legend(page)
    assert colours["per"] == colours["PER"] and colours["org"] == colours["ORG"]
    distinct = {label: colours[label] for label in colours if label not in ("per", "org")}
    for (one, first), (other, second) in itertools.combinations(distinct.items(), 2):
        assert colour_distance(first, second) >= DISTINCT, (one, other, first, second)


def test_loc_reads_red(page: Page, app_url: str) -> None:
    page.goto(app_url)
    expect(page.locator("#legend li[data-label=LOC]")).to_be_visible(timeout=WAIT_MS)
    loc = legend(page)["LOC"]
    red, green, blue = (int(v) / 255 for v in re.findall(r"\d+", loc)[:3])
    _, lightness, saturation = colorsys.rgb_to_hls(red, green, blue)
    assert in_band(hue(loc), FIXED_HUES["LOC"])
    assert lightness < 0.8 and saturation > 0.6, loc  # a light pink is lighter than this


def test_an_error_clears_the_legends_in_result_marks(page: Page, app_url: str) -> None:
    page.goto(app_url)
    page.fill("#min-score", "0")
    submit(page, TEXT)
    wait_for_result(page)
    assert page.locator("#legend li.present").count() > 0
    submit(page, "   ")
    expect(page.locator("#error")).to_be_visible(timeout=WAIT_MS)
    assert page.locator("#legend li.present").count() == 0
    assert "(in result)" not in page.text_content("#legend")


def test_the_page_has_an_icon_its_policy_allows(page: Page, app_url: str) -> None:
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text))
    page.goto(app_url)
    icon = page.get_attribute("link[rel=icon]", "href")
    assert icon and icon.startswith("data:image/svg+xml,")
    loaded = page.evaluate(
        """href => new Promise(done => {
            const image = new Image();
            image.onload = () => done(image.naturalWidth > 0);
            image.onerror = () => done(false);
            image.src = href;
        })""",
        icon,
    )
    assert loaded is True
    assert not [line for line in blocked if "Content Security Policy" in line]
    assert httpx.get(f"{app_url}favicon.ico", timeout=60).status_code == 404  # never asked for


@pytest.mark.parametrize("path", [STAGE, STAGE + "/"])
def test_page_works_under_a_stage_with_an_api_key(
    page: Page, stage: StageServer, path: str
) -> None:
    stage.seen.clear()
    url = f"http://127.0.0.1:{stage.server_port}{path}"
    page.goto(url)
    expect(page.locator("#model-info")).to_contain_text("Forbidden", timeout=WAIT_MS)

    submit(page, TEXT)
    error = page.locator("#error")
    expect(error).to_contain_text("HTTP 403", timeout=WAIT_MS)
    expect(error).to_contain_text("API key", timeout=WAIT_MS)

    page.fill("#api-key", API_KEY)
    submit(page, TEXT)
    wait_for_result(page)
    expect(error).to_be_hidden()
    assert marks(page)
    expect(page.locator("#model-info")).to_contain_text("test-1", timeout=WAIT_MS)
    assert page.evaluate("sessionStorage.getItem('nerkit.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0

    page.reload()
    assert page.input_value("#api-key") == API_KEY  # kept for the tab's session
    api_calls = [seen for seen in stage.seen if "/v1/" in seen]
    assert api_calls
    assert all(seen.startswith(STAGE + "/v1/") for seen in api_calls), stage.seen


def test_docs_render_without_the_internet(page: Page, app_url: str) -> None:
    """/docs in a browser that can reach nothing but the app: Swagger UI still renders."""
    elsewhere: list[str] = []

    def local_only(route: Any) -> None:
        if route.request.url.startswith(app_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(f"{app_url}docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("nerkit", timeout=WAIT_MS)
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=WAIT_MS)
    assert elsewhere == []


def test_a_jwt_goes_as_a_bearer_token(page: Page, stage: StageServer) -> None:
    """The HTTP API front door authorizes JWTs: a token typed in the key field is sent as
    Authorization: Bearer (and not as x-api-key)."""
    stage.credentials.clear()
    page.goto(f"http://127.0.0.1:{stage.server_port}{STAGE}/")
    page.fill("#api-key", TOKEN)
    submit(page, TEXT)
    wait_for_result(page)
    expect(page.locator("#error")).to_be_hidden()
    assert stage.credentials
    assert set(stage.credentials) == {(None, f"Bearer {TOKEN}")}
