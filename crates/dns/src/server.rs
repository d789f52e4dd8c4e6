//! Serving DNS: UDP on dedicated threads, each a blocking loop that takes up to [`UDP_BATCH`]
//! queries per `recvmmsg` and sends their answers with one `sendmmsg` (the kernel's per-call
//! cost is most of a query's cost); TCP on Tokio with a cap on connections and an idle
//! timeout.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_core::RoutingSnapshot;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::health::HealthBoard;
use crate::zone::{Asker, Authority, Scratch};

/// The most datagrams one `recvmmsg` takes.
const UDP_BATCH: usize = 32;
/// The largest query read over UDP; EDNS queries are well under it.
const UDP_QUERY_MAX: usize = 4096;
/// Socket buffers: a burst of queries waits in the kernel rather than being dropped.
const UDP_SOCKET_BUFFER: usize = 4 << 20;
use nix::{setsockopt_impl, sockopt_impl};
sockopt_impl!(
    /// `IP_MTU_DISCOVER`: how the kernel treats path MTU on this socket.
    PathMtuDiscovery,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_MTU_DISCOVER,
    libc::c_int
);

/// How long a UDP worker blocks before it looks at the stop flag.
const UDP_POLL: Duration = Duration::from_millis(200);
/// Concurrent TCP connections; more wait in the kernel's accept queue.
const MAX_TCP_CONNECTIONS: usize = 512;
/// A TCP connection that sends nothing for this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A UDP socket and a TCP listener on the same address.
#[derive(Debug)]
pub struct DnsListeners {
    /// Queries over UDP.
    pub udp: UdpSocket,
    /// Queries over TCP (and UDP answers that were truncated).
    pub tcp: TcpListener,
}

/// How many free UDP ports `DnsListeners::bind` tries, for port 0, before giving up on
/// finding one whose TCP twin is free too.
const PORT_PICKS: u32 = 32;

