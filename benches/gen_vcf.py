#!/usr/bin/env python3
"""Writes a synthetic address book for benchmarks, deterministic for a given N (seeded by N).

usage: gen_vcf.py N OUT            one multi-contact .vcf file (all dialects in one export)
       gen_vcf.py N OUT --vdir     a vdir: OUT/<uid>.vcf, one card per file
       … --no-photos               the same cards without their photos (the parser's text rate)
       gen_vcf.py N OUT --small    N minimal 3.0 cards (N, FN, one German mobile number,
                                   about 106 bytes each; 1,000,000 make 106 MB): the 1M-card
                                   memory benchmark, where the count is what matters

The cards mimic real exporters, in these shares (card i's dialect is drawn at random):
  30 %  Android vCard 2.1: quoted-printable N/FN, TEL;CELL;PREF: / TEL;HOME: / TEL;WORK:,
        a TEL;WORK;FAX: on a third of them (skipped by design), EMAIL, ADR, NOTE, ORG.
  30 %  Google 3.0: TEL;TYPE=CELL, TYPE=HOME, TYPE=WORK,FAX (a third), a folded NOTE,
        CATEGORIES.
  25 %  iCloud 3.0: PRODID:-//Apple Inc.//iPhone OS 17.0//EN, grouped properties
        (item1.TEL;type=pref + item1.X-ABLabel:_$!<Mobile>!$_, item2.EMAIL;type=INTERNET),
        lowercase repeated types (type=CELL;type=VOICE), type=HOME;type=FAX on a third.
  15 %  vCard 4.0: KIND:individual, UID:urn:uuid:…, TEL;VALUE=uri;TYPE="cell,voice";PREF=1:
        tel:+… URIs, a ;ext=NN on a tenth of the work numbers, TYPE=fax on a third.

Phone numbers: each card has 1 (25 %), 2 (50 %) or 3 (25 %) numbers besides the fax, so
about 2.0 per card and N cards give about 2N numbers to sync. The numbers come from 18
regions (DE 40 %; US, GB, FR, IT, ES, NL, PL, TR, IN, BR, JP, CN, AU, RU, MX, NG, ZA 60 %
together), built from each region's real mobile and fixed-line ranges so that
libphonenumber accepts them. German numbers are written in national form ("0151 …",
"(030) …") half of the time: the benchmarks use default_region = "DE". Every other number is
international ("+44 20 …", "+1 (415) …", "0044 …" or "+33612…"; in 4.0 "tel:+33-1-…").
At least six digits are a bijection of the card index, so numbers are distinct across
cards (up to 10^6 cards).

About 5 % of the cards carry an inline photo: base64 of 8–40 KB of random bytes, in the
dialect's form (2.1: PHOTO;ENCODING=BASE64;TYPE=JPEG: with continuation lines starting with a
space and an empty line after; 3.0: PHOTO;ENCODING=b;TYPE=JPEG: folded at 75 octets; 4.0:
PHOTO:data:image/jpeg;base64,… folded). 100,000 cards make about 215 MB, 170 MB of it photos.
Cards carry a UID except the Android ones; vdir files are named <uid>.vcf all the same.

Everything is CRLF; 3.0 and 4.0 lines longer than 75 octets are folded as exporters do.
"""
import base64
import os
import random
import sys

FIRST = ["Anna", "Jörg", "Zoë", "Mehmet", "Sofia", "Li", "Ólafur", "Chloé", "Ivan", "Amara",
         "Priya", "Kenji", "Łukasz", "Fatma", "João", "Chidi", "Thandiwe", "Olivia", "Wei", "Liam"]
LAST = ["Schmidt", "Müller", "Öztürk", "García", "Kowalska", "Nguyen", "Dubois", "Rossi",
        "Sharma", "Tanaka", "Nowak", "Yılmaz", "Silva", "Okafor", "Dlamini", "Smith", "Zhang"]
CITY = {"DE": ("Berlin", "10115", "Germany"), "US": ("San Francisco", "94103", "USA"),
        "GB": ("London", "EC1A 1BB", "United Kingdom"), "FR": ("Paris", "75002", "France")}

