//! A client host: registers agents, asks for tokens, revokes, suspends, resumes and updates,
//! over real gRPC to the nodes of its own site, at a pace drawn from the seed. It records what
//! it was told in the ledger and the trace.

use crate::ledger::{AckedWrite, Granted, IssuedToken, Verification};
use crate::rng::SimRng;
use crate::sim_host::{ClockOffsets, SimTransport, sim_ms};
use crate::world::{PUBLIC_PORT, TRUST_DOMAIN, World, lock};
use ed25519_dalek::SigningKey;
use idmesh_node::transport::{Transport, lazy_channel};
use idmesh_proto::v1::agent_registry_client::AgentRegistryClient;
use idmesh_proto::v1::delegations_client::DelegationsClient;
use idmesh_proto::v1::issuers_client::IssuersClient;
use idmesh_proto::v1::tokens_client::TokensClient;
use idmesh_proto::v1::{
    ExchangeTokenRequest, GrantDelegationRequest, IssueTokenRequest, IssueTokenResponse, PutIssuerRequest,
    RegisterAgentRequest, ResumeAgentRequest, RevokeAgentRequest, RevokeDelegationRequest,
    SuspendAgentRequest, UpdateAgentRequest, VerifyTokenRequest,
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
/// The identity provider of the simulated users.
const IDP: &str = "https://idp.sim.example";
const IDP_KID: &str = "idp-sim";

/// The identity provider's key (fixed: users' tokens are signed by the clients).
fn idp_key() -> SigningKey {
    SigningKey::from_bytes(&[0x1d; 32])
}

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
    issuer_trusted: bool,
}

