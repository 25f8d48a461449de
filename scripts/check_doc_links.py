#!/usr/bin/env python3
"""Checks the relative links of the Markdown docs: every linked file exists, and every
`#anchor` names a heading of its target file by GitHub's rules (lower-case, spaces to `-`,
punctuation other than `-` and `_` dropped, so backticks go; a repeated heading gets `-1`,
`-2`, ...). Links to other sites are not checked. Nothing calls it; run it after editing docs.

Usage: check_doc_links.py [FILE.md ...]   (default: README.md, docs/*.md, BENCHMARKS.md;
                                           exits 1 listing each broken link)
"""
import glob
import os
import re
import sys

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def prose_lines(path):
    """The lines outside fenced code blocks, with their numbers."""
    inside = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if FENCE.match(line):
                inside = not inside
                continue
            if not inside:
                yield number, line.rstrip("\n")


def slug(heading):
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen = {}
        found = set()
        for _, line in prose_lines(path):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        cache[path] = found
    return cache[path]


def check(path):
    problems = []
    for number, line in prose_lines(path):
        # Inline code can hold `](` (a JSON path, say); a link's text may be code: keep `[]`.
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = f"{path}:{number}: {target}"
            if not os.path.exists(dest):
                problems.append(f"{where}: no such file {dest}")
                continue
            if anchor:
                if not dest.endswith(".md") or os.path.isdir(dest):
                    problems.append(f"{where}: an anchor into {dest}, which is not a Markdown file")
                elif anchor not in anchors(dest):
                    problems.append(f"{where}: no heading #{anchor} in {dest}")
    return problems


def main():
    files = sys.argv[1:] or ["README.md", *sorted(glob.glob("docs/*.md")), "BENCHMARKS.md"]
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    print(f"{len(files)} files, {len(problems)} broken links")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
