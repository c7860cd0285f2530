//! A model server that forgets: reads each request body without keeping it
//! and answers one fixed JSON completion. For the memory scenarios, whose
//! 4–8 MB bodies the recording fake (`hermes::testing::fake_upstream`) would
//! keep, gigabytes of them, in the benchmark process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Request heads larger than this close the connection.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    body_bytes: AtomicU64,
    largest_body: AtomicU64,
}

/// A running sink; stops accepting when dropped (open connections end when
/// the gateway closes them).
pub struct SinkUpstream {
    addr: std::net::SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl SinkUpstream {
    /// Listens on 127.0.0.1 and answers every request with `status` and the JSON `body`.
    pub fn start(status: u16, body: &str) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let reply: Arc<[u8]> = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(sock) = sock else { continue };
                let (c, reply) = (c.clone(), reply.clone());
                std::thread::spawn(move || serve(sock, &c, &reply));
            }
        });
        Ok(Self { addr, counts, stop })
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Body bytes received so far, and the largest single body.
    pub fn body_bytes(&self) -> (u64, u64) {
        (
            self.counts.body_bytes.load(Ordering::Relaxed),
            self.counts.largest_body.load(Ordering::Relaxed),
        )
    }
}

impl Drop for SinkUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers requests on one connection until the peer closes it.
fn serve(mut sock: TcpStream, counts: &Counts, reply: &[u8]) {
    let _ = sock.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut scratch = vec![0u8; 256 * 1024];
    loop {
        // The head.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            match sock.read(&mut scratch[..8192]) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&scratch[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]);
        let len: u64 = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        // The body, counted and dropped.
        let after_head = (buf.len() - head_end - 4) as u64;
        if after_head >= len {
            buf.drain(..head_end + 4 + len as usize);
        } else {
            buf.clear();
            let mut left = len - after_head;
            while left > 0 {
                let want = scratch.len().min(left as usize);
                match sock.read(&mut scratch[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left -= n as u64,
                }
            }
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.body_bytes.fetch_add(len, Ordering::Relaxed);
        counts.largest_body.fetch_max(len, Ordering::Relaxed);
        if sock.write_all(reply).is_err() {
            return;
        }
    }
}
