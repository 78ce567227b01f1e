//! The peer transport: one TCP connection per ordered member pair (the dialer sends, the acceptor
//! receives), length-prefixed frames, a bounded queue per peer, reconnect with backoff.
//!
//! A slow or dead peer never blocks the others or the engine: `send` never waits. A full queue
//! drops the frame and reports the peer unreachable, and the engine retries (Raft and Paxos both
//! tolerate loss). While a peer is disconnected its queue is drained and dropped, so a reconnect
//! never replays a burst of stale messages.

pub mod frame;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use yizhi_engine::NodeId;

pub use frame::{Frame, FrameError, Hello, MAX_FRAME_BYTES};

/// Frames waiting for one peer's connection.
pub const PEER_QUEUE_FRAMES: usize = 4096;
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the transport tells the node about a peer.
pub trait Inbound: Send + Sync + 'static {
    fn deliver(&self, from: NodeId, frame: Frame);
}

/// What peers told us about themselves (client URLs for MemberList).
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory {
    client_urls: Arc<Mutex<BTreeMap<NodeId, String>>>,
}

impl PeerDirectory {
    pub fn set(&self, id: NodeId, urls: String) {
        self.client_urls.lock().expect("directory lock").insert(id, urls);
    }

    pub fn client_urls(&self, id: NodeId) -> Option<String> {
        self.client_urls.lock().expect("directory lock").get(&id).cloned()
    }
}

#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub cluster_id: u64,
    pub local_id: NodeId,
    pub local_name: String,
    pub local_client_urls: String,
    /// `host:port` of every other member.
    pub peers: BTreeMap<NodeId, String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer,
    /// The queue is full or the peer is not connected: treat it as unreachable.
    Dropped,
}

/// The sending half, cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    queues: Arc<BTreeMap<NodeId, mpsc::Sender<Bytes>>>,
}

impl Transport {
    /// Starts one dialer per peer on the current tokio runtime.
    pub fn start(config: &TransportConfig) -> Transport {
        let mut queues = BTreeMap::new();
        for (&peer, addr) in &config.peers {
            assert_ne!(peer, config.local_id, "a member does not dial itself");
            let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
            let hello = Frame::Hello(Hello {
                cluster_id: config.cluster_id,
                from: config.local_id,
                to: peer,
                name: config.local_name.clone(),
                client_urls: config.local_client_urls.clone(),
            });
            tokio::spawn(dial_loop(peer, addr.clone(), hello.encode(), rx));
            queues.insert(peer, tx);
        }
        Transport {
            queues: Arc::new(queues),
        }
    }

    /// Queues `frame` for `to`; never blocks.
    pub fn send(&self, to: NodeId, frame: &Frame) -> Result<(), SendError> {
        let queue = self.queues.get(&to).ok_or(SendError::UnknownPeer)?;
        queue.try_send(frame.encode()).map_err(|_| SendError::Dropped)
    }
}

async fn dial_loop(peer: NodeId, addr: String, hello: Bytes, mut rx: mpsc::Receiver<Bytes>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match TcpStream::connect(&addr).await {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                let _ = stream.set_nodelay(true);
                tracing::debug!(peer, %addr, "connected to peer");
                match pump(stream, &hello, &mut rx).await {
                    Ok(()) => return, // The node shut down: the queue closed.
                    Err(e) => tracing::debug!(peer, %addr, error = %e, "peer connection lost"),
                }
            }
            Err(e) => tracing::trace!(peer, %addr, error = %e, "peer not reachable"),
        }
        // Whatever queued while disconnected is stale by the time we reconnect.
        loop {
            match rx.try_recv() {
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Writes queued frames, flushing whenever the queue runs dry (batching under load).
async fn pump(stream: TcpStream, hello: &Bytes, rx: &mut mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    let (mut read_half, write_half) = stream.into_split();
    let mut writer = BufWriter::with_capacity(256 * 1024, write_half);
    writer.write_all(hello).await?;
    writer.flush().await?;
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { return Ok(()) };
                writer.write_all(&frame).await?;
                while let Ok(more) = rx.try_recv() {
                    writer.write_all(&more).await?;
                    if writer.buffer().len() >= 128 * 1024 {
                        break;
                    }
                }
                writer.flush().await?;
            }
            // The acceptor never writes: a readable socket means it closed the connection.
            read = read_half.read(&mut probe) => {
                read?;
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer closed"));
            }
        }
    }
}

/// Accepts peer connections and hands their frames to `inbound`.
pub async fn serve(
    listener: TcpListener,
    config: TransportConfig,
    directory: PeerDirectory,
    inbound: Arc<dyn Inbound>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let config = config.clone();
        let directory = directory.clone();
        let inbound = inbound.clone();
        tokio::spawn(async move {
            if let Err(e) = receive(stream, &config, &directory, inbound).await {
                tracing::warn!(%remote, error = %e, "peer connection closed");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ReceiveError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(String),
}

async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<Frame>, ReceiveError> {
    let mut len_bytes = [0u8; 4];
    match stream.read_exact(&mut len_bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len).into());
    }
    buf.clear();
    buf.resize(len, 0);
    stream.read_exact(buf).await?;
    Ok(Some(Frame::decode(buf.split().freeze())?))
}

async fn receive(
    mut stream: TcpStream,
    config: &TransportConfig,
    directory: &PeerDirectory,
    inbound: Arc<dyn Inbound>,
) -> Result<(), ReceiveError> {
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream, &mut buf))
        .await
        .map_err(|_| ReceiveError::Handshake("no hello within 5 s".into()))??;
    let Some(Frame::Hello(hello)) = first else {
        return Err(ReceiveError::Handshake("first frame is not a hello".into()));
    };
    if hello.cluster_id != config.cluster_id {
        return Err(ReceiveError::Handshake(format!(
            "cluster id {:016x} is not ours ({:016x})",
            hello.cluster_id, config.cluster_id
        )));
    }
    if hello.to != config.local_id || !config.peers.contains_key(&hello.from) {
        return Err(ReceiveError::Handshake(format!(
            "hello from {} to {} (we are {})",
            hello.from, hello.to, config.local_id
        )));
    }
    directory.set(hello.from, hello.client_urls.clone());
    while let Some(frame) = read_frame(&mut stream, &mut buf).await? {
        if matches!(frame, Frame::Hello(_)) {
            return Err(ReceiveError::Handshake("second hello".into()));
        }
        inbound.deliver(hello.from, frame);
    }
    Ok(())
}
