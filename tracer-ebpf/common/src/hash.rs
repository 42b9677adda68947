//! The hashes both sides compute: the stack hash (FNV-1a over return addresses) and the
//! finalizer that spreads the in-flight table's keys.
/// FNV-1a offset basis and prime, for stack hashing (kernel side) and tests (user side).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the stack hash: folds in a return address (then, last, the frame count),
/// starting from FNV_OFFSET. The fold of the high half into the low keeps the low bits
/// dependent on every address bit.
#[inline(always)]
pub fn stack_hash_step(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(FNV_PRIME);
    h ^ (h >> 32)
}

/// murmur3's 64-bit finalizer: every input bit reaches every output bit, so keys that differ
/// in a few bits (one process's neighbouring blocks, one address in many processes) spread
/// over the in-flight table's slots (`live::home`; the site table's stack hashes are mixed
/// already, see `sites::home`).
#[inline(always)]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
