//! The daemon's change passes, through the real binary and the local Telegram server: an
//! edit and a removal reach the server without a scan of the whole book (the full pass runs
//! only at start here: `rescan_interval` is an hour), many small removals are held as one
//! pass over them would be, and a vanished or emptied source deletes nothing.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, registering_server};
use crate::sync::{card, phone, write_vdir};
use crate::telegram::{ServerOptions, TestServer};

/// Debug logs (the passes say which they were), no periodic full pass during the test.
const WATCH: &str = "[watch]\ndebounce = \"100ms\"\nrescan_interval = \"1h\"\n";

/// The running daemon, stopped (SIGTERM) when dropped: also when an assertion failed.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start(daemon: &Daemon) -> Running {
    Running(
        daemon
            .command()
            .env("CONTACTSYNCD_LOG", "contactsyncd=debug")
            .spawn()
            .unwrap(),
    )
}

/// The server's contacts: phone (without `+`) → first name.
fn contacts(server: &TestServer) -> Vec<(String, String)> {
    server
        .state()
        .account
        .contacts
        .values()
        .map(|c| (c.phone.clone(), c.first_name.clone()))
        .collect()
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(server: &TestServer, i: usize) -> bool {
    contacts(server).iter().any(|(p, _)| *p == phone(i)[1..])
}

/// Written as an editor or vdirsyncer writes: a temporary file renamed over the card.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("vcf.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn stop(child: Running) {
    drop(child);
}

#[tokio::test]
async fn an_edit_and_a_removal_reach_the_server_without_a_scan_of_the_book() {
    let server = registering_server(ServerOptions::default()).await;
    let daemon = Daemon::prepare(&server, 0..30, "", WATCH, "");
    let child = start(&daemon);
    until("the first pass", Duration::from_secs(20), || {
        contacts(&server).len() == 30
    })
    .await;

    replace(&daemon.book.join("00003.vcf"), &card("Renamed Three", 3));
    let renamed = || {
        contacts(&server)
            .iter()
            .any(|(p, first)| *p == phone(3)[1..] && first == "Renamed Three")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !renamed() {
        assert!(
            Instant::now() < deadline,
            "not renamed: {:?}\n{}",
            contacts(&server),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(daemon.book.join("00005.vcf")).unwrap();
    until("the removal", Duration::from_secs(5), || !has(&server, 5)).await;
    // A new card in a new folder: the folder is the full pass's, its card then synced.
    std::fs::create_dir(daemon.book.join("family")).unwrap();
    write_vdir(&daemon.book.join("family"), 40..41);
    until("the card in a new folder", Duration::from_secs(5), || {
        has(&server, 40)
    })
    .await;
    stop(child);

    let log = daemon.log_text();
    let passes = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    // The first pass, and the new folder (its card came with it or after it).
    assert!(
        (1..=2).contains(&passes("full pass queued")),
        "an edit or a removal ran the full pass: {log}"
    );
    assert!(passes("change pass queued") >= 2, "{log}");
    assert!(
        log.contains("removed=1"),
        "the removal was a change pass: {log}"
    );
    assert_eq!(contacts(&server).len(), 30);
}

/// `max_deletes = 3`: five cards removed one at a time, each in a pass of its own, are five
/// deletions in one window; the fourth and fifth are held as one pass over all five would
/// hold them.
#[tokio::test]
async fn many_small_removals_are_held_as_one_pass_would_hold_them() {
    let server = registering_server(ServerOptions::default()).await;
    let tables = format!("{WATCH}[safety]\nmax_deletes = 3\nmax_delete_fraction = 1.0\n");
    let daemon = Daemon::prepare(&server, 0..20, "", &tables, "");
    let child = start(&daemon);
    until("the first pass", Duration::from_secs(20), || {
        contacts(&server).len() == 20
    })
    .await;
    for i in 0..3 {
        std::fs::remove_file(daemon.book.join(format!("{i:05}.vcf"))).unwrap();
        until("a removal", Duration::from_secs(5), || !has(&server, i)).await;
    }
    for i in 3..5 {
        std::fs::remove_file(daemon.book.join(format!("{i:05}.vcf"))).unwrap();
        let held = i - 2;
        until("the deletion held", Duration::from_secs(5), || {
            daemon.log_text().matches("deletions held").count() >= held
        })
        .await;
    }
    // Well past the debounce and a send: nothing more went.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(child);
    assert!(
        has(&server, 3) && has(&server, 4),
        "{:?}",
        contacts(&server)
    );
    assert_eq!(contacts(&server).len(), 17);
    let log = daemon.log_text();
    assert!(
        log.contains("counting the 3 deletions queued by the passes just before"),
        "{log}"
    );
}

/// A vdir removed as a whole: the change pass leaves it to the full pass, which keeps its
/// contacts (unknown, not emptied).
#[tokio::test]
async fn a_vanished_source_deletes_nothing() {
    let server = registering_server(ServerOptions::default()).await;
    // The guard alone would hold deleting every contact: let it, to see the source rule.
    let tables = format!("{WATCH}[safety]\nmax_delete_fraction = 1.0\n");
    let daemon = Daemon::prepare(&server, 0..3, "", &tables, "");
    let child = start(&daemon);
    until("the first pass", Duration::from_secs(20), || {
        contacts(&server).len() == 3
    })
    .await;
    std::fs::remove_dir_all(&daemon.book).unwrap();
    until("the source unknown", Duration::from_secs(5), || {
        daemon.log_text().contains("source counts as unknown")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(child);
    assert_eq!(
        contacts(&server).len(),
        3,
        "a vanished source deleted contacts"
    );
}

/// A vdir emptied one file at a time: the removal that would leave it without a card is the
/// full pass's, which keeps the last contact (an emptied source counts as unknown).
#[tokio::test]
async fn an_emptied_source_keeps_its_last_contact() {
    let server = registering_server(ServerOptions::default()).await;
    let tables = format!("{WATCH}[safety]\nmax_delete_fraction = 1.0\n");
    let daemon = Daemon::prepare(&server, 0..3, "", &tables, "");
    let child = start(&daemon);
    until("the first pass", Duration::from_secs(20), || {
        contacts(&server).len() == 3
    })
    .await;
    for i in 0..2 {
        std::fs::remove_file(daemon.book.join(format!("{i:05}.vcf"))).unwrap();
        until("a removal", Duration::from_secs(5), || !has(&server, i)).await;
    }
    std::fs::remove_file(daemon.book.join("00002.vcf")).unwrap();
    until("the emptied source unknown", Duration::from_secs(5), || {
        daemon.log_text().contains("the source is empty now")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(child);
    assert!(
        has(&server, 2),
        "an emptied source deleted its last contact"
    );
}

/// Transparent huge pages are off for the daemon (src/main.rs, and mimalloc's `no_thp`):
/// with them, every allocator page holding a few live objects kept 2 MiB resident, and an
/// idle daemon of 20 cards held 78 MB (a release build, `AnonHugePages` in its smaps).
/// 600 files: the first pass parses on every core, as a large book's does.
#[tokio::test]
async fn the_idle_daemon_holds_no_huge_pages() {
    let server = registering_server(ServerOptions::default()).await;
    let daemon = Daemon::prepare(&server, 0..600, "", WATCH, "");
    let child = start(&daemon);
    until("the first pass", Duration::from_secs(120), || {
        contacts(&server).len() == 600
    })
    .await;
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", child.0.id())).unwrap();
    let huge_kb: u64 = rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("smaps_rollup has AnonHugePages");
    stop(child);
    assert_eq!(huge_kb, 0, "huge pages held by the idle daemon:\n{rollup}");
}
