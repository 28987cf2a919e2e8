//! A sorted set kept as a run of sorted chunks: the writer's ready and
//! delayed indexes, which hold one small key per waiting task and may hold
//! millions of them.
//!
//! Invariant: every chunk is non-empty and sorted, no key appears twice, and
//! every key of a chunk is smaller than every key of the next one. Keys that
//! arrive in order (the usual case: new tasks run now, after the ones before
//! them) fill each chunk to the brim, so a key costs little more than its own
//! size, where a `BTreeSet` leaves its leaves about half full and pays a node
//! header on every few keys. Taking the first key, which is what a lease does,
//! is O(1).

use std::collections::VecDeque;

/// Keys in a full chunk: a power of two, so a chunk that grew one push at a
/// time has no spare capacity when it is full.
const CHUNK: usize = 1024;

/// An ordered set of `Copy` keys (see the module documentation).
#[derive(Debug)]
pub(crate) struct ChunkedSet<T> {
    chunks: VecDeque<VecDeque<T>>,
}

impl<T> Default for ChunkedSet<T> {
    fn default() -> Self {
        Self { chunks: VecDeque::new() }
    }
}

impl<T: Ord + Copy> ChunkedSet<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
    }

    /// The smallest key.
    pub(crate) fn first(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }

    /// Takes the smallest key out.
    pub(crate) fn pop_first(&mut self) -> Option<T> {
        let chunk = self.chunks.front_mut()?;
        let key = chunk.pop_front();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        key
    }

    /// Adds `key`; false if it was there already.
    pub(crate) fn insert(&mut self, key: T) -> bool {
        let Some(last) = self.chunks.len().checked_sub(1) else {
            self.chunks.push_back(VecDeque::from([key]));
            return true;
        };
        // The chunk whose range takes the key: the first whose last key is
        // not below it, or the last chunk for a key above all of them.
        let at = self.chunks.partition_point(|c| c.back().is_some_and(|b| *b < key)).min(last);
        let chunk = &mut self.chunks[at];
        let pos = match chunk.binary_search(&key) {
            Ok(_) => return false,
            Err(pos) => pos,
        };
        if pos == 0 && at > 0 {
            // Between two chunks: at the end of the one before if it has
            // room, else in a chunk of its own. Keys that arrive in order
            // into the middle of the set (a higher priority's, on a restart
            // that reads tasks by id) so fill chunks of their own rather than
            // mixing into, and later halving, their neighbour.
            if self.chunks[at - 1].len() < CHUNK {
                self.chunks[at - 1].push_back(key);
            } else {
                self.chunks.insert(at, VecDeque::from([key]));
            }
        } else if chunk.len() < CHUNK {
            chunk.insert(pos, key);
        } else if pos == CHUNK {
            // Above every key (only the last chunk ends below a key).
            self.chunks.push_back(VecDeque::from([key]));
        } else if pos == 0 {
            self.chunks.push_front(VecDeque::from([key]));
        } else {
            let mut upper = chunk.split_off(CHUNK / 2);
            if pos <= CHUNK / 2 {
                chunk.insert(pos, key);
            } else {
                upper.insert(pos - CHUNK / 2, key);
            }
            self.chunks.insert(at + 1, upper);
        }
        true
    }

    /// Takes `key` out; false if it was not there.
    pub(crate) fn remove(&mut self, key: &T) -> bool {
        let at = self.chunks.partition_point(|c| c.back().is_some_and(|b| b < key));
        let Some(chunk) = self.chunks.get_mut(at) else { return false };
        let Ok(pos) = chunk.binary_search(key) else { return false };
        chunk.remove(pos);
        if chunk.is_empty() {
            self.chunks.remove(at);
        } else if chunk.len() < chunk.capacity() / 4 {
            chunk.shrink_to_fit();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u16>().prop_map(Op::Insert),
            2 => any::<u16>().prop_map(Op::Remove),
            1 => Just(Op::PopFirst),
        ]
    }

    /// Checks the module's invariant and that the set holds what `model` does.
    fn agrees(set: &ChunkedSet<u32>, model: &BTreeSet<u32>) {
        let flat: Vec<u32> = set.chunks.iter().flatten().copied().collect();
        assert!(set.chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK), "chunk sizes");
        assert_eq!(flat, model.iter().copied().collect::<Vec<_>>());
        assert_eq!(set.first(), model.first());
        assert_eq!(set.is_empty(), model.is_empty());
    }

    proptest! {
        /// Any run of inserts, removes and pops leaves the same keys, in the
        /// same order, as a `BTreeSet` given the same run. Keys are spread
        /// over a small range (u16 scaled) so that chunks fill, split and
        /// empty.
        #[test]
        fn behaves_as_a_btreeset(ops in proptest::collection::vec(op(), 1..4000)) {
            let mut set = ChunkedSet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(k) => prop_assert_eq!(set.insert(u32::from(k) % 4000), model.insert(u32::from(k) % 4000)),
                    Op::Remove(k) => prop_assert_eq!(set.remove(&(u32::from(k) % 4000)), model.remove(&(u32::from(k) % 4000))),
                    Op::PopFirst => prop_assert_eq!(set.pop_first(), model.pop_first()),
                }
            }
            agrees(&set, &model);
        }
    }

    #[test]
    fn keys_in_order_fill_chunks_to_the_brim() {
        let mut set = ChunkedSet::default();
        for k in 0..(CHUNK as u32 * 5) {
            assert!(set.insert(k));
        }
        assert_eq!(set.chunks.len(), 5);
        assert!(set.chunks.iter().all(|c| c.len() == CHUNK && c.capacity() == CHUNK));
        // Keys in falling order (requeued old tasks) fill chunks at the front.
        let mut set = ChunkedSet::default();
        for k in (0..(CHUNK as u32 * 3)).rev() {
            assert!(set.insert(k));
        }
        assert_eq!(set.chunks.len(), 3);
        let model: BTreeSet<u32> = (0..(CHUNK as u32 * 3)).collect();
        agrees(&set, &model);
    }

    #[test]
    fn keys_in_order_into_the_middle_fill_chunks_too() {
        // Two runs of rising keys, interleaved: the way a restart reads the
        // ready tasks of two priorities in id order.
        let mut set = ChunkedSet::default();
        let n = CHUNK as u32 * 4;
        for k in 0..n {
            assert!(set.insert(k));
            assert!(set.insert(k + 1_000_000));
        }
        assert!(set.chunks.len() <= 8 + 2, "{} chunks for {} keys", set.chunks.len(), 2 * n);
        let model: BTreeSet<u32> = (0..n).chain(1_000_000..1_000_000 + n).collect();
        agrees(&set, &model);
    }

    #[test]
    fn an_insert_into_a_full_middle_chunk_splits_it() {
        let mut set = ChunkedSet::default();
        let mut model = BTreeSet::new();
        for k in 0..(CHUNK as u32 * 2) {
            set.insert(k * 2);
            model.insert(k * 2);
        }
        for k in [1, 2 * CHUNK as u32 - 1, 2 * CHUNK as u32 + 1, 4 * CHUNK as u32 - 3] {
            assert!(set.insert(k));
            model.insert(k);
            agrees(&set, &model);
        }
        assert!(!set.insert(2), "a key already there");
        while let Some(k) = set.pop_first() {
            assert_eq!(Some(k), model.pop_first());
        }
        agrees(&set, &model);
    }
}
