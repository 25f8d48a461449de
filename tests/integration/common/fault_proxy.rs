//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 between the function and the
//! S3 test server: per request it forwards, answers 503, drops the
//! connection, or forwards after a delay, for a configurable share of requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `503 Slow Down` without forwarding.
    ServerError,
    /// Close the connection without answering.
    Drop,
    /// Forward after this delay.
    Slow(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    fault: Option<Fault>,
    /// Out of every `every` requests, the first `faulty` get the fault.
    faulty: u64,
    every: u64,
}

/// One forwarded request: when it was read whole, when its answer was
/// written back, and its request line (`PUT /bucket/key HTTP/1.1`).
#[derive(Debug, Clone)]
pub struct Span {
    pub start: Instant,
    pub end: Instant,
    pub line: String,
}

/// The most requests matching `filter` that were in flight at one moment.
pub fn max_in_flight(spans: &[Span], filter: impl Fn(&str) -> bool) -> usize {
    let mut edges: Vec<(Instant, i32)> = spans
        .iter()
        .filter(|s| filter(&s.line))
        .flat_map(|s| [(s.start, 1), (s.end, -1)])
        .collect();
    // An answer ending at the instant another request starts does not overlap it.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

pub struct FaultProxy {
    pub port: u16,
    plan: Arc<Mutex<Plan>>,
    requests: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    spans: Arc<Mutex<Vec<Span>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let plan = Arc::new(Mutex::new(Plan {
            fault: None,
            faulty: 0,
            every: 1,
        }));
        let requests = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(AtomicU64::new(0));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (p, r, f, sp) = (
            plan.clone(),
            requests.clone(),
            faults.clone(),
            spans.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (p, r, f, sp) = (p.clone(), r.clone(), f.clone(), sp.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream_port, p, r, f, sp).await;
                });
            }
        });
        FaultProxy {
            port,
            plan,
            requests,
            faults,
            spans,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request gets `fault` (or none: a healthy server).
    pub fn set(&self, fault: Option<Fault>) {
        self.set_share(fault, 1, 1);
    }

    /// `faulty` out of every `every` requests get `fault`.
    pub fn set_share(&self, fault: Option<Fault>, faulty: u64, every: u64) {
        *self.plan.lock().unwrap() = Plan {
            fault,
            faulty,
            every: every.max(1),
        };
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }

    pub fn requests_seen(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The requests forwarded and answered since the last call.
    pub fn take_spans(&self) -> Vec<Span> {
        std::mem::take(&mut *self.spans.lock().unwrap())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream_port: u16,
    plan: Arc<Mutex<Plan>>,
    requests: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    spans: Arc<Mutex<Vec<Span>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut client, &mut buf).await? else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 65536];
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let start = Instant::now();
        let line = head.split("\r\n").next().unwrap_or("").to_string();

        let n = requests.fetch_add(1, Ordering::SeqCst);
        let p = *plan.lock().unwrap();
        let fault = p.fault.filter(|_| n % p.every < p.faulty);
        if fault.is_some() {
            faults.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Some(Fault::ServerError) => {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>";
                let resp = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                client.write_all(resp.as_bytes()).await?;
                return Ok(());
            }
            Some(Fault::Drop) => return Ok(()),
            Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        // Forward with `Connection: close` so the upstream response ends at EOF.
        let mut up = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
        let mut out = String::new();
        for (i, line) in head.trim_end_matches("\r\n\r\n").split("\r\n").enumerate() {
            let lower = line.to_ascii_lowercase();
            if i > 0 && (lower.starts_with("connection:") || lower.starts_with("expect:")) {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        up.write_all(out.as_bytes()).await?;
        up.write_all(&body).await?;
        let mut resp = Vec::new();
        up.read_to_end(&mut resp).await?;
        client.write_all(&resp).await?;
        spans.lock().unwrap().push(Span {
            start,
            end: Instant::now(),
            line,
        });
        let resp_head = String::from_utf8_lossy(&resp[..resp.len().min(4096)]).to_ascii_lowercase();
        if resp_head.contains("connection: close") {
            return Ok(());
        }
    }
}

/// Reads until the end of a request head; returns its length (with the blank line).
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(pos + 4));
        }
        let mut chunk = [0u8; 65536];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
