//! A userspace TCP proxy for the members' peer traffic, so a test can partition members the way
//! `iptables -j DROP` on the peer ports does, without root.
//!
//! Each member listens for peers on a private port and advertises the proxy's port for it (in
//! `--initial-cluster`); the proxy relays every connection to the private port. A dialer's first
//! frame is a `Hello` naming it (`transport/frame.rs`), so the proxy knows which pair of members a
//! connection joins. Each unordered pair of members is a link, in one of three states:
//!
//! - `Open`: bytes flow both ways.
//! - `Held`: a DROP partition. Bytes are read and held, not delivered; connections stay open and
//!   neither side hears anything (not even a close); new connections are accepted and held the
//!   same way. When the link opens again everything held is delivered in order, as TCP
//!   retransmits what the kernels buffered once the DROP rule is gone — which is how frames
//!   queued during a partition reach their peer after the heal. A kernel's buffers are bounded,
//!   so is the proxy: beyond [`MAX_HELD_BYTES_PER_DIRECTION`] a connection is reset.
//! - `Closed`: a REJECT partition: the link's connections are reset, new ones too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use yizhi_server::transport::Frame;

/// What one direction of one connection may hold while its link is cut.
pub const MAX_HELD_BYTES_PER_DIRECTION: usize = 64 * 1024 * 1024;
/// A dialer sends its hello at once; one that does not is not a member.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A hello is two short strings and a few integers (the transport caps each string at 4 KiB).
const MAX_HELLO_BYTES: usize = 16 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Open,
    /// Bytes held, connections kept open (iptables DROP).
    Held,
    /// Connections reset (iptables REJECT with tcp-reset).
    Closed,
}

/// Two member indices (0-based), the smaller first.
type Pair = (usize, usize);

fn pair(a: usize, b: usize) -> Pair {
    assert_ne!(a, b, "a link joins two different members");
    (a.min(b), a.max(b))
}

/// What the proxy did, for a test's summary.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    /// Bytes read while their link was held (delivered at the heal unless the connection died).
    pub held_bytes: AtomicU64,
    /// Connections reset: a closed link, a member gone at the heal, or too much held.
    pub resets: AtomicU64,
}

/// The proxy: one listener per member, relaying to that member's private peer port.
#[derive(Debug)]
pub struct PeerProxy {
    public_ports: Vec<u16>,
    private_ports: Vec<u16>,
    links: Arc<BTreeMap<Pair, watch::Sender<LinkState>>>,
    stats: Arc<ProxyStats>,
    acceptors: Vec<tokio::task::JoinHandle<()>>,
}

impl PeerProxy {
    /// Listens on a fresh public port per member and picks each member's private port. Must run
    /// inside a tokio runtime (its tasks live there).
    pub fn start(size: usize) -> PeerProxy {
        let ports = crate::ports::free_ports(2 * size);
        let (public_ports, private_ports): (Vec<u16>, Vec<u16>) =
            ports.chunks(2).map(|two| (two[0], two[1])).unzip();
        let mut links = BTreeMap::new();
        for a in 0..size {
            for b in a + 1..size {
                links.insert(pair(a, b), watch::channel(LinkState::Open).0);
            }
        }
        let links = Arc::new(links);
        let stats = Arc::new(ProxyStats::default());
        let acceptors = (0..size)
            .map(|target| {
                let listener = std::net::TcpListener::bind(("127.0.0.1", public_ports[target]))
                    .unwrap_or_else(|e| panic!("proxy port {}: {e}", public_ports[target]));
                listener.set_nonblocking(true).expect("non-blocking listener");
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                let route = Route {
                    target,
                    size,
                    target_addr: format!("127.0.0.1:{}", private_ports[target]),
                    links: links.clone(),
                    stats: stats.clone(),
                };
                tokio::spawn(accept_loop(listener, route))
            })
            .collect();
        PeerProxy {
            public_ports,
            private_ports,
            links,
            stats,
            acceptors,
        }
    }

    /// The port member `index` advertises to its peers (the proxy's).
    pub fn public_port(&self, index: usize) -> u16 {
        self.public_ports[index]
    }

    /// The port member `index` listens on for peers (only the proxy dials it).
    pub fn private_port(&self, index: usize) -> u16 {
        self.private_ports[index]
    }

    pub fn set_link(&self, a: usize, b: usize, state: LinkState) {
        self.links[&pair(a, b)].send_replace(state);
    }

    /// Sets every link of `member`.
    pub fn isolate(&self, member: usize, state: LinkState) {
        for other in (0..self.public_ports.len()).filter(|&o| o != member) {
            self.set_link(member, other, state);
        }
    }

    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.send_replace(LinkState::Open);
        }
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        for acceptor in &self.acceptors {
            acceptor.abort();
        }
        // Ends every relay task (they reset their connections).
        for link in self.links.values() {
            link.send_replace(LinkState::Closed);
        }
    }
}

/// Where one listener's connections go.
#[derive(Clone, Debug)]
struct Route {
    target: usize,
    size: usize,
    target_addr: String,
    links: Arc<BTreeMap<Pair, watch::Sender<LinkState>>>,
    stats: Arc<ProxyStats>,
}

