"""The console's server-drawn pieces alone: the timeline's axis and the answer's Markdown."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from qmcp.server.console._markdown import render_markdown
from qmcp.server.console._views import Bar, timeline_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_the_timelines_last_axis_label_ends_inside_the_picture():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    bars = [Bar("a", "writer", "completed", t0, t0 + timedelta(seconds=65))]
    root = ET.fromstring(timeline_svg(bars, t0 + timedelta(seconds=65)))
    labels = [t for t in root.iter(f"{SVG}text") if t.get("class") == "axis"]
    last = labels[-1]
    assert last.text.startswith("1 min")
    # anchored at its end on the last tick, so it reads leftwards and nothing is cut at the edge
    assert last.get("text-anchor") == "end" and float(last.get("x")) <= float(root.get("width"))
    assert all(t.get("text-anchor") == "middle" for t in labels[:-1])


def test_markdown_from_a_model_runs_nothing():
    html = str(
        render_markdown(
            "<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](JavaScript:alert(1)) "
            "[z](data:text/html,hi) ![p](https://e.example/p.png) <b onclick=alert(1)>b</b>\n\n"
            "[ok](https://e.example/a?b=1&c=2)"
        )
    )
    assert "<script" not in html and "<b " not in html and "<img" not in html
    assert not re.search(r'href="(?!https?://)', html)  # only http(s) links
    assert '<a href="https://e.example/a?b=1&amp;c=2" rel="noopener noreferrer nofollow">ok</a>' in html
