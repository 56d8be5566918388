//! Stack identity on the hooking side: a fast 64-bit hash of a stack's words (native frame
//! addresses, then Python frame words), and a per-thread direct-mapped cache of what this
//! thread already defined in the stream (stack hashes, and the keys of the Python code
//! objects they name), so each distinct stack and code object is sent once per thread
//! (the sender dedups the rest). Both are forgotten together: after a dropped batch,
//! and in a new stream.

/// Entries in a thread's stack cache (a power of two).
const CACHE_ENTRIES: usize = 2048;
/// Entries in a thread's code cache (a power of two).
const CODE_ENTRIES: usize = 1024;

/// Hashes a stack of `words`, the last `py` of them Python frame words. Each step is a
/// bijection of the running state for a fixed word, so two stacks that differ in one word
/// never collide; zero is reserved for "empty cache entry".
#[inline]
pub fn stack_hash(words: &[u64], py: usize) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = 0x9e37_79b9_7f4a_7c15 ^ words.len() as u64 ^ ((py as u64) << 32);
    for &f in words {
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

/// Direct-mapped sets of the stack hashes and code keys this thread has defined in the
/// current stream.
pub struct StackCache {
    slots: Box<[u64]>,
    codes: Box<[u64]>,
}

/// A zeroed table of `n` entries, or `None` when memory is exhausted.
fn table(n: usize) -> Option<Box<[u64]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v.into_boxed_slice())
}

impl StackCache {
    /// An empty cache, or `None` when memory is exhausted.
    pub fn try_new() -> Option<StackCache> {
        Some(StackCache {
            slots: table(CACHE_ENTRIES)?,
            codes: table(CODE_ENTRIES)?,
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

    /// Whether the code object `key` (never zero) was defined and not evicted since.
    #[inline]
    pub fn has_code(&self, key: u64) -> bool {
        self.codes[key as usize & (CODE_ENTRIES - 1)] == key
    }

    #[inline]
    pub fn insert_code(&mut self, key: u64) {
        self.codes[key as usize & (CODE_ENTRIES - 1)] = key;
    }

    /// Forgets everything: after a batch with definitions was dropped, or in a new stream.
    pub fn clear(&mut self) {
        self.slots.fill(0);
        self.codes.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_deterministic_nonzero_and_order_sensitive() {
        let a = [0x401000u64, 0x402000, 0x7f00_0000_1234];
        assert_eq!(stack_hash(&a, 0), stack_hash(&a, 0));
        assert_ne!(stack_hash(&a, 0), 0);
        assert_ne!(stack_hash(&[], 0), 0);
        let mut b = a;
        b.swap(0, 1);
        assert_ne!(stack_hash(&a, 0), stack_hash(&b, 0));
        assert_ne!(stack_hash(&a, 0), stack_hash(&a[..2], 0));
        assert_ne!(stack_hash(&[0], 0), stack_hash(&[], 0));
        // The same words split differently between native and Python frames.
        assert_ne!(stack_hash(&a, 1), stack_hash(&a, 0));
        assert_ne!(stack_hash(&a, 1), stack_hash(&a, 2));
    }

    #[test]
    fn single_frame_changes_never_collide() {
        let base: Vec<u64> = (0..16).map(|i| 0x5555_0000_0000 + i * 0x40).collect();
        let mut seen = std::collections::HashSet::new();
        seen.insert(stack_hash(&base, 4));
        for pos in 0..base.len() {
            for delta in 1..200u64 {
                let mut s = base.clone();
                s[pos] += delta;
                assert!(seen.insert(stack_hash(&s, 4)), "collision at {pos}/{delta}");
            }
        }
    }

    #[test]
    fn cache_remembers_until_evicted_or_cleared() {
        let mut c = StackCache::try_new().unwrap();
        let h = stack_hash(&[1, 2, 3], 0);
        assert!(!c.contains(h));
        c.insert(h);
        assert!(c.contains(h));
        // Same index, other hash: evicts.
        let other = h ^ ((CACHE_ENTRIES as u64) << 4);
        c.insert(other);
        assert!(!c.contains(h) && c.contains(other));
        c.insert_code(77);
        assert!(c.has_code(77) && !c.has_code(78));
        c.insert_code(77 + CODE_ENTRIES as u64);
        assert!(!c.has_code(77), "evicted");
        c.clear();
        assert!(!c.contains(other));
        assert!(!c.has_code(77 + CODE_ENTRIES as u64));
    }
}
