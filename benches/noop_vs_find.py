#!/usr/bin/env python3
"""The no-op pass against `find -printf '%s %T@ %i'` over the same vdir (issue 24.4), in CPU.

usage: python3 benches/noop_vs_find.py [--bin-dir DIR] [--work DIR] [--files N] [--pairs N]
                                       [--keep-state]

A vdir of N one-card files (benches/gen_vcf.py, default 100,000, kept in WORK and reused
while the generator is unchanged), a fresh state with a Telegram session seeded by the
example server, one first `sync --once --offline` (its CPU and wall time are printed), then
PAIRS alternated pairs (default 15) of the no-op `contactsyncd --config c.toml sync --once
--offline --json` and `find BOOK -printf '%s %T@ %i\\n'`, each child timed by os.wait4
(user + system CPU of that process alone: on a shared machine the wall time varies with the
load, CPU time much less). Prints each pair (with the pass's files_read: a pass that read or
planned shows as an outlier) and the min/median/max ratio; the budget is the median ≤ 1.2×.
--keep-state reuses the state of an earlier run (no first pass).
"""
import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import e2e  # noqa: E402  (the same inputs, state and measurement as the end-to-end bench)


def cpu_of(argv, stdout=subprocess.DEVNULL):
    code, wall, peak, out = e2e.measure(argv, stdout=stdout)
    if code != 0:
        sys.exit(f"exit {code}: {' '.join(argv)}")
    return e2e.LAST_CPU[0], wall, peak, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    e2e.bench_arguments(ap, files=100_000, pairs=15)
    ap.add_argument("--keep-state", action="store_true",
                    help="reuse the state a previous run left (no first pass)")
    args = ap.parse_args()
    binary, server_bin = e2e.binaries(args.bin_dir)
    parent = os.path.join(os.path.abspath(args.work), f"vdir-{args.files // 1000}k")
    book = e2e.generated(os.path.join(parent, "book"), args.files, vdir=True)
    config = os.path.join(parent, "c.toml")
    sync = [binary, "--config", config, "sync", "--once", "--offline", "--json"]
    print(f"machine: {e2e.machine()}; load {os.getloadavg()[0]:.1f}")
    if not (args.keep_state and os.path.exists(os.path.join(parent, "state"))):
        state = e2e.fresh_state(parent)
        e2e.seed_session(server_bin, state)
        cpu, wall, peak, _ = cpu_of(sync)
        print(f"first pass: CPU {cpu:.2f} s, wall {wall:.2f} s, peak {peak:.0f} MB")
    find = ["find", book, "-printf", r"%s %T@ %i\n"]
    ratios, noops, finds = [], [], []
    for i in range(args.pairs):
        noop, noop_wall, peak, out = cpu_of(sync, stdout="capture")
        m = re.search(r'"files_read":(\d+),"files_parsed":(\d+)', out or "")
        plain, _, _, _ = cpu_of(find)
        ratios.append(noop / plain)
        noops.append(noop)
        finds.append(plain)
        read = f", files read {m[1]}" if m else ""
        print(f"pair {i + 1}: no-op {noop * 1000:.0f} ms CPU ({noop_wall * 1000:.0f} ms wall, {peak:.0f} MB{read}),"
              f" find {plain * 1000:.0f} ms, {noop / plain:.2f}×", flush=True)

    def mmm(values, fmt):
        values = sorted(values)
        return "/".join(fmt(v) for v in (values[0], values[len(values) // 2], values[-1]))

    ms = lambda v: f"{v * 1000:.0f}"  # noqa: E731
    print(f"no-op / find, user + system CPU, {args.pairs} alternated pairs (min/median/max):"
          f" {mmm(ratios, lambda v: f'{v:.2f}')}×; no-op {mmm(noops, ms)} ms, find {mmm(finds, ms)} ms;"
          f" load {os.getloadavg()[0]:.1f}")
    median = sorted(ratios)[len(ratios) // 2]
    print("budget ≤ 1.2×:", "ok" if median <= 1.2 else "NOT MET")


if __name__ == "__main__":
    main()
