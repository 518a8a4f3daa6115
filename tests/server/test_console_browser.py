"""The console in a real browser: Debian's chromium driven by Selenium, against a real `qmcp serve`.

Skipped, saying why, when chromium, its driver or Selenium is missing (`apt-get install -y chromium
chromium-driver`). A failing test saves a screenshot and the page's HTML (in QMCP_TEST_SCREENSHOTS,
else the test's temporary directory) and prints where.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import Server
from team import finished, make_team, run

pytestmark = [pytest.mark.slow, pytest.mark.browser]

selenium = pytest.importorskip("selenium", reason="Selenium is not installed (pip install selenium)")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


REBOUND = "rebind.attacker.example"
"""A name an attacker's DNS answers with 127.0.0.1 (chromium's --host-resolver-rules stands in for it)."""


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    yield from _chromium(request, tmp_path)


@pytest.fixture
def rebinding_browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    yield from _chromium(request, tmp_path, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1")


def _chromium(request: pytest.FixtureRequest, tmp_path: Path, *arguments: str) -> Iterator[WebDriver]:
    if not CHROMIUM or not DRIVER:
        pytest.skip(
            "Debian's chromium and chromedriver are not installed: apt-get install -y chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1366,900",
        *arguments,
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))  # no download: the system's
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            folder = Path(os.environ.get("QMCP_TEST_SCREENSHOTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            stem = folder / request.node.name.replace("/", "_")
            driver.save_screenshot(f"{stem}.png")
            Path(f"{stem}.html").write_text(driver.page_source)
            print(f"\nscreenshot: {stem}.png  page: {stem}.html")
        driver.quit()


def wait(driver: WebDriver, condition, what: str, seconds: float = 30):
    """Until `condition` holds; an element the page swapped out between finding and reading it (its
    live parts are replaced as the run goes on) is looked for again at the next poll."""
    return WebDriverWait(
        driver,
        seconds,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(lambda d: condition(d), message=what)


def status(driver: WebDriver) -> str:
    """The run's status badge (read in one go: the page swaps its live parts in as the run goes on)."""
    return driver.execute_script("const e = document.getElementById('status'); return e ? e.textContent : ''")


async def test_start_a_run_from_its_topology_and_watch_it_to_the_end(start_server, db_url, browser):
    server: Server = start_server(db_url, env={"DRIVER_CHUNK_DELAY": "0.12", "DRIVER_WORDS": "14"})
    async with server.client() as client:
        await make_team(client)
    browser.get(server.url + "/")
    assert "Executions" in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.LINK_TEXT, "Topologies").click()
    browser.find_element(By.LINK_TEXT, "streaming").click()
    box = browser.find_element(By.ID, "run-input")  # found by its label's target: the form is labelled
    assert browser.find_element(By.CSS_SELECTOR, "label[for=run-input]").text.startswith("Input")
    box.clear()
    box.send_keys('{"prompt": "Tell me about rivers"}')
    browser.find_element(By.ID, "run").click()
    wait(browser, lambda d: "/executions/" in d.current_url, "the execution's page")
    execution_id = browser.current_url.rsplit("/", 1)[-1]

    # The running step follows in the panel, its text growing as it is written; its bar grows too.
    stream = wait(
        browser,
        lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "pre.streaming") if e.text.strip()],
        "streamed text in the step panel",
    )[0]
    first = stream.text
    bar = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.timeline rect[data-start]"), "a bar")[
        0
    ]
    grew = []
    for _ in range(5):  # the same bar, between two updates of the page, is wider a moment later
        try:
            width = float(bar.get_attribute("width"))
            time.sleep(0.3)
            grew.append(float(bar.get_attribute("width")) > width)
            break
        except StaleElementReferenceException:  # the page swapped in an update: take the new bar
            bars = browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect[data-start]")
            if not bars:
                break
            bar = bars[0]
    assert grew == [True]
    grown = browser.find_elements(By.CSS_SELECTOR, "pre.streaming")
    if grown and status(browser) == "running":
        assert len(grown[0].text) >= len(first)

    wait(browser, lambda d: status(d) == "completed", "the run to complete in the page")
    wait(
        browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.timeline .bar.s-completed")) == 2, "bars"
    )
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.qd g.node.kind-step")
    assert {n.get_attribute("class") for n in nodes} == {"node kind-step s-completed"}
    async with server.client() as client:
        steps = (await client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
    wait(
        browser,
        lambda d: (
            d.execute_script("return document.querySelector('#panel pre.response')?.textContent")
            == steps[-1]["response"]
        ),
        "the last step's whole response in the panel",
    )

    # Keyboard: a step in the diagram is a link; Enter opens it in the panel.
    link = browser.find_element(By.CSS_SELECTOR, 'svg.qd a[aria-label^="step pipeline/0:first"]')
    browser.execute_script("arguments[0].focus()", link)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda d: "pipeline/0:first" in d.find_element(By.ID, "panel-title").text, "the panel")
    assert browser.find_element(By.CSS_SELECTOR, "#panel pre.response").text == steps[0]["response"]

    browser.find_element(By.LINK_TEXT, "Executions").click()
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{execution_id}"]')
    assert "completed" in row.text and "streaming" in row.text


