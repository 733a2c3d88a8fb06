#!/usr/bin/env python3
"""Every relative link between the docs resolves.

For every tracked Markdown file (`git ls-files '*.md'`, outside node_modules,
.aws-sam and target), each inline link or image `[text](path)`,
`[text](path#anchor)` or `[text](#anchor)` outside code must name a file or
directory that exists, and an anchor must be the GitHub slug of a heading in
the target file (lower-cased, punctuation other than '-' and '_' dropped,
spaces made '-', a repeated heading's slug suffixed -1, -2, ...). Links with a
scheme (http:, https:, mailto:, ...) are not checked.

Prints each broken link as `file:line: link` and exits 1 if there is any;
otherwise prints one line with the count and exits 0. Python 3 standard
library only.
"""
import os
import re
import subprocess
import sys

SKIP_DIRS = {"node_modules", ".aws-sam", "target"}
# [text](dest) or ![alt](dest), dest up to the first space or ')'; an optional
# "title" after it. Text may hold one level of nested brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def tracked_markdown(root):
    out = subprocess.run(["git", "ls-files", "-z", "*.md"], cwd=root, check=True, capture_output=True).stdout
    files = [f for f in out.decode().split("\0") if f]
    return sorted(f for f in files if not SKIP_DIRS.intersection(f.split("/")[:-1]))


def prose_lines(text):
    """(line number, line) for each line outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield n, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen, found = {}, set()
        with open(path, encoding="utf-8") as f:
            for _, line in prose_lines(f.read()):
                m = HEADING.match(line)
                if not m:
                    continue
                base = slug(m.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
        _anchors[path] = found
    return _anchors[path]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], check=True, capture_output=True, text=True).stdout.strip()
    os.chdir(root)
    files = tracked_markdown(root)
    broken, checked = [], 0
    for md in files:
        with open(md, encoding="utf-8") as f:
            text = f.read()
        for n, line in prose_lines(text):
            for m in LINK.finditer(INLINE_CODE.sub(lambda c: " " * len(c.group(0)), line)):
                dest = m.group(1)
                if not dest or SCHEME.match(dest):
                    continue
                checked += 1
                path, _, anchor = dest.partition("#")
                target = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
                ok = os.path.exists(target)
                if ok and anchor:
                    ok = os.path.isfile(target) and target.endswith(".md") and anchor in anchors(target)
                if not ok:
                    broken.append(f"{md}:{n}: {dest}")
    for b in broken:
        print(b)
    if broken:
        print(f"tests/docs/links.py: {len(broken)} broken of {checked} relative links in {len(files)} Markdown files", file=sys.stderr)
        return 1
    print(f"tests/docs/links.py: all {checked} relative links in {len(files)} Markdown files resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
