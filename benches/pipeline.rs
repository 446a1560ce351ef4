//! The pure stages, one at a time: parse (bytes/s), normalize (numbers/s), diff (contacts/s)
//! and batching (items/s). Inputs come from `benches/gen_vcf.py` (run once, kept under
//! target/bench-data), so the figures are for the same mix as the end-to-end benchmarks.
//!
//! cargo bench --bench pipeline

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::path::{Path, PathBuf};

use contactsyncd::diff::{self, ImportReason, MirrorEntry, MirrorState, Names, PlannedImport};
use contactsyncd::phone::{self, DefaultRegion};
use contactsyncd::{batch, vcard};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A generated export of `cards` cards (photos on about 5% of them unless `no_photos`).
fn export(cards: usize, no_photos: bool) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target").join("bench-data");
    std::fs::create_dir_all(&dir).expect("creating target/bench-data");
    let suffix = if no_photos { "-text" } else { "" };
    let path: PathBuf = dir.join(format!("export-{cards}{suffix}.vcf"));
    if !path.exists() {
        let mut command = std::process::Command::new("python3");
        command
            .arg(root.join("benches").join("gen_vcf.py"))
            .arg(cards.to_string())
            .arg(&path);
        if no_photos {
            command.arg("--no-photos");
        }
        let status = command
            .status()
            .expect("running python3 benches/gen_vcf.py");
        assert!(status.success(), "gen_vcf.py failed");
    }
    std::fs::read(&path).expect("reading the generated export")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    for (name, no_photos) in [
        ("10k cards, text only", true),
        ("10k cards, 5% photos", false),
    ] {
        let bytes = export(10_000, no_photos);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let parsed = vcard::parse_bytes(black_box(&bytes)).expect("parses");
                assert_eq!(parsed.cards.len(), 10_000);
                parsed
            })
        });
    }
    // The ceiling: calcard alone, every property, on the same text (valid UTF-8).
    let bytes = export(10_000, true);
    let text = std::str::from_utf8(&bytes).expect("the generator writes UTF-8");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("10k cards, text only, calcard alone", |b| {
        b.iter(|| {
            let mut parser = calcard::Parser::new(black_box(text));
            let mut cards = 0;
            loop {
                match parser.entry() {
                    calcard::Entry::VCard(_) => cards += 1,
                    calcard::Entry::Eof => break,
                    _ => {}
                }
            }
            assert_eq!(cards, 10_000);
        })
    });
    group.finish();
}

fn normalize(c: &mut Criterion) {
    let bytes = export(10_000, true);
    let raw: Vec<String> = vcard::parse_bytes(&bytes)
        .expect("parses")
        .good_cards()
        .flat_map(|card| card.phones.iter().map(|p| p.value.clone()))
        .collect();
    let region = Some(DefaultRegion::parse("DE").expect("DE is a region"));
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(raw.len() as u64));
    group.bench_function(format!("{} TEL values, region DE", raw.len()), |b| {
        b.iter(|| {
            raw.iter()
                .filter(|value| phone::normalize(black_box(value), region).is_ok())
                .count()
        })
    });
    group.finish();
}

fn names(i: usize) -> Names {
    Names {
        first: format!("First{}", i % 977),
        last: format!("Last{}", i % 613),
    }
}

/// 100,000 desired contacts against a mirror where 1% are new, 1% renamed and 1% gone.
fn diff_input() -> (BTreeMap<String, Names>, BTreeMap<String, MirrorEntry>) {
    let number = |i: usize| format!("+49151{i:08}");
    let desired: BTreeMap<String, Names> = (0..100_000).map(|i| (number(i), names(i))).collect();
    let mirror = (0..100_000)
        .filter(|i| i % 100 != 0)
        .map(|i| {
            let mut names = names(i);
            if i % 100 == 1 {
                names.first.push('x');
            }
            let e164 = if i % 100 == 2 {
                number(200_000 + i)
            } else {
                number(i)
            };
            let entry = MirrorEntry {
                names,
                state: MirrorState::Imported,
                hold: None,
                delete_held_until: None,
            };
            (e164, entry)
        })
        .collect();
    (desired, mirror)
}

fn plan(c: &mut Criterion) {
    let (desired, mirror) = diff_input();
    let in_flight = BTreeSet::new();
    let mut group = c.benchmark_group("diff");
    group.throughput(Throughput::Elements(desired.len() as u64));
    group.bench_function("100k contacts, 3% changed", |b| {
        b.iter(|| {
            let plan = diff::diff(
                black_box(&desired),
                black_box(&mirror),
                &in_flight,
                1_800_000_000,
            );
            assert_eq!(plan.imports.len(), 3_000);
            plan
        })
    });
    group.finish();

    let imports: Vec<PlannedImport> = desired
        .iter()
        .map(|(e164, names)| PlannedImport {
            e164: e164.clone(),
            names: names.clone(),
            reason: ImportReason::New,
        })
        .collect();
    let deletes: Vec<String> = desired.keys().cloned().collect();
    let mut group = c.benchmark_group("batching");
    group.throughput(Throughput::Elements(imports.len() as u64));
    group.bench_function("100k imports into batches of 100", |b| {
        b.iter(|| {
            batch::numbered_batches(black_box(&imports), 100, 1)
                .collect::<Vec<Vec<batch::ImportItem>>>()
        })
    });
    group.bench_function("100k deletes into batches of 100", |b| {
        b.iter(|| batch::delete_batches(black_box(&deletes), 100))
    });
    group.finish();
}

// The binary's allocator (src/main.rs): with glibc malloc a quarter of parsing is malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

criterion_group!(benches, parse, normalize, plan);
criterion_main!(benches);
