//! Runs the conformance suite on `MemStore`, and checks its crash model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use idmesh_store::conformance::{StoreHarness, run_all};
use idmesh_store::{KeyRange, MemStore, Order, Store, WriteBatch};

/// Each `open` is a new `MemStore`; `reopen` is [`MemStore::reopen`] (only flushed state).
#[derive(Default)]
struct MemHarness {
    current: Option<MemStore>,
}

impl StoreHarness for MemHarness {
    fn open(&mut self) -> Arc<dyn Store> {
        let store = MemStore::new();
        self.current = Some(store.clone());
        Arc::new(store)
    }

    fn reopen(&mut self, old: Arc<dyn Store>) -> Arc<dyn Store> {
        drop(old);
        let store = self.current.take().expect("open before reopen").reopen();
        self.current = Some(store.clone());
        Arc::new(store)
    }
}

#[test]
fn mem_store_passes_the_conformance_suite() {
    run_all(&mut MemHarness::default());
}

fn put(store: &MemStore, key: &str, value: &str) {
    let mut batch = WriteBatch::new();
    batch.put(key, value);
    store.write(batch).unwrap();
}

fn keys(store: &MemStore) -> Vec<String> {
    let pairs = store.scan(&KeyRange::all(), Order::Ascending, usize::MAX).unwrap();
    pairs.into_iter().map(|(key, _)| String::from_utf8(key).unwrap()).collect()
}

#[test]
fn crash_loses_exactly_the_unflushed_writes() {
    let store = MemStore::new();
    put(&store, "flushed", "1");
    put(&store, "overwritten", "old");
    put(&store, "deleted", "1");
    store.flush().unwrap();
    assert_eq!(store.unflushed_key_count().unwrap(), 0);

    put(&store, "unflushed", "1");
    put(&store, "overwritten", "new");
    let mut batch = WriteBatch::new();
    batch.delete("deleted");
    store.write(batch).unwrap();
    assert_eq!(keys(&store), ["flushed", "overwritten", "unflushed"], "reads see every write");
    assert_eq!(store.unflushed_key_count().unwrap(), 3);

    let restarted = store.reopen();
    store.crash();
    for store in [&store, &restarted] {
        assert_eq!(keys(store), ["deleted", "flushed", "overwritten"], "back to the last flush");
        assert_eq!(store.get(b"overwritten").unwrap().as_deref(), Some(&b"old"[..]));
        assert_eq!(store.get(b"unflushed").unwrap(), None, "an unflushed write is lost");
    }

    put(&store, "after-crash", "1");
    store.flush().unwrap();
    store.crash();
    assert_eq!(store.get(b"after-crash").unwrap().as_deref(), Some(&b"1"[..]), "flushed kept");
    assert_eq!(keys(&restarted), ["deleted", "flushed", "overwritten"], "reopen is independent");
}

#[test]
fn crash_is_cheap_with_many_keys() {
    let store = MemStore::new();
    let mut batch = WriteBatch::new();
    for i in 0..100_000u32 {
        batch.put(i.to_be_bytes(), [1u8; 16]);
    }
    store.write(batch).unwrap();
    store.flush().unwrap();
    for i in 0..1_000u32 {
        put(&store, &format!("late/{i}"), "x");
        store.flush().unwrap();
    }
    put(&store, "lost", "x");
    store.crash();
    assert_eq!(store.get(b"lost").unwrap(), None);
    assert_eq!(store.reopen().scan(&KeyRange::all(), Order::Ascending, usize::MAX).unwrap().len(), 101_000);
}

/// `SealedStore` over `MemStore`, sealing every key: it must behave as a store.
#[derive(Default)]
struct SealedHarness {
    mem: MemHarness,
}

fn sealing(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    let kek = idmesh_store::Kek::from_secret(zeroize::Zeroizing::new([7; 32]));
    Arc::new(idmesh_store::SealedStore::new(inner, Arc::new(kek), vec![Vec::new()]))
}

impl StoreHarness for SealedHarness {
    fn open(&mut self) -> Arc<dyn Store> {
        sealing(self.mem.open())
    }

    fn reopen(&mut self, old: Arc<dyn Store>) -> Arc<dyn Store> {
        sealing(self.mem.reopen(old))
    }
}

#[test]
fn sealed_store_passes_the_conformance_suite_and_stores_no_plaintext() {
    run_all(&mut SealedHarness::default());
    let mem = MemStore::new();
    let sealed = sealing(Arc::new(mem.clone()));
    let mut batch = WriteBatch::new();
    batch.put("sm/keys", "the-secret-value");
    sealed.write(batch).unwrap();
    assert_eq!(sealed.get(b"sm/keys").unwrap().as_deref(), Some(&b"the-secret-value"[..]));
    let raw = mem.get(b"sm/keys").unwrap().unwrap();
    assert!(!raw.windows(6).any(|w| w == b"secret"), "stored in the clear");
}
