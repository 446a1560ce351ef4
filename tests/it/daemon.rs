//! `contactsyncd run`, the real binary: systemd notifications, a change synced within 2 s,
//! a broken reload survived, SIGTERM honoured.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use contactsyncd::store::Store;

use crate::sync::{phone, write_vdir};
use crate::telegram::account::Registration;
use crate::telegram::{Fault, ServerOptions, TestServer};

/// The notify messages until one with the line `wanted`, that one included.
fn wait_for(socket: &UnixDatagram, wanted: &str, within: Duration) -> Vec<String> {
    next_line(socket, |l| l == wanted, within)
        .map(|(seen, _)| seen)
        .unwrap_or_else(|seen| panic!("no {wanted} within {within:?}; got {seen:?}"))
}

/// Reads notify messages until a line matches: (the messages up to that one, the line), or
/// every message seen when none did within `within`.
fn next_line(
    socket: &UnixDatagram,
    matches: impl Fn(&str) -> bool,
    within: Duration,
) -> Result<(Vec<String>, String), Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let line = message.lines().find(|l| matches(l)).map(str::to_owned);
            seen.push(message);
            if let Some(line) = line {
                return Ok((seen, line));
            }
        }
    }
    Err(seen)
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A daemon's surroundings: a vdir `book` with cards `cards`, and a config whose
/// `top` keys, `tables` and `[telegram]` lines (`telegram`) come on top of the common ones,
/// for the local test server, whose session is seeded into the state.
pub(crate) struct Daemon {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) book: std::path::PathBuf,
    pub(crate) config: std::path::PathBuf,
    pub(crate) config_text: String,
}

impl Daemon {
    pub(crate) fn prepare(
        server: &TestServer,
        cards: std::ops::Range<usize>,
        top: &str,
        tables: &str,
        telegram: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let book = dir.path().join("book");
        std::fs::create_dir(&book).unwrap();
        write_vdir(&book, cards);
        let config_text = format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n{top}[[source]]\npath = \"book\"\n{tables}[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\n{telegram}"
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, &config_text).unwrap();
        crate::support::seed_telegram_session(&dir.path().join("state"), server);
        Self {
            dir,
            book,
            config,
            config_text,
        }
    }

    /// `contactsyncd run` in a clean environment, its stderr appended to `daemon.log`.
    pub(crate) fn command(&self) -> std::process::Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"));
        command
            .args(["--config", self.config.to_str().unwrap(), "run"])
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stderr(log);
        command
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap()
    }
}

/// A test server that registers every number it is asked about.
pub(crate) async fn registering_server(options: ServerOptions) -> TestServer {
    let server = TestServer::start(options).await;
    server.state().account.rule = Registration::All;
    server
}