async def test_approve_a_paused_run(start_server, db_url, browser):
    server: Server = start_server(db_url)
    async with server.client() as client:
        await make_team(client)
        execution_id = await run(client, "gated", "Publish the report")
        assert (await finished(client, execution_id))["status"] == "paused"
    browser.get(f"{server.url}/executions/{execution_id}")
    assert "Waiting for you: approval" in browser.page_source
    browser.find_element(By.CSS_SELECTOR, 'button[name=choice][value="approve"]').click()
    wait(browser, lambda d: status(d) == "completed", "the approved run to complete")
    assert "answered: approve" in browser.find_element(By.ID, "notice").text
    assert not browser.find_elements(By.CSS_SELECTOR, "section.human")


async def test_cancel_a_running_run(start_server, db_url, browser):
    server: Server = start_server(db_url, env={"DRIVER_LATENCY": "30"})
    async with server.client() as client:
        await make_team(client)
        execution_id = await run(client, "slow-two")
    browser.get(f"{server.url}/executions/{execution_id}")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.qd g.node.s-running"), "a running step")
    browser.execute_script("document.getElementById('cancel').click()")  # found and clicked in one go:
    # the page may swap its live parts in between two Selenium calls
    wait(browser, lambda d: status(d) == "cancelled", "the run to be cancelled")
    # read in one go, and waited for: the page swaps its live parts in once more after the status changes
    shown = (
        "const r = document.getElementById('resume');"
        "return !!r && r.offsetParent !== null && !document.getElementById('cancel')"
    )
    wait(browser, lambda d: d.execute_script(shown), "Resume shown and Cancel gone", seconds=10)


def test_a_token_protected_server_asks_to_sign_in(start_server, db_url, browser):
    server: Server = start_server(db_url, env={"QMCP_API_TOKEN": "browser-token"})
    browser.get(server.url + "/topologies")
    assert "/login" in browser.current_url
    field = browser.find_element(By.ID, "token")
    field.send_keys("browser-token")
    field.send_keys(Keys.ENTER)
    wait(browser, lambda d: d.current_url.endswith("/topologies"), "the page asked for")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Topologies"
    assert not browser.get_cookies()[0]["value"].startswith("browser-token")


