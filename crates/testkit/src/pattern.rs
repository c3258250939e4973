//! [`pattern`]: test data that compares like real data (no runs of one
//! byte, no period a chunk or block boundary could hide a misplaced write
//! behind) and is the same for the same arguments on every run.

/// `length` bytes from an xorshift generator seeded by `salt`: equal salts
/// give equal bytes, different salts different bytes.
pub fn pattern(length: usize, salt: u64) -> Vec<u8> {
    let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..length)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn equal_salts_give_equal_bytes_and_others_differ() {
        assert_eq!(pattern(4096, 7), pattern(4096, 7));
        assert_ne!(pattern(4096, 7), pattern(4096, 8));
        let bytes = pattern(1 << 16, 1);
        let distinct = bytes.iter().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(distinct.len(), 256, "every byte value appears");
    }
}
