//! Plain HTTP to a worker's endpoint: requests, `/metrics` samples,
//! waiting for `/healthz`.

use std::time::{Duration, Instant};

/// GET `path` over plain HTTP/1.1: the status code and the body, or why
/// there is no answer (a server still starting refuses the connection).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], b"")
}

/// One HTTP/1.1 request with these headers and body: the status code and
/// the body.
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body, and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    // A connection reset after the answer (the body left unread) keeps the answer.
    if let Err(e) = s.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e);
    }
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let status = status.ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {out}")))?;
    Ok((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// The value of one series (name and labels, as printed) in a `/metrics` text.
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// Waits until `/healthz` at `addr` answers `status`; returns its body.
pub async fn wait_health(addr: std::net::SocketAddr, status: u16, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || http_get(addr, "/healthz")).await.expect("join");
        if let Ok((code, body)) = &answer
            && *code == status
        {
            return body.clone();
        }
        assert!(start.elapsed() < timeout, "/healthz at {addr} did not answer {status} within {timeout:?}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
