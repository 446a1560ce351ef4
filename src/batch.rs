//! Plan → requests of at most `batch_size`, each import item with its own client_id.

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
        imports: imports.into_iter(),
        batch_size: batch_size.max(1),
        next_client_id,
    }
}

pub struct NumberedBatches<I> {
    imports: I,
    batch_size: usize,
    next_client_id: i64,
}

impl<I> NumberedBatches<I> {
    /// The counter's value after the batches taken so far.
    pub fn next_client_id(&self) -> i64 {
        self.next_client_id
    }
}

impl<'a, I: Iterator<Item = &'a PlannedImport>> Iterator for NumberedBatches<I> {
    type Item = Vec<ImportItem>;

    fn next(&mut self) -> Option<Vec<ImportItem>> {
        let mut client_id = self.next_client_id;
        let batch: Vec<ImportItem> = self
            .imports
            .by_ref()
            .take(self.batch_size)
            .map(|import| {
                let item = ImportItem {
                    client_id,
                    e164: import.e164.clone(),
                    names: import.names.clone(),
                    rename: import.reason == ImportReason::Rename,
                };
                client_id += 1;
                item
            })
            .collect();
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
}
