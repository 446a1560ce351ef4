#!/usr/bin/env python3
"""contactsyncd's no-op pass against vdirsyncer's no-op sync, both over the same vdir on disk.

usage: python3 benches/vdirsyncer_fs.py [--cards N] [--bin PATH] [--vdirsyncer PATH]
                                        [--pairs K] [--work DIR]

  --cards N          one-card files in the vdir (default 100,000), by benches/gen_vcf.py
                     (seeded, --no-photos: only the files' metadata matters to both)
  --bin PATH         the contactsyncd binary (default target/release/contactsyncd)
  --vdirsyncer PATH  vdirsyncer's command (default: `vdirsyncer` beside this Python, else on
                     PATH), e.g. `python3 -m venv /tmp/vs && /tmp/vs/bin/pip install vdirsyncer`
  --pairs K          alternated pairs (default 5)
  --work DIR         the vdir, its vdirsyncer copy and both states (default: a temporary
                     directory, removed at the end)

What each does when nothing changed:
  contactsyncd  `sync --once --offline` after a first one: one stat of every file against
                the stored (size, mtime, inode), nothing read, nothing planned.
  vdirsyncer    `sync` of a pair of two `filesystem` storages (the vdir and a copy made by
                its first sync): it lists both folders (its etag of a file is its mtime and
                inode) and compares them with its status database.
The issue's goal (issue 24, last row): contactsyncd's no-op is at least 30 times faster, as
the median of the pairs' ratios. The exit code is 1 when it is missed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GEN = os.path.join(HERE, "gen_vcf.py")


def timed(argv, cwd=None):
    started = time.monotonic()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--bin", default=os.path.join(REPO, "target/release/contactsyncd"))
    beside = os.path.join(os.path.dirname(sys.executable), "vdirsyncer")
    parser.add_argument("--vdirsyncer", default=beside if os.path.exists(beside) else "vdirsyncer")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--work")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="contactsyncd-vdirsyncer-")
    os.makedirs(work, exist_ok=True)
    book = os.path.join(work, "book")
    copy = os.path.join(work, "copy")
    if not os.path.isdir(book):
        subprocess.run([sys.executable, GEN, str(args.cards), book, "--vdir", "--no-photos"],
                       check=True)
    os.makedirs(copy, exist_ok=True)
    with open(os.path.join(work, "contactsyncd.toml"), "w") as f:
        f.write('state_dir = "state"\ndefault_region = "DE"\n[[source]]\npath = "book"\n')
    with open(os.path.join(work, "vdirsyncer.conf"), "w") as f:
        f.write(f"""[general]
status_path = "{work}/vdirsyncer-status"

[pair book]
a = "book_a"
b = "book_b"
collections = null
conflict_resolution = "a wins"

[storage book_a]
type = "filesystem"
path = "{book}"
fileext = ".vcf"

[storage book_b]
type = "filesystem"
path = "{copy}"
fileext = ".vcf"
""")
    contactsyncd = [args.bin, "--config", "contactsyncd.toml", "sync", "--once", "--offline"]
    env = dict(os.environ, VDIRSYNCER_CONFIG=os.path.join(work, "vdirsyncer.conf"))
    vdirsyncer = [args.vdirsyncer, "sync"]
    print(f"first passes over {args.cards:,} files (not counted)", file=sys.stderr, flush=True)
    first = timed(contactsyncd, cwd=work)
    started = time.monotonic()
    subprocess.run([args.vdirsyncer, "discover"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(vdirsyncer, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"  contactsyncd first pass {first:.2f} s, vdirsyncer first sync "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    copied = len(os.listdir(copy))
    if copied != args.cards:
        sys.exit(f"vdirsyncer's copy holds {copied} files, not {args.cards}")

    ours, theirs, ratios = [], [], []
    for pair in range(args.pairs):
        # Alternate which goes first: the page cache and the machine's other load even out.
        if pair % 2 == 0:
            a = timed(contactsyncd, cwd=work)
            started = time.monotonic()
            subprocess.run(vdirsyncer, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            b = time.monotonic() - started
        else:
            started = time.monotonic()
            subprocess.run(vdirsyncer, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            b = time.monotonic() - started
            a = timed(contactsyncd, cwd=work)
        ours.append(a)
        theirs.append(b)
        ratios.append(b / a)
        print(f"  pair {pair + 1}: contactsyncd {a:.2f} s, vdirsyncer {b:.2f} s, {b / a:.1f}x",
              file=sys.stderr, flush=True)

    def spread(values, digits=2):
        values = sorted(values)
        return (f"{values[0]:.{digits}f}/{values[len(values) // 2]:.{digits}f}/"
                f"{values[-1]:.{digits}f}")

    median = sorted(ratios)[len(ratios) // 2]
    print(f"| no-op over {args.cards:,} files, min/median/max of {args.pairs} alternated pairs "
          "| contactsyncd `sync --once --offline` | vdirsyncer `sync` (fs ↔ fs) | vdirsyncer / contactsyncd |")
    print("|---|---|---|---|")
    print(f"| | {spread(ours)} s | {spread(theirs)} s | {spread(ratios, 1)}× |")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if median < 30:
        print(f"MISSED: the median ratio {median:.1f} is under 30", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
