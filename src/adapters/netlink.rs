//! The netlink adapter: the only place that talks rtnetlink. Reads links, addresses and
//! routes, and performs typed live operations, optionally inside a named network
//! namespace (`--host-netns`, for tests and containers).

use super::netns::in_netns;
use crate::domain::hostnet::plan::{
    AddrState, BondLive, BridgeLive, LinkState, LiveNet, LiveOp, RouteState, VlanLive,
};
use crate::domain::hostnet::Cidr;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol,
};
use rtnetlink::packet_route::link::{
    BondLacpRate, BondMode, BridgeStpState, InfoBond, InfoBridge, InfoData, InfoKind, InfoVlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{
    Handle, LinkBond, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVlan, RouteMessageBuilder,
};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A live step that failed, in words an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LiveError(pub String);

/// Live network state and changes, in the host's or a named network namespace.
#[derive(Debug, Clone, Default)]
pub struct Netlink {
    pub netns: Option<String>,
}

impl Netlink {
    pub fn new(netns: Option<String>) -> Netlink {
        Netlink { netns }
    }

    /// Runs `f` with a fresh rtnetlink connection opened inside the namespace.
    fn block<T, F, Fut>(&self, f: F) -> Result<T, LiveError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, LiveError>>,
    {
        in_netns(self.netns.as_deref(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| LiveError(format!("cannot start the netlink worker: {e}")))?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| LiveError(format!("cannot open a netlink socket: {e}")))?;
                tokio::spawn(conn);
                f(handle).await
            })
        })
        .map_err(LiveError)?
    }

    /// Links, addresses and main-table routes.
    pub fn read(&self) -> Result<LiveNet, LiveError> {
        self.block(|h| async move { read_all(&h).await })
    }

    /// Performs one live operation.
    pub fn run(&self, op: &LiveOp) -> Result<(), LiveError> {
        let op = op.clone();
        if let LiveOp::SetSysctl { key, value, .. } = &op {
            return super::sysctl_io::write(self.netns.as_deref(), key, value).map_err(LiveError);
        }
        self.block(move |h| async move {
            let described = op.describe();
            run_op(&h, &op)
                .await
                .map_err(|e| LiveError(format!("{described}: {}", e.0)))
        })
    }
}

fn nl_err(e: rtnetlink::Error) -> LiveError {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let code = -m.raw_code();
            let io = std::io::Error::from_raw_os_error(code);
            let hint = match code {
                libc::EOPNOTSUPP => {
                    " (the kernel does not support this interface type: its driver is not loaded or not available)"
                }
                libc::EEXIST => " (it exists already)",
                libc::ENODEV => " (there is no such interface)",
                libc::EPERM => " (virtdeck needs to run as root for host network changes)",
                _ => "",
            };
            LiveError(format!("{io}{hint}"))
        }
        other => LiveError(other.to_string()),
    }
}

async fn index_of(h: &Handle, name: &str) -> Result<u32, LiveError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(m.header.index),
        Ok(None) => Err(LiveError(format!("there is no interface {name}"))),
        Err(e) => Err(LiveError(format!(
            "there is no interface {name} ({})",
            nl_err(e).0
        ))),
    }
}

async fn set(h: &Handle, msg: LinkMessage) -> Result<(), LiveError> {
    h.link().set(msg).execute().await.map_err(nl_err)
}

fn bridge_msg(name: &str, b: &BridgeLive) -> LinkMessageBuilder<LinkBridge> {
    LinkMessageBuilder::<LinkBridge>::new(name)
        .forward_delay(b.forward_delay_s * 100)
        .ageing_time(b.ageing_s * 100)
        .stp_state(if b.stp {
            BridgeStpState::KernelStp
        } else {
            BridgeStpState::Disabled
        })
}

