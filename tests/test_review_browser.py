"""The review page in a real browser (headless Chromium through selenium, one browser for the
module): sign in, rate a blinded case's panels with the keyboard only, move between cases, reload
and find the ratings, and see a failed save reported rather than swallowed; every key path (digits,
arrows, Tab and Shift-Tab, Enter and Space, the next unrated question and case) stores the score the
page shows; every case fits two screens of 1280 × 800, with both edits around the original and the
questions in view; a blinded reader receives nothing that names a method or gives a raw scale until the
coordinator locks the study, and after the lock a rating is refused and the download names the methods.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the test is skipped, or fails
when ``XMED_REQUIRE_BROWSER=1`` (as in CI)."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest

from helpers.review_page import METHOD_WORDS, RAW_SCALE_TEXTS, running_server, with_distinct_scales
from xmed.cli.review import main
from xmed.review.session import intervene, load_session, panel_labels, reader_order
from xmed.review.store import LETTER_COLUMNS, STORE_FILE, RatingStore
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


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--disable-background-networking", "--window-size=1400,1000"):
        options.add_argument(argument)
    # the performance log holds the network events: every response the page receives
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
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
        shown = {"location-A": "4", "rationale-A": "3", "location-B": "5", "rationale-B": "1", "agree": "1"}
        assert choices(browser) == shown
        assert browser.find_element(By.ID, "note").get_attribute("value") == "rim notch at 6 o'clock"
        assert browser.execute_script("return window.location.pathname") == "/case/1"

        rows = download(browser, "csv")
        assert [(row["panel"], row["location"], row["rationale"], row["agree"]) for row in rows] == [
            ("A", "4", "3", "1"), ("B", "5", "1", "1")]  # by letter: the study is not locked
        assert list(rows[0]) == list(LETTER_COLUMNS)
        assert stored(folder, "ana", 1) == shown

        assert severe(browser) == []  # among others, no Content-Security-Policy violation

        process.kill()
        process.wait()
        fieldset = browser.find_element(By.XPATH, "//input[@name='location-B']/ancestor::fieldset")
        press(browser, "2", on=fieldset.find_element(By.CSS_SELECTOR, "input[type=radio]"))
        status = fieldset.find_element(By.CSS_SELECTOR, ".status")
        wait.until(lambda _: status.get_attribute("data-state") == "failed")
        assert status.text.startswith("not saved")
        assert choices(browser)["location-B"] == "5"  # the page shows what is stored, not the refused choice


def severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def download(driver, kind: str) -> list[dict]:
    """The signed-in reader's ratings download (``csv`` or ``json``), as the page fetches it."""
    text = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/export/ratings.{kind}').then((r) => r.text()).then(done);")
    return list(csv.DictReader(io.StringIO(text))) if kind == "csv" else json.loads(text)


def stored_case(folder: Path, reader: str, n: int) -> dict:
    """The ``n``-th case ``reader`` sees."""
    session = load_session(folder)
    case_id = reader_order([c["id"] for c in session["cases"]], session["seed"], reader)[n - 1]
    return next(case for case in session["cases"] if case["id"] == case_id)


def stored(folder: Path, reader: str, n: int) -> dict[str, str]:
    """What the store holds for ``reader``'s ``n``-th case, named as the page names its choices."""
    case = stored_case(folder, reader, n)
    held = RatingStore(folder / STORE_FILE, read_only=True).case_ratings(reader, case["id"])
    found = {"agree": held["agree"]}
    for letter, method in panel_labels(list(case["panels"]), load_session(folder)["seed"], reader, case["id"]).items():
        for scale, value in held["panels"].get(method, {}).items():
            found[f"{scale}-{letter}"] = value
    return {name: str(value) for name, value in found.items() if value is not None}


def settled(driver) -> None:
    """Wait until every save the page started has its answer."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda _: driver.execute_script(
        "return document.querySelectorAll('.status[data-state=saving]').length === 0"))


def focused(driver) -> tuple[str, str]:
    """The name and value of the control that has the focus."""
    return tuple(driver.execute_script("const e = document.activeElement; return [e.name || e.id, e.value || ''];"))


def keys(driver, *pressed) -> None:
    """Key presses into whatever has the focus, then wait for the saves they started."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*pressed).perform()
    settled(driver)