async def test_a_page_on_a_rebound_name_gets_neither_the_console_nor_the_api(
    start_server, db_url, rebinding_browser
):
    """DNS rebinding: a name that resolves to 127.0.0.1 reaches the server from the browser with its own
    Origin; the server answers it 421 (page, reads and runs alike) because it is not one of its names."""
    server: Server = start_server(db_url)
    async with server.client() as client:
        await make_team(client)
        before = (await client.get("/v1/executions")).json()["total"]
    port = server.url.rsplit(":", 1)[1]
    rebinding_browser.get(f"http://{REBOUND}:{port}/")
    body = rebinding_browser.find_element(By.TAG_NAME, "body").text
    assert "does not answer to the Host" in body and REBOUND in body
    assert not rebinding_browser.find_elements(By.TAG_NAME, "h1")  # no console
    rebinding_browser.set_script_timeout(30)
    statuses = rebinding_browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        Promise.all([
          fetch("/v1/executions").then(r => r.status),
          fetch("/v1/topologies/plan-write/run", {method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({input: {prompt: "x"}})}).then(r => r.status),
        ]).then(done, e => done(String(e)));"""
    )
    assert statuses == [421, 421]
    async with server.client() as client:
        assert (await client.get("/v1/executions")).json()["total"] == before
    rebinding_browser.get(f"{server.url}/")  # the same browser by the server's own name: the console
    assert "Executions" in rebinding_browser.find_element(By.TAG_NAME, "h1").text


class CuttingProxy:
    """A loopback TCP proxy in front of the server that drops the event streams passing through it, as a
    network does, and keeps the head of each event-stream request (to read its Last-Event-ID)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self._streams: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                browser, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(browser, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, browser, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, asks: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if asks and data.startswith(b"GET /v1/executions/") and b"/events " in data.split(b"\r\n")[0]:
                    with self._lock:
                        self.requests.append(data.decode("latin-1").lower())
                        self._streams.append((source, sink))
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Drop every event stream open now."""
        with self._lock:
            streams, self._streams = self._streams, []
        for pair in streams:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


RECORDER = """(function () {
  const Native = window.EventSource;
  window.__sse = [];
  function Recording(url, init) {  // every event the page's listeners get, with its id
    const source = new Native(url, init);
    const add = source.addEventListener.bind(source);
    source.addEventListener = function (type, listener, options) {
      add(type, function (event) {
        window.__sse.push({type: type, id: event.lastEventId, data: event.data});
        return listener.call(source, event);
      }, options);
    };
    return source;
  }
  Recording.CONNECTING = 0; Recording.OPEN = 1; Recording.CLOSED = 2;
  window.EventSource = Recording;
})();"""


def _place(event_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in event_id.split("."))


async def test_a_dropped_event_stream_reconnects_and_the_page_shows_every_step_once(
    start_server, db_url, browser
):
    server: Server = start_server(db_url, env={"DRIVER_CHUNK_DELAY": "0.15", "DRIVER_WORDS": "16"})
    proxy = CuttingProxy(int(server.url.rsplit(":", 1)[1]))
    try:
        async with server.client() as client:
            await make_team(client)
            execution_id = await run(client, "streaming")
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        browser.get(f"http://127.0.0.1:{proxy.port}/executions/{execution_id}")
        key = "pipeline/1:second"

        def seen() -> list[dict]:
            return browser.execute_script("return window.__sse || []")

        wait(browser, lambda d: sum(e["type"] == "delta" and key in e["data"] for e in seen()) >= 3, "deltas")
        proxy.cut()  # in the middle of the second step's reply
        time.sleep(0.5)  # what the page had when the stream dropped (it reconnects after `retry:`)
        before = seen()
        wait(browser, lambda d: status(d) == "completed", "the run to complete in the page")
        got = wait(browser, lambda d: (e := seen()) and e[-1]["type"] == "end" and e, "the stream's end")
        async with server.client() as client:
            steps = (await client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
    finally:
        proxy.close()

    assert f'"{key}"' not in "".join(
        e["data"] for e in before if e["type"] == "step" and "completed" in e["data"]
    )
    assert len(proxy.requests) == 2, proxy.requests  # one reconnect, which said where it was
    assert f"last-event-id: {before[-1]['id']}\r\n" in proxy.requests[1]
    assert "last-event-id" not in proxy.requests[0]
    places = [_place(e["id"]) for e in got]
    assert places == sorted(set(places)) and "reset" not in [e["type"] for e in got]
    events = [{**json.loads(e["data"]), "type": e["type"]} for e in got]
    completed = [e["key"] for e in events if e["type"] == "step" and e["kind"] == "completed"]
    assert completed == ["pipeline/0:first", key]  # each once, over both connections
    text = "".join(e["text"] for e in events if e["type"] == "delta" and e["key"] == key)
    assert text == steps[1]["response"]  # its deltas, none lost, none twice, across the reconnect
    assert len(got) > len(before) and got[: len(before)] == before
    shown = browser.execute_script(
        "return [...document.querySelectorAll('.steps-table a[data-step]')].map(a => a.dataset.step)"
    )
    assert shown == ["pipeline/0:first", key]
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.timeline .bar.s-completed")) == 2


def _totals(driver: WebDriver) -> str:
    return driver.execute_script(
        "const e = document.getElementById('totals-tokens'); return e ? e.textContent : ''"
    )


async def test_the_page_shows_the_answer_and_totals_that_grow_while_the_run_goes(
    start_server, db_url, browser
):
    server: Server = start_server(db_url, env={"DRIVER_CHUNK_DELAY": "0.2", "DRIVER_WORDS": "14"})
    async with server.client() as client:
        await make_team(client)
        execution_id = await run(client, "streaming", "Tell me about rivers")
    browser.get(f"{server.url}/executions/{execution_id}")
    assert _totals(browser) == "0 in / 0 out"  # the first step is still being written
    browser.execute_script("window.sameDocument = true")

    # The first step finishes while the second is written: the header counts it, live.
    seen = wait(
        browser,
        lambda d: (lambda shown, now: shown if shown != "0 in / 0 out" and now == "running" else None)(
            _totals(d), status(d)
        ),
        "the totals to grow while the run goes",
    )
    wait(browser, lambda d: status(d) == "completed", "the run to complete in the page")
    async with server.client() as client:
        execution = (await client.get(f"/v1/executions/{execution_id}")).json()
    final = wait(browser, lambda d: _totals(d) if _totals(d) != seen else None, "the final totals")
    assert str(execution["input_tokens"]) in final.replace(",", "")

    # The answer leads the page, as text; the JSON waits behind its toggle. (Read in one go each
    # time: the page swaps its live parts in when the run ends.)
    shown = """const answer = document.getElementById('answer'), raw = document.querySelector('details.raw pre');
        const seen = (e) => e.checkVisibility({visibilityProperty: true}) && !(e.closest('details:not([open])'));
        return answer && raw ? [seen(answer), answer.innerText, seen(raw), raw.innerText] : null;"""
    answer_seen, answer, raw_seen, _ = wait(browser, lambda d: d.execute_script(shown), "the answer")
    assert answer_seen and answer.startswith("word0 word1") and not raw_seen
    browser.execute_script("document.querySelector('details.raw summary').click()")
    _, _, raw_seen, raw = browser.execute_script(shown)
    assert raw_seen and "word0" in raw
    assert browser.execute_script("return window.sameDocument")  # all of it live: never reloaded
    # The page needs no sideways scrolling.
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


async def test_a_graph_as_wide_as_the_layout_draws_across_fits_the_page(start_server, db_url, browser):
    """Four stages between the input and the output, the most drawn left to right (longer graphs go top to bottom): scaled to the page's
    width, so reading it needs no sideways scrolling."""
    server: Server = start_server(db_url)
    async with server.client() as client:
        await make_team(client)
        wide = {"name": "four-stages", "type": "pipeline", "agents": {f"s{i}": "planner-a" for i in range(4)}}
        assert (await client.post("/v1/topologies", json=wide)).status_code == 201
        execution_id = await run(client, "four-stages")
        assert (await finished(client, execution_id))["status"] == "completed"
    browser.get(f"{server.url}/executions/{execution_id}")
    measured = """const svg = document.querySelector('.diagram svg.qd'), box = svg && svg.closest('.diagram');
        return svg && box ? [svg.dataset.flow, box.scrollWidth, box.clientWidth, svg.viewBox.baseVal.width] : null;"""
    flow, scrolled, shown, drawn = wait(browser, lambda d: d.execute_script(measured), "the diagram")
    assert flow == "across" and drawn > shown  # drawn wider than the page has room for ...
    assert scrolled <= shown + 1, (scrolled, shown)  # ... and scaled to fit it
