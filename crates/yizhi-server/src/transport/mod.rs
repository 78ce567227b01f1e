//! The peer transport: one TCP connection per ordered member pair (the dialer sends, the acceptor
//! receives), length-prefixed frames, a bounded queue per peer, reconnect with backoff.
//!
//! A slow or dead peer never blocks the others or the engine: `send` never waits. A full queue
//! drops the frame and reports the peer unreachable, and the engine retries (Raft and Paxos both
//! tolerate loss). While a peer is disconnected its queue is drained and dropped, so a reconnect
//! never replays a burst of stale messages.
//!
//! When an established connection to a peer closes, the node hears of it once
//! ([`Inbound::connection_lost`]): a process that dies has its sockets closed by the kernel at
//! once, long before an election timeout would say so. Failed reconnects while the peer stays
//! down, and snapshot streams (connections of their own), report nothing.

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
/// Snapshot bytes per chunk frame.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest snapshot message received (it is held in memory while it is assembled and installed).
pub const MAX_SNAPSHOT_MESSAGE_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// A snapshot stream that stalls this long is abandoned (the engine retries later).
const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the transport tells the node about a peer.
pub trait Inbound: Send + Sync + 'static {
    fn deliver(&self, from: NodeId, frame: Frame);

    /// Our established connection to `peer` closed (its process has likely stopped). A hint,
    /// sometimes wrong: a live peer can reset a connection too.
    fn connection_lost(&self, peer: NodeId);
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
    /// Where and how to open a snapshot stream to each peer: its address and our hello.
    snapshot_routes: Arc<BTreeMap<NodeId, (String, Bytes)>>,
    /// Peers a snapshot is streaming to now: one at a time per peer.
    snapshots_in_flight: Arc<Mutex<std::collections::BTreeSet<NodeId>>>,
    runtime: tokio::runtime::Handle,
}

impl Transport {
    /// Starts one dialer per peer on the current tokio runtime; lost connections are reported to
    /// `inbound`.
    pub fn start(config: &TransportConfig, inbound: Arc<dyn Inbound>) -> Transport {
        let mut queues = BTreeMap::new();
        let mut snapshot_routes = BTreeMap::new();
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
            let hello = hello.encode();
            snapshot_routes.insert(peer, (addr.clone(), hello.clone()));
            tokio::spawn(dial_loop(peer, addr.clone(), hello, rx, inbound.clone()));
            queues.insert(peer, tx);
        }
        Transport {
            queues: Arc::new(queues),
            snapshot_routes: Arc::new(snapshot_routes),
            snapshots_in_flight: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Streams a large engine message (a snapshot) to `to` over a connection of its own, in
    /// chunks, so it neither exceeds the frame limit nor delays the small messages behind it.
    /// `done(true)` once every byte was written, `done(false)` if it could not be.
    pub fn send_snapshot(&self, to: NodeId, message: Bytes, done: Box<dyn FnOnce(bool) + Send>) {
        let Some((addr, hello)) = self.snapshot_routes.get(&to).cloned() else {
            return done(false);
        };
        if !self
            .snapshots_in_flight
            .lock()
            .expect("in-flight lock")
            .insert(to)
        {
            return done(false);
        }
        let in_flight = self.snapshots_in_flight.clone();
        self.runtime.spawn(async move {
            let result =
                tokio::time::timeout(SNAPSHOT_STALL_TIMEOUT, stream_snapshot(&addr, &hello, &message)).await;
            in_flight.lock().expect("in-flight lock").remove(&to);
            let ok = matches!(result, Ok(Ok(())));
            if !ok {
                tracing::warn!(
                    peer = to,
                    bytes = message.len(),
                    ?result,
                    "snapshot stream failed"
                );
            }
            done(ok);
        });
    }

    /// Queues `frame` for `to`; never blocks.
    pub fn send(&self, to: NodeId, frame: &Frame) -> Result<(), SendError> {
        let queue = self.queues.get(&to).ok_or(SendError::UnknownPeer)?;
        queue.try_send(frame.encode()).map_err(|_| SendError::Dropped)
    }
}

async fn stream_snapshot(addr: &str, hello: &Bytes, message: &Bytes) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let mut writer = BufWriter::with_capacity(256 * 1024, stream);
    writer.write_all(hello).await?;
    let total_bytes = message.len() as u64;
    let mut offset = 0;
    for chunk in message.chunks(SNAPSHOT_CHUNK_BYTES) {
        let frame = Frame::SnapshotChunk {
            total_bytes,
            offset,
            data: message.slice_ref(chunk),
        };
        writer.write_all(&frame.encode()).await?;
        offset += chunk.len() as u64;
    }
    let end = Frame::SnapshotEnd {
        crc32c: crc32c::crc32c(message),
    };
    writer.write_all(&end.encode()).await?;
    writer.flush().await?;
    writer.into_inner().shutdown().await
}