def shift_tab(driver) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()


def signed_in(driver, base: str, folder: Path, reader: str) -> None:
    """Sign a new reader in, with the browser's logs emptied of what earlier tests left there."""
    driver.get_log("browser"), driver.get_log("performance")
    driver.get(f"{base}/login?token={RatingStore(folder / STORE_FILE).add_reader(reader)}")


#: what the edits of :func:`served`'s session say they changed, and what the page writes for them
RECORDED = [{"code": "vcdr", "from": 0.7367, "to": 0.4759}, {"code": "ANRI", "from": 0.9, "to": 0.31}]
RECORDED_TEXT = "vCDR 0.74 → 0.48 · inferior rim thinning 0.90 → 0.31"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A blinded three-case session served for the module's tests that neither lock it nor stop its
    server: its folder and base URL. Every edit toward normal records what it changed; every edit
    toward glaucoma gives the model's findings and vCDR after it, from which the page works it out."""
    folder = synthetic_session(tmp_path_factory.mktemp("served") / "session", n_cases=3, mode="blinded", size=64)
    session = json.loads((folder / "session.json").read_text())
    for case in session["cases"]:
        edits = case["panels"]["adversarial"]["edits"]
        edits["toward_normal"]["changes"] = RECORDED
        edits["toward_glaucoma"].update(vcdr_to=0.9, findings_to=[
            (0.0 if f["probability"] >= 0.5 else 1.0) if f["code"] == "LC" else f["probability"]
            for f in case["findings"]])
    (folder / "session.json").write_text(json.dumps(session))
    with running_server(folder) as (base, _):
        yield folder, base


def test_every_key_path_stores_the_score_the_page_shows(served, browser):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder, base = served
    wait = WebDriverWait(browser, 10)

    def check(n: int, focus: tuple[str, str], shown: dict[str, str]) -> None:
        assert (focused(browser), choices(browser)) == (focus, shown)
        assert stored(folder, "ben", n) == shown

    signed_in(browser, base, folder, "ben")
    assert browser.current_url == f"{base}/case/1"
    press(browser, "u")                                    # to the first unrated question
    check(1, ("location-A", "1"), {})
    keys(browser, "3")                                     # a digit chooses and goes on
    check(1, ("rationale-A", "1"), {"location-A": "3"})
    keys(browser, "4")
    check(1, ("location-B", "1"), {"location-A": "3", "rationale-A": "4"})
    keys(browser, "5", "2")
    done = {"location-A": "3", "rationale-A": "4", "location-B": "5", "rationale-B": "2"}
    check(1, ("agree", "1"), done)
    keys(browser, "0")                                     # the last question: the focus stays on the choice
    check(1, ("agree", "0"), {**done, "agree": "0"})
    keys(browser, Keys.ARROW_LEFT)                         # and an arrow moves from it
    check(1, ("agree", "1"), {**done, "agree": "1"})

    press(browser, "U")                                    # the next unrated case, at its first question
    wait.until(lambda _: browser.current_url == f"{base}/case/2")
    wait.until(lambda _: focused(browser) == ("location-A", "1"))
    browser.execute_script("document.getElementById('note').focus()")
    shift_tab(browser)
    check(2, ("agree", "0"), {})                           # Shift-Tab enters an unrated group at its end
    keys(browser, Keys.SPACE)                              # Space chooses and goes on, round to the top
    check(2, ("location-A", "1"), {"agree": "0"})
    keys(browser, Keys.ENTER)
    check(2, ("rationale-A", "1"), {"agree": "0", "location-A": "1"})
    keys(browser, "4", "5")
    done = {"agree": "0", "location-A": "1", "rationale-A": "4", "location-B": "5"}
    check(2, ("rationale-B", "1"), done)
    shift_tab(browser)                                     # back to the rated group's choice
    check(2, ("location-B", "5"), done)
    keys(browser, Keys.TAB)                                # one Tab from one question to the next
    check(2, ("rationale-B", "1"), done)
    keys(browser, "3")
    check(2, ("rationale-B", "3"), {**done, "rationale-B": "3"})
    keys(browser, Keys.ARROW_RIGHT)                        # 3 -> 4, not 1 -> 2
    check(2, ("rationale-B", "4"), {**done, "rationale-B": "4"})
    keys(browser, "7")                                     # not a choice here: nothing changes
    check(2, ("rationale-B", "4"), {**done, "rationale-B": "4"})

    browser.refresh()
    assert choices(browser) == stored(folder, "ben", 2)
    case_id = stored_case(folder, "ben", 2)["id"]
    rows = {row["panel"]: row for row in download(browser, "csv") if row["case"] == case_id}
    assert {f"{scale}-{panel}": row[scale] for panel, row in rows.items() for scale in ("location", "rationale")
            } == {name: value for name, value in choices(browser).items() if name != "agree"}
    press(browser, "U")
    wait.until(lambda _: browser.current_url == f"{base}/case/3" and focused(browser) == ("location-A", "1"))
    keys(browser, "u")                                     # the next unrated question after this one
    check(3, ("rationale-A", "1"), {})
    assert severe(browser) == []


