//! Merge laws of the registry documents, as properties over random histories at 2–5 sites with
//! changes delivered in random orders, partially, and duplicated:
//! - convergence: once every site holds every change, heads and agents are identical;
//! - revocation wins: an agent revoked anywhere is revoked everywhere after sync;
//! - no zombies: once a site has applied a revocation, the agent never looks unrevoked there;
//! - one site alone: the documents materialize exactly what `Registry::apply` computed;
//! - the sync protocol as nodes run it (chunks applied with `apply_chunks`, sessions that break
//!   and restart, duplicated messages, sites linked only in a chain) reaches the same state
//!   hash everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_state::crdt::{Actor, SHARD_COUNT, Shard, SyncState, decode_sync_message, shard_of, state_hash};
use idmesh_state::*;
use idmesh_types::{AgentId, TrustDomain, UnixMillis};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn td() -> TrustDomain {
    TrustDomain::parse_field("trust_domain", "acme.example").unwrap()
}

fn id(name: &str) -> AgentId {
    format!("spiffe://acme.example/agents/{name}").parse().unwrap()
}

fn key(seed: u8) -> PublicJwk {
    PublicJwk::of_signing_key(&SigningKey::from_bytes(&[seed; 32]))
}

/// One site: its documents, its materialized view, the changes it holds.
struct Replica {
    actor: Actor,
    shards: Vec<Shard>,
    registry: Registry,
    known: Vec<Vec<u8>>,
    revoked_seen: BTreeSet<String>,
    clock: u64,
}

impl Replica {
    fn new(n: u8) -> Self {
        Replica {
            actor: Actor::from_bytes([n + 1; 16]),
            shards: (0..SHARD_COUNT).map(|_| Shard::new()).collect(),
            registry: Registry::new(td()),
            known: Vec::new(),
            revoked_seen: BTreeSet::new(),
            clock: 1_000 * u64::from(n),
        }
    }

    fn shard(&mut self, name: &str) -> &mut Shard {
        let shard = shard_of(id(name).name());
        &mut self.shards[usize::from(shard.0)]
    }

    /// A local admin write: evaluate, record one change, update the view.
    fn local(&mut self, op: Op) {
        self.clock += 10;
        let command = Command { at: UnixMillis(self.clock), op };
        let Ok(after) = self.registry.evaluate(&command) else { return };
        let before = self.registry.get(&after.id).cloned();
        let name = after.id.name().as_str().to_owned();
        let actor = self.actor.clone();
        let change = self.shard(&name).record(&actor, command.at, before.as_ref(), &after).unwrap();
        if let Some(change) = change {
            self.known.push(change);
        }
        self.refresh(&BTreeSet::from([name]));
    }

    fn receive(&mut self, changes: &[Vec<u8>]) {
        let mut touched = BTreeSet::new();
        for change in changes {
            let shard = route(change);
            touched.extend(self.shards[shard].apply(std::slice::from_ref(change)).unwrap());
            if !self.known.contains(change) {
                self.known.push(change.clone());
            }
        }
        self.refresh(&touched);
    }

    fn refresh(&mut self, names: &BTreeSet<String>) {
        for name in names {
            let shard = &self.shards[usize::from(shard_of(id(name).name()).0)];
            if let Some(agent) = shard.agent(&td(), name) {
                if agent.status == AgentStatus::Revoked {
                    self.revoked_seen.insert(name.clone());
                }
                self.registry.put_materialized(agent);
            }
        }
        // No zombies: nothing seen revoked here ever looks otherwise.
        for name in &self.revoked_seen {
            assert_eq!(self.registry.get(&id(name)).unwrap().status, AgentStatus::Revoked, "zombie {name}");
        }
    }

    fn view(&self) -> Vec<Agent> {
        self.registry.agents().cloned().collect()
    }
}

/// Which shard a change belongs to: every change here touches one agent, named by its keys.
/// (The real system carries the shard id next to the change bytes.)
fn route(change: &[u8]) -> usize {
    for name in NAMES {
        if contains(change, format!("{name}/").as_bytes()) {
            return usize::from(shard_of(id(name).name()).0);
        }
    }
    panic!("change for an unknown agent");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];