# Region: (country code, weight, {slot: [(nsn prefix, nsn length, digit groups)]}).
# The nsn (national significant number) is the prefix followed by free digits (the card
# index, at least 6 of them); the groups are how the exporter spaces it. Slots are
# disjoint so the numbers of one card never coincide. Ranges follow libphonenumber's
# metadata (mobile and fixed-line patterns of each region).
REGIONS = {
    "DE": (49, 40, {
        "cell": [("151", 11, (3, 8)), ("152", 11, (3, 8)), ("157", 11, (3, 8)),
                 ("160", 10, (3, 7)), ("162", 11, (3, 8)), ("172", 10, (3, 7)),
                 ("176", 11, (3, 8)), ("179", 11, (3, 8))],
        "home": [("302", 10, (2, 8)), ("303", 10, (2, 8)), ("404", 10, (2, 8)),
                 ("895", 10, (2, 8)), ("692", 10, (2, 8))],
        "work": [("2215", 10, (3, 7)), ("2116", 10, (3, 7)), ("7112", 10, (3, 7)),
                 ("5113", 10, (3, 7)), ("3414", 10, (3, 7))],
        "fax": [("3519", 10, (3, 7))],
    }),
    "US": (1, 6, {
        "cell": [(npa + "9", 10, (3, 3, 4)) for npa in ("646", "415", "312", "617")],
        "home": [(npa + d, 10, (3, 3, 4)) for npa in ("212", "206", "305") for d in "234"],
        "work": [(npa + d, 10, (3, 3, 4)) for npa in ("512", "713", "303") for d in "678"],
        "fax": [("4048", 10, (3, 3, 4))],
    }),
    "GB": (44, 6, {
        "cell": [("7400", 10, (4, 6)), ("7782", 10, (4, 6)), ("7912", 10, (4, 6))],
        "home": [("207", 10, (2, 4, 4)), ("1614", 10, (3, 3, 4))],
        "work": [("203", 10, (2, 4, 4)), ("1312", 10, (3, 3, 4))],
        "fax": [("208", 10, (2, 4, 4))],
    }),
    "FR": (33, 5, {
        "cell": [("61", 9, (1, 2, 2, 2, 2)), ("67", 9, (1, 2, 2, 2, 2)), ("75", 9, (1, 2, 2, 2, 2))],
        "home": [("12", 9, (1, 2, 2, 2, 2)), ("47", 9, (1, 2, 2, 2, 2))],
        "work": [("14", 9, (1, 2, 2, 2, 2)), ("56", 9, (1, 2, 2, 2, 2))],
        "fax": [("38", 9, (1, 2, 2, 2, 2))],
    }),
    "IT": (39, 4, {
        "cell": [("347", 10, (3, 7)), ("335", 10, (3, 7)), ("320", 10, (3, 7))],
        "home": [("064", 10, (2, 4, 4)), ("025", 10, (2, 4, 4))],
        "work": [("0553", 10, (3, 3, 4))],
        "fax": [("0116", 10, (3, 3, 4))],
    }),
    "ES": (34, 4, {
        "cell": [("61", 9, (3, 3, 3)), ("69", 9, (3, 3, 3))],
        "home": [("91", 9, (2, 3, 2, 2))],
        "work": [("93", 9, (2, 3, 2, 2))],
        "fax": [("95", 9, (2, 3, 2, 2))],
    }),
    "NL": (31, 3, {
        "cell": [("61", 9, (1, 4, 4)), ("64", 9, (1, 4, 4))],
        "home": [("205", 9, (2, 3, 4))],
        "work": [("104", 9, (2, 3, 4))],
        "fax": [("307", 9, (2, 3, 4))],
    }),
    "PL": (48, 3, {
        "cell": [("501", 9, (3, 3, 3)), ("601", 9, (3, 3, 3)), ("790", 9, (3, 3, 3))],
        "home": [("225", 9, (2, 3, 2, 2))],
        "work": [("124", 9, (2, 3, 2, 2))],
        "fax": [("616", 9, (2, 3, 2, 2))],
    }),
    "TR": (90, 3, {
        "cell": [("532", 10, (3, 3, 2, 2)), ("542", 10, (3, 3, 2, 2))],
        "home": [("2124", 10, (3, 3, 2, 2))],
        "work": [("2165", 10, (3, 3, 2, 2))],
        "fax": [("3126", 10, (3, 3, 2, 2))],
    }),
    "IN": (91, 4, {
        "cell": [("98", 10, (5, 5)), ("99", 10, (5, 5))],
        "home": [("1124", 10, (2, 4, 4))],
        "work": [("2226", 10, (2, 4, 4))],
        "fax": [("8025", 10, (2, 4, 4))],
    }),
    "BR": (55, 4, {
        "cell": [("119", 11, (2, 5, 4)), ("219", 11, (2, 5, 4))],
        "home": [("113", 10, (2, 4, 4))],
        "work": [("213", 10, (2, 4, 4))],
        "fax": [("313", 10, (2, 4, 4))],
    }),
    "JP": (81, 3, {
        "cell": [("901", 10, (2, 4, 4)), ("802", 10, (2, 4, 4))],
        "home": [("35", 9, (1, 4, 4))],
        "work": [("65", 9, (1, 4, 4))],
        "fax": [("36", 9, (1, 4, 4))],
    }),
    "CN": (86, 3, {
        "cell": [("139", 11, (3, 4, 4)), ("138", 11, (3, 4, 4))],
        "home": [("106", 10, (2, 4, 4))],
        "work": [("216", 10, (2, 4, 4))],
        "fax": [("205", 10, (2, 4, 4))],
    }),
    "AU": (61, 3, {
        "cell": [("412", 9, (3, 3, 3)), ("423", 9, (3, 3, 3))],
        "home": [("29", 9, (1, 4, 4))],
        "work": [("39", 9, (1, 4, 4))],
        "fax": [("73", 9, (1, 4, 4))],
    }),
    "RU": (7, 3, {
        "cell": [("916", 10, (3, 3, 2, 2)), ("926", 10, (3, 3, 2, 2))],
        "home": [("4957", 10, (3, 3, 2, 2))],
        "work": [("8122", 10, (3, 3, 2, 2))],
        "fax": [("4993", 10, (3, 3, 2, 2))],
    }),
    "MX": (52, 3, {
        "cell": [("551", 10, (2, 4, 4)), ("332", 10, (2, 4, 4))],
        "home": [("553", 10, (2, 4, 4))],
        "work": [("818", 10, (2, 4, 4))],
        "fax": [("554", 10, (2, 4, 4))],
    }),
    "NG": (234, 2, {
        "cell": [("803", 10, (3, 3, 4)), ("806", 10, (3, 3, 4))],
        "home": [("2012", 10, (3, 3, 4))],  # the 2023 plan: Lagos 0201, Abuja 0209
        "work": [("2092", 10, (3, 3, 4))],
        "fax": [("2023", 10, (3, 3, 4))],
    }),
    "ZA": (27, 2, {
        "cell": [("82", 9, (2, 3, 4)), ("72", 9, (2, 3, 4))],
        "home": [("11", 9, (2, 3, 4))],
        "work": [("21", 9, (2, 3, 4))],
        "fax": [("31", 9, (2, 3, 4))],
    }),
}
REGION_NAMES = list(REGIONS)
REGION_WEIGHTS = [REGIONS[r][1] for r in REGION_NAMES]


