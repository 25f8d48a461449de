//! A lake location given on the command line (`replay`, `redrive`,
//! `windows`, `ddl`): a local directory or `s3://bucket[/prefix/]`, and the
//! configuration and sink that go with it.

use crate::app::config::Config;
use crate::edge::sink::{AnySink, LocalDirSink, S3Sink};

/// A lake location given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Dir(String),
    S3 {
        bucket: String,
        prefix: Option<String>,
    },
}

impl Output {
    /// `DIR` or `s3://bucket[/prefix]`.
    pub fn parse(output: &str) -> Result<Output, String> {
        Ok(match output.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("{output}: no bucket name"));
                }
                Output::S3 {
                    bucket: bucket.to_string(),
                    prefix: Some(prefix.to_string()).filter(|p| !p.is_empty()),
                }
            }
            None => Output::Dir(output.to_string()),
        })
    }

    /// The configuration (from the environment, with an `s3://` URL's
    /// prefix) and the sink for this location.
    pub(crate) async fn open(&self) -> Result<(Config, AnySink), String> {
        let prefix_override = match self {
            Output::S3 { prefix, .. } => prefix.clone(),
            Output::Dir(_) => None,
        };
        let mut config = Config::from_lookup(|name| match (name, &prefix_override) {
            ("S3_PREFIX", Some(p)) => Some(p.clone()),
            _ => std::env::var(name).ok(),
        })
        .map_err(|e| format!("configuration error: {e}"))?;
        match self {
            // The catalog's locations name the bucket written to.
            Output::S3 { bucket, .. } => config.s3.bucket = Some(bucket.clone()),
            Output::Dir(_) => {
                if config.catalog.take().is_some() {
                    eprintln!(
                        "GLUE_DATABASE ignored: the catalog can only point at an s3:// output"
                    );
                }
            }
        }
        let sink = match self {
            Output::Dir(dir) => AnySink::Local(LocalDirSink::new(dir)),
            Output::S3 { bucket, .. } => AnySink::S3(S3Sink::from_env(bucket, &config.s3).await),
        };
        Ok((config, sink))
    }
}
