//! A table's registered column types: what every file of the table is
//! written with (pure). Types come, in this order, from the configured
//! overrides, DMS's `table-def`, and the values; once registered they only
//! widen. The registry is stored next to the data (see `registry`) so every
//! container writes the same types.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dms::{TableDef, TableName};
use crate::row::{ColumnKinds, Kinds};
use crate::types::{self, ColumnType};

/// Where a column's type came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Override,
    TableDef,
    Inferred,
    /// A value did not fit the earlier type.
    Widened,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub origin: Origin,
    /// The name DMS uses, when the lake name differs (see [`column_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

pub const FORMAT: u32 = 1;

/// The registry entry of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub format: u32,
    pub schema: String,
    pub table: String,
    /// Increases with every stored change.
    pub version: u64,
    /// Lake column names, from the newest `table-def`.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// `drop-table` seen: rows with `_dms_timestamp` at or before it are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at_us: Option<i64>,
    /// In the order columns were first registered (the files' column order).
    pub columns: Vec<ColumnSpec>,
}

/// One change to a column's registered type, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    pub column: String,
    pub from: Option<ColumnType>,
    pub to: ColumnType,
    pub origin: Origin,
}

impl SchemaChange {
    /// A column that had a type got another one: files before and after differ.
    pub fn is_type_change(&self) -> bool {
        self.from.is_some()
    }
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Some(from) => write!(
                f,
                "{}: {from} -> {} ({:?})",
                self.column, self.to, self.origin
            ),
            None => write!(f, "{}: {} ({:?})", self.column, self.to, self.origin),
        }
    }
}

/// Column types set in configuration for one table: (lake column name, type).
pub type TableOverrides = [(String, ColumnType)];

impl TableSchema {
    pub fn new(table: &TableName) -> Self {
        TableSchema {
            format: FORMAT,
            schema: table.schema.clone(),
            table: table.table.clone(),
            version: 0,
            primary_key: Vec::new(),
            dropped_at_us: None,
            columns: Vec::new(),
        }
    }

    pub fn type_of(&self, column: &str) -> Option<ColumnType> {
        self.spec(column).map(|c| c.ty)
    }

    fn spec(&self, column: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == column)
    }

    fn spec_mut(&mut self, column: &str) -> Option<&mut ColumnSpec> {
        self.columns.iter_mut().find(|c| c.name == column)
    }

    fn add(
        &mut self,
        name: &str,
        ty: ColumnType,
        origin: Origin,
        source: Option<&str>,
    ) -> SchemaChange {
        self.columns.push(ColumnSpec {
            name: name.to_string(),
            ty,
            origin,
            source_name: source.filter(|s| *s != name).map(str::to_string),
        });
        SchemaChange {
            column: name.to_string(),
            from: None,
            to: ty,
            origin,
        }
    }

    fn set(&mut self, name: &str, ty: ColumnType, origin: Origin) -> Option<SchemaChange> {
        let spec = self.spec_mut(name)?;
        if spec.ty == ty {
            return None;
        }
        let from = spec.ty;
        spec.ty = ty;
        spec.origin = origin;
        Some(SchemaChange {
            column: name.to_string(),
            from: Some(from),
            to: ty,
            origin,
        })
    }

    /// Configured types win over `table-def` and inference. A column widened
    /// by a value keeps its wider type (the override would not fit it).
    pub fn apply_overrides(&mut self, overrides: &TableOverrides) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        for (name, ty) in overrides {
            match self.spec(name).map(|c| c.origin) {
                None => changes.push(self.add(name, *ty, Origin::Override, None)),
                Some(Origin::TableDef | Origin::Inferred) => {
                    changes.extend(self.set(name, *ty, Origin::Override))
                }
                Some(Origin::Override | Origin::Widened) => {}
            }
        }
        changes
    }

    /// Registers the types DMS declares. Never narrows: a declared type
    /// joins the registered one.
    pub fn apply_table_def(
        &mut self,
        def: &TableDef,
        overrides: &TableOverrides,
        min_scale: u8,
    ) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        for col in &def.columns {
            let name = column_name(&col.name);
            if overrides.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let Some(declared) =
                types::from_table_def(&col.type_name, col.precision, col.scale, min_scale)
            else {
                continue;
            };
            match self.spec(&name) {
                None => changes.push(self.add(&name, declared, Origin::TableDef, Some(&col.name))),
                Some(spec) if spec.origin == Origin::Override => {}
                Some(spec) => {
                    let joined = spec.ty.join(declared);
                    changes.extend(self.set(&name, joined, Origin::TableDef));
                }
            }
        }
        if !def.primary_key.is_empty() {
            self.primary_key = def
                .primary_key
                .iter()
                .map(|k| column_name(k).into_owned())
                .collect();
        }
        changes
    }

    pub fn mark_dropped(&mut self, at_us: i64) {
        self.dropped_at_us = Some(self.dropped_at_us.map_or(at_us, |d| d.max(at_us)));
    }

    /// The types of a part's columns, in registry order; columns not yet
    /// registered are inferred from their values and registered. A column
    /// that is NULL in every row and has no type yet is left out of the file.
    pub fn resolve(
        &mut self,
        kinds: &ColumnKinds,
    ) -> (Vec<(String, ColumnType)>, Vec<SchemaChange>) {
        let mut changes = Vec::new();
        for (name, k) in kinds {
            if self.spec(name).is_none() {
                if let Some(ty) = infer(*k) {
                    changes.push(self.add(name, ty, Origin::Inferred, None));
                }
            }
        }
        let types = self
            .columns
            .iter()
            .filter(|c| kinds.contains_key(&c.name))
            .map(|c| (c.name.clone(), c.ty))
            .collect();
        (types, changes)
    }

    /// A value did not fit `column`: it is `to` from now on.
    pub fn widen(&mut self, column: &str, to: ColumnType) -> Option<SchemaChange> {
        self.set(column, to, Origin::Widened)
    }

    /// Folds in another container's view of the table (a newer stored
    /// version): the union of columns, each the join of both types.
    pub fn merge(&mut self, other: &TableSchema) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        for theirs in &other.columns {
            match self.spec(&theirs.name).map(|c| c.ty) {
                None => {
                    self.columns.push(theirs.clone());
                    changes.push(SchemaChange {
                        column: theirs.name.clone(),
                        from: None,
                        to: theirs.ty,
                        origin: theirs.origin,
                    });
                }
                Some(ours) => {
                    let joined = ours.join(theirs.ty);
                    if joined != ours {
                        let origin = if joined == theirs.ty {
                            theirs.origin
                        } else {
                            Origin::Widened
                        };
                        changes.extend(self.set(&theirs.name, joined, origin));
                    }
                }
            }
        }
        if self.primary_key.is_empty() {
            self.primary_key = other.primary_key.clone();
        }
        if let Some(d) = other.dropped_at_us {
            self.mark_dropped(d);
        }
        self.version = self.version.max(other.version);
        changes
    }
}

