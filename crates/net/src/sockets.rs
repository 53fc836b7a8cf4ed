//! Sockets: a UDP socket per usable interface address with large buffers, their reader tasks, and the TCP/TLS streams to a TURN server with their framing.

use crate::*;

/// A UDP socket per usable interface address, with large buffers.
pub(crate) fn bind_host_sockets(opts: &Options) -> Result<Vec<Udp>, Error> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for iface in if_addrs::get_if_addrs()? {
        let ip = iface.ip();
        let named = |list: &[String]| list.contains(&iface.name);
        if (!opts.interfaces.is_empty() && !named(&opts.interfaces)) || named(&opts.deny_interfaces)
        {
            continue;
        }
        let usable = match ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified() && !v4.is_multicast(),
            IpAddr::V6(v6) => {
                !v6.is_unspecified() && !v6.is_multicast() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        };
        if !usable || (ip.is_loopback() && !opts.allow_loopback) {
            continue;
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(Error::NoAddress);
    }
    ips.into_iter()
        .map(|ip| bind_udp(SocketAddr::new(ip, 0)))
        .collect()
}

pub(crate) fn bind_udp(addr: SocketAddr) -> Result<Udp, Error> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let sock = UdpSocket::from_std(s.into())?;
    // quinn-udp's socket options: GSO on send and GRO on receive where the kernel has them.
    let state = quinn_udp::UdpSocketState::new((&sock).into())?;
    Ok(Udp { sock, state })
}

/// A UDP socket with batched I/O (quinn-udp): many datagrams of one size to one address
/// leave in one system call (GSO), and arrive in one (GRO, recvmmsg).
pub(crate) struct Udp {
    sock: UdpSocket,
    state: quinn_udp::UdpSocketState,
}

impl Udp {
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Datagrams at most per [`Udp::send`] with a segment size.
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends `contents` to `to`: one datagram, or (`segment`) datagrams of that size cut
    /// from it (the last may be shorter).
    pub(crate) async fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) {
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        for _ in 0..64 {
            if self.sock.writable().await.is_err() {
                return;
            }
            match self.sock.try_io(tokio::io::Interest::WRITABLE, || {
                self.state.send((&self.sock).into(), &t)
            }) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::trace!("udp send to {to}: {e}");
                    return;
                }
            }
        }
    }

    pub(crate) async fn send_to(&self, contents: &[u8], to: SocketAddr) {
        self.send(to, contents, None).await;
    }

    /// Sends now or not at all (a retransmitted STUN request).
    pub(crate) fn try_send_to(&self, contents: &[u8], to: SocketAddr) {
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        let _ = self.sock.try_io(tokio::io::Interest::WRITABLE, || {
            self.state.send((&self.sock).into(), &t)
        });
    }
}

pub(crate) struct Datagram {
    pub(crate) local: SocketAddr,
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
    /// From the TCP/TLS connection of this TURN allocation (its `Turn::id`).
    pub(crate) turn: Option<usize>,
}

/// Buffers one read fills at most (recvmmsg), each up to 64 KiB of coalesced datagrams (GRO).
const READ_BUFFERS: usize = 8;
const READ_BUFFER: usize = 64 * 1024;

/// Reads a socket and hands datagrams to the driver in batches: what one read returns (several
/// datagrams, coalesced ones split again), and whatever else is already queued in the kernel
/// up to [`BATCH`], goes along as one channel message: one driver wake-up.
pub(crate) fn spawn_reader(
    sock: Arc<Udp>,
    local: SocketAddr,
    tx: mpsc::Sender<Vec<Datagram>>,
) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let mut bufs = vec![vec![0u8; READ_BUFFER]; READ_BUFFERS];
        let mut meta = vec![quinn_udp::RecvMeta::default(); READ_BUFFERS];
        loop {
            let mut batch = Vec::new();
            let mut waited = false;
            while batch.len() < BATCH {
                if !waited {
                    if sock.sock.readable().await.is_err() {
                        return;
                    }
                    waited = true;
                }
                let mut slices: Vec<std::io::IoSliceMut<'_>> = bufs
                    .iter_mut()
                    .map(|b| std::io::IoSliceMut::new(b))
                    .collect();
                let read = sock.sock.try_io(tokio::io::Interest::READABLE, || {
                    sock.state.recv((&sock.sock).into(), &mut slices, &mut meta)
                });
                match read {
                    Ok(n) => {
                        for (m, buf) in meta.iter().zip(&bufs).take(n) {
                            let stride = m.stride.max(1);
                            for d in buf[..m.len.min(READ_BUFFER)].chunks(stride) {
                                batch.push(Datagram {
                                    local,
                                    from: m.addr,
                                    data: d.to_vec(),
                                    turn: None,
                                });
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if batch.is_empty() {
                            waited = false;
                            continue;
                        }
                        break;
                    }
                    // ICMP errors (port unreachable) surface here on Linux: keep reading.
                    Err(e) => {
                        tracing::trace!("udp recv: {e}");
                        if batch.is_empty() {
                            waited = false;
                            continue;
                        }
                        break;
                    }
                }
            }
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    task.abort_handle()
}

/// Largest STUN/ChannelData frame accepted from a TURN server over a stream.
pub(crate) const MAX_STREAM_FRAME: usize = 4 + 65_535 + 3;

/// A task owning one TCP (or TLS) connection to a TURN server: frames from `rx` are written,
/// frames read are split with the STUN stream framing and handed to the driver.
pub(crate) fn spawn_stream(
    id: usize,
    server: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    net: mpsc::Sender<Vec<Datagram>>,
) -> mpsc::Sender<Vec<u8>> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    pub(crate) async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        idx: usize,
        server: SocketAddr,
        rx: &mut mpsc::Receiver<Vec<u8>>,
        net: &mpsc::Sender<Vec<Datagram>>,
    ) -> std::io::Result<()> {
        let mut acc: Vec<u8> = Vec::with_capacity(8192);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(bytes) => s.write_all(&bytes).await?,
                    None => return Ok(()),
                },
                n = s.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    acc.extend_from_slice(&buf[..n]);
                    while let Some(len) = peerweb_turn::stun::stream_frame_len(&acc) {
                        if len > MAX_STREAM_FRAME {
                            return Err(std::io::Error::other("oversize frame from TURN server"));
                        }
                        if acc.len() < len {
                            break;
                        }
                        let data: Vec<u8> = acc.drain(..len).collect();
                        let d = Datagram { local: server, from: server, data, turn: Some(idx) };
                        if net.send(vec![d]).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    tokio::spawn(async move {
        let tcp = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(t)) => t,
            _ => return,
        };
        let _ = tcp.set_nodelay(true);
        let r = match tls {
            None => pump(tcp, id, server, &mut rx, &net).await,
            Some((cfg, host)) => {
                let Ok(name) = rustls::pki_types::ServerName::try_from(host) else {
                    return;
                };
                match tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                {
                    Ok(s) => pump(s, id, server, &mut rx, &net).await,
                    Err(e) => {
                        tracing::debug!("TURN TLS handshake with {server}: {e}");
                        return;
                    }
                }
            }
        };
        if let Err(e) = r {
            tracing::debug!("TURN stream to {server}: {e}");
        }
    });
    tx
}
