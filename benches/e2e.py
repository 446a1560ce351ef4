#!/usr/bin/env python3
"""End-to-end benchmarks of the release binary, in one command, with a markdown table.

usage: python3 benches/e2e.py [--bin-dir DIR] [--work DIR] [--quick | --million]

  --bin-dir DIR  holds contactsyncd and examples/telegram-test-server (or the server next
                 to contactsyncd, as in a copied set of binaries) (default:
                 target/release of this repository; build them with
                 `cargo build --release --bin contactsyncd --example telegram-test-server`)
  --work DIR     inputs and state (default /tmp/contactsyncd-bench); the generated address
                 books are kept there and reused while benches/gen_vcf.py is unchanged
  --quick        a smoke run: 10,000 cards instead of 100,000 (5,000 for the half) in steps
                 1-3, the daemon on 10,000 only and 5 rounds in step 4
  --million      step 6 alone, by hand (not in CI; about a minute and 106 MB of input)

Steps, each timed (wall) with the peak RSS of that one child process (os.wait4):
  1. inspect --json --region DE over the single-file export, output to /dev/null (MB/s)
  2. first `sync --once --offline` over the vdir (fresh state, with a Telegram session
     seeded by the example server, so the pass plans and queues for an account), and over
     a vdir of half the size, 7 alternated pairs (3 with --quick): CPU per file from 50k
     to 100k, the median of the pairs and the ratio of each size's fastest run
  3. the same again, nothing changed, next to `find BOOK -type f -printf …` (warm cache),
     15 alternated pairs (5 with --quick), the ratio in user + system CPU (also
     benches/noop_vs_find.py, alone); then once more after `default_region` changed (every
     file derived again)
  4. `contactsyncd run` on the 50,000- and 100,000-card vdirs: idle RSS after the first pass
     (VmRSS each second for 30 s), write → outbox latency with writes 3.5 s apart and with
     each write 0.3 s after the previous batch was applied, idle CPU, by
     benches/daemon_latency.py (its own server and state)
  5. first `sync --once` of ~10,000 numbers (5,000 cards) to the example server
  6. (--million only) first `sync --once --offline` of 1,000,000 small cards in one export
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GEN = os.path.join(HERE, "gen_vcf.py")
LATENCY = os.path.join(HERE, "daemon_latency.py")
DEBOUNCE_MS = 500  # the default watch.debounce; the configs here do not set it
TELEGRAM = '[telegram]\napi_id = 12345\napi_hash = "0123456789abcdef0123456789abcdef"\n'
CONFIG = 'state_dir = "state"\ndefault_region = "DE"\n[[source]]\npath = "book"\n\n' + TELEGRAM


def log(message):
    print(message, file=sys.stderr, flush=True)


def measure(argv, cwd=None, stdout=subprocess.DEVNULL, timeout=600):
    """Runs argv; returns (exit code, wall seconds, peak RSS in MB, stdout text or None)."""
    out = subprocess.PIPE if stdout == "capture" else stdout
    start = time.monotonic()
    child = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
    # Read the pipes on the side so a chatty child never blocks; wait4 gives the child's own
    # rusage (RUSAGE_CHILDREN would be the maximum over every child so far).
    captured = {}

    def drain(name, pipe):
        captured[name] = pipe.read() if pipe else b""

    threads = [threading.Thread(target=drain, args=("err", child.stderr))]
    if out == subprocess.PIPE:
        threads.append(threading.Thread(target=drain, args=("out", child.stdout)))
    for t in threads:
        t.start()
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - start
    timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    if child.returncode != 0:
        log(f"  exit {child.returncode}: {' '.join(argv)}\n  {captured['err'].decode(errors='replace')[-2000:]}")
    text = captured.get("out", b"").decode(errors="replace") if out == subprocess.PIPE else None
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    return child.returncode, wall, usage.ru_maxrss / 1024, text


# The CPU time (user + system) of the last `measure`d child: on a shared machine it varies
# less than the wall time.
LAST_CPU = [0.0]


def fingerprint(count, vdir):
    with open(GEN, "rb") as f:
        return f"{hashlib.sha256(f.read()).hexdigest()} {count} {'vdir' if vdir else 'file'}\n"


def generated(path, count, vdir):
    """Makes `path` with gen_vcf.py unless a complete copy from the same generator is there."""
    marker = path.rstrip("/") + ".generated"
    want = fingerprint(count, vdir)
    if os.path.exists(path) and os.path.exists(marker) and open(marker).read() == want:
        return path
    log(f"generating {count} cards into {path}{' (vdir)' if vdir else ''} …")
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    if os.path.exists(marker):
        os.remove(marker)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run([sys.executable, GEN, str(count), path] + (["--vdir"] if vdir else []), check=True)
    with open(marker, "w") as f:
        f.write(want)
    return path


def fresh_state(parent):
    state = os.path.join(parent, "state")
    if os.path.exists(state):
        shutil.rmtree(state)
    with open(os.path.join(parent, "c.toml"), "w") as f:
        f.write(CONFIG)
    return state


def seed_session(server_bin, state):
    """Lets the example server write a logged-in session into `state`, then stops it."""
    server = subprocess.Popen([server_bin, "--listen", "127.0.0.1:0", "--state-dir", state],
                              stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    server.terminate()
    server.wait(timeout=10)
    if "listening on" not in line:
        sys.exit(f"the example server did not start: {line!r}")


def binaries(bin_dir):
    """(contactsyncd, the example telegram-test-server) in BIN_DIR, as absolute paths;
    exits naming what is missing and how to build it."""
    binary = os.path.abspath(os.path.join(bin_dir, "contactsyncd"))
    # target/release keeps examples in examples/; a copied set may have it next to the binary.
    server_bin = next((os.path.abspath(p) for p in (os.path.join(bin_dir, "examples", "telegram-test-server"),
                                                    os.path.join(bin_dir, "telegram-test-server"))
                       if os.access(p, os.X_OK)), os.path.join(bin_dir, "examples", "telegram-test-server"))
    missing = [p for p in (binary, server_bin) if not os.access(p, os.X_OK)]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}\n"
                 "build them: cargo build --release --bin contactsyncd --example telegram-test-server")
    return binary, server_bin


def bench_arguments(ap, files, pairs):
    """The options the single-row benches share with this one."""
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"))
    ap.add_argument("--work", default="/tmp/contactsyncd-bench")
    ap.add_argument("--files", type=int, default=files)
    ap.add_argument("--pairs", type=int, default=pairs)


def first_pass(binary, server_bin, work, count):
    """A first `sync --once --offline` over WORK's vdir of `count` one-card files (generated
    when missing), from a fresh state with a session seeded by the example server, so that
    the pass plans and queues for an account: (book, config, exit code, wall, CPU, peak RSS,
    stdout)."""
    parent = os.path.join(work, f"vdir-{count // 1000}k")
    book = generated(os.path.join(parent, "book"), count, vdir=True)
    seed_session(server_bin, fresh_state(parent))
    config = os.path.join(parent, "c.toml")
    code, wall, peak, out = measure(
        [binary, "--config", config, "sync", "--once", "--offline", "--json"], stdout="capture")
    return book, config, code, wall, LAST_CPU[0], peak, out


def alternated_first_passes(binary, server_bin, work, sizes, pairs):
    """`first_pass` at each of `sizes`, `pairs` times, the order flipping each pair (the
    page cache and the machine's other load even out): {count: [results in order]}."""
    runs = {count: [] for count in sizes}
    for pair in range(pairs):
        for count in sizes if pair % 2 == 0 else sizes[::-1]:
            runs[count].append(first_pass(binary, server_bin, work, count))
    return runs


def growth(runs, big, half):
    """CPU per file at `big` over at `half`: each pair's, sorted, and that of each size's
    fastest run (load from elsewhere only adds CPU time: the fastest run of a size is its
    least disturbed one)."""
    per_file = lambda b, h: (b / big) / (h / half)  # noqa: E731
    pairs = sorted(per_file(b[4], h[4]) for b, h in zip(runs[big], runs[half]))
    fastest = per_file(min(r[4] for r in runs[big]), min(r[4] for r in runs[half]))
    return pairs, fastest


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    u = os.uname()
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, {u.sysname} {u.release} {u.machine}"


def fmt_s(seconds):
    return "—" if seconds is None else (f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s")


def fmt_mb(mb):
    return "—" if mb is None else f"{mb:.0f} MB"


def verdict(checks):
    """checks: list of (ok or None, label) → 'ok' / 'FAIL (label)' / 'info'."""
    failed = [label for ok, label in checks if ok is False]
    if failed:
        return "**FAIL** (" + ", ".join(failed) + ")"
    return "ok" if any(ok for ok, _ in checks) else "info"


def million(binary, server_bin, work):
    """Step 6, by hand: 1,000,000 minimal cards (gen_vcf.py --small, 106 MB) as one export,
    first `sync --once --offline` with an account to plan for."""
    parent = os.path.join(work, "million")
    os.makedirs(parent, exist_ok=True)
    export = os.path.join(parent, "export.vcf")
    marker = export + ".generated"
    want = fingerprint(1_000_000, False) + "small\n"
    if not (os.path.exists(export) and os.path.exists(marker) and open(marker).read() == want):
        log(f"generating 1,000,000 small cards into {export} …")
        subprocess.run([sys.executable, GEN, "1000000", export, "--small"], check=True)
        with open(marker, "w") as f:
            f.write(want)
    state = fresh_state(parent)
    with open(os.path.join(parent, "c.toml"), "w") as f:
        f.write(CONFIG.replace('path = "book"', 'path = "export.vcf"'))
    seed_session(server_bin, state)
    size_mb = os.path.getsize(export) / 1e6
    log(f"6. first sync --once --offline over {export} ({size_mb:.0f} MB)")
    code, wall, peak, out = measure(
        [binary, "--config", os.path.join(parent, "c.toml"), "sync", "--once", "--offline", "--json"],
        stdout="capture", timeout=1800)
    m = re.search(r'"contacts":(\d+).*?"new":(\d+).*?"queued_batches":(\d+)', out or "")
    detail = f": {int(m[1]):,} contacts, {int(m[2]):,} planned, {m[3]} batches queued" if m else ""
    print(f"machine: {machine()}")
    print("| what | wall | peak RSS | budget | verdict |")
    print("|---|---|---|---|---|")
    print(f"| first `sync --once --offline`, 1,000,000 small cards in one export ({size_mb:.0f} MB){detail}"
          f" (CPU {LAST_CPU[0]:.1f} s) | {fmt_s(wall)} | {fmt_mb(peak)} | peak ≤ 500 MB | "
          + verdict([(code == 0, f"exit {code}"), (peak <= 500, "peak")]) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"))
    ap.add_argument("--work", default="/tmp/contactsyncd-bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--million", action="store_true",
                    help="only step 6: a first offline sync of 1,000,000 small cards in one export (by hand, not in CI)")
    args = ap.parse_args()

    binary, server_bin = binaries(args.bin_dir)
    big = 10_000 if args.quick else 100_000
    rounds = 5 if args.quick else 20
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    label = f"{big // 1000}k"
    rows = []  # (what, wall, peak, budget, verdict)

    if args.million:
        million(binary, server_bin, work)
        return
    print(f"machine: {machine()}")
    print(f"binary: {binary} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(os.path.getmtime(binary)))})")
    print(f"work dir: {work}{'  (--quick: 10k cards for steps 1-3, ' + str(rounds) + ' rounds)' if args.quick else ''}")
    print()

    # 1. inspect over the single file
    export = generated(os.path.join(work, f"export-{label}.vcf"), big, vdir=False)
    size_mb = os.path.getsize(export) / 1e6
    log(f"1. inspect --json over {export} ({size_mb:.0f} MB)")
    code, wall, peak, _ = measure([binary, "inspect", export, "--region", "DE", "--json"])
    rate = size_mb / wall
    rows.append((f"`inspect --json` over the {label}-card file ({size_mb:.0f} MB): {rate:.0f} MB/s",
                 fmt_s(wall), fmt_mb(peak), "≥ 100 MB/s (info); peak ≤ 300 MB",
                 verdict([(code == 0, f"exit {code}"), (peak <= 300, "peak")])
                 + ("" if rate >= 100 else " (below 100 MB/s: info)")))

    # 2. first offline pass over the vdir, with an account to plan for; the same at half the
    # size, for the growth from 50k to 100k (CPU time, on a shared machine, and peak RSS),
    # in alternated pairs: the CPU per file of one pair varies ±10% on a shared machine,
    # the median of the pairs less.
    half = big // 2
    growth_pairs = 3 if args.quick else 7
    log(f"2. first sync --once --offline over {big:,} and {half:,} files, {growth_pairs} alternated pairs")
    runs = alternated_first_passes(binary, server_bin, work, (big, half), growth_pairs)
    # The full-size state must be a first pass's for step 3: the last big run left it so.
    book, config = runs[big][-1][0], runs[big][-1][1]

    def median_run(count):
        done = sorted((r for r in runs[count] if r[2] == 0), key=lambda r: r[3])
        return done[len(done) // 2] if done else runs[count][-1]

    _, _, code, first_wall, first_cpu, first_peak, out = median_run(big)
    code = max((r[2] for r in runs[big]), key=abs)
    walls = sorted(r[3] for r in runs[big])
    peaks = sorted(r[5] for r in runs[big])
    detail = ""
    m = re.search(r'"contacts":(\d+).*?"new":(\d+).*?"queued_batches":(\d+)', out or "")
    if m:
        detail = f": {int(m[1]):,} contacts, {int(m[2]):,} planned, {m[3]} batches queued"
    rows.append((f"first `sync --once --offline`, {label} vdir{detail} (CPU {first_cpu:.1f} s;"
                 f" median of {growth_pairs}, wall {fmt_s(walls[0])}–{fmt_s(walls[-1])})",
                 fmt_s(first_wall), f"{fmt_mb(peaks[0])}–{fmt_mb(peaks[-1])}", "≤ 5 s; peak ≤ 200 MB",
                 verdict([(code == 0, f"exit {code}"), (first_wall <= 5, "wall"), (peaks[-1] <= 200, "peak")])))
    half_codes = [r[2] for r in runs[half]]
    if all(c == 0 for c in half_codes) and code == 0:
        per_file, of_minimums = growth(runs, big, half)
        ratio = per_file[len(per_file) // 2]
        _, _, _, half_wall, half_cpu, half_peak, _ = median_run(half)
        rows.append((f"first pass, {half // 1000}k vdir (CPU {half_cpu:.1f} s); CPU per file at {label} / at"
                     f" {half // 1000}k, {growth_pairs} alternated pairs (min/median/max):"
                     f" {per_file[0]:.2f}/{ratio:.2f}/{per_file[-1]:.2f}, of the fastest runs {of_minimums:.2f};"
                     f" peak {label} / {half // 1000}k ="
                     f" {first_peak / half_peak:.2f}",
                     fmt_s(half_wall), fmt_mb(half_peak), "CPU per file ≤ 1.0× at the median (linear)",
                     verdict([(ratio <= 1.0, "growth")])))
    else:
        rows.append((f"first pass, {half // 1000}k vdir", "—", "—", "CPU per file ≤ 1.0×",
                     verdict([(False, f"exit {half_codes}")])))

    # 3. no-op pass, and the plain stat of the same files, alternated; the ratio is of CPU
    # time (user + system, each child's own by wait4): single pairs vary ±25% on a shared
    # machine, wall times more, so the median over many pairs counts
    pairs = 5 if args.quick else 15
    log(f"3. no-op pass and find/stat, {pairs} alternated pairs")
    ratios, noops, stats, noop_cpus, stat_cpus = [], [], [], [], []
    noop_peak, read_note = 0.0, ""
    for _ in range(pairs):
        code, noop, peak, out = measure(
            [binary, "--config", config, "sync", "--once", "--offline", "--json"], stdout="capture")
        noop_cpu = LAST_CPU[0]
        noop_peak = max(noop_peak, peak)
        m = re.search(r'"files_read":(\d+),"files_parsed":(\d+)', out or "")
        read_note = f" ({m[1]} files read, {m[2]} parsed)" if m else ""
        _, stat, _, _ = measure(["find", book, "-type", "f", "-printf", r"%s %T@ %i\n"])
        stat_cpu = LAST_CPU[0]
        noops.append(noop)
        stats.append(stat)
        noop_cpus.append(noop_cpu)
        stat_cpus.append(stat_cpu)
        ratios.append(noop_cpu / max(stat_cpu, 1e-6))
    ratios.sort()
    ratio = ratios[len(ratios) // 2]
    noop = sorted(noops)[len(noops) // 2]
    stat = sorted(stats)[len(stats) // 2]
    noop_cpu = sorted(noop_cpus)[len(noop_cpus) // 2]
    stat_cpu = sorted(stat_cpus)[len(stat_cpus) // 2]
    rows.append((f"no-op `sync --once --offline`, {label} vdir{read_note}, median of {pairs}"
                 f" (CPU {fmt_s(noop_cpu)})", fmt_s(noop),
                 fmt_mb(noop_peak), "≤ 2 s and ≤ 1.2× stat in CPU; peak ≤ 200 MB",
                 # At 10k the process's start-up (~30 ms of CPU) is most of the pass: the
                 # ratio's budget is for 100k files, --quick only shows it.
                 verdict([(code == 0, f"exit {code}"), (noop <= 2, "wall"),
                          (None if args.quick else ratio <= 1.2, "ratio"), (noop_peak <= 200, "peak")])))
    rows.append((f"`find -printf '%s %T@ %i'` over the same {label} files (warm), median of {pairs}"
                 f" (CPU {fmt_s(stat_cpu)}); no-op / stat in user + system CPU, pair by pair ="
                 f" {ratios[0]:.2f}/{ratio:.2f}/{ratios[-1]:.2f}× (min/median/max)",
                 fmt_s(stat), "—", "", "info"))

    # 3b. the region changes: every file is derived again (read and parsed), nothing else moved
    log("3b. sync --once --offline after default_region DE → AT")
    with open(config, "w") as f:
        f.write(CONFIG.replace('default_region = "DE"', 'default_region = "AT"'))
    try:
        code, rederive, rederive_peak, out = measure(
            [binary, "--config", config, "sync", "--once", "--offline", "--json"], stdout="capture")
        # The pass right after it changes nothing: a no-op (it once planned again, 1.2 s CPU).
        after_code, after, after_peak, _ = measure(
            [binary, "--config", config, "sync", "--once", "--offline", "--json"])
        after_cpu = LAST_CPU[0]
    finally:
        with open(config, "w") as f:
            f.write(CONFIG)
    m = re.search(r'"files_read":(\d+),"files_parsed":(\d+)', out or "")
    parsed_note = f" ({int(m[2]):,} files parsed again)" if m else ""
    rows.append((f"`sync --once --offline` after `default_region` changed, {label} vdir{parsed_note}",
                 fmt_s(rederive), fmt_mb(rederive_peak), "≤ 10 s; peak ≤ 200 MB",
                 verdict([(code == 0, f"exit {code}"), (rederive <= 10, "wall"), (rederive_peak <= 200, "peak")])))
    rows.append((f"the pass right after it, nothing changed (CPU {fmt_s(after_cpu)}; the no-op's median:"
                 f" {fmt_s(noop_cpu)})", fmt_s(after), fmt_mb(after_peak), "a no-op: ≤ 2× the no-op's CPU",
                 verdict([(after_code == 0, f"exit {after_code}"), (after_cpu <= 2 * noop_cpu, "planned again")])))

    # 4. the daemon: idle memory after its first pass, write → outbox latency (spaced and
    # during a burst) and idle CPU, by benches/daemon_latency.py (its own server and state),
    # on the 50k and 100k vdirs (10k with --quick); the book is step 2's for 100k.
    daemon_sizes = [10_000] if args.quick else [50_000, 100_000]
    for size in daemon_sizes:
        size_label = f"{size // 1000}k"
        if size == big:
            lat_book = book
        else:
            lat_book = generated(os.path.join(work, f"vdir-{size_label}", "book"), size, vdir=True)
        lat_parent = os.path.join(work, f"daemon-{size_label}")
        os.makedirs(lat_parent, exist_ok=True)
        fresh_state(lat_parent)
        with open(os.path.join(lat_parent, "c.toml"), "w") as f:
            f.write(CONFIG.replace('path = "book"', f'path = "{lat_book}"'))
        log(f"4. daemon_latency.py, {size_label} vdir, {rounds} + {rounds} rounds (~{2 * rounds + 60} s after the first pass)")
        start = time.monotonic()
        run = subprocess.run([sys.executable, LATENCY, binary, server_bin, lat_parent, str(rounds),
                              "--book", lat_book],
                             capture_output=True, text=True, timeout=1800)
        lat_wall = time.monotonic() - start
        m = re.search(r"over \d+ writes \(debounce 500 ms\): p50 (\d+) ms, max (\d+) ms", run.stdout)
        b = re.search(r"burst: .*: p50 (\d+) ms, max (\d+) ms", run.stdout)
        rss = re.search(r"VmRSS each second\): min (\d+) MB, median (\d+) MB, max (\d+) MB", run.stdout)
        first = re.search(r"first pass .*: ([\d.]+) s, peak RSS (\d+) MB", run.stdout)
        idle = re.search(r"idle CPU over 10 s: ([\d.]+) s", run.stdout)
        hwm = re.search(r"daemon peak RSS: (\d+) MB", run.stdout)
        applied = re.search(r"applied by the server .*: p50 (\d+) ms, max (\d+) ms; during the burst: "
                            r"p50 (\d+) ms, max (\d+) ms", run.stdout)
        if run.returncode != 0 or not (m and b and rss):
            log(f"  daemon_latency.py failed ({run.returncode}):\n{run.stdout}{run.stderr[-2000:]}")
            rows.append((f"`run`, {size_label} vdir", fmt_s(lat_wall), "—", "", "**FAIL** (see stderr)"))
            continue
        if size == 50_000 or args.quick:
            rows.append((f"`run`, {size_label} vdir: idle RSS after the first pass (VmRSS each second for 30 s,"
                         f" min/median/max); peak = VmHWM after the first pass",
                         f"{rss[1]}/{rss[2]}/{rss[3]} MB", f"{first[2]} MB" if first else "—",
                         "≤ 64 MB (at 50k)", verdict([(int(rss[3]) <= 64, "idle RSS")])))
        for what, found in (("writes 3.5 s apart", m), ("a write 0.3 s after the previous batch was applied", b)):
            p50, worst = int(found[1]), int(found[2])
            beyond = p50 - DEBOUNCE_MS
            rows.append((f"`run`, {size_label} vdir: write → outbox, {what}, {rounds} writes: p50 = debounce"
                         f" {DEBOUNCE_MS} ms + {beyond} ms",
                         f"p50 {p50} ms, max {worst} ms", f"{hwm[1]} MB" if hwm else "—",
                         "p50 ≤ 50 ms beyond the debounce", verdict([(beyond <= 50, "latency")])))
        if applied:
            for what, p50, worst in (("writes 3.5 s apart", applied[1], applied[2]),
                                     ("during the burst", applied[3], applied[4])):
                beyond = int(p50) - DEBOUNCE_MS
                rows.append((f"`run`, {size_label} vdir: write → importContacts answered by the server and"
                             f" recorded, {what}: p50 = debounce {DEBOUNCE_MS} ms + {beyond} ms",
                             f"p50 {p50} ms, max {worst} ms", "—",
                             "p50 ≤ 50 ms beyond the debounce", verdict([(beyond <= 50, "latency")])))
        if idle:
            rows.append((f"`run`, {size_label} vdir: idle CPU over 10 s", f"{float(idle[1]):.2f} s CPU", "—",
                         "≈ 0 (≤ 0.1 s)", verdict([(float(idle[1]) <= 0.1, "idle CPU")])))

    # 5. first sync to the example server
    p_parent = os.path.join(work, "server-5k")
    generated(os.path.join(p_parent, "book"), 5_000, vdir=True)
    state = fresh_state(p_parent)
    log("5. first sync --once of 5,000 cards to the example server")
    server = subprocess.Popen([server_bin, "--listen", "127.0.0.1:0", "--state-dir", state, "--register-even"],
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        code, wall, peak, out = measure(
            [binary, "--config", os.path.join(p_parent, "c.toml"), "sync", "--once", "--json"], stdout="capture",
            timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=10)
    m = re.search(r'"contacts":(\d+).*?"batches_sent":(\d+),"imported":(\d+),"saved":(\d+)', out or "")
    detail = f": {int(m[1]):,} contacts, {m[2]} batches, {int(m[3]):,} imported, {int(m[4]):,} saved" if m else ""
    rows.append((f"first `sync --once` to the example server, 5k cards{detail}", fmt_s(wall), fmt_mb(peak),
                 "≤ 10 s; peak ≤ 300 MB",
                 verdict([(code == 0, f"exit {code}"), (wall <= 10, "wall"), (peak <= 300, "peak")])))

    print("| what | wall | peak RSS | budget | verdict |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.quick:
        print("\n--quick: the 100k budgets were applied to 10k inputs; run without --quick for the real figures.")


if __name__ == "__main__":
    main()
