"""The embeddable widget in Debian's chromium, against a real daphne and a real worker.

Run as its own pytest run (`make test` does): Playwright's sync API must not share a process
with the async tests.
"""

import os

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"chromium is not installed at {CHROMIUM} (.ci/run installs Debian's package)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        yield context.new_page()
        browser.close()


def test_a_visitor_walks_the_flow_in_the_widget_and_finds_it_again_after_a_reload(techpro, daphne, page, tmp_path):
    page.goto(daphne.url + "/")
    page.click("#botsite-assistant >> button.open")
    page.wait_for_selector("text=Hi, I'm Bot! Nice to meet you.")
    page.click("#botsite-assistant >> .choices >> text=Other")
    page.wait_for_selector("text=I enabled chat editor")
    box = page.locator("#botsite-assistant >> .foot input")
    assert box.is_enabled()
    assert box.get_attribute("placeholder") == "Type your preferred language here..."
    box.fill("<b>Zig</b> & <img src=x onerror=alert(1)>")
    box.press("Enter")
    page.wait_for_selector("text=Any other?")
    # Visitor text is shown as text, never as HTML.
    bubble = page.locator("#botsite-assistant >> .user").last
    assert bubble.inner_text() == "<b>Zig</b> & <img src=x onerror=alert(1)>"
    assert page.locator("#botsite-assistant >> .user b").count() == 0
    assert page.locator("#botsite-assistant >> .log img").count() == 0
    assert not box.is_enabled()  # EndChatSession closed the editor
    page.click("#botsite-assistant >> .choices >> text=No")
    page.wait_for_selector("text=Great, thanks!")
    page.screenshot(path=str(tmp_path / "widget.png"))

    page.reload()
    page.click("#botsite-assistant >> button.open")
    page.wait_for_selector("text=Great, thanks!")
    log = page.locator("#botsite-assistant >> .log").inner_text()
    assert log.index("Hi, I'm Bot!") < log.index("Other") < log.index("Any other?") < log.index("Great, thanks!")
    assert page.locator("#botsite-assistant >> .choices button").count() == 0  # answered choices stay closed


def test_starting_over_clears_the_widget_and_runs_the_flow_again(techpro, daphne, page):
    page.goto(daphne.url + "/")
    page.click("#botsite-assistant >> button.open")
    page.click("#botsite-assistant >> .choices >> text=Go")
    page.wait_for_selector("text=Any other?")
    page.click("#botsite-assistant >> button.reset")
    page.wait_for_selector("#botsite-assistant >> .choices >> text=Rust")
    assert "Any other?" not in page.locator("#botsite-assistant >> .log").inner_text()
