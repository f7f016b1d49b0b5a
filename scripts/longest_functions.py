#!/usr/bin/env python3
"""Lists the longest function bodies in the production sources (src/, apps/), longest first.

Usage: scripts/longest_functions.py [N]   (default 20). A rough brace matcher, not a parser: it
counts the lines from a function's opening line to its closing brace at namespace level.
"""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONTROL = re.compile(r"\s*(if|for|while|switch|namespace|struct|class|else|do|enum)\b")
OPENS_BODY = re.compile(r"\)\s*(const)?\s*(noexcept)?\s*(->.*)?\{\s*$")


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    depth, start, start_depth, signature = 0, None, 0, ""
    for i, line in enumerate(lines):
        code = re.sub(r'"(\\.|[^"\\])*"', '""', re.sub(r"//.*", "", line))
        opened, closed = code.count("{"), code.count("}")
        if (start is None and depth <= 1 and opened > closed and OPENS_BODY.search(code)
                and not CONTROL.match(code) and "namespace" not in code):
            start, start_depth, signature = i, depth, line.strip()
        depth += opened - closed
        if start is not None and depth <= start_depth:
            yield i - start + 1, start + 1, signature
            start = None


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    found = []
    for pattern in ("src/**/*.cpp", "apps/**/*.cpp"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            for length, line, signature in functions(path):
                found.append((length, os.path.relpath(path, ROOT), line, signature))
    for length, path, line, signature in sorted(found, reverse=True)[:count]:
        print(f"{length:5d}  {path}:{line}  {signature[:70]}")


if __name__ == "__main__":
    main()