async fn dial_loop(
    peer: NodeId,
    addr: String,
    hello: Bytes,
    mut rx: mpsc::Receiver<Bytes>,
    inbound: Arc<dyn Inbound>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match TcpStream::connect(&addr).await {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                let _ = stream.set_nodelay(true);
                tracing::debug!(peer, %addr, "connected to peer");
                match pump(stream, &hello, &mut rx).await {
                    Ok(()) => return, // The node shut down: the queue closed.
                    Err(e) => {
                        tracing::debug!(peer, %addr, error = %e, "peer connection lost");
                        // Connected, then lost: said once per connection, not per failed retry.
                        inbound.connection_lost(peer);
                    }
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
    #[error("snapshot stream: {0}")]
    Snapshot(String),
}

/// A chunked message being received.
struct Assembly {
    total_bytes: u64,
    bytes: BytesMut,
    crc32c: u32,
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
    // Read what arrives instead of allocating the announced length up front.
    let mut limited = (&mut *stream).take(len as u64);
    while buf.len() < len {
        buf.reserve((len - buf.len()).min(1024 * 1024));
        if limited.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(Frame::decode(buf.split().freeze())?))
}

async fn receive(
    mut stream: TcpStream,
    config: &TransportConfig,
    directory: &PeerDirectory,
    inbound: Arc<dyn Inbound>,
) -> Result<(), ReceiveError> {
    let mut buf = BytesMut::new();
    let hello = handshake(&mut stream, &mut buf, config).await?;
    directory.set(hello.from, hello.client_urls.clone());
    let mut assembly: Option<Assembly> = None;
    while let Some(frame) = read_frame(&mut stream, &mut buf).await? {
        match frame {
            Frame::Hello(_) => return Err(ReceiveError::Handshake("second hello".into())),
            Frame::SnapshotChunk {
                total_bytes,
                offset,
                data,
            } => Assembly::add_chunk(&mut assembly, total_bytes, offset, &data)?,
            Frame::SnapshotEnd { crc32c } => {
                let message = Assembly::finish(assembly.take(), crc32c)?;
                inbound.deliver(hello.from, Frame::Engine(message));
            }
            frame => inbound.deliver(hello.from, frame),
        }
    }
    Ok(())
}

/// The first frame of a connection: a hello from a member of our cluster, addressed to us.
async fn handshake(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    config: &TransportConfig,
) -> Result<Hello, ReceiveError> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_frame(stream, buf))
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
    Ok(hello)
}

impl Assembly {
    /// Appends a chunk to the message being assembled (starting one at the first chunk).
    fn add_chunk(
        assembly: &mut Option<Assembly>,
        total_bytes: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ReceiveError> {
        let bad = |why: &str| ReceiveError::Snapshot(why.to_string());
        if total_bytes > MAX_SNAPSHOT_MESSAGE_BYTES {
            return Err(bad("larger than the snapshot limit"));
        }
        let current = assembly.get_or_insert_with(|| Assembly {
            total_bytes,
            // Grows as chunks arrive: a lying length cannot make us allocate it all.
            bytes: BytesMut::with_capacity(SNAPSHOT_CHUNK_BYTES),
            crc32c: 0,
        });
        if current.total_bytes != total_bytes || current.bytes.len() as u64 != offset {
            return Err(bad("chunk out of order"));
        }
        if offset + data.len() as u64 > total_bytes {
            return Err(bad("chunk beyond the announced length"));
        }
        current.crc32c = crc32c::crc32c_append(current.crc32c, data);
        current.bytes.extend_from_slice(data);
        Ok(())
    }

    /// The whole message, if every byte arrived and its checksum is the sender's.
    fn finish(assembly: Option<Assembly>, crc32c: u32) -> Result<Bytes, ReceiveError> {
        let Some(done) = assembly else {
            return Err(ReceiveError::Snapshot("end without chunks".into()));
        };
        if done.bytes.len() as u64 != done.total_bytes {
            return Err(ReceiveError::Snapshot("ended early".into()));
        }
        if done.crc32c != crc32c {
            return Err(ReceiveError::Snapshot(format!(
                "checksum mismatch: got {:08x}, sender says {crc32c:08x}",
                done.crc32c
            )));
        }
        Ok(done.bytes.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers what the transport reported.
    #[derive(Default)]
    struct Recorder {
        lost: Mutex<Vec<NodeId>>,
    }

    impl Inbound for Recorder {
        fn deliver(&self, _from: NodeId, _frame: Frame) {}

        fn connection_lost(&self, peer: NodeId) {
            self.lost.lock().expect("recorder lock").push(peer);
        }
    }

    impl Recorder {
        fn lost(&self) -> Vec<NodeId> {
            self.lost.lock().expect("recorder lock").clone()
        }
    }

    fn config_with_peer_2_at(addr: String) -> TransportConfig {
        TransportConfig {
            cluster_id: 7,
            local_id: 1,
            local_name: "one".into(),
            local_client_urls: "127.0.0.1:1".into(),
            peers: BTreeMap::from([(2, addr)]),
        }
    }

    /// Member 1 dials member 2 (played by the test): a snapshot stream that ends is not a lost
    /// connection; member 2's process going away is, reported once however often the dialer then
    /// fails to reconnect (its backoff retries several times in the wait below).
    #[tokio::test]
    async fn a_lost_connection_is_reported_once_and_snapshot_streams_never() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let recorder = Arc::new(Recorder::default());
        let transport = Transport::start(&config_with_peer_2_at(addr), recorder.clone());
        let (dialer_connection, _) = listener.accept().await.expect("the dialer connects");

        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done = Box::new(move |ok: bool| {
            let _ = done_tx.send(ok);
        });
        transport.send_snapshot(2, Bytes::from_static(b"snapshot bytes"), done);
        let (mut snapshot_connection, _) = listener.accept().await.expect("the snapshot stream");
        let mut received = Vec::new();
        snapshot_connection
            .read_to_end(&mut received)
            .await
            .expect("read the stream");
        drop(snapshot_connection);
        assert_eq!(done_rx.await, Ok(true), "the stream was written whole");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            recorder.lost(),
            Vec::<NodeId>::new(),
            "a snapshot stream is no hint"
        );

        drop(listener);
        drop(dialer_connection);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while recorder.lost().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(recorder.lost(), vec![2]);
        // Reconnects at 50, 100, 200 and 400 ms of backoff all fail: nothing more is reported.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(recorder.lost(), vec![2]);
    }
}
