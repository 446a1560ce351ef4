//! Fail points: named places inside the store's transactions and between a send and its
//! apply where a crash test makes the process die, to prove that the state on disk is
//! right whatever moment a crash picks. Only with the cargo feature `failpoints` (the tests
//! turn it on); without it [`hit`] is empty and compiles to nothing.
//!
//! Two ways to arm one:
//! - the environment, for the binary: `CONTACTSYNCD_FAILPOINT=NAME:N` kills the process
//!   with SIGKILL at the N-th time it passes NAME (no destructor, no rollback, no flush:
//!   what a power cut or the OOM killer does);
//! - in process, for the model test (a binary per case would be too slow): [`arm`] makes
//!   the N-th hit on this thread panic with a [`Crash`]; the unwinding drops the open
//!   transaction (rolled back, as SQLite does for a dead process) and the store.

/// Inside `apply_scan`'s transaction, before it commits.
pub const APPLY_SCAN: &str = "apply_scan";
/// Inside `queue_plan`'s transaction, before it commits.
pub const QUEUE_PLAN: &str = "queue_plan";
/// Inside the claim's transaction, the batch marked sent, before it commits.
pub const CLAIM: &str = "claim";
/// The request answered (or failed), nothing of the answer recorded yet.
pub const AFTER_SEND: &str = "after_send";
/// Inside `apply_import`'s transaction, before it commits.
pub const APPLY_IMPORT: &str = "apply_import";
/// Inside `apply_delete`'s transaction, before it commits.
pub const APPLY_DELETE: &str = "apply_delete";
/// Inside `apply_cut`'s transaction (a batch stopped part-way), before it commits.
pub const APPLY_CUT: &str = "apply_cut";

/// Every fail point, for tests that pick one at random.
pub const ALL: &[&str] = &[
    APPLY_SCAN,
    QUEUE_PLAN,
    CLAIM,
    AFTER_SEND,
    APPLY_IMPORT,
    APPLY_DELETE,
    APPLY_CUT,
];

/// The process dies here if a test armed this point for this hit.
#[inline]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    armed::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// The panic payload of an in-process crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash(pub &'static str);

#[cfg(feature = "failpoints")]
pub use armed::{arm, disarm};

#[cfg(feature = "failpoints")]
mod armed {
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::Crash;

    thread_local! {
        /// The point armed on this thread and how many more hits pass it.
        static ARMED: Cell<Option<(&'static str, u32)>> = const { Cell::new(None) };
    }

    /// `CONTACTSYNCD_FAILPOINT=NAME:N`, read once.
    fn from_env() -> Option<&'static (String, u32)> {
        static SPEC: OnceLock<Option<(String, u32)>> = OnceLock::new();
        SPEC.get_or_init(|| {
            let spec = std::env::var("CONTACTSYNCD_FAILPOINT").ok()?;
            let (name, nth) = spec.split_once(':').unwrap_or((&spec, "1"));
            Some((name.to_owned(), nth.parse().ok()?))
        })
        .as_ref()
    }

    /// Makes the `nth` hit (from 1) of `name` on this thread panic with a [`Crash`].
    pub fn arm(name: &'static str, nth: u32) {
        ARMED.set(Some((name, nth.max(1))));
    }

    /// Disarms this thread's point; whether it had fired.
    pub fn disarm() -> bool {
        matches!(ARMED.take(), Some((_, 0)))
    }

    pub fn hit(name: &'static str) {
        if let Some((armed, left)) = ARMED.get()
            && armed == name
            && left > 0
        {
            ARMED.set(Some((armed, left - 1)));
            if left == 1 {
                std::panic::panic_any(Crash(name));
            }
        }
        if let Some((armed, nth)) = from_env()
            && armed == name
        {
            static HITS: OnceLock<Mutex<HashMap<&'static str, u32>>> = OnceLock::new();
            let mut hits = HITS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = hits.entry(name).or_default();
            *count += 1;
            if *count == *nth {
                eprintln!("fail point {name}: killing the process");
                // SAFETY: kill(2) on our own pid; it does not return.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
        }
    }
}
