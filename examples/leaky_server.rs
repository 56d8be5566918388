//! A small request loop with a planted leak, for trying `leakscope run` on.
//!
//! Each "request" builds a response buffer that is freed again (churn), and a session cache
//! that is supposed to keep only the latest 64 sessions forgets to evict (the leak: every
//! 10th request adds 1 KiB that is never released). Run it under leakscope:
//!
//! ```text
//! cargo build --release --workspace --examples
//! target/release/leakscope run --interval 250ms --warmup 1s -- target/release/examples/leaky_server 20000 4000
//! ```
//! Arguments: requests (default 20,000) and requests per second (default: as fast as it
//! can). The report's first site is `remember_session`, with 2,000 blocks of 1,024 bytes;
//! served over five seconds, its growth is flagged as a steady drift of about 1.4 GiB/h.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Sessions the cache should keep.
const CACHE_LIMIT: usize = 64;

struct SessionCache {
    recent: VecDeque<u64>,
    // The bug: payloads are pushed here and never dropped when `recent` evicts.
    payloads: Vec<Box<[u8]>>,
}

impl SessionCache {
    #[inline(never)]
    fn remember_session(&mut self, id: u64) {
        self.recent.push_back(id);
        if self.recent.len() > CACHE_LIMIT {
            self.recent.pop_front();
        }
        // `| 1`: a zero fill would take the calloc path and show up as a second site.
        self.payloads
            .push(vec![id as u8 | 1; 1024].into_boxed_slice());
    }
}

#[inline(never)]
fn render_response(request: u64) -> Vec<u8> {
    let len = 256 + (request as usize * 7919) % 4096;
    let mut body = Vec::with_capacity(len);
    body.resize(len, b'x');
    body
}

#[inline(never)]
fn handle(request: u64, cache: &mut SessionCache) -> usize {
    let response = render_response(request);
    if request % 10 == 0 {
        cache.remember_session(request);
    }
    black_box(&response).len()
}

fn main() {
    let requests: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let per_second: Option<u64> = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .filter(|&r| r > 0);
    let start = Instant::now();
    let mut cache = SessionCache {
        recent: VecDeque::with_capacity(CACHE_LIMIT + 1),
        payloads: Vec::with_capacity(requests as usize / 10 + 1),
    };
    let mut served = 0usize;
    for r in 0..requests {
        served += handle(r, &mut cache);
        if let Some(rate) = per_second {
            // Paced: request r is due r / rate seconds after the start.
            let due = Duration::from_secs_f64((r + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    println!(
        "served {requests} requests, {served} bytes; cache holds {} payloads",
        cache.payloads.len()
    );
    // Keep the cache alive until exit, as a long-running server would.
    std::mem::forget(cache);
}