def number(i, rng, slot):
    """(region, country code, nsn, groups) of card i's number in `slot`."""
    region = rng.choices(REGION_NAMES, REGION_WEIGHTS)[0]
    cc, _, slots = REGIONS[region]
    prefix, length, groups = rng.choice(slots[slot])
    free = length - len(prefix)
    # i * k + 4711 with k prime to 10 is a bijection modulo 10^free: distinct for distinct i
    # below 10^free, and the digits look less like a counter (and differ between slots).
    k = {"cell": 7919, "home": 4001, "work": 2003, "fax": 9011}[slot]
    return region, cc, prefix + f"{(i * k + 4711) % 10 ** free:0{free}d}", groups


def grouped(nsn, groups, sep=" "):
    parts, at = [], 0
    for size in groups:
        parts.append(nsn[at:at + size])
        at += size
    return sep.join(parts)


def written(num, rng):
    """The number as a person or an exporter typed it."""
    region, cc, nsn, groups = num
    style = rng.random()
    if region == "DE" and style < 0.5:  # national, resolved through default_region
        first, rest = nsn[:groups[0]], nsn[groups[0]:]
        return rng.choice([f"0{first} {rest}", f"(0{first}) {rest}", f"0{first}/{rest}", f"0{nsn}"])
    if region == "US" and style < 0.6:
        return f"+1 ({nsn[:3]}) {nsn[3:6]}-{nsn[6:]}"
    if style < 0.70:
        return f"+{cc} {grouped(nsn, groups)}"
    if style < 0.85:
        return f"00{cc} {grouped(nsn, groups)}"
    return f"+{cc}{nsn}"


