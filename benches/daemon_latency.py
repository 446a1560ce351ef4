#!/usr/bin/env python3
"""Idle memory, write → outbox latency (spaced and during a burst) and idle CPU of
`contactsyncd run` on a vdir.

usage: daemon_latency.py BINARY SERVER_EXAMPLE VDIR_PARENT [ROUNDS] [--idle-seconds N]
                          [--book DIR]

VDIR_PARENT holds `c.toml` (state_dir = "state", a source with path = the book, a [telegram]
section) and, unless --book names it elsewhere, the book in `book/` (e.g. from gen_vcf.py
10000 DIR/book --vdir). The cards this script writes are removed when it ends. The example
server seeds the state and the daemon syncs everything to it. Then, in this order:

1. idle memory: VmRSS read from /proc every second for N seconds (default 30) once the first
   pass is applied, and VmHWM (the peak so far: the first pass's);
2. spaced writes: ROUNDS times, one new card written (tmp + rename) and timed until its
   batch is in the outbox (a new row in outbox_batch), debounce included, and until the
   batch is applied (the server answered importContacts and the daemon recorded it: the
   request reached the server before); 3 s between that and the next write, so writes are
   about 3.5 s apart (each lands long after the previous one was sent and applied);
3. burst writes: ROUNDS times, one new card written 0.3 s after the batch of the previous
   one was applied by the server (the daemon has just finished one change and is busy with
   its aftermath), timed the same two ways;
4. the daemon's CPU time over 10 idle seconds, and its peak RSS (VmHWM) at the end.

Exits 1 when the daemon dies, the first pass does not finish in --first-pass-timeout
seconds (default 600) or a write is not seen within 30 s (benches/e2e.py runs this and
parses the lines it prints). The daemon's log goes to VDIR_PARENT/daemon.log
(CONTACTSYNCD_LOG=contactsyncd=debug shows each pass's time).
"""
import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("binary")
ap.add_argument("server_bin")
ap.add_argument("parent")
ap.add_argument("rounds", nargs="?", type=int, default=20)
ap.add_argument("--idle-seconds", type=int, default=30)
ap.add_argument("--first-pass-timeout", type=int, default=600)
ap.add_argument("--book", help="the vdir the configuration names (default VDIR_PARENT/book)")
args = ap.parse_args()
binary, server_bin, parent, rounds = args.binary, args.server_bin, args.parent, args.rounds
state = os.path.join(parent, "state")
book = args.book or os.path.join(parent, "book")


def remove_written():
    for name in os.listdir(book):
        if name.startswith("latency-"):
            os.remove(os.path.join(book, name))


# Cards of an earlier run would not change anything when written again: start clean.
remove_written()
run = int(time.time()) % 1000
server = subprocess.Popen([server_bin, "--listen", "127.0.0.1:0", "--state-dir", state, "--register-even"],
                          stdout=subprocess.PIPE, text=True)
server.stdout.readline()
started = time.monotonic()
daemon = subprocess.Popen([binary, "--config", os.path.join(parent, "c.toml"), "run"],
                          stderr=open(os.path.join(parent, "daemon.log"), "w"))


def batches():
    """(batches in the outbox, of them not applied, the newest batch's id and state)."""
    db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True, timeout=5)
    try:
        total, open_ = db.execute(
            "SELECT count(*), coalesce(sum(state != 'applied'), 0) FROM outbox_batch").fetchone()
        newest = db.execute("SELECT id, state FROM outbox_batch ORDER BY id DESC LIMIT 1").fetchone()
        return total, open_, newest
    except sqlite3.OperationalError:
        return 0, 1, None
    finally:
        db.close()


def fail(message):
    print(message, file=sys.stderr)
    daemon.kill()
    server.terminate()
    remove_written()
    sys.exit(1)


def status_kb(field):
    return next(int(line.split()[1]) for line in open(f"/proc/{daemon.pid}/status")
                if line.startswith(field + ":"))


# The first pass: wait until everything queued was applied and stays so.
deadline = time.time() + args.first_pass_timeout
while True:
    total, open_, _ = batches()
    if total > 0 and open_ == 0:
        break
    if daemon.poll() is not None:
        fail(f"the daemon exited with {daemon.returncode} during the first pass")
    if time.time() > deadline:
        fail(f"the first pass did not finish in {args.first_pass_timeout} s ({total} batches, {open_} open)")
    time.sleep(0.2)
first_pass = time.monotonic() - started
time.sleep(1)

