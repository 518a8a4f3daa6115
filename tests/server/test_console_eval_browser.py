"""The console's eval page in a real browser (Debian's chromium driven by Selenium) against a real
`qmcp serve`: the Evals page lists the eval, its page shows the matrix with each cell's score in text and
colour, and a cell opens the execution that answered it. Skipped like test_console_browser.py when
chromium, its driver or Selenium is missing."""

from __future__ import annotations

import pytest
from eval_data import real_eval
from serving import Server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

pytest.importorskip("selenium", reason="Selenium is not installed (pip install selenium)")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import test_console_browser as console_browser  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

wait = console_browser.wait


@pytest.fixture
def chromium(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    """test_console_browser.py's chromium (a screenshot and the page saved when the test fails)."""
    yield from console_browser._chromium(request, tmp_path)


GREEN_BACKGROUND = "rgba(220, 252, 231, 1)"
RED_BACKGROUND = "rgba(254, 226, 226, 1)"


async def test_the_eval_page_shows_the_matrix_and_a_cell_opens_its_execution(
    start_server, db_url, chromium, scripted
):
    server: Server = start_server(db_url)
    eval_id, executions = await real_eval(db_url, scripted)  # `qmcp eval`, here, into the server's database

    chromium.get(server.url + "/")
    chromium.find_element(By.LINK_TEXT, "Evals").click()
    wait(chromium, lambda d: d.current_url.endswith("/evals"), "the Evals page")
    chromium.find_element(By.LINK_TEXT, eval_id).click()
    wait(chromium, lambda d: d.current_url.endswith(f"/evals/{eval_id}"), "the eval's page")

    report = chromium.find_element(By.ID, "report")
    assert [th.text for th in report.find_elements(By.CSS_SELECTOR, "tbody th")] == ["alpha", "beta"]
    assert "75.0 %" in report.text and "50.0 %" in report.text

    matrix = chromium.find_element(By.ID, "matrix")
    headers = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "thead th")]
    assert headers == ["Sample", "alpha", "beta"]
    rows = matrix.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [row.get_attribute("data-sample") for row in rows] == ["q0", "q1", "q2", "q3"]
    q1 = rows[1].find_elements(By.CSS_SELECTOR, "td.cell")
    assert [cell.text for cell in q1] == ["1", "0"]  # the score in text, not colour alone
    assert q1[0].value_of_css_property("background-color") == GREEN_BACKGROUND
    assert q1[1].value_of_css_property("background-color") == RED_BACKGROUND
    assert [cell.text for cell in rows[3].find_elements(By.CSS_SELECTOR, "td.cell")] == ["0", "–"]
    wrong = q1[1].find_element(By.TAG_NAME, "a")
    assert wrong.get_attribute("title").startswith("sample q1, beta: score 0.00: ")

    wrong.click()
    wait(chromium, lambda d: "/executions/" in d.current_url, "the cell's execution")
    assert chromium.current_url.endswith(f"/executions/{executions['q1', 'beta']}")
    assert "beta" in chromium.find_element(By.TAG_NAME, "h1").text
    wait(chromium, lambda d: d.find_element(By.ID, "status").text == "completed", "the execution's status")
    assert "no idea" in chromium.find_element(By.ID, "live").text  # the cell's answer
    chromium.find_element(By.CSS_SELECTOR, "#eval-link a").click()  # and back to its eval
    wait(chromium, lambda d: d.current_url.endswith(f"/evals/{eval_id}"), "the eval's page again")
    assert chromium.find_element(By.ID, "matrix").is_displayed()
