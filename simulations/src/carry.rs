//! Air-gap bundles in the simulation: a fault asks the client of one site to export a bundle
//! (`Mesh.ExportBundle` at a node of its site) and hands the bytes to the client of another
//! site, which imports them (`Mesh.ImportBundle`): an operator walking a file across.

use crate::world::{World, lock};
use idmesh_proto::v1::mesh_client::MeshClient;
use idmesh_proto::v1::{BundlePiece, ExportBundleRequest};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// Attempts at an import whose node could not be reached before its outcome is recorded.
const IMPORT_ATTEMPTS_MAX: u32 = 5;

/// Largest piece streamed to an import.
const PIECE_BYTES: usize = 1024 * 1024;

/// Bundles waiting to be exported or imported.
#[derive(Debug, Default)]
pub struct Carried {
    /// Exports asked for: (from site, to site).
    pub exports: Vec<(usize, usize)>,
    /// Bundles waiting for the client of a site: (to site, from site, bytes, attempts so far).
    pub imports: Vec<(usize, usize, Vec<u8>, u32)>,
}

/// An import's outcome: the gRPC code (`Ok` when imported) and message.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The exporting site.
    pub from: String,
    /// The importing site.
    pub to: String,
    /// `Ok`, or the refusal's gRPC code.
    pub code: tonic::Code,
    /// The refusal's message.
    pub message: String,
}

/// Whether `site`'s client has a bundle to export or import.
pub fn has_work(world: &World, site: usize) -> bool {
    let carried = lock(&world.carried);
    carried.exports.iter().any(|(from, _)| *from == site)
        || carried.imports.iter().any(|(to, _, _, _)| *to == site)
}

/// Exports asked of `site`'s client, run now over `channel`.
pub async fn export_pending(world: &World, site: usize, channel: Channel, at_ms: u64) {
    let asked: Vec<(usize, usize)> = {
        let mut carried = lock(&world.carried);
        let (mine, rest) = carried.exports.drain(..).partition(|(from, _)| *from == site);
        carried.exports = rest;
        mine
    };
    for (from, to) in asked {
        let names = (&world.plan.sites[from].name, &world.plan.sites[to].name);
        let mut api = MeshClient::new(channel.clone());
        let bytes = match api.export_bundle(ExportBundleRequest::default()).await {
            Ok(reply) => {
                let mut stream = reply.into_inner();
                let mut bytes = Vec::new();
                let mut failed = None;
                while let Some(piece) = stream.next().await {
                    match piece {
                        Ok(piece) => bytes.extend_from_slice(&piece.data),
                        Err(status) => failed = Some(status.code()),
                    }
                }
                failed.map_or(Ok(bytes), Err)
            }
            Err(status) => Err(status.code()),
        };
        match bytes {
            Ok(bytes) => {
                world.trace(
                    at_ms,
                    format!("bundle {} → {}: exported {} bytes", names.0, names.1, bytes.len()),
                );
                lock(&world.carried).imports.push((to, from, bytes, 0));
            }
            Err(code) => {
                world.trace(at_ms, format!("bundle {} → {}: export refused {code:?}", names.0, names.1))
            }
        }
    }
}

/// Bundles carried to `site`, imported now over `channel`.
pub async fn import_pending(world: &World, site: usize, channel: Channel, at_ms: u64) {
    let arrived: Vec<(usize, usize, Vec<u8>, u32)> = {
        let mut carried = lock(&world.carried);
        let (mine, rest) = carried.imports.drain(..).partition(|(to, _, _, _)| *to == site);
        carried.imports = rest;
        mine
    };
    for (to, from, bytes, attempts) in arrived {
        let pieces: Vec<BundlePiece> =
            bytes.chunks(PIECE_BYTES).map(|p| BundlePiece { data: p.to_vec() }).collect();
        let outcome = MeshClient::new(channel.clone()).import_bundle(tokio_stream::iter(pieces)).await;
        let (code, message) = match outcome {
            Ok(reply) => (tonic::Code::Ok, format!("{} log entries", reply.get_ref().log_entries)),
            Err(status) => (status.code(), status.message().to_owned()),
        };
        let names = (world.plan.sites[from].name.clone(), world.plan.sites[to].name.clone());
        world.trace(at_ms, format!("bundle {} → {}: import {code:?} ({message})", names.0, names.1));
        // No node judged it (down, unreachable, no leader yet): the operator tries again.
        if unreached(code, &message) && attempts + 1 < IMPORT_ATTEMPTS_MAX {
            lock(&world.carried).imports.push((to, from, bytes, attempts + 1));
            continue;
        }
        let (from, to) = names;
        lock(&world.ledger).imports.push(ImportOutcome { from, to, code, message });
    }
}

/// Whether an import failed before any node judged the bundle.
pub fn unreached(code: tonic::Code, message: &str) -> bool {
    use tonic::Code;
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
        || (code == Code::Unknown && message.contains("transport error"))
}
