//! A membership reply as flat text fields, whichever format it came in
//! (see `vipinfo.rs` for why every field is read as text).
//!
//! JSON is read straight into the map, each key and string borrowed from
//! the body unless it has escapes: a reply is about 30 fields, read once a
//! check, and a tree of `serde_json::Value`s copied into owned strings was
//! a few µs of every renewal.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::lenient::{parse_int_text, shorten};

/// Why a reply's fields could not be read (`vipinfo.rs` turns it into its
/// own error).
#[derive(Debug)]
pub(super) enum FieldsError {
    /// Not JSON, or not XML of the expected shape.
    Malformed(String),
    /// A field that should be an integer is not one.
    Field { field: String, value: String },
}

impl fmt::Display for FieldsError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            FieldsError::Malformed(why) => f.write_str(why),
            FieldsError::Field { field, value } => write!(f, "{field}: not an integer: {value}"),
        }
    }
}

/// Field name to its text (`None` for JSON `null`).
pub(super) struct Fields<'a>(HashMap<Cow<'a, str>, Option<Cow<'a, str>>>);

impl<'a> Fields<'a> {
    pub(super) fn from_json(body: &'a [u8]) -> Result<Fields<'a>, FieldsError> {
        match serde_json::from_slice::<Object<'a>>(body) {
            Ok(Object(map)) => Ok(Fields(map)),
            // Valid JSON of another type: the only data error the reader
            // has, since every value is accepted.
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                Err(FieldsError::Malformed("JSON but not an object".into()))
            }
            Err(e) => Err(FieldsError::Malformed(format!(
                "not JSON ({e}); body starts with {:?}",
                shorten(&String::from_utf8_lossy(&body[..body.len().min(60)]))
            ))),
        }
    }

    pub(super) fn from_xml(body: &'a [u8]) -> Result<Fields<'a>, FieldsError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| FieldsError::Malformed("XML reply is not UTF-8".into()))?;
        let doc = roxmltree::Document::parse(text)
            .map_err(|e| FieldsError::Malformed(format!("not XML: {e}")))?;
        let root = doc.root_element();
        if root.tag_name().name() != "data" {
            return Err(FieldsError::Malformed(format!(
                "XML root is <{}>, expected <data>",
                shorten(root.tag_name().name())
            )));
        }
        // Unknown tags are kept and ignored; nested ones flatten to their text.
        let fields = root
            .children()
            .filter(|n| n.is_element())
            .map(|n| {
                let text: String = n
                    .descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text())
                    .collect();
                (
                    Cow::Owned(n.tag_name().name().to_owned()),
                    Some(Cow::Owned(text)),
                )
            })
            .collect();
        Ok(Fields(fields))
    }

    pub(super) fn text(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(|v| v.as_deref())
    }

    /// An integer; missing and `""` are `None`, `0` is `Some(0)`.
    pub(super) fn int(&self, field: &str) -> Result<Option<i64>, FieldsError> {
        match self.text(field) {
            None => Ok(None),
            Some(text) => parse_int_text(field, text).map_err(|e| FieldsError::Field {
                field: e.field,
                value: e.value,
            }),
        }
    }

    /// An integer where `0` also means none (times, levels, channels).
    pub(super) fn nonzero(&self, field: &str) -> Result<Option<i64>, FieldsError> {
        Ok(self.int(field)?.filter(|&v| v != 0))
    }

    pub(super) fn flag(&self, field: &str) -> Result<bool, FieldsError> {
        Ok(self.nonzero(field)?.is_some())
    }
}

/// The reply's top-level object; anything else is a data error.
struct Object<'a>(HashMap<Cow<'a, str>, Option<Cow<'a, str>>>);

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = HashMap::with_capacity(map.size_hint().unwrap_or(32));
                // A repeated key keeps its last value, as a JSON object
                // read into a map does.
                while let Some((Key(k), Text(v))) = map.next_entry()? {
                    out.insert(k, v);
                }
                Ok(Object(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // JSON keys are strings: the visitor always has text for them.
        let key = d.deserialize_str(TextVisitor)?;
        Ok(Key(key.unwrap_or_default()))
    }
}

/// One value as text: strings as they are, numbers written out, booleans
/// as `1`/`0`, `null` as none, arrays and objects as a `<...>` marker
/// that no number parses.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Written as serde_json writes the number.
        Ok(Some(Cow::Owned(Value::from(v).to_string())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(if v { "1" } else { "0" })))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Some(Cow::Owned(format!("<{}>", shorten(&v.to_string())))))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Some(Cow::Owned(format!("<{}>", shorten(&v.to_string())))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text a field is read as, from a `serde_json::Value` tree (how
    /// replies were read before): the oracle for the borrowing reader.
    fn as_value_tree_reads_it(body: &[u8]) -> HashMap<String, Option<String>> {
        let Value::Object(map) = serde_json::from_slice(body).unwrap() else {
            panic!("not an object")
        };
        map.into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(if b { "1" } else { "0" }.to_owned()),
                    Value::Null => None,
                    other => Some(format!("<{}>", shorten(&other.to_string()))),
                };
                (k, text)
            })
            .collect()
    }

    /// Every kind of JSON value reads as the same text as before.
    #[test]
    fn every_json_value_reads_as_its_text() {
        let body = br#"{"s":"abc","esc":"a\"b\u00e9","n":12,"neg":-3,"f":1.5,"e":1e3,
            "big":123456789012345678901234,"small":-0.000001,"t":true,"no":false,"null":null,
            "arr":[1,"x",{"y":null}],"obj":{"k":[2]},"dup":1,"dup":2,"k\u0065y":"v","":""}"#;
        let f = Fields::from_json(body).unwrap();
        let want = as_value_tree_reads_it(body);
        assert_eq!(f.0.len(), want.len());
        for (k, v) in &want {
            assert_eq!(
                f.0.get(k.as_str()).map(|t| t.as_deref()),
                Some(v.as_deref()),
                "{k}"
            );
        }
        assert_eq!(f.text("e"), Some("1000.0"));
        assert_eq!(f.text("dup"), Some("2"));
        assert_eq!(f.text("key"), Some("v"));
        // Borrowed from the body when there is nothing to unescape.
        assert!(matches!(f.0.get("s"), Some(Some(Cow::Borrowed(_)))));
    }

    #[test]
    fn other_json_and_broken_json_are_told_apart() {
        for (body, want) in [
            (&b"[1,2]"[..], "JSON but not an object"),
            (b"\"text\"", "JSON but not an object"),
            (b"12", "JSON but not an object"),
            (b"{\"a\":", "not JSON"),
            (b"{\"a\":1} trailing", "not JSON"),
            (b"", "not JSON"),
        ] {
            let e = Fields::from_json(body).err().unwrap().to_string();
            assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(body));
        }
    }
}
