//! A server that takes TCP connections and never says a word (a hung payment gateway, a hung
//! SMTP server), counting the connections it holds. For process and fault tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Starts one on a free loopback port; answers `scheme://127.0.0.1:port` and the count of
/// connections taken so far.
pub fn start(scheme: &str) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

/// How many connections it has taken.
pub fn taken(accepted: &AtomicUsize) -> usize {
    accepted.load(Ordering::SeqCst)
}
