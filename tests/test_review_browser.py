"""The review page in a real browser (headless Chromium through selenium): sign in, rate a blinded
case's panels with the keyboard only, move between cases, reload and find the ratings, export
them with the true methods, and see a failed save reported rather than swallowed.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the test is skipped, or fails
when ``XMED_REQUIRE_BROWSER=1`` (as in CI)."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path

import pytest

from test_review_durability import running_server
from xmed.review.session import intervene, load_session, panel_labels, reader_order
from xmed.review.store import STORE_FILE, RatingStore
from xmed.review.synthetic import synthetic_session

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL = "sudo apt-get install -y chromium chromium-driver && pip install selenium"


def _browser_or_skip():
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        message = f"the browser test needs {', '.join(missing)}: {INSTALL}"
        if os.environ.get("XMED_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def press(driver, *keys, on=None):
    """Key presses as a reader makes them: into ``on`` (focused first) or the page itself."""
    from selenium.webdriver.common.action_chains import ActionChains

    if on is not None:
        driver.execute_script("arguments[0].focus()", on)
    else:
        driver.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(driver).send_keys(*keys).perform()


def rate(driver, group: str, *keys) -> None:
    """Focus the rating group ``group`` (its chosen score, else its first) and press ``keys``;
    wait until the server acknowledged the new choice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    fieldset = driver.find_element(By.XPATH, f"//input[@name='{group}']/ancestor::fieldset")
    status = fieldset.find_element(By.CSS_SELECTOR, ".status")
    driver.execute_script("arguments[0].textContent = ''", status)  # so the wait sees this save's answer
    radios = fieldset.find_elements(By.CSS_SELECTOR, "input[type=radio]")
    press(driver, *keys, on=next((radio for radio in radios if radio.is_selected()), radios[0]))
    WebDriverWait(driver, 10).until(lambda _: status.text == "saved")


def choices(driver) -> dict[str, str]:
    return driver.execute_script(
        "const out = {}; document.querySelectorAll('input[type=radio]:checked').forEach("
        "(input) => { out[input.name] = input.value; }); return out;")


def test_a_reader_rates_a_blinded_case_with_the_keyboard(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder = synthetic_session(tmp_path / "session", n_cases=2, mode="blinded", size=64)
    session = load_session(folder)
    token = RatingStore(folder / STORE_FILE).add_reader("ana")
    first, second = reader_order([case["id"] for case in session["cases"]], session["seed"], "ana")
    labels = panel_labels(list(session["cases"][0]["panels"]), session["seed"], "ana", first)
    wait = WebDriverWait(browser, 10)

    with running_server(folder) as (base, process):
        browser.get(f"{base}/login?token={token}")
        assert browser.current_url == f"{base}/case/1"
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith(first)
        page = browser.page_source.lower()
        assert "explanation a" in page and not any(word in page for word in ("gradcam", "grad-cam", "adversarial"))

        rate(browser, "location-A", "4")                    # a digit picks the score of the focused group
        rate(browser, "rationale-A", "2")
        rate(browser, "rationale-A", Keys.ARROW_RIGHT)      # arrows move within the group: 2 -> 3
        rate(browser, "location-B", "5")
        rate(browser, "rationale-B", "1")
        rate(browser, "agree", "1")
        note = browser.find_element(By.ID, "note")
        press(browser, "rim notch at 6 o'clock", Keys.ESCAPE, on=note)  # Esc leaves the note, which saves it
        wait.until(lambda _: browser.find_element(By.ID, "note-status").text == "saved")

        stacks = browser.find_elements(By.CSS_SELECTOR, ".flicker")
        assert stacks and not any("show-original" in s.get_attribute("class") for s in stacks)
        press(browser, "f")
        assert all("show-original" in s.get_attribute("class") for s in stacks)
        opacity = browser.find_element(By.CSS_SELECTOR, "img.heatmap").value_of_css_property("opacity")
        assert opacity == "0.6"

        from selenium.webdriver.support.ui import Select

        Select(browser.find_element(By.CSS_SELECTOR, "select[data-concept=LC]")).select_by_value("1")
        expected = intervene(session, next(c for c in session["cases"] if c["id"] == first), {"LC": 1})
        result = browser.find_element(By.ID, "intervened")
        wait.until(lambda _: result.text == f"{expected['probability']:.2f}, {expected['decision']}")

        press(browser, Keys.ARROW_RIGHT)
        wait.until(lambda _: browser.current_url == f"{base}/case/2")
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith(second)
        press(browser, "p")
        wait.until(lambda _: browser.current_url == f"{base}/case/1")

        browser.refresh()
        stored = {"location-A": "4", "rationale-A": "3", "location-B": "5", "rationale-B": "1", "agree": "1"}
        assert choices(browser) == stored
        assert browser.find_element(By.ID, "note").get_attribute("value") == "rim notch at 6 o'clock"
        assert browser.execute_script("return window.location.pathname") == "/case/1"

        exported = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/export/ratings.csv').then((r) => r.text()).then(done);")
        rows = {row["method"]: row for row in csv.DictReader(io.StringIO(exported))}
        assert {method: (rows[method]["panel"], rows[method]["location"], rows[method]["rationale"])
                for method in rows} == {labels["A"]: ("A", "4", "3"), labels["B"]: ("B", "5", "1")}
        assert {row["agree"] for row in rows.values()} == {"1"}

        console = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert console == []  # among others, no Content-Security-Policy violation

        process.kill()
        process.wait()
        fieldset = browser.find_element(By.XPATH, "//input[@name='location-B']/ancestor::fieldset")
        press(browser, "2", on=fieldset.find_element(By.CSS_SELECTOR, "input[type=radio]"))
        status = fieldset.find_element(By.CSS_SELECTOR, ".status")
        wait.until(lambda _: status.get_attribute("data-state") == "failed")
        assert status.text.startswith("not saved")
        assert choices(browser)["location-B"] == "5"  # the page shows what is stored, not the refused choice


@pytest.mark.parametrize("required, outcome", [("", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_a_missing_browser_skips_with_the_install_command_or_fails_when_required(monkeypatch, tmp_path,
                                                                                 required, outcome):
    monkeypatch.setitem(globals(), "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("XMED_REQUIRE_BROWSER", required)
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as caught:
        _browser_or_skip()
    assert type(caught.value) is outcome
    assert "no-chromium" in str(caught.value) and "apt-get install -y chromium chromium-driver" in str(caught.value)
