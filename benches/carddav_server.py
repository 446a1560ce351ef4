#!/usr/bin/env python3
"""What Radicale itself spends on the ways to read a whole address book, with no CardDAV
client in between: each way asked directly (http.client, gzip as the clients ask), the ways
alternated round by round, times as this script sees them (request sent to answer read).

usage: python3 benches/carddav_server.py [--cards N] [--rounds R] [--python PATH]

  --cards N      cards in the collection (default 10,000; benches/carddav.py makes them)
  --rounds R     rounds of every way (default 3)
  --python PATH  a Python with radicale 3.9.0 (default as benches/carddav.py)

The ways:
  vdirsyncer   PROPFIND depth 1 of every etag, then one multiget of every href (what
               vdirsyncer's first sync asks)
  sync-cards   one tokenless sync-collection asking for getetag and address-data
  token+query  PROPFIND depth 0 of DAV:sync-token, then one addressbook-query of every
               card (contactsyncd's first read)
  token        the PROPFIND of DAV:sync-token alone
Before the rounds, one sync-collection, not counted (Radicale's first one writes a history
entry per card).
"""
import argparse
import base64
import gzip
import http.client
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("carddav_bench", os.path.join(HERE, "carddav.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

AUTH = "Basic " + base64.b64encode(f"{bench.USER}:{bench.PASSWORD}".encode()).decode()
PROPFIND = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>'
TOKEN = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:sync-token/></D:prop></D:propfind>'
SYNC = ('<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
        '<D:sync-token></D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/>{}</D:prop>'
        '</D:sync-collection>')
QUERY = ('<?xml version="1.0"?><C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
         '<D:prop><D:getetag/><C:address-data/></D:prop></C:addressbook-query>')


def multiget(hrefs):
    return ('<?xml version="1.0"?><C:addressbook-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
            '<D:prop><D:getetag/><C:address-data/></D:prop>'
            + "".join(f"<D:href>{h}</D:href>" for h in hrefs) + "</C:addressbook-multiget>")


def request(port, method, body, depth):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request(method, bench.BOOK, body=body.encode(), headers={
        "Authorization": AUTH, "Depth": depth, "Accept-Encoding": "gzip",
        "Content-Type": "application/xml; charset=utf-8"})
    response = connection.getresponse()
    data = response.read()
    if response.getheader("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    if response.status != 207:
        sys.exit(f"{method}: {response.status} {data[:300]!r}")
    return data.decode()


def hrefs(listing):
    return [h for h in re.findall(r"<href>([^<]*)</href>", listing) if h != bench.BOOK]


WAYS = {
    "vdirsyncer": lambda port: request(port, "REPORT", multiget(hrefs(request(port, "PROPFIND", PROPFIND, "1"))), "1"),
    "sync-cards": lambda port: request(port, "REPORT", SYNC.format("<C:address-data/>"), "1"),
    "token+query": lambda port: (request(port, "PROPFIND", TOKEN, "0"), request(port, "REPORT", QUERY, "1")),
    "token": lambda port: request(port, "PROPFIND", TOKEN, "0"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=bench.default_python())
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="contactsyncd-carddav-server-")
    server, port = bench.start_radicale(args.python, work)
    try:
        bench.upload(port, bench.collection(args.cards, work))
        request(port, "REPORT", SYNC.format(""), "1")
        times = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for way, ask in WAYS.items():
                start = time.monotonic()
                ask(port)
                times[way].append(time.monotonic() - start)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.cards:,} cards on Radicale 3.9.0, {args.rounds} rounds alternated: median (min-max)")
    base = bench.median(times["vdirsyncer"])
    for way, seconds in times.items():
        print(f"{way:12} {bench.spread(seconds)}  {bench.median(seconds) / base:.2f}x vdirsyncer's")


if __name__ == "__main__":
    main()
