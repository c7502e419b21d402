//! A client host: registers agents, asks for tokens, revokes, suspends, resumes and updates,
//! over real gRPC to the nodes of its own site, at a pace drawn from the seed. It records what
//! it was told in the ledger and the trace.

use crate::ledger::{AckedWrite, IssuedToken, Verification};
use crate::rng::SimRng;
use crate::sim_host::{ClockOffsets, SimTransport, sim_ms};
use crate::world::{PUBLIC_PORT, TRUST_DOMAIN, World, lock};
use ed25519_dalek::SigningKey;
use idmesh_node::transport::{Transport, lazy_channel};
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{
    IssueTokenRequest, RegisterAgentRequest, ResumeAgentRequest, RevokeAgentRequest, SuspendAgentRequest,
    UpdateAgentRequest, VerifyTokenRequest,
};
use idmesh_state::PublicJwk;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The deadline of every client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Most agents one client registers.
const AGENTS_MAX: usize = 40;

struct OwnAgent {
    name: String,
    key: SigningKey,
}

struct Client {
    world: Arc<World>,
    site: usize,
    rng: SimRng,
    channels: BTreeMap<String, Channel>,
    agents: Vec<OwnAgent>,
    assertions: u64,
}

/// The software of the client host of `site`.
pub async fn run_client(world: Arc<World>, site: usize) -> turmoil::Result {
    let rng = SimRng::new(world.plan.seed, &format!("client/{site}"));
    let mut client =
        Client { world, site, rng, channels: BTreeMap::new(), agents: Vec::new(), assertions: 0 };
    tokio::time::sleep(Duration::from_millis(client.world.plan.timing.chaos_from_ms)).await;
    while client.world.writes_open() {
        let pause = client.world.plan.client_pause_ms;
        tokio::time::sleep(Duration::from_millis(client.rng.range(pause / 2, pause * 3 / 2))).await;
        client.one_operation().await;
    }
    while !client.world.converged.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.verify_every_token().await;
    Ok(())
}

impl Client {
    fn name(&self) -> &str {
        &self.world.plan.sites[self.site].name
    }

    /// A channel to a random node of this client's site.
    fn channel(&mut self) -> (String, Channel) {
        let hosts = self.world.plan.sites[self.site].hosts();
        let host = self.rng.pick(&hosts).cloned().unwrap_or_default();
        let channel = self
            .channels
            .entry(host.clone())
            .or_insert_with(|| {
                let transport: Arc<dyn Transport> = Arc::new(SimTransport);
                let endpoint = Endpoint::from_static("http://node").connect_timeout(Duration::from_secs(1));
                lazy_channel(&transport, &endpoint, &format!("{host}:{PUBLIC_PORT}"))
            })
            .clone();
        (host, channel)
    }

    fn record(&self, op: &str, agent: &str, host: &str, outcome: &str) {
        self.world.trace(sim_ms(), format!("client {} {op} {agent} at {host}: {outcome}", self.name()));
    }

    async fn one_operation(&mut self) {
        if crate::carry::has_work(&self.world, self.site) {
            let (_, channel) = self.channel();
            crate::carry::export_pending(&self.world, self.site, channel.clone(), sim_ms()).await;
            crate::carry::import_pending(&self.world, self.site, channel, sim_ms()).await;
        }
        let roll = self.rng.range(0, 100);
        if self.agents.is_empty() || (roll < 30 && self.agents.len() < AGENTS_MAX) {
            self.register().await;
        } else if roll < 70 {
            self.issue().await;
        } else if roll < 80 {
            self.revoke().await;
        } else if roll < 92 {
            self.suspend_or_resume().await;
        } else {
            self.update_owner().await;
        }
    }

