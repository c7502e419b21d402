//! The conformance suite every [`Store`] adapter must pass (feature `conformance`).
//!
//! An adapter's test implements [`StoreHarness`] and calls [`run_all`]. Each check is also a
//! public function, so a failing one can be run alone. Checks panic with a message on failure:
//! this is test code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model;

use std::ops::Bound;
use std::sync::Arc;

pub use model::check_matches_model;

use crate::{KeyRange, Order, Pair, Store, WriteBatch};

/// Opens stores of one adapter for the suite.
pub trait StoreHarness {
    /// A new, empty store at a fresh location.
    fn open(&mut self) -> Arc<dyn Store>;

    /// Closes `old` (the suite passes the last reference; drop it) and opens its location
    /// again, as a restarted process would. Everything flushed before must be there.
    fn reopen(&mut self, old: Arc<dyn Store>) -> Arc<dyn Store>;
}

/// Runs every check, each on fresh stores.
pub fn run_all(h: &mut impl StoreHarness) {
    check_get_put_overwrite_delete(h);
    check_empty_key_and_value(h);
    check_binary_keys(h);
    check_batch_applies_all_ops(h);
    check_batch_op_order(h);
    check_delete_range(h);
    check_scan_bounds_orders_limits(h);
    check_scan_prefixes(h);
    check_large_values(h);
    check_flushed_writes_survive_reopen(h);
    check_matches_model(h);
}

fn put(store: &dyn Store, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(key, value);
    store.write(batch).unwrap();
}

fn delete(store: &dyn Store, key: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.delete(key);
    store.write(batch).unwrap();
}

fn all_pairs(store: &dyn Store) -> Vec<Pair> {
    store.scan(&KeyRange::all(), Order::Ascending, usize::MAX).unwrap()
}

fn pairs(items: &[(&[u8], &[u8])]) -> Vec<Pair> {
    items.iter().map(|(key, value)| (key.to_vec(), value.to_vec())).collect()
}

/// Protects the basics: a get sees the last put, an overwrite replaces, a delete removes, and a
/// delete of an absent key is not an error.
pub fn check_get_put_overwrite_delete(h: &mut impl StoreHarness) {
    let store = h.open();
    assert_eq!(store.get(b"k").unwrap(), None, "a new store is empty");
    assert!(all_pairs(&*store).is_empty(), "a new store scans empty");
    put(&*store, b"k", b"v1");
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]), "get sees the put");
    put(&*store, b"k", b"v2");
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]), "overwrite replaces");
    assert_eq!(store.get(b"k2").unwrap(), None, "other keys stay absent");
    delete(&*store, b"k");
    assert_eq!(store.get(b"k").unwrap(), None, "delete removes");
    delete(&*store, b"never-written");
    store.write(WriteBatch::new()).unwrap();
    assert!(all_pairs(&*store).is_empty(), "nothing left after delete and an empty batch");
}

/// Protects the edge values: the empty key and the empty value are ordinary, and an empty value
/// is present (not the same as absent).
pub fn check_empty_key_and_value(h: &mut impl StoreHarness) {
    let store = h.open();
    put(&*store, b"", b"empty key");
    put(&*store, b"k", b"");
    assert_eq!(store.get(b"").unwrap().as_deref(), Some(&b"empty key"[..]), "empty key");
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b""[..]), "empty value is present");
    let expected = pairs(&[(b"", b"empty key"), (b"k", b"")]);
    assert_eq!(all_pairs(&*store), expected, "the empty key sorts first");
    delete(&*store, b"");
    assert_eq!(store.get(b"").unwrap(), None, "the empty key can be deleted");
}

/// Protects binary keys: 0x00 and 0xFF bytes anywhere, ordered byte-wise with shorter keys
/// before their extensions.
pub fn check_binary_keys(h: &mut impl StoreHarness) {
    let store = h.open();
    let sorted: [&[u8]; 8] = [
        &[0x00],
        &[0x00, 0x00],
        &[0x00, 0xFF],
        &[0x01],
        &[0x7F, 0x00],
        &[0xFF],
        &[0xFF, 0x00],
        &[0xFF, 0xFF, 0xFF],
    ];
    for key in sorted.iter().rev() {
        put(&*store, key, key);
    }
    for key in sorted {
        assert_eq!(store.get(key).unwrap().as_deref(), Some(key), "get {key:?}");
    }
    let expected: Vec<Pair> = sorted.iter().map(|key| (key.to_vec(), key.to_vec())).collect();
    assert_eq!(all_pairs(&*store), expected, "byte-wise order");
}

