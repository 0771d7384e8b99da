//! A tree of the store's database for data kept beside the log, not in it (`EventStore::side_tree`):
//! sled stays inside this crate, and what is written here is durable with the next append.

use std::ops::RangeBounds;
use std::path::PathBuf;

use crate::error::{Result, StoreError};

/// Keys and values kept beside the log. What is written before an append is durable once that
/// append returns (one flush and one sync cover the whole database). Neither verify nor the
/// durable head covers it: what is kept here must verify on its own.
#[derive(Clone)]
pub struct SideTree {
    pub(crate) tree: sled::Tree,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for SideTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideTree").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SideTree {
    fn error(&self, err: sled::Error) -> StoreError {
        StoreError::from_sled(&self.path, err)
    }

    /// Writes every pair, all or none.
    pub fn insert_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (key, value) in pairs {
            batch.insert(key.as_ref(), value.as_ref());
        }
        self.tree.apply_batch(batch).map_err(|e| self.error(e))
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.tree.get(key).map(|value| value.map(|v| v.to_vec())).map_err(|e| self.error(e))
    }

    /// The pairs whose keys lie in `keys`, in key order.
    pub fn range<R: RangeBounds<Vec<u8>>>(&self, keys: R) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<R> {
        let (tree, path) = (self.tree.clone(), self.path.clone());
        tree.range(keys)
            .map(move |item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| StoreError::from_sled(&path, e)))
    }

    /// Every pair whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        let path = self.path.clone();
        self.tree
            .scan_prefix(prefix)
            .map(move |item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| StoreError::from_sled(&path, e)))
    }
}