async fn accept_loop(listener: TcpListener, route: Route) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                route.stats.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay_connection(stream, route.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Reads the dialer's hello: its bytes (to pass on) and the dialer's member index.
async fn read_hello(dialer: &mut TcpStream, route: &Route) -> Option<(BytesMut, usize)> {
    let mut len_bytes = [0u8; 4];
    dialer.read_exact(&mut len_bytes).await.ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_HELLO_BYTES {
        return None;
    }
    let mut bytes = BytesMut::with_capacity(4 + len);
    bytes.extend_from_slice(&len_bytes);
    bytes.resize(4 + len, 0);
    dialer.read_exact(&mut bytes[4..]).await.ok()?;
    let Ok(Frame::Hello(hello)) = Frame::decode(bytes.clone().freeze().slice(4..)) else {
        return None;
    };
    // Member ids are 1-based positions in `--initial-cluster`.
    let from = usize::try_from(hello.from).ok()?.checked_sub(1)?;
    let to_ok = hello.to == route.target as u64 + 1;
    (from < route.size && from != route.target && to_ok).then_some((bytes, from))
}

async fn relay_connection(mut dialer: TcpStream, route: Route) {
    let _ = dialer.set_nodelay(true);
    let Ok(Some((hello, from))) = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut dialer, &route)).await
    else {
        return;
    };
    let mut link = route.links[&pair(from, route.target)].subscribe();
    let mut relay = Relay {
        dialer,
        member: None,
        to_member: hello,
        to_dialer: BytesMut::new(),
        dialer_eof: false,
        member_eof: false,
        member_shut: false,
        dialer_shut: false,
    };
    if relay.run(&mut link, &route).await == End::Reset {
        route.stats.resets.fetch_add(1, Ordering::Relaxed);
        let _ = relay.dialer.set_zero_linger();
        if let Some(member) = &relay.member {
            let _ = member.set_zero_linger();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Both sides closed and everything was delivered.
    Finished,
    /// Close both sides with a reset.
    Reset,
}

/// One relayed connection: the dialer's side, the member's (dialed once the link is open), and
/// the bytes and closes not yet delivered each way.
#[derive(Debug)]
struct Relay {
    dialer: TcpStream,
    member: Option<TcpStream>,
    to_member: BytesMut,
    to_dialer: BytesMut,
    dialer_eof: bool,
    member_eof: bool,
    member_shut: bool,
    dialer_shut: bool,
}

/// Reads from `stream` into `buf`; never resolves without a stream (not connected yet).
async fn read_into(stream: Option<&mut TcpStream>, buf: &mut BytesMut) -> std::io::Result<usize> {
    match stream {
        Some(stream) => stream.read_buf(buf).await,
        None => std::future::pending().await,
    }
}

impl Relay {
    /// Reads both sides always; delivers while the link is open, holds while it is held.
    async fn run(&mut self, link: &mut watch::Receiver<LinkState>, route: &Route) -> End {
        loop {
            let state = *link.borrow_and_update();
            match state {
                LinkState::Closed => return End::Reset,
                LinkState::Held => {}
                LinkState::Open => {
                    if let Some(end) = self.deliver(route).await {
                        return end;
                    }
                }
            }
            if self.to_member.len() > MAX_HELD_BYTES_PER_DIRECTION
                || self.to_dialer.len() > MAX_HELD_BYTES_PER_DIRECTION
            {
                return End::Reset;
            }
            self.to_member.reserve(READ_CHUNK_BYTES);
            self.to_dialer.reserve(READ_CHUNK_BYTES);
            let held = state == LinkState::Held;
            let count_held = |n: usize| {
                if held {
                    route.stats.held_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            };
            tokio::select! {
                read = self.dialer.read_buf(&mut self.to_member), if !self.dialer_eof => match read {
                    Ok(0) => self.dialer_eof = true,
                    Ok(n) => count_held(n),
                    // Under DROP the other side hears nothing; what was held still goes at the heal.
                    Err(_) if held => self.dialer_eof = true,
                    Err(_) => return End::Reset,
                },
                read = read_into(self.member.as_mut(), &mut self.to_dialer), if !self.member_eof => match read {
                    Ok(0) => self.member_eof = true,
                    Ok(n) => count_held(n),
                    Err(_) if held => self.member_eof = true,
                    Err(_) => return End::Reset,
                },
                changed = link.changed() => {
                    if changed.is_err() {
                        return End::Reset; // The proxy is gone.
                    }
                }
            }
        }
    }

    /// The link is open: dials the member if not yet done, then delivers everything held, closes
    /// included. `Some` once the connection is over.
    async fn deliver(&mut self, route: &Route) -> Option<End> {
        if self.member.is_none() {
            match TcpStream::connect(&route.target_addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    self.member = Some(stream);
                }
                Err(_) => return Some(End::Reset), // The member is down: as a refused connect.
            }
        }
        let member = self.member.as_mut().expect("connected above");
        if !self.to_member.is_empty() {
            if member.write_all(&self.to_member).await.is_err() {
                return Some(End::Reset);
            }
            self.to_member.clear();
        }
        if self.dialer_eof && !self.member_shut {
            let _ = member.shutdown().await;
            self.member_shut = true;
        }
        if !self.to_dialer.is_empty() {
            if self.dialer.write_all(&self.to_dialer).await.is_err() {
                return Some(End::Reset);
            }
            self.to_dialer.clear();
        }
        if self.member_eof && !self.dialer_shut {
            let _ = self.dialer.shutdown().await;
            self.dialer_shut = true;
        }
        (self.dialer_eof && self.member_eof).then_some(End::Finished)
    }
}
