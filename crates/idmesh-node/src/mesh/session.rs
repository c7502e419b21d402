//! One sync session with a node of another site. Both ends run this same loop.
//!
//! Each end keeps an automerge sync state per shard for the session, sends what the protocol
//! asks for, and handles what it receives in batches: the changes of a batch go into this
//! site's Raft log as one `Remote` entry; once this node has applied that entry, the messages are
//! fed to their sync states (their changes are then already present) and the shards they came
//! for are marked for a reply. A peer's bad message ends the session; it never reaches the
//! state.

use crate::{Node, NodeError};
use idmesh_proto::peer::sync_frame::Body;
use idmesh_proto::peer::{ShardSync, SyncFrame, SyncHello};
use idmesh_state::crdt::{ChangeHash, SHARD_COUNT, ShardId, SyncState, decode_sync_message};
use idmesh_state::{ChangeBytes, REMOTE_CHANGES_MAX_COUNT};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// How long a session waits for a message before looking for local changes to send.
const TICK: Duration = Duration::from_millis(250);
/// Most frames handled as one batch (one Raft entry for their changes).
const BATCH_FRAMES_MAX: usize = 256;
/// Most bytes of sync messages handled as one batch (bounds the Raft entry they become).
const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol (or belongs elsewhere).
    #[error("peer refused: {0}")]
    Peer(String),
    /// The stream closed or failed.
    #[error("stream ended: {0}")]
    Stream(String),
    /// This site could not take the changes in.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Runs a session until the stream ends or fails, and audits it. `dialled` is the site and
/// address this node dialled, if it started the session: the peer must be of that site.
pub async fn run(
    node: Node,
    tx: mpsc::Sender<SyncFrame>,
    rx: &mut (impl Stream<Item = Result<SyncFrame, Status>> + Unpin),
    dialled: Option<(&str, &str)>,
    proven: Option<std::sync::Arc<idmesh_tls::PeerName>>,
) -> Result<(), SessionError> {
    // (peer site, its counters when the session opened), once the hello names it.
    let mut opened = (dialled.map(|(site, _)| site.to_owned()).unwrap_or_default(), (0, 0));
    let result = run_session(node.clone(), tx, rx, dialled, proven.as_deref(), &mut opened).await;
    let (peer_site, (received_before, sent_before)) = opened;
    let (received, sent) = counters(&node, &peer_site);
    let event = idmesh_audit::Event::SyncSession(idmesh_audit::SyncSessionEnded {
        peer_site,
        direction: if dialled.is_some() { "dialled" } else { "accepted" }.to_owned(),
        changes_received: received.saturating_sub(received_before),
        messages_sent: sent.saturating_sub(sent_before),
        outcome: match &result {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        },
    });
    if let Err(e) = node.audit().append(event).await {
        tracing::warn!(error = %e, "audit: cannot record a sync session");
    }
    result
}

async fn run_session(
    node: Node,
    tx: mpsc::Sender<SyncFrame>,
    rx: &mut (impl Stream<Item = Result<SyncFrame, Status>> + Unpin),
    dialled: Option<(&str, &str)>,
    proven: Option<&idmesh_tls::PeerName>,
    opened: &mut (String, (u64, u64)),
) -> Result<(), SessionError> {
    let config = node.config();
    let hello = SyncHello {
        trust_domain: config.trust_domain.to_string(),
        site: config.site.to_string(),
        node: config.node_id.0,
        shard_count: u32::from(SHARD_COUNT),
    };
    send(&tx, Body::Hello(hello)).await?;
    let remote = match rx.next().await {
        Some(Ok(SyncFrame { body: Some(Body::Hello(hello)) })) => hello,
        Some(Ok(_)) => return Err(SessionError::Peer("the first message must be a hello".into())),
        Some(Err(status)) => return Err(SessionError::Stream(status.message().to_owned())),
        None => return Err(SessionError::Stream("closed before hello".into())),
    };
    let refusal = if remote.trust_domain != config.trust_domain.as_str() {
        Some(format!(
            "peer is of trust domain {:?}, this node of {}",
            remote.trust_domain, config.trust_domain
        ))
    } else if remote.site == config.site.as_str() {
        Some("peer is of this site: sites sync only with other sites".to_owned())
    } else if remote.shard_count != u32::from(SHARD_COUNT) {
        Some(format!("peer has {} shards, this node {SHARD_COUNT}", remote.shard_count))
    } else if let Some((expected, addr)) = dialled.filter(|(expected, _)| *expected != remote.site) {
        Some(format!("the link to site {expected} reached {addr}, a node of site {:?}", remote.site))
    } else if let Some(p) = proven.filter(|p| p.site.as_str() != remote.site) {
        Some(format!("the hello names site {:?}, the connection's certificate names {p}", remote.site))
    } else if idmesh_types::SiteName::parse_field("site", &remote.site).is_err() {
        Some(format!("peer names an invalid site {:?}", remote.site))
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::warn!(site = %remote.site, trust_domain = %remote.trust_domain, peer_node = remote.node, %reason, "sync peer refused");
        // Shown under the site this node dialled, else under the name the peer gave.
        let shown = dialled.map_or(remote.site.as_str(), |(expected, _)| expected);
        if shown.len() <= idmesh_types::limits::SITE_NAME_MAX_BYTES && shown != config.site.as_str() {
            node.mesh().update(shown, |s| {
                s.state = super::LinkState::Down;
                s.last_error = format!("refused: {reason}");
            });
        }
        return Err(SessionError::Peer(reason));
    }
    let site = remote.site.clone();
    *opened = (site.clone(), counters(&node, &site));
    tracing::info!(site = %site, peer_node = remote.node, "sync session open");
    node.mesh().update(&site, |s| {
        s.state = super::LinkState::Connected;
        s.sessions_opened += 1;
        if let Some((_, addr)) = dialled {
            s.peer_addr = addr.to_owned();
        }
        s.last_error.clear();
    });
    let result = exchange(&node, &site, &tx, rx).await;
    node.mesh().update(&site, |s| {
        s.state = super::LinkState::Down;
        if let Err(e) = &result {
            s.last_error = e.to_string();
        }
    });
    result
}