def test_every_case_fits_two_screens_with_both_edits_around_the_original(served, browser):
    from selenium.webdriver.common.by import By

    folder, base = served
    session = load_session(folder)
    signed_in(browser, base, folder, "dana")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    try:
        for n in range(1, len(session["cases"]) + 1):
            browser.get(f"{base}/case/{n}")
            case = stored_case(folder, "dana", n)
            assert browser.execute_script("return document.documentElement.scrollHeight") <= 2 * 800
            # the questions are in view before any scrolling, and come after the model's reasons
            top, bottom = browser.execute_script(
                "const r = document.querySelector('.rating-bar').getBoundingClientRect(); return [r.top, r.bottom];")
            assert 0 < top < bottom <= 800
            assert browser.execute_script(
                "return Boolean(document.querySelector('.findings .sentence').compareDocumentPosition("
                "document.querySelector('fieldset.rating')) & Node.DOCUMENT_POSITION_FOLLOWING)")
            assert "logit" in browser.find_element(By.CSS_SELECTOR, ".findings thead").text
            # less glaucomatous | original | more glaucomatous, side by side, each edit saying what it changed
            columns = sorted(browser.find_elements(By.CSS_SELECTOR, ".triptych h3"), key=lambda h3: h3.location["x"])
            assert [h3.text.split(" (")[0] for h3 in columns] == ["Less glaucomatous", "Original", "More glaucomatous"]
            assert len({h3.location["y"] for h3 in columns}) == 1
            assert browser.execute_script(
                "return Array.from(document.querySelectorAll('.triptych img:not(.change):not(.bar)')).map("
                "(img) => img.complete && img.naturalWidth > 0);") == [True] * 5  # each edit over the original
            changes = {column.get_attribute("data-edit"): column.find_element(By.CSS_SELECTOR, ".changes").text
                       for column in browser.find_elements(By.CSS_SELECTOR, ".edit-column[data-edit]")}
            large_cup = next(f["probability"] for f in case["findings"] if f["code"] == "LC")
            assert changes["toward_normal"].startswith(RECORDED_TEXT)
            assert changes["toward_glaucoma"].startswith(
                f"vCDR {case['vcdr']:.2f} → 0.90 · large cup {large_cup:.2f} → {0.0 if large_cup >= 0.5 else 1.0:.2f}")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert severe(browser) == []


