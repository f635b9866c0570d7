"""Playwright helpers: Debian's headless Chromium (never a downloaded browser), signed in."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SYNCBUS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_available() -> bool:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


needs_chromium = pytest.mark.skipif(
    not chromium_available(), reason=f"needs playwright and Chromium at {CHROMIUM}"
)


@contextmanager
def browser() -> Iterator[object]:
    """A headless Chromium browser (``playwright.sync_api.Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def sign_in(page: object, base_url: str, token: str, name: str = "Olivia Operator") -> None:
    """Sign in through the form and land on the dashboard."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(base_url + "/admin/")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base_url + "/admin/")


def take_screenshots(out_dir: str) -> None:
    """docs/images/dashboard.png and task-detail.png, from the real UI on the sample CRM demo
    (a temporary SQLite database; the demo leaves a failed task and an event behind)."""
    import io
    import tempfile
    from pathlib import Path

    from playwright.sync_api import Page
    from rich.console import Console

    from syncbus import IntegrationBus, create_app
    from syncbus.examples.crm.demo import run_demo

    from .http_server import running

    token = "demo-token"
    with tempfile.TemporaryDirectory() as tmp:
        bus = IntegrationBus(f"sqlite:///{tmp}/demo.db")
        run_demo(bus, Console(file=io.StringIO()))
        [task] = bus.list_tasks()
        app = create_app(bus, api_token=token, run_dispatcher=False)
        with running(app) as url, browser() as b:
            page = b.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
            assert isinstance(page, Page)
            sign_in(page, url, token)
            page.screenshot(path=str(Path(out_dir) / "dashboard.png"), full_page=True)
            page.goto(f"{url}/admin/tasks/{task.task_id}")
            page.screenshot(path=str(Path(out_dir) / "task-detail.png"), full_page=True)
        bus.close()


if __name__ == "__main__":  # python -m tests.chromium docs/images
    import sys

    take_screenshots(sys.argv[1] if len(sys.argv) > 1 else "docs/images")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots: ``$SYNCBUS_SCREENSHOTS`` (``docs/images``
    for the docs), else the test's temporary directory."""
    out = Path(os.environ.get("SYNCBUS_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def page() -> Iterator[Any]:
    """A page of a fresh laptop-sized browser context."""
    with browser() as b:
        context = b.new_context(viewport=LAPTOP)  # type: ignore[attr-defined]
        yield context.new_page()
        context.close()


def assert_png(path: Path) -> None:
    """The screenshot is a real PNG, not an empty or broken file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (path, len(data))