async fn run_op(h: &Handle, op: &LiveOp) -> Result<(), LiveError> {
    match op {
        LiveOp::CreateBridge(b) => h
            .link()
            .add(bridge_msg(&b.name, b).build())
            .execute()
            .await
            .map_err(nl_err),
        LiveOp::SetBridge { to, .. } => {
            let idx = index_of(h, &to.name).await?;
            h.link()
                .change(bridge_msg(&to.name, to).index(idx).build())
                .execute()
                .await
                .map_err(nl_err)
        }
        LiveOp::CreateBond(b) => {
            let mut m = LinkMessageBuilder::<LinkBond>::new(&b.name)
                .mode(BondMode::from(b.mode))
                .miimon(b.miimon_ms);
            if let Some(fast) = b.lacp_fast {
                m = m.ad_lacp_rate(if fast {
                    BondLacpRate::Fast
                } else {
                    BondLacpRate::Slow
                });
            }
            h.link()
                .add(m.build())
                .execute()
                .await
                .map_err(|e| match nl_err(e) {
                    LiveError(m) if m.contains("does not support") => LiveError(format!(
                        "{m}; this host has no bonding driver (modprobe bonding)"
                    )),
                    other => other,
                })
        }
        LiveOp::SetPrimary { bond, primary } => {
            let b = index_of(h, bond).await?;
            let p = index_of(h, primary).await?;
            h.link()
                .change(
                    LinkMessageBuilder::<LinkBond>::new(bond)
                        .index(b)
                        .primary(p)
                        .build(),
                )
                .execute()
                .await
                .map_err(nl_err)
        }
        LiveOp::CreateVlan(v) => {
            let parent = index_of(h, &v.parent).await?;
            h.link()
                .add(LinkVlan::new(&v.name, parent, v.id).build())
                .execute()
                .await
                .map_err(nl_err)
        }
        LiveOp::DeleteBridge(BridgeLive { name, .. })
        | LiveOp::DeleteBond(BondLive { name, .. })
        | LiveOp::DeleteVlan(VlanLive { name, .. }) => {
            let idx = index_of(h, name).await?;
            h.link().del(idx).execute().await.map_err(nl_err)
        }
        LiveOp::SetMaster { link, master, .. } => {
            let idx = index_of(h, link).await?;
            let msg = match master {
                Some(m) => {
                    let midx = index_of(h, m).await?;
                    LinkUnspec::new_with_index(idx).controller(midx).build()
                }
                None => LinkUnspec::new_with_index(idx).nocontroller().build(),
            };
            set(h, msg).await
        }
        LiveOp::SetUp { link, up, .. } => {
            let idx = index_of(h, link).await?;
            let m = LinkUnspec::new_with_index(idx);
            set(h, if *up { m.up() } else { m.down() }.build()).await
        }
        LiveOp::SetMtu { link, mtu, .. } => {
            let idx = index_of(h, link).await?;
            set(h, LinkUnspec::new_with_index(idx).mtu(*mtu).build()).await
        }
        LiveOp::AddAddress { link, address } => {
            let idx = index_of(h, link).await?;
            h.address()
                .add(idx, address.addr, address.prefix)
                .execute()
                .await
                .map_err(nl_err)
        }
        LiveOp::DelAddress { link, address } => {
            let idx = index_of(h, link).await?;
            let mut found = h
                .address()
                .get()
                .set_link_index_filter(idx)
                .set_address_filter(address.addr)
                .set_prefix_length_filter(address.prefix)
                .execute();
            let mut removed = false;
            while let Some(m) = found.try_next().await.map_err(nl_err)? {
                h.address().del(m).execute().await.map_err(nl_err)?;
                removed = true;
            }
            if removed {
                Ok(())
            } else {
                Err(LiveError(format!("{link} does not have {address}")))
            }
        }
        LiveOp::AddDefaultRoute { link, gateway } => {
            let idx = index_of(h, link).await?;
            let msg = default_route(*gateway, idx, RouteProtocol::Boot);
            h.route().add(msg).execute().await.map_err(nl_err)
        }
        LiveOp::DelDefaultRoute { link, gateway } => {
            let idx = index_of(h, link).await?;
            let msg = default_route(*gateway, idx, RouteProtocol::Unspec);
            h.route().del(msg).execute().await.map_err(nl_err)
        }
        LiveOp::SetSysctl { .. } => Err(LiveError("not a netlink operation".into())),
    }
}

