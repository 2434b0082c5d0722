#!/usr/bin/env python3
"""Fails (exit 1) when the module graph of gateway/ and plugins/ has a cycle, or breaks gateway/README.md's floors.

A module is a file name without .c/.h; module A depends on module B when A.c or A.h has a line
`#include "B.h"` (B other than A). Every cycle found is printed as `a -> b -> ... -> a`, one per strongly connected
component, with the members of that component. When gateway/README.md has its table of floors
(`| floor | name | modules |`), every module must be in it once and include only modules of its own floor or below;
each include that goes up is printed. With --graph the whole graph is printed, one module a line.
Python 3 standard library only.  Usage: tests/arch/cycles.py [--graph] [TOP]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)\.h"', re.M)
FLOOR = re.compile(r'^\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|\s*$', re.M)


def graph(top):
    deps = {}
    for folder in ("gateway", "plugins"):
        d = os.path.join(top, folder)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            base, ext = os.path.splitext(name)
            if ext not in (".c", ".h"):
                continue
            with open(os.path.join(d, name), encoding="utf-8") as f:
                text = f.read()
            edges = deps.setdefault(base, set())
            edges.update(m for m in INCLUDE.findall(text) if m != base)
    for targets in list(deps.values()):
        for t in targets:
            deps.setdefault(t, set())
    return deps


def components(deps):
    """Tarjan's strongly connected components, iterative; returns those with more than one module."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(deps):
        if root in index:
            continue
        work = [(root, iter(sorted(deps[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(deps[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def cycle_in(deps, comp):
    """One shortest cycle through the first module of a component (breadth-first inside it)."""
    members, start = set(comp), comp[0]
    prev, queue = {start: None}, [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(deps[node]):
            if nxt == start:
                path = [node]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if nxt in members and nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return comp


def floors(top):
    """module -> floor number from gateway/README.md's table, and the modules named more than once"""
    path = os.path.join(top, "gateway", "README.md")
    if not os.path.exists(path):
        return {}, []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out, twice = {}, []
    for number, modules in FLOOR.findall(text):
        for m in modules.split():
            if m in out:
                twice.append(m)
            out[m] = int(number)
    return out, twice


def layer_errors(deps, floor, twice):
    if not floor:
        return []
    errors = ["gateway/README.md names %s twice" % m for m in sorted(set(twice))]
    errors += ["module %s is on no floor of gateway/README.md (add it to the table)" % m for m in sorted(deps) if m not in floor]
    errors += ["gateway/README.md names %s, which does not exist" % m for m in sorted(floor) if m not in deps]
    for m in sorted(deps):
        for d in sorted(deps[m]):
            if m in floor and d in floor and floor[d] > floor[m]:
                errors.append("%s (floor %d) includes %s.h (floor %d): up a floor" % (m, floor[m], d, floor[d]))
    return errors


def main(argv):
    show = "--graph" in argv
    args = [a for a in argv if a != "--graph"]
    top = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    deps = graph(top)
    if show:
        for m in sorted(deps):
            print("%s: %s" % (m, " ".join(sorted(deps[m]))))
    comps = components(deps)
    for comp in comps:
        print("include cycle: %s" % " -> ".join(cycle_in(deps, comp)))
        print("  %d modules in it: %s" % (len(comp), " ".join(comp)))
    floor, twice = floors(top)
    errors = layer_errors(deps, floor, twice)
    for e in errors:
        print(e)
    if comps or errors:
        return 1
    print("no include cycle (%d modules)%s" % (len(deps), ", none includes a floor above its own" if floor else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
