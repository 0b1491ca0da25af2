#!/usr/bin/env python3
"""usage: order.py PCS_DIR OUT INSTRUMENTED[,…]

The functions the instrumented binaries ran (the mcount shim's pcs.* files, each address
resolved to the function that holds it) -> OUT, the symbol ordering file for the linker.

The instrumented build uses the release profile, so its symbol names (hashes included) are the
release build's. The kernel maps a binary's code 64 KiB at a time, so what a process keeps
resident is every 64 KiB run that holds a function it ran: each kind of process should find
its functions side by side, not interleaved with those only another kind runs. Each function
gets the set of roles that ran it (API or worker or ..., on SQLite or PostgreSQL), and the
sets are laid out in reflected Gray code order over the roles by priority: the first two
roles' functions each lie in one run, the third's in at most two, and so on."""
import bisect
import collections
import glob
import os
import re
import subprocess
import sys

PC_LINE = re.compile(r'^\d+ [0-9a-f]+$')

# Highest priority first: the layouts `make bench` measures, then the rest.
ROLES = ['worker-sqlite', 'api-sqlite', 'worker-pg', 'api-pg', 'llm-sqlite', 'serve-sqlite',
         'cli']


def role(exe, argv, tag):
    if exe == 'xenios-api':
        kind = 'api'
    elif len(argv) > 1 and argv[1] == 'worker':
        kind = 'llm' if 'llm' in argv else 'worker'
    elif len(argv) > 1 and argv[1] in ('dev', 'serve'):
        kind = 'serve'
    else:
        return 'cli'
    return f'{kind}-{tag}'


def functions(binary):
    out = subprocess.run(['nm', '--defined-only', binary], capture_output=True, text=True,
                         check=True).stdout
    syms = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in 'tTwW':
            syms.append((int(p[0], 16), p[2]))
    syms.sort()
    return syms


def functions_run(pcs_dir, instrumented):
    """name -> (set of roles that ran it, earliest position any process first ran it at)"""
    tables = {}
    roles = collections.defaultdict(set)
    first = {}
    for path in glob.glob(os.path.join(pcs_dir, 'pcs.*')):
        exe = base = None
        argv, tag, pcs = [], '', []
        with open(path) as f:
            for line in f:
                if line.startswith('# cmdline'):
                    argv = line[len('# cmdline'):].split()
                elif line.startswith('# tag'):
                    tag = line[len('# tag'):].strip()
                elif line.startswith('# map '):
                    p = line[len('# map '):].split()
                    # The mapping at file offset 0 starts at the load address (PIE).
                    if (base is None and len(p) >= 6 and int(p[2], 16) == 0
                            and os.path.basename(p[5]) in instrumented):
                        exe, base = os.path.basename(p[5]), int(p[0].split('-')[0], 16)
                elif PC_LINE.match(line):
                    seq, pc = line.split()
                    pcs.append((int(seq), int(pc, 16)))
        if exe is None:
            continue
        if exe not in tables:
            syms = functions(instrumented[exe])
            tables[exe] = ([a for a, _ in syms], syms)
        addrs, syms = tables[exe]
        r = role(exe, argv, tag)
        for seq, pc in pcs:
            i = bisect.bisect_right(addrs, pc - base) - 1
            if i >= 0:
                name = syms[i][1]
                roles[name].add(r)
                first[name] = min(first.get(name, seq), seq)
    return roles, first


def gray_rank(bits):
    """The position of `bits` in the reflected Gray code sequence."""
    rank = 0
    while bits:
        rank ^= bits
        bits >>= 1
    return rank


def main():
    pcs_dir, out = sys.argv[1], sys.argv[2]
    instrumented = {os.path.basename(b): b for b in sys.argv[3].split(',')}
    roles, first = functions_run(pcs_dir, instrumented)

    def signature(name):
        bits = 0
        for r in roles[name]:
            bits |= 1 << (len(ROLES) - 1 - ROLES.index(r)) if r in ROLES else 0
        return bits

    names = sorted(roles, key=lambda n: (gray_rank(signature(n)), first[n], n))
    with open(out, 'w') as f:
        for name in names:
            f.write(name + '\n')
    counts = collections.Counter(r for rs in roles.values() for r in rs)
    print(f'{len(names)} functions run; by role: {dict(sorted(counts.items()))}',
          file=sys.stderr)


if __name__ == '__main__':
    main()