fn default_route(gateway: IpAddr, oif: u32, proto: RouteProtocol) -> RouteMessage {
    match gateway {
        IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(g)
            .output_interface(oif)
            .protocol(proto)
            .build(),
        IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(g)
            .output_interface(oif)
            .protocol(proto)
            .build(),
    }
}

async fn read_all(h: &Handle) -> Result<LiveNet, LiveError> {
    let mut msgs = Vec::new();
    let mut s = h.link().get().execute();
    while let Some(m) = s.try_next().await.map_err(nl_err)? {
        msgs.push(m);
    }
    let names: Vec<(u32, String)> = msgs
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((m.header.index, n.clone())),
                _ => None,
            })
        })
        .collect();
    let name_of = |i: u32| names.iter().find(|(x, _)| *x == i).map(|(_, n)| n.clone());
    let mut links: Vec<LinkState> = msgs.iter().map(|m| link_state(m, &name_of)).collect();
    links.sort_by_key(|l| l.index);

    let mut addresses = Vec::new();
    let mut s = h.address().get().execute();
    while let Some(m) = s.try_next().await.map_err(nl_err)? {
        if let Some(a) = addr_state(&m, &name_of) {
            addresses.push(a);
        }
    }

    let mut routes = Vec::new();
    for msg in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut s = h.route().get(msg).execute();
        while let Some(m) = s.try_next().await.map_err(nl_err)? {
            if let Some(r) = route_state(&m, &name_of) {
                routes.push(r);
            }
        }
    }
    Ok(LiveNet {
        links,
        addresses,
        routes,
    })
}

fn link_state(m: &LinkMessage, name_of: &dyn Fn(u32) -> Option<String>) -> LinkState {
    let mut l = LinkState {
        index: m.header.index,
        name: String::new(),
        kind: None,
        master: None,
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        operstate: String::new(),
        mac: String::new(),
        bridge: None,
        bond: None,
        vlan: None,
    };
    let mut parent = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(x) => l.mtu = *x,
            LinkAttribute::Controller(i) => l.master = name_of(*i),
            LinkAttribute::OperState(s) => l.operstate = s.to_string().to_lowercase(),
            LinkAttribute::Link(i) => parent = name_of(*i),
            LinkAttribute::Address(mac) => {
                l.mac = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Bridge(b)) => {
                            let mut br = BridgeLive {
                                name: String::new(),
                                stp: false,
                                forward_delay_s: 0,
                                ageing_s: 0,
                            };
                            for x in b {
                                match x {
                                    InfoBridge::StpState(s) => {
                                        br.stp = !matches!(s, BridgeStpState::Disabled)
                                    }
                                    InfoBridge::ForwardDelay(d) => br.forward_delay_s = d / 100,
                                    InfoBridge::AgeingTime(t) => br.ageing_s = t / 100,
                                    _ => {}
                                }
                            }
                            l.bridge = Some(br);
                        }
                        LinkInfo::Data(InfoData::Bond(b)) => {
                            let mut bo = BondLive {
                                name: String::new(),
                                mode: 0,
                                miimon_ms: 0,
                                lacp_fast: None,
                            };
                            for x in b {
                                match x {
                                    InfoBond::Mode(md) => bo.mode = u8::from(*md),
                                    InfoBond::MiiMon(ms) => bo.miimon_ms = *ms,
                                    InfoBond::AdLacpRate(r) if bo.mode == 4 => {
                                        bo.lacp_fast = Some(matches!(r, BondLacpRate::Fast))
                                    }
                                    _ => {}
                                }
                            }
                            l.bond = Some(bo);
                        }
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            let id = v.iter().find_map(|x| match x {
                                InfoVlan::Id(id) => Some(*id),
                                _ => None,
                            });
                            l.vlan = id.map(|id| VlanLive {
                                name: String::new(),
                                parent: String::new(),
                                id,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(b) = &mut l.bridge {
        b.name = l.name.clone();
    }
    if let Some(b) = &mut l.bond {
        b.name = l.name.clone();
    }
    if let Some(v) = &mut l.vlan {
        v.name = l.name.clone();
        v.parent = parent.unwrap_or_default();
    }
    l
}

fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}

fn addr_state(m: &AddressMessage, name_of: &dyn Fn(u32) -> Option<String>) -> Option<AddrState> {
    let link = name_of(m.header.index)?;
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on p2p links).
    let addr = m
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(a) => Some(*a),
            _ => None,
        })
        .or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            })
        })?;
    let link_local = match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    Some(AddrState {
        link,
        address: Cidr {
            addr,
            prefix: m.header.prefix_len,
        },
        link_local,
        dynamic: is_dynamic(m),
    })
}

