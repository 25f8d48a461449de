//! cdc-batcher: AWS DMS change records from a Kinesis Data Stream, written to
//! S3 as typed, Snappy-compressed Parquet by an AWS Lambda function.
//!
//! Three layers:
//! - `domain` (the workspace crate `crates/domain`): the pure core, no I/O:
//!   DMS messages, rows, parts and windows, column types and schemas,
//!   Parquet encoding, keys, SQL. It depends on neither tokio nor the AWS
//!   SDK, so the compiler keeps it from reaching outward.
//! - `edge/`: I/O behind narrow interfaces: the object store (`sink`), the
//!   schema registry stored in it, Kinesis reads and heartbeats, the Glue
//!   Data Catalog.
//! - `app/`: configuration and orchestration: one typed invocation
//!   (`invocation`) served by the pipeline's stages (`handler`, `windowed`,
//!   `part_writer`, `catalog_upkeep`) and the sweep (`windows`); the Lambda
//!   adapter, metrics, and the command line (`replay`, `ddl`, `redrive`,
//!   `windows`).
//!
//! Paths name their layer (`domain::dms`, `crate::edge::sink`); the `layers`
//! tests below fail when `edge` imports `app`, when the domain crate gains
//! an I/O dependency or uses `std::fs`/`std::net`, or when modules import
//! each other in a cycle.

pub mod edge {
    pub mod glue;
    pub mod heartbeat;
    pub mod registry;
    pub mod shard_reader;
    pub mod sink;
}

pub mod app {
    pub mod catalog_upkeep;
    pub mod cli;
    pub mod config;
    pub mod ddl;
    pub mod handler;
    pub mod invocation;
    pub mod lambda;
    pub mod logging;
    pub mod metrics;
    pub mod output;
    pub mod part_writer;
    pub mod redrive;
    pub mod replay;
    pub mod stats;
    pub mod windowed;
    pub mod windows;
}

/// The layers, where the compiler does not see them: `edge` imports no
/// `app`; the domain crate declares no I/O dependency and touches no file or
/// socket; and no modules import each other in a cycle (the graph of
/// `crate::<layer>::<module>` and `domain::<module>` paths, tests left out).
#[cfg(test)]
mod layers {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn sources(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    /// Whether `file` is a module its parent declares for tests only
    /// (`#[cfg(test)] mod differential;` in `encode.rs`).
    fn test_only(file: &Path) -> bool {
        let (Some(dir), Some(name)) = (file.parent(), file.file_stem()) else {
            return false;
        };
        let parent = std::fs::read_to_string(dir.with_extension("rs")).unwrap_or_default();
        parent.contains(&format!("#[cfg(test)]\nmod {};", name.to_string_lossy()))
    }

    /// A file's code before its test module, comments left out.
    fn code(file: &Path) -> String {
        if test_only(file) {
            return String::new();
        }
        let text = std::fs::read_to_string(file).unwrap();
        let text = match text.find("#[cfg(test)]") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        text.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Lines of the files under `dir` that name one of `forbidden`.
    fn offending(dir: &Path, forbidden: &[&str]) -> Vec<String> {
        let files = sources(dir);
        assert!(!files.is_empty(), "no sources under {}", dir.display());
        let mut found = Vec::new();
        for file in files {
            for (n, line) in code(&file).lines().enumerate() {
                if forbidden.iter().any(|f| line.contains(f)) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        found
    }

    #[test]
    fn the_edge_imports_no_app() {
        let found = offending(&root().join("src/edge"), &["crate::app"]);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    #[test]
    fn the_domain_crate_does_no_io() {
        let manifest = std::fs::read_to_string(root().join("crates/domain/Cargo.toml")).unwrap();
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let io = ["tokio", "aws-", "aws_", "lambda", "reqwest", "hyper", "mio"];
        let bad: Vec<&str> = deps
            .lines()
            .filter(|l| io.iter().any(|c| l.trim_start().starts_with(c)))
            .collect();
        assert!(
            bad.is_empty(),
            "I/O dependencies in the domain crate: {bad:?}"
        );
        let found = offending(
            &root().join("crates/domain/src"),
            &["std::fs", "std::net", "std::process", "std::env"],
        );
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    /// `layer::module` of a source file (`app::handler`, `domain::window`).
    fn module_of(file: &Path) -> String {
        let rel = file.strip_prefix(root()).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            [c, d, s, m, ..] if c == "crates" && d == "domain" && s == "src" => {
                format!("domain::{m}")
            }
            [s, layer, m, ..] if s == "src" => format!("{layer}::{m}"),
            _ => panic!("unexpected source {}", rel.display()),
        }
    }

    /// Which module imports which, from the paths the code names.
    fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let files = [
            root().join("src/app"),
            root().join("src/edge"),
            root().join("crates/domain/src"),
        ]
        .iter()
        .flat_map(|d| sources(d))
        .filter(|f| f.file_name().is_some_and(|n| n != "lib.rs"))
        .collect::<Vec<_>>();
        for file in files {
            let from = module_of(&file);
            let layer = from.split("::").next().unwrap_or_default().to_string();
            let text = code(&file);
            let edges = graph.entry(from.clone()).or_default();
            for (needle, target_layer) in [
                ("crate::app::", "app"),
                ("crate::edge::", "edge"),
                ("domain::", "domain"),
                ("crate::", layer.as_str()),
            ] {
                for (i, _) in text.match_indices(needle) {
                    // `domain::` inside `crate::domain::`-free code, and a
                    // plain `crate::` only in the domain crate.
                    let before = &text[..i];
                    if needle == "domain::" && before.ends_with("::") {
                        continue;
                    }
                    if needle == "crate::" && layer != "domain" {
                        continue;
                    }
                    if needle == "domain::"
                        && before
                            .chars()
                            .last()
                            .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    {
                        continue;
                    }
                    let rest = &text[i + needle.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let to = format!("{target_layer}::{name}");
                    if !name.is_empty() && to != from {
                        edges.insert(to);
                    }
                }
            }
        }
        graph
    }

    /// A cycle in `graph`, if any (depth-first search).
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == node) {
                let mut found = path[i..].to_vec();
                found.push(node.to_string());
                return Some(found);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(found) = visit(next, graph, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_modules_import_each_other_in_a_cycle() {
        let graph = import_graph();
        // The graph is read at all: known edges are in it.
        assert!(
            graph["app::invocation"].contains("app::windows"),
            "{graph:?}"
        );
        assert!(graph["domain::dms"].contains("domain::names"), "{graph:?}");
        assert!(graph["edge::registry"].contains("edge::sink"), "{graph:?}");
        assert_eq!(cycle(&graph), None);
    }

    #[test]
    fn a_cycle_is_found() {
        let edge = |a: &str, b: &str| (a.to_string(), BTreeSet::from([b.to_string()]));
        let graph = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "a")]);
        assert_eq!(
            cycle(&graph),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        let graph = BTreeMap::from([edge("a", "b"), edge("b", "c")]);
        assert_eq!(cycle(&graph), None);
    }
}
