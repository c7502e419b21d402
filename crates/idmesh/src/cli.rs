//! Command-line shape of `idmesh` (DESIGN §6).

use crate::node_cmd::NodeArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// idmesh: an identity mesh for AI agents. One binary: the node and its client.
#[derive(Debug, Parser)]
#[command(name = "idmesh", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. Every config key is also a flag; flags override the file.
    Node(Box<NodeArgs>),
    /// Run a single-node site on embedded storage, for trying idmesh out.
    Dev(DevArgs),
    /// Register, read, list and change agents.
    #[command(subcommand_required = true)]
    Agent {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Status and membership of the site.
    #[command(subcommand_required = true)]
    Site {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Tokens: obtain one as an agent, verify one offline, print the JWKS.
    #[command(subcommand_required = true)]
    Token {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Other sites as this node sees them: links, sync age, conflicts.
    #[command(subcommand_required = true)]
    Mesh {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: MeshCommand,
    },
    /// Air-gap transfer: signed bundles of changes, and trust files of sites' public keys.
    #[command(subcommand_required = true)]
    Sync {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Cedar policies: put, read, validate, delete; and the application actions they name.
    #[command(subcommand_required = true)]
    Policy {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Ask whether a token's agent may do an action on a resource (a policy decision, audited).
    Authorize {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: AuthorizeArgs,
    },
    /// Delegations: a user lets an agent act on the user's behalf (scopes, audiences, expiry).
    #[command(subcommand_required = true)]
    Delegation {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: DelegationCommand,
    },
    /// Trusted issuers of users' tokens (identity providers) and their keys.
    #[command(subcommand_required = true)]
    Issuer {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: IssuerCommand,
    },
    /// The audit trail: what each agent did, when, on behalf of whom; and its integrity.
    #[command(subcommand_required = true)]
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The site's signing keys.
    #[command(subcommand_required = true)]
    Keys {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy from a Cedar file (validated first; nothing stored if invalid).
    Put {
        /// Policy id: letters, digits, '.', '_', '-'.
        id: String,
        /// The Cedar file.
        #[arg(long)]
        file: PathBuf,
        /// Write only if the policy is at this revision (0: it must not exist yet).
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    /// Print a policy.
    Get {
        /// Policy id.
        id: String,
    },
    /// List the policies, the declared actions and the policy version.
    List,
    /// Check a Cedar file against the schema without storing it (exit 1 with Cedar's diagnostics).
    Validate {
        /// Policy id it would be stored under.
        id: String,
        /// The Cedar file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a policy.
    Delete {
        /// Policy id.
        id: String,
    },
    /// Application actions policies may name (`Action::"payments:write"`).
    #[command(subcommand_required = true)]
    Action {
        #[command(subcommand)]
        command: ActionCommand,
    },
}

/// Which records: every filter given must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuditFilterArgs {
    /// An agent (name or SPIFFE id): acting, or anywhere in the acting chain.
    #[arg(long)]
    pub agent: Option<String>,
    /// The user acted for.
    #[arg(long)]
    pub user: Option<String>,
    /// A token id (jti).
    #[arg(long)]
    pub jti: Option<String>,
    /// An action (an application action, issue_token, exchange_token) or an event type
    /// (admin_changed, sync_session, checkpoint, bundle_imported, key_rotated, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// The site whose node wrote the record.
    #[arg(long)]
    pub site: Option<String>,
    /// Only decisions with this outcome.
    #[arg(long, value_parser = ["allowed", "denied"])]
    pub decision: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Records matching the filters, oldest first.
    Query {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Written at or after (unix ms).
        #[arg(long)]
        from_unix_ms: Option<u64>,
        /// Written before (unix ms).
        #[arg(long)]
        until_unix_ms: Option<u64>,
        /// Newest first.
        #[arg(long)]
        newest_first: bool,
        /// Most records printed (pages through the node 1,000 at a time).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// What happened for a user, or what an agent and the sub-agents it passed a user's grant
    /// to did: every record in time order, with the acting chain.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["user", "agent"])))]
    Trace {
        /// The user.
        #[arg(long)]
        user: Option<String>,
        /// The agent (name or SPIFFE id).
        #[arg(long)]
        agent: Option<String>,
        /// Most records printed.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Print records as this node appends them, until interrupted.
    Follow {
        #[command(flatten)]
        filter: AuditFilterArgs,
    },
    /// Check every chain this node holds: hashes, links, gaps, checkpoint signatures. Exits
    /// non-zero and names the first bad record if one does not hold.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum DelegationCommand {
    /// Let an agent act for a user: the agent may then exchange the user's token for one on the
    /// user's behalf, within these scopes and audiences, until the delegation ends.
    Grant {
        /// The user, as the issuer names them (the `sub` of their tokens).
        #[arg(long)]
        user: String,
        /// The user's issuer (a trusted issuer: see `idmesh issuer put`).
        #[arg(long)]
        issuer: String,
        /// The agent (name or SPIFFE id).
        #[arg(long)]
        agent: String,
        /// A scope granted (repeatable; at least one).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// An audience granted (repeatable; at least one).
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// How long it lasts, in seconds (default: one day; at most 366 days).
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Print a delegation.
    Get {
        /// Its id (dlg-…).
        id: String,
    },
    /// List delegations (revoked and expired ones included).
    List {
        /// Only those to this agent (name or SPIFFE id).
        #[arg(long)]
        agent: Option<String>,
        /// Only those of this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a delegation, for good (everywhere it has arrived, and everywhere after sync).
    Revoke {
        /// Its id (dlg-…).
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Trust an issuer of users' tokens with the keys of a JWKS file (replaces what was there).
    Put {
        /// Its issuer URL (the `iss` of its tokens).
        issuer: String,
        /// The JWKS file (Ed25519 keys, each with a kid).
        #[arg(long)]
        jwks: PathBuf,
        /// What its tokens name in `aud` when meant for idmesh.
        #[arg(long)]
        audience: String,
    },
    /// List the trusted issuers.
    List,
    /// Stop trusting an issuer.
    Delete {
        /// Its issuer URL.
        issuer: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Declare application actions.
    Add {
        /// Names, e.g. payments:write.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List built-in and declared actions.
    List,
}

#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The access token (any site's).
    #[arg(long)]
    pub token: String,
    /// The action, e.g. payments:write.
    #[arg(long)]
    pub action: String,
    /// The resource, e.g. accounts/42.
    #[arg(long)]
    pub resource: String,
    /// A resource attribute KEY=VALUE (repeatable; policies read it as resource.getTag("KEY")).
    #[arg(long = "attr")]
    pub attributes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Act as an agent: sign a client assertion with its private key and request a token.
    Issue {
        /// The agent (name or SPIFFE id).
        #[arg(long)]
        agent: String,
        /// The agent's private key: a JWK file with "d" (as written by `agent register --generate-key`).
        #[arg(long)]
        key: PathBuf,
        /// A scope to request (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Who the token is for (repeatable; at least one).
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Lifetime in seconds (default: the node's, 10 minutes).
        #[arg(long)]
        ttl_secs: Option<u32>,
    },
    /// Act as an agent for a user (RFC 8693 token exchange): trade the user's token (or an idmesh
    /// token acting for the user, to act as a sub-agent) for a token on the user's behalf.
    Exchange {
        /// The agent (name or SPIFFE id).
        #[arg(long)]
        agent: String,
        /// The agent's private key: a JWK file with "d".
        #[arg(long)]
        key: PathBuf,
        /// The subject token: the user's token, or an idmesh token that acts for the user.
        #[arg(long)]
        subject_token: String,
        /// A scope to request (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Who the token is for (repeatable; at least one).
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Lifetime in seconds (default: the node's; never past the delegation's end).
        #[arg(long)]
        ttl_secs: Option<u32>,
        /// Act under this delegation (default: the newest live one that covers the request).
        #[arg(long)]
        delegation: Option<String>,
    },
    /// Revoke one token until it expires (everywhere the revocation reaches).
    Revoke {
        /// The token.
        token: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Verify a token offline against a JWKS file; prints its claims.
    Verify {
        /// Verify offline against this JWKS file (e.g. saved from `idmesh token jwks`). Without
        /// it the node at --server verifies: with its own and every trusted site's keys, and
        /// the agent's standing there (revoked or suspended agents' tokens are refused).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// The token.
        token: String,
        /// Require this audience.
        #[arg(long)]
        audience: Option<String>,
        /// Accept this issuer (repeatable; default: any issuer whose key is in the JWKS).
        #[arg(long = "issuer")]
        issuers: Vec<String>,
        /// Clock leeway in seconds (at most 300).
        #[arg(long, default_value_t = 30)]
        leeway_secs: u64,
    },
    /// Print the JWKS of the site (every key not retired), as JSON.
    Jwks {
        /// Also include the keys of every other site this node trusts (from the trust bundle).
        #[arg(long)]
        all_sites: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Per remote site: link state, last successful sync, sync age, shards pending; and this
    /// node's state hash.
    Status,
    /// Fields that sites changed concurrently, and the value the merge kept.
    Conflicts {
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Write this site's changes to FILE as a bundle signed by the site's key.
    Export {
        /// Where to write it (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Only what SITE was not known to have at its last sync with this node (default:
        /// everything).
        #[arg(long)]
        for_site: Option<String>,
    },
    /// Check a bundle from another site and apply it through this site's log. Nothing is
    /// applied unless the whole file checks out; one way only (nothing is sent back).
    Import {
        /// The bundle file.
        file: PathBuf,
    },
    /// Write this site's trust file (issuer and public keys) for a site with no link.
    ExportTrust {
        /// Where to write it (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Trust another site's keys from its trust file (needed before importing its bundles when
    /// the two sites never synced).
    ImportTrust {
        /// The trust file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The site's signing keys and their status.
    List,
    /// Publish a new signing key; it signs after a delay, the old one retires after the longest
    /// token lifetime.
    Rotate {
        /// Delay before the new key signs (default: the node's, 5 minutes).
        #[arg(long)]
        activate_after_secs: Option<u32>,
    },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the node keeps its data.
    #[arg(long, default_value = "./idmesh-data")]
    pub data_dir: PathBuf,
    /// Public gRPC address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: std::net::SocketAddr,
    /// Peer gRPC address.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub peer_listen: std::net::SocketAddr,
    /// Trust domain of the trial deployment.
    #[arg(long, default_value = "dev.idmesh.local")]
    pub trust_domain: String,
    /// Plaintext instead of TLS (no CA or certificate is made).
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document, stable for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Node to talk to (host:port of its public listener).
    #[arg(long, global = true, env = "IDMESH_SERVER", default_value = "127.0.0.1:7700")]
    pub server: String,
    /// CA certificate(s), PEM, that the node's TLS certificate must chain to (`idmesh dev`
    /// prints its path).
    #[arg(long, global = true, env = "IDMESH_CA")]
    pub ca: Option<PathBuf>,
    /// Talk plaintext, to a node started with --insecure.
    #[arg(long, global = true, env = "IDMESH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// Client certificate (PEM chain) for a node that asks for one.
    #[arg(long, global = true, env = "IDMESH_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "IDMESH_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register a new agent.
    Register {
        /// Name (e.g. billing-bot) or full SPIFFE id.
        agent: String,
        /// Who is responsible for the agent.
        #[arg(long)]
        owner: String,
        /// A label key=value (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// An Ed25519 public key as a JWK: a file path or inline JSON (repeatable).
        #[arg(long = "jwk", value_name = "FILE|JSON")]
        jwks: Vec<String>,
        /// Generate a key pair: register its public key and write the private key to FILE
        /// (mode 0600; an existing file is never overwritten).
        #[arg(long, value_name = "FILE")]
        generate_key: Option<PathBuf>,
    },
    /// Show one agent.
    Get {
        /// Name or SPIFFE id.
        agent: String,
        /// Read through the leader's read index instead of this node's local state.
        #[arg(long)]
        linearizable: bool,
    },
    /// List agents.
    List {
        /// Only agents of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only agents in this status.
        #[arg(long, value_parser = ["active", "suspended", "revoked"])]
        status: Option<String>,
        /// Only agents with this label key=value (repeatable; all must match).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Agents per page (default 100, at most 1000).
        #[arg(long)]
        page_size: Option<u32>,
        /// Continue from this token (printed after a page).
        #[arg(long)]
        page_token: Option<String>,
        /// Fetch every page.
        #[arg(long, conflicts_with = "page_token")]
        all: bool,
        /// Read through the leader's read index.
        #[arg(long)]
        linearizable: bool,
    },
    /// Change an agent's owner, labels or credentials.
    Update {
        /// Name or SPIFFE id.
        agent: String,
        /// New owner.
        #[arg(long)]
        owner: Option<String>,
        /// Replace all labels with these key=value pairs (repeatable).
        #[arg(long = "set-label", value_name = "KEY=VALUE")]
        set_labels: Vec<String>,
        /// Remove every label.
        #[arg(long, conflicts_with = "set_labels")]
        clear_labels: bool,
        /// Add a public key (JWK file path or inline JSON; repeatable).
        #[arg(long = "add-jwk", value_name = "FILE|JSON")]
        add_jwks: Vec<String>,
        /// Remove the key with this kid (repeatable).
        #[arg(long = "remove-kid", value_name = "KID")]
        remove_kids: Vec<String>,
        /// Apply only if the agent is at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    /// Refuse an agent until resumed.
    Suspend {
        agent: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Undo a suspension.
    Resume { agent: String },
    /// Refuse an agent forever.
    Revoke {
        agent: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Members, leader, term, commit and applied index, as seen by the node asked.
    Status,
    /// Add a node (learner until caught up, then voter).
    AddNode {
        /// The new node's id (unused in this site).
        #[arg(long)]
        node_id: u64,
        /// The new node's peer address, host:port.
        #[arg(long)]
        peer_addr: String,
    },
    /// Remove a node.
    RemoveNode {
        #[arg(long)]
        node_id: u64,
    },
    /// Mint a single-use token a new node joins the site with (`idmesh node --join`).
    JoinToken {
        /// How long it works: seconds, or with a unit (90s, 30m, 1h, 2d); at most a week.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Create this site's CA (offline: talks to no node): OUT/ca.pem and OUT/ca.key.
    InitCa {
        /// The deployment's trust domain, e.g. acme.example.
        #[arg(long)]
        trust_domain: String,
        /// The site the CA vouches for.
        #[arg(long)]
        site: String,
        /// Directory to write into (created; existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        valid_days: u64,
        /// Seal ca.key with this key-encryption key (`idmesh site gen-kek`).
        #[arg(long)]
        kek_file: Option<PathBuf>,
    },
    /// Write a new key-encryption key (32 random bytes, base64) to a new file, mode 0600.
    GenKek {
        /// The file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a node's key and certificate with the CA of --ca-dir (offline): OUT/node.pem,
    /// OUT/node.key, OUT/ca.pem, a node's --tls-dir.
    IssueCert {
        /// Directory with the site's ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The node's id in its site.
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        node_id: Option<u64>,
        /// Issue an admin's client certificate instead (OUT/admin.pem, OUT/admin.key): it lets
        /// its holder mint join tokens and add or remove nodes (--client-cert, --client-key).
        #[arg(long, value_name = "NAME")]
        admin: Option<String>,
        /// A DNS name or IP address clients reach the node's public listener by (repeatable)
        /// [default: localhost, 127.0.0.1].
        #[arg(long = "name")]
        names: Vec<String>,
        /// Directory to write into (created; existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid; renew it before then.
        #[arg(long, default_value_t = 90)]
        valid_days: u64,
        /// Opens a sealed ca.key and seals node.key with this key-encryption key.
        #[arg(long)]
        kek_file: Option<PathBuf>,
    },
}
