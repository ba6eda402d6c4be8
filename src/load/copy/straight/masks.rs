//! Where the strings of a line end: a bit for each quote and backslash of
//! each 64 bytes, all made in one pass over the line before the walk,
//! thirty-two bytes at a time where the processor has AVX2, else sixteen.
//! A line without backslashes also has its quotes listed in order
//! ([`LineMasks::quotes`]): each string then ends at a known quote.

/// The most blocks of 64 bytes a line of the straight path has: a longer
/// line (over 4 KiB, far beyond a finding's usual 350 bytes) goes through
/// the record path.
const MAX_BLOCKS: usize = 64;

/// What the walk needs to know of a line's bytes.
pub struct LineMasks {
    /// A bit for each quote and backslash, 64 bytes to a block; none past
    /// the line's end.
    specials: [u64; MAX_BLOCKS],
    blocks: usize,
    /// Whether any of the specials is a backslash.
    backslashes: bool,
    /// Where the first and the last byte over 0x7f are.
    pub high: Option<(usize, usize)>,
}

/// The most quotes [`LineMasks::quotes`] lists: a finding of the usual
/// shape with the most primary key columns the straight path takes has 76.
pub const MAX_QUOTES: usize = 96;

/// Room for the quotes listed: [`MAX_QUOTES`], and the eight slots past
/// them that a block's listing may write before its count is known.
pub const QUOTE_SLOTS: usize = MAX_QUOTES + 8;

impl LineMasks {
    /// No masks yet: see [`LineMasks::make`].
    pub const fn new() -> LineMasks {
        LineMasks {
            specials: [0; MAX_BLOCKS],
            blocks: 0,
            backslashes: false,
            high: None,
        }
    }

    /// Makes the masks of `line`, in place (they are half a kilobyte);
    /// None when it holds a control character (a line of the usual shape
    /// has none, in strings or out) or is too long.
    #[inline(always)]
    pub fn make(&mut self, line: &[u8]) -> Option<()> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, as just asked.
            return unsafe { avx2::fill(self, line) };
        }
        fill(self, line, chunk_masks, chunk_masks)
    }

    /// The places of the line's quotes, in order, into `out`, and how many
    /// there are; None when the line has a backslash (a quote may then be
    /// escaped) or more than [`MAX_QUOTES`] quotes.
    #[inline(always)]
    pub fn quotes(&self, out: &mut [u32; QUOTE_SLOTS]) -> Option<usize> {
        if self.backslashes {
            return None;
        }
        let mut count = 0;
        for (block, &bits) in self.specials[..self.blocks].iter().enumerate() {
            let here = bits.count_ones() as usize;
            if count + here > MAX_QUOTES {
                return None;
            }
            let base = (block * 64) as u32;
            // Eight slots whatever the count, without a branch on each bit
            // (a block of a finding has about eight quotes): the slots
            // past the count are overwritten by the next block, or unused.
            let mut rest = bits;
            for slot in &mut out[count..count + 8] {
                *slot = base + rest.trailing_zeros();
                rest &= rest.wrapping_sub(1);
            }
            let mut at = count + 8;
            while rest != 0 {
                out[at] = base + rest.trailing_zeros();
                rest &= rest - 1;
                at += 1;
            }
            count += here;
        }
        Some(count)
    }

    /// Where the next quote or backslash at or after `from` is; None
    /// when there is none.
    #[inline(always)]
    pub fn next_special(&self, from: usize) -> Option<usize> {
        let mut block = from / 64;
        if block >= self.blocks {
            return None;
        }
        let mut bits = self.specials[block] & (u64::MAX << (from % 64));
        while bits == 0 {
            block += 1;
            if block >= self.blocks {
                return None;
            }
            bits = self.specials[block];
        }
        Some(block * 64 + bits.trailing_zeros() as usize)
    }
}

/// The masks of 64 bytes: a bit for each quote and backslash, a bit for
/// each byte over 0x7f, whether any is a control character, and whether
/// any is a backslash.
type Chunk = (u64, u64, bool, bool);

