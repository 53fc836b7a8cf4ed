//! A sender that names its files like an attacker would (`../`, absolute paths, device names,
//! control characters, collisions), speaking the real transfer protocol: the receiver must
//! neutralise every name. Used by tests/browser/transfer.test.mjs.
//!
//! Usage: `hostile_sender SERVER` — prints `{"code": …}` and serves one receiver.

use std::time::Duration;

use anyhow::{Context, bail};
use peerweb_net::{Node, Options};
use peerweb_peer::Event;
use peerweb_transfer::session::Sending;
use peerweb_transfer::wire::{Chunk, Control, FileEntry};
use peerweb_transfer::{Code, Handshake};

const FILES: [(&str, &[u8]); 8] = [
    ("../../escaped.txt", b"climbing out"),
    ("/etc/peerweb-owned", b"absolute"),
    ("..\\..\\windows.txt", b"backslashes"),
    ("CON", b"device"),
    ("a/../../b/c.txt", b"mixed"),
    ("bell\u{7}\nnewline.txt", b"control"),
    ("same.txt", b"first"),
    ("SAME.TXT", b"second"),
];

async fn next_message(node: &mut Node) -> anyhow::Result<Vec<u8>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), node.next_event()).await? {
            Some(Event::Message { data, .. }) => return Ok(data),
            Some(_) => {}
            None => bail!("node stopped"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::args()
        .nth(1)
        .context("usage: hostile_sender SERVER")?;
    let code = Code::from_random(rand_bytes());
    let mut opts = Options::new(&server, &code.room());
    opts.allow_loopback = true;
    opts.stun = false;
    opts.turn = false;
    let mut node = Node::join(opts).await?;
    println!("{{\"code\":\"{code}\"}}");
    let peer = loop {
        match node.next_event().await {
            Some(Event::Open { peer }) => break peer,
            Some(_) => {}
            None => bail!("node stopped"),
        }
    };
    let mut hs = Handshake::sender([0; 16], code);
    node.send(&peer, None, false, hs.hello().encode()).await?;
    hs.on_hello(&Control::decode(&next_message(&mut node).await?)?)?;
    let (local, remote) = node.fingerprints(&peer).await?.context("fingerprints")?;
    let remote = remote.context("remote fingerprint")?;
    node.send(&peer, None, false, hs.confirm(&local, &remote)?.encode())
        .await?;
    hs.verify(
        &local,
        &remote,
        &Control::decode(&next_message(&mut node).await?)?,
    )?;
    let files: Vec<FileEntry> = FILES
        .iter()
        .map(|(p, d)| FileEntry {
            path: (*p).to_owned(),
            size: d.len() as u64,
            hash: blake3::hash(d).to_hex().to_string(),
        })
        .collect();
    let bytes = files.iter().map(|f| f.size).sum();
    let count = files.len() as u64;
    node.send(&peer, None, false, Control::Files { files }.encode())
        .await?;
    node.send(
        &peer,
        None,
        false,
        Control::Offer {
            files: count,
            bytes,
        }
        .encode(),
    )
    .await?;
    let Control::Accept { from } = Control::decode(&next_message(&mut node).await?)? else {
        bail!("not accepted");
    };
    let plan = Sending::new(FILES.iter().map(|(_, d)| d.len() as u64).collect(), &from)?;
    for n in plan {
        let d = &FILES[n.file].1[n.offset as usize..n.offset as usize + n.len];
        node.send(&peer, None, true, Chunk::encode(n.file as u32, n.index, d))
            .await?;
    }
    let done = Control::decode(&next_message(&mut node).await?)?;
    node.leave().await;
    if done != Control::Done {
        bail!("receiver said {done:?}");
    }
    Ok(())
}

fn rand_bytes() -> [u8; 4] {
    let mut b = [0; 4];
    getrandom::fill(&mut b).unwrap_or_default();
    b
}
