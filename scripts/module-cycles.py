#!/usr/bin/env python3
"""chatd's module import graph, and any cycles in it.

    python3 scripts/module-cycles.py [chatd/src]

For every top-level module of the crate (a file or a directory under chatd/src, lib.rs and
main.rs aside), collects the other top-level modules it names as `crate::NAME` anywhere in its
files (`use` lines and inline paths, test code included, comments excluded), prints the graph,
then every cycle (a strongly connected component of more than one module) with the places that
make its edges. Exit status 0 without cycles, 1 with.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "chatd/src"
mods = {}
for e in sorted(os.listdir(root)):
    p = os.path.join(root, e)
    if e in ("lib.rs", "main.rs"):
        continue
    if e.endswith(".rs"):
        mods[e[:-3]] = [p]
    elif os.path.isdir(p):
        mods[e] = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith(".rs")
        )

path = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")
graph = {m: set() for m in mods}
sites = {}
for m, files in mods.items():
    for f in files:
        for n, line in enumerate(open(f), 1):
            code = line.split("//", 1)[0]
            for g in path.finditer(code):
                names = (
                    [g.group(2)]
                    if g.group(2)
                    else [s.strip().split("::")[0] for s in g.group(1).split(",")]
                )
                for to in names:
                    if to in mods and to != m:
                        graph[m].add(to)
                        sites.setdefault((m, to), []).append(f"{f}:{n}")

for m in sorted(graph):
    print(f"{m:16} -> {', '.join(sorted(graph[m])) or '-'}")

# Tarjan's strongly connected components.
index, low, stack, on_stack, sccs = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            scc.append(w)
            if w == v:
                break
        sccs.append(sorted(scc))


for v in sorted(graph):
    if v not in index:
        visit(v)
cycles = [c for c in sccs if len(c) > 1]
for c in cycles:
    print("cycle among:", ", ".join(c))
    for a in c:
        for b in sorted(graph[a] & set(c)):
            print(f"  {a} -> {b}: {', '.join(sites[(a, b)])}")
if not cycles:
    print(f"no cycles among {len(graph)} modules")
sys.exit(1 if cycles else 0)
