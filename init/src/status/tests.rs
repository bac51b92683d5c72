use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// One GET; "" when the server hung up (busy).
fn get(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let r = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").and_then(|_| s.read_to_string(&mut out));
    if r.is_err() {
        out.clear();
    }
    out
}

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// 500 idle connections neither use up descriptors nor stall the endpoint: a real request is
/// answered while they hang on, and they are cut after the client timeout.
#[test]
fn idle_connections_never_stall_the_status_endpoint() {
    let shared: Shared = Default::default();
    shared.lock().unwrap().phase = Phase::Converting;
    let addr = free_addr();
    serve(addr, shared).unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(addr).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = std::time::Instant::now();
    let mut answered = false;
    while t.elapsed() < CLIENT_TIMEOUT * 3 {
        let r = get(addr);
        if r.starts_with("HTTP/1.1 200") {
            assert!(r.contains("\"phase\": \"converting\""), "{r}");
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answered, "no answer within {:?} beside 500 idle connections", CLIENT_TIMEOUT * 3);
    // The server's own descriptors stay bounded (ours: the 500 client ends).
    assert!(fds() <= before + 500 + MAX_CONNECTIONS + 8, "{} descriptors", fds() - before);
    drop(idle);
    let r = get(addr);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn bad_requests_get_short_answers() {
    let shared: Shared = Default::default();
    let addr = free_addr();
    serve(addr, shared).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&vec![b'A'; 20000]).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /status HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
}
