//! The data sync tests against a booted appliance (or `ferry-init receive`): the status and data
//! ports, authentication over the real TLS channel, the plan checked as a dry run (the same
//! checks the receiver makes before writing), throughput over the channel (the receiver decodes
//! and discards), each disk's read speed and compressibility, and an estimate of the migration
//! time. Nothing is written to a target: the session ends with `Bye` instead of a real plan.

use super::{bytes, Item, Level};
use crate::auth;
use crate::proto::{self, Msg, PIECE};
use crate::sender::{self, zstd_level, Conn, Src};
use ferry_formats::read::ReadAt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What the data sync tests need.
pub struct Remote<'a> {
    /// HOST[:PORT] of the receiver's data port.
    pub to: &'a str,
    pub token: &'a str,
    pub fingerprint: Option<String>,
    /// The appliance's status port (on the same host).
    pub status_port: u16,
    pub compress: u8,
    pub workers: usize,
    pub bwlimit_mbit: Option<f64>,
    /// Seconds for each throughput test (network raw, network compressed, disk read).
    pub seconds: f64,
}

/// What a user can do about a failed connection, from the error's kind.
pub fn explain_io(e: &anyhow::Error, what: &str) -> String {
    let kind = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).map(|io| io.kind());
    let why = match kind {
        Some(ErrorKind::ConnectionRefused) => {
            "refused: nothing listens there (is the appliance booted and receiving, on this port?)"
        }
        Some(ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            "timed out: a firewall drops the packets, or the address is wrong"
        }
        Some(
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof,
        ) => "reset: something on the path (a proxy, an IPS, a load balancer) cut the connection",
        Some(ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable) => "no route to the appliance",
        _ => "",
    };
    if why.is_empty() {
        format!("{what}: {e:#}")
    } else {
        format!("{what}: {why} ({e:#})")
    }
}

fn host_of(to: &str) -> &str {
    match to.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => {
            h.trim_start_matches('[').trim_end_matches(']')
        }
        _ => to,
    }
}

/// The addresses `to` resolves to (for the firewall check).
pub fn addresses(to: &str) -> Vec<IpAddr> {
    let host = host_of(to);
    (host, 0).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default()
}

