//! The configuration read straight from the YAML parser's events.
//!
//! `yaml_serde` (a port of libyaml) keeps every event of a document, about
//! 230 bytes each, before deserializing starts: for 100,000 accounts that
//! is hundreds of MB and most of `vipd check`'s time. This reads the same
//! file through serde one event at a time (the `saphyr-parser` events that
//! `spans.rs` reads too), resolving plain scalars as `yaml_serde` does.
//!
//! It is the fast path only. Whatever it does not read the way `yaml_serde`
//! does (anchors and aliases, tags, more or less than one document, nesting
//! deeper than `yaml_serde`'s limit) and every error make it answer `None`,
//! and the caller reads the file with `yaml_serde` as before: every error a
//! configuration can have is still `yaml_serde`'s, at its position.

use saphyr_parser::{Event, Parser, ScalarStyle, StrInput};
use serde::de::{self, DeserializeOwned, Visitor};

/// `T` from `text`, or `None` if this reader declines it (see above).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Option<T> {
    read(text).ok()
}

/// [`from_str`], saying why it declined.
fn read<T: DeserializeOwned>(text: &str) -> Result<T> {
    let mut de = Reader {
        events: Parser::new_from_str(text),
        peeked: None,
        depth: 0,
    };
    if !matches!(de.next()?, Event::StreamStart) || !matches!(de.next()?, Event::DocumentStart(_)) {
        return declined("not one document");
    }
    let value = T::deserialize(&mut de)?;
    match (de.next()?, de.next()?) {
        (Event::DocumentEnd, Event::StreamEnd) => Ok(value),
        _ => declined("not one document"),
    }
}

/// How deep collections may nest: `yaml_serde`'s recursion limit, so that
/// what it refuses is left to it.
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    events: Parser<'a, StrInput<'a>>,
    peeked: Option<Event<'a>>,
    depth: usize,
}

/// Why the fast path declined; the message is for debugging only, as the
/// caller reads the file again to report errors.
#[derive(Debug)]
pub(crate) struct Declined(String);

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Declined(msg.to_string())
    }
}

fn declined<T>(why: &str) -> Result<T, Declined> {
    Err(Declined(why.to_owned()))
}

type Result<T, E = Declined> = std::result::Result<T, E>;

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<Event<'a>> {
        if let Some(e) = self.peeked.take() {
            return Ok(e);
        }
        match self.events.next() {
            Some(Ok((event, _))) => Ok(event),
            Some(Err(e)) => Err(Declined(e.to_string())),
            None => declined("end of input"),
        }
    }

    fn peek(&mut self) -> Result<&Event<'a>> {
        if self.peeked.is_none() {
            let e = self.next()?;
            self.peeked = Some(e);
        }
        Ok(self.peeked.as_ref().expect("just set"))
    }

    /// The next node's plain or quoted text, declining anchors and tags.
    fn scalar(&mut self) -> Result<(std::borrow::Cow<'a, str>, ScalarStyle)> {
        match self.next()? {
            Event::Scalar(v, style, 0, None) => Ok((v, style)),
            _ => declined("not a scalar"),
        }
    }

    /// The next node, a plain scalar, as `parse` reads it; `what` it is
    /// not otherwise (a quoted `"5"` is not a number to `yaml_serde`).
    fn plain<T>(&mut self, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<T> {
        match self.scalar()? {
            (v, ScalarStyle::Plain) => parse(&v).map_or_else(|| declined(what), Ok),
            _ => declined(what),
        }
    }

    /// Runs `f` one collection deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return declined("nested too deep");
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// A sequence whose start was just read, to its end: a visitor that
    /// stops before the end is declined (`yaml_serde` counts it an error).
    fn seq<V: Visitor<'a>>(&mut self, visitor: V) -> Result<V::Value> {
        self.nested(|de| {
            let mut seq = Seq { de, done: false };
            let value = visitor.visit_seq(&mut seq)?;
            if seq.done {
                Ok(value)
            } else {
                declined("a sequence read in part")
            }
        })
    }

    /// [`Reader::seq`] for a mapping.
    fn map<V: Visitor<'a>>(&mut self, visitor: V) -> Result<V::Value> {
        self.nested(|de| {
            let mut map = Map { de, done: false };
            let value = visitor.visit_map(&mut map)?;
            if map.done {
                Ok(value)
            } else {
                declined("a mapping read in part")
            }
        })
    }

    /// Skips one node, however large.
    fn skip(&mut self) -> Result<()> {
        let mut open = 0usize;
        loop {
            match self.next()? {
                Event::Scalar(_, _, 0, None) => {}
                Event::SequenceStart(0, None) | Event::MappingStart(0, None) => open += 1,
                Event::SequenceEnd | Event::MappingEnd => open -= 1,
                _ => return declined("anchor, alias or tag"),
            }
            if open == 0 {
                return Ok(());
            }
        }
    }
}

