//! Where the strings of 64 bytes of a line end, found sixteen bytes at a
//! time.

/// What the walk needs to know of 64 bytes of a line.
pub struct Masks {
    /// A bit for each quote and backslash.
    pub specials: u64,
    /// A bit for each byte over 0x7f.
    pub high: u64,
}

/// The masks of the `block`th 64 bytes of `line`; None past its end, or
/// when the block holds a control character.
pub fn block_masks(line: &[u8], block: usize) -> Option<Masks> {
    let bytes = line.get(block * 64..)?;
    let mut padded = [b' '; 64];
    let chunk: &[u8; 64] = match bytes.first_chunk::<64>() {
        Some(chunk) => chunk,
        None if bytes.is_empty() => return None,
        None => {
            padded[..bytes.len()].copy_from_slice(bytes);
            &padded
        }
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64 itself: every such processor has it.
    let [specials, controls, high] = unsafe { masks(chunk) };
    #[cfg(not(target_arch = "x86_64"))]
    let [specials, controls, high] = masks(chunk);
    (controls == 0).then_some(Masks { specials, high })
}

/// Bits for the quotes and backslashes, for the control characters and
/// for the bytes over 0x7f of 64 bytes: sixteen at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn masks(chunk: &[u8; 64]) -> [u64; 3] {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let below_space = _mm_set1_epi8(0x1f);
    let mut bits = [0u64; 3];
    for (lane, bytes) in chunk.chunks_exact(16).enumerate() {
        // SAFETY: `bytes` is 16 bytes long, and an unaligned load reads
        // exactly 16 bytes from any address.
        let v = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
        // A byte is a control character when the larger of it and 0x1f,
        // unsigned, is 0x1f.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, below_space), below_space);
        let special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        // The high bit of each byte is what the mask takes.
        for (bits, of) in bits.iter_mut().zip([special, control, v]) {
            *bits |= u64::from(_mm_movemask_epi8(of) as u16) << (lane * 16);
        }
    }
    bits
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(chunk: &[u8; 64]) -> [u64; 3] {
    let mut bits = [0u64; 3];
    for (index, &byte) in chunk.iter().enumerate() {
        bits[0] |= u64::from(byte == b'"' || byte == b'\\') << index;
        bits[1] |= u64::from(byte < 0x20) << index;
        bits[2] |= u64::from(byte > 0x7f) << index;
    }
    bits
}
