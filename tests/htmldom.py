"""The DOM headless Chromium builds from a page (``--dump-dom``), as a small tree to query (a test
helper for ``check --html``; Chromium is Debian's ``chromium``, installed by setup.sh)."""

import os
import sys
from html.parser import HTMLParser

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOID = {"br", "meta", "img", "input", "hr", "link", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, dict(attrs), parent, [], []

    @property
    def text(self):
        return "".join(self.texts) + "".join(c.text for c in self.children)

    def find(self, tag=None, **attrs):
        """Every descendant with ``tag`` and these attribute values (``class_`` matches a class)."""
        out = []
        for c in self.children:
            ok = tag in (None, c.tag) and all(
                (k == "class_" and v in c.attrs.get("class", "").split()) or c.attrs.get(k.replace("_", "-")) == v
                for k, v in attrs.items())
            if ok:
                out.append(c)
            out += c.find(tag, **attrs)
        return out


class Tree(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.root = self.node = Node("#root", {})
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_endtag(self, tag):
        node = self.node
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.node = node.parent

    def handle_data(self, data):
        self.node.texts.append(data)


def dump_dom(html):
    """The DOM Chromium built from the page (no network: it runs behind a proxy nobody serves)."""
    sys.path.insert(0, os.path.join(TOP, "docs"))
    try:
        import report_screenshot
    finally:
        sys.path.pop(0)
    return report_screenshot.browse("file://" + str(html), "--dump-dom")


def dom(html):
    """The root :class:`Node` of the DOM Chromium built from the page file ``html``."""
    return Tree(dump_dom(html)).root
