//! rtnetlink over a synchronous socket: list links and addresses, set a link up, add an IPv4
//! address and a default route. No async runtime.

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub up: bool,
    pub carrier: bool,
    pub ethernet: bool,
    pub addresses: Vec<String>,
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
        sock.bind_auto().context("binding the netlink socket")?;
        sock.connect(&SocketAddr::new(0, 0)).context("connecting the netlink socket")?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends one request and collects the replies until ACK/DONE; an error reply fails.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).context("netlink send")?;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 65536];
        loop {
            let n = self.sock.recv(&mut &mut rx[..], 0).context("netlink recv")?;
            let mut off = 0;
            while off < n {
                let m: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rx[off..n]).context("decoding a netlink reply")?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => match e.code {
                            None => return Ok(out),
                            Some(c) => bail!("{}", std::io::Error::from_raw_os_error(-c.get())),
                        },
                        NetlinkPayload::InnerMessage(i) => out.push(i),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
            if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        let mut links = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewLink(l) = r else {
                continue;
            };
            let mut link = Link {
                index: l.header.index,
                name: String::new(),
                mac: String::new(),
                up: l.header.flags.contains(LinkFlags::Up),
                carrier: l.header.flags.contains(LinkFlags::LowerUp),
                ethernet: l.header.link_layer_type == LinkLayerType::Ether,
                addresses: Vec::new(),
            };
            for a in l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Address(m) => {
                        link.mac = m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
                    }
                    _ => {}
                }
            }
            links.push(link);
        }
        let addrs = self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)?;
        for r in addrs {
            let RouteNetlinkMessage::NewAddress(a) = r else {
                continue;
            };
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let (Some(ip), Some(l)) = (ip, links.iter_mut().find(|l| l.index == a.header.index)) {
                l.addresses.push(format!("{ip}/{}", a.header.prefix_len));
            }
        }
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .with_context(|| format!("setting link {index} up"))?;
        Ok(())
    }

    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        let bits = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let bcast = Ipv4Addr::from(u32::from(addr) | !bits);
        m.attributes.push(AddressAttribute::Broadcast(bcast));
        match self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.to_string().contains("exists") => Ok(()),
            r => r.map(|_| ()).with_context(|| format!("adding {addr}/{prefix} to link {index}")),
        }
    }

    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeaderTable::MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        match self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.to_string().contains("exists") => Ok(()),
            r => r.map(|_| ()).with_context(|| format!("adding default route via {gateway}")),
        }
    }
}

struct RouteHeaderTable;
impl RouteHeaderTable {
    const MAIN: u8 = 254;
}