def tel_uri(num):
    _, cc, nsn, groups = num
    return f"tel:+{cc}-{grouped(nsn, groups, '-')}"


def numbers_of(i, rng):
    """The card's numbers by slot: cell always, then home/work, then maybe a fax."""
    count = rng.choices((1, 2, 3), (1, 2, 1))[0]
    slots = ["cell", "home", "work"][:count]
    nums = [(slot, number(i, rng, slot)) for slot in slots]
    fax = number(i, rng, "fax") if rng.random() < 1 / 3 else None
    return nums, fax


def qp(text):
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"={b:02X}" for b in c.encode()) for c in text)


def fold(line, width=75):
    """Folds one logical line (without CRLF) at `width` octets, never inside a character."""
    data = line.encode()
    if len(data) <= width:
        return line + "\r\n"
    out, start, limit = [], 0, width
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        out.append(data[start:end].decode())
        start, limit = end, width - 1  # continuation lines start with a space
    return "\r\n ".join(out) + "\r\n"


def photo(rng):
    return base64.b64encode(rng.randbytes(rng.randrange(8 * 1024, 40 * 1024 + 1))).decode()


def photo_21(data):
    # Android: the first chunk on the property line, then lines of a space and 74
    # characters, then an empty line ending the value.
    head, rest = "PHOTO;ENCODING=BASE64;TYPE=JPEG:", data
    first = 75 - len(head)
    lines = [head + rest[:first]] + [" " + rest[k:k + 74] for k in range(first, len(rest), 74)]
    return "\r\n".join(lines) + "\r\n\r\n"


NOTE = "Met at the conference; call before noon. Prefers messages to calls, in the evening."


def uid_of(i):
    return f"{i:08x}-5f7d-4e1a-9c2b-0d8e7f6a5b41"


def android21(i, rng, first, last, nums, fax, pic):
    types = {"cell": "TEL;CELL;PREF", "home": "TEL;HOME", "work": "TEL;WORK"}
    tels = "".join(f"{types[slot]}:{written(num, rng)}\r\n" for slot, num in nums)
    if fax:
        tels += f"TEL;WORK;FAX:{written(fax, rng)}\r\n"
    return (
        "BEGIN:VCARD\r\nVERSION:2.1\r\n"
        f"N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{qp(last)};{qp(first)};;;\r\n"
        f"FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{qp(first)}=20{qp(last)}\r\n"
        f"{tels}"
        f"EMAIL;PREF;INTERNET:{ascii_mail(first)}.{i}@example.org\r\n"
        f"ADR;HOME:;;Hauptstrasse {i % 200};Berlin;;10115;Germany\r\n"
        f"NOTE:{NOTE[:60]}\r\n"
        "ORG:Example GmbH;Sales\r\nTITLE:Account Manager\r\n"
        + (photo_21(pic) if pic else "")
        + "END:VCARD\r\n"
    )


def google30(i, rng, first, last, nums, fax, pic):
    types = {"cell": "TEL;TYPE=CELL", "home": "TEL;TYPE=HOME", "work": "TEL;TYPE=WORK"}
    tels = "".join(f"{types[slot]}:{written(num, rng)}\r\n" for slot, num in nums)
    if fax:
        tels += f"TEL;TYPE=WORK,FAX:{written(fax, rng)}\r\n"
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\n"
        f"FN:{first} {last}\r\nN:{last};{first};;;\r\n"
        f"{tels}"
        f"EMAIL;TYPE=INTERNET:{ascii_mail(first)}.{i}@example.org\r\n"
        f"ADR;TYPE=HOME:;;Hauptstraße {i % 200};Berlin;;10115;Germany\r\n"
        + fold(f"NOTE:{NOTE}")
        + "ORG:Example GmbH;Sales\r\nTITLE:Account Manager\r\n"
        "CATEGORIES:myContacts,Friends\r\n"
        + (fold(f"PHOTO;ENCODING=b;TYPE=JPEG:{pic}") if pic else "")
        + f"UID:{uid_of(i)}\r\n"
        "END:VCARD\r\n"
    )