/// [`LineMasks::make`], with `chunk` making the masks of 64 bytes.
#[inline(always)]
fn fill(
    masks: &mut LineMasks,
    line: &[u8],
    chunk: impl Fn(&[u8; 64]) -> Chunk,
    last_chunk: impl Fn(&[u8; 64]) -> Chunk,
) -> Option<()> {
    let blocks = line.len().div_ceil(64);
    if blocks > MAX_BLOCKS {
        return None;
    }
    masks.blocks = blocks;
    let (mut first_high, mut last_high) = (usize::MAX, 0);
    let (mut controls, mut backslashes) = (false, false);
    let mut note = |block: usize, (specials, high, control, backslash): Chunk| {
        masks.specials[block] = specials;
        controls |= control;
        backslashes |= backslash;
        if high != 0 {
            first_high = first_high.min(block * 64 + high.trailing_zeros() as usize);
            last_high = block * 64 + 63 - high.leading_zeros() as usize;
        }
    };
    let whole = line.len() / 64;
    for (block, bytes) in line.chunks_exact(64).enumerate() {
        note(block, chunk(bytes.try_into().expect("64 bytes")));
    }
    if whole < blocks {
        // The last bytes, fewer than 64: the masks of the line's last 64
        // bytes, shifted (the bytes before them are the line's too), or of
        // the line padded with spaces when it is shorter.
        let rest = line.len() - whole * 64;
        // Its bytes are all the line's (or spaces), so its control
        // characters and backslashes are the line's too.
        let (specials, high, control, backslash) = match line.last_chunk::<64>() {
            Some(last) => last_chunk(last),
            None => {
                let mut padded = [b' '; 64];
                padded[64 - rest..].copy_from_slice(line);
                last_chunk(&padded)
            }
        };
        note(
            whole,
            (
                specials >> (64 - rest),
                high >> (64 - rest),
                control,
                backslash,
            ),
        );
    }
    if controls {
        return None;
    }
    masks.backslashes = backslashes;
    masks.high = (first_high != usize::MAX).then_some((first_high, last_high));
    Some(())
}

