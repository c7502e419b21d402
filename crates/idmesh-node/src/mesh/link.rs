//! A configured link: this node keeps a sync session open with a node of another site, and
//! retries with exponential backoff and jitter while the other side is unreachable or refuses.
//! A session that opened (got past the hello) resets the backoff: a link that flaps every few
//! seconds reconnects at once each time, and every session keeps what it transferred (changes
//! are in the log before they are acknowledged to the protocol), so it still makes progress.

use super::{LinkState, session};
use crate::Node;
use idmesh_proto::peer::mesh_sync_client::MeshSyncClient;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a failed session waits for the peer to end its side.
const DRAIN_AFTER_ERROR: Duration = Duration::from_secs(1);

/// `base` scaled by a random factor in [0.5, 1.5), so links that failed together do not retry
/// together.
fn jittered(node: &Node, base: Duration) -> Duration {
    let factor = node.random_bytes::<1>().map_or(1.0, |[byte]| 0.5 + f64::from(byte) / 256.0);
    base.mul_f64(factor)
}

/// Keeps a session with `site` at `addr` until `stopped`.
pub async fn run_link(node: Node, site: String, addr: String, mut stopped: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        if *stopped.borrow() {
            return;
        }
        node.mesh().update(&site, |s| {
            s.state = LinkState::Connecting;
            s.peer_addr = addr.clone();
        });
        let opened_before = node.mesh().sessions_opened(&site);
        let outcome = tokio::select! {
            biased;
            outcome = dial(&node, &site, &addr) => outcome,
            _ = stopped.changed() => return,
        };
        match outcome {
            Ok(()) => tracing::info!(site = %site, %addr, "sync session closed"),
            Err(e) => {
                tracing::info!(site = %site, %addr, error = %e, "sync link down");
                node.mesh().update(&site, |s| {
                    s.state = LinkState::Down;
                    s.last_error = e;
                });
            }
        }
        if node.mesh().sessions_opened(&site) > opened_before {
            backoff = BACKOFF_FIRST;
        }
        let pause = jittered(&node, backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            biased;
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn dial(node: &Node, site: &str, addr: &str) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad link address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let site_name = idmesh_types::SiteName::parse_field("links", site).map_err(|e| e.to_string())?;
    let tls = crate::tls::dial_config(&node.config().security, idmesh_tls::Expect::SiteNode(site_name))
        .map_err(|e| format!("TLS: {e}"))?;
    let channel = crate::transport::connect_channel(node.transport(), &endpoint, addr, tls)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (tx, rx) = mpsc::channel(1024);
    let audit_channel = channel.clone();
    let mut client = MeshSyncClient::new(channel)
        .max_decoding_message_size(crate::peer::PEER_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(crate::peer::PEER_MESSAGE_MAX_BYTES);
    let mut inbound =
        client.exchange(ReceiverStream::new(rx)).await.map_err(|s| s.message().to_owned())?.into_inner();
    // Audit records travel beside the session, on the same connection, while it lasts.
    let result = tokio::select! {
        result = session::run(node.clone(), tx, &mut inbound, Some((site, addr)), None) => result,
        never = node.exchange_audit_over_link(audit_channel, site) => match never {},
    };
    if result.is_err() {
        // Let what this end sent (its hello, at least) reach the peer before the stream is
        // dropped, so the peer can record its own view of a refusal: wait, briefly, for the
        // peer to end its side.
        let drain = async { while inbound.next().await.is_some() {} };
        let _ = tokio::time::timeout(DRAIN_AFTER_ERROR, drain).await;
    }
    result.map_err(|e| e.to_string())
}
