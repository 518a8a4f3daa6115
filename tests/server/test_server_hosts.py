"""The Host allowlist (DNS rebinding), the console's framing headers and the checks on a bind, in this
process; the rebinding itself in a real browser is in test_console_browser.py."""

from __future__ import annotations

import pytest
from team import make_team

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.server import ServerOptions, check_bind, create_app

ROUTES = [
    ("GET", "/health"),
    ("GET", "/v1/executions"),
    ("POST", "/v1/topologies/plan-write/run"),
    ("GET", "/"),
    ("GET", "/login"),
    ("GET", "/static/console.js"),
    ("POST", "/mcp"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    "host", ["rebind.attacker.example", "rebind.attacker.example:8000", "127.0.0.2:8000"]
)
async def test_a_foreign_host_gets_421_on_every_route(start_app, sqlite_url, host):
    server = await start_app(sqlite_url, model="test")
    await make_team(server.client)
    before = (await server.client.get("/v1/executions")).json()["total"]
    for method, path in ROUTES:
        body = MCP_INIT if path == "/mcp" else {"input": {"prompt": "x"}}
        headers = {"Host": host, "Origin": f"http://{host}", **MCP_HEADERS}
        answer = await server.client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 421, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert host in answer.json()["detail"] and "--allowed-host" in answer.json()["detail"]
    assert (await server.client.get("/v1/executions")).json()["total"] == before  # nothing ran


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8000", "localhost", "LOCALHOST:3333", "[::1]", "[::1]:8000"]
)
async def test_the_loopback_names_are_answered_with_or_without_a_port(start_app, sqlite_url, host):
    server = await start_app(sqlite_url)
    for path in ("/health", "/v1/executions", "/"):
        assert (await server.client.get(path, headers={"Host": host})).status_code == 200, path
    # the MCP SDK's own check (the same names) compares case-sensitively; clients send lower case
    mcp = await server.client.post("/mcp", json=MCP_INIT, headers={"Host": host.lower(), **MCP_HEADERS})
    assert mcp.status_code == 200, mcp.text


async def test_allowed_host_adds_a_name_to_the_api_the_console_and_mcp(start_app, sqlite_url):
    server = await start_app(sqlite_url, allowed_hosts=("qmcp.example.com", "proxy.example:8443"))
    for host in ("qmcp.example.com", "QMCP.example.com:443", "proxy.example:8443"):
        assert (await server.client.get("/v1/executions", headers={"Host": host})).status_code == 200
        assert (await server.client.get("/", headers={"Host": host})).status_code == 200
        headers = {"Host": host.lower(), "Origin": f"https://{host.lower()}", **MCP_HEADERS}
        assert (await server.client.post("/mcp", json=MCP_INIT, headers=headers)).status_code == 200, host
    for host in ("proxy.example", "proxy.example:8444", "other.example.com", "qmcp.example.com.evil"):
        assert (await server.client.get("/", headers={"Host": host})).status_code == 421, host


async def test_allowed_hosts_come_from_the_setting_too(start_app, sqlite_url, monkeypatch):
    monkeypatch.setenv("QMCP_ALLOWED_HOSTS", "a.example, b.example")
    server = await start_app(sqlite_url)
    assert (await server.client.get("/health", headers={"Host": "b.example"})).status_code == 200
    assert (await server.client.get("/health", headers={"Host": "c.example"})).status_code == 421


async def test_a_concrete_bind_address_answers_to_its_own_address(start_app, sqlite_url):
    server = await start_app(sqlite_url, host="192.168.1.10", token="t" * 32)
    assert (
        await server.client.get("/v1/executions", headers={"Host": "192.168.1.10:3333"})
    ).status_code == 200
    assert (await server.client.get("/v1/executions", headers={"Host": "192.168.1.11"})).status_code == 421


async def test_console_pages_cannot_be_framed(start_app, sqlite_url):
    server = await start_app(sqlite_url)
    for path in ("/", "/topologies", "/login", "/executions/nope"):
        page = await server.client.get(path)
        assert page.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"], path
    assert "x-frame-options" not in (await server.client.get("/v1/executions")).headers


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_a_non_loopback_bind_needs_a_token_of_32_characters(host):
    with pytest.raises(InvalidConfigError, match=r"token of 31 characters.*at least 32.*token_urlsafe\(32\)"):
        check_bind(host, "x" * 31, ("qmcp.example.com",))
    check_bind(host, "x" * 32, ("qmcp.example.com",))
    check_bind("127.0.0.1", "x")  # loopback: any token, or none


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_a_bind_to_every_address_needs_a_name_to_answer_to(host):
    with pytest.raises(InvalidConfigError, match="--allowed-host NAME"):
        check_bind(host, "x" * 32)
    check_bind("192.168.1.10", "x" * 32)  # one address: its own is answered


def test_an_allowed_host_that_is_no_host_name_is_refused():
    options = ServerOptions.from_settings(db_url="sqlite+aiosqlite:///:memory:", allowed_hosts=("a/b",))
    with pytest.raises(InvalidConfigError, match="'a/b' is not a host name"):
        create_app(options)
