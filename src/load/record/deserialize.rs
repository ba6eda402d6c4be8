//! How serde_json reads a line that the scanner of the usual shape did not
//! take: into a [`RawFinding`], borrowing every string without escapes,
//! with each value's error labelled with its field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{OTHER_FIELDS, RawFinding, TEXT_FIELDS, parse_text_lsn};

impl<'de> de::Deserialize<'de> for RawFinding<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawFindingVisitor)
    }
}

struct RawFindingVisitor;

impl<'de> Visitor<'de> for RawFindingVisitor {
    type Value = RawFinding<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object (one finding)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawFinding::default();
        // Fields seen so far, by their place in OTHER_FIELDS after the text
        // ones: a field given twice is an error even when its value is null.
        let mut seen = 0u32;
        while let Some(field) = map.next_key_seed(FieldSeed)? {
            let Some(place) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let name = field_name(place);
            if seen & (1 << place) != 0 {
                return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
            }
            seen |= 1 << place;
            // Re-labels a value's error with the field it belongs to.
            let field = |e: A::Error| {
                de::Error::custom(format_args!("field `{name}`: {}", plain(&e.to_string())))
            };
            match name {
                "primary_key" => {
                    raw.primary_key = map
                        .next_value_seed(KeySeed { object: true })
                        .map_err(field)?;
                }
                "primary_keys" => {
                    raw.primary_keys = map
                        .next_value_seed(KeySeed { object: false })
                        .map_err(field)?;
                }
                "lsn" => raw.lsn = Some(map.next_value_seed(LsnSeed).map_err(field)?),
                "timestamp" => {
                    raw.timestamp = map.next_value_seed(OptionalTextSeed).map_err(field)?;
                }
                "detected_at" => {
                    raw.detected_at = map.next_value_seed(OptionalTextSeed).map_err(field)?;
                }
                _ => raw.text[place] = Some(map.next_value_seed(TextSeed).map_err(field)?),
            }
        }
        Ok(raw)
    }
}

/// The name of the field at `place` (text fields first).
fn field_name(place: usize) -> &'static str {
    TEXT_FIELDS
        .iter()
        .chain(&OTHER_FIELDS)
        .nth(place)
        .expect("a place comes from the tables")
}

/// A field's name, as its place among the finding's fields: None for a
/// field findings do not have. Read as bytes, so that the name of a field
/// that is ignored anyway may hold what a string may not (a lone
/// surrogate escape).
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(TEXT_FIELDS
            .iter()
            .chain(&OTHER_FIELDS)
            .position(|f| f.as_bytes() == v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.visit_bytes(v.as_bytes())
    }
}

/// A JSON string, borrowed from the line when it has no escapes.
struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A string, or null meaning absent.
struct OptionalTextSeed;

impl<'de> DeserializeSeed<'de> for OptionalTextSeed {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalTextSeed {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        TextSeed.deserialize(d).map(Some)
    }
}

/// `primary_key` (an object of strings) or `primary_keys` ([name, value]
/// pairs); null means absent.
struct KeySeed {
    object: bool,
}

type KeyColumns<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<KeyColumns<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<KeyColumns<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object {
            f.write_str("an object of column names to string values")
        } else {
            f.write_str("an array of [name, value] string pairs")
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.object {
            d.deserialize_map(self)
        } else {
            d.deserialize_seq(self)
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if !self.object {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        let mut columns = Vec::new();
        while let Some(name) = map.next_key_seed(TextSeed)? {
            let value = map
                .next_value_seed(TextSeed)
                .map_err(|e| de::Error::custom(format_args!("value of column {name:?}: {e}")))?;
            columns.push((name, value));
        }
        Ok(Some(columns))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.object {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut columns = Vec::new();
        while let Some(pair) = seq.next_element_seed(PairSeed)? {
            columns.push(pair);
        }
        Ok(Some(columns))
    }
}

/// One `[name, value]` pair of `primary_keys`.
struct PairSeed;

impl<'de> DeserializeSeed<'de> for PairSeed {
    type Value = (Cow<'de, str>, Cow<'de, str>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed {
    type Value = (Cow<'de, str>, Cow<'de, str>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [name, value] pair of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let name = seq
            .next_element_seed(TextSeed)?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let value = seq
            .next_element_seed(TextSeed)?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok((name, value))
    }
}

/// An LSN: an unsigned integer within BIGINT range, or "XXXXXXXX/XXXXXXXX".
struct LsnSeed;

impl<'de> DeserializeSeed<'de> for LsnSeed {
    type Value = i64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

const LSN_RANGE: &str = "above 9223372036854775807, the largest BIGINT";

impl<'de> Visitor<'de> for LsnSeed {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an unsigned integer or a textual LSN like \"16/B374D848\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format_args!("{v} is {LSN_RANGE}")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if v < 0 {
            return Err(E::custom(format_args!("{v} is negative")));
        }
        Ok(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // serde_json hands over integers beyond u64 as floats too.
        if v.fract() == 0.0 && v >= 9.3e18 {
            // The float is not what the line says: its magnitude is.
            Err(E::custom(format_args!(
                "an integer of about {v:.1e} is {LSN_RANGE}"
            )))
        } else if v.fract() == 0.0 && v >= 9.2e18 {
            // 9223372036854775807.0 reads as 2^63: whether the line wrote
            // a fraction or more than BIGINT holds is not known here.
            Err(E::custom(format_args!(
                "a number of about {v:.1e}, written with a fraction or an exponent, or {LSN_RANGE}: \
                 an LSN is an integer"
            )))
        } else if v < 0.0 {
            Err(E::custom(format_args!("{v} is negative")))
        } else if v.is_sign_negative() {
            // serde_json reads -0 as a float.
            Err(E::custom("-0 has a minus sign: an LSN is unsigned"))
        } else {
            // The line's own digits are gone: say the value, as a value.
            Err(E::custom(format_args!(
                "written with a fraction or an exponent (a value of {v}), not as an integer"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        let lsn = parse_text_lsn(v).ok_or_else(|| {
            E::custom(format_args!(
                "{v:?} is not a textual LSN (two hexadecimal halves, like \"16/B374D848\")"
            ))
        })?;
        i64::try_from(lsn).map_err(|_| E::custom(format_args!("{v:?} is {LSN_RANGE}")))
    }
}

/// serde_json's words for a lone surrogate escape, said plainly.
fn plain(message: &str) -> std::borrow::Cow<'_, str> {
    const LONE: &str = "a \\u escape of half a UTF-16 surrogate pair without its other half \
                        (a lone surrogate), which is no character";
    [
        "unexpected end of hex escape",
        "lone leading surrogate in hex escape",
    ]
    .iter()
    .find(|words| message.contains(*words))
    .map_or(message.into(), |words| message.replace(words, LONE).into())
}
