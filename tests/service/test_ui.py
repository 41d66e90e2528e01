"""The demo page (``service.ui``) as served, in process: the page and its assets carry the strict CSP and
``nosniff``, hold no inline code or styles, refer only to same-origin files; ``ui=False`` leaves ``/`` and ``/ui``
unrouted; ``/docs`` keeps its own (CDN, inline script) page without our CSP. The page in a real browser:
``test_ui_browser.py``."""

from __future__ import annotations

import argparse
import asyncio
import re
from html.parser import HTMLParser

import httpx
import pytest

from service.cli import add_arguments, settings_from_args
from service.http_app import create_http_app
from service.settings import Settings
from service.ui import ASSETS, CONTENT_SECURITY_POLICY, STATIC_DIR

PAGES = ("/", "/ui")
ASSET_PATHS = tuple(f"/ui/{name}" for name in ASSETS)


def get_all(settings: Settings, *paths: str) -> dict[str, httpx.Response]:
    """GET each path from the whole HTTP app (router + FastAPI) in process; GETs never touch the engine."""

    async def main() -> dict[str, httpx.Response]:
        app = create_http_app(object(), settings)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui") as client:
            return {path: await client.get(path) for path in paths}

    return asyncio.run(main())


@pytest.fixture(scope="module")
def served() -> dict[str, httpx.Response]:
    return get_all(Settings(), *PAGES, *ASSET_PATHS, "/docs", "/openapi.json")


class _Page(HTMLParser):
    """Collects what the page's markup loads or runs."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data.strip()


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.mark.parametrize("path", PAGES + ASSET_PATHS)
def test_page_and_assets_carry_the_strict_policy(served: dict[str, httpx.Response], path: str) -> None:
    response = served[path]
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    media_type = {"/ui/ui.js": "text/javascript", "/ui/ui.css": "text/css"}.get(path, "text/html")
    assert response.headers["content-type"].split(";")[0] == media_type


def test_the_policy_allows_only_this_origin() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"  # no inline, no eval
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY


def test_both_paths_serve_the_packaged_page(served: dict[str, httpx.Response]) -> None:
    packaged = (STATIC_DIR / "index.html").read_bytes()
    assert served["/"].content == served["/ui"].content == packaged
    for path in ASSET_PATHS:
        assert served[path].content == (STATIC_DIR / path.rsplit("/", 1)[1]).read_bytes()


def test_the_page_has_no_inline_code_or_styles(served: dict[str, httpx.Response]) -> None:
    html = served["/"].text
    page = parse(html)
    assert page.inline_script == ""
    assert not [tag for tag, _ in page.tags if tag == "style"]
    for tag, attrs in page.tags:
        assert "style" not in attrs, f"<{tag} style=...>"
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"<{tag}> has inline handlers {handlers}"
        for name in ("href", "src", "action", "formaction"):
            assert not (attrs.get(name) or "").lower().startswith("javascript:"), f"<{tag} {name}=javascript:...>"
    assert "javascript:" not in html.lower()


def test_the_page_loads_only_same_origin_files(served: dict[str, httpx.Response]) -> None:
    page = parse(served["/"].text)
    scripts = [attrs["src"] for tag, attrs in page.tags if tag == "script"]
    styles = [attrs["href"] for tag, attrs in page.tags if tag == "link" and attrs.get("rel") == "stylesheet"]
    assert scripts == ["ui/ui.js"] and styles == ["ui/ui.css"]  # relative: right under "/", "/ui" and a prefix
    for tag, attrs in page.tags:
        for name in ("href", "src"):
            url = attrs.get(name) or ""
            assert not re.match(r"^([a-z][a-z0-9+.-]*:)?//", url, re.I), f"<{tag} {name}={url}>: another origin"
            assert not url.startswith("data:") or url == "data:,", f"<{tag} {name}={url}>"


def test_the_script_calls_only_the_public_api_and_never_evaluates_strings() -> None:
    script = (STATIC_DIR / "ui.js").read_text()
    assert not re.search(r"\beval\s*\(|new Function\b|setTimeout\(\s*[\"'`]|innerHTML|document\.write", script)
    assert not re.search(r"https?://", script), "the page talks to its own origin only"
    assert not re.search(r"localStorage|sessionStorage|document\.cookie", script), "the key stays in page memory"
    paths = set(re.findall(r"[\"'`](v\d/[^\"'`?$]*)", script))
    assert paths == {"v1/models", "v1/detect", "v1/models/"}, paths
    styles = (STATIC_DIR / "ui.css").read_text()
    assert "@import" not in styles and "url(" not in styles


def test_docs_keep_their_own_page_without_our_policy(served: dict[str, httpx.Response]) -> None:
    docs = served["/docs"]
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert "content-security-policy" not in docs.headers
    paths = served["/openapi.json"].json()["paths"]
    assert not {"/", "/ui", *ASSET_PATHS} & set(paths), "the page is not part of the API"


def test_no_ui_leaves_the_page_unrouted() -> None:
    responses = get_all(Settings(ui=False), *PAGES, *ASSET_PATHS, "/docs")
    for path in (*PAGES, *ASSET_PATHS):
        assert responses[path].status_code == 404, path
        assert responses[path].json()["error"]["code"] == "not_found"
    assert responses["/docs"].status_code == 200


def parse_flags(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(argv))


def test_no_ui_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().ui is True
    assert parse_flags(["--no-ui"]).ui is False
    monkeypatch.setenv("YOLOXPAI_UI", "false")
    assert Settings().ui is False
    assert parse_flags(["--ui"]).ui is True  # the flag wins over the environment
