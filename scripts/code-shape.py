#!/usr/bin/env python3
"""The shape of the code, per crate: the longest file and function, and the module import graph's
cycles (issue 18's measures). Usage: python3 scripts/code-shape.py [REPO_DIR]

A function's length is from its `fn` line to the closing brace at the same indentation. Module
graph: one node per source file (`a/b.rs` or `a/b/mod.rs` is `a::b`; lib.rs/main.rs the root);
an edge A -> B for every `crate::`/`super::`/`self::`/child path in A's code (a `use` or an inline
path; comments, strings and a trailing `#[cfg(test)] mod` skipped; `pub use` re-exports excluded)
that names module B. A cycle
is a strongly connected component of more than one module.
"""
import os, re, sys, collections

def longest_fn(lines):
    best = (0, '')
    for i, l in enumerate(lines):
        m = re.match(r'^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)', l)
        if not m or l.rstrip().endswith(';'):
            continue
        ind = m.group(1)
        for j in range(i + 1, len(lines)):
            if lines[j].rstrip() == ind + '}':
                if j - i + 1 > best[0]:
                    best = (j - i + 1, m.group(2))
                break
    return best

def modpath(rel):
    parts = rel[:-3].split('/')
    if parts[-1] == 'mod':
        parts = parts[:-1]
    if parts in (['lib'], ['main']):
        return ''
    if parts and parts[0] == 'bin':
        return None
    return '::'.join(parts)

def strip(t):
    t = re.sub(r'/\*.*?\*/', '', t, flags=re.S)
    t = re.sub(r'//[^\n]*', '', t)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', t)

def paths(text):
    out = []
    for m in re.finditer(r'(?<![\w:])((?:\w+::)+)(\{|\w+)?', text):
        prefix = [s for s in m.group(1).split('::') if s]
        if m.group(2) and m.group(2) != '{':
            out.append(prefix + [m.group(2)])
        elif m.group(2):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {'{': 1, '}': -1}.get(text[i], 0)
                i += 1
            items, depth, cur = [], 0, ''
            for c in text[m.end():i - 1]:
                if c == ',' and depth == 0:
                    items.append(cur); cur = ''; continue
                depth += {'{': 1, '}': -1}.get(c, 0); cur += c
            items.append(cur)
            for it in items:
                head = re.match(r'[\w:]+', it.strip())
                if head:
                    segs = [s for s in head.group(0).split('::') if s]
                    out.append(prefix + ([] if segs == ['self'] else segs))
        else:
            out.append(prefix)
    return out

def inline_mods(text):
    """The text split by inline `mod NAME { ... }` blocks: (inline module path, its own text)."""
    out, m = [], re.search(r'\bmod\s+(\w+)\s*\{', text)
    if not m:
        return [([], text)]
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += {'{': 1, '}': -1}.get(text[i], 0)
        i += 1
    out.append(([], text[:m.start()]))
    out += [([m.group(1)] + inner, t) for inner, t in inline_mods(text[m.end():i - 1])]
    out += inline_mods(text[i:])
    return out

def cycles(src, entry):
    files = {}
    for dp, _, fs in os.walk(src):
        for f in fs:
            if f.endswith('.rs'):
                rel = os.path.relpath(os.path.join(dp, f), src)
                m = modpath(rel)
                if m is not None and not (m == '' and rel != entry):
                    files[m] = os.path.join(dp, f)
    mods = set(files)
    def resolve(cur, segs):
        base = cur.split('::') if cur else []
        if segs[0] == 'crate':
            base, segs = [], segs[1:]
        elif segs[0] == 'self':
            segs = segs[1:]
        elif segs[0] == 'super':
            while segs and segs[0] == 'super':
                base, segs = base[:-1], segs[1:]
        elif '::'.join(base + [segs[0]]) not in mods:
            return None
        best = ''
        for i in range(1, len(base) + 1):
            if '::'.join(base[:i]) in mods:
                best = '::'.join(base[:i])
        for i in range(1, len(segs) + 1):
            if '::'.join(base + segs[:i]) in mods:
                best = '::'.join(base + segs[:i])
        return best
    edges = collections.defaultdict(set)
    for cur, f in files.items():
        body = re.sub(r'pub(?:\([^)]*\))?\s+use\s+[^;]+;', '', strip(open(f).read()))
        # Inline modules (`mod tests { use super::*; }`): a path inside one is resolved from the
        # inline module, so its `super` is the file's own module, not the file's parent.
        for inner, text in inline_mods(body):
            here = '::'.join([s for s in cur.split('::') if s] + inner)
            for p in paths(text):
                if p:
                    t = resolve(here, p)
                    if t is not None and t != cur:
                        edges[cur].add(t)
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w or '(root)')
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))
    for v in sorted(mods):
        if v not in index:
            visit(v)
    return len(mods), sccs

def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else '.'
    members = re.findall(r'"([^"]+)"', re.search(r'members\s*=\s*\[([^\]]*)\]', open(os.path.join(repo, 'Cargo.toml')).read()).group(1))
    print(f'{"crate":10} {"longest file":44} {"longest function":52} cycles')
    for c in members:
        src = os.path.join(repo, c, 'src')
        big_file, big_fn = (0, ''), (0, '', '')
        for dp, _, fs in os.walk(src):
            for f in fs:
                if f.endswith('.rs'):
                    p = os.path.join(dp, f)
                    lines = open(p).read().split('\n')
                    rel = os.path.relpath(p, repo)
                    big_file = max(big_file, (len(lines) - 1, rel))
                    n, name = longest_fn(lines)
                    if n > big_fn[0]:
                        big_fn = (n, name, rel)
        entry = 'lib.rs' if os.path.exists(os.path.join(src, 'lib.rs')) else 'main.rs'
        nmods, sccs = cycles(src, entry)
        cyc = '0' if not sccs else '; '.join('{' + ', '.join(s) + '}' for s in sccs)
        print(f'{c:10} {big_file[1] + " " + str(big_file[0]):44} {big_fn[2] + " " + big_fn[1] + " " + str(big_fn[0]):52} {cyc}')

main()
