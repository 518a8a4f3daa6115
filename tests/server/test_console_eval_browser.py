"""The console's eval page in a real browser (Debian's chromium driven by Selenium) against a real
`qmcp serve`: the Evals page lists the eval, its page shows the matrix with each cell's score in text and
colour, and a cell opens the execution that answered it. Skipped like test_console_browser.py when
chromium, its driver or Selenium is missing."""

from __future__ import annotations

import pytest
from eval_data import small_eval
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


async def test_the_eval_page_shows_the_matrix_and_a_cell_opens_its_execution(start_server, db_url, chromium):
    server: Server = start_server(db_url)
    async with server.client() as client:
        eval_id, executions = await small_eval(client, db_url)

    chromium.get(server.url + "/")
    chromium.find_element(By.LINK_TEXT, "Evals").click()
    wait(chromium, lambda d: d.current_url.endswith("/evals"), "the Evals page")
    chromium.find_element(By.LINK_TEXT, eval_id).click()
    wait(chromium, lambda d: d.current_url.endswith(f"/evals/{eval_id}"), "the eval's page")

    matrix = chromium.find_element(By.ID, "matrix")
    headers = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "thead th")]
    assert headers == ["Sample", "plan-write", "panel"]
    rows = matrix.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [row.get_attribute("data-sample") for row in rows] == ["s1", "s2"]
    s1 = rows[0].find_elements(By.CSS_SELECTOR, "td.cell")
    assert [cell.text for cell in s1] == ["1", "0"]  # the score in text, not colour alone
    assert s1[0].value_of_css_property("background-color") == GREEN_BACKGROUND
    assert s1[1].value_of_css_property("background-color") == RED_BACKGROUND
    wrong = s1[1].find_element(By.TAG_NAME, "a")
    assert wrong.get_attribute("title") == "sample s1, panel: score 0.00: expected 4, got 5"

    wrong.click()
    wait(chromium, lambda d: "/executions/" in d.current_url, "the cell's execution")
    assert chromium.current_url.endswith(f"/executions/{executions['s1', 'panel']}")
    assert "panel" in chromium.find_element(By.TAG_NAME, "h1").text
    wait(chromium, lambda d: d.find_element(By.ID, "status").text == "completed", "the execution's status")