/// The masks of 64 bytes, sixteen at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn chunk_masks(chunk: &[u8; 64]) -> Chunk {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
    };
    // SAFETY: SSE2 is part of x86-64 itself: every such processor has it;
    // and each load reads 16 of the chunk's 64 bytes.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        let (mut specials, mut high) = (0u64, 0u64);
        // Each byte's smallest over the lanes, unsigned.
        let mut smallest = _mm_set1_epi8(-1);
        let mut backslashes = _mm_setzero_si128();
        for (lane, bytes) in chunk.chunks_exact(16).enumerate() {
            let v = _mm_loadu_si128(bytes.as_ptr().cast());
            let is_backslash = _mm_cmpeq_epi8(v, backslash);
            backslashes = _mm_or_si128(backslashes, is_backslash);
            let special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), is_backslash);
            // The high bit of each byte is what the mask takes.
            specials |= u64::from(_mm_movemask_epi8(special) as u16) << (lane * 16);
            high |= u64::from(_mm_movemask_epi8(v) as u16) << (lane * 16);
            smallest = _mm_min_epu8(smallest, v);
        }
        // A byte is a control character when the larger of it and 0x1f is
        // 0x1f.
        let controls = _mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_max_epu8(smallest, below_space),
            below_space,
        )) != 0;
        (
            specials,
            high,
            controls,
            _mm_movemask_epi8(backslashes) != 0,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn chunk_masks(chunk: &[u8; 64]) -> Chunk {
    let (mut specials, mut high) = (0, 0);
    for (index, &byte) in chunk.iter().enumerate() {
        specials |= u64::from(byte == b'"' || byte == b'\\') << index;
        high |= u64::from(byte > 0x7f) << index;
    }
    let controls = chunk.iter().any(|&byte| byte < 0x20);
    let backslashes = chunk.contains(&b'\\');
    (specials, high, controls, backslashes)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_max_epu8, _mm256_min_epu8,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };

    use super::{Chunk, LineMasks};

    #[target_feature(enable = "avx2")]
    pub fn fill(masks: &mut LineMasks, line: &[u8]) -> Option<()> {
        // The closure has the function's features: AVX2 is inlined.
        // With AVX2's masks shifted, the compiler splits them bit by bit:
        // the last, shifted, are made sixteen bytes at a time.
        super::fill(masks, line, |chunk| chunk_masks(chunk), super::chunk_masks)
    }

    /// The masks of 64 bytes, thirty-two at a time.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn chunk_masks(chunk: &[u8; 64]) -> Chunk {
        let quote = _mm256_set1_epi8(b'"' as i8);
        let backslash = _mm256_set1_epi8(b'\\' as i8);
        let below_space = _mm256_set1_epi8(0x1f);
        // SAFETY: each load reads 32 of the chunk's 64 bytes.
        let (low, high) = unsafe {
            (
                _mm256_loadu_si256(chunk.as_ptr().cast()),
                _mm256_loadu_si256(chunk[32..].as_ptr().cast()),
            )
        };
        let (backslash_low, backslash_high) = (
            _mm256_cmpeq_epi8(low, backslash),
            _mm256_cmpeq_epi8(high, backslash),
        );
        let special_low = _mm256_or_si256(_mm256_cmpeq_epi8(low, quote), backslash_low);
        let special_high = _mm256_or_si256(_mm256_cmpeq_epi8(high, quote), backslash_high);
        let backslashes = _mm256_movemask_epi8(_mm256_or_si256(backslash_low, backslash_high)) != 0;
        // The high bit of each byte is what the mask takes.
        let specials = u64::from(_mm256_movemask_epi8(special_low) as u32)
            | u64::from(_mm256_movemask_epi8(special_high) as u32) << 32;
        let over = u64::from(_mm256_movemask_epi8(low) as u32)
            | u64::from(_mm256_movemask_epi8(high) as u32) << 32;
        let smallest = _mm256_min_epu8(low, high);
        let controls = _mm256_movemask_epi8(_mm256_cmpeq_epi8(
            _mm256_max_epu8(smallest, below_space),
            below_space,
        )) != 0;
        (specials, over, controls, backslashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each special byte found from each place, and the high bytes' ends,
    /// as a byte-by-byte look at the line finds them.
    fn check(masks: &LineMasks, line: &[u8]) {
        for from in 0..=line.len() + 64 {
            let expected = line
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, byte)| matches!(byte, b'"' | b'\\'))
                .map(|(at, _)| at);
            assert_eq!(masks.next_special(from), expected, "{line:?} from {from}");
        }
        let high: Vec<usize> = (0..line.len()).filter(|&at| line[at] > 0x7f).collect();
        let ends = high.first().zip(high.last()).map(|(a, b)| (*a, *b));
        assert_eq!(masks.high, ends, "{line:?}");
        let quotes: Vec<u32> = (0..line.len() as u32)
            .filter(|&at| line[at as usize] == b'"')
            .collect();
        let mut listed = [0; QUOTE_SLOTS];
        let expected =
            (!line.contains(&b'\\') && quotes.len() <= MAX_QUOTES).then_some(&quotes[..]);
        let count = masks.quotes(&mut listed);
        assert_eq!(count.map(|count| &listed[..count]), expected, "{line:?}");
    }

    #[test]
    fn masks_are_what_each_byte_makes() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const BYTES: &[u8] = b"\"\\ax :{}\xc3\xa9\xff\x7f\x20";
        // Lines without backslashes, whose quotes are listed, and with
        // more quotes than are listed.
        const QUOTED: &[u8] = b"\"\"\"ax :{}\xc3\xa9\xff\x7f\x20";
        type Maker = fn(&mut LineMasks, &[u8]) -> Option<()>;
        // Sixteen bytes at a time, and whatever the processor allows.
        let makers: [Maker; 2] = [
            |masks, line| fill(masks, line, chunk_masks, chunk_masks),
            LineMasks::make,
        ];
        for len in (0..200).chain([255, 256, 257, 4095, 4096]) {
            for _ in 0..4 {
                let bytes = [BYTES, QUOTED][random() as usize % 2];
                let mut line: Vec<u8> = (0..len)
                    .map(|_| bytes[random() as usize % bytes.len()])
                    .collect();
                for make in makers {
                    let mut masks = LineMasks::new();
                    assert_eq!(make(&mut masks, &line), Some(()));
                    check(&masks, &line);
                }
                if len > 0 {
                    let at = random() as usize % len;
                    line[at] = [b'\t', b'\0', 0x1f, b'\n'][random() as usize % 4];
                    for make in makers {
                        assert_eq!(make(&mut LineMasks::new(), &line), None, "control at {at}");
                    }
                }
            }
        }
        let long = vec![b'a'; 4097];
        assert_eq!(LineMasks::new().make(&long), None, "longer than kept");
    }
}
