#!/usr/bin/env python3
"""The worker's folders import only from those below them.

The order is README.md's table of `worker/src` (top to bottom), so the table
and the code cannot drift apart. A file at the top of `worker/src` other than
`main.rs` and `lib.rs` (today `meters.rs`) is a leaf: every folder may use
it, and it may use no folder. Comments are not imports.

    floors.py [README.md worker/src]   check; exit 1 naming each upward import
    floors.py --self-test              show that an upward import fails
"""
import os
import re
import shutil
import sys
import tempfile

TABLE_START = "`worker/src`, from where a delivery enters"
ROW = re.compile(r"^\| `([a-z_]+)(/|\.rs)` \|")
USE = re.compile(r"\bcrate::([a-z_]+)")
GROUPED = re.compile(r"\bcrate::\{([^}]*)\}")


def floors(readme):
    """The folders of the README's table, top first."""
    lines = open(readme, encoding="utf-8").read().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if TABLE_START in line)
    except StopIteration:
        sys.exit(f"{readme}: no table of worker/src (a line with {TABLE_START!r})")
    order = []
    for line in lines[start + 1:]:
        if order and not line.startswith("|"):
            break
        m = ROW.match(line)
        if m and m.group(2) == "/":
            order.append(m.group(1))
    return order


def code(text):
    """`text` without its comments and string literals' contents."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def uses(path):
    """The top-level modules of the crate that `path` names."""
    text = code(open(path, encoding="utf-8").read())
    found = set(USE.findall(text))
    for group in GROUPED.findall(text):
        found.update(re.findall(r"(?:^|,)\s*([a-z_]+)", group))
    return found


def check(readme, src):
    order = floors(readme)
    folders = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
    leaves = {f[:-3] for f in os.listdir(src) if f.endswith(".rs") and f not in ("main.rs", "lib.rs")}
    problems = [f"folder {d}/ is not in {readme}'s table of worker/src" for d in folders if d not in order]
    problems += [f"{readme}'s table names {d}/, which does not exist" for d in order if d not in folders]
    level = {d: i for i, d in enumerate(order)}
    for d in folders:
        for root, _, files in os.walk(os.path.join(src, d)):
            for f in sorted(files):
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(root, f)
                for used in sorted(uses(path)):
                    if used in level and d in level and level[used] <= level[d] and used != d:
                        problems.append(f"{path}: {d}/ uses {used}/, which the table puts above it")
    for leaf in sorted(leaves):
        path = os.path.join(src, leaf + ".rs")
        for used in sorted(uses(path) & set(folders)):
            problems.append(f"{path}: the leaf {leaf}.rs uses {used}/")
    return problems


def self_test(readme, src):
    """An upward import must fail the check, and the tree as it is must pass."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "src")
        shutil.copytree(src, copy)
        order = floors(readme)
        bottom, top = order[-1], order[1]
        with open(os.path.join(copy, bottom, "upward.rs"), "w", encoding="utf-8") as f:
            f.write(f"// crate::{top} in a comment is not an import\nuse crate::{top};\n")
        problems = check(readme, copy)
        if not any("upward.rs" in p and f"uses {top}/" in p for p in problems):
            sys.exit(f"self-test: an import of {top}/ from {bottom}/ was not caught: {problems}")
        if any("in a comment" in p for p in problems):
            sys.exit("self-test: a comment was taken for an import")
    print(f"self-test: an import of {top}/ from {bottom}/ fails the check")


def main():
    args = sys.argv[1:]
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    readme, src = os.path.join(root, "README.md"), os.path.join(root, "worker", "src")
    if args and args[0] == "--self-test":
        self_test(readme, src)
        args = args[1:]
    if args:
        readme, src = args
    problems = check(readme, src)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"folders import only downward: {' > '.join(floors(readme))}")


if __name__ == "__main__":
    main()
