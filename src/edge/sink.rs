//! Where finished files go: a narrow "put these bytes at this key" interface
//! (plus reading back the small schema registry objects), with an S3
//! implementation and a local-directory one.
//!
//! Both refuse to overwrite: a key is derived from the rows it holds, so an
//! existing object under the same key already holds those rows, and a retried
//! write is reported as `AlreadyExists` instead of writing a duplicate.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;

/// Where S3 output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: Option<String>,
    pub force_path_style: bool,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// An object was already at the key (an earlier attempt landed).
    AlreadyExists,
}

/// One level of keys (see [`Sink::list_dirs`]), each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Full keys ending with `/`.
    pub dirs: Vec<String>,
    /// Full keys of objects directly under the prefix.
    pub keys: Vec<String>,
}

impl Listing {
    /// The level under `prefix` of a full, recursive listing.
    pub fn of(prefix: &str, keys: &[String]) -> Listing {
        let mut listing = Listing::default();
        for key in keys {
            let Some(rest) = key.strip_prefix(prefix) else {
                continue;
            };
            match rest.find('/') {
                Some(i) => {
                    let dir = &key[..prefix.len() + i + 1];
                    if listing.dirs.last().map(String::as_str) != Some(dir) {
                        listing.dirs.push(dir.to_string());
                    }
                }
                None => listing.keys.push(key.clone()),
            }
        }
        listing.dirs.sort();
        listing.dirs.dedup();
        listing
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("S3 {operation} s3://{bucket}/{key} failed: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not started, or given up, because the invocation's deadline came near.
    #[error("{operation} {key}: {why}")]
    Deadline {
        operation: &'static str,
        key: String,
        why: &'static str,
    },
}

/// Stores objects.
pub trait Sink: Send + Sync {
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> impl Future<Output = Result<PutOutcome, SinkError>> + Send;

    /// The object at `key`, if there is one.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, SinkError>> + Send;

    /// Every key that starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, SinkError>> + Send;

    /// One level under `prefix` (which ends with `/`): the keys directly
    /// under it and the "directories" (ending with `/`) that hold more, as
    /// S3 lists with a delimiter. The default walks [`Sink::list`]; S3 and
    /// the local directory answer without reading the level below.
    fn list_dirs(&self, prefix: &str) -> impl Future<Output = Result<Listing, SinkError>> + Send {
        async move { Ok(Listing::of(prefix, &self.list(prefix).await?)) }
    }

    /// Where objects go, for logs and summaries.
    fn location(&self) -> String;
}

/// Objects in an S3 bucket, written with `If-None-Match: *`.
#[derive(Debug, Clone)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Sink {
    /// Builds the client from the standard AWS configuration chain
    /// (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_S3`, ...).
    pub async fn from_env(bucket: &str, settings: &S3Settings) -> Self {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(settings.max_attempts)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(30))
            .build();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .build();
        Self::from_client(aws_sdk_s3::Client::from_conf(conf), bucket)
    }

    /// Uses an already configured client.
    pub fn from_client(client: aws_sdk_s3::Client, bucket: &str) -> Self {
        S3Sink {
            client,
            bucket: bucket.to_string(),
        }
    }
}

impl S3Sink {
    fn error(&self, operation: &'static str, key: &str, err: &dyn std::error::Error) -> SinkError {
        SinkError::S3 {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message: aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
        }
    }
}

impl Sink for S3Sink {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<PutOutcome, SinkError> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(err) => Err(self.error("PutObject", key, &err)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let output = match result {
            Ok(o) => o,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None)
            }
            Err(err) => return Err(self.error("GetObject", key, &err)),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| self.error("GetObject", key, &e))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, &e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Listing, SinkError> {
        let mut listing = Listing::default();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, &e))?;
            listing.keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            listing.dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
        }
        listing.keys.sort();
        listing.dirs.sort();
        Ok(listing)
    }

    fn location(&self) -> String {
        format!("s3://{}/", self.bucket)
    }
}

/// Files under a local directory (local runs and `replay`).
#[derive(Debug, Clone)]
pub struct LocalDirSink {
    root: PathBuf,
}

impl LocalDirSink {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDirSink { root: root.into() }
    }
}

