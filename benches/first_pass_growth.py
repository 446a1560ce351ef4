#!/usr/bin/env python3
"""The first offline pass at N and at N/2 files, in CPU per file (issue 24.3: no worse than linear).

usage: python3 benches/first_pass_growth.py [--bin-dir DIR] [--work DIR] [--files N] [--pairs N]

Vdirs of N and N/2 one-card files (benches/gen_vcf.py, default 100,000 and 50,000, kept in
WORK and reused while the generator is unchanged, as benches/e2e.py keeps them). PAIRS
alternated pairs (default 9; the order flips each pair) of a first `contactsyncd --config
c.toml sync --once --offline --json`, each from a fresh state with a Telegram session seeded
by the example server, so that the pass plans and queues for an account; each child timed by
os.wait4 (user + system CPU of that process alone). Prints every run, then the CPU per file
at N over the CPU per file at N/2, pair by pair (min/median/max), and the same for the
fastest run of each size: load from elsewhere only adds CPU time, so each size's fastest run
is its least disturbed one. The budget is the median ≤ 1.0 (linear).
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import e2e  # noqa: E402  (the same inputs, state and measurement as the end-to-end bench)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(e2e.REPO, "target", "release"))
    ap.add_argument("--work", default="/tmp/contactsyncd-bench")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=9)
    args = ap.parse_args()
    binary = os.path.abspath(os.path.join(args.bin_dir, "contactsyncd"))
    server_bin = os.path.abspath(os.path.join(args.bin_dir, "examples", "telegram-test-server"))
    sizes = (args.files, args.files // 2)
    configs = {}
    for count in sizes:
        parent = os.path.join(os.path.abspath(args.work), f"vdir-{count // 1000}k")
        e2e.generated(os.path.join(parent, "book"), count, vdir=True)
        configs[count] = (parent, os.path.join(parent, "c.toml"))
    print(f"machine: {e2e.machine()}; load {os.getloadavg()[0]:.1f}")
    cpu = {count: [] for count in sizes}
    for pair in range(args.pairs):
        for count in sizes if pair % 2 == 0 else sizes[::-1]:
            parent, config = configs[count]
            e2e.seed_session(server_bin, e2e.fresh_state(parent))
            code, wall, peak, _ = e2e.measure([binary, "--config", config, "sync", "--once", "--offline", "--json"])
            if code != 0:
                sys.exit(f"exit {code} at {count} files")
            cpu[count].append(e2e.LAST_CPU[0])
            print(f"pair {pair + 1}, {count:,} files: CPU {e2e.LAST_CPU[0]:.2f} s, wall {wall:.2f} s,"
                  f" peak {peak:.0f} MB, load {os.getloadavg()[0]:.1f}", flush=True)
    big, half = sizes
    per_file = lambda b, h: (b / big) / (h / half)  # noqa: E731
    ratios = sorted(per_file(b, h) for b, h in zip(cpu[big], cpu[half]))
    fastest = per_file(min(cpu[big]), min(cpu[half]))
    median = statistics.median(ratios)
    print(f"CPU per file at {big:,} / at {half:,}, {args.pairs} alternated pairs (min/median/max):"
          f" {ratios[0]:.2f}/{median:.2f}/{ratios[-1]:.2f}; of the fastest runs {fastest:.2f}"
          f" ({min(cpu[big]):.2f} s against {min(cpu[half]):.2f} s); load {os.getloadavg()[0]:.1f}")
    print("budget ≤ 1.0 at the median:", "ok" if median <= 1.0 else "NOT MET")


if __name__ == "__main__":
    main()
