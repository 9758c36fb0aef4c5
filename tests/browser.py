"""The system Chromium driven by Playwright (no browser download), with every request off this machine refused.

Both browser tests (JupyterLab, the book) open pages through :func:`chromium`; what they tried to fetch from
anywhere but 127.0.0.1 or a file is kept in ``Browser.outside`` for the test to assert on.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import missing

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, installed by tools/install-test-tools.sh
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL = re.compile(r"^(?:(?:https?|wss?)://127\.0\.0\.1[:/]|file:|data:|blob:|about:)")


@dataclass
class Browser:
    context: Any  # playwright BrowserContext
    outside: list[str] = field(default_factory=list)  # URLs refused because they leave this machine

    def page(self) -> Any:
        return self.context.pages[0] if self.context.pages else self.context.new_page()


@contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1000) -> Iterator[Browser]:
    """A fresh Chromium profile in `profile`, headless; requests that would leave 127.0.0.1 are aborted."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (pip; part of the dev dependencies)")
        raise
    if not shutil.which(CHROMIUM):
        missing(f"{CHROMIUM} (apt-get install chromium; tools/install-test-tools.sh does it)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        browser = Browser(context)

        def guard(route: Any) -> None:
            if LOCAL.match(route.request.url):
                route.continue_()
            else:
                browser.outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        try:
            yield browser
        finally:
            context.close()


@dataclass
class PageReport:
    """What one page of a static site showed: its status, images (natural width × height), links and ids."""

    status: int
    images: dict[str, int]
    links: list[str]  # absolute URLs on the same origin
    ids: set[str]
    text: str


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on 127.0.0.1 (any free port), as a reader's web server would; yields its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # one line per request would drown the test log
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def visit(page: Any, url: str) -> PageReport:
    """Open `url`, wait until it and its images have loaded, and read what it shows."""
    response = page.goto(url, wait_until="load")
    # Images below the fold load too: scroll through the page once.
    page.evaluate("async () => { for (let y = 0; y < document.body.scrollHeight; y += 800) {"
                  " window.scrollTo(0, y); await new Promise(r => setTimeout(r, 20)); } }")
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
    found = page.evaluate("""() => ({
      images: Object.fromEntries([...document.images].map(i => [i.src, i.naturalWidth * i.naturalHeight])),
      links: [...document.querySelectorAll('a[href]')].map(a => a.href).filter(h => h.startsWith(location.origin)),
      ids: [...document.querySelectorAll('[id]')].map(e => e.id),
      text: document.body.innerText,
    })""")
    return PageReport(response.status if response else 0, found["images"], found["links"], set(found["ids"]),
                      found["text"])
