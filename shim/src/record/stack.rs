//! Stack identity on the hooking side: a fast 64-bit hash of the frame addresses, and a
//! per-thread direct-mapped cache of the hashes this thread already defined in the stream,
//! so each distinct stack's frames are sent once per thread (the sender dedups the rest).

/// Entries in a thread's cache (a power of two).
const CACHE_ENTRIES: usize = 2048;

/// Hashes a stack. Each step is a bijection of the running state for a fixed frame, so two
/// stacks that differ in one frame never collide; zero is reserved for "empty cache entry".
#[inline]
pub fn stack_hash(frames: &[u64]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = 0x9e37_79b9_7f4a_7c15 ^ frames.len() as u64;
    for &f in frames {
        h = (h.rotate_left(5) ^ f).wrapping_mul(K);
    }
    // splitmix64 finalizer: spread the state over all bits for the cache index.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    if h == 0 {
        1
    } else {
        h
    }
}

/// Direct-mapped set of stack hashes this thread has defined in the current stream.
pub struct StackCache {
    slots: Box<[u64]>,
}

impl StackCache {
    /// An empty cache, or `None` when memory is exhausted.
    pub fn try_new() -> Option<StackCache> {
        let mut v = Vec::new();
        v.try_reserve_exact(CACHE_ENTRIES).ok()?;
        v.resize(CACHE_ENTRIES, 0);
        Some(StackCache {
            slots: v.into_boxed_slice(),
        })
    }

    #[inline]
    fn index(hash: u64) -> usize {
        hash as usize & (CACHE_ENTRIES - 1)
    }

    /// Whether `hash` was inserted and not evicted since.
    #[inline]
    pub fn contains(&self, hash: u64) -> bool {
        self.slots[Self::index(hash)] == hash
    }

    #[inline]
    pub fn insert(&mut self, hash: u64) {
        self.slots[Self::index(hash)] = hash;
    }

    /// Forgets everything: after a batch with definitions was dropped, or in a new stream.
    pub fn clear(&mut self) {
        self.slots.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_deterministic_nonzero_and_order_sensitive() {
        let a = [0x401000u64, 0x402000, 0x7f00_0000_1234];
        assert_eq!(stack_hash(&a), stack_hash(&a));
        assert_ne!(stack_hash(&a), 0);
        assert_ne!(stack_hash(&[]), 0);
        let mut b = a;
        b.swap(0, 1);
        assert_ne!(stack_hash(&a), stack_hash(&b));
        assert_ne!(stack_hash(&a), stack_hash(&a[..2]));
        assert_ne!(stack_hash(&[0]), stack_hash(&[]));
    }

    #[test]
    fn single_frame_changes_never_collide() {
        let base: Vec<u64> = (0..16).map(|i| 0x5555_0000_0000 + i * 0x40).collect();
        let mut seen = std::collections::HashSet::new();
        seen.insert(stack_hash(&base));
        for pos in 0..base.len() {
            for delta in 1..200u64 {
                let mut s = base.clone();
                s[pos] += delta;
                assert!(seen.insert(stack_hash(&s)), "collision at {pos}/{delta}");
            }
        }
    }

    #[test]
    fn cache_remembers_until_evicted_or_cleared() {
        let mut c = StackCache::try_new().unwrap();
        let h = stack_hash(&[1, 2, 3]);
        assert!(!c.contains(h));
        c.insert(h);
        assert!(c.contains(h));
        // Same index, other hash: evicts.
        let other = h ^ ((CACHE_ENTRIES as u64) << 4);
        c.insert(other);
        assert!(!c.contains(h) && c.contains(other));
        c.clear();
        assert!(!c.contains(other));
    }
}
