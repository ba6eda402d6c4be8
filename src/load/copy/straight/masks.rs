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
#[inline(always)]
pub fn block_masks(line: &[u8], block: usize) -> Option<Masks> {
    let bytes = line.get(block * 64..).filter(|bytes| !bytes.is_empty())?;
    if let Some(chunk) = bytes.first_chunk::<64>() {
        return chunk_masks(chunk);
    }
    // The last bytes, fewer than 64: the masks of the line's last 64
    // bytes, shifted. The bytes before the block are the line's too, and
    // a line with a control character anywhere is not of the usual shape.
    match line.last_chunk::<64>() {
        Some(chunk) => {
            let shift = 64 - bytes.len();
            chunk_masks(chunk).map(|masks| Masks {
                specials: masks.specials >> shift,
                high: masks.high >> shift,
            })
        }
        None => short_masks(bytes),
    }
}

/// The masks of a line shorter than 64 bytes, padded with spaces.
#[cold]
fn short_masks(bytes: &[u8]) -> Option<Masks> {
    let mut padded = [b' '; 64];
    padded[..bytes.len()].copy_from_slice(bytes);
    chunk_masks(&padded)
}

#[inline(always)]
fn chunk_masks(chunk: &[u8; 64]) -> Option<Masks> {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64 itself: every such processor has it.
    let (specials, controls, high) = unsafe { masks(chunk) };
    #[cfg(not(target_arch = "x86_64"))]
    let (specials, controls, high) = masks(chunk);
    (!controls).then_some(Masks { specials, high })
}

/// Bits for the quotes and backslashes and for the bytes over 0x7f of 64
/// bytes, and whether any is a control character: sixteen at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn masks(chunk: &[u8; 64]) -> (u64, bool, u64) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let below_space = _mm_set1_epi8(0x1f);
    let mut specials = 0u64;
    // Each byte's smallest over the lanes, unsigned.
    let mut smallest = _mm_set1_epi8(-1);
    let mut high = 0u64;
    for (lane, bytes) in chunk.chunks_exact(16).enumerate() {
        // SAFETY: `bytes` is 16 bytes long, and an unaligned load reads
        // exactly 16 bytes from any address.
        let v = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
        let special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        // The high bit of each byte is what the mask takes.
        specials |= u64::from(_mm_movemask_epi8(special) as u16) << (lane * 16);
        high |= u64::from(_mm_movemask_epi8(v) as u16) << (lane * 16);
        smallest = _mm_min_epu8(smallest, v);
    }
    // A byte is a control character when the larger of it and 0x1f is 0x1f.
    let controls = _mm_movemask_epi8(_mm_cmpeq_epi8(
        _mm_max_epu8(smallest, below_space),
        below_space,
    )) != 0;
    (specials, controls, high)
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(chunk: &[u8; 64]) -> (u64, bool, u64) {
    let (mut specials, mut high) = (0, 0);
    for (index, &byte) in chunk.iter().enumerate() {
        specials |= u64::from(byte == b'"' || byte == b'\\') << index;
        high |= u64::from(byte > 0x7f) << index;
    }
    let controls = chunk.iter().any(|&byte| byte < 0x20);
    (specials, controls, high)
}
