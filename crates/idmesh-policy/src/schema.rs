//! The Cedar schema every policy is validated against.
//!
//! Principals are `Agent`s (an agent's labels are its tags: `principal.getTag("env")`) and
//! `User`s. Resources are `Audience`s (for the token actions), `Agent`s (for `delegate`) and
//! application `Resource`s (whose attributes, passed by the enforcement point, are its tags).
//! Every other site the node knows is a `Site` entity with its sync age, so a policy can say
//! `Site::"cloud".sync_age_secs > 3600`. All actions share one context:
//!
//! | attribute | meaning |
//! |---|---|
//! | `site`, `node` | where the decision is made |
//! | `now_secs` | the deciding node's clock, unix seconds |
//! | `sync_age_secs` | seconds since this node last heard from its own site's leader (0 on the leader) |
//! | `partitioned` | this node cannot reach its site's quorum, or a linked site is unreachable |
//! | `scopes`, `audiences` | requested (token actions) or held by the token (application actions) |
//! | `actors` | the acting chain, outermost first: the agent ids in the token's `act` claims |
//! | `on_behalf_of` | the user the token acts for, when it does (`context has on_behalf_of`) |

/// The actions idmesh itself decides.
pub const BUILTIN_ACTIONS: [&str; 3] = ["issue_token", "exchange_token", "delegate"];

/// The policy that is always in force: an authenticated, active agent may be issued a token.
/// Operators narrow issuance with `forbid` policies (Cedar: a forbid overrides every permit).
pub const DEFAULT_ISSUE_POLICY_ID: &str = "idmesh.default-issue";

/// Its text.
pub const DEFAULT_ISSUE_POLICY: &str = "permit (principal, action == Action::\"issue_token\", resource);";

/// The policy that lets an agent exchange a user's token for one that acts on the user's
/// behalf. It is in force always, but the exchange itself also requires a live delegation that
/// covers the request (checked before policy); operators narrow it with `forbid` policies.
/// `delegate` (an agent passing its grant on to a sub-agent) has no built-in permit: an
/// operator must write one.
pub const DEFAULT_EXCHANGE_POLICY_ID: &str = "idmesh.default-exchange";

/// Its text.
pub const DEFAULT_EXCHANGE_POLICY: &str =
    "permit (principal, action == Action::\"exchange_token\", resource) when { context has on_behalf_of };";

/// The policies always in force, by id.
pub const BUILTIN_POLICIES: [(&str, &str); 2] =
    [(DEFAULT_ISSUE_POLICY_ID, DEFAULT_ISSUE_POLICY), (DEFAULT_EXCHANGE_POLICY_ID, DEFAULT_EXCHANGE_POLICY)];

const BASE: &str = r#"
entity User = { "issuer": String };
entity Agent = { "owner": String } tags String;
entity Audience;
entity Resource tags String;
entity Site = { "synced": Bool, "sync_age_secs": Long };
type RequestContext = {
  "site": String,
  "node": Long,
  "now_secs": Long,
  "sync_age_secs": Long,
  "partitioned": Bool,
  "scopes": Set<String>,
  "audiences": Set<String>,
  "actors": Set<String>,
  "on_behalf_of"?: String,
};
action issue_token appliesTo { principal: [Agent], resource: [Audience], context: RequestContext };
action exchange_token appliesTo { principal: [Agent], resource: [Audience], context: RequestContext };
action delegate appliesTo { principal: [User, Agent], resource: [Agent], context: RequestContext };
"#;

/// The schema text for the built-in actions plus the operator's application `actions` (names
/// already validated: they contain no quote).
pub fn schema_text<'a>(actions: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = BASE.to_owned();
    for action in actions {
        text.push_str(&format!(
            "action \"{action}\" appliesTo {{ principal: [Agent, User], resource: [Resource], context: RequestContext }};\n"
        ));
    }
    text
}
