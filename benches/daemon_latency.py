#!/usr/bin/env python3
"""Write → outbox latency and idle CPU of `contactsyncd run` on a vdir.

usage: daemon_latency.py BINARY SERVER_EXAMPLE VDIR_PARENT [ROUNDS]

VDIR_PARENT holds `book/` (e.g. from gen_vcf.py 10000 DIR/book --vdir) and `c.toml`
(state_dir = "state", path = "book", a [telegram] section). The example server seeds the
state, the daemon syncs everything, then each round writes one new card and times until its
batch is in the outbox (a new row in outbox_batch), debounce included. Finally the
daemon's CPU time over 10 idle seconds and its peak RSS (VmHWM) are read from /proc.
Exits 1 when the daemon dies, the first pass does not finish in 300 s or a write is not
seen within 30 s (benches/e2e.py runs this and parses the last three lines). The daemon's
log goes to VDIR_PARENT/daemon.log (CONTACTSYNCD_LOG=contactsyncd=debug shows each pass's
time).
"""
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

binary, server_bin, parent = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 20
state = os.path.join(parent, "state")
# Cards of an earlier run would not change anything when written again: start clean.
for name in os.listdir(os.path.join(parent, "book")):
    if name.startswith("latency-"):
        os.remove(os.path.join(parent, "book", name))
run = int(time.time()) % 1000
server = subprocess.Popen([server_bin, "--listen", "127.0.0.1:0", "--state-dir", state, "--register-even"],
                          stdout=subprocess.PIPE, text=True)
server.stdout.readline()
daemon = subprocess.Popen([binary, "--config", os.path.join(parent, "c.toml"), "run"],
                          stderr=open(os.path.join(parent, "daemon.log"), "w"))


def batches():
    db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*), coalesce(sum(state != 'applied'), 0) FROM outbox_batch").fetchone()
    except sqlite3.OperationalError:
        return (0, 1)
    finally:
        db.close()


# The first pass: wait until everything queued was applied and stays so.
def fail(message):
    print(message, file=sys.stderr)
    daemon.kill()
    server.terminate()
    sys.exit(1)


deadline = time.time() + 300
while True:
    total, open_ = batches()
    if total > 0 and open_ == 0:
        break
    if daemon.poll() is not None:
        fail(f"the daemon exited with {daemon.returncode} during the first pass")
    if time.time() > deadline:
        fail(f"the first pass did not finish in 300 s ({total} batches, {open_} open)")
    time.sleep(0.2)
time.sleep(1)

latencies = []
for i in range(rounds):
    before = batches()[0]
    path = os.path.join(parent, "book", f"latency-{i}.vcf")
    card = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Latency {run} {i}\r\nTEL:+49 170 {run:03d}{i:04d}\r\nEND:VCARD\r\n"
    start = time.monotonic()
    with open(path + ".tmp", "w") as f:
        f.write(card)
    os.rename(path + ".tmp", path)
    while batches()[0] == before:
        if time.monotonic() - start > 30:
            fail(f"write {i}: no new batch after 30 s (daemon alive: {daemon.poll() is None})")
        time.sleep(0.002)
    latencies.append((time.monotonic() - start) * 1000)
    time.sleep(0.8)


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


ticks = cpu_ticks(daemon.pid)
time.sleep(10)
idle = (cpu_ticks(daemon.pid) - ticks) / os.sysconf("SC_CLK_TCK")
peak_kb = next(int(line.split()[1]) for line in open(f"/proc/{daemon.pid}/status")
               if line.startswith("VmHWM:"))
daemon.send_signal(signal.SIGTERM)
daemon.wait(timeout=20)
server.terminate()
latencies.sort()
print(f"write -> outbox over {rounds} writes (debounce 500 ms): "
      f"p50 {statistics.median(latencies):.0f} ms, max {latencies[-1]:.0f} ms")
print(f"idle CPU over 10 s: {idle:.2f} s")
print(f"daemon peak RSS: {peak_kb / 1024:.0f} MB")
