//! Model-based check: random operation sequences against a `BTreeMap`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

use super::StoreHarness;
use crate::{KeyRange, Order, Pair, WriteBatch, WriteOp};

/// Cases the model check runs (each on a fresh store).
const MODEL_CASES: u32 = 256;

/// One step of a generated sequence.
#[derive(Clone, Debug)]
enum Step {
    /// Write a batch of these operations.
    Write(Vec<WriteOp>),
    /// Read one key.
    Get(Vec<u8>),
    /// Scan and compare.
    Scan(KeyRange, Order, usize),
    /// Flush, reopen, and compare everything.
    FlushAndReopen,
}

/// Short keys over a few byte values, so that keys collide and share prefixes, with 0x00 and
/// 0xFF in them.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, 0x7F, 0xFE, 0xFF]), 0..4)
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![Just(Bound::Unbounded), key().prop_map(Bound::Included), key().prop_map(Bound::Excluded),]
}

fn range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        (bound(), bound()).prop_map(|(start, end)| KeyRange::new(start, end)),
        key().prop_map(|prefix| KeyRange::prefix(&prefix)),
    ]
}

fn op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        4 => (key(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(key, value)| WriteOp::Put { key, value }),
        2 => key().prop_map(|key| WriteOp::Delete { key }),
        1 => range().prop_map(|range| WriteOp::DeleteRange { range }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let order = prop_oneof![Just(Order::Ascending), Just(Order::Descending)];
    prop_oneof![
        6 => op().prop_map(|op| Step::Write(vec![op])),
        3 => prop::collection::vec(op(), 0..6).prop_map(Step::Write),
        2 => key().prop_map(Step::Get),
        3 => (range(), order, prop_oneof![0..4usize, Just(usize::MAX)])
            .prop_map(|(range, order, limit)| Step::Scan(range, order, limit)),
        1 => Just(Step::FlushAndReopen),
    ]
}

/// The model's scan: a filter over the whole map with [`KeyRange::contains`].
fn model_scan(model: &BTreeMap<Vec<u8>, Vec<u8>>, range: &KeyRange, order: Order, limit: usize) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = model
        .iter()
        .filter(|(key, _)| range.contains(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if order == Order::Descending {
        pairs.reverse();
    }
    pairs.truncate(limit);
    pairs
}

fn model_apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[WriteOp]) {
    for op in ops {
        match op {
            WriteOp::Put { key, value } => {
                model.insert(key.clone(), value.clone());
            }
            WriteOp::Delete { key } => {
                model.remove(key);
            }
            WriteOp::DeleteRange { range } => model.retain(|key, _| !range.contains(key)),
        }
    }
}

/// Protects everything at once: a few hundred random sequences of puts, deletes, delete-ranges
/// and mixed batches, interleaved with gets, scans (any bounds, order, limit) and flush+reopen,
/// must give exactly what a `BTreeMap` gives. Deterministic seed: a failure reproduces.
pub fn check_matches_model(h: &mut impl StoreHarness) {
    let config = Config { cases: MODEL_CASES, failure_persistence: None, ..Config::default() };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let harness = RefCell::new(h);
    let steps = prop::collection::vec(step(), 0..40);
    let result = runner.run(&steps, |steps| {
        let mut harness = harness.borrow_mut();
        let mut store = harness.open();
        let mut model = BTreeMap::new();
        for (index, step) in steps.into_iter().enumerate() {
            match step {
                Step::Write(ops) => {
                    model_apply(&mut model, &ops);
                    store.write(WriteBatch::from(ops)).unwrap();
                }
                Step::Get(key) => {
                    prop_assert_eq!(
                        store.get(&key).unwrap(),
                        model.get(&key).cloned(),
                        "step {}: get",
                        index
                    );
                }
                Step::Scan(range, order, limit) => {
                    let got = store.scan(&range, order, limit).unwrap();
                    let expected = model_scan(&model, &range, order, limit);
                    prop_assert_eq!(got, expected, "step {}: scan {:?} {:?} {}", index, range, order, limit);
                }
                Step::FlushAndReopen => {
                    store.flush().unwrap();
                    store = harness.reopen(store);
                    let everything = store.scan(&KeyRange::all(), Order::Ascending, usize::MAX).unwrap();
                    let expected = model_scan(&model, &KeyRange::all(), Order::Ascending, usize::MAX);
                    prop_assert_eq!(everything, expected, "step {}: after reopen", index);
                }
            }
        }
        let everything = store.scan(&KeyRange::all(), Order::Ascending, usize::MAX).unwrap();
        prop_assert_eq!(everything, model_scan(&model, &KeyRange::all(), Order::Ascending, usize::MAX));
        Ok(())
    });
    if let Err(error) = result {
        panic!("store differs from the BTreeMap model: {error}");
    }
}
