"""The review page (/review) in a real browser: Debian's headless Chromium driven by Selenium, against a
`docflow serve` process on loopback with an API key, over documents processed by the CLI (all of them
queued: DOCFLOW_REVIEW_THRESHOLD=1.0). A person signs in, decides by keyboard only, undoes; what the page
shows is checked against the records over HTTP. One document's text and file name are an XSS payload,
which must show as text; one has two pages, to turn. Two tests hold the server and the page to what a busy
queue does: previews asked for at once (the page prefetches the next document's), and an answer from the
queue that arrives after later decisions.

The documents are processed and the server started once for the module; each test gets a fresh browser (a
fresh sessionStorage), and every decision a test made is undone over HTTP after it, so each starts from the
full queue. A screenshot of the page is kept (tmp_path_factory, and $DOCFLOW_ARTIFACTS_DIR where set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from bench.review_queue import CHROMEDRIVER, CHROMIUM, DOCFLOW, STATE_JS, Served, browser, docflow_env, serve
from docflow.samples import EMAIL, LETTER, MEMO, REPORT, text_pdf

pytestmark = pytest.mark.e2e

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        f"the review page needs {CHROMIUM} and {CHROMEDRIVER} "
        "(apt: chromium chromium-driver; `make test` installs them)",
        allow_module_level=True,
    )

KEY = "e2e-review-page-key"
REVIEWER = "Ada Lovelace"
OUT_OF_SCOPE = "out_of_scope"
# No quote marks inside the payloads: a PDF's standard encoding would turn ' and ` into typographic quotes.
XSS_IMG = '<img src=x onerror="document.title=/pwned/.source">'
XSS_SCRIPT = "<script>document.title=/pwned/.source</script>"
# The file name is a payload too: the page shows it as the document's name and in its status line.
XSS_NAME = "<img src=x onerror=document.title='pwned'>.pdf"
TWO_PAGES = "report-two-pages.pdf"
PAGE_TWO = "2. RESULTS\nThe second page of the annual research report.\nTables of the measured values follow."
DOCUMENTS: dict[str, bytes] = {
    "letter.pdf": text_pdf([LETTER]),
    "memo.pdf": text_pdf([MEMO]),
    "email.pdf": text_pdf([EMAIL]),
    TWO_PAGES: text_pdf([REPORT, PAGE_TWO]),
    XSS_NAME: text_pdf(
        [
            "\n".join(
                [
                    "Quarterly notes for the review meeting",
                    XSS_IMG,
                    "budget figures and the delivery schedule",
                    XSS_SCRIPT,
                    "please confirm the dates with the office",
                    f"{XSS_IMG} {XSS_SCRIPT}",
                    "regards, the planning office",
                ]
            )
        ]
    ),
}
WAIT_S = 15


@dataclass(frozen=True)
class Review:
    url: str
    home: Path
    ids: dict[str, str]  # file name -> document_id
    suggested: dict[str, str]  # file name -> the model's class when it was processed
    classes: list[str]
    server: Served

    def assert_alive(self) -> None:
        assert self.server.died() is None, self.server.died()

    def client(self, key: str | None = KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-api-key": key} if key else {}, timeout=30)


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    """Five NEEDS_REVIEW documents in a fresh home, and `docflow serve --workers 0` on them with a key."""
    root = tmp_path_factory.mktemp("review-page")
    home, inbox = root / "home", root / "inbox"
    inbox.mkdir()
    for name, data in DOCUMENTS.items():
        (inbox / name).write_bytes(data)
    env = docflow_env(home, KEY, DOCFLOW_REVIEW_THRESHOLD="1.0")
    processed = subprocess.run(
        [*DOCFLOW, "process", str(inbox), "--json"], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert processed.returncode == 0, processed.stderr
    rows = {Path(r["source"]).name: r for r in map(json.loads, processed.stdout.splitlines())}
    assert set(rows) == set(DOCUMENTS)
    assert {r["status"] for r in rows.values()} == {"NEEDS_REVIEW"}, rows

    with serve(home, KEY, DOCFLOW_REVIEW_THRESHOLD="1.0") as server:
        classes = httpx.get(f"{server.url}/model", headers={"x-api-key": KEY}, timeout=10).json()["classes"]
        yield Review(
            url=server.url,
            home=home,
            ids={name: r["document_id"] for name, r in rows.items()},
            suggested={name: r["predicted_class"] for name, r in rows.items()},
            classes=classes,
            server=server,
        )


@pytest.fixture(autouse=True)
def full_queue(review: Review) -> Iterator[None]:
    """Each test starts from all five documents waiting; what it decided is undone (over HTTP) after it."""
    review.assert_alive()
    yield
    review.assert_alive()
    with review.client() as client:
        for document_id in review.ids.values():
            for _ in range(10):
                if client.delete(f"/documents/{document_id}/decision").status_code != 200:
                    break
        assert client.get("/review/queue").json()["total"] == len(DOCUMENTS)


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    with browser() as chromium:
        yield chromium


# -- helpers ---------------------------------------------------------------------------------------------------


def state(driver: WebDriver) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_script(STATE_JS)
    return result


def until(driver: WebDriver, check: Any, what: str) -> dict[str, Any]:
    """Wait until check(state) holds; return that state. The message says what was expected and what was seen."""
    seen: dict[str, Any] = {}

    def holds(d: WebDriver) -> bool:
        seen.update(state(d))
        return bool(check(seen))

    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(holds)
    except TimeoutException:
        raise AssertionError(f"waited {WAIT_S} s for {what}; the page showed {seen}") from None
    return dict(seen)


def waiting(page: dict[str, Any]) -> int | None:
    match = re.fullmatch(r"([\d,]+) documents? waiting", page["count"])
    return int(match.group(1).replace(",", "")) if match else None


def showing(page: dict[str, Any]) -> bool:
    """A document is on screen: its name, and its page image loaded from a blob: URL."""
    return not page["review_hidden"] and bool(page["name"]) and page["src"].startswith("blob:") and page["loaded"]


def sign_in(driver: WebDriver, review: Review, key: str = KEY, name: str = REVIEWER) -> None:
    driver.get(f"{review.url}/review")
    until(driver, lambda p: not p["signin_hidden"], "the sign-in form")
    driver.find_element(By.ID, "api-key").send_keys(key)
    reviewer = driver.find_element(By.ID, "reviewer")
    reviewer.clear()
    reviewer.send_keys(name)
    driver.find_element(By.ID, "signin-submit").click()


def press(driver: WebDriver, key: str) -> None:
    """A key pressed with the focus on the page itself (no field or button), as a reviewer does."""
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def decide_by_key(driver: WebDriver, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Press a deciding key on the shown document; return the page before and once the next one shows."""
    before = until(driver, showing, "a document to decide")
    press(driver, key)
    after = until(
        driver,
        lambda p: p["name"] != before["name"] and waiting(p) == (waiting(before) or 0) - 1,
        f"the next document after pressing {key!r} on {before['name']!r}",
    )
    return before, after