/// Whether the kernel holds the address for a while only (what `ip address` prints as
/// `dynamic` or `mngtmpaddr`): made from a router advertisement, or given a lifetime by a
/// DHCP client. IFA_FLAGS holds all flags; older kernels send only the header's byte.
fn is_dynamic(m: &AddressMessage) -> bool {
    let flags = m
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(f) => Some(*f),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())));
    let from_ra = m.attributes.iter().any(|a| {
        matches!(
            a,
            AddressAttribute::Protocol(AddressProtocol::RouterAnnouncement)
        )
    });
    !flags.contains(AddressFlags::Permanent)
        || flags.contains(AddressFlags::Managetempaddr)
        || from_ra
}

fn route_state(m: &RouteMessage, name_of: &dyn Fn(u32) -> Option<String>) -> Option<RouteState> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != 254 || m.header.kind != RouteType::Unicast {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    };
    let mut r = RouteState {
        destination: None,
        gateway: None,
        link: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                r.destination = ip(d).map(|addr| Cidr {
                    addr,
                    prefix: m.header.destination_prefix_length,
                })
            }
            RouteAttribute::Gateway(g) => r.gateway = ip(g),
            RouteAttribute::Oif(i) => r.link = name_of(*i),
            _ => {}
        }
    }
    if m.header.destination_prefix_length == 0 {
        r.destination = None;
    }
    if let Some(d) = &r.destination {
        if let IpAddr::V6(a) = d.addr {
            if (a.segments()[0] & 0xffc0) == 0xfe80 {
                return None;
            }
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressHeaderFlags;

    fn message(flags: Option<AddressFlags>, header: AddressHeaderFlags) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = 2;
        m.header.prefix_len = 64;
        m.header.flags = header;
        m.attributes
            .push(AddressAttribute::Address("2001:db8::10".parse().unwrap()));
        if let Some(f) = flags {
            m.attributes.push(AddressAttribute::Flags(f));
        }
        m
    }

    fn read(m: &AddressMessage) -> AddrState {
        addr_state(m, &|i: u32| (i == 2).then(|| "eth0".to_string())).unwrap()
    }

    #[test]
    fn addresses_set_by_hand_are_permanent_and_slaac_ones_dynamic() {
        let fixed = read(&message(
            Some(AddressFlags::Permanent),
            AddressHeaderFlags::Permanent,
        ));
        assert_eq!(fixed.address.to_string(), "2001:db8::10/64");
        assert!(!fixed.dynamic && !fixed.link_local);
        // SLAAC: no permanent flag (a lifetime), often mngtmpaddr.
        assert!(
            read(&message(
                Some(AddressFlags::Managetempaddr),
                AddressHeaderFlags::empty()
            ))
            .dynamic
        );
        assert!(
            read(&message(
                Some(AddressFlags::Permanent | AddressFlags::Managetempaddr),
                AddressHeaderFlags::Permanent
            ))
            .dynamic
        );
        // Only the header's byte (no IFA_FLAGS).
        assert!(!read(&message(None, AddressHeaderFlags::Permanent)).dynamic);
        assert!(read(&message(None, AddressHeaderFlags::empty())).dynamic);
        // Made by the kernel from a router advertisement.
        let mut ra = message(Some(AddressFlags::Permanent), AddressHeaderFlags::Permanent);
        ra.attributes.push(AddressAttribute::Protocol(
            AddressProtocol::RouterAnnouncement,
        ));
        assert!(read(&ra).dynamic);
    }
}