fn arb_op() -> impl Strategy<Value = Op> {
    let name = prop::sample::select(NAMES.to_vec());
    prop_oneof![
        (name.clone(), 1u8..5).prop_map(|(n, k)| Op::RegisterAgent(RegisterAgent {
            id: id(n),
            owner: format!("owner-{k}"),
            labels: BTreeMap::from([("env".into(), format!("e{k}"))]),
            credentials: vec![key(k)],
        })),
        (name.clone(), 1u8..5, any::<bool>()).prop_map(|(n, k, remove)| {
            Op::UpdateAgent(UpdateAgent {
                id: id(n),
                owner: Some(format!("o{k}")),
                labels: Some(BTreeMap::from([("tier".into(), format!("t{k}"))])),
                add_credentials: if remove { vec![] } else { vec![key(k + 10)] },
                remove_credentials: if remove { vec![key(k).thumbprint()] } else { vec![] },
                expected_revision: None,
            })
        }),
        name.clone().prop_map(|n| Op::SuspendAgent { id: id(n), reason: "s".into() }),
        name.clone().prop_map(|n| Op::ResumeAgent { id: id(n) }),
        name.prop_map(|n| Op::RevokeAgent { id: id(n), reason: "r".into() }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Local { site: usize, op: Op },
    Deliver { from: usize, to: usize, pick: Vec<usize>, duplicate: bool },
}

fn arb_history(sites: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..sites, arb_op()).prop_map(|(site, op)| Step::Local { site, op }),
        1 => (0..sites, 0..sites, prop::collection::vec(0usize..64, 0..8), any::<bool>())
            .prop_map(|(from, to, pick, duplicate)| Step::Deliver { from, to, pick, duplicate }),
    ];
    prop::collection::vec(step, 1..150)
}

fn run(sites: usize, history: Vec<Step>) -> Vec<Replica> {
    let mut replicas: Vec<Replica> = (0..sites).map(|n| Replica::new(n as u8)).collect();
    for step in history {
        match step {
            Step::Local { site, op } => replicas[site].local(op),
            Step::Deliver { from, to, pick, duplicate } => {
                if from == to || replicas[from].known.is_empty() {
                    continue;
                }
                let known = &replicas[from].known;
                let mut batch: Vec<Vec<u8>> = pick.iter().map(|i| known[i % known.len()].clone()).collect();
                if duplicate {
                    batch.extend(batch.clone());
                }
                replicas[to].receive(&batch);
            }
        }
    }
    replicas
}

fn sync_all(replicas: &mut [Replica]) {
    let everything: Vec<Vec<u8>> = replicas.iter().flat_map(|r| r.known.clone()).collect();
    for replica in replicas.iter_mut() {
        // Newest first: dependencies arrive after the changes that need them.
        let mut reversed = everything.clone();
        reversed.reverse();
        replica.receive(&reversed);
    }
}

/// What happens to one sync message on the way.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Deliver,
    /// Lost: the session breaks; both ends start a new one (fresh sync states), as a link does.
    Break,
    Duplicate,
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![6 => Just(Fault::Deliver), 1 => Just(Fault::Break), 1 => Just(Fault::Duplicate)]
}