#[tokio::test]
async fn run_notifies_syncs_changes_survives_a_bad_reload_and_stops_on_sigterm() {
    let server = registering_server(ServerOptions::default()).await;
    let daemon = Daemon::prepare(&server, 0..2, "", "[watch]\ndebounce = \"200ms\"\n", "");
    let (book, config) = (&daemon.book, &daemon.config);

    let socket_path = daemon.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = daemon
        .command()
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()
        .unwrap();
    let pid = child.id();

    let socket = tokio::task::spawn_blocking(move || {
        wait_for(&socket, "READY=1", Duration::from_secs(20));
        socket
    })
    .await
    .unwrap();

    // The first pass imports what is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.state().account.contacts.len() < 2 {
        assert!(Instant::now() < deadline, "the first pass did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A new card is on the server within 2 s of being written.
    let written = Instant::now();
    write_vdir(book, 2..3);
    let wanted = phone(2)[1..].to_owned();
    while !server
        .state()
        .account
        .contacts
        .values()
        .any(|c| c.phone == wanted)
    {
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "not synced within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latency = written.elapsed();

    // One daemon per state directory: a second refuses and names the first.
    let second = daemon
        .command()
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second daemon started: {refusal}"
    );
    assert!(
        refusal.contains(&format!("pid {pid}")),
        "the refusal names the running daemon: {refusal}"
    );
    // Issue 16.13: the change pass shows the contact it planned, the send pass what it sent.
    let config_arg = config.to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let args = config_arg.clone();
        let history = tokio::task::spawn_blocking(move || {
            crate::support::contactsyncd(&["--config", &args, "history"], &[])
        })
        .await
        .unwrap();
        let text = crate::support::stdout(&history);
        let change = text.contains("1 file (1 parsed) changed: 1 contact; planned 1 import");
        let send = text.contains("send") && text.contains("sent 1 batch: 1 imported");
        if change && send {
            assert!(!text.contains("0 files"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Issue 16.8: `status` says a daemon runs on this state, from its lock, read-only.
    let config_arg = config.to_str().unwrap().to_owned();
    let status = tokio::task::spawn_blocking(move || {
        crate::support::contactsyncd(&["--config", &config_arg, "status"], &[])
    })
    .await
    .unwrap();
    let status_text = crate::support::stdout(&status);
    assert!(
        status_text.contains(&format!(
            "daemon: running on this state (pid {pid}, `contactsyncd run`)"
        )),
        "{status_text}"
    );

    // A broken configuration on SIGHUP is refused; the daemon keeps running.
    std::fs::write(config, format!("{}bogus_key = 1\n", daemon.config_text)).unwrap();
    signal(pid, "HUP");
    let socket = tokio::task::spawn_blocking(move || {
        wait_for(&socket, "READY=1", Duration::from_secs(10));
        socket
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after a bad reload"
    );
    let log_text = daemon.log_text();
    assert!(log_text.contains("reload refused"), "{log_text}");
    assert!(
        log_text.contains("bogus_key"),
        "the log names the key: {log_text}"
    );

    signal(pid, "TERM");
    tokio::task::spawn_blocking(move || wait_for(&socket, "STOPPING=1", Duration::from_secs(10)))
        .await
        .unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(stopped.elapsed() < Duration::from_secs(12), "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    eprintln!("write → server latency: {latency:?}");
}

/// `watch.poll = true` for file systems without inotify, and a source folder that vanishes
/// and comes back is watched again.
#[tokio::test]
async fn polling_and_a_source_that_comes_back() {
    let server = registering_server(ServerOptions::default()).await;
    let daemon = Daemon::prepare(
        &server,
        0..1,
        "",
        "[watch]\ndebounce = \"200ms\"\npoll = true\nrescan_interval = 1\n",
        "",
    );
    let (dir, book) = (&daemon.dir, &daemon.book);
    let mut child = daemon.command().spawn().unwrap();
    let until = |n: usize, secs: u64| {
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while server.state().account.contacts.len() < n {
                assert!(
                    Instant::now() < deadline,
                    "not {n} contacts within {secs} s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    until(1, 20).await;
    write_vdir(book, 1..2);
    until(2, 5).await;
    // The folder vanishes (an unmounted drive): nothing is deleted; it comes back with a new
    // card, and that card is synced.
    let moved = dir.path().join("book.away");
    std::fs::rename(book, &moved).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::rename(&moved, book).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write_vdir(book, 2..3);
    until(3, 8).await;
    assert!(server.calls_to("contacts.deleteByPhones").is_empty());
    signal(child.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// SIGKILL the daemon at 20 moments, during and between batches, and restart it each time.
/// In the end the server equals the address book, no phone ever carried a name that was not
/// in it, no delete was sent, and the outbox is empty.
#[tokio::test]
async fn killed_twenty_times_it_still_converges() {
    let server = registering_server(ServerOptions {
        // Many small batches, and a rate limit that grammers waits out by itself (1 s).
        rate_limit: Some(crate::telegram::RateLimit {
            calls: 15,
            window: Duration::from_secs(2),
            wait_seconds: 1,
        }),
        ..ServerOptions::default()
    })
    .await;
    let daemon = Daemon::prepare(
        &server,
        0..5000,
        "",
        "[watch]\ndebounce = \"100ms\"\n",
        "batch_size = 50\n",
    );
    let (book, state) = (&daemon.book, daemon.dir.path().join("state"));
    let start = || daemon.command().spawn().unwrap();
    let mut rng = fastrand::Rng::with_seed(20);
    for kill in 0..20 {
        let mut child = start();
        tokio::time::sleep(Duration::from_millis(rng.u64(150..900))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        if kill == 10 {
            // The address book changes between two crashes.
            for i in 0..10 {
                std::fs::write(
                    book.join(format!("{i:05}.vcf")),
                    crate::sync::card(&format!("Renamed {i}"), i),
                )
                .unwrap();
            }
        }
    }
    let mut child = start();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let state = server.state();
            state.account.contacts.len() == 5000
                && state
                    .account
                    .contacts
                    .values()
                    .filter(|c| c.first_name.starts_with("Renamed"))
                    .count()
                    == 10
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not converge: {} contacts",
            server.state().account.contacts.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last replies be applied, then stop cleanly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());

    let imports = server.calls_to("contacts.importContacts");
    for call in &imports {
        let request: grammers_tl_types::functions::contacts::ImportContacts = call.decode();
        for grammers_tl_types::enums::InputContact::InputPhoneContact(c) in request.contacts {
            let i: usize = c.phone[6..].parse().unwrap();
            let allowed = [format!("Person {i}"), format!("Renamed {i}")];
            assert!(
                allowed.contains(&c.first_name),
                "{} carried {:?}",
                c.phone,
                c.first_name
            );
        }
    }
    assert!(
        server.calls_to("contacts.deleteByPhones").is_empty(),
        "no delete for a wanted phone"
    );
    let store = Store::open_read_only(&state).unwrap();
    assert!(
        store.open_batches("telegram").unwrap().is_empty(),
        "the outbox is empty"
    );
    let wanted: Vec<String> = (0..5000).map(|i| phone(i)[1..].to_owned()).collect();
    let mut have: Vec<String> = server
        .state()
        .account
        .contacts
        .values()
        .map(|c| c.phone.clone())
        .collect();
    have.sort();
    assert_eq!(have, wanted);
    eprintln!(
        "{} import calls for 5,000 contacts over 21 starts",
        imports.len()
    );
}

/// SIGTERM lets the request in flight finish for up to `shutdown_timeout`; a second SIGTERM
/// exits at once.
#[tokio::test]
async fn a_second_sigterm_does_not_wait_for_the_request_in_flight() {
    let server = registering_server(ServerOptions::default()).await;
    server.fail_next("contacts.importContacts", Fault::Silent);
    let daemon = Daemon::prepare(
        &server,
        0..3,
        "shutdown_timeout = \"60s\"\n",
        "",
        "request_timeout = \"120s\"\n",
    );
    let mut child = daemon.command().spawn().unwrap();

    // The import is on the wire and will never be answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .calls()
        .iter()
        .any(|c| c.method == "contacts.importContacts")
    {
        assert!(Instant::now() < deadline, "no import was sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(child.id(), "TERM");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first SIGTERM waits for the request in flight"
    );
    signal(child.id(), "TERM");
    let second = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            second.elapsed() < Duration::from_secs(3),
            "a second SIGTERM exits at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    let log_text = daemon.log_text();
    assert!(log_text.contains("second signal"), "{log_text}");
}

/// A reload abandons the old configuration's tasks after `shutdown_timeout`, but a planner
/// pass on its blocking thread cannot be stopped: the new planner must wait for it, never
/// plan beside it.
#[tokio::test]
async fn a_reload_during_a_long_pass_never_runs_two_planners() {
    let server = registering_server(ServerOptions::default()).await;
    // Enough files that the first pass outlasts the reload's 1 s wait on a quiet machine:
    // 20,000 were read in 1.0 s once the scan got faster, and the test then saw no wait.
    let cards = 50_000;
    let daemon = Daemon::prepare(&server, 0..cards, "shutdown_timeout = \"1s\"\n", "", "");
    let mut child = daemon.command().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log_text().contains("contactsyncd running") {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first pass reads 50,000 files: well over the 1 s the reload waits for it.
    signal(child.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(120);
    let imported = || server.state().account.contacts.len();
    while imported() < cards {
        assert!(
            Instant::now() < deadline,
            "{} of {cards} imported; log:\n{}",
            imported(),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
    let log_text = daemon.log_text();
    assert!(log_text.contains("configuration reloaded"), "{log_text}");
    assert!(
        log_text.contains("a pass of the previous configuration is still running: waiting for it"),
        "the new planner did not wait for the old pass:\n{log_text}"
    );
    let imports: usize = server
        .calls()
        .iter()
        .filter(|c| c.method == "contacts.importContacts")
        .count();
    assert_eq!(
        imports,
        cards.div_ceil(100),
        "every number queued and sent once"
    );
}

/// A daemon that a failed assertion must not leave running (it would hold the test
/// harness's output open): killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first message on the notify socket with a line containing `needle`: that line.
fn wait_for_line_containing(socket: &UnixDatagram, needle: &str, within: Duration) -> String {
    match next_line(socket, |l| l.contains(needle), within) {
        Ok((_, line)) => line,
        Err(seen) => panic!("no line with {needle:?} within {within:?}; got {seen:?}"),
    }
}

/// A source folder missing at start (a drive not mounted yet) does not stop the daemon: it
/// starts, says so in STATUS=, deletes nothing, and syncs the source once it appears.
#[tokio::test]
async fn a_source_missing_at_start_is_picked_up_when_it_appears() {
    let server = registering_server(ServerOptions::default()).await;
    let daemon = Daemon::prepare(
        &server,
        0..2,
        "",
        "[watch]\ndebounce = \"100ms\"\nrescan_interval = 1\n",
        "",
    );
    let away = daemon.dir.path().join("book.away");
    std::fs::rename(&daemon.book, &away).unwrap();
    let socket_path = daemon.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = Running(
        daemon
            .command()
            .env("NOTIFY_SOCKET", &socket_path)
            .spawn()
            .unwrap(),
    );
    let socket = tokio::task::spawn_blocking(move || {
        wait_for(&socket, "READY=1", Duration::from_secs(20));
        let status = wait_for_line_containing(&socket, "unknown", Duration::from_secs(20));
        assert_eq!(
            status,
            "STATUS=0 contacts · telegram: 0 queued · source book unknown, kept as it was"
        );
        socket
    })
    .await
    .unwrap();
    assert!(child.0.try_wait().unwrap().is_none(), "the daemon runs");

    std::fs::rename(&away, &daemon.book).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.state().account.contacts.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the source was not picked up: {}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::spawn_blocking(move || {
        wait_for(
            &socket,
            "STATUS=2 contacts · telegram: 0 queued",
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert!(server.calls_to("contacts.deleteByPhones").is_empty());
    signal(child.0.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// The same with the source's parent missing too (the mount point of a drive): nothing can
/// be watched at start; the rescan tick notices the source and watches it.
#[tokio::test]
async fn a_source_under_a_missing_mount_point_is_picked_up_on_the_rescan_tick() {
    let server = registering_server(ServerOptions::default()).await;
    let daemon = Daemon::prepare(
        &server,
        0..2,
        "",
        "[watch]\ndebounce = \"100ms\"\nrescan_interval = 1\n",
        "",
    );
    let text = daemon
        .config_text
        .replace("path = \"book\"", "path = \"mnt/book\"");
    std::fs::write(&daemon.config, text).unwrap();
    let mut child = Running(daemon.command().spawn().unwrap());
    // The mount appears only once the daemon found it missing (a fixed pause raced a slow
    // start on a loaded machine: the daemon then saw the mount from the start).
    let started = Instant::now() + Duration::from_secs(20);
    while !daemon.log_text().contains("cannot watch the source") {
        assert!(Instant::now() < started, "{}", daemon.log_text());
        assert!(child.0.try_wait().unwrap().is_none(), "the daemon runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::create_dir(daemon.dir.path().join("mnt")).unwrap();
    std::fs::rename(&daemon.book, daemon.dir.path().join("mnt/book")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.state().account.contacts.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the source was not picked up: {}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A card written into it afterwards is synced too.
    write_vdir(&daemon.dir.path().join("mnt/book"), 2..3);
    while server.state().account.contacts.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the new card was not synced: {}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The log is written by the daemon's own thread: on a loaded machine its lines may
    // follow the sync they are about.
    while !daemon.log_text().contains("watching it again") {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = daemon.log_text();
    let dir = daemon.dir.path().to_str().unwrap();
    assert!(!log.contains(dir), "no raw path in the log: {log}");
    signal(child.0.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

impl Running {
    fn stop(mut self) {
        signal(self.0.id(), "TERM");
        assert!(self.0.wait().unwrap().success());
    }
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 12.4: after the daemon's own imports, a contact deleted in the app that brings the
/// list back to what it was before them is noticed (a kept hash from before our imports
/// would answer "not modified") and imported again.
#[tokio::test]
async fn a_contact_deleted_in_the_app_after_the_daemons_own_imports_is_noticed() {
    let server = registering_server(ServerOptions::default()).await;
    // Someone added by hand: the list before our imports is not empty (its hash not 0).
    server
        .state()
        .account
        .add_by_hand("+4930123456", "Added By Hand");
    // Two of ours: one deleted in the app is a change, not an emptied list (that is held).
    let daemon = Daemon::prepare(
        &server,
        0..2,
        "",
        "[watch]\ndebounce = \"100ms\"\n",
        // Long enough that no reconcile falls between our import and the deletion below on
        // a loaded machine (one there would fetch the new list and make this test moot).
        "reconcile_interval = 3\n",
    );
    let child = Running(daemon.command().spawn().unwrap());
    let ours = phone(0)[1..].to_owned();
    let has_ours = |server: &TestServer| {
        server
            .state()
            .account
            .contacts
            .values()
            .any(|c| c.phone == ours)
    };
    wait_until("the first import", Duration::from_secs(20), || {
        has_ours(&server)
    })
    .await;
    // At once, before the next reconcile: deleted in the app, the list is as before.
    server
        .state()
        .account
        .contacts
        .retain(|_, c| c.phone != ours);
    let deleted = server.call_count();
    wait_until(
        "the contact deleted in the app imported again",
        Duration::from_secs(40),
        || has_ours(&server),
    )
    .await;
    let asked: Vec<i64> = server.calls()[deleted..]
        .iter()
        .filter(|c| c.method == "contacts.getContacts")
        .map(|c| {
            c.decode::<grammers_tl_types::functions::contacts::GetContacts>()
                .hash
        })
        .collect();
    assert_eq!(
        asked.first(),
        Some(&0),
        "the whole list after our own import"
    );
    child.stop();
}

/// Issue 17.1 through `run`: a FLOOD_WAIT on getContacts pauses the account; neither the
/// sender's beat nor a change in the address book calls anything before it ends.
#[tokio::test]
async fn run_calls_nothing_during_a_flood_wait_on_get_contacts() {
    let server = registering_server(ServerOptions::default()).await;
    server.fail_next("contacts.getContacts", Fault::rpc(420, "FLOOD_WAIT_3600"));
    let daemon = Daemon::prepare(
        &server,
        0..2,
        "",
        "[watch]\ndebounce = \"100ms\"\n",
        "reconcile_interval = 1\n",
    );
    let child = Running(daemon.command().spawn().unwrap());
    wait_until("the first getContacts", Duration::from_secs(20), || {
        !server.calls_to("contacts.getContacts").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_vdir(&daemon.book, 2..3);
    // Several beats of the sender (1 s) and the planner's pass for the new card.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let contacts_calls: Vec<String> = server
        .calls()
        .iter()
        .filter(|c| c.method.starts_with("contacts."))
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(
        contacts_calls,
        ["contacts.getContacts"],
        "nothing during the wait"
    );
    let store = Store::open_read_only(&daemon.dir.path().join("state")).unwrap();
    let account = store.account("telegram").unwrap().unwrap();
    assert!(account.paused_until.is_some(), "{account:?}");
    child.stop();
}