/// Protects batch completeness: every operation of a large batch is applied by one write.
pub fn check_batch_applies_all_ops(h: &mut impl StoreHarness) {
    let store = h.open();
    let mut batch = WriteBatch::new();
    for i in 0..1000u32 {
        batch.put(format!("a/{i:04}"), i.to_be_bytes());
    }
    store.write(batch).unwrap();
    let mut batch = WriteBatch::new();
    for i in (0..1000u32).filter(|i| i % 2 == 0) {
        batch.delete(format!("a/{i:04}"));
    }
    batch.put("b", "after");
    store.write(batch).unwrap();
    let left = store.scan(&KeyRange::prefix(b"a/"), Order::Ascending, usize::MAX).unwrap();
    assert_eq!(left.len(), 500, "half of the keys deleted by one batch");
    assert!(left.iter().all(|(_, value)| u32::from_be_bytes(value[..].try_into().unwrap()) % 2 == 1));
    assert_eq!(store.get(b"b").unwrap().as_deref(), Some(&b"after"[..]));
}

/// Protects in-batch order: later operations on a key win (put then delete leaves it absent,
/// delete then put leaves it present, two puts leave the second value).
pub fn check_batch_op_order(h: &mut impl StoreHarness) {
    let store = h.open();
    put(&*store, b"existing", b"old");
    let mut batch = WriteBatch::new();
    batch.put("p-then-d", "x").delete("p-then-d");
    batch.delete("d-then-p").put("d-then-p", "y");
    batch.put("twice", "1").put("twice", "2");
    batch.delete("existing").put("existing", "new").delete("existing").put("existing", "newer");
    store.write(batch).unwrap();
    assert_eq!(store.get(b"p-then-d").unwrap(), None, "put then delete: absent");
    assert_eq!(store.get(b"d-then-p").unwrap().as_deref(), Some(&b"y"[..]), "delete then put");
    assert_eq!(store.get(b"twice").unwrap().as_deref(), Some(&b"2"[..]), "last put wins");
    assert_eq!(store.get(b"existing").unwrap().as_deref(), Some(&b"newer"[..]));
}

/// Protects delete-range: it removes the stored keys in the range and the keys put earlier in
/// the same batch, spares keys put after it in the batch and keys outside the range, and an
/// empty or inverted range removes nothing.
pub fn check_delete_range(h: &mut impl StoreHarness) {
    let store = h.open();
    let mut batch = WriteBatch::new();
    for key in [&b"a"[..], b"b/1", b"b/2", b"b/3", b"c", &[0x01, 0xFF], &[0x01, 0xFF, 0x00], &[0x02]] {
        batch.put(key, b"v");
    }
    store.write(batch).unwrap();
    let mut batch = WriteBatch::new();
    batch.put("b/0", "in batch").delete_range(KeyRange::prefix(b"b/")).put("b/9", "after");
    store.write(batch).unwrap();
    let keys: Vec<Vec<u8>> = all_pairs(&*store).into_iter().map(|(key, _)| key).collect();
    let expected: Vec<Vec<u8>> =
        vec![vec![0x01, 0xFF], vec![0x01, 0xFF, 0], vec![2], b"a".to_vec(), b"b/9".to_vec(), b"c".to_vec()];
    assert_eq!(keys, expected, "prefix delete-range inside a batch");

    let mut batch = WriteBatch::new();
    batch.delete_range(KeyRange::between(b"c".to_vec(), b"a".to_vec()));
    batch.delete_range(KeyRange::between(b"a".to_vec(), b"a".to_vec()));
    store.write(batch).unwrap();
    assert_eq!(all_pairs(&*store).len(), 6, "empty and inverted ranges delete nothing");

    let mut batch = WriteBatch::new();
    batch.delete_range(KeyRange::prefix(&[0x01, 0xFF]));
    store.write(batch).unwrap();
    assert_eq!(store.get(&[0x01, 0xFF]).unwrap(), None, "prefix ending in 0xFF");
    assert_eq!(store.get(&[0x01, 0xFF, 0]).unwrap(), None, "prefix ending in 0xFF");
    assert!(store.get(&[0x02]).unwrap().is_some(), "key after a 0xFF prefix survives");

    let mut batch = WriteBatch::new();
    batch.delete_range(KeyRange::all());
    store.write(batch).unwrap();
    assert!(all_pairs(&*store).is_empty(), "delete-range of everything");
}

/// The keys [`check_scan_bounds_orders_limits`] stores, and the bound keys it tries (stored
/// and absent ones).
const SCAN_KEYS: [&[u8]; 7] =
    [&[0x00], &[0x01], &[0x01, 0x00], &[0x10], &[0x7F, 0xFF], &[0xFF], &[0xFF, 0xFF]];
const BOUND_KEYS: [&[u8]; 6] = [&[], &[0x01], &[0x01, 0x00, 0x00], &[0x20], &[0xFF], &[0xFF, 0xFF, 0xFF]];

