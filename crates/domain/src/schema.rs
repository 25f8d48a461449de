//! A table's registered column types: what every file of the table is
//! written with (pure). Types come, in this order of authority, from the
//! configured overrides (`COLUMN_TYPES`), DMS's `table-def` (declared), and
//! the values (inferred). A value never changes a registered type (the
//! encoder rescues it instead); a declaration replaces an inferred type, an
//! override replaces anything, and a declared type is never replaced by
//! another declaration (the first one stays, see [`TableSchema::apply_table_def`]).
//! The registry is stored next to the data (see `registry`) so every
//! environment writes the same types.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dms::TableDef;
use crate::names::{lake_names, TableName};
use crate::row::{ColumnKinds, Kinds};
use crate::types::{self, ColumnType};

/// Where a column's type came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Override,
    TableDef,
    Inferred,
    /// A value did not fit the earlier type (registries written before
    /// values stopped widening columns); ranks like `Inferred`.
    Widened,
}

impl Origin {
    /// Authority: a higher rank replaces a lower one, never the reverse.
    pub fn rank(self) -> u8 {
        match self {
            Origin::Override => 3,
            Origin::TableDef => 2,
            Origin::Inferred | Origin::Widened => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub origin: Origin,
    /// The name DMS uses, when the lake name differs (see [`crate::names::column_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    /// What DMS declares now, when a later `table-def` declared another
    /// type than the registered one (kept: see `apply_table_def`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<ColumnType>,
}

/// A registered type that was replaced: files written before it may hold
/// the old type and need a rewrite (`cdc-batcher ddl --check` lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retype {
    pub column: String,
    pub from: ColumnType,
    pub to: ColumnType,
    /// What replaced it (`override` or `table-def`).
    pub by: Origin,
    /// The first version registered with the new type.
    pub version: u64,
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
    /// Type replacements, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retyped: Vec<Retype>,
}

/// What a `table-def` did to a schema.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Declared {
    pub changes: Vec<SchemaChange>,
    /// (column, DMS type name) of types not known here: left to inference.
    pub unknown: Vec<(String, String)>,
    /// (column, registered, declared) where the declaration was not applied.
    pub kept: Vec<(String, ColumnType, ColumnType)>,
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
            retyped: Vec::new(),
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
            declared: None,
        });
        SchemaChange {
            column: name.to_string(),
            from: None,
            to: ty,
            origin,
        }
    }

    /// Gives `name` the type `ty` (a replacement by a higher authority);
    /// a different type is recorded in `retyped`.
    fn set(&mut self, name: &str, ty: ColumnType, origin: Origin) -> Option<SchemaChange> {
        let version = self.version + 1;
        let spec = self.spec_mut(name)?;
        spec.declared = None;
        if spec.ty == ty {
            let changed = spec.origin != origin;
            spec.origin = origin;
            return changed.then(|| SchemaChange {
                column: name.to_string(),
                from: None,
                to: ty,
                origin,
            });
        }
        let from = spec.ty;
        spec.ty = ty;
        spec.origin = origin;
        self.retyped.push(Retype {
            column: name.to_string(),
            from,
            to: ty,
            by: origin,
            version,
        });
        Some(SchemaChange {
            column: name.to_string(),
            from: Some(from),
            to: ty,
            origin,
        })
    }

    /// Configured types win over everything.
    pub fn apply_overrides(&mut self, overrides: &TableOverrides) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        for (name, ty) in overrides {
            match self.spec(name) {
                None => changes.push(self.add(name, *ty, Origin::Override, None)),
                Some(spec) if spec.origin == Origin::Override && spec.ty == *ty => {}
                Some(_) => changes.extend(self.set(name, *ty, Origin::Override)),
            }
        }
        changes
    }

    /// Registers the types DMS declares. A declaration replaces an inferred
    /// type; it never replaces an override or an earlier declaration: files
    /// already hold that type, and one table definition must read them all.
    /// A declared change the registered type cannot hold is noted in
    /// `declared` (for `ddl`) and its values are rescued.
    pub fn apply_table_def(
        &mut self,
        def: &TableDef,
        overrides: &TableOverrides,
        min_scale: u8,
    ) -> Declared {
        let mut out = Declared::default();
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        for (col, name) in def.columns.iter().zip(lake_names(&names)) {
            if overrides.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let Some(declared) =
                types::from_table_def(&col.type_name, col.precision, col.scale, min_scale)
            else {
                out.unknown.push((name.into_owned(), col.type_name.clone()));
                continue;
            };
            let Some(spec) = self.spec_mut(&name) else {
                out.changes
                    .push(self.add(&name, declared, Origin::TableDef, Some(&col.name)));
                continue;
            };
            match spec.origin {
                Origin::Override => {}
                Origin::TableDef if spec.ty == declared => spec.declared = None,
                Origin::TableDef => {
                    if spec.declared != Some(declared) {
                        out.kept.push((name.to_string(), spec.ty, declared));
                    }
                    spec.declared = Some(declared);
                }
                Origin::Inferred | Origin::Widened => {
                    if spec.source_name.is_none() && col.name != name {
                        spec.source_name = Some(col.name.clone());
                    }
                    out.changes
                        .extend(self.set(&name, declared, Origin::TableDef));
                }
            }
        }
        if !def.primary_key.is_empty() {
            let names: Vec<&str> = def.primary_key.iter().map(String::as_str).collect();
            self.primary_key = lake_names(&names)
                .into_iter()
                .map(Cow::into_owned)
                .collect();
        }
        out
    }

    pub fn mark_dropped(&mut self, at_us: i64) {
        self.dropped_at_us = Some(self.dropped_at_us.map_or(at_us, |d| d.max(at_us)));
    }

    /// Registers the columns of `kinds` that have no type yet, inferred
    /// from their values. A column that is NULL in every row and has no
    /// type yet stays unregistered.
    pub fn register_inferred(&mut self, kinds: &ColumnKinds) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        for (name, k) in kinds {
            if self.spec(name).is_none() {
                if let Some(ty) = infer(*k) {
                    changes.push(self.add(name, ty, Origin::Inferred, None));
                }
            }
        }
        changes
    }

    /// Whether writing `kinds`' columns would use a type that is only
    /// inferred (a column not registered yet, or registered from values):
    /// another environment may have registered a declaration since.
    pub fn has_provisional(&self, kinds: &ColumnKinds) -> bool {
        kinds.iter().any(|(name, k)| match self.spec(name) {
            None => infer(*k).is_some(),
            Some(spec) => spec.origin.rank() == Origin::Inferred.rank(),
        })
    }

    /// The registered types of `kinds`' columns, in registry order (the
    /// file's column order).
    pub fn types_for(&self, kinds: &ColumnKinds) -> Vec<(String, ColumnType)> {
        self.columns
            .iter()
            .filter(|c| kinds.contains_key(&c.name))
            .map(|c| (c.name.clone(), c.ty))
            .collect()
    }

    /// `register_inferred`, then `types_for`.
    pub fn resolve(
        &mut self,
        kinds: &ColumnKinds,
    ) -> (Vec<(String, ColumnType)>, Vec<SchemaChange>) {
        let changes = self.register_inferred(kinds);
        (self.types_for(kinds), changes)
    }

    /// Folds in a newer stored version (`stored`: what files may already
    /// be written with). Per column the higher authority wins; between equal
    /// ones the stored type wins. Column order is the stored order, then
    /// columns only this view has.
    pub fn merge(&mut self, stored: &TableSchema) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        let mut ours = std::mem::take(&mut self.columns);
        for theirs in &stored.columns {
            match ours.iter().position(|c| c.name == theirs.name) {
                None => {
                    self.columns.push(theirs.clone());
                    changes.push(SchemaChange {
                        column: theirs.name.clone(),
                        from: None,
                        to: theirs.ty,
                        origin: theirs.origin,
                    });
                }
                Some(i) => {
                    let mine = ours.remove(i);
                    if mine.origin.rank() > theirs.origin.rank() && mine.ty != theirs.ty {
                        // Ours replaces a weaker stored type: files have it.
                        changes.push(SchemaChange {
                            column: mine.name.clone(),
                            from: Some(theirs.ty),
                            to: mine.ty,
                            origin: mine.origin,
                        });
                        self.retyped.push(Retype {
                            column: mine.name.clone(),
                            from: theirs.ty,
                            to: mine.ty,
                            by: mine.origin,
                            version: stored.version + 1,
                        });
                        self.columns.push(mine);
                    } else if mine.origin.rank() > theirs.origin.rank() {
                        self.columns.push(mine);
                    } else {
                        if mine.ty != theirs.ty {
                            changes.push(SchemaChange {
                                column: theirs.name.clone(),
                                from: Some(mine.ty),
                                to: theirs.ty,
                                origin: theirs.origin,
                            });
                        }
                        let mut spec = theirs.clone();
                        spec.declared = spec.declared.or(mine.declared);
                        self.columns.push(spec);
                    }
                }
            }
        }
        self.columns.append(&mut ours);
        for r in &stored.retyped {
            if !self.retyped.contains(r) {
                self.retyped.push(r.clone());
            }
        }
        self.retyped.sort_by_key(|r| r.version);
        if self.primary_key.is_empty() {
            self.primary_key = stored.primary_key.clone();
        }
        if let Some(d) = stored.dropped_at_us {
            self.mark_dropped(d);
        }
        self.version = self.version.max(stored.version);
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
            tracing::warn!(
                %table, change = %change, source,
                "column type replaced: files written before may hold the old type \
                 (cdc-batcher ddl --check lists them)"
            );
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
    fn a_declaration_replaces_an_inferred_type_but_not_a_declared_one() {
        let mut s = TableSchema::new(&table());
        s.resolve(&kinds(&[("amount", Kinds::STRING), ("n", Kinds::INT)]));
        let d = s.apply_table_def(
            &def(
                &[
                    ("amount", "NUMERIC", Some(13), Some(2)),
                    ("n", "INT64", None, None),
                ],
                &[],
            ),
            &[],
            6,
        );
        assert_eq!(s.type_of("amount"), Some(ColumnType::Decimal { scale: 6 }));
        assert_eq!(d.changes.len(), 2, "{:?}", d.changes);
        assert!(d.changes[0].is_type_change());
        assert!(!d.changes[1].is_type_change(), "same type, now declared");
        assert_eq!(s.retyped.len(), 1);
        assert_eq!(s.retyped[0].from, ColumnType::String);
        // A later declaration of another type is noted, not applied.
        let d = s.apply_table_def(&def(&[("n", "STRING", None, None)], &[]), &[], 6);
        assert!(d.changes.is_empty());
        assert_eq!(
            d.kept,
            [("n".to_string(), ColumnType::Int64, ColumnType::String)]
        );
        assert_eq!(s.type_of("n"), Some(ColumnType::Int64));
        assert_eq!(s.spec("n").unwrap().declared, Some(ColumnType::String));
        // Unknown names are reported, never silent.
        let d = s.apply_table_def(&def(&[("g", "GEOMETRY", None, None)], &[]), &[], 6);
        assert_eq!(d.unknown, [("g".to_string(), "GEOMETRY".to_string())]);
        assert_eq!(s.type_of("g"), None);
    }

    #[test]
    fn overrides_replace_anything() {
        let mut s = TableSchema::new(&table());
        s.apply_table_def(&def(&[("n", "INT64", None, None)], &[]), &[], 6);
        let overrides = vec![("n".to_string(), ColumnType::String)];
        let changes = s.apply_overrides(&overrides);
        assert_eq!(changes.len(), 1);
        assert_eq!(s.type_of("n"), Some(ColumnType::String));
        assert!(s.apply_overrides(&overrides).is_empty());
    }

    #[test]
    fn merge_keeps_the_higher_authority_whatever_the_order() {
        let declared = |version| {
            let mut s = TableSchema::new(&table());
            s.apply_table_def(
                &def(&[("amount", "NUMERIC", Some(38), Some(6))], &["id"]),
                &[],
                0,
            );
            s.version = version;
            s
        };
        let inferred = |version| {
            let mut s = TableSchema::new(&table());
            s.resolve(&kinds(&[("amount", Kinds::STRING), ("z", Kinds::BOOL)]));
            s.version = version;
            s
        };
        // A stale inferred view meets a stored declaration, and the reverse.
        for (mut ours, stored) in [(inferred(1), declared(2)), (declared(1), inferred(2))] {
            ours.merge(&stored);
            assert_eq!(
                ours.type_of("amount"),
                Some(ColumnType::Decimal { scale: 6 })
            );
            assert!(ours.type_of("z").is_some());
            assert_eq!(ours.version, 2);
        }
        // Equal authority: the stored type wins (files may hold it).
        let mut a = TableSchema::new(&table());
        a.resolve(&kinds(&[("x", Kinds::FLOAT)]));
        let mut b = TableSchema::new(&table());
        b.resolve(&kinds(&[("x", Kinds::INT), ("y", Kinds::BOOL)]));
        b.primary_key = vec!["x".into()];
        b.mark_dropped(5);
        b.version = 3;
        let changes = a.merge(&b);
        assert_eq!(changes.len(), 2);
        assert_eq!(a.type_of("x"), Some(ColumnType::Int64));
        assert_eq!((a.version, a.dropped_at_us), (3, Some(5)));
        assert_eq!(a.primary_key, ["x"]);
        assert_eq!(a.columns[0].name, "x");
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
}
