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
    e2e.bench_arguments(ap, files=100_000, pairs=9)
    args = ap.parse_args()
    binary, server_bin = e2e.binaries(args.bin_dir)
    big, half = args.files, args.files // 2
    print(f"machine: {e2e.machine()}; load {os.getloadavg()[0]:.1f}")
    runs = e2e.alternated_first_passes(binary, server_bin, os.path.abspath(args.work), (big, half), args.pairs)
    for count in (big, half):
        for pair, (_, _, code, wall, cpu, peak, _) in enumerate(runs[count], 1):
            print(f"pair {pair}, {count:,} files: CPU {cpu:.2f} s, wall {wall:.2f} s, peak {peak:.0f} MB")
            if code != 0:
                sys.exit(f"exit {code} at {count:,} files")
    ratios, fastest = e2e.growth(runs, big, half)
    median = statistics.median(ratios)
    print(f"CPU per file at {big:,} / at {half:,}, {args.pairs} alternated pairs (min/median/max):"
          f" {ratios[0]:.2f}/{median:.2f}/{ratios[-1]:.2f}; of the fastest runs {fastest:.2f}"
          f" ({min(r[4] for r in runs[big]):.2f} s against {min(r[4] for r in runs[half]):.2f} s);"
          f" load {os.getloadavg()[0]:.1f}")
    print("budget ≤ 1.0 at the median:", "ok" if median <= 1.0 else "NOT MET")


if __name__ == "__main__":
    main()
