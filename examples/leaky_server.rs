//! A small request loop with a planted leak, for trying `leakscope run` on.
//!
//! Each "request" builds a response buffer that is freed again (churn), and a session cache
//! that is supposed to keep only the latest 64 sessions forgets to evict (the leak: every
//! 10th request adds 1 KiB that is never released). Run it under leakscope:
//!
//! ```text
//! cargo build --release --workspace --examples
//! target/release/leakscope run -- target/release/examples/leaky_server
//! ```
//! The report's first site is `remember_session`, with 2,000 blocks of 1,024 bytes.

use std::collections::VecDeque;
use std::hint::black_box;

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
    let mut cache = SessionCache {
        recent: VecDeque::with_capacity(CACHE_LIMIT + 1),
        payloads: Vec::with_capacity(requests as usize / 10 + 1),
    };
    let mut served = 0usize;
    for r in 0..requests {
        served += handle(r, &mut cache);
    }
    println!(
        "served {requests} requests, {served} bytes; cache holds {} payloads",
        cache.payloads.len()
    );
    // Keep the cache alive until exit, as a long-running server would.
    std::mem::forget(cache);
}