def advance_to(driver: WebDriver, name: str) -> dict[str, Any]:
    """Decide (none of these) every document shown before ``name``; the fixture undoes them afterwards."""
    for _ in range(len(DOCUMENTS)):
        page = until(driver, showing, "a document")
        if page["name"] == name:
            return page
        decide_by_key(driver, "x")
    raise AssertionError(f"{name!r} never showed")


def key_of(driver: WebDriver, label: str) -> str:
    button = driver.find_element(By.CSS_SELECTOR, f'#classes button[data-label="{label}"]')
    return str(button.find_element(By.TAG_NAME, "kbd").text).lower()


def record(review: Review, name: str) -> tuple[dict[str, Any], list[dict[str, Any]], set[str]]:
    """The document's record, its decisions (oldest first), and the ids waiting in NEEDS_REVIEW."""
    document_id = review.ids[name]
    with review.client() as client:
        document = client.get(f"/documents/{document_id}")
        history = client.get(f"/documents/{document_id}/predictions")
        listed = client.get("/documents", params={"status": "NEEDS_REVIEW", "limit": 200})
    assert document.status_code == history.status_code == listed.status_code == 200
    queued = {item["document_id"] for item in listed.json()["items"]}
    return document.json(), history.json()["decisions"], queued


def assert_decided(review: Review, name: str, label: str, suggested: str) -> None:
    document, decisions, queued = record(review, name)
    assert document["status"] == "REVIEWED" and document["label"] == label, document
    assert review.ids[name] not in queued
    live = [d for d in decisions if d["undone_at"] is None]
    assert len(live) == 1, decisions
    assert live[0]["label"] == label and live[0]["reviewer"] == REVIEWER, live[0]
    assert live[0]["predicted_class"] == suggested == review.suggested[name], live[0]
    assert live[0]["previous_status"] == "NEEDS_REVIEW" and live[0]["status"] == "REVIEWED"


