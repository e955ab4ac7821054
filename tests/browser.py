"""Headless Chromium for the tests of pages (tests/test_html_page.py), driven by Playwright.

The system's Chromium (/usr/bin/chromium, Debian's `chromium` package; ACTBENCH_CHROMIUM names
another), never a browser Playwright downloads. Where there is none, or Playwright is not
installed, the tests that ask for one skip, saying why; CI sets ACTBENCH_REQUIRE_BROWSER=1, so
that there they fail instead.

    with browser.chromium() as chrome:
      page = browser.open_page(chrome, path, fragment="#sort=-test_accuracy")
      page.requests, page.errors   # every URL it fetched, its console errors and exceptions
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib

import pytest

CHROMIUM = os.environ.get("ACTBENCH_CHROMIUM", "/usr/bin/chromium")
_REQUIRE = "ACTBENCH_REQUIRE_BROWSER"


def unavailable(reason: str):
  """Skips the test, or fails it where ACTBENCH_REQUIRE_BROWSER=1 (CI): there a missing browser
  would quietly pass the page's tests without running them."""
  if os.environ.get(_REQUIRE, "") not in ("", "0"):
    pytest.fail(f"no browser, and {_REQUIRE}=1: {reason}", pytrace=False)
  pytest.skip(f"no browser: {reason}")


@contextlib.contextmanager
def chromium():
  """A headless Chromium (a Playwright Browser) for the duration of the block."""
  try:
    from playwright.sync_api import Error, sync_playwright
  except ImportError as error:
    unavailable(f"Playwright is not installed ({error}); pip install playwright")
  if not os.access(CHROMIUM, os.X_OK):
    unavailable(f"{CHROMIUM} does not exist; apt-get install chromium")
  # Chromium refuses to start its sandbox as root (containers, CI); elsewhere it keeps it.
  args = ["--no-sandbox"] if os.geteuid() == 0 else []
  with sync_playwright() as playwright:
    try:
      browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=[*args, "--disable-dev-shm-usage"])
    except Error as error:
      unavailable(f"{CHROMIUM} did not start: {error}")
    try:
      yield browser
    finally:
      browser.close()


@dataclasses.dataclass
class Page:
  """A loaded page and what it did while loading and since."""
  page: object  # playwright.sync_api.Page
  url: str
  requests: list[str]
  errors: list[str]


def file_url(path) -> str:
  return pathlib.Path(path).resolve().as_uri()


def open_page(browser, path, fragment: str = "", *, ready: str = "body[data-ready]",
              viewport=(1280, 900)) -> Page:
  """Opens a file in a fresh page and waits until `ready` matches (report.html marks its body
  once its script has built the leaderboard). Records every request and every console error
  (a blocked fetch is one: Chromium reports Content-Security-Policy violations there) and
  uncaught exception. Waits by selector, not wait_for_function: that evaluates a string in the
  page, which the page's Content-Security-Policy forbids."""
  page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
  loaded = Page(page, file_url(path), [], [])
  page.on("request", lambda request: loaded.requests.append(request.url))
  page.on("console", lambda message: message.type == "error" and loaded.errors.append(
      message.text))
  page.on("pageerror", lambda error: loaded.errors.append(str(error)))
  page.goto(loaded.url + fragment, wait_until="load")
  page.wait_for_selector(ready, state="attached", timeout=20_000)
  return loaded