/// Logs schema changes (`source`: what caused them); returns how many
/// changed an existing column's type.
pub fn log_changes(table: &TableName, changes: &[SchemaChange], source: &str) -> u64 {
    let mut type_changes = 0;
    for change in changes {
        if change.is_type_change() {
            type_changes += 1;
            tracing::warn!(%table, change = %change, source, "column type changed: files from now on use the new type");
        } else {
            tracing::info!(%table, change = %change, source, "column registered");
        }
    }
    type_changes
}

/// The type values alone suggest. Strings stay strings: only a `table-def`
/// or an override says a string holds a date, a decimal or bytes.
pub fn infer(kinds: Kinds) -> Option<ColumnType> {
    let k = kinds.non_null();
    let only = |allowed: Kinds| k.union(allowed) == allowed;
    if k == Kinds::default() {
        None
    } else if k == Kinds::BOOL {
        Some(ColumnType::Boolean)
    } else if only(Kinds::INT.union(Kinds::WIDE_INT)) {
        Some(ColumnType::Int64)
    } else if only(Kinds::INT.union(Kinds::FLOAT)) {
        Some(ColumnType::Float64)
    } else if only(Kinds::INT.union(Kinds::WIDE_INT).union(Kinds::BIG_INT)) {
        Some(ColumnType::Decimal { scale: 0 })
    } else {
        Some(ColumnType::String)
    }
}

