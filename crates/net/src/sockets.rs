//! Sockets: a UDP socket per usable interface address with large buffers, their reader tasks, and the TCP/TLS streams to a TURN server with their framing.

use crate::*;

/// A UDP socket per usable interface address, with large buffers.
pub(crate) fn bind_host_sockets(opts: &Options) -> Result<Vec<UdpSocket>, Error> {
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

pub(crate) fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, Error> {
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
    Ok(UdpSocket::from_std(s.into())?)
}

pub(crate) struct Datagram {
    pub(crate) local: SocketAddr,
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
    /// From the TCP/TLS connection of this TURN allocation (its `Turn::id`).
    pub(crate) turn: Option<usize>,
}

/// Reads a socket and hands datagrams to the driver in batches: after each wake-up, whatever
/// else is already queued in the kernel goes along (one channel message, one driver wake-up).
pub(crate) fn spawn_reader(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<Vec<Datagram>>,
) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let mut batch = Vec::new();
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => batch.push(Datagram {
                    local,
                    from,
                    data: buf[..n].to_vec(),
                    turn: None,
                }),
                // ICMP errors (port unreachable) surface here on Linux: keep reading.
                Err(e) => {
                    tracing::trace!("udp recv: {e}");
                    continue;
                }
            }
            while batch.len() < BATCH {
                match sock.try_recv_from(&mut buf) {
                    Ok((n, from)) => batch.push(Datagram {
                        local,
                        from,
                        data: buf[..n].to_vec(),
                        turn: None,
                    }),
                    Err(_) => break,
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
