"""A run's answer as safe HTML: Markdown written by a model, which a caller may have steered.

CommonMark by markdown-it-py with raw HTML off (tags in the text show as text), links only to
http(s) addresses and opened with `rel="noopener noreferrer nofollow"`, and no images (a picture
from the model's text would be fetched by the reader's browser).
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

__all__ = ["render_markdown"]

_LINK_SCHEMES = ("http://", "https://")


def _links_only_to_the_web(url: str) -> bool:
    return url.strip().lower().startswith(_LINK_SCHEMES)


def _link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
    return str(self.renderToken(tokens, idx, options, env))


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable(["image", "html_block", "html_inline"])
    md.enable("table")
    md.validateLink = _links_only_to_the_web  # type: ignore[method-assign]  # its documented hook
    md.add_render_rule("link_open", _link_open)
    return md


_MD = _parser()


def render_markdown(text: str) -> Markup:
    """`text` as HTML that shows what was written and runs nothing."""
    return Markup(_MD.render(text))
