#!/usr/bin/env python3
"""Lists the longest function bodies in the production sources (src/, apps/), longest first.

Usage: scripts/longest_functions.py [N]   (default 20). A rough brace matcher, not a parser: it
counts the lines from a function's opening line to its closing brace, for functions at namespace
or class level (lambdas count toward the function they are in).
"""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONTROL = re.compile(r"\s*(if|for|while|switch|namespace|struct|class|else|do|enum)\b")
OPENS_BODY = re.compile(r"\)\s*(const)?\s*(noexcept)?\s*(override)?\s*(->.*)?\{\s*$")
CONTAINER = re.compile(r'^\s*(namespace\b|(template\s*<.*>\s*)?(class|struct)\b[^;(]*\{|extern "C")')


def functions(path):
    """Yields (length, line, signature) for each function body."""
    lines = open(path, encoding="utf-8").read().split("\n")
    # The open blocks: True for a container (namespace, class, struct), False otherwise.
    blocks, start, start_depth, signature = [], None, 0, ""
    for i, line in enumerate(lines):
        code = re.sub(r"//.*", "", line)
        code = re.sub(r"'(\\.|[^'\\])'", "''", re.sub(r'"(\\.|[^"\\])*"', '""', code))
        if (start is None and all(blocks) and code.count("{") > code.count("}")
                and OPENS_BODY.search(code) and not CONTROL.match(code)):
            start, start_depth, signature = i, len(blocks), line.strip()
        for ch in code:
            if ch == "{":
                blocks.append(start is None and CONTAINER.search(code) is not None)
            elif ch == "}" and blocks:
                blocks.pop()
        if start is not None and len(blocks) <= start_depth:
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