/// Protects scans: every combination of bound kinds (included, excluded, unbounded) on stored
/// and absent keys, both orders, and limits 0, 1, some and unlimited, against a plain filter.
pub fn check_scan_bounds_orders_limits(h: &mut impl StoreHarness) {
    let store = h.open();
    for key in SCAN_KEYS {
        put(&*store, key, &[key.len() as u8]);
    }
    let stored = all_pairs(&*store);
    let mut bounds = vec![Bound::Unbounded];
    for key in BOUND_KEYS {
        bounds.push(Bound::Included(key.to_vec()));
        bounds.push(Bound::Excluded(key.to_vec()));
    }
    for start in &bounds {
        for end in &bounds {
            let range = KeyRange::new(start.clone(), end.clone());
            for order in [Order::Ascending, Order::Descending] {
                for limit in [0, 1, 3, usize::MAX] {
                    let mut expected: Vec<Pair> =
                        stored.iter().filter(|(key, _)| range.contains(key)).cloned().collect();
                    if order == Order::Descending {
                        expected.reverse();
                    }
                    expected.truncate(limit);
                    let got = store.scan(&range, order, limit).unwrap();
                    assert_eq!(got, expected, "scan {range:?} {order:?} limit {limit}");
                }
            }
        }
    }
}

/// Protects prefix scans: a prefix covers exactly its extensions, including prefixes ending in
/// 0xFF (whose upper bound needs a carry) and the all-0xFF prefix (unbounded above).
pub fn check_scan_prefixes(h: &mut impl StoreHarness) {
    let store = h.open();
    let keys: [&[u8]; 9] = [
        &[0x01],
        &[0x01, 0xFE],
        &[0x01, 0xFF],
        &[0x01, 0xFF, 0x00],
        &[0x01, 0xFF, 0xFF],
        &[0x02],
        &[0xFF],
        &[0xFF, 0xFF],
        &[0xFF, 0xFF, 0x01],
    ];
    for key in keys {
        put(&*store, key, b"");
    }
    let cases: [(&[u8], &[&[u8]]); 5] = [
        (&[0x01], &keys[0..5]),
        (&[0x01, 0xFF], &keys[2..5]),
        (&[0xFF], &keys[6..9]),
        (&[0xFF, 0xFF], &keys[7..9]),
        (&[], &keys[..]),
    ];
    for (prefix, expected) in cases {
        for order in [Order::Ascending, Order::Descending] {
            let mut expected: Vec<Pair> = expected.iter().map(|key| (key.to_vec(), vec![])).collect();
            if order == Order::Descending {
                expected.reverse();
            }
            let got = store.scan(&KeyRange::prefix(prefix), order, usize::MAX).unwrap();
            assert_eq!(got, expected, "prefix {prefix:?} {order:?}");
            let first = store.scan(&KeyRange::prefix(prefix), order, 1).unwrap();
            assert_eq!(first, expected[..1], "prefix {prefix:?} {order:?} limit 1");
        }
    }
}

/// Protects large values: 1 MiB values are stored, read back, overwritten and kept across a
/// flush and reopen byte for byte.
pub fn check_large_values(h: &mut impl StoreHarness) {
    let store = h.open();
    let big: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let other: Vec<u8> = big.iter().map(|byte| byte ^ 0x5A).collect();
    put(&*store, b"big", &big);
    put(&*store, b"big2", &big);
    assert!(store.get(b"big").unwrap() == Some(big.clone()), "1 MiB value read back");
    put(&*store, b"big2", &other);
    store.flush().unwrap();
    let store = h.reopen(store);
    assert!(store.get(b"big").unwrap() == Some(big), "1 MiB value after reopen");
    assert!(store.get(b"big2").unwrap() == Some(other), "overwritten 1 MiB value after reopen");
}

/// Protects durability: puts, overwrites, deletes and delete-ranges that were flushed are all
/// there after a reopen, and a store can be reopened again and keep working.
pub fn check_flushed_writes_survive_reopen(h: &mut impl StoreHarness) {
    let store = h.open();
    let mut batch = WriteBatch::new();
    for i in 0..100u32 {
        batch.put(format!("k/{i:03}"), format!("v{i}"));
    }
    batch.put("doomed/1", "x").put("doomed/2", "x").put("gone", "x");
    store.write(batch).unwrap();
    store.flush().unwrap();
    let mut batch = WriteBatch::new();
    batch.put("k/000", "overwritten").delete("gone").delete_range(KeyRange::prefix(b"doomed/"));
    store.write(batch).unwrap();
    store.flush().unwrap();
    let expected = all_pairs(&*store);
    assert_eq!(expected.len(), 100);
    let store = h.reopen(store);
    assert_eq!(all_pairs(&*store), expected, "flushed state after reopen");
    assert_eq!(store.get(b"k/000").unwrap().as_deref(), Some(&b"overwritten"[..]));
    store.size_on_disk().unwrap();
    put(&*store, b"after-reopen", b"1");
    store.flush().unwrap();
    let store = h.reopen(store);
    assert_eq!(store.get(b"after-reopen").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(all_pairs(&*store).len(), 101, "second reopen");
}
