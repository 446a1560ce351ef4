#!/usr/bin/env python3
"""Writes a synthetic address book for benchmarks: N cards of about 500 bytes each.

usage: gen_vcf.py N OUT            one multi-contact .vcf file (a Google-style export)
       gen_vcf.py N OUT --vdir     a vdir: OUT/<uid>.vcf, one card per file

Cards mix vCard 3.0 (Google) and 2.1 (Android, quoted-printable names) with national and
international numbers, a fax to skip, a folded note, an address and e-mail: the shape of
real exports, deterministic for a given N.
"""
import os
import random
import sys

FIRST = ["Anna", "Jörg", "Zoë", "Mehmet", "Sofia", "Li", "Ólafur", "Chloé", "Ivan", "Amara"]
LAST = ["Schmidt", "Müller", "Öztürk", "García", "Kowalska", "Nguyen", "Dubois", "Rossi"]


def qp(text):
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"={b:02X}" for b in c.encode()) for c in text)


def card(i, rng):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    mobile = f"0151 {i:08d}"
    home = f"+49 30 {rng.randrange(10**7, 10**8)}"
    note = "Met at the conference; call before noon. " * 2
    if i % 4 == 3:
        return (
            "BEGIN:VCARD\r\nVERSION:2.1\r\n"
            f"N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{qp(last)};{qp(first)};;;\r\n"
            f"FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{qp(first)}=20{qp(last)}\r\n"
            f"TEL;CELL;PREF:{mobile}\r\nTEL;HOME:{home}\r\nTEL;WORK;FAX:030 {i:07d}\r\n"
            f"EMAIL;PREF;INTERNET:{first.lower()}.{i}@example.org\r\n"
            f"ADR;HOME:;;Hauptstraße {i % 200};Berlin;;10115;Germany\r\n"
            f"NOTE:{note[:70]}\r\n"
            "ORG:Example GmbH;Sales\r\nTITLE:Account Manager\r\n"
            "END:VCARD\r\n"
        )
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\n"
        f"UID:{i:08x}-5f7d-4e1a-9c2b-0d8e7f6a5b41\r\n"
        f"FN:{first} {last}\r\nN:{last};{first};;;\r\n"
        f"TEL;TYPE=CELL:{mobile}\r\nTEL;TYPE=HOME:{home}\r\nTEL;TYPE=WORK,FAX:030 {i:07d}\r\n"
        f"EMAIL;TYPE=INTERNET:{first.lower()}.{i}@example.org\r\n"
        f"ADR;TYPE=HOME:;;Hauptstraße {i % 200};Berlin;;10115;Germany\r\n"
        f"NOTE:{note[:60]}\r\n {note[60:]}\r\n"
        "ORG:Example GmbH;Sales\r\nTITLE:Account Manager\r\n"
        "CATEGORIES:myContacts,Friends\r\n"
        "END:VCARD\r\n"
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    count, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(count)
    if "--vdir" in sys.argv[3:]:
        os.makedirs(out, exist_ok=True)
        for i in range(count):
            with open(os.path.join(out, f"{i:08x}.vcf"), "w", encoding="utf-8", newline="") as f:
                f.write(card(i, rng))
    else:
        with open(out, "w", encoding="utf-8", newline="") as f:
            for i in range(count):
                f.write(card(i, rng))


if __name__ == "__main__":
    main()
