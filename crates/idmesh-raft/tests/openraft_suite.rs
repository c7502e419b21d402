//! openraft's storage test suite, run over both store adapters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idmesh_raft::{LogStore, StateMachine, TypeConfig};
use idmesh_store::{MemStore, SledOptions, SledStore, Store};
use idmesh_types::TrustDomain;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use std::sync::Arc;

fn td() -> TrustDomain {
    TrustDomain::parse_field("trust_domain", "acme.example").unwrap()
}

fn open(store: Arc<dyn Store>) -> Result<(LogStore, StateMachine), StorageError<TypeConfig>> {
    idmesh_raft::open(store, td())
        .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e))
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let (log, sm) = open(Arc::new(MemStore::new()))?;
        Ok(((), log, sm))
    }
}

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        let (log, sm) = open(Arc::new(store))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_mem_store() {
    Suite::test_all(MemBuilder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_sled_store() {
    Suite::test_all(SledBuilder).await.unwrap();
}