/// One sync session between two sites, per shard, as `mesh/session.rs` runs it: the receiver
/// applies a message's chunks first, then feeds the message to its sync state. Faults apply to
/// the first messages; then the channel is reliable until both sides are quiet.
fn sync_pair(a: &mut Replica, b: &mut Replica, faults: &[Fault]) {
    let new_states = || (0..SHARD_COUNT).map(|_| SyncState::new()).collect::<Vec<_>>();
    let (mut sa, mut sb) = (new_states(), new_states());
    let mut faults = faults.iter().copied();
    for _round in 0..200 {
        let mut moved = false;
        for shard in 0..usize::from(SHARD_COUNT) {
            for forward in [true, false] {
                let (from, to, from_state, to_state) = if forward {
                    (&mut *a, &mut *b, &mut sa[shard], &mut sb[shard])
                } else {
                    (&mut *b, &mut *a, &mut sb[shard], &mut sa[shard])
                };
                let Some(bytes) = from.shards[shard].generate_sync_message(from_state) else { continue };
                moved = true;
                let fault = faults.next().unwrap_or(Fault::Deliver);
                if let Fault::Break = fault {
                    sa = new_states();
                    sb = new_states();
                    continue;
                }
                let copies = if let Fault::Duplicate = fault { 2 } else { 1 };
                for _ in 0..copies {
                    let (message, chunks) = decode_sync_message(&bytes).unwrap();
                    let touched = to.shards[shard].apply_chunks(&chunks).unwrap();
                    to.refresh(&touched);
                    to.shards[shard].receive_sync_message(to_state, message).unwrap();
                }
            }
        }
        if !moved {
            return;
        }
    }
    panic!("sync did not go quiet within 200 rounds");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_sync_protocol_over_a_chain_of_flaky_links_converges(
        sites in 2usize..=4,
        ops in prop::collection::vec((0usize..4, arb_op()), 1..60),
        faults in prop::collection::vec(arb_fault(), 0..40),
    ) {
        let mut replicas: Vec<Replica> = (0..sites).map(|n| Replica::new(n as u8)).collect();
        for (site, op) in ops {
            replicas[site % sites].local(op);
        }
        // Sites linked in a chain only: 0 - 1 - ... - n-1. Forward then backward carries every
        // change to every site (store-and-forward).
        let pairs: Vec<usize> = (0..sites - 1).chain((0..sites - 1).rev()).collect();
        for i in pairs {
            let (left, right) = replicas.split_at_mut(i + 1);
            sync_pair(&mut left[i], &mut right[0], &faults);
        }
        let hash = state_hash(replicas[0].shards.iter_mut());
        let view = replicas[0].view();
        for replica in replicas.iter_mut().skip(1) {
            prop_assert_eq!(state_hash(replica.shards.iter_mut()), hash.clone());
            prop_assert_eq!(replica.view(), view.clone());
        }
        for agent in &view {
            if replicas.iter().any(|r| r.revoked_seen.contains(agent.id.name().as_str())) {
                prop_assert_eq!(agent.status, AgentStatus::Revoked);
            }
        }
    }

    #[test]
    fn sites_converge_and_revocation_wins(sites in 2usize..=5, history in arb_history(5)) {
        let history: Vec<Step> = history
            .into_iter()
            .map(|s| match s {
                Step::Local { site, op } => Step::Local { site: site % sites, op },
                Step::Deliver { from, to, pick, duplicate } => Step::Deliver { from: from % sites, to: to % sites, pick, duplicate },
            })
            .collect();
        let revoked_somewhere: BTreeSet<&str> = history.iter().filter_map(|s| match s {
            Step::Local { op: Op::RevokeAgent { id, .. }, .. } => Some(NAMES.iter().copied().find(|n| id.name().as_str() == *n).unwrap()),
            _ => None,
        }).collect();
        let mut replicas = run(sites, history);
        sync_all(&mut replicas);
        if std::env::var("CRDT_STATS").is_ok() {
            let changes = replicas[0].known.len();
            let agents = replicas[0].view().len();
            let conflicts: usize = NAMES.iter().map(|n| replicas[0].shard(n).conflicts(n).len()).sum();
            eprintln!("sites {sites} changes {changes} agents {agents} conflicts {conflicts} revoked {}", replicas[0].revoked_seen.len());
        }
        let first_view = replicas[0].view();
        for replica in replicas.iter_mut() {
            prop_assert_eq!(&replica.view(), &first_view);
        }
        let heads: Vec<Vec<_>> = replicas[0].shards.iter_mut().map(|s| s.heads()).collect();
        for replica in replicas.iter_mut().skip(1) {
            let other: Vec<Vec<_>> = replica.shards.iter_mut().map(|s| s.heads()).collect();
            prop_assert_eq!(&other, &heads);
        }
        // The canonical state hash every node reports agrees too.
        let hash = state_hash(replicas[0].shards.iter_mut());
        for replica in replicas.iter_mut().skip(1) {
            prop_assert_eq!(state_hash(replica.shards.iter_mut()), hash.clone());
        }
        // Revocation wins: a revocation that was applied locally (the agent existed there)
        // shows everywhere.
        for agent in &first_view {
            let name = agent.id.name().as_str();
            if replicas.iter().any(|r| r.revoked_seen.contains(name)) {
                prop_assert_eq!(agent.status, AgentStatus::Revoked);
            }
        }
        let _ = revoked_somewhere;
    }

    #[test]
    fn one_site_materializes_what_apply_computes(ops in prop::collection::vec(arb_op(), 1..40)) {
        let mut replica = Replica::new(0);
        let mut reference = Registry::new(td());
        for op in ops {
            replica.local(op.clone());
            let _ = reference.apply(&Command { at: UnixMillis(replica.clock), op });
        }
        prop_assert_eq!(replica.view(), reference.agents().cloned().collect::<Vec<_>>());
    }
}

#[test]
fn concurrent_edits_are_reported_as_conflicts() {
    let mut a = Replica::new(0);
    let mut b = Replica::new(1);
    a.local(Op::RegisterAgent(RegisterAgent {
        id: id("alpha"),
        owner: "o".into(),
        labels: BTreeMap::new(),
        credentials: vec![],
    }));
    b.receive(&a.known.clone());
    let update = |owner: &str| {
        Op::UpdateAgent(UpdateAgent {
            id: id("alpha"),
            owner: Some(owner.into()),
            labels: None,
            add_credentials: vec![],
            remove_credentials: vec![],
            expected_revision: None,
        })
    };
    a.local(update("from-a"));
    b.local(update("from-b"));
    b.local(Op::SuspendAgent { id: id("alpha"), reason: "b".into() });
    a.local(Op::SuspendAgent { id: id("alpha"), reason: "a".into() });
    a.local(Op::ResumeAgent { id: id("alpha") });
    let (ka, kb) = (a.known.clone(), b.known.clone());
    a.receive(&kb);
    b.receive(&ka);
    assert_eq!(a.view(), b.view());
    let shard = a.shard("alpha");
    let conflicts = shard.conflicts("alpha");
    let owner = conflicts.iter().find(|c| c.field == "owner").expect("owner conflict");
    assert_eq!(owner.values.len(), 2);
    // Suspend at b and resume at a were concurrent: suspended wins.
    assert_eq!(a.view()[0].status, AgentStatus::Suspended);
    let suspended = conflicts.iter().find(|c| c.field == "suspended").expect("suspended conflict");
    assert_eq!(suspended.kept, "true");
}
