#!/usr/bin/env python3
"""Fails when two files of src/ import each other, directly or around a
circle. Reads each file's non-test code for paths that name another file's
module: `crate::a::b`, `super::x`, `self::x` and child modules by name
(`use pool::Pool`). A path that ends at an item resolves to the file that
defines it (the longest prefix that is a file's module). Test modules, the
fuzzing invariants and test-only helpers are left out: tests may reach
anywhere.

Usage: python3 scripts/import-cycles.py [src]
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "src"
TEST_ONLY = {("fuzzing",), ("upstream", "test_upstream")}

files = {}
for directory, _, names in os.walk(ROOT):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(directory, name)
            parts = tuple(os.path.relpath(path, ROOT)[:-3].split(os.sep))
            if parts == ("main",):
                continue  # the binary: a crate of its own
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            files[parts] = path


def non_test_code(text):
    """The text before the first `#[cfg(test)]` module, comments removed."""
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s*)?mod \w+", text)
    text = text[: cut.start()] if cut else text
    return re.sub(r"//[^\n]*", "", text)


def resolve(path):
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return None


PATH = re.compile(r"(?<![\w:])(crate|super|self|\w+)((?:::\w+)*)(?:::\{([^;]*?)\})?", re.S)

edges = {module: set() for module in files}
for module, path in files.items():
    if module in TEST_ONLY:
        continue
    # `super` from a file is its parent module; a mod.rs file is its
    # directory's module, so the same rule holds for it.
    for match in PATH.finditer(non_test_code(open(path, encoding="utf-8").read())):
        head, rest, group = match.group(1), match.group(2), match.group(3)
        if not rest and not group:
            continue
        segments = [s for s in rest.strip(":").split("::") if s]
        if head == "crate":
            base = []
        elif head == "super":
            base = list(module[:-1])
            while segments and segments[0] == "super":
                base, segments = base[:-1], segments[1:]
        elif head == "self":
            base = list(module)
        elif module + (head,) in files:
            base, segments = list(module), [head] + segments
        else:
            continue
        targets = [base + segments]
        if group:
            targets = [
                base + segments + [item.strip().split("::")[0]]
                for item in group.split(",")
                if item.strip() and item.strip() != "self"
            ] + [base + segments]
        for target in targets:
            found = resolve(target)
            if found and found != module and found not in TEST_ONLY:
                edges[module].add(found)

# Strongly connected components (Tarjan), iteratively.
index, low, on_stack, stack, components = {}, {}, set(), [], []
counter = 0
for start in edges:
    if start in index:
        continue
    work = [(start, iter(sorted(edges[start])))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
        node, children = work[-1]
        child = next(children, None)
        if child is not None:
            if child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
            continue
        work.pop()
        if work:
            low[work[-1][0]] = min(low[work[-1][0]], low[node])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

name = lambda module: "::".join(module) or "crate"
circles = [c for c in components if len(c) > 1]
for circle in circles:
    print("import circle:", ", ".join(sorted(name(m) for m in circle)))
    for a in sorted(circle):
        for b in sorted(edges[a]):
            if b in circle:
                print(f"    {files[a]} -> {name(b)}")
edge_count = sum(len(targets) for targets in edges.values())
print(f"{len(files)} files, {edge_count} imports between them, {len(circles)} circles")
sys.exit(1 if circles else 0)
