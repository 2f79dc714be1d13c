"""The smoke book, executed on real CIFAR-10 and built with -W --all, checked as HTML and in headless Chromium.

The executed book is a session fixture: the chapters run once (about two minutes).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from book_checks import CHAPTERS, EXPECTED_FIGURES, ROOT, expected_colab_url, parse_page, read, study_figures

from erav1.book.layout import Book
from erav1.book.runner import run_book

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
IGNORED_THEME_LOG = "Got invalid theme mode: . Resetting to auto."
PAGES = ["book/intro", *(f"book/{p.stem}" for p in CHAPTERS)]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smoke_book(cifar_zip, cache_dir, tmp_path_factory):
    """The smoke profile on the shared zip, staged and built in a temporary folder."""
    stage = tmp_path_factory.mktemp("book") / "stage"
    run_dir = tmp_path_factory.mktemp("book-run") / "run"
    overrides = [f"data={cifar_zip}", f"data_dir={cache_dir}", f"run_dir={run_dir}"]
    started = time.perf_counter()
    result = run_book(Book.at(ROOT), "smoke", overrides, stage=stage)
    print(f"smoke book executed and built in {time.perf_counter() - started:.0f} s")
    return result


def executed(smoke_book, chapter: Path):
    return read(smoke_book.executed / "book" / chapter.name)


def page(smoke_book, name: str) -> Path:
    return smoke_book.html / f"{name}.html"


def test_the_committed_chapters_are_untouched_by_the_smoke_run(smoke_book):
    for chapter in CHAPTERS:
        assert read(chapter).metadata.get("erav1", {}).get("profile") in (None, "full")


@pytest.mark.parametrize("name", PAGES)
def test_every_page_exists_and_every_image_file_exists(smoke_book, name):
    path = page(smoke_book, name)
    assert path.exists(), f"{name}.html was not built"
    for src in parse_page(path).images:
        assert urlparse(src).scheme not in ("http", "https"), f"{name}: a remote image cannot load offline: {src}"
        assert (path.parent / src).resolve().is_file(), f"{name}: <img src={src!r}> points to no file"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_has_its_figures_and_its_colab_link(smoke_book, chapter):
    parsed = parse_page(page(smoke_book, f"book/{chapter.stem}"))
    figures = [src for src in parsed.images if "_images/" in src and "colab-badge" not in src]
    expected = EXPECTED_FIGURES[chapter.stem] + (study_figures() if chapter.stem == "03_training" else 0)
    assert len(figures) == expected, figures
    assert any(src.endswith("_images/colab-badge.svg") for src in parsed.images), "the vendored badge is shown"
    colab = {href for href in parsed.links if "colab.research.google.com" in href}
    assert colab == {expected_colab_url(chapter.stem)}, colab


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_outputs_have_no_errors_widgets_or_progress_redraws(smoke_book, chapter):
    nb = executed(smoke_book, chapter)
    assert nb.metadata["erav1"]["profile"] == "smoke"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{chapter.name}: {out.get('ename')}: {out.get('evalue')}"
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), f"{chapter.name}: widget"
            assert "\r" not in out.get("text", ""), f"{chapter.name}: progress redraws left in the output"
            if out.output_type == "stream":
                assert out.name == "stdout", f"{chapter.name} writes to stderr:\n{out.text}"
    html = parse_page(page(smoke_book, f"book/{chapter.stem}"))
    assert not html.classes & {"traceback", "tag_injected-parameters", "tag_colab-install"}
    assert not any("widget" in c for c in html.classes)


def test_training_chapter_shows_the_progress_log_and_a_real_run(smoke_book):
    text = page(smoke_book, "book/03_training").read_text()
    assert "epoch   1/1  train loss" in text
    assert "After the final epoch (1)" in text


def test_math_uses_the_vendored_mathjax(smoke_book):
    text = page(smoke_book, "book/06_gradcam").read_text()
    assert "cdn.jsdelivr.net" not in text and "mathjax/tex-chtml.js" in text
    assert (smoke_book.html / "mathjax" / "tex-chtml.js").is_file()
    assert (smoke_book.html / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


# --- in a real browser ----------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(smoke_book):
    """The built site over http on 127.0.0.1 (file:// makes the theme's fetch calls fail CORS)."""
    handler = functools.partial(QuietHandler, directory=str(smoke_book.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="erav1-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(script)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_every_image_without_javascript_errors(site, browser, name):
    browser.get_log("browser")  # drain what earlier pages left
    browser.get(f"{site}/{name}.html")
    wait_for(browser, "return document.readyState === 'complete'")
    browser.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    assert wait_for(browser, "return Array.from(document.images).every(i => i.complete)"), "images never finished"
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == [], f"{name}: images that did not load (the Colab badge is vendored, so it loads too)"
    if name == "book/06_gradcam":
        assert wait_for(browser, "return document.querySelectorAll('mjx-container').length > 0"), "no math rendered"
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    # The favicon is Chromium asking for /favicon.ico; the theme logs its light/dark mode reset on a browser
    # profile's first visit.
    errors = [m for m in severe if "/favicon.ico" not in m and IGNORED_THEME_LOG not in m]
    assert errors == [], f"{name}: JavaScript console errors"
