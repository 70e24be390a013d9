"""Annotator edits: the small, mechanical corrections a person makes to the best candidate in the edit box.

A careful annotator who ranks four answers that all miss "answer in lowercase" does not stop at ranking:
they fix the best one (lower-case it, drop the commas, add the closing phrase) and submit the fix as the
edited response, which becomes an SFT row of the labels (`source: "edited"`). The simulated
annotators (`rlhf simulate --edit`) do the same with the functions here: one fixer per constraint type
that a person could apply without rewriting the answer, applied in a fixed order (cut, remove, add, wrap,
change case), and the edit is kept only when the result meets every constraint:

    edit_response([{"type": "lowercase", "params": {}}], "Plan The Route.")   -> "plan the route."
    edit_response([{"type": "min_words", "params": {"n": 60}}], "Too short.") -> None  (needs real writing)

Types that need new content (min_words, and bullets or paragraphs with too few sentences to split) have
no fixer: the function returns None and the annotator submits the ranking alone.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from rlhf.constraints import WORD_RE, all_met, count_words, validate_constraint, word_pattern

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The text's sentences in order, on one line each (line breaks and bullets flattened)."""
    flat = " ".join(re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", line).strip() for line in text.splitlines())
    return [s.strip() for s in SENTENCE_END.split(flat) if WORD_RE.search(s)]


def full_stop(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text.rstrip(",;:-") + "."


def fix_max_words(text: str, n: int) -> str:
    kept: list[str] = []
    for sentence in sentences(text):
        if count_words(" ".join(kept + [sentence])) >= n:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    words = text.split()
    while words and count_words(" ".join(words)) >= n:
        words.pop()
    return full_stop(" ".join(words))


def fix_max_sentences(text: str, n: int) -> str:
    return " ".join(sentences(text)[:n])


def fix_max_lines(text: str, n: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:n]) if len(lines) > n else text


def fix_exclude_word(text: str, word: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", word_pattern(word).sub("", text)).replace(" .", ".").replace(" ,", ",")


def fix_no_commas(text: str) -> str:
    return text.replace(",", "").replace("，", "")


def groups(parts: list[str], n: int) -> list[str]:
    """The parts dealt into n runs in order, the first runs one longer when they do not divide evenly."""
    size, extra = divmod(len(parts), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(" ".join(parts[start:end]))
        start = end
    return out


def fix_bullet_count(text: str, n: int) -> str:
    parts = sentences(text)
    return "\n".join(f"- {g}" for g in groups(parts, n)) if len(parts) >= n else text


def fix_paragraph_count(text: str, n: int) -> str:
    parts = sentences(text)
    return "\n\n".join(groups(parts, n)) if len(parts) >= n else text


def fix_start_word(text: str, word: str) -> str:
    body = text.lstrip()
    return f"{word.capitalize()}! {body}" if body else word.capitalize()


def fix_title(text: str, title: str) -> str:
    return f"<<{title}>>\n\n{text.strip()}"


def fix_include_keywords(text: str, keywords: list) -> str:
    missing = [k for k in keywords if not word_pattern(k).search(text)]
    if not missing:
        return text
    return f"{full_stop(text)} Key words: {' and '.join(missing)}."


def fix_keyword_frequency(text: str, word: str, n: int) -> str:
    have = len(word_pattern(word).findall(text))
    return text if have >= n else f"{full_stop(text)} " + " ".join([f"Remember the {word}."] * (n - have))


def fix_highlight_count(text: str, n: int) -> str:
    parts = sentences(text)
    if len(parts) < n:
        return text
    return " ".join(f"*{s}*" if i < n else s for i, s in enumerate(parts))


def fix_placeholder_count(text: str, n: int) -> str:
    names = ["name", "date", "place", "time", "address"]
    return f"{full_stop(text)} " + " ".join(f"[{names[i % len(names)]}]" for i in range(n))


def fix_postscript(text: str) -> str:
    return f"{text.rstrip()}\n\nP.S. I hope this helps."


def fix_end_phrase(text: str, phrase: str) -> str:
    return f"{full_stop(text)} {phrase}"


def fix_quotation(text: str) -> str:
    return '"' + text.strip().replace('"', "'") + '"'


def fix_json_format(text: str) -> str:
    return json.dumps({"answer": text.strip()}, ensure_ascii=False)


def fix_lowercase(text: str) -> str:
    return text.lower()


def fix_uppercase(text: str) -> str:
    return text.upper()


# The order edits are made in: cut first, then remove, then restructure, then add, then wrap, then case.
FIXERS: dict[str, Callable[..., str]] = {
    "max_sentences": fix_max_sentences,
    "max_words": fix_max_words,
    "max_lines": fix_max_lines,
    "exclude_word": fix_exclude_word,
    "no_commas": fix_no_commas,
    "bullet_count": fix_bullet_count,
    "paragraph_count": fix_paragraph_count,
    "highlight_count": fix_highlight_count,
    "include_keywords": fix_include_keywords,
    "keyword_frequency": fix_keyword_frequency,
    "placeholder_count": fix_placeholder_count,
    "start_word": fix_start_word,
    "title": fix_title,
    "postscript": fix_postscript,
    "end_phrase": fix_end_phrase,
    "quotation": fix_quotation,
    "json_format": fix_json_format,
    "lowercase": fix_lowercase,
    "uppercase": fix_uppercase,
}


def edit_response(constraints: list[dict], text: str, title: str = "My answer") -> str | None:
    """The text with each unmet constraint fixed, or None when it already meets them all or cannot be fixed.

    Fixers run in FIXERS order on the constraints the text misses; a fix that would break a constraint the
    text met (a cut that drops a keyword) shows up in the final check, which every edit must pass.
    `title` is the text of a <<title>> when one must be added (the loop passes the prompt's topic).
    """
    if not text.strip() or all_met(constraints, text):
        return None
    by_type = {c["type"]: validate_constraint(c)[1] for c in constraints}
    edited = text.strip()
    for ctype, fixer in FIXERS.items():
        if ctype in by_type and not all_met([c for c in constraints if c["type"] == ctype], edited):
            params = dict(by_type[ctype])
            if ctype == "title":
                params["title"] = title
            edited = fixer(edited, **params)
    return edited if edited.strip() and all_met(constraints, edited) else None
