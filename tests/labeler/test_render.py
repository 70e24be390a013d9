"""render_markdown / render_conversation / render_bar_chart: untrusted model output comes out inert."""

from html.parser import HTMLParser

import pytest

from labeler.render import render_bar_chart, render_conversation, render_markdown

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    '<iframe src="https://evil.example"></iframe>',
    '<p onclick="alert(1)">hi</p>',
    "<style>body{display:none}</style>",
    '<a href="http://ok.example" onmouseover="alert(1)">x</a>',
    "```\n</code></pre><script>alert(1)</script>\n```",
]


class Elements(HTMLParser):
    """Every element and attribute the browser would build from the HTML (text is not an element)."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_come_out_inert(payload):
    html = str(render_markdown(payload))
    for tag, attrs in Elements(html).tags:
        assert tag in ("p", "a", "pre", "code"), (payload, html)
        assert not [name for name in attrs if name.startswith("on") or name in ("style", "src")], (payload, html)
        assert "javascript:" not in attrs.get("href", ""), (payload, html)
    if payload.startswith("<"):  # raw HTML is still there to judge, as escaped text
        assert html.startswith("<p>&lt;"), (payload, html)


def test_disallowed_tags_are_shown_as_text_not_deleted():
    # The annotator must see what the model wrote: escaped, not silently removed.
    assert str(render_markdown("<script>alert(1)</script>")).strip() == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert "&lt;img src=x onerror=alert(1)&gt;" in str(render_markdown("<img src=x onerror=alert(1)>"))


def test_markdown_code_blocks_tables_and_emphasis():
    html = str(render_markdown("**bold** and *it*\n\n```python\nif a < b:\n    pass\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |"))
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html
    assert '<pre><code class="language-python">if a &lt; b:' in html
    assert "<table>" in html and "<td>1</td>" in html


def test_links_keep_safe_protocols_and_get_nofollow():
    html = str(render_markdown("[docs](https://example.org/x) and [mail](mailto:a@b.c)"))
    assert '<a href="https://example.org/x" rel="nofollow noopener">docs</a>' in html
    assert 'href="mailto:a@b.c"' in html
    assert "href" not in str(render_markdown("[x](javascript:alert(1))"))
    assert "href" not in str(render_markdown("[x](data:text/html,<script>alert(1)</script>)"))


def test_conversation_has_role_labels_and_sanitizes_roles_and_content():
    html = str(render_conversation([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi <img src=x onerror=alert(1)>"},
        {"role": "assistant", "content": "Hello **there**"},
        {"role": '"><script>alert(1)</script>', "content": "x"},
    ]))
    assert html.count('class="turn ') == 4
    assert '<div class="turn-role">System</div>' in html and '<div class="turn-role">Assistant</div>' in html
    assert "<strong>there</strong>" in html
    assert "<script" not in html and "<img" not in html
    assert 'class="turn turn-other"' in html  # unknown roles never reach the class attribute


def test_plain_string_prompt_is_one_user_turn():
    html = str(render_conversation("What is 2+2?"))
    assert html.count('class="turn turn-user"') == 1 and "What is 2+2?" in html


def test_bar_chart_is_plain_svg_with_escaped_labels():
    svg = str(render_bar_chart("Agreement", [("<b>eve</b>", 0.5, False), ("bob", 1.0, True), ("amy", None, False)], "{:.0%}", max_value=1.0))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<b>" not in svg and "&lt;b&gt;eve" in svg
    assert "50%" in svg and "100%" in svg and "n/a" in svg
    assert 'class="bar sim"' in svg  # simulated annotators drawn muted
    assert "style=" not in svg and "<script" not in svg


def test_javascript_link_stays_a_link_without_href():
    # shown as a link (what the model wrote), but nh3 removed the href: nothing to click through to
    assert str(render_markdown("[x](javascript:alert(1))")).strip() == '<p><a rel="nofollow noopener">x</a></p>'


def test_code_block_keeps_only_a_language_class():
    assert 'class="language-py"' in str(render_markdown("```py\nx\n```"))
    # an info string cannot smuggle other attributes or classes in
    html = str(render_markdown('```x" onclick="alert(1)\ny\n```'))
    assert "onclick" not in html.split(">", 2)[1] and "<pre><code" in html
