//! Load for pgvalet: many TLS clients with a client certificate, most of them idle, a few running
//! transactions. `scripts/load.sh` starts a Postgres and a pgvalet of its own and runs this
//! against them, then against a PgBouncer in the same run; run alone, it needs a pgvalet with a
//! transaction-mode route:
//!
//!     cargo run --release --example load -- --port 6432 --user orders --database orders \
//!         --clients 10000 --active 200 --seconds 20 --pid "$(pgrep -x pgvalet)"
//!
//! In order: the active clients connect and run transactions for a moment (the pool fills), then
//! the idle ones connect, then the active ones run `BEGIN; SELECT n; COMMIT` (three round trips,
//! the answer checked) for `--seconds`, then every idle client runs one query, then all leave
//! with a Terminate. With `--pid`, pgvalet's resident memory (`VmRSS`) is read at each step and
//! the growth per idle client is reported. Every wait has a deadline, so the run ends by itself;
//! the exit status is 1 if any client saw an error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest wait for any one answer: a client that waits longer counts an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the pool is warmed before the base memory reading.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long pgvalet is left alone before each memory reading.
const SETTLE: Duration = Duration::from_secs(2);
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Parser)]
#[command(about = "Many idle TLS clients and a few busy ones, through pgvalet")]
struct Args {
    /// pgvalet's address.
    #[arg(long, default_value = "127.0.0.1")]
    host: Ipv4Addr,
    #[arg(long, default_value_t = 6432)]
    port: u16,
    #[arg(long)]
    user: String,
    #[arg(long)]
    database: String,
    /// Clients in all, active ones included.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Clients that run transactions.
    #[arg(long, default_value_t = 200)]
    active: usize,
    /// How long the active clients run transactions.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The directory with ca.crt and the client certificate.
    #[arg(long, default_value = "certs-dev")]
    certs: PathBuf,
    /// The client certificate: CERT.crt and CERT.key in --certs.
    #[arg(long, default_value = "orders")]
    cert: String,
    /// Clients connect from 127.0.0.1 up to 127.0.0.N, so that ephemeral ports do not run out.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    connecting: usize,
    /// pgvalet's process id, to read its resident memory at each step.
    #[arg(long)]
    pid: Option<u32>,
    /// What serves the clients, as the memory readings name it (the same load runs through
    /// PgBouncer for comparison).
    #[arg(long, default_value = "pgvalet")]
    name: String,
}