# -- tests ------------------------------------------------------------------------------------------------------


def test_without_the_key_nothing_is_shown(review: Review, driver: WebDriver) -> None:
    # Over plain HTTP the queue needs the key
    assert httpx.get(f"{review.url}/review/queue", timeout=10).status_code == 401
    assert httpx.get(f"{review.url}/review/queue", headers={"x-api-key": "wrong"}, timeout=10).status_code == 403
    # No key, then a wrong key: the sign-in form comes back with an error, no document is shown
    for key in ("", "not-the-key"):
        sign_in(driver, review, key=key)
        page = until(driver, lambda p: p["error"] and not p["signin_hidden"], f"an error for the key {key!r}")
        assert page["review_hidden"] and page["name"] == "" and page["src"] == "", page
        assert driver.find_element(By.ID, "api-key").is_displayed()
    # The right key but no name: the form is not sent (the name is a required field)
    driver.find_element(By.ID, "api-key").send_keys(KEY)
    driver.find_element(By.ID, "reviewer").clear()
    driver.find_element(By.ID, "signin-submit").click()
    time.sleep(0.5)
    assert driver.execute_script("return document.getElementById('reviewer').validity.valueMissing")
    page = state(driver)
    assert page["review_hidden"] and not page["signin_hidden"] and page["name"] == "", page


def test_signing_in_shows_the_first_document(review: Review, driver: WebDriver) -> None:
    sign_in(driver, review)
    page = until(driver, showing, "the first document")
    assert page["signin_hidden"] and page["name"] in review.ids
    assert waiting(page) == len(DOCUMENTS), page["count"]
    assert page["suggested"] == review.suggested[page["name"]]
    assert driver.find_element(By.ID, "who").text == f"Reviewing as {REVIEWER}"
    # every class has a button with its key; none of them is X or Z
    buttons = driver.find_elements(By.CSS_SELECTOR, "#classes button[data-label]")
    assert [b.get_attribute("data-label") for b in buttons] == review.classes
    keys = [key_of(driver, c) for c in review.classes]
    assert keys == list("1234567890qwertyuiopasdfghjklcvbnm"[: len(keys)])  # 1..9, 0, then letters; never X or Z
    # the page broke no rule of its own Content-Security-Policy, nor threw
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    # the key stays with the tab: a reload shows the queue without signing in again
    driver.refresh()
    page = until(driver, showing, "the first document after a reload")
    assert page["signin_hidden"] and waiting(page) == len(DOCUMENTS)
    # signing out forgets it
    driver.find_element(By.ID, "sign-out").click()
    page = until(driver, lambda p: not p["signin_hidden"], "the sign-in form after signing out")
    assert page["review_hidden"]
    driver.refresh()
    page = until(driver, lambda p: not p["signin_hidden"], "the sign-in form after a reload")
    assert page["review_hidden"] and driver.execute_script("return sessionStorage.length") == 0


