//! Reading JSON without building a DOM: an object's members in order with
//! their values left as raw text, and strings that borrow from the input.
//! Used for DMS messages and for the invocation payload, which are read
//! leniently (a value of the wrong type is an error for that record only).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A JSON object's members in their original order, values left unparsed.
pub struct Fields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key that borrows from the payload unless it contains escapes.
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// A value that should be an object: its members, or `None` when it was any
/// other JSON value (read and skipped in the same pass).
pub struct MaybeFields<'a>(pub Option<Fields<'a>>);

impl<'de> Deserialize<'de> for MaybeFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let fields = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MaybeFields(Some(fields)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(MaybeFields(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeFields(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeFields(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeFields(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeFields(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeFields(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeFields(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'a> Fields<'a> {
    /// The first member named `name`.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// The text of a JSON string value; `None` for any other kind of value.
pub fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get();
    if !t.starts_with('"') {
        return None;
    }
    // memchr's SIMD search: these strings are whole base64 payloads.
    if memchr::memchr(b'\\', t.as_bytes()).is_some() {
        serde_json::from_str::<String>(t).ok().map(Cow::Owned)
    } else {
        t.get(1..t.len() - 1).map(Cow::Borrowed)
    }
}

/// What kind of JSON value `raw` is, for messages.
pub fn kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        Some(_) => "number",
        None => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_order_and_borrow() {
        let f: Fields = serde_json::from_str(r#"{"b": 1, "a\u0041": "x\"y", "c": [1]}"#).unwrap();
        let keys: Vec<&str> = f.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["b", "aA", "c"]);
        assert!(matches!(f.0[0].0, Cow::Borrowed(_)));
        assert_eq!(f.get("c").unwrap().get(), "[1]");
        assert_eq!(as_str(f.get("aA").unwrap()).unwrap(), "x\"y");
        assert_eq!(as_str(f.get("b").unwrap()), None);
        assert!(matches!(
            as_str(serde_json::from_str::<&RawValue>(r#""plain""#).unwrap()),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn maybe_fields_reads_objects_and_skips_the_rest() {
        let m: MaybeFields = serde_json::from_str(r#"{"a": [1, {"b": 2}]}"#).unwrap();
        assert_eq!(m.0.unwrap().get("a").unwrap().get(), r#"[1, {"b": 2}]"#);
        for other in [
            "[1, [2]]",
            "7",
            "-1.5e3",
            "\"x\"",
            "null",
            "true",
            "18446744073709551616",
        ] {
            let m: MaybeFields = serde_json::from_str(other).unwrap();
            assert!(m.0.is_none(), "{other}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(" [1]"), "array");
        assert_eq!(kind("12"), "number");
        assert_eq!(kind(""), "nothing");
    }
}