/// A plain scalar that `yaml_serde` reads as null.
fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A leading zero followed by digits is a string (YAML 1.2).
fn digits_but_not_number(v: &str) -> bool {
    let v = v.strip_prefix(['-', '+']).unwrap_or(v);
    v.len() > 1 && v.starts_with('0') && v[1..].bytes().all(|b| b.is_ascii_digit())
}

/// `0x`, `0o` and `0b` prefixed, or decimal; `negative_ok` allows a
/// leading `-`.
fn parse_int(v: &str, negative_ok: bool) -> Option<i128> {
    let (neg, rest) = match v.strip_prefix('-') {
        Some(r) if negative_ok => (true, r),
        Some(_) => return None,
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    if rest.starts_with(['+', '-']) {
        return None;
    }
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
        .into_iter()
        .find_map(|(p, r)| rest.strip_prefix(p).map(|digits| (digits, r)));
    let n = match radix {
        Some((digits, r)) if !digits.starts_with(['+', '-']) => {
            match u128::from_str_radix(digits, r) {
                Ok(n) => n,
                Err(_) => parse_decimal(v, rest)?,
            }
        }
        Some(_) => return None,
        None => parse_decimal(v, rest)?,
    };
    let n = i128::try_from(n).ok()?;
    Some(if neg { -n } else { n })
}

fn parse_decimal(whole: &str, digits: &str) -> Option<u128> {
    if digits_but_not_number(whole) {
        return None;
    }
    digits.parse::<u128>().ok()
}

fn parse_f64(v: &str) -> Option<f64> {
    let unsigned = match v.strip_prefix('+') {
        Some(u) if u.starts_with(['+', '-']) => return None,
        Some(u) => u,
        None => v,
    };
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        _ => {}
    }
    match v {
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A plain scalar as `yaml_serde` types it: null, bool, integer, float,
/// else a string.
fn visit_plain<'de, V: Visitor<'de>>(v: &str, visitor: V) -> Result<V::Value> {
    if is_null(v) {
        return visitor.visit_unit();
    }
    if let Some(b) = parse_bool(v) {
        return visitor.visit_bool(b);
    }
    if let Some(n) = parse_int(v, true) {
        // As `yaml_serde`: a leading `-` makes it signed, `-0` included.
        if !v.starts_with('-') {
            if let Ok(u) = u64::try_from(n) {
                return visitor.visit_u64(u);
            }
        } else if let Ok(i) = i64::try_from(n) {
            return visitor.visit_i64(i);
        }
        return declined("an integer wider than 64 bits");
    }
    if !digits_but_not_number(v) {
        if let Some(f) = parse_f64(v) {
            return visitor.visit_f64(f);
        }
    }
    visitor.visit_str(v)
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Event::Scalar(v, ScalarStyle::Plain, 0, None) => visit_plain(&v, visitor),
            Event::Scalar(v, _, 0, None) => visitor.visit_str(&v),
            Event::SequenceStart(0, None) => self.seq(visitor),
            Event::MappingStart(0, None) => self.map(visitor),
            _ => declined("anchor, alias or tag"),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_bool(self.plain(parse_bool, "not a boolean")?)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let int = |v: &str| parse_int(v, true).and_then(|n| i64::try_from(n).ok());
        visitor.visit_i64(self.plain(int, "not an integer")?)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let whole = |v: &str| parse_int(v, false).and_then(|n| u64::try_from(n).ok());
        visitor.visit_u64(self.plain(whole, "not a whole number")?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(self.plain(parse_f64, "not a number")?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let (v, _) = self.scalar()?;
        visitor.visit_str(&v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            Event::Scalar(v, ScalarStyle::Plain, 0, None) if is_null(v) => {
                self.next()?;
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.scalar()? {
            (v, ScalarStyle::Plain) if is_null(&v) => visitor.visit_unit(),
            _ => declined("not null"),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Event::SequenceStart(0, None) => self.seq(visitor),
            // `key:` with nothing after it is an empty list.
            Event::Scalar(v, ScalarStyle::Plain, 0, None) if v.is_empty() => visitor.visit_seq(
                de::value::SeqDeserializer::<_, Declined>::new(std::iter::empty::<()>()),
            ),
            _ => declined("not a sequence"),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Event::MappingStart(0, None) => self.map(visitor),
            Event::Scalar(v, ScalarStyle::Plain, 0, None) if v.is_empty() => visitor.visit_map(
                de::value::MapDeserializer::<_, Declined>::new(std::iter::empty::<((), ())>()),
            ),
            _ => declined("not a mapping"),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        // A unit variant named by a scalar; `yaml_serde` wants a tag for
        // anything else, and tags are declined.
        match self.scalar()? {
            (v, _) if !v.is_empty() => {
                visitor.visit_enum(de::value::StrDeserializer::<Declined>::new(&v))
            }
            _ => declined("not a variant"),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        declined("bytes")
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        declined("bytes")
    }

    serde::forward_to_deserialize_any! {
        i128 u128 tuple tuple_struct
    }

    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_i64(v)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_f64(v)
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_str(v)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_str(v)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_str(v)
    }
}

struct Seq<'r, 'de> {
    de: &'r mut Reader<'de>,
    /// The end was read.
    done: bool,
}

impl<'de> de::SeqAccess<'de> for &mut Seq<'_, 'de> {
    type Error = Declined;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>> {
        if matches!(self.de.peek()?, Event::SequenceEnd) {
            self.de.next()?;
            self.done = true;
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

struct Map<'r, 'de> {
    de: &'r mut Reader<'de>,
    /// The end was read.
    done: bool,
}

impl<'de> de::MapAccess<'de> for &mut Map<'_, 'de> {
    type Error = Declined;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.de.peek()? {
            Event::MappingEnd => {
                self.de.next()?;
                self.done = true;
                Ok(None)
            }
            // `<<` merges in YAML 1.1; `yaml_serde` reads it as a key.
            // Either way, it is left to `yaml_serde`.
            Event::Scalar(k, ScalarStyle::Plain, ..) if k == "<<" => declined("merge key"),
            _ => seed.deserialize(&mut *self.de).map(Some),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }
}

/// Panics unless `yaml_serde` reads `text` as `raw`: every configuration
/// a debug build reads (the whole test suite's) checks the fast path.
#[cfg(debug_assertions)]
pub(crate) fn assert_as_yaml_serde_reads(text: &str, raw: &super::raw::RawConfig) {
    match yaml_serde::from_str::<super::raw::RawConfig>(text) {
        Ok(theirs) => assert_eq!(
            format!("{raw:?}"),
            format!("{theirs:?}"),
            "the fast path read this configuration otherwise than yaml_serde:\n{text}"
        ),
        Err(e) => panic!("the fast path read a configuration yaml_serde refuses ({e}):\n{text}"),
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
