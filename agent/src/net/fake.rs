//! A recording `Rtnetlink` fake: an in-memory set of links, addresses, routes and neighbours
//! that the change calls update (with the kernel's EEXIST / EADDRNOTAVAIL / ESRCH refusals)
//! and log as `NlCall`s. A call kind can be made to fail to exercise error paths.

use std::cell::RefCell;

use super::{
    Errno, IpNet, Link, LinkAddress, LinkChange, NeighbourEntry, NetlinkError, NlResult,
    RouteEntry, Rtnetlink, RT_TABLE_MAIN,
};

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NlCall {
    SetLink(u32, LinkChange),
    AddAddress(u32, IpNet),
    DelAddress(u32, IpNet),
    AddRoute(RouteEntry),
    DelRoute(RouteEntry),
    SetNeighbour(NeighbourEntry),
}

#[derive(Debug, Default)]
pub struct FakeRtnetlink {
    pub links: RefCell<Vec<Link>>,
    pub addrs: RefCell<Vec<LinkAddress>>,
    pub routes: RefCell<Vec<RouteEntry>>,
    pub neighbours: RefCell<Vec<NeighbourEntry>>,
    calls: RefCell<Vec<NlCall>>,
    fail: RefCell<Option<(&'static str, Errno)>>,
}

impl FakeRtnetlink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_link(self, index: u32, name: &str, mac: [u8; 6], up: bool) -> Self {
        self.links.borrow_mut().push(Link {
            index,
            name: name.into(),
            mac: mac.to_vec(),
            mtu: 1500,
            up,
        });
        self
    }

    pub fn with_address(self, index: u32, addr: &str, prefix: u8) -> Self {
        self.addrs.borrow_mut().push(LinkAddress {
            index,
            net: IpNet {
                addr: addr.parse().unwrap(),
                prefix,
            },
        });
        self
    }

    pub fn with_route(self, r: RouteEntry) -> Self {
        self.routes.borrow_mut().push(r);
        self
    }

    /// Makes calls of kind `op` ("set_link", "address", "route", "neighbour") fail with
    /// `errno`.
    pub fn fail(&self, op: &'static str, errno: Errno) {
        *self.fail.borrow_mut() = Some((op, errno));
    }

    pub fn calls(&self) -> Vec<NlCall> {
        self.calls.borrow().clone()
    }

    fn check(&self, op: &'static str) -> NlResult<()> {
        match *self.fail.borrow() {
            Some((o, errno)) if o == op => Err(NetlinkError::new(op, errno)),
            _ => Ok(()),
        }
    }
}

fn err(op: &'static str, errno: Errno) -> NlResult<()> {
    Err(NetlinkError::new(op, errno))
}

impl Rtnetlink for FakeRtnetlink {
    fn links(&self) -> NlResult<Vec<Link>> {
        Ok(self.links.borrow().clone())
    }

    fn addresses(&self) -> NlResult<Vec<LinkAddress>> {
        Ok(self.addrs.borrow().clone())
    }

    fn routes(&self) -> NlResult<Vec<RouteEntry>> {
        Ok(self.routes.borrow().clone())
    }

    fn set_link(&self, index: u32, change: &LinkChange) -> NlResult<()> {
        self.calls
            .borrow_mut()
            .push(NlCall::SetLink(index, change.clone()));
        self.check("set_link")?;
        let mut links = self.links.borrow_mut();
        let Some(l) = links.iter_mut().find(|l| l.index == index) else {
            return err("set_link", Errno::ENODEV);
        };
        if change.name.is_some() && l.up {
            return err("set_link", Errno::EBUSY);
        }
        if let Some(n) = &change.name {
            l.name = n.clone();
        }
        if let Some(m) = change.mtu {
            l.mtu = m;
        }
        if let Some(up) = change.up {
            l.up = up;
        }
        Ok(())
    }

    fn address(&self, add: bool, index: u32, net: &IpNet) -> NlResult<()> {
        self.calls.borrow_mut().push(if add {
            NlCall::AddAddress(index, *net)
        } else {
            NlCall::DelAddress(index, *net)
        });
        self.check("address")?;
        let mut addrs = self.addrs.borrow_mut();
        let pos = addrs.iter().position(|a| a.index == index && a.net == *net);
        match (add, pos) {
            (true, Some(_)) => err("address", Errno::EEXIST),
            (true, None) => {
                addrs.push(LinkAddress { index, net: *net });
                Ok(())
            }
            (false, Some(p)) => {
                addrs.remove(p);
                Ok(())
            }
            (false, None) => err("address", Errno::EADDRNOTAVAIL),
        }
    }

    fn route(&self, add: bool, r: &RouteEntry) -> NlResult<()> {
        self.calls.borrow_mut().push(if add {
            NlCall::AddRoute(r.clone())
        } else {
            NlCall::DelRoute(r.clone())
        });
        self.check("route")?;
        let mut routes = self.routes.borrow_mut();
        let key = |x: &RouteEntry| {
            (
                x.family,
                x.dest,
                x.gateway,
                x.oif,
                x.table,
                x.multipath.clone(),
            )
        };
        let pos = routes.iter().position(|x| key(x) == key(r));
        match (add, pos) {
            (true, Some(_)) => err("route", Errno::EEXIST),
            (true, None) => {
                routes.push(RouteEntry {
                    table: RT_TABLE_MAIN,
                    ..r.clone()
                });
                Ok(())
            }
            (false, Some(p)) => {
                routes.remove(p);
                Ok(())
            }
            (false, None) => err("route", Errno::ESRCH),
        }
    }

    fn neighbours(&self) -> NlResult<Vec<NeighbourEntry>> {
        Ok(self.neighbours.borrow().clone())
    }

    fn set_neighbour(&self, n: &NeighbourEntry) -> NlResult<()> {
        self.calls
            .borrow_mut()
            .push(NlCall::SetNeighbour(n.clone()));
        self.check("neighbour")?;
        if !self.links.borrow().iter().any(|l| l.index == n.index) {
            return err("neighbour", Errno::ENODEV);
        }
        let mut list = self.neighbours.borrow_mut();
        list.retain(|x| !(x.index == n.index && x.addr == n.addr));
        list.push(n.clone());
        Ok(())
    }
}