/// GET /status on the appliance's status port: its JSON.
fn status(host: &str, port: u16) -> anyhow::Result<serde_json::Value> {
    let addr =
        (host, port).to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("no address for {host}"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /status HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = Vec::new();
    s.take(1 << 20).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(serde_json::from_str(json)?)
}

fn status_item(host: &str, port: u16) -> (Item, Option<String>) {
    const T: &str = "Status port";
    match status(host, port) {
        Ok(v) => {
            let fp = v["receiver"]["fingerprint"].as_str().map(str::to_string);
            let phase = v["phase"].as_str().unwrap_or("?").to_string();
            (
                Item::ok("connect-status", T, format!("{host}:{port} answers; appliance phase {phase}"))
                    .val("phase", phase),
                fp,
            )
        }
        Err(e) => (
            Item::new("connect-status", Level::Warning, T, explain_io(&e, &format!("{host}:{port}"))).fix(
                "only monitoring needs it (`ferry-init receive` has none); allow TCP to it to watch /status",
            ),
            None,
        ),
    }
}

/// Deterministic incompressible bytes.
fn noise(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new().update(b"ferry check").finalize_xof().fill(&mut v);
    v
}

/// Sends `pieces` (raw length, compressed?, bytes) round-robin for `secs`; returns (raw bytes,
/// wire bytes, seconds) as the receiver counted them.
fn sink(c: &mut Conn, pieces: &[(u32, bool, Vec<u8>)], secs: f64) -> anyhow::Result<(u64, u64, f64)> {
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed().as_secs_f64() < secs && !pieces.is_empty() {
        let (raw_len, compressed, b) = &pieces[i % pieces.len()];
        c.send(&Msg::Sink { raw_len: *raw_len, compressed: *compressed, bytes: b.clone().into() })?;
        i += 1;
    }
    c.send(&Msg::SinkEnd)?;
    c.s.flush()?;
    let Msg::SinkDone { raw_bytes, wire_bytes } = proto::expect(&mut c.s, "SinkDone")? else {
        unreachable!()
    };
    Ok((raw_bytes, wire_bytes, t0.elapsed().as_secs_f64().max(1e-6)))
}

/// A disk's sequential read speed (from the middle of its extents) and up to 32 pieces of 1 MiB
/// spread over its extents, as the sample for compression.
struct DiskSample {
    read_rate: f64,
    pieces: Vec<Vec<u8>>,
}

fn sample_disk(s: &Src, secs: f64) -> anyhow::Result<DiskSample> {
    let ranges = s.layout.extents.ranges();
    let total = s.layout.extent_bytes;
    // The byte at logical position `pos` of the extents.
    let at = |mut pos: u64| -> Option<(u64, u64)> {
        for &(a, b) in ranges.iter() {
            if pos < b - a {
                return Some((a + pos, b - a - pos));
            }
            pos -= b - a;
        }
        None
    };
    let mut buf = vec![0u8; PIECE as usize];
    let mut pieces = Vec::new();
    for k in 0..32u64 {
        if let Some((off, left)) = at(total / 32 * k) {
            let n = left.min(PIECE) as usize;
            s.f.read_exact_at(&mut buf[..n], off)?;
            pieces.push(buf[..n].to_vec());
        }
    }
    let t0 = Instant::now();
    let mut read = 0u64;
    let mut pos = total / 2;
    while t0.elapsed().as_secs_f64() < secs && read < 512 << 20 {
        let Some((off, left)) = at(pos).or_else(|| at(0)) else { break };
        let n = left.min(PIECE) as usize;
        s.f.read_exact_at(&mut buf[..n], off)?;
        read += n as u64;
        pos = if pos + (n as u64) < total { pos + n as u64 } else { 0 };
    }
    s.f.refresh();
    Ok(DiskSample { read_rate: read as f64 / t0.elapsed().as_secs_f64().max(1e-6), pieces })
}

fn rate(b: f64) -> String {
    format!("{:.1} MB/s", b / 1e6)
}

/// The data sync tests. Items stop at the first Critical the rest depends on.
pub fn items(r: &Remote, srcs: &[Src]) -> Vec<Item> {
    let mut out = Vec::new();
    let host = host_of(r.to).to_string();
    let (st, status_fp) = status_item(&host, r.status_port);
    out.push(st);
    let sock = match sender::connect(r.to) {
        Ok(s) => {
            out.push(Item::ok("connect-data", "Data port", format!("{} accepts connections", r.to)));
            s
        }
        Err(e) => {
            out.push(Item::new("connect-data", Level::Critical, "Data port", explain_io(&e, r.to)).fix(
                "boot the appliance with ip=… and check the address and port; allow outbound TCP to it",
            ));
            return out;
        }
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    let mut c = match auth::client(sock, r.fingerprint.clone()) {
        Ok(s) => Conn { s, wire: 0, bucket: r.bwlimit_mbit.map(crate::progress::Bucket::new) },
        Err(e) => {
            out.push(Item::new(
                "authentication",
                Level::Critical,
                "Authentication",
                explain_io(&e, "TLS handshake"),
            ));
            return out;
        }
    };
    let fp =
        c.s.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| auth::fingerprint(c))
            .unwrap_or_default();
    match auth::client_handshake(&mut c.s, r.token) {
        Ok(targets) => {
            let mut i = Item::ok(
                "authentication",
                "Authentication",
                format!("TLS 1.3 and the token accepted; certificate SHA-256 {fp}"),
            )
            .val("fingerprint", fp.clone())
            .val(
                "targets",
                targets.iter().map(|t| format!("{} ({} bytes)", t.name, t.size_bytes)).collect::<Vec<_>>(),
            );
            if let Some(s) = status_fp.filter(|s| *s != fp) {
                i = Item::new("authentication", Level::Warning, "Authentication", format!("the token was accepted, but the status page shows certificate {s}, the data port {fp}"))
                    .fix("make sure HOST is the appliance you booted (a NAT or port forward may lead elsewhere); pin it with --fingerprint")
                    .val("fingerprint", fp.clone());
            }
            out.push(i);
        }
        Err(e) => {
            let text = format!("{e:#}");
            let fix = if text.contains("authentication failed") || text.contains("could not prove") {
                "use the token the appliance was booted with (ferry.token=, shown on its console)"
            } else {
                ""
            };
            out.push(
                Item::new(
                    "authentication",
                    Level::Critical,
                    "Authentication",
                    explain_io(&e, "authenticating"),
                )
                .fix(fix),
            );
            return out;
        }
    }
    let secs = r.seconds;
    // The link: incompressible data, raw.
    let raw: Vec<(u32, bool, Vec<u8>)> = vec![(PIECE as u32, false, noise(PIECE as usize))];
    let net = match sink(&mut c, &raw, secs) {
        Ok((_, wire, t)) => {
            let n = wire as f64 / t;
            out.push(
                Item::ok(
                    "network-throughput",
                    "Network throughput",
                    format!("{} over the TLS channel ({} in {t:.1} s, uncompressed)", rate(n), bytes(wire)),
                )
                .val("bytes_per_second", n),
            );
            n
        }
        Err(e) => {
            out.push(Item::new(
                "network-throughput",
                Level::Critical,
                "Network throughput",
                explain_io(&e, "sending test data"),
            ));
            return out;
        }
    };
    // Each disk: read speed and a sample of its own blocks.
    let level = zstd_level(r.compress);
    let mut samples = Vec::new();
    for s in srcs {
        match sample_disk(s, secs) {
            Ok(d) => {
                out.push(
                    Item::ok("read-throughput", "Disk read throughput", rate(d.read_rate))
                        .on(&s.path)
                        .val("bytes_per_second", d.read_rate),
                );
                samples.push((s, d));
            }
            Err(e) => out.push(
                Item::new("read-throughput", Level::Critical, "Disk read throughput", format!("{e:#}"))
                    .on(&s.path),
            ),
        }
    }
    // Compression of the sampled blocks, then those blocks over the channel.
    let (mut raw_n, mut zero_n, mut comp_n, mut comp_t) = (0u64, 0u64, 0u64, 0f64);
    let mut pieces = Vec::new();
    for (_, d) in &samples {
        for p in &d.pieces {
            raw_n += p.len() as u64;
            zero_n += p
                .chunks(proto::BLOCK as usize)
                .filter(|b| b.iter().all(|&x| x == 0))
                .map(|b| b.len() as u64)
                .sum::<u64>();
            let t0 = Instant::now();
            let z = if level > 0 {
                zstd::bulk::compress(p, level).unwrap_or_else(|_| p.clone())
            } else {
                p.clone()
            };
            comp_t += t0.elapsed().as_secs_f64();
            comp_n += z.len().min(p.len()) as u64;
            pieces.push(if z.len() < p.len() {
                (p.len() as u32, true, z)
            } else {
                (p.len() as u32, false, p.clone())
            });
        }
    }
    let data_frac = if raw_n == 0 { 1.0 } else { (raw_n - zero_n) as f64 / raw_n as f64 };
    let ratio = if comp_n == 0 { 1.0 } else { raw_n as f64 / comp_n as f64 };
    let compress_rate = if comp_t > 0.0 { raw_n as f64 / comp_t * r.workers as f64 } else { f64::INFINITY };
    if !pieces.is_empty() {
        match sink(&mut c, &pieces, secs) {
            Ok((raw_b, wire, t)) => {
                let effective = raw_b as f64 / t;
                out.push(Item::ok("compressed-throughput", "Compressed throughput", format!("{} of source data ({} on the wire) at --compress {}: ratio {ratio:.2}, {:.0} % zero blocks", rate(effective), rate(wire as f64 / t), r.compress, (1.0 - data_frac) * 100.0))
                    .val("bytes_per_second", effective)
                    .val("ratio", ratio)
                    .val("zero_fraction", 1.0 - data_frac));
            }
            Err(e) => out.push(Item::new(
                "compressed-throughput",
                Level::Warning,
                "Compressed throughput",
                format!("{e:#}"),
            )),
        }
    }
    // The plan, checked as the receiver checks a real one, changing nothing.
    match sender::plan_ok(&mut c, srcs, false, true) {
        Ok(starts) => {
            for (s, st) in srcs.iter().zip(&starts) {
                out.push(Item::ok("target-plan", "Target", format!("{} ({}) for {} used bytes of {}: {:?} pass", st.target.name, bytes(st.target.size_bytes), bytes(s.layout.extent_bytes), bytes(s.layout.size), st.mode))
                    .on(&s.path)
                    .val("target", st.target.name.clone())
                    .val("mode", format!("{:?}", st.mode)));
            }
            let _ = c.send(&Msg::Bye);
            let _ = c.s.flush();
        }
        Err(e) => out.push(Item::new("target-plan", Level::Critical, "Target plan", format!("{e:#}"))
            .fix("attach a target disk at least as large as each source's last used byte, not mounted or in use, or map --disk SRC=TARGET")),
    }
    out.push(estimate(
        srcs,
        &samples.iter().map(|(_, d)| d.read_rate).collect::<Vec<_>>(),
        net,
        r,
        ratio,
        data_frac,
        compress_rate,
    ));
    out
}

/// Used bytes ÷ the slowest stage: reading, compressing (all workers), the link.
fn estimate(
    srcs: &[Src],
    reads: &[f64],
    net: f64,
    r: &Remote,
    ratio: f64,
    data_frac: f64,
    compress_rate: f64,
) -> Item {
    let used: u64 = srcs.iter().map(|s| s.layout.extent_bytes).sum();
    let read = reads.iter().copied().fold(f64::INFINITY, f64::min);
    let link = match r.bwlimit_mbit {
        Some(m) => net.min(m * 1e6 / 8.0),
        None => net,
    };
    // Per byte of source: read it; compress the non-zero part; send the compressed non-zero part.
    let per_byte = [1.0 / read, data_frac / compress_rate, data_frac / ratio / link];
    let t = used as f64 * per_byte.iter().copied().filter(|x| x.is_finite()).fold(0.0, f64::max);
    let mins = t / 60.0;
    Item::ok(
        "estimate",
        "Estimated migration time",
        format!(
            "{:.0} min for {} of used blocks (read {}, compress {}, link {} ÷ ratio {ratio:.2}, {:.0} % zero blocks; delta passes cost a read of the used blocks)",
            mins.ceil(),
            bytes(used),
            rate(read),
            if compress_rate.is_finite() { rate(compress_rate) } else { "off".into() },
            rate(link),
            (1.0 - data_frac) * 100.0
        ),
    )
    .val("seconds", t.round())
    .val("used_bytes", used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_say_what_to_do() {
        let refused =
            anyhow::Error::new(std::io::Error::from(ErrorKind::ConnectionRefused)).context("connecting");
        assert!(
            explain_io(&refused, "h:8703").contains("nothing listens"),
            "{}",
            explain_io(&refused, "h:8703")
        );
        let t = anyhow::Error::new(std::io::Error::from(ErrorKind::TimedOut));
        assert!(explain_io(&t, "h").contains("firewall drops"));
        let r = anyhow::Error::new(std::io::Error::from(ErrorKind::ConnectionReset));
        assert!(explain_io(&r, "h").contains("cut the connection"));
        assert_eq!(host_of("10.0.0.5:8703"), "10.0.0.5");
        assert_eq!(host_of("appliance"), "appliance");
        assert_eq!(host_of("[::1]:8703"), "::1");
    }
}
