"""Markdown for untrusted model output: rendered with raw HTML shown as text, then sanitized on the server.

Model responses and prompts may contain anything, including HTML meant to run in an annotator's browser.
markdown-it-py renders with `html` off: raw HTML is escaped and shows up as text, which is what the
annotator should judge. nh3 (the Rust ammonia sanitizer) then cleans the rendered HTML with an allow-list:
tags outside it are dropped, attributes outside it removed, and links keep http/https/mailto only and get
rel="nofollow noopener". markdown-it's own link check is switched off so that a `javascript:` link still
renders as a link without its href (visibly inert) rather than as markdown source; nh3 decides what a URL
may be. The CSP header is the last line of defence. Bare URLs are not turned into links.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

ALLOWED_TAGS = {
    "p", "pre", "code", "em", "strong", "ul", "ol", "li", "blockquote", "br", "hr",
    "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
    "a",
}
ALLOWED_PROTOCOLS = {"http", "https", "mailto"}
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def keep_attribute(tag: str, name: str, value: str) -> str | None:
    """nh3's attribute filter, after its allow-list: a code block keeps only its language class."""
    if tag == "code" and name == "class" and not value.startswith("language-"):
        return None
    return value


_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_markdown.validateLink = lambda url: True  # nh3 below drops every href outside ALLOWED_PROTOCOLS
_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes={"a": {"href"}, "code": {"class"}},
    attribute_filter=keep_attribute,
    url_schemes=ALLOWED_PROTOCOLS,
    link_rel="nofollow noopener",
    strip_comments=True,
)


def render_markdown(text: str) -> Markup:
    return Markup(_cleaner.clean(_markdown.render(text or "")))


def render_conversation(prompt) -> Markup:
    """A prompt as HTML: a plain string is one user turn; a list of {"role", "content"} is a conversation."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt or [])
    parts = []
    for message in messages:
        role = str(message.get("role", "user")) if isinstance(message, dict) else "user"
        content = message.get("content", "") if isinstance(message, dict) else str(message)
        css_role = role if role in ROLE_LABELS else "other"
        label = ROLE_LABELS.get(role, role.capitalize() or "Message")
        parts.append(
            Markup('<div class="turn turn-{}"><div class="turn-role">{}</div><div class="md">{}</div></div>').format(
                css_role, escape(label), render_markdown(str(content))
            )
        )
    return Markup("").join(parts)


def render_bar_chart(title: str, bars: list[tuple[str, float | None, bool]], value_format: str = "{:.2f}",
                     max_value: float | None = None) -> Markup:
    """A horizontal bar chart as inline SVG, drawn on the server: no script, no inline style (the CSP).

    `bars` are (label, value or None, muted) rows; muted bars (simulated annotators) get a grey class.
    """
    row_h, label_w, bar_w, pad = 22, 130, 260, 6
    height = 24 + row_h * max(len(bars), 1)
    top = max([v for _, v, _ in bars if v is not None] + [max_value or 0, 1e-9])
    parts = [Markup('<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">').format(label_w + bar_w + 70, height, title),
             Markup('<text class="title" x="0" y="14">{}</text>').format(title)]
    for i, (label, value, muted) in enumerate(bars):
        y = 22 + i * row_h
        parts.append(Markup('<text x="{}" y="{}" text-anchor="end">{}</text>').format(label_w - pad, y + 14, label[:18]))
        if value is None:
            parts.append(Markup('<text class="value" x="{}" y="{}">n/a</text>').format(label_w, y + 14))
            continue
        width = max(bar_w * max(value, 0) / top, 1)
        parts.append(Markup('<rect class="bar{}" x="{}" y="{}" width="{:.1f}" height="{}" rx="3"></rect>').format(
            " sim" if muted else "", label_w, y + 3, width, row_h - 7))
        parts.append(Markup('<text class="value" x="{:.1f}" y="{}">{}</text>').format(
            label_w + width + pad, y + 14, value_format.format(value)))
    parts.append(Markup('<line class="axis" x1="{0}" y1="20" x2="{0}" y2="{1}"></line>').format(label_w, height))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
