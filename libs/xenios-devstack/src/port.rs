use std::net::TcpListener;

/// A loopback port that was free a moment ago. The tiny race with other processes is accepted:
/// callers start their server right away and fail loudly if it cannot bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work")
}
