//! A hasher for maps keyed by addresses and small ids (code object
//! addresses, thread idents, code ids): one multiply per word instead of
//! SipHash, which cost more than the lookups' work on the sampling path
//! (several lookups per changed frame, on both sides of the sink's
//! channel). The keys come from the target but only choose a bucket: a
//! hostile target can at worst make its own lookups slower.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` hashed with [`AddressHasher`].
pub type AddressMap<K, V> = HashMap<K, V, BuildHasherDefault<AddressHasher>>;

/// Mixes each word with one multiply; see the module documentation.
#[derive(Default, Clone, Copy)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        // The product's high bits are the mixed ones: fold them into the
        // low bits, which pick the bucket (aligned addresses end in zeros).
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_i32(&mut self, value: i32) {
        self.write_u64(value as u32 as u64);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_addresses_spread_over_the_low_bits() {
        let buckets: std::collections::HashSet<u64> = (0..1024u64)
            .map(|i| {
                let mut hasher = AddressHasher::default();
                hasher.write_u64(0x7f00_0000_0000 + i * 64);
                hasher.finish() & 1023
            })
            .collect();
        // 1,024 keys into 1,024 buckets: a good spread fills about 63%.
        assert!(buckets.len() > 500, "{} buckets used", buckets.len());
    }
}