/// (changes received from, messages sent to) `site` so far.
fn counters(node: &Node, site: &str) -> (u64, u64) {
    node.mesh()
        .sites()
        .into_iter()
        .find(|s| s.site == site)
        .map_or((0, 0), |s| (s.changes_received, s.messages_sent))
}

async fn send(tx: &mpsc::Sender<SyncFrame>, body: Body) -> Result<(), SessionError> {
    tx.send(SyncFrame { body: Some(body) })
        .await
        .map_err(|_| SessionError::Stream("the peer went away".into()))
}

async fn exchange(
    node: &Node,
    site: &str,
    tx: &mpsc::Sender<SyncFrame>,
    rx: &mut (impl Stream<Item = Result<SyncFrame, Status>> + Unpin),
) -> Result<(), SessionError> {
    let mut states: Vec<SyncState> = (0..SHARD_COUNT).map(|_| SyncState::new()).collect();
    // Per shard, the heads this end really sent the peer (see `receive`).
    let mut told: Vec<Vec<ChangeHash>> = vec![Vec::new(); usize::from(SHARD_COUNT)];
    let mut dirty: BTreeSet<u16> = (0..SHARD_COUNT).collect();
    let mut seen_applied = node.applied_index();
    let mut stopped = node.stopped();
    loop {
        let mut sent = 0u64;
        for shard in std::mem::take(&mut dirty) {
            let state = &mut states[usize::from(shard)];
            let message =
                node.shared().with_applied(ShardId(shard), |doc| doc.generate_sync_message(state))?;
            if let Some(message) = message {
                told[usize::from(shard)].clone_from(&state.last_sent_heads);
                send(tx, Body::Shard(ShardSync { shard: u32::from(shard), message: message.into() })).await?;
                sent += 1;
            }
        }
        if sent > 0 {
            node.mesh().update(site, |s| s.messages_sent += sent);
        }
        let first = tokio::select! {
            biased;
            frame = rx.next() => match frame {
                Some(Ok(frame)) => Some(frame),
                Some(Err(status)) => return Err(SessionError::Stream(status.message().to_owned())),
                None => return Ok(()),
            },
            _ = tokio::time::sleep(TICK) => None,
            _ = stopped.wait_for(|stop| *stop) => return Ok(()),
        };
        match first {
            Some(frame) => {
                let mut bytes = frame_bytes(&frame);
                let mut frames = vec![frame];
                while frames.len() < BATCH_FRAMES_MAX && bytes < BATCH_BYTES_MAX {
                    match tokio::time::timeout(Duration::from_millis(1), rx.next()).await {
                        Ok(Some(Ok(frame))) => {
                            bytes += frame_bytes(&frame);
                            frames.push(frame);
                        }
                        Ok(Some(Err(status))) => {
                            return Err(SessionError::Stream(status.message().to_owned()));
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                dirty.extend(receive(node, site, &mut states, &told, frames).await?);
            }
            None => {
                let applied = node.applied_index();
                if applied != seen_applied {
                    // Something changed here (a local write, or changes from a third site):
                    // let the protocol see whether the peer needs it.
                    seen_applied = applied;
                    dirty.extend(0..SHARD_COUNT);
                } else {
                    let pending = pending_shards(node, &mut states)?;
                    let known: Vec<Option<Vec<ChangeHash>>> =
                        states.iter().map(|s| s.their_heads.clone()).collect();
                    node.mesh().update(site, |s| {
                        s.shards_pending = pending;
                        s.known_heads = known;
                        if pending == 0 {
                            s.last_sync = Some(node.now());
                        }
                    });
                }
            }
        }
    }
}

fn frame_bytes(frame: &SyncFrame) -> usize {
    match &frame.body {
        Some(Body::Shard(shard)) => shard.message.len(),
        _ => 0,
    }
}

/// Handles a batch of frames; returns the shards to answer on.
async fn receive(
    node: &Node,
    site: &str,
    states: &mut [SyncState],
    told: &[Vec<ChangeHash>],
    frames: Vec<SyncFrame>,
) -> Result<BTreeSet<u16>, SessionError> {
    let mut messages = Vec::with_capacity(frames.len());
    let mut chunks = Vec::new();
    for frame in frames {
        let Some(Body::Shard(ShardSync { shard, message })) = frame.body else {
            return Err(SessionError::Peer("only shard messages may follow the hello".into()));
        };
        let shard = u16::try_from(shard)
            .ok()
            .filter(|s| *s < SHARD_COUNT)
            .ok_or_else(|| SessionError::Peer(format!("no shard {shard}")))?;
        let (message, message_chunks) =
            decode_sync_message(&message).map_err(|e| SessionError::Peer(format!("shard {shard}: {e}")))?;
        chunks.extend(message_chunks.into_iter().map(|c| (ShardId(shard), ChangeBytes(c))));
        messages.push((shard, message));
    }
    // Into the log, at most REMOTE_CHANGES_MAX_COUNT chunks per entry; every chunk must load.
    let mut rest = chunks;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(REMOTE_CHANGES_MAX_COUNT));
        let part = std::mem::replace(&mut rest, tail);
        let count = part.len() as u64;
        let (index, dropped) = node.propose_remote(site, part).await?;
        node.wait_applied(index).await?;
        node.mesh().update(site, |s| s.changes_received += count - u64::from(dropped));
        if dropped > 0 {
            return Err(SessionError::Peer(format!("{dropped} of {count} change chunks did not load")));
        }
    }
    let mut answer = BTreeSet::new();
    for (shard, message) in messages {
        // Its changes went through the log and are in the document already (a chunk that did
        // not load ended the session above), so feeding the whole message adds nothing to the
        // document; the protocol needs to see the changes to know what to answer.
        let state = &mut states[usize::from(shard)];
        let (before, result, after) = node.shared().with_applied(ShardId(shard), |doc| {
            let before = doc.heads();
            let result = doc.receive_sync_message(state, message);
            (before, result, doc.heads())
        })?;
        result.map_err(|e| SessionError::Peer(format!("shard {shard}: {e}")))?;
        if before != after {
            // Cannot happen while every change of the message went through the log first; if
            // it ever does, stop syncing rather than go on from a document the site's other
            // nodes do not hold.
            tracing::error!(site, shard, "a sync message changed a document outside the log");
            return Err(SessionError::Peer(format!(
                "shard {shard}: a message changed the document outside the log"
            )));
        }
        // automerge counts heads as sent when the peer announces the very heads this end has,
        // though this end never sent them; then the peer never learns that this end caught up
        // (through a third site) and keeps reporting the shard pending. Undo that: an end
        // announces its heads at least once.
        let told = &told[usize::from(shard)];
        if state.last_sent_heads != *told {
            state.last_sent_heads.clone_from(told);
        }
        answer.insert(shard);
    }
    Ok(answer)
}

/// Shards on which the peer's last known heads differ from ours (or are unknown).
fn pending_shards(node: &Node, states: &mut [SyncState]) -> Result<u32, SessionError> {
    let mut pending = 0u32;
    for (shard, state) in states.iter().enumerate() {
        let ours = node.shared().with_applied(ShardId(shard as u16), |doc| doc.heads())?;
        let theirs = state.their_heads.clone().map(|mut h| {
            h.sort();
            h
        });
        if theirs.as_ref() != Some(&ours) {
            pending += 1;
        }
    }
    Ok(pending)
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Node(NodeError::Storage { detail: e.to_string() })
    }
}
