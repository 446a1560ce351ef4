//! Plan → requests of at most `batch_size`, each import item with its own client_id.

use crate::contact_key;
use crate::diff::{ImportReason, Names, PlannedImport};

/// One contact of an import request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportItem {
    /// Taken from the account's counter: never reused, so unique in every call by
    /// construction and every reply maps back to its row, even after a restart.
    pub client_id: i64,
    pub e164: String,
    pub names: Names,
    /// The mirror records the number as ours on the remote: this import renames our contact
    /// (a backend that adds and renames with different calls needs to know; WhatsApp).
    pub rename: bool,
    /// A username contact's user as resolved before (kept in the mirror): added again (a
    /// rename) without resolving the username once more.
    pub user: Option<(i64, i64)>,
    /// A number's card also names a Telegram username: asked for when the number has no
    /// account (`ImportResult::Saved`), so the person still becomes a contact.
    pub fallback_username: Option<String>,
}

/// Splits imports into batches of at most `batch_size` and numbers them from
/// `next_client_id` on, one batch at a time (a first sync queues 200,000 items, which are
/// then never held twice); `next_client_id()` gives the counter's next value.
pub fn numbered_batches<'a, I: IntoIterator<Item = &'a PlannedImport>>(
    imports: I,
    batch_size: usize,
    next_client_id: i64,
) -> NumberedBatches<I::IntoIter> {
    NumberedBatches {
        imports: imports.into_iter().peekable(),
        batch_size: batch_size.max(1),
        next_client_id,
    }
}

pub struct NumberedBatches<I: Iterator> {
    imports: std::iter::Peekable<I>,
    batch_size: usize,
    next_client_id: i64,
}

impl<I: Iterator> NumberedBatches<I> {
    /// The counter's value after the batches taken so far.
    pub fn next_client_id(&self) -> i64 {
        self.next_client_id
    }
}

impl<'a, I: Iterator<Item = &'a PlannedImport>> Iterator for NumberedBatches<I> {
    type Item = Vec<ImportItem>;

    fn next(&mut self) -> Option<Vec<ImportItem>> {
        let mut client_id = self.next_client_id;
        let mut batch: Vec<ImportItem> = Vec::new();
        // A username is added with calls of its own (resolve, then add), one contact each:
        // it goes out alone, so that a wait or a refusal is about that one contact and every
        // contact added before it is applied. Numbers share importContacts batches.
        while let Some(import) = self.imports.next_if(|next| {
            batch.len() < self.batch_size
                && batch.first().is_none_or(|first| {
                    !contact_key::is_username(&first.e164) && !contact_key::is_username(&next.e164)
                })
        }) {
            batch.push(ImportItem {
                client_id,
                e164: import.e164.clone(),
                names: import.names.clone(),
                rename: import.reason == ImportReason::Rename,
                user: None,
                fallback_username: None,
            });
            client_id += 1;
        }
        self.next_client_id = client_id;
        (!batch.is_empty()).then_some(batch)
    }
}

pub fn delete_batches(deletes: &[String], batch_size: usize) -> Vec<Vec<String>> {
    deletes
        .chunks(batch_size.max(1))
        .map(<[String]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn imports(n: usize) -> Vec<PlannedImport> {
        (0..n)
            .map(|i| PlannedImport {
                e164: format!("+4930{i:06}"),
                names: Names {
                    first: format!("N{i}"),
                    last: String::new(),
                },
                reason: ImportReason::New,
            })
            .collect()
    }

    #[rstest]
    #[case::empty(0, 100, 0)]
    #[case::exact(200, 100, 2)]
    #[case::remainder(2000, 100, 20)]
    #[case::ragged(2001, 500, 5)]
    fn batch_counts(#[case] n: usize, #[case] size: usize, #[case] batches: usize) {
        let imports = imports(n);
        let mut numbered = numbered_batches(&imports, size, 7);
        let out: Vec<Vec<ImportItem>> = numbered.by_ref().collect();
        let next = numbered.next_client_id();
        assert_eq!(out.len(), batches);
        assert!(out.iter().all(|b| b.len() <= size));
        assert_eq!(next, 7 + n as i64);
    }

    #[test]
    fn client_ids_are_consecutive_and_unique_across_batches() {
        let imports = imports(250);
        let ids: Vec<i64> = numbered_batches(&imports, 100, 1000)
            .flatten()
            .map(|i| i.client_id)
            .collect();
        assert_eq!(ids, (1000..1250).collect::<Vec<_>>());
    }

    #[test]
    fn usernames_go_out_one_per_batch_after_the_numbers() {
        let mut planned = imports(3);
        for name in ["alice", "bobby"] {
            planned.push(PlannedImport {
                e164: contact_key::of_username(name),
                names: Names {
                    first: name.into(),
                    last: String::new(),
                },
                reason: ImportReason::New,
            });
        }
        let sizes: Vec<Vec<String>> = numbered_batches(&planned, 100, 1)
            .map(|b| b.into_iter().map(|i| i.e164).collect())
            .collect();
        assert_eq!(
            sizes,
            [
                vec!["+4930000000", "+4930000001", "+4930000002"],
                vec!["@alice"],
                vec!["@bobby"]
            ]
        );
    }
}