impl DnsListeners {
    /// Binds both on `addr`. With port 0, UDP picks the port and TCP takes the same one.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        // With port 0 the UDP socket picks a free port that TCP may not have free; another
        // pick is tried then, a bounded number of times.
        let mut tries = if addr.port() == 0 { PORT_PICKS } else { 1 };
        loop {
            let udp = UdpSocket::bind(addr)?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Ok(Self { udp, tcp }),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Logs `dns listening on udp://…` and `tcp://…`.
    pub fn log(&self) {
        if let Ok(addr) = self.udp.local_addr() {
            tracing::info!("dns listening on udp://{addr}");
        }
        if let Ok(addr) = self.tcp.local_addr() {
            tracing::info!("dns listening on tcp://{addr}");
        }
    }

    /// The bound address (the same for both).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Everything a worker answers from.
#[derive(Debug, Clone)]
pub struct DnsService {
    /// The zones and the GeoIP database.
    pub authority: Arc<Authority>,
    /// The routing snapshot as the store publishes it.
    pub snapshot: watch::Receiver<Arc<RoutingSnapshot>>,
    /// Which PoPs are alive.
    pub health: Arc<HealthBoard>,
}

/// Serves until `shutdown` completes, with `udp_workers` threads on the UDP socket.
pub async fn serve(
    service: DnsService,
    listeners: DnsListeners,
    udp_workers: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    listeners.udp.set_read_timeout(Some(UDP_POLL))?;
    let sockref = socket2::SockRef::from(&listeners.udp);
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sockref.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = sockref.set_send_buffer_size(UDP_SOCKET_BUFFER);
    if listeners.udp.local_addr()?.is_ipv4() {
        // DF set, path MTU ignored: answers are capped at MAX_UDP_SIZE, so they never need
        // fragments, a forged "fragmentation needed" cannot make us send them, and the kernel
        // skips choosing an IP id for every packet.
        let _ = nix::sys::socket::setsockopt(
            &listeners.udp,
            PathMtuDiscovery,
            &libc::IP_PMTUDISC_PROBE,
        );
    }
    let mut threads = Vec::new();
    for index in 0..udp_workers.max(1) {
        let socket = listeners.udp.try_clone()?;
        let (service, stop) = (service.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{index}"))
                .spawn(move || udp_worker(&socket, service, &stop))?,
        );
    }

    let limit = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listeners.tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "dns tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        let span = tracing::debug_span!("dns_tcp", %peer);
        tokio::spawn(
            async move {
                if let Err(error) = tcp_connection(stream, peer, &service).await {
                    tracing::debug!(%error, "dns tcp connection ended");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }

    stop.store(true, Ordering::Release);
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await
    .map_err(io::Error::other)?;
    Ok(())
}

fn udp_worker(socket: &UdpSocket, service: DnsService, stop: &AtomicBool) {
    let DnsService {
        authority,
        mut snapshot,
        health,
    } = service;
    let fd = socket.as_raw_fd();
    let mut current = snapshot.borrow_and_update().clone();
    let mut received = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut sending = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut queries = vec![[0u8; UDP_QUERY_MAX]; UDP_BATCH];
    let mut lengths = [0usize; UDP_BATCH];
    let mut peers: [Option<SockaddrStorage>; UDP_BATCH] = [None; UDP_BATCH];
    let mut replies: Vec<Vec<u8>> = (0..UDP_BATCH)
        .map(|_| Vec::with_capacity(usize::from(crate::wire::MAX_UDP_SIZE)))
        .collect();
    let mut reply_peers: [Option<SockaddrStorage>; UDP_BATCH] = [None; UDP_BATCH];
    let mut scratch = Scratch::default();
    while !stop.load(Ordering::Acquire) {
        // Block for the first datagram (up to UDP_POLL), then take what is already queued.
        let count = {
            let mut buffers: Vec<[IoSliceMut<'_>; 1]> =
                queries.iter_mut().map(|q| [IoSliceMut::new(q)]).collect();
            match recvmmsg(
                fd,
                &mut received,
                buffers.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => {
                    let mut count = 0;
                    for (i, message) in messages.enumerate() {
                        lengths[i] = message.bytes;
                        peers[i] = message.address;
                        count = i + 1;
                    }
                    count
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(error) => {
                    // ICMP errors from earlier sends surface here; they are not fatal.
                    tracing::debug!(%error, "dns udp receive failed");
                    continue;
                }
            }
        };
        // One atomic load per batch; the swap itself happens once per store change.
        if snapshot.has_changed().unwrap_or(false) {
            current = snapshot.borrow_and_update().clone();
        }
        let live = health.live();
        let mut ready = 0;
        for i in 0..count {
            let Some(addr) = peers[i].as_ref().and_then(peer_ip) else {
                continue;
            };
            let asker = Asker { addr, udp: true };
            let query = &queries[i][..lengths[i].min(UDP_QUERY_MAX)];
            if authority.answer(
                query,
                asker,
                &current,
                live,
                &mut replies[ready],
                &mut scratch,
            ) {
                reply_peers[ready] = peers[i];
                ready += 1;
            }
        }
        send_all(fd, &mut sending, &replies[..ready], &reply_peers[..ready]);
    }
}

/// Sends every reply, skipping one that the kernel refuses rather than retrying it forever.
fn send_all(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    replies: &[Vec<u8>],
    peers: &[Option<SockaddrStorage>],
) {
    let slices: Vec<[IoSlice<'_>; 1]> = replies.iter().map(|r| [IoSlice::new(r)]).collect();
    let mut sent = 0;
    while sent < replies.len() {
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            fd,
            headers,
            slices[sent..].iter(),
            &peers[sent..],
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(done) => sent += done.count().max(1),
            Err(Errno::EINTR) => {}
            Err(error) => {
                tracing::debug!(%error, "dns udp send failed");
                sent += 1;
            }
        }
    }
}

/// The client address of a datagram; an IPv4 client on a dual-stack socket arrives as
/// `::ffff:a.b.c.d`, and GeoIP wants `a.b.c.d`.
fn peer_ip(peer: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = peer.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    let v6 = peer.as_sockaddr_in6()?.ip();
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: &DnsService,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut msg = Vec::new();
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => usize::from(result?),
        };
        msg.resize(len, 0);
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "message not completed"))??;
        let snapshot = service.snapshot.borrow().clone();
        let asker = Asker {
            addr: canonical(peer.ip()),
            udp: false,
        };
        if !service.authority.answer(
            &msg,
            asker,
            &snapshot,
            service.health.live(),
            &mut out,
            &mut scratch,
        ) {
            return Ok(());
        }
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        stream.write_all(&framed).await?;
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`; GeoIP wants `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