# 1. Idle memory after the first pass.
first_peak_kb = status_kb("VmHWM")
rss = []
for _ in range(args.idle_seconds):
    rss.append(status_kb("VmRSS") / 1024)
    time.sleep(1)
anon_kb = status_kb("RssAnon")


def write_card(name, i):
    path = os.path.join(book, f"latency-{name}-{i}.vcf")
    number = f"{run:03d}{i:04d}" if name == "spaced" else f"{run:03d}{5000 + i:04d}"
    card = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Latency {name} {run} {i}\r\nTEL:+49 170 {number}\r\nEND:VCARD\r\n"
    with open(path + ".tmp", "w") as f:
        f.write(card)
    os.rename(path + ".tmp", path)


def until_applied(batch_id, i, start):
    """Waits until the batch `batch_id` is applied: the server answered importContacts and
    the daemon recorded it (so the request reached the server before this moment)."""
    while True:
        db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT state FROM outbox_batch WHERE id = ?", (batch_id,)).fetchone()
        finally:
            db.close()
        if row and row[0] == "applied":
            return
        if time.monotonic() - start > 30:
            fail(f"write {i}: batch {batch_id} not applied after 30 s")
        time.sleep(0.002)


def until_new_batch(before, i, start):
    """Waits for a batch newer than `before`; returns its id."""
    while True:
        newest = batches()[2]
        if newest and (before is None or newest[0] > before):
            return newest[0]
        if time.monotonic() - start > 30:
            fail(f"write {i}: no new batch after 30 s (daemon alive: {daemon.poll() is None})")
        time.sleep(0.002)


# 2. Spaced writes.
spaced = []
spaced_applied = []
for i in range(rounds):
    newest = batches()[2]
    start = time.monotonic()
    write_card("spaced", i)
    batch_id = until_new_batch(newest and newest[0], i, start)
    spaced.append((time.monotonic() - start) * 1000)
    until_applied(batch_id, i, start)
    spaced_applied.append((time.monotonic() - start) * 1000)
    time.sleep(3)

# 3. Burst writes: each 0.3 s after the previous card's batch was applied.
burst = []
burst_applied = []
for i in range(rounds):
    newest = batches()[2]
    # The previous batch (of this loop or the spaced one) applied, then 0.3 s.
    wait_start = time.monotonic()
    while newest and newest[1] != "applied":
        if time.monotonic() - wait_start > 30:
            fail(f"burst {i}: the previous batch was not applied within 30 s")
        time.sleep(0.002)
        newest = batches()[2]
    time.sleep(0.3)
    start = time.monotonic()
    write_card("burst", i)
    batch_id = until_new_batch(newest and newest[0], i, start)
    burst.append((time.monotonic() - start) * 1000)
    until_applied(batch_id, i, start)
    burst_applied.append((time.monotonic() - start) * 1000)


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# 4. Idle CPU and the peak.
time.sleep(2)
ticks = cpu_ticks(daemon.pid)
time.sleep(10)
idle = (cpu_ticks(daemon.pid) - ticks) / os.sysconf("SC_CLK_TCK")
peak_kb = status_kb("VmHWM")
daemon.send_signal(signal.SIGTERM)
daemon.wait(timeout=20)
server.terminate()
remove_written()
for times in (spaced, burst, spaced_applied, burst_applied):
    times.sort()
print(f"first pass (queued and applied by the example server): {first_pass:.1f} s, "
      f"peak RSS {first_peak_kb / 1024:.0f} MB")
print(f"idle RSS over {args.idle_seconds} s after the first pass (VmRSS each second): "
      f"min {min(rss):.0f} MB, median {statistics.median(rss):.0f} MB, max {max(rss):.0f} MB "
      f"({anon_kb / 1024:.0f} MB anonymous at the end)")
print(f"write -> outbox over {rounds} writes (debounce 500 ms): "
      f"p50 {statistics.median(spaced):.0f} ms, max {spaced[-1]:.0f} ms")
print(f"burst: write -> outbox over {rounds} writes 0.3 s after the previous batch was applied: "
      f"p50 {statistics.median(burst):.0f} ms, max {burst[-1]:.0f} ms")
print(f"write -> applied by the server (its answer recorded) over {rounds} writes: "
      f"p50 {statistics.median(spaced_applied):.0f} ms, max {spaced_applied[-1]:.0f} ms; "
      f"during the burst: p50 {statistics.median(burst_applied):.0f} ms, max {burst_applied[-1]:.0f} ms")
print(f"idle CPU over 10 s: {idle:.2f} s")
print(f"daemon peak RSS: {peak_kb / 1024:.0f} MB")
