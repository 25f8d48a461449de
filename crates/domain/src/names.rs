//! The identifiers every layer shares: a source table's name, a record's
//! delivery id, and the lake's spelling of a column name. They live here,
//! below `dms`, `schema`, `row` and `layout`, so those modules import them
//! from one place instead of from each other.

use std::borrow::Cow;
use std::fmt;

/// `schema.table` as DMS names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Who delivered a record: its stream, shard and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The stream's ARN (`eventSourceARN`); empty when the event did not say.
    /// Shard ids and sequence numbers repeat across streams.
    pub stream: std::sync::Arc<str>,
    pub shard: std::sync::Arc<str>,
    pub sequence: String,
}

/// The column name Athena accepts: ASCII letters lower-cased, other ASCII
/// characters outside `a-z`, `0-9`, `_` replaced by `_`, and non-ASCII ones
/// spelled `_uXXXX` (4 hex digits, the Basic Multilingual Plane) or
/// `_vXXXXXX` (6 hex digits, beyond it), so the non-ASCII spelling is
/// injective (`ὠ0` is `_u1f600`, `😀` is `_v01f600`). Borrowed when
/// unchanged. Case folding and punctuation can still make two names one:
/// see [`lake_names`].
pub fn column_name(name: &str) -> Cow<'_, str> {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    if !name.is_empty() && name.bytes().all(ok) {
        return Cow::Borrowed(name);
    }
    if name.is_empty() {
        return Cow::Borrowed("_");
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else if c.is_ascii() {
            out.push('_');
        } else if u32::from(c) <= 0xFFFF {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("_u{:04x}", u32::from(c)));
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("_v{:06x}", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

/// The lake names of one row's (or one `table-def`'s) source column names.
/// When two different source names spell the same lake name (`ID` and `id`,
/// `a.b` and `a-b`), each one whose spelling had to change gets `__` and 8
/// hex digits of a hash of its source name, so no value lands in another
/// column and the row is not rejected.
pub fn lake_names<'a>(names: &[&'a str]) -> Vec<Cow<'a, str>> {
    let mut out: Vec<Cow<'a, str>> = names.iter().map(|n| column_name(n)).collect();
    let mut seen = std::collections::HashMap::with_capacity(out.len());
    let mut colliding = Vec::new();
    for (i, lake) in out.iter().enumerate() {
        if let Some(first) = seen.insert(lake.clone(), i) {
            colliding.push(first);
            colliding.push(i);
        }
    }
    if colliding.is_empty() {
        return out;
    }
    let collided: std::collections::HashSet<Cow<'a, str>> =
        colliding.iter().map(|i| out[*i].clone()).collect();
    for (i, lake) in out.iter_mut().enumerate() {
        if collided.contains(lake) && matches!(lake, Cow::Owned(_)) {
            *lake = Cow::Owned(format!("{lake}__{:08x}", fnv1a(names[i])));
        }
    }
    out
}

/// FNV-1a (32 bit): stable across builds and platforms.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn athena_column_names() {
        assert!(matches!(column_name("order_id"), Cow::Borrowed("order_id")));
        assert_eq!(column_name("OrderID"), "orderid");
        assert_eq!(column_name("unit price €"), "unit_price__u20ac");
        assert_eq!(column_name("名前"), "_u540d_u524d");
        assert_eq!(column_name("a.b-c"), "a_b_c");
        assert_eq!(column_name(""), "_");
        // The non-ASCII spelling is injective.
        assert_eq!(column_name("ὠ0"), "_u1f600");
        assert_eq!(column_name("😀"), "_v01f600");
    }

    #[test]
    fn colliding_names_stay_apart() {
        let names = lake_names(&["id", "ID", "a.b", "a-b", "x"]);
        assert_eq!(names[0], "id");
        assert_eq!(names[4], "x");
        assert!(
            names[1].starts_with("id__") && names[1].len() == 12,
            "{names:?}"
        );
        assert!(names[2].starts_with("a_b__"));
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), 5);
        // Stable: the same source name gets the same lake name.
        assert_eq!(lake_names(&["ID", "id"])[0], names[1]);
        assert!(matches!(lake_names(&["a", "b"])[0], Cow::Borrowed("a")));
        assert_eq!(lake_names(&["id", "ID"])[1], "id__56e8eb60");
    }
}