def responses(driver) -> list[tuple[str, str]]:
    """``(url, body)`` of every response the browser received since the last call (images decoded
    as Latin-1, so their bytes are searched too)."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.responseReceived":
            continue
        try:
            body = driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": message["params"]["requestId"]})
        except Exception:  # a response without a body: a redirect, a 204
            continue
        text = base64.b64decode(body["body"]).decode("latin-1") if body["base64Encoded"] else body["body"]
        found.append((message["params"]["response"]["url"], text))
    return found


def test_a_blinded_reader_receives_nothing_that_names_a_method_until_the_lock(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = with_distinct_scales(synthetic_session(tmp_path / "session", n_cases=2, mode="blinded", size=64))
    session = load_session(folder)
    forbidden = [*METHOD_WORDS, *(m["title"].lower() for m in session["methods"]), *RAW_SCALE_TEXTS]
    labels = panel_labels(["adversarial", "gradcam"], session["seed"], "carla", stored_case(folder, "carla", 1)["id"])
    heatmap = next(letter for letter, method in labels.items() if method == "gradcam")
    received = []

    with running_server(folder) as (base, _):
        signed_in(browser, base, folder, "carla")
        press(browser, "u")
        keys(browser, "4", "2", "5")
        browser.execute_script("document.querySelector('select[data-concept=LC]').value = '1';"
                               "document.querySelector('select[data-concept=LC]').dispatchEvent(new Event('change'));")
        WebDriverWait(browser, 10).until(lambda _: browser.find_element(By.ID, "intervened").text != "…")
        pages = [browser.page_source]
        received += responses(browser)
        for url in ("/case/2", "/summary", "/case/9", "/case/1/image/C/heatmap"):
            browser.get(base + url)
            pages.append(browser.page_source)
            received += responses(browser)
        browser.get(f"{base}/case/1")
        tables = [download(browser, "csv"), download(browser, "json")]
        received += responses(browser)
        assert {url.split("?")[0].removeprefix(base) for url, _ in received} >= {
            "/case/1", "/case/2", "/summary", "/case/1/photo", f"/case/1/image/{heatmap}/heatmap",
            "/api/case/1/panel/A", "/api/intervene", "/export/ratings.csv", "/export/ratings.json", "/static/review.js"}
        for url, body in received + [("the page as shown", page) for page in pages]:
            assert [word for word in forbidden if word in body.lower()] == [], url
        attributes = browser.execute_script(
            "return Array.from(document.querySelectorAll('[alt], [title], [aria-label]')).map("
            "(e) => [e.alt, e.title, e.getAttribute('aria-label')].join(' ')).concat([document.title]);")
        assert [text for text in attributes if any(word in text.lower() for word in forbidden)] == []
        assert [sorted(row) for row in tables[0] + tables[1]] == [sorted(LETTER_COLUMNS)] * 4

        assert main(["lock", str(folder)]) == 0               # the coordinator, on the machine
        fieldset = browser.find_element(By.XPATH, "//input[@name='location-A']/ancestor::fieldset")
        press(browser, "1", on=fieldset.find_element(By.CSS_SELECTOR, "input[value='4']"))
        status = fieldset.find_element(By.CSS_SELECTOR, ".status")
        WebDriverWait(browser, 10).until(lambda _: status.get_attribute("data-state") == "failed")
        assert "the study was locked by its coordinator" in status.text
        assert choices(browser)["location-A"] == "4" and stored(folder, "carla", 1)["location-A"] == "4"
        browser.refresh()
        titles = {method["name"]: method["title"] for method in session["methods"]}
        assert [h2.text for h2 in browser.find_elements(By.CSS_SELECTOR, ".panel h2")] == [
            f"Explanation {letter}: {titles[labels[letter]]}" for letter in "AB"]
        assert all(not radio.is_enabled() for radio in browser.find_elements(By.CSS_SELECTOR, "input[type=radio]"))
        assert {(row["panel"], row["method"]) for row in download(browser, "csv")} == set(labels.items())
        expected = ("/case/9 - ", "/image/C/heatmap - ", "/api/case/1/panel/A - ")  # the 404s asked for, the 409
        assert [message for message in severe(browser) if not any(url in message for url in expected)] == []


@pytest.mark.parametrize("required, outcome", [("", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_a_missing_browser_skips_with_the_install_command_or_fails_when_required(monkeypatch, tmp_path,
                                                                                 required, outcome):
    monkeypatch.setitem(globals(), "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("XMED_REQUIRE_BROWSER", required)
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as caught:
        _browser_or_skip()
    assert type(caught.value) is outcome
    assert "no-chromium" in str(caught.value) and "apt-get install -y chromium chromium-driver" in str(caught.value)
