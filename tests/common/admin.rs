//! pgvalet's admin endpoint as a scraper sees it: a GET, a sample of the metrics, a config with
//! `[metrics]` on a port of the test's choosing.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on the admin endpoint: the status code and the body.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// The value of the sample `series` (name with its labels, as rendered), 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Asks `path` until `accept` likes the answer, for up to 20 s.
pub async fn get_until(port: u16, path: &str, accept: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(port, path).await;
        if accept(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `text` (a config as [`super::proxy::config_text`] writes it) with `[metrics]` on `port`.
pub fn with_metrics(text: &str, port: u16) -> String {
    text.replace(
        "\n[tls]",
        &format!("\n[metrics]\naddr = \"127.0.0.1:{port}\"\n\n[tls]"),
    )
}
