#!/usr/bin/env python3
"""Hostile input against the binary: time and peak RSS per row of issue 23's table.

usage: python3 benches/bounded.py [--bin PATH] [--work DIR] [--quick]

  --bin PATH   the contactsyncd binary (default: target/release/contactsyncd of this
               repository; `cargo build --release --bin contactsyncd`)
  --work DIR   inputs and state (default /tmp/contactsyncd-bounded); about 400 MB
  --quick      a tenth of each input (a smoke run)

Rows (each `inspect` over the file and a first `sync --once` without an account over a
vdir holding it; wall time and the peak RSS of that one child, os.wait4):
  1. one card with 20,000 and 40,000 TELs, and with 10,000 and 20,000 iCloud `itemN.`
     labelled TELs (40,000 of those keep more than a card may): the ratio (linear: <= 2.5) of
     the best of three `inspect` CPU times each, after checking that every number was kept
  2. 10M lines of BEGIN:VCARD without END (120 MB)
  3. one card of 5M `FN:a` lines (30 MB): refused as too large
  4. one card with a 200 MB single-line NICKNAME: refused as too large; a 200 MB NOTE line
     (dropped) beside a number that syncs
  5. x.vcf a symlink to /dev/zero in a vdir
"""
import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'state_dir = "state"\ndefault_region = "DE"\n[[source]]\npath = "book"\n'


def measure(argv, cwd=None, timeout=600):
    """Runs argv; returns (exit code, wall seconds, peak RSS in MB, CPU seconds)."""
    start = time.monotonic()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = {}
    drain = threading.Thread(target=lambda: err.setdefault("text", child.stderr.read()))
    drain.start()
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - start
    timer.cancel()
    drain.join()
    code = os.waitstatus_to_exitcode(status)
    return code, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def write(path, chunks):
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def tel_card(count, labels):
    yield b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Many\r\n"
    for i in range(count):
        if labels:
            yield b"item%d.TEL:+4915%08d\r\nitem%d.X-ABLabel:Boat\r\n" % (i, i, i)
        else:
            yield b"TEL:+49 151 %08d\r\n" % i
    yield b"END:VCARD\r\n"


def repeated(head, line, times, tail, block=100_000):
    yield head
    for start in range(0, times, block):
        yield line * min(block, times - start)
    yield tail


def one_line(head, byte, size, tail, block=1 << 20):
    yield head
    for start in range(0, size, block):
        yield byte * min(block, size - start)
    yield tail


def row(binary, work, name, make):
    """Writes the input as book/x.vcf of a fresh directory, then inspects and syncs it."""
    case = os.path.join(work, name)
    shutil.rmtree(case, ignore_errors=True)
    os.makedirs(os.path.join(case, "book"))
    with open(os.path.join(case, "config.toml"), "w") as f:
        f.write(CONFIG)
    target = os.path.join(case, "book", "x.vcf")
    make(target)
    size = os.lstat(target).st_size if not os.path.islink(target) else 0
    results = []
    for argv in (["inspect", "--region", "DE", target], ["sync", "--once"]):
        code, wall, rss, _ = measure([binary, "--config", "config.toml"] + argv, cwd=case)
        results.append((argv[0], code, wall, rss))
    shutil.rmtree(case, ignore_errors=True)
    return size, results


def tel_inspect_seconds(binary, work, count, labels):
    """The best of three `inspect` CPU times (user + system: on a shared machine the wall
    time measures the neighbours too) of a card of `count` TELs, after checking that
    every number was kept: a card refused as too large costs almost nothing, and a ratio
    over it would measure the refusal, not the parser."""
    path = os.path.join(work, "tel-ratio.vcf")
    write(path, tel_card(count, labels))
    shown = subprocess.run([binary, "inspect", "--region", "DE", path],
                           capture_output=True, text=True).stdout
    if f" {count} phones (0 rejected)" not in shown:
        sys.exit(f"a card of {count:,} TELs (labels: {labels}) was not kept whole; "
                 f"the ratio would not measure parsing:\n{shown[-400:]}")
    best = min(measure([binary, "inspect", "--region", "DE", path])[3] for _ in range(3))
    os.remove(path)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=os.path.join(REPO, "target/release/contactsyncd"))
    parser.add_argument("--work", default="/tmp/contactsyncd-bounded")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    os.makedirs(args.work, exist_ok=True)
    print("| input | size | inspect | first sync --once |")
    print("|---|---|---|---|")

    def show(label, size, results):
        cells = [f"{wall:.2f} s, {rss:.0f} MB peak (exit {code})" for _, code, wall, rss in results]
        print(f"| {label} | {size / 1e6:.1f} MB | {cells[0]} | {cells[1]} |", flush=True)
        return results

    # 40,000 labelled TELs keep over MAX_CARD_KEPT_BYTES (the card is refused): 10k and 20k.
    for labels, base in ((False, 20_000), (True, 10_000)):
        walls = []
        for count in (base // scale, 2 * base // scale):
            size, results = row(args.bin, args.work, "tel",
                                lambda p: write(p, tel_card(count, labels)))
            show(f"one card, {count:,} TELs{' with itemN. labels' if labels else ''}", size, results)
            walls.append(tel_inspect_seconds(args.bin, args.work, count, labels))
        print(f"| ratio {2 * base // 1000}k/{base // 1000}k{' (labels)' if labels else ''} (inspect) | | {walls[1] / walls[0]:.2f} | |")

    rows = [
        ("10M lines of BEGIN:VCARD, no END",
         lambda p: write(p, repeated(b"", b"BEGIN:VCARD\n", 10_000_000 // scale, b""))),
        ("one card of 5M FN:a lines",
         lambda p: write(p, repeated(b"BEGIN:VCARD\nVERSION:3.0\n", b"FN:a\n", 5_000_000 // scale,
                                     b"END:VCARD\n"))),
        ("one card, a 200 MB NICKNAME line",
         lambda p: write(p, one_line(b"BEGIN:VCARD\nVERSION:3.0\nFN:A\nNICKNAME:", b"n",
                                     200_000_000 // scale, b"\nTEL:+4915190000001\nEND:VCARD\n"))),
        ("one card, a 200 MB NOTE line (dropped) and a number",
         lambda p: write(p, one_line(b"BEGIN:VCARD\nVERSION:3.0\nFN:A\nNOTE:", b"n",
                                     200_000_000 // scale, b"\nTEL:+4915190000001\nEND:VCARD\n"))),
        ("x.vcf a symlink to /dev/zero", lambda p: os.symlink("/dev/zero", p)),
    ]
    for label, make in rows:
        size, results = row(args.bin, args.work, "case", make)
        show(label, size, results)


if __name__ == "__main__":
    sys.exit(main())
