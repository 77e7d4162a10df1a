//! Latency on the workers' database links: a TCP proxy between the workers
//! and HAProxy that holds every chunk for a set delay, each way, keeping
//! order. `tc netem` would do this in the kernel, but this machine's kernel
//! has no netem qdisc (`tc qdisc add ... netem` answers "Specified qdisc
//! kind is unknown"), so the delay is added here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The proxy: its address, and the delay it adds now.
pub struct DelayProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: String) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the delay proxy");
        let addr = listener.local_addr().expect("its address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, delay) = (upstream.clone(), delay.clone());
                tokio::spawn(async move {
                    // Upstream down (HAProxy restarting): the client sees its connection close.
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pump(cr, sw, delay.clone()), pump(sr, cw, delay));
                    }
                });
            }
        });
        DelayProxy { addr, delay_ms }
    }

    /// `host:port` to connect to.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the delay each chunk waits, each way, from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk sent a delay after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