def icloud30(i, rng, first, last, nums, fax, pic):
    lines, item = [], 1
    for slot, num in nums:
        if slot == "cell" and rng.random() < 0.5:
            lines.append(f"item{item}.TEL;type=pref:{written(num, rng)}")
            lines.append(f"item{item}.X-ABLabel:_$!<Mobile>!$_")
            item += 1
        elif slot == "cell":
            lines.append(f"TEL;type=CELL;type=VOICE;type=pref:{written(num, rng)}")
        elif slot == "home":
            lines.append(f"TEL;type=HOME;type=VOICE:{written(num, rng)}")
        else:
            lines.append(f"TEL;type=WORK;type=VOICE:{written(num, rng)}")
    if fax:
        lines.append(f"TEL;type=HOME;type=FAX:{written(fax, rng)}")
    lines.append(f"item{item}.EMAIL;type=INTERNET:{ascii_mail(first)}.{i}@icloud.com")
    lines.append(f"item{item}.X-ABLabel:_$!<Other>!$_")
    item += 1
    city, zip_, country = CITY.get(nums[0][1][0], ("Berlin", "10115", "Germany"))
    lines.append(f"item{item}.ADR;type=HOME;type=pref:;;{i % 200} Main Street;{city};;{zip_};{country}")
    lines.append(f"item{item}.X-ABADR:{nums[0][1][0].lower()}")
    body = "".join(fold(line) for line in lines)
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Apple Inc.//iPhone OS 17.0//EN\r\n"
        f"N:{last};{first};;;\r\nFN:{first} {last}\r\nORG:Example Ltd.;\r\n"
        f"UID:{uid_of(i).upper()}\r\n"
        f"{body}"
        + (fold(f"PHOTO;ENCODING=b;TYPE=JPEG:{pic}") if pic else "")
        + "END:VCARD\r\n"
    )


def vcard40(i, rng, first, last, nums, fax, pic):
    types = {"cell": '"cell,voice";PREF=1', "home": '"home,voice"', "work": '"work,voice"'}
    lines = []
    for slot, num in nums:
        ext = f";ext={10 + i % 90}" if slot == "work" and rng.random() < 0.1 else ""
        lines.append(f"TEL;VALUE=uri;TYPE={types[slot]}:{tel_uri(num)}{ext}")
    if fax:
        lines.append(f"TEL;VALUE=uri;TYPE=fax:{tel_uri(fax)}")
    lines.append(f"EMAIL;TYPE=work:{ascii_mail(first)}.{i}@example.com")
    lines.append(f"NOTE:{NOTE}")
    if pic:
        lines.append(f"PHOTO:data:image/jpeg;base64,{pic}")
    body = "".join(fold(line) for line in lines)
    return (
        "BEGIN:VCARD\r\nVERSION:4.0\r\nKIND:individual\r\n"
        f"UID:urn:uuid:{uid_of(i)}\r\n"
        f"FN:{first} {last}\r\nN:{last};{first};;;\r\n"
        f"{body}"
        "REV:20240115T103000Z\r\n"
        "END:VCARD\r\n"
    )


def ascii_mail(name):
    return name.lower().encode("ascii", "ignore").decode() or "x"


DIALECTS = [(android21, 30), (google30, 30), (icloud30, 25), (vcard40, 15)]


def card(i, rng, photos=True):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    nums, fax = numbers_of(i, rng)
    pic = photo(rng) if rng.random() < 0.05 else None
    if not photos:
        pic = None
    dialect = rng.choices([d for d, _ in DIALECTS], [w for _, w in DIALECTS])[0]
    return dialect(i, rng, first, last, nums, fax, pic)


def small_card(i, rng):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    # +49 151 and eight digits of the index: a valid German mobile number, distinct per card.
    return (f"BEGIN:VCARD\r\nVERSION:3.0\r\nN:{last};{first};;;\r\nFN:{first} {last}\r\n"
            f"TEL;TYPE=CELL:+49 151 {i:08d}\r\nEND:VCARD\r\n")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    count, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(count)
    if "--small" in sys.argv[3:]:
        with open(out, "w", encoding="utf-8", newline="") as f:
            for i in range(count):
                f.write(small_card(i, rng))
        return
    photos = "--no-photos" not in sys.argv[3:]
    if "--vdir" in sys.argv[3:]:
        os.makedirs(out, exist_ok=True)
        for i in range(count):
            with open(os.path.join(out, f"{uid_of(i)}.vcf"), "w", encoding="utf-8", newline="") as f:
                f.write(card(i, rng, photos))
    else:
        with open(out, "w", encoding="utf-8", newline="") as f:
            for i in range(count):
                f.write(card(i, rng, photos))


if __name__ == "__main__":
    main()
