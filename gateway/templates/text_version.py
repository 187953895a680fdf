"""The text version of a rendered HTML email: what a mail client without HTML shows.

ESPs send an HTML part and a plain-text part; the studio previews both from one
template. Blocks become lines, ``<br>`` a line break, list items a "- " line, a link
its text followed by its address, an image its ``alt`` text; scripts, styles and the
head are dropped. Parsed with lxml (already the SOAP adapter's parser), never by regex.
"""

from __future__ import annotations

import re

from lxml import etree  # type: ignore[import-untyped]
from lxml import html as lxml_html

# Elements that start and end a line of their own.
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "main", "nav", "ol", "p", "pre", "section", "table", "tbody",
        "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
_DROPPED = frozenset({"script", "style", "head", "title", "template", "noscript"})
# HTML's own white space (a no-break space is text, kept as it is).
_SPACE = " \t\r\f"
_SPACES = re.compile(f"[{_SPACE}]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def text_version(html: str) -> str:
    """Plain text of an HTML fragment or document; empty for empty input."""
    if not html.strip():
        return ""
    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return ""
    parts: list[str] = []
    _walk(root, parts)
    lines = (_SPACES.sub(" ", line).strip(_SPACE) for line in "".join(parts).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip(_SPACE + "\n")


def _walk(element: etree._Element, parts: list[str]) -> None:
    tag = element.tag if isinstance(element.tag, str) else ""
    tag = tag.lower()
    if tag in _DROPPED or not tag:  # comments and processing instructions have no text
        _tail(element, parts)
        return
    if tag in _BLOCKS:
        parts.append("\n")
    if tag == "li":
        parts.append("\n- ")
    if tag == "br":
        parts.append("\n")
    elif tag == "img":
        alt = element.get("alt")
        if alt:
            parts.append(alt)
    if element.text:
        parts.append(element.text.replace("\n", " "))
    for child in element:
        _walk(child, parts)
    if tag == "a":
        href = (element.get("href") or "").strip()
        label = "".join(element.itertext()).strip()
        if href and not href.startswith("#") and href != label:
            parts.append(f" ({href})")
    if tag in {"td", "th"}:
        parts.append(" ")
    if tag in _BLOCKS:
        parts.append("\n")
    _tail(element, parts)


def _tail(element: etree._Element, parts: list[str]) -> None:
    if element.tail:
        parts.append(element.tail.replace("\n", " "))
