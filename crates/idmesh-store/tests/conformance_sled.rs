//! Runs the conformance suite on `SledStore`, each store in its own temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use idmesh_store::conformance::{StoreHarness, run_all};
use idmesh_store::{SledOptions, SledStore, Store};

/// `open` creates a store in a new directory under `root`; `reopen` drops the store and opens
/// the same directory again.
struct SledHarness {
    root: tempfile::TempDir,
    opened_count: usize,
    current_path: Option<PathBuf>,
}

impl SledHarness {
    fn options() -> SledOptions {
        SledOptions { cache_capacity_bytes: 16 * 1024 * 1024, ..SledOptions::default() }
    }
}

impl StoreHarness for SledHarness {
    fn open(&mut self) -> Arc<dyn Store> {
        self.opened_count += 1;
        let path = self.root.path().join(format!("store-{}", self.opened_count));
        let store = SledStore::open(&path, Self::options()).unwrap();
        self.current_path = Some(path);
        Arc::new(store)
    }

    fn reopen(&mut self, old: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(Arc::strong_count(&old), 1, "the suite passes the last reference");
        drop(old);
        let path = self.current_path.as_ref().expect("open before reopen");
        Arc::new(SledStore::open(path, Self::options()).unwrap())
    }
}

#[test]
fn sled_store_passes_the_conformance_suite() {
    let root = tempfile::tempdir().unwrap();
    run_all(&mut SledHarness { root, opened_count: 0, current_path: None });
}
