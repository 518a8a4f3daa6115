"""The console's fork form in a real browser: Debian's chromium driven by Selenium, against a real
`qmcp serve` (the fixtures of test_console_browser.py; skipped, saying why, without chromium)."""

from __future__ import annotations

import pytest
from serving import Server
from team import finished, make_team, run
from test_console_browser import browser, status, wait  # noqa: F401  # `browser` is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.browser]

from selenium.webdriver.common.by import By  # noqa: E402  # after the skip when Selenium is missing

PLAN, WRITE, REVIEW = "pipeline/0:plan", "pipeline/1:write", "pipeline/2:review"

SHOWN = """const from = document.getElementById('forked-from');
const rows = [...document.querySelectorAll('.steps-table a[data-step]')].map(a => {
  const mark = a.closest('tr').querySelector('[data-mark]');
  return [a.dataset.step, mark ? mark.dataset.mark : ''];
});
const parent = from ? from.querySelector('a[href^="/executions/"]') : null;
return {status: (document.getElementById('status') || {}).textContent || '',
        from: from ? from.textContent.replace(/\\s+/g, ' ').trim() : '',
        parent: parent ? parent.getAttribute('href') : '', rows: rows};"""
"""What the fork's page shows, read in one go: its live parts are swapped in as the run goes on."""


async def test_fork_a_middle_step_with_an_edited_reply(start_server, db_url, browser):  # noqa: F811
    server: Server = start_server(db_url)
    async with server.client() as client:
        await make_team(client)
        reviewer = {"name": "reviewer-a", "role": "reviewer", "config": {"model": "test"}}
        assert (await client.post("/v1/agents", json=reviewer)).status_code == 201
        article = {
            "name": "article",
            "type": "pipeline",
            "agents": {"plan": "planner-a", "write": "writer-a", "review": "reviewer-a"},
        }
        assert (await client.post("/v1/topologies", json=article)).status_code == 201
        parent_id = await run(client, "article", "Write about rivers")
        assert (await finished(client, parent_id))["status"] == "completed"

    browser.get(f"{server.url}/executions/{parent_id}")
    browser.execute_script(  # found and clicked in one go: the page may swap its live parts in between
        "arguments[0].click()",
        browser.find_element(By.CSS_SELECTOR, f'a.fork[aria-label="Fork from {WRITE}"]'),
    )
    wait(browser, lambda d: "/fork?at=" in d.current_url, "the fork form")
    assert WRITE in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_element(By.CSS_SELECTOR, "label[for=fork-model]").text.startswith("Model")

    plan = browser.find_element(By.CSS_SELECTOR, f'textarea[data-key="{PLAN}"]')
    plan.find_element(By.XPATH, "./ancestor::details/summary").click()  # inherited replies start folded
    plan.clear()
    plan.send_keys("Plan: three rivers\none paragraph each")
    browser.find_element(By.ID, "fork").click()

    def fork_page(driver) -> str | None:
        path = driver.current_url.split(server.url, 1)[-1]
        return path.rsplit("/", 1)[-1] if path.startswith("/executions/") and parent_id not in path else None

    fork_id = wait(browser, fork_page, "the fork's page")

    def completed(driver) -> dict | None:
        shown = driver.execute_script(SHOWN)
        return shown if shown["status"] == "completed" and len(shown["rows"]) == 3 else None

    shown = wait(browser, completed, "the fork to complete, its three steps shown")
    assert shown["from"].startswith(f"Forked from {parent_id[:8]}") and f"at {WRITE}" in shown["from"]
    assert shown["parent"] == f"/executions/{parent_id}"
    assert shown["rows"] == [[PLAN, "edited"], [WRITE, ""], [REVIEW, ""]]

    async with server.client() as client:
        fork = (await client.get(f"/v1/executions/{fork_id}")).json()
        steps = {s["key"]: s for s in (await client.get(f"/v1/executions/{fork_id}/steps")).json()["steps"]}
    assert fork["parent_id"] == parent_id and fork["fork_key"] == WRITE and fork["origin"] == "console"
    assert steps[PLAN]["response"] == "Plan: three rivers\none paragraph each" and steps[PLAN]["inherited"]
    assert "three rivers" in str(steps[WRITE]["request"])  # the next step received the edited reply

    browser.find_element(By.ID, "compare-parent").click()
    wait(browser, lambda d: d.current_url.endswith(f"/executions/{fork_id}/diff"), "the comparison")
    changes = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('tr[data-key]')]"
        ".map(r => [r.dataset.key, r.dataset.change]))"
    )
    assert changes == {PLAN: "edited", WRITE: "changed", REVIEW: "changed"}
