//! DHCPv4 client: our own state machine (SELECTING → REQUESTING → BOUND, NAK restarts) over the
//! dhcproto packet codec, driven by a UDP socket bound to one interface. Replies are requested
//! as broadcasts, so no address is needed before the lease.

use anyhow::{bail, Context, Result};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Selecting,
    Requesting { offered: Ipv4Addr, server: Ipv4Addr },
    Bound(Lease),
}

/// What the driver should do after feeding a message to [`Client::handle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Ignore,
    Send(Message),
    Bound(Lease),
    Restart,
}

pub struct Client {
    pub xid: u32,
    pub mac: [u8; 6],
    pub state: State,
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

impl Client {
    pub fn new(mac: [u8; 6], xid: u32) -> Self {
        Client { xid, mac, state: State::Selecting }
    }

    /// A BOOTREQUEST from this client, broadcast flag set. Built by decoding a fixed header:
    /// dhcproto's constructors fill in a random xid through `rand` first, whose blocking
    /// `getrandom` hangs the whole boot when the kernel has no entropy yet (no RNG device).
    fn base(&self, kind: MessageType) -> Message {
        let mut head = [0u8; 241];
        head[..4].copy_from_slice(&[1, 1, 6, 0]);
        head[4..8].copy_from_slice(&self.xid.to_be_bytes());
        head[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
        head[28..34].copy_from_slice(&self.mac);
        head[236..240].copy_from_slice(&[99, 130, 83, 99]);
        head[240] = 255;
        let mut m = Message::decode(&mut Decoder::new(&head)).expect("a fixed, valid BOOTP header");
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        let mut cid = vec![1u8];
        cid.extend_from_slice(&self.mac);
        o.insert(DhcpOption::ClientIdentifier(cid));
        o.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::AddressLeaseTime,
        ]));
        m
    }

    pub fn discover(&mut self) -> Message {
        self.state = State::Selecting;
        self.base(MessageType::Discover)
    }

    fn request(&self, addr: Ipv4Addr, server: Ipv4Addr) -> Message {
        let mut m = self.base(MessageType::Request);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m
    }

    /// Feeds one received message to the state machine.
    pub fn handle(&mut self, m: &Message) -> Action {
        if m.opcode() != Opcode::BootReply
            || m.xid() != self.xid
            || m.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Action::Ignore;
        }
        let server = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => m.siaddr(),
        };
        match (&self.state, m.opts().msg_type()) {
            (State::Selecting, Some(MessageType::Offer)) => {
                let offered = m.yiaddr();
                self.state = State::Requesting { offered, server };
                Action::Send(self.request(offered, server))
            }
            (State::Requesting { offered, .. }, Some(MessageType::Ack)) if m.yiaddr() == *offered => {
                let o = m.opts();
                let prefix = match o.get(OptionCode::SubnetMask) {
                    Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask),
                    _ => 24,
                };
                let router = match o.get(OptionCode::Router) {
                    Some(DhcpOption::Router(r)) => r.first().copied(),
                    _ => None,
                };
                let dns = match o.get(OptionCode::DomainNameServer) {
                    Some(DhcpOption::DomainNameServer(d)) => d.clone(),
                    _ => Vec::new(),
                };
                let lease_s = match o.get(OptionCode::AddressLeaseTime) {
                    Some(DhcpOption::AddressLeaseTime(t)) => *t,
                    _ => 3600,
                };
                let lease = Lease { addr: *offered, prefix, router, dns, server, lease_s };
                self.state = State::Bound(lease.clone());
                Action::Bound(lease)
            }
            (State::Requesting { .. }, Some(MessageType::Nak)) => {
                self.state = State::Selecting;
                Action::Restart
            }
            _ => Action::Ignore,
        }
    }
}

/// A UDP socket on port 68 bound to `iface`, allowed to broadcast.
fn socket(iface: &str) -> Result<UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::IntoRawFd;
    let fd = socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .context("creating the DHCP socket")?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))
        .with_context(|| format!("binding the DHCP socket to {iface}"))?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(0, 0, 0, 0, 68))
        .context("binding UDP port 68")?;
    // SAFETY: the fd is a freshly created, owned datagram socket.
    Ok(unsafe { UdpSocket::from_raw_fd(fd.into_raw_fd()) })
}

/// Runs DHCP on `iface` until bound or `timeout` passes.
pub fn acquire(iface: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease> {
    let sock = socket(iface)?;
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut client = Client::new(mac, crate::sysinfo::random_u32());
    let start = Instant::now();
    let mut retry = Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    'outer: while start.elapsed() < timeout {
        let mut out = client.discover();
        let mut sent_at = Instant::now();
        sock.send_to(&out.to_vec()?, dest).with_context(|| format!("sending DHCP on {iface}"))?;
        loop {
            let left = retry.saturating_sub(sent_at.elapsed());
            if left.is_zero() {
                if matches!(client.state, State::Requesting { .. }) && sent_at.elapsed() < retry * 2 {
                    // Resend the REQUEST once before starting over.
                    sock.send_to(&out.to_vec()?, dest)?;
                    sent_at = Instant::now();
                    continue;
                }
                retry = (retry * 2).min(Duration::from_secs(8));
                continue 'outer;
            }
            sock.set_read_timeout(Some(left))?;
            let n = match sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("receiving DHCP"),
            };
            let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            match client.handle(&msg) {
                Action::Ignore => {}
                Action::Send(m) => {
                    out = m;
                    sock.send_to(&out.to_vec()?, dest)?;
                    sent_at = Instant::now();
                }
                Action::Bound(lease) => return Ok(lease),
                Action::Restart => continue 'outer,
            }
        }
    }
    bail!("no DHCP lease on {iface} within {}s", timeout.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn reply(c: &Client, kind: MessageType, yiaddr: Ipv4Addr) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(c.xid, z, yiaddr, z, z, &MAC);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        m
    }

    #[test]
    fn offer_request_ack() {
        let mut c = Client::new(MAC, 0xdead);
        let d = c.discover();
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert!(d.flags().broadcast());
        assert_eq!((d.xid(), d.opcode(), &d.chaddr()[..6]), (0xdead, Opcode::BootRequest, &MAC[..]));
        let ip = Ipv4Addr::new(10, 0, 2, 15);
        let Action::Send(req) = c.handle(&reply(&c, MessageType::Offer, ip)) else { panic!() };
        assert_eq!(req.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(req.opts().get(OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(ip)));
        // A second offer while requesting is ignored.
        assert_eq!(c.handle(&reply(&c, MessageType::Offer, Ipv4Addr::new(10, 0, 2, 16))), Action::Ignore);
        let Action::Bound(l) = c.handle(&reply(&c, MessageType::Ack, ip)) else { panic!() };
        assert_eq!(
            (l.addr, l.prefix, l.router, l.lease_s),
            (ip, 24, Some(Ipv4Addr::new(10, 0, 2, 2)), 86400)
        );
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    }

    #[test]
    fn foreign_and_nak() {
        let mut c = Client::new(MAC, 7);
        c.discover();
        let mut other = reply(&c, MessageType::Offer, Ipv4Addr::new(1, 2, 3, 4));
        other.set_xid(8);
        assert_eq!(c.handle(&other), Action::Ignore);
        c.handle(&reply(&c, MessageType::Offer, Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(c.handle(&reply(&c, MessageType::Nak, Ipv4Addr::UNSPECIFIED)), Action::Restart);
        assert_eq!(c.state, State::Selecting);
        // Round trip through the wire format.
        let bytes = c.discover().to_vec().unwrap();
        let back = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(back.xid(), 7);
    }
}