/// The software of the client host of `site`.
pub async fn run_client(world: Arc<World>, site: usize) -> turmoil::Result {
    let rng = SimRng::new(world.plan.seed, &format!("client/{site}"));
    let mut client = Client {
        world,
        site,
        rng,
        channels: BTreeMap::new(),
        agents: Vec::new(),
        assertions: 0,
        issuer_trusted: false,
    };
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
                lazy_channel(&transport, &endpoint, &format!("{host}:{PUBLIC_PORT}"), None)
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
        if self.site == 0 && !self.issuer_trusted {
            // The first client's first act: trust the identity provider (it replicates to
            // every site; grants elsewhere are refused until it arrives).
            self.trust_issuer().await;
            return;
        }
        let roll = self.rng.range(0, 100);
        if self.agents.is_empty() || (roll < 30 && self.agents.len() < AGENTS_MAX) {
            self.register().await;
        } else if roll < 62 {
            self.issue().await;
        } else if roll < 70 {
            self.exchange().await;
        } else if roll < 76 {
            self.revoke().await;
        } else if roll < 82 {
            self.grant().await;
        } else if roll < 85 {
            self.revoke_delegation().await;
        } else if roll < 94 {
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

    /// Clients keep true time, moved only by the mesh-wide jumps: unix seconds now.
    fn now_secs(&self) -> u64 {
        let clock =
            ClockOffsets { global_ms: self.world.global_clock_ms.clone(), own_ms: Default::default() };
        clock.wall_at(sim_ms()).0 / 1000
    }

    /// A fresh client assertion of own agent `index`.
    fn assertion(&mut self, index: usize) -> Option<String> {
        self.assertions += 1;
        let jti = format!("{}-{}", self.name(), self.assertions);
        let now_secs = self.now_secs();
        let agent = self.agents.get(index)?;
        let id = spiffe(&agent.name);
        let audience = format!("https://{TRUST_DOMAIN}/sites/{}", self.name());
        let claims = serde_json::json!({"iss": id, "sub": id, "aud": audience, "iat": now_secs, "exp": now_secs + 120, "jti": jti});
        let kid = PublicJwk::of_signing_key(&agent.key).thumbprint();
        idmesh_token::jws::sign(&agent.key, "JWT", &kid, &claims).ok()
    }

    fn keep_token(&self, reply: &IssueTokenResponse, agent: String, host: String) {
        let partitioned = lock(&self.world.cut_sites).contains(&self.site);
        lock(&self.world.ledger).tokens.push(IssuedToken {
            jti: reply.jti.clone(),
            token: reply.access_token.clone(),
            agent,
            host,
            audit_seq: reply.audit_seq,
            at_ms: sim_ms(),
            partitioned,
        });
    }

    async fn issue(&mut self) {
        let index = usize::try_from(self.rng.range(0, self.agents.len() as u64)).unwrap_or(0);
        let Some(assertion) = self.assertion(index) else { return };
        let Some(agent) = self.agents.get(index) else { return };
        let id = spiffe(&agent.name);
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
                self.keep_token(reply, id, host);
            }
            Err(_) => self.record("issue", &name, &host, &code(&outcome)),
        }
    }

    async fn trust_issuer(&mut self) {
        let mut jwk: serde_json::Value =
            serde_json::from_str(&PublicJwk::of_signing_key(&idp_key()).to_json()).unwrap_or_default();
        jwk["kid"] = IDP_KID.into();
        let request = PutIssuerRequest {
            issuer: IDP.into(),
            audience: TRUST_DOMAIN.into(),
            jwks: serde_json::json!({ "keys": [jwk] }).to_string(),
        };
        let (host, channel) = self.channel();
        let outcome = IssuersClient::new(channel).put_issuer(timed(request)).await;
        self.record("trust-issuer", IDP, &host, &code(&outcome));
        self.issuer_trusted = outcome.is_ok();
    }

    /// A user of this site's client lets one of its agents act for them.
    async fn grant(&mut self) {
        let index = usize::try_from(self.rng.range(0, self.agents.len() as u64)).unwrap_or(0);
        let Some(agent) = self.agents.get(index) else { return };
        let agent = spiffe(&agent.name);
        let n = self.rng.range(0, 5);
        let user = format!("user-{}-{n}", self.name());
        let request = GrantDelegationRequest {
            user: user.clone(),
            user_issuer: IDP.into(),
            agent_id: agent.clone(),
            scopes: vec!["payments:read".into()],
            audiences: vec!["payments".into()],
            ttl_secs: 86_400 * 60,
        };
        let (host, channel) = self.channel();
        let outcome = DelegationsClient::new(channel).grant_delegation(timed(request)).await;
        match outcome.as_ref().ok().and_then(|r| r.get_ref().delegation.as_ref()) {
            Some(d) => {
                self.record("grant", &agent, &host, &format!("ok {} for {user}", d.id));
                let granted = Granted { id: d.id.clone(), agent, user, site: self.site };
                lock(&self.world.ledger).delegations.push(granted);
            }
            None => self.record("grant", &agent, &host, &code(&outcome)),
        }
    }

    /// Revokes a delegation any site granted (as far as this client has heard).
    async fn revoke_delegation(&mut self) {
        let known: Vec<String> = lock(&self.world.ledger).delegations.iter().map(|d| d.id.clone()).collect();
        let Some(id) = self.rng.pick(&known).cloned() else { return };
        let (host, channel) = self.channel();
        let request = RevokeDelegationRequest { id: id.clone(), reason: "simulated: user left".into() };
        let outcome = DelegationsClient::new(channel).revoke_delegation(timed(request)).await;
        self.record("revoke-delegation", &id, &host, &code(&outcome));
        if outcome.is_ok() {
            lock(&self.world.ledger).acked(sim_ms(), self.site, AckedWrite::DelegationRevoked { id });
        }
    }

    /// One of this client's agents exchanges its user's token for one on the user's behalf.
    async fn exchange(&mut self) {
        let mine: Vec<Granted> =
            lock(&self.world.ledger).delegations.iter().filter(|d| d.site == self.site).cloned().collect();
        let Some(granted) = self.rng.pick(&mine).cloned() else { return };
        let Some(index) = self.agents.iter().position(|a| spiffe(&a.name) == granted.agent) else { return };
        let Some(actor_token) = self.assertion(index) else { return };
        let now_secs = self.now_secs();
        let claims = serde_json::json!({"iss": IDP, "sub": granted.user, "aud": TRUST_DOMAIN, "iat": now_secs, "exp": now_secs + 300});
        let Ok(subject_token) = idmesh_token::jws::sign(&idp_key(), "JWT", IDP_KID, &claims) else { return };
        let request = ExchangeTokenRequest {
            subject_token,
            actor_token,
            scopes: vec!["payments:read".into()],
            audiences: vec!["payments".into()],
            ..Default::default()
        };
        let (host, channel) = self.channel();
        let outcome = TokensClient::new(channel).exchange_token(timed(request)).await;
        match &outcome {
            Ok(reply) => {
                let reply = reply.get_ref();
                let what = format!("token {} for {} (audit {})", reply.jti, granted.user, reply.audit_seq);
                self.record("exchange", &granted.agent, &host, &what);
                self.keep_token(reply, granted.agent.clone(), host);
            }
            Err(_) => self.record("exchange", &granted.agent, &host, &code(&outcome)),
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
