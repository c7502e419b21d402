//! `idmesh sync …`: bundles and trust files, the air-gap path between sites.

use crate::cli::{ClientArgs, OutputFormat, SyncCommand};
use crate::client::connect;
use crate::exit::Failure;
use idmesh_proto::v1::mesh_client::MeshClient;
use idmesh_proto::v1::{BundlePiece, ExportBundleRequest, ExportTrustRequest, TrustFile};
use idmesh_state::bundle::BUNDLE_MAX_BYTES;
use serde_json::json;
use std::io::Write as _;
use std::path::Path;
use tokio_stream::StreamExt as _;

/// Size of the pieces a bundle is uploaded in.
const PIECE_BYTES: usize = 1024 * 1024;

pub async fn sync(client: ClientArgs, command: SyncCommand) -> Result<(), Failure> {
    let mut api = MeshClient::new(connect(&client).await?).max_decoding_message_size(4 * PIECE_BYTES);
    match command {
        SyncCommand::Export { out, for_site } => {
            let request = ExportBundleRequest { for_site: for_site.unwrap_or_default() };
            let mut pieces = api.export_bundle(request).await?.into_inner();
            let mut bytes = Vec::new();
            while let Some(piece) = pieces.next().await {
                bytes.extend_from_slice(&piece?.data);
            }
            let header = idmesh_state::bundle::read_header(&bytes).map_err(|e| {
                Failure::server(format!("the node sent a bundle that does not read back: {e}"))
            })?;
            write_new(&out, &bytes)?;
            report(
                client.output,
                json!({
                    "file": out.display().to_string(),
                    "bytes": bytes.len(),
                    "bundle_id": header.bundle_id,
                    "origin_site": header.origin_site,
                    "for_site": header.for_site,
                    "chunks": header.chunk_count,
                }),
            );
        }
        SyncCommand::Import { file } => {
            let bytes = read_limited(&file, BUNDLE_MAX_BYTES)?;
            let pieces: Vec<BundlePiece> =
                bytes.chunks(PIECE_BYTES).map(|p| BundlePiece { data: p.to_vec() }).collect();
            let reply = api.import_bundle(tokio_stream::iter(pieces)).await?.into_inner();
            report(
                client.output,
                json!({
                    "bundle_id": reply.bundle_id,
                    "origin_site": reply.origin_site,
                    "created_at_unix_ms": reply.created_at_unix_ms,
                    "chunks": reply.chunks,
                    "log_entries": reply.log_entries,
                }),
            );
        }
        SyncCommand::ExportTrust { out } => {
            let file = api.export_trust(ExportTrustRequest {}).await?.into_inner();
            write_new(&out, file.json.as_bytes())?;
            report(client.output, json!({ "file": out.display().to_string() }));
        }
        SyncCommand::ImportTrust { file } => {
            let bytes = read_limited(&file, idmesh_node::bundle::TRUST_FILE_MAX_BYTES)?;
            let json = String::from_utf8(bytes)
                .map_err(|_| Failure::usage(format!("{} is not a trust file (not UTF-8)", file.display())))?;
            let reply = api.import_trust(TrustFile { json }).await?.into_inner();
            report(client.output, json!({ "site": reply.site, "keys": reply.keys }));
        }
    }
    Ok(())
}

pub(crate) fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, Failure> {
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?
        .len();
    if size > max as u64 {
        return Err(Failure::usage(format!("{} is {size} bytes; at most {max}", path.display())));
    }
    std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
}

/// Writes `bytes` to a new file `path`, durably (an exported bundle may be carried away at once).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::usage(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

fn report(format: OutputFormat, value: serde_json::Value) {
    crate::output::summary(format, &value);
}