impl Sink for LocalDirSink {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<PutOutcome, SinkError> {
        let path = self.root.join(key);
        let io = |source| SinkError::Io {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        // Write aside, then link into place: the file appears whole or not at
        // all, and an existing one is never replaced.
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object")
        ));
        tokio::fs::write(&tmp, &body).await.map_err(io)?;
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(PutOutcome::Written),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(io(e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        let path = self.root.join(key);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SinkError::Io { path, source }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        // Keys are paths: walk the deepest directory the prefix names.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let mut keys = Vec::new();
        let mut pending = vec![dir_part.to_string()];
        while let Some(rel) = pending.pop() {
            let path = self.root.join(&rel);
            let mut entries = match tokio::fs::read_dir(&path).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(SinkError::Io { path, source }),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|source| SinkError::Io {
                path: path.clone(),
                source,
            })? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") {
                    continue;
                }
                let key = format!("{rel}{name}");
                let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
                if is_dir && (prefix.starts_with(&key) || key.starts_with(prefix)) {
                    pending.push(format!("{key}/"));
                } else if !is_dir && key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Listing, SinkError> {
        let mut listing = Listing::default();
        if !prefix.ends_with('/') && !prefix.is_empty() {
            return Ok(Listing::of(prefix, &self.list(prefix).await?));
        }
        let path = self.root.join(prefix);
        let io = |source| SinkError::Io {
            path: path.clone(),
            source,
        };
        let mut entries = match tokio::fs::read_dir(&path).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(io(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                continue;
            }
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                listing.dirs.push(format!("{prefix}{name}/"));
            } else {
                listing.keys.push(format!("{prefix}{name}"));
            }
        }
        listing.keys.sort();
        listing.dirs.sort();
        Ok(listing)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// No call is started with less than this left before the deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(300);

/// Time left before an invocation's `deadline` (`Duration::MAX` without
/// one: replays and commands).
pub fn time_left(deadline: Option<SystemTime>) -> Duration {
    match deadline {
        Some(d) => d
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        None => Duration::MAX,
    }
}

/// A sink whose every call ends before an invocation's deadline (less
/// [`DEADLINE_MARGIN`]): a slow S3 becomes an error the invocation handles,
/// not a timeout that resets the environment.
pub struct Bounded<'a, S> {
    inner: &'a S,
    deadline: Option<SystemTime>,
}

impl<'a, S: Sink> Bounded<'a, S> {
    pub fn new(inner: &'a S, deadline: Option<SystemTime>) -> Self {
        Bounded { inner, deadline }
    }

    /// Time left before the deadline (less the margin); `None` without one.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .saturating_sub(DEADLINE_MARGIN)
        })
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        key: &str,
        call: impl Future<Output = Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        let Some(left) = self.time_left() else {
            return call.await;
        };
        let deadline = |why| SinkError::Deadline {
            operation,
            key: key.to_string(),
            why,
        };
        if left.is_zero() {
            return Err(deadline(
                "not attempted: the invocation deadline is too near",
            ));
        }
        tokio::time::timeout(left, call)
            .await
            .unwrap_or_else(|_| Err(deadline("timed out before the invocation deadline")))
    }
}