def test_deciding_by_keyboard_only(review: Review, driver: WebDriver) -> None:
    sign_in(driver, review)
    first = until(driver, showing, "the first document")
    # a number key: a class other than the model's suggestion
    chosen = next(c for c in review.classes if c != first["suggested"] and key_of(driver, c).isdigit())
    before, after = decide_by_key(driver, key_of(driver, chosen))
    assert waiting(after) == len(DOCUMENTS) - 1
    assert before["name"] in after["flash"] and chosen in after["flash"]
    assert_decided(review, before["name"], chosen, before["suggested"])
    # Enter: the model's suggestion
    before, after = decide_by_key(driver, Keys.ENTER)
    assert waiting(after) == len(DOCUMENTS) - 2
    assert_decided(review, before["name"], before["suggested"], before["suggested"])
    # X: none of the classes
    before, after = decide_by_key(driver, "x")
    assert waiting(after) == len(DOCUMENTS) - 3
    assert_decided(review, before["name"], OUT_OF_SCOPE, before["suggested"])
    with review.client() as client:
        assert client.get("/review/queue").json()["total"] == len(DOCUMENTS) - 3


def test_z_undoes_the_last_decision(review: Review, driver: WebDriver) -> None:
    sign_in(driver, review)
    before, _ = decide_by_key(driver, Keys.ENTER)
    assert_decided(review, before["name"], before["suggested"], before["suggested"])
    press(driver, "z")
    page = until(
        driver,
        lambda p: p["name"] == before["name"] and waiting(p) == len(DOCUMENTS) and showing(p),
        f"{before['name']!r} back after Z",
    )
    assert "Undone" in page["flash"]
    document, decisions, queued = record(review, before["name"])
    assert document["status"] == "NEEDS_REVIEW" and document["label"] is None, document
    assert review.ids[before["name"]] in queued
    # the decision stays in the history, marked undone (earlier tests' undone decisions may precede it)
    assert decisions[-1]["undone_at"] is not None and decisions[-1]["label"] == before["suggested"], decisions
    assert decisions[-1]["reviewer"] == REVIEWER
    assert [d for d in decisions if d["undone_at"] is None] == []
    # and it can be decided again from the page
    decide_by_key(driver, "x")
    assert_decided(review, before["name"], OUT_OF_SCOPE, before["suggested"])


def test_a_payload_in_the_text_and_name_stays_text(review: Review, driver: WebDriver) -> None:
    with review.client() as client:
        text = client.get(f"/documents/{review.ids[XSS_NAME]}/text").json()
    assert XSS_IMG in text["pages"][0]["text"] and XSS_SCRIPT in text["pages"][0]["text"]  # it reached the page
    sign_in(driver, review)
    advance_to(driver, XSS_NAME)
    page = until(driver, lambda p: XSS_SCRIPT in p["text"], "the payload document's text")
    assert XSS_IMG in page["text"] and page["name"] == XSS_NAME
    assert driver.find_element(By.ID, "doc-name").text == XSS_NAME
    assert driver.find_elements(By.CSS_SELECTOR, "#text *") == []  # the pre holds a text node, no elements
    assert driver.find_elements(By.CSS_SELECTOR, 'img[src="x"]') == []
    scripts = driver.execute_script("return [...document.scripts].map((s) => s.src)")
    assert scripts == [f"{review.url}/review/static/review.js"]
    # decided: the name goes into the status line, still as text
    decide_by_key(driver, "x")
    assert XSS_NAME in state(driver)["flash"]
    assert driver.find_elements(By.CSS_SELECTOR, 'img[src="x"], #flash *') == []
    time.sleep(0.3)  # an onerror would have run by now
    assert driver.title != "pwned" and "Review queue" in driver.title


def test_arrow_keys_turn_the_pages(review: Review, driver: WebDriver) -> None:
    sign_in(driver, review)
    advance_to(driver, TWO_PAGES)
    first = until(driver, lambda p: p["page"] == "Page 1 of 2" and "ANNUAL RESEARCH REPORT" in p["text"], "page 1 of 2")
    press(driver, Keys.ARROW_RIGHT)
    second = until(
        driver,
        lambda p: p["page"] == "Page 2 of 2" and p["src"] not in ("", first["src"]) and p["loaded"],
        "page 2 after the right arrow",
    )
    assert second["src"].startswith("blob:") and "second page" in second["text"]
    assert "ANNUAL RESEARCH REPORT" not in second["text"]
    assert not driver.find_element(By.ID, "next-page").is_enabled()
    press(driver, Keys.ARROW_RIGHT)  # no page 3
    assert state(driver)["page"] == "Page 2 of 2"
    press(driver, Keys.ARROW_LEFT)
    back = until(driver, lambda p: p["page"] == "Page 1 of 2", "page 1 after the left arrow")
    assert back["src"] == first["src"] and "ANNUAL RESEARCH REPORT" in back["text"]
    assert back["name"] == TWO_PAGES and waiting(back) == waiting(first)  # turning pages decides nothing