    async fn register(&mut self) {
        let name = format!("{}-agent-{}", self.name(), self.agents.len() + 1);
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret);
        let key = SigningKey::from_bytes(&secret);
        let (host, channel) = self.channel();
        let request = RegisterAgentRequest {
            agent: name.clone(),
            owner: format!("team-{}", self.name()),
            labels: Default::default(),
            credentials: vec![PublicJwk::of_signing_key(&key).to_json()],
        };
        let outcome = AgentRegistryClient::new(channel).register_agent(timed(request)).await;
        self.record("register", &name, &host, &code(&outcome));
        // The agent is kept even when the answer was lost: a retry may find it registered.
        self.agents.push(OwnAgent { name: name.clone(), key });
        if outcome.is_ok() {
            lock(&self.world.ledger).acked(
                sim_ms(),
                self.site,
                AckedWrite::Registered { agent: spiffe(&name) },
            );
        }
    }

    async fn issue(&mut self) {
        let index = usize::try_from(self.rng.range(0, self.agents.len() as u64)).unwrap_or(0);
        self.assertions += 1;
        let jti = format!("{}-{}", self.name(), self.assertions);
        let Some(agent) = self.agents.get(index) else { return };
        let id = spiffe(&agent.name);
        // Clients keep true time, moved only by the mesh-wide jumps.
        let clock =
            ClockOffsets { global_ms: self.world.global_clock_ms.clone(), own_ms: Default::default() };
        let now_secs = clock.wall_at(sim_ms()).0 / 1000;
        let audience = format!("https://{TRUST_DOMAIN}/sites/{}", self.name());
        let claims = serde_json::json!({"iss": id, "sub": id, "aud": audience, "iat": now_secs, "exp": now_secs + 120, "jti": jti});
        let kid = PublicJwk::of_signing_key(&agent.key).thumbprint();
        let Ok(assertion) = idmesh_token::jws::sign(&agent.key, "JWT", &kid, &claims) else { return };
        let name = agent.name.clone();
        let (host, channel) = self.channel();
        let request = IssueTokenRequest {
            client_assertion: assertion,
            audiences: vec!["payments".into()],
            ..Default::default()
        };
        let outcome = TokensClient::new(channel).issue_token(timed(request)).await;
        match &outcome {
            Ok(reply) => {
                let reply = reply.get_ref();
                self.record(
                    "issue",
                    &name,
                    &host,
                    &format!("token {} (audit {})", reply.jti, reply.audit_seq),
                );
                let partitioned = lock(&self.world.cut_sites).contains(&self.site);
                lock(&self.world.ledger).tokens.push(IssuedToken {
                    jti: reply.jti.clone(),
                    token: reply.access_token.clone(),
                    agent: id,
                    host,
                    audit_seq: reply.audit_seq,
                    at_ms: sim_ms(),
                    partitioned,
                });
            }
            Err(_) => self.record("issue", &name, &host, &code(&outcome)),
        }
    }

    /// Revokes an agent any site registered (as far as this client has heard).
    async fn revoke(&mut self) {
        let known: Vec<String> = lock(&self.world.ledger).registered.keys().cloned().collect();
        let Some(agent) = self.rng.pick(&known).cloned() else { return };
        let (host, channel) = self.channel();
        let request = RevokeAgentRequest { agent: agent.clone(), reason: "simulated compromise".into() };
        let outcome = AgentRegistryClient::new(channel).revoke_agent(timed(request)).await;
        self.record("revoke", &agent, &host, &code(&outcome));
        if outcome.is_ok() {
            lock(&self.world.ledger).acked(sim_ms(), self.site, AckedWrite::Revoked { agent });
        }
    }

    async fn suspend_or_resume(&mut self) {
        let index = usize::try_from(self.rng.range(0, self.agents.len() as u64)).unwrap_or(0);
        let Some(agent) = self.agents.get(index) else { return };
        let name = agent.name.clone();
        let suspend = self.rng.percent(50);
        let (host, channel) = self.channel();
        let mut registry = AgentRegistryClient::new(channel);
        let outcome = if suspend {
            let request = SuspendAgentRequest { agent: name.clone(), reason: "maintenance".into() };
            registry.suspend_agent(timed(request)).await
        } else {
            registry.resume_agent(timed(ResumeAgentRequest { agent: name.clone() })).await
        };
        self.record(if suspend { "suspend" } else { "resume" }, &name, &host, &code(&outcome));
    }

    /// Changes the owner of an agent any site registered: concurrent updates conflict.
    async fn update_owner(&mut self) {
        let known: Vec<String> = lock(&self.world.ledger).registered.keys().cloned().collect();
        let Some(agent) = self.rng.pick(&known).cloned() else { return };
        let owner = format!("owner-from-{}", self.name());
        let (host, channel) = self.channel();
        let request = UpdateAgentRequest { agent: agent.clone(), owner: Some(owner), ..Default::default() };
        let outcome = AgentRegistryClient::new(channel).update_agent(timed(request)).await;
        self.record("update", &agent, &host, &code(&outcome));
    }
}

impl Client {
    /// After convergence: every token any site issued, checked at a node of this site.
    async fn verify_every_token(&mut self) {
        let tokens = lock(&self.world.ledger).tokens.clone();
        for token in tokens {
            let (host, channel) = self.channel();
            let request = VerifyTokenRequest { token: token.token.clone(), audience: "payments".into() };
            let (active, reason) = match TokensClient::new(channel).verify_token(timed(request)).await {
                Ok(reply) => (reply.get_ref().active, reply.get_ref().reason.clone()),
                Err(status) => (false, format!("{:?}: {}", status.code(), status.message())),
            };
            lock(&self.world.ledger).verifications.push(Verification {
                jti: token.jti,
                issued_at_host: token.host,
                host,
                active,
                reason,
            });
        }
    }
}

fn spiffe(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/agents/{name}")
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(REQUEST_TIMEOUT);
    request
}

fn code<T>(outcome: &Result<tonic::Response<T>, tonic::Status>) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    }
}