/// The column name Athena accepts: ASCII letters lower-cased, other ASCII
/// characters outside `a-z`, `0-9`, `_` replaced by `_`, and non-ASCII ones
/// spelled `_uXXXX` (so `名前` and `住所` stay two columns). Borrowed when
/// unchanged.
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
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("_u{:04x}", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dms::ColumnDef;

    fn table() -> TableName {
        TableName {
            schema: "s".into(),
            table: "t".into(),
        }
    }

    fn def(cols: &[(&str, &str, Option<u32>, Option<u32>)], pk: &[&str]) -> TableDef {
        TableDef {
            columns: cols
                .iter()
                .map(|(n, t, p, s)| ColumnDef {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    precision: *p,
                    scale: *s,
                })
                .collect(),
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn kinds(cols: &[(&str, Kinds)]) -> ColumnKinds {
        cols.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    }

    #[test]
    fn override_beats_table_def_beats_inference() {
        let mut s = TableSchema::new(&table());
        let overrides = vec![("flag".to_string(), ColumnType::Boolean)];
        s.apply_overrides(&overrides);
        let d = def(
            &[
                ("id", "INT32", None, None),
                ("flag", "STRING", None, None),
                ("amount", "NUMERIC", Some(13), Some(2)),
            ],
            &["id"],
        );
        s.apply_table_def(&d, &overrides, 6);
        assert_eq!(s.type_of("flag"), Some(ColumnType::Boolean));
        assert_eq!(s.type_of("amount"), Some(ColumnType::Decimal { scale: 6 }));
        assert_eq!(s.primary_key, ["id"]);
        // A string value does not make the declared decimal a string.
        let (types, changes) = s.resolve(&kinds(&[
            ("amount", Kinds::STRING),
            ("id", Kinds::INT),
            ("extra", Kinds::FLOAT),
            ("empty", Kinds::NULL),
        ]));
        assert_eq!(
            types,
            [
                ("id".to_string(), ColumnType::Int64),
                ("amount".to_string(), ColumnType::Decimal { scale: 6 }),
                ("extra".to_string(), ColumnType::Float64),
            ]
        );
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].is_type_change());
    }

    #[test]
    fn table_def_changes_never_narrow() {
        let mut s = TableSchema::new(&table());
        s.resolve(&kinds(&[("units", Kinds::STRING)]));
        let changes = s.apply_table_def(&def(&[("units", "INT64", None, None)], &[]), &[], 6);
        assert!(changes.is_empty());
        assert_eq!(s.type_of("units"), Some(ColumnType::String));
        s.resolve(&kinds(&[("n", Kinds::INT)]));
        let changes = s.apply_table_def(&def(&[("n", "NUMERIC", Some(10), Some(2))], &[]), &[], 0);
        assert_eq!(s.type_of("n"), Some(ColumnType::Decimal { scale: 2 }));
        assert!(changes[0].is_type_change());
    }

    #[test]
    fn widened_columns_keep_their_type_against_overrides() {
        let mut s = TableSchema::new(&table());
        let overrides = vec![("n".to_string(), ColumnType::Int64)];
        s.apply_overrides(&overrides);
        s.widen("n", ColumnType::String).unwrap();
        assert!(s.apply_overrides(&overrides).is_empty());
        assert_eq!(s.type_of("n"), Some(ColumnType::String));
    }

    #[test]
    fn merge_takes_the_union_and_the_join() {
        let mut a = TableSchema::new(&table());
        a.resolve(&kinds(&[("x", Kinds::INT), ("y", Kinds::BOOL)]));
        a.version = 2;
        let mut b = TableSchema::new(&table());
        b.resolve(&kinds(&[("x", Kinds::FLOAT), ("z", Kinds::STRING)]));
        b.primary_key = vec!["x".into()];
        b.mark_dropped(5);
        b.version = 3;
        let changes = a.merge(&b);
        assert_eq!(changes.len(), 2);
        assert_eq!(a.type_of("x"), Some(ColumnType::Float64));
        assert_eq!(a.type_of("y"), Some(ColumnType::Boolean));
        assert_eq!(a.type_of("z"), Some(ColumnType::String));
        assert_eq!((a.version, a.dropped_at_us), (3, Some(5)));
        assert_eq!(a.primary_key, ["x"]);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut s = TableSchema::new(&table());
        s.apply_table_def(
            &def(&[("Order ID", "NUMERIC", Some(20), Some(0))], &["Order ID"]),
            &[],
            6,
        );
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""type":"decimal(38,6)""#), "{text}");
        assert!(text.contains(r#""source_name":"Order ID""#), "{text}");
        assert_eq!(serde_json::from_str::<TableSchema>(&text).unwrap(), s);
        assert_eq!(s.primary_key, ["order_id"]);
    }

    #[test]
    fn inference() {
        assert_eq!(infer(Kinds::NULL), None);
        assert_eq!(
            infer(Kinds::INT.union(Kinds::NULL)),
            Some(ColumnType::Int64)
        );
        assert_eq!(
            infer(Kinds::INT.union(Kinds::FLOAT)),
            Some(ColumnType::Float64)
        );
        assert_eq!(
            infer(Kinds::INT.union(Kinds::WIDE_INT).union(Kinds::FLOAT)),
            Some(ColumnType::String)
        );
        assert_eq!(
            infer(Kinds::BIG_INT),
            Some(ColumnType::Decimal { scale: 0 })
        );
        assert_eq!(
            infer(Kinds::BOOL.union(Kinds::INT)),
            Some(ColumnType::String)
        );
    }

    #[test]
    fn athena_column_names() {
        assert!(matches!(column_name("order_id"), Cow::Borrowed("order_id")));
        assert_eq!(column_name("OrderID"), "orderid");
        assert_eq!(column_name("unit price €"), "unit_price__u20ac");
        assert_eq!(column_name("名前"), "_u540d_u524d");
        assert_eq!(column_name("a.b-c"), "a_b_c");
        assert_eq!(column_name(""), "_");
    }
}
