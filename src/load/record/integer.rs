//! Non-negative JSON integers, eight digits at a time.

/// The non-negative JSON integer at `at` in `bytes`, when it is one within
/// BIGINT range, and where it ends. None for anything else: a leading zero,
/// a fraction or an exponent (a float), an overflow.
#[inline(always)]
pub fn integer_at(bytes: &[u8], at: usize) -> Option<(i64, usize)> {
    let mut end = at;
    let mut value: u64 = 0;
    // Eight bytes at a time while the line has them: an lsn has about
    // eleven digits, and the line goes on after it.
    while let Some(chunk) = bytes.get(end..).and_then(<[u8]>::first_chunk::<8>) {
        let (digits, eight) = leading_digits(u64::from_le_bytes(*chunk));
        if digits == 0 {
            break;
        }
        value = value
            .checked_mul(POWERS_OF_TEN[digits])?
            .checked_add(eight)?;
        end += digits;
        if digits < 8 {
            break;
        }
    }
    if bytes.len() - end < 8 {
        while let Some(digit) = bytes.get(end).filter(|c| c.is_ascii_digit()) {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            end += 1;
        }
    }
    let value = i64::try_from(value).ok()?;
    let digits = end - at;
    let well_formed = digits == 1 || (digits > 1 && bytes[at] != b'0');
    let ends = !matches!(bytes.get(end), Some(b'.' | b'e' | b'E'));
    (well_formed && ends).then_some((value, end))
}

const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `word` (the first in its lowest byte)
/// are ASCII digits before any other byte, and the number they make.
#[inline(always)]
fn leading_digits(word: u64) -> (usize, u64) {
    const LOW: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    // A byte is a digit when its high half is 3 and its low half, plus 6,
    // stays below 16 (each half added apart: nothing carries over).
    let other =
        ((word & HIGH) ^ 0x3030_3030_3030_3030) | (((word & LOW) + 0x0606_0606_0606_0606) & HIGH);
    let digits = (other.trailing_zeros() / 8) as usize;
    if digits == 0 {
        return (0, 0);
    }
    // The digits' values in the highest bytes, zeros below them: the first
    // is the most significant. Then pairs, fours and eights are made of
    // neighbours at once.
    let mut value = (word & LOW) << (8 * (8 - digits));
    value = (value.wrapping_mul(10 << 8 | 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    value = (value.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_ffff_0000_ffff;
    value = value.wrapping_mul(10000 << 32 | 1) >> 32;
    (digits, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_digit_by_digit() {
        let slow = |text: &str| {
            let digits = text.bytes().take_while(u8::is_ascii_digit).count();
            let value = text[..digits].parse::<i64>().ok()?;
            let well_formed = digits == 1 || !text.starts_with('0');
            let ends = !matches!(text.as_bytes().get(digits), Some(b'.' | b'e' | b'E'));
            (well_formed && ends).then_some((value, digits))
        };
        let mut texts = vec![
            String::new(),
            "9223372036854775807".to_owned(),
            "9223372036854775808".to_owned(),
            "18446744073709551615".to_owned(),
            "18446744073709551616".to_owned(),
            "99999999999999999999999".to_owned(),
        ];
        for digits in 1..=20 {
            let number: String = (0..digits)
                .map(|i| char::from(b'1' + (i * 7 % 9) as u8))
                .collect();
            for after in [
                "", ",", "}", " ", "x", ".5", "e3", "E3", "/", ":", "\u{ff}", "9",
            ] {
                texts.push(format!("{number}{after}"));
                texts.push(format!("0{number}{after}"));
                texts.push(format!("{number}{after},\"lsn\":1}}"));
            }
        }
        for text in &texts {
            for before in ["", "x:"] {
                let line = format!("{before}{text}");
                assert_eq!(
                    integer_at(line.as_bytes(), before.len())
                        .map(|(v, end)| (v, end - before.len())),
                    slow(text),
                    "{line:?}"
                );
            }
        }
        for byte in 0..=255u8 {
            let line = [b'1', byte, b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9'];
            let expected = match std::str::from_utf8(&line) {
                Ok(text) => slow(text),
                Err(_) => Some((1, 1)),
            };
            assert_eq!(integer_at(&line, 0), expected, "{byte}");
        }
    }
}
