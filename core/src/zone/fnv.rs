//! FNV-1a, the one hash peers compare: stable across platforms and
//! releases, unlike std's hasher. Written once here for its 32- and
//! 64-bit forms; what each hash covers is its caller's business.

/// FNV-1a, 32 bits, fed bytes or (as `fmt::Write`) formatted text.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a32(u32);

impl Fnv1a32 {
    /// A hasher at the 32-bit FNV offset basis.
    pub fn new() -> Self {
        Fnv1a32(0x811c_9dc5)
    }

    /// Feeds `bytes` into the hash, one at a time.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u32;
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }

    /// The hash of everything written so far.
    pub fn finish(self) -> u32 {
        self.0
    }
}

impl Default for Fnv1a32 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Write for Fnv1a32 {
    /// Hashes the text as it is formatted: the same value as hashing
    /// `to_string()`, without allocating the string.
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64(u64);

impl Fnv1a64 {
    /// A hasher at the 64-bit FNV offset basis.
    pub fn new() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds `bytes` into the hash, one at a time.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of everything written so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a, 64 bits, of one byte string.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a".
        assert_eq!(Fnv1a32::new().finish(), 0x811c_9dc5);
        let mut a = Fnv1a32::new();
        a.write(b"a");
        assert_eq!(a.finish(), 0xe40c_292c);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