/// What went wrong, counted, with the first few messages kept for the report.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    async fn note(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().await;
        if first.len() < 5 {
            first.push(what);
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One client connection, logged in.
struct Client {
    tls: TlsStream<TcpStream>,
    buf: BytesMut,
}

/// What a query got back.
struct Answer {
    /// The first column of the first row, if a row came.
    value: Option<Vec<u8>>,
    /// The transaction status in ReadyForQuery.
    status: u8,
}

impl Client {
    async fn connect(n: usize, args: &Args, tls: &TlsConnector) -> Result<Client, String> {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (n % usize::from(args.sources.max(1))) as u8);
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let server = SocketAddr::new(IpAddr::V4(args.host), args.port);
        let mut tcp = timed(socket.connect(server))
            .await?
            .map_err(|e| format!("connect from {source}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(|e| format!("SSLRequest: {e}"))?;
        let mut answer = [0u8; 1];
        timed(tcp.read_exact(&mut answer))
            .await?
            .map_err(|e| format!("SSLRequest answer: {e}"))?;
        if answer[0] != b'S' {
            return Err(format!("SSLRequest answered {:?}", answer[0] as char));
        }
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = timed(tls.connect(name, tcp))
            .await?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let mut client = Client {
            tls,
            buf: BytesMut::new(),
        };
        client
            .send(&startup(&[
                ("user", &args.user),
                ("database", &args.database),
                ("application_name", "pgvalet-load"),
            ]))
            .await?;
        let mut authenticated = false;
        loop {
            let (tag, body) = client.read_message().await?;
            match tag {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => authenticated = true,
                b'R' => return Err("asked for a password".into()),
                b'E' => return Err(format!("login refused: {}", error_text(&body))),
                b'Z' if authenticated => return Ok(client),
                b'Z' => return Err("ReadyForQuery before AuthenticationOk".into()),
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let write = async {
            self.tls.write_all(bytes).await?;
            self.tls.flush().await
        };
        timed(write).await?.map_err(|e| format!("write: {e}"))
    }

    async fn read_message(&mut self) -> Result<(u8, BytesMut), String> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let len = len as usize;
                if len < 4 {
                    return Err(format!("message length {len}"));
                }
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    return Ok((tag, self.buf.split_to(len - 4)));
                }
            }
            match timed(self.tls.read_buf(&mut self.buf)).await? {
                Ok(0) => return Err("closed by the server".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Runs one simple query; an ErrorResponse is an error.
    async fn query(&mut self, sql: &str) -> Result<Answer, String> {
        let mut message = vec![b'Q'];
        message.extend(((sql.len() + 5) as u32).to_be_bytes());
        message.extend(sql.as_bytes());
        message.push(0);
        self.send(&message).await?;
        let mut value = None;
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'D' if value.is_none() => value = Some(first_column(&body)?),
                b'E' => error = Some(error_text(&body)),
                b'Z' => {
                    let status = body.first().copied().unwrap_or(0);
                    return match error {
                        Some(e) => Err(format!("{sql:?}: {e}")),
                        None => Ok(Answer { value, status }),
                    };
                }
                _ => {}
            }
        }
    }

    /// `BEGIN; SELECT n; COMMIT`, each answer checked.
    async fn transaction(&mut self, n: u64) -> Result<(), String> {
        let expect = |answer: Answer, status: u8, what: &str| {
            if answer.status == status {
                Ok(answer)
            } else {
                Err(format!(
                    "{what}: transaction status {:?}",
                    answer.status as char
                ))
            }
        };
        expect(self.query("BEGIN").await?, b'T', "BEGIN")?;
        let sql = format!("SELECT {n}");
        let got = expect(self.query(&sql).await?, b'T', &sql)?.value;
        if got.as_deref() != Some(n.to_string().as_bytes()) {
            return Err(format!("{sql} returned {got:?}"));
        }
        expect(self.query("COMMIT").await?, b'I', "COMMIT")?;
        Ok(())
    }

    async fn terminate(mut self) {
        let _ = self.send(&[b'X', 0, 0, 0, 4]).await;
        let _ = timed(self.tls.shutdown()).await;
    }
}

/// Runs `work` under [`ANSWER_TIMEOUT`].
async fn timed<T>(work: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(ANSWER_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer within {ANSWER_TIMEOUT:?}"))
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend(k.as_bytes());
        body.push(0);
        body.extend(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn first_column(row: &[u8]) -> Result<Vec<u8>, String> {
    let len = row
        .get(2..6)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("short DataRow")?;
    let len = usize::try_from(len).unwrap_or(0);
    row.get(6..6 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "short DataRow".into())
}

/// The SQLSTATE and message of an ErrorResponse.
fn error_text(body: &[u8]) -> String {
    let field = |code: u8| {
        body.split(|&b| b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
            .unwrap_or_default()
    };
    format!("{} {}", field(b'C'), field(b'M'))
}

/// A client config with the certificate; no resumption, so that every client does a full
/// handshake with its certificate, as separate workloads would.
fn tls_config(certs: &Path, cert: &str) -> Result<TlsConnector, String> {
    let read = |name: String| {
        let path = certs.join(&name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read("ca.crt".into())?) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_slice_iter(&read(format!("{cert}.crt"))?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(format!("{cert}.key"))?).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// pgvalet's resident memory in KiB, if `--pid` was given.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens clients `from..to`, `args.connecting` at a time; the ones that failed are counted.
async fn connect_all(
    args: &Arc<Args>,
    tls: &TlsConnector,
    range: std::ops::Range<usize>,
    errors: &Arc<Errors>,
) -> Vec<Client> {
    let gate = Arc::new(Semaphore::new(args.connecting.max(1)));
    let mut tasks = JoinSet::new();
    for n in range {
        let (args, tls, errors, gate) = (args.clone(), tls.clone(), errors.clone(), gate.clone());
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await.ok()?;
            match Client::connect(n, &args, &tls).await {
                Ok(client) => Some(client),
                Err(e) => {
                    errors.note(format!("client {n} connecting: {e}")).await;
                    None
                }
            }
        });
    }
    let mut clients = Vec::new();
    while let Some(done) = tasks.join_next().await {
        clients.extend(done.ok().flatten());
    }
    clients
}

/// Runs transactions on each client until `until`, one after another; returns the clients
/// still usable and the latency of each transaction in microseconds.
async fn drive(
    clients: Vec<Client>,
    until: Instant,
    errors: &Arc<Errors>,
) -> (Vec<Client>, Vec<u32>) {
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let errors = errors.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut n = i as u64 * 1_000_000_000;
            while Instant::now() < until {
                n += 1;
                let started = Instant::now();
                if let Err(e) = client.transaction(n).await {
                    errors.note(format!("active client {i}: {e}")).await;
                    return (None, latencies);
                }
                latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            (Some(client), latencies)
        });
    }
    let (mut kept, mut latencies) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        if let Ok((client, l)) = done {
            kept.extend(client);
            latencies.extend(l);
        }
    }
    (kept, latencies)
}

/// One `SELECT 1` on every client, `args.connecting` at a time.
async fn touch_all(clients: Vec<Client>, args: &Args, errors: &Arc<Errors>) -> Vec<Client> {
    let gate = Arc::new(Semaphore::new(args.connecting.max(1)));
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let (errors, gate) = (errors.clone(), gate.clone());
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await.ok()?;
            match client.query("SELECT 1").await {
                Ok(a) if a.value.as_deref() == Some(b"1") => Some(client),
                Ok(_) => {
                    errors
                        .note(format!("idle client {i}: SELECT 1 returned something else"))
                        .await;
                    None
                }
                Err(e) => {
                    errors.note(format!("idle client {i}: {e}")).await;
                    None
                }
            }
        });
    }
    let mut kept = Vec::new();
    while let Some(done) = tasks.join_next().await {
        kept.extend(done.ok().flatten());
    }
    kept
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

fn show_rss(label: &str, rss: Option<u64>) {
    if let Some(kib) = rss {
        println!("{label:<44} {kib} KiB");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Arc::new(Args::parse());
    if args.active > args.clients {
        eprintln!("load: --active must not exceed --clients");
        return ExitCode::FAILURE;
    }
    let tls = match tls_config(&args.certs, &args.cert) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let errors = Arc::new(Errors::default());
    let rss_start = rss_kib(args.pid);
    show_rss(&format!("{} before any client", args.name), rss_start);

    // The active clients first, and a short run so that the pool fills: the base reading then
    // holds the pool and the active clients, and the growth after it is the idle clients'.
    let mut active = connect_all(&args, &tls, 0..args.active, &errors).await;
    let warm = drive(active, Instant::now() + WARM_UP, &errors).await;
    active = warm.0;
    tokio::time::sleep(SETTLE).await;
    let rss_base = rss_kib(args.pid);
    show_rss(
        &format!("with {} active clients, pool warm (base)", active.len()),
        rss_base,
    );

    let started = Instant::now();
    let mut idle = connect_all(&args, &tls, args.active..args.clients, &errors).await;
    let connect_time = started.elapsed();
    println!(
        "{} idle clients connected in {:.1} s ({:.0}/s)",
        idle.len(),
        connect_time.as_secs_f64(),
        idle.len() as f64 / connect_time.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let rss_idle = rss_kib(args.pid);
    show_rss(&format!("with {} idle clients too", idle.len()), rss_idle);

    let until = Instant::now() + Duration::from_secs(args.seconds);
    let (active, mut latencies) = drive(active, until, &errors).await;
    latencies.sort_unstable();
    let txns = latencies.len();
    println!(
        "{} active clients, {} s: {} transactions ({:.0}/s, 3 queries each), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.active,
        args.seconds,
        txns,
        txns as f64 / args.seconds as f64,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    tokio::time::sleep(SETTLE).await;
    show_rss("after the active run", rss_kib(args.pid));

    idle = touch_all(idle, &args, &errors).await;
    println!("{} idle clients answered SELECT 1", idle.len());
    tokio::time::sleep(SETTLE).await;
    let rss_touched = rss_kib(args.pid);
    show_rss("after every idle client ran a query", rss_touched);

    if let (Some(base), Some(idle_rss), Some(touched), Some(start)) =
        (rss_base, rss_idle, rss_touched, rss_start)
    {
        let per = |to: u64, from: u64, n: usize| (to as f64 - from as f64) / n.max(1) as f64;
        println!(
            "per idle client: {:.1} KiB after connecting, {:.1} KiB after one query each; {:.1} KiB counting from the start (pool and active clients included)",
            per(idle_rss, base, idle.len()),
            per(touched, base, idle.len()),
            per(idle_rss, start, args.clients),
        );
    }

    let mut closing = JoinSet::new();
    for client in idle.into_iter().chain(active) {
        closing.spawn(client.terminate());
    }
    while closing.join_next().await.is_some() {}

    let count = errors.count();
    println!("errors: {count}");
    for e in errors.first.lock().await.iter() {
        eprintln!("  {e}");
    }
    if count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
