//! Key ranges and scan order.

use std::ops::Bound;

/// A range of keys, in the byte-wise (lexicographic) order every [`Store`](crate::Store) uses.
///
/// Both bounds are public so that any [`Bound`] combination can be expressed; the constructors
/// cover the usual cases. A range whose start lies after its end (or that is `[k, k)`, `(k, k]`,
/// `(k, k)`) is empty: scanning it returns nothing and deleting it deletes nothing. It is never
/// an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// The lower bound.
    pub start: Bound<Vec<u8>>,
    /// The upper bound.
    pub end: Bound<Vec<u8>>,
}

/// The order in which [`Store::scan`](crate::Store::scan) returns pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Order {
    /// Smallest key first.
    #[default]
    Ascending,
    /// Largest key first.
    Descending,
}

impl KeyRange {
    /// A range from explicit bounds.
    pub fn new(start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        Self { start, end }
    }

    /// Every key.
    pub fn all() -> Self {
        Self::new(Bound::Unbounded, Bound::Unbounded)
    }

    /// Every key that starts with `prefix` (every key at all if `prefix` is empty).
    ///
    /// The upper bound is the smallest key greater than every key with the prefix: the prefix
    /// with trailing `0xFF` bytes removed and its last byte incremented; a prefix made only of
    /// `0xFF` bytes has no such key, so the range is unbounded above.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self::new(Bound::Included(prefix.to_vec()), prefix_end(prefix))
    }

    /// Keys `k` with `start_inclusive <= k < end_exclusive`.
    pub fn between(start_inclusive: impl Into<Vec<u8>>, end_exclusive: impl Into<Vec<u8>>) -> Self {
        Self::new(Bound::Included(start_inclusive.into()), Bound::Excluded(end_exclusive.into()))
    }

    /// Keys `k` with `start_inclusive <= k`, unbounded above.
    pub fn starting_at(start_inclusive: impl Into<Vec<u8>>) -> Self {
        Self::new(Bound::Included(start_inclusive.into()), Bound::Unbounded)
    }

    /// Keys that start with `prefix` and are `>= start_inclusive` (for paging through a
    /// keyspace: pass the key after the last one seen). If `start_inclusive` sorts before the
    /// prefix, this is the whole prefix range.
    pub fn prefix_starting_at(prefix: &[u8], start_inclusive: impl Into<Vec<u8>>) -> Self {
        let start_inclusive = start_inclusive.into();
        let start = if start_inclusive.as_slice() < prefix { prefix.to_vec() } else { start_inclusive };
        Self::new(Bound::Included(start), prefix_end(prefix))
    }

    /// Whether `key` lies in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(start) => key >= start.as_slice(),
            Bound::Excluded(start) => key > start.as_slice(),
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(end) => key <= end.as_slice(),
            Bound::Excluded(end) => key < end.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && before_end
    }

    /// Whether no key at all can lie in this range (start after end, or equal bounds with one
    /// of them excluded). Adapters check this before handing the bounds to an engine, since
    /// some (e.g. `BTreeMap::range`) panic on such bounds.
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(start), Bound::Included(end)) => start > end,
            (Bound::Included(start), Bound::Excluded(end))
            | (Bound::Excluded(start), Bound::Included(end))
            | (Bound::Excluded(start), Bound::Excluded(end)) => start >= end,
        }
    }

    /// The bounds as borrowed slices, the form `BTreeMap<Vec<u8>, _>::range::<[u8], _>` takes.
    pub fn as_slice_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_slice_bound(&self.start), as_slice_bound(&self.end))
    }
}

impl Default for KeyRange {
    /// Every key.
    fn default() -> Self {
        Self::all()
    }
}

fn as_slice_bound(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The exclusive upper bound of the keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds() {
        assert_eq!(KeyRange::prefix(b""), KeyRange::new(Bound::Included(vec![]), Bound::Unbounded));
        assert_eq!(KeyRange::prefix(b"ab").end, Bound::Excluded(b"ac".to_vec()));
        assert_eq!(KeyRange::prefix(&[1, 0xFF]).end, Bound::Excluded(vec![2]));
        assert_eq!(KeyRange::prefix(&[1, 0xFF, 0xFF]).end, Bound::Excluded(vec![2]));
        assert_eq!(KeyRange::prefix(&[0xFF, 0xFF]).end, Bound::Unbounded);
    }

    #[test]
    fn prefix_contains() {
        let range = KeyRange::prefix(&[7, 0xFF]);
        assert!(range.contains(&[7, 0xFF]));
        assert!(range.contains(&[7, 0xFF, 0xFF, 0xFF]));
        assert!(range.contains(&[7, 0xFF, 0]));
        assert!(!range.contains(&[7, 0xFE, 0xFF]));
        assert!(!range.contains(&[8]));
        assert!(!range.contains(&[7]));
    }

    #[test]
    fn prefix_starting_at_clamps_to_prefix() {
        let range = KeyRange::prefix_starting_at(b"p/", b"a".to_vec());
        assert_eq!(range, KeyRange::prefix(b"p/"));
        let range = KeyRange::prefix_starting_at(b"p/", b"p/m".to_vec());
        assert!(range.contains(b"p/m") && range.contains(b"p/z") && !range.contains(b"p/a"));
        assert!(!range.contains(b"q"));
    }

    #[test]
    fn emptiness() {
        assert!(!KeyRange::all().is_empty());
        assert!(KeyRange::between(b"b".to_vec(), b"a".to_vec()).is_empty());
        assert!(KeyRange::between(b"a".to_vec(), b"a".to_vec()).is_empty());
        let point = KeyRange::new(Bound::Included(b"a".to_vec()), Bound::Included(b"a".to_vec()));
        assert!(!point.is_empty() && point.contains(b"a"));
        let open = KeyRange::new(Bound::Excluded(b"a".to_vec()), Bound::Excluded(b"a".to_vec()));
        assert!(open.is_empty());
    }
}
