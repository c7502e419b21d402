//! Merge laws of the registry documents, as properties over random histories at 2–5 sites with
//! changes delivered in random orders, partially, and duplicated:
//! - convergence: once every site holds every change, heads and agents are identical;
//! - revocation wins: an agent revoked anywhere is revoked everywhere after sync;
//! - no zombies: once a site has applied a revocation, the agent never looks unrevoked there;
//! - one site alone: the documents materialize exactly what `Registry::apply` computed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use idmesh_state::crdt::{Actor, SHARD_COUNT, Shard, shard_of};
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

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