impl<S: Sink> Sink for Bounded<'_, S> {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<PutOutcome, SinkError> {
        self.bounded("PUT", key, self.inner.put(key, body, content_type))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        self.bounded("GET", key, self.inner.get(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.bounded("LIST", prefix, self.inner.list(prefix)).await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Listing, SinkError> {
        self.bounded("LIST", prefix, self.inner.list_dirs(prefix))
            .await
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}

/// Either sink, chosen at start-up.
#[derive(Debug, Clone)]
pub enum AnySink {
    S3(S3Sink),
    Local(LocalDirSink),
}

impl Sink for AnySink {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<PutOutcome, SinkError> {
        match self {
            AnySink::S3(s) => s.put(key, body, content_type).await,
            AnySink::Local(l) => l.put(key, body, content_type).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        match self {
            AnySink::S3(s) => s.get(key).await,
            AnySink::Local(l) => l.get(key).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        match self {
            AnySink::S3(s) => s.list(prefix).await,
            AnySink::Local(l) => l.list(prefix).await,
        }
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Listing, SinkError> {
        match self {
            AnySink::S3(s) => s.list_dirs(prefix).await,
            AnySink::Local(l) => l.list_dirs(prefix).await,
        }
    }

    fn location(&self) -> String {
        match self {
            AnySink::S3(s) => s.location(),
            AnySink::Local(l) => l.location(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_sink_writes_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        let first = sink
            .put("a/b/c.parquet", b"one".to_vec(), "x")
            .await
            .unwrap();
        assert_eq!(first, PutOutcome::Written);
        let again = sink
            .put("a/b/c.parquet", b"two".to_vec(), "x")
            .await
            .unwrap();
        assert_eq!(again, PutOutcome::AlreadyExists);
        let content = std::fs::read(dir.path().join("a/b/c.parquet")).unwrap();
        assert_eq!(content, b"one");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    }

    #[tokio::test]
    async fn local_sink_gets_and_lists_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        for key in [
            "p/_schemas/s/t/v2.json",
            "p/_schemas/s/t/v1.json",
            "p/_schemas/s/tt/v1.json",
            "p/s/t/x.parquet",
        ] {
            sink.put(key, key.as_bytes().to_vec(), "x").await.unwrap();
        }
        assert_eq!(
            sink.list("p/_schemas/s/t/").await.unwrap(),
            ["p/_schemas/s/t/v1.json", "p/_schemas/s/t/v2.json"]
        );
        assert_eq!(sink.list("p/_schemas/").await.unwrap().len(), 3);
        assert!(sink.list("nothing/here/").await.unwrap().is_empty());
        assert_eq!(
            sink.get("p/s/t/x.parquet").await.unwrap().as_deref(),
            Some(&b"p/s/t/x.parquet"[..])
        );
        assert_eq!(sink.get("p/missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn one_level_is_listed_alike_from_the_directory_and_from_a_full_listing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        for key in [
            "p/_spool/s/sh/20260314T010000Z/000000_5.jsonl.sz",
            "p/_spool/s/sh/20260314T010000Z/_done.json",
            "p/_spool/s/sh/20260314T010000Z.done",
            "p/_spool/s/sh/20260314T010200Z/000000_9.jsonl.sz",
            "p/_spool/s/other/20260314T010000Z/000000_1.jsonl.sz",
        ] {
            sink.put(key, vec![], "x").await.unwrap();
        }
        let level = sink.list_dirs("p/_spool/s/sh/").await.unwrap();
        assert_eq!(
            level,
            Listing {
                dirs: vec![
                    "p/_spool/s/sh/20260314T010000Z/".into(),
                    "p/_spool/s/sh/20260314T010200Z/".into()
                ],
                keys: vec!["p/_spool/s/sh/20260314T010000Z.done".into()],
            }
        );
        let all = sink.list("p/_spool/s/sh/").await.unwrap();
        assert_eq!(Listing::of("p/_spool/s/sh/", &all), level);
        assert_eq!(
            sink.list_dirs("p/_spool/s/").await.unwrap().dirs,
            ["p/_spool/s/other/", "p/_spool/s/sh/"]
        );
        assert_eq!(sink.list_dirs("p/none/").await.unwrap(), Listing::default());
    }

    /// Answers after `delay`.
    struct Slow(Duration);

    impl Sink for Slow {
        async fn put(&self, _: &str, _: Vec<u8>, _: &'static str) -> Result<PutOutcome, SinkError> {
            tokio::time::sleep(self.0).await;
            Ok(PutOutcome::Written)
        }
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, SinkError> {
            tokio::time::sleep(self.0).await;
            Ok(None)
        }
        async fn list(&self, _: &str) -> Result<Vec<String>, SinkError> {
            tokio::time::sleep(self.0).await;
            Ok(Vec::new())
        }
        fn location(&self) -> String {
            "slow".into()
        }
    }

    #[tokio::test]
    async fn bounded_calls_end_before_the_deadline() {
        let slow = Slow(Duration::from_secs(30));
        let deadline = SystemTime::now() + Duration::from_millis(800);
        let sink = Bounded::new(&slow, Some(deadline));
        let started = std::time::Instant::now();
        let err = sink.get("k").await.unwrap_err();
        assert!(matches!(err, SinkError::Deadline { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Too near the deadline: not even started.
        let late = Bounded::new(&slow, Some(SystemTime::now() + Duration::from_millis(100)));
        let err = late.put("k", Vec::new(), "x").await.unwrap_err();
        assert!(err.to_string().contains("not attempted"), "{err}");
        // Without a deadline the call takes what it takes.
        let quick = Slow(Duration::from_millis(10));
        assert!(Bounded::new(&quick, None).list("p").await.is_ok());
    }

    #[tokio::test]
    async fn local_sink_reports_io_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let sink = LocalDirSink::new(dir.path().join("file"));
        let err = sink.put("k", b"x".to_vec(), "x").await.unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }
}