def test_a_late_answer_from_the_queue_brings_no_decided_document_back(review: Review, driver: WebDriver) -> None:
    """After each decision the page asks for the queue again (topUp); over a slow network that answer can come
    after the person has decided more documents, and must not put those back in front of them."""
    sign_in(driver, review)
    until(driver, showing, "the first document")
    # the queue's answers arrive late: each held 1.5 s in the page once it came (the server answered at once)
    driver.execute_script(
        """
        const real = window.fetch;
        window.fetch = async (url, init) => {
          const response = await real(url, init);
          if (String(url).includes("/review/queue")) await new Promise((done) => setTimeout(done, 1500));
          return response;
        };
        """
    )
    decided = [decide_by_key(driver, "x")[0]["name"] for _ in range(3)]
    time.sleep(2.5)  # every late answer has arrived
    while (page := until(driver, lambda p: showing(p) or not p["empty_hidden"], "a document or none"))["empty_hidden"]:
        assert page["name"] not in decided, f"{page['name']!r} shown again after it was decided ({decided}): {page}"
        assert waiting(page) == len(DOCUMENTS) - len(decided), page["count"]
        assert len(decided) < len(DOCUMENTS), decided
        press(driver, "x")
        until(driver, lambda p, name=page["name"]: p["name"] != name or not p["empty_hidden"], "the next one")
        decided.append(page["name"])
    assert sorted(decided) == sorted(DOCUMENTS)
    with review.client() as client:
        assert client.get("/review/queue").json()["total"] == 0


def test_the_class_filter_narrows_the_queue(review: Review, driver: WebDriver) -> None:
    sign_in(driver, review)
    until(driver, showing, "the first document")
    wanted = review.suggested[TWO_PAGES]
    expected = sum(1 for c in review.suggested.values() if c == wanted)
    Select(driver.find_element(By.ID, "filter-class")).select_by_value(wanted)
    page = until(driver, lambda p: waiting(p) == expected and showing(p), f"only the {wanted!r} documents")
    assert review.suggested[page["name"]] == wanted


def test_previews_asked_for_at_once_are_all_drawn(review: Review) -> None:
    """The page asks for the shown page and the next document's at the same time (prefetch), and several
    reviewers share one server: previews drawn in parallel threads must neither fail nor take it down."""
    pdfs = [review.ids[name] for name in (TWO_PAGES, "letter.pdf", "memo.pdf", "email.pdf")]

    def draw(i: int) -> int:
        with review.client() as client:
            return client.get(f"/documents/{pdfs[i % len(pdfs)]}/pages/1/preview").status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(draw, range(96)))
    review.assert_alive()
    assert statuses == [200] * 96


def test_the_page_has_a_strict_content_security_policy(review: Review) -> None:
    page = httpx.get(f"{review.url}/review", timeout=10)  # the page itself needs no key; its data does
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script>" not in page.text  # no inline script for the policy to have to allow
    script = httpx.get(f"{review.url}/review/static/review.js", timeout=10)
    assert script.status_code == 200 and "unsafe-inline" not in script.headers["content-security-policy"]


def test_screenshot_of_a_document(review: Review, driver: WebDriver, tmp_path_factory: pytest.TempPathFactory) -> None:
    sign_in(driver, review)
    until(driver, lambda p: showing(p) and p["text"] and waiting(p) == len(DOCUMENTS), "the first document")
    path = tmp_path_factory.mktemp("artifacts") / "review-page.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 20_000, path.stat().st_size  # a rendered page, not a blank one
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 1000
        assert len(image.convert("L").getcolors(256) or []) > 8  # text, a page image: many shades
    if artifacts := os.environ.get("DOCFLOW_ARTIFACTS_DIR"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / "review-page.png")
    print(f"review page screenshot: {path}")
