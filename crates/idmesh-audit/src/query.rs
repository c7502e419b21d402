//! What a record is about, for indexes and queries: the agents (every one in an acting chain),
//! the user acted for, the token, the action and the decision.

use crate::{Event, Record};
use idmesh_types::UnixMillis;

/// A term a record can be found by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    /// An agent that acted, asked, or is in the acting chain.
    Agent(String),
    /// The user acted for.
    User(String),
    /// A token id (`jti`) issued, exchanged or presented.
    Jti(String),
    /// The action: an application action for a decision, else `issue_token`, `exchange_token`,
    /// or the event's kind.
    Action(String),
}

impl Term {
    /// One byte that tells the kinds apart in index keys.
    pub fn tag(&self) -> u8 {
        match self {
            Term::Agent(_) => b'a',
            Term::User(_) => b'u',
            Term::Jti(_) => b'j',
            Term::Action(_) => b'x',
        }
    }

    /// The term's value.
    pub fn value(&self) -> &str {
        match self {
            Term::Agent(v) | Term::User(v) | Term::Jti(v) | Term::Action(v) => v,
        }
    }
}

/// What a record says about the agents, user and token concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subjects<'a> {
    /// Every agent concerned, the acting one first.
    pub agents: Vec<&'a str>,
    /// The user acted for.
    pub user: Option<&'a str>,
    /// The token.
    pub jti: Option<&'a str>,
    /// Allowed (`Some(true)`), refused (`Some(false)`), or not a decision.
    pub allowed: Option<bool>,
}

impl Record {
    /// The action this record is about.
    pub fn action(&self) -> &str {
        match &self.event {
            Event::Authorized(a) => &a.action,
            Event::TokenIssued(_) | Event::TokenRefused(_) => "issue_token",
            Event::TokenExchanged(_) | Event::ExchangeRefused(_) => "exchange_token",
            other => other.kind(),
        }
    }

    /// The agents, user, token and decision the record is about.
    pub fn subjects(&self) -> Subjects<'_> {
        let mut out = Subjects::default();
        match &self.event {
            Event::TokenIssued(t) => {
                out.agents.push(&t.agent);
                out.jti = Some(&t.jti);
                out.allowed = Some(true);
            }
            Event::TokenRefused(r) => {
                out.agents.extend(r.agent.as_deref());
                out.allowed = Some(false);
            }
            Event::Authorized(a) => {
                out.agents.extend(a.agent.as_deref());
                out.agents.extend(a.actors.iter().map(String::as_str));
                out.user = a.on_behalf_of.as_deref();
                out.jti = a.jti.as_deref();
                out.allowed = Some(a.allowed);
            }
            Event::TokenExchanged(t) => {
                out.agents.push(&t.agent);
                out.agents.extend(t.actors.iter().map(String::as_str));
                out.user = Some(&t.user);
                out.jti = Some(&t.jti);
                out.allowed = Some(true);
            }
            Event::ExchangeRefused(r) => {
                out.agents.extend(r.agent.as_deref());
                out.agents.extend(r.actors.iter().map(String::as_str));
                out.user = r.user.as_deref();
                out.allowed = Some(false);
            }
            Event::AdminChanged(c) if c.target.starts_with("spiffe://") => out.agents.push(&c.target),
            _ => {}
        }
        let mut seen = std::collections::BTreeSet::new();
        out.agents.retain(|a| seen.insert(*a));
        out
    }

    /// Every term the record is indexed under.
    pub fn terms(&self) -> Vec<Term> {
        let subjects = self.subjects();
        let mut terms: Vec<Term> = subjects.agents.iter().map(|a| Term::Agent((*a).to_owned())).collect();
        terms.extend(subjects.user.map(|u| Term::User(u.to_owned())));
        terms.extend(subjects.jti.map(|j| Term::Jti(j.to_owned())));
        terms.push(Term::Action(self.action().to_owned()));
        terms
    }
}

/// A query over records; every field set must match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// An agent concerned (acting, asking, or anywhere in the acting chain).
    pub agent: Option<String>,
    /// The user acted for.
    pub user: Option<String>,
    /// The token id.
    pub jti: Option<String>,
    /// The action ([`Record::action`]).
    pub action: Option<String>,
    /// The site that wrote the record.
    pub site: Option<String>,
    /// Written at or after.
    pub from: Option<UnixMillis>,
    /// Written before.
    pub until: Option<UnixMillis>,
    /// Decisions only: allowed (`true`) or refused (`false`).
    pub allowed: Option<bool>,
}

impl Filter {
    /// The most selective indexed term the filter names, if any.
    pub fn best_term(&self) -> Option<Term> {
        if let Some(jti) = &self.jti {
            return Some(Term::Jti(jti.clone()));
        }
        if let Some(user) = &self.user {
            return Some(Term::User(user.clone()));
        }
        if let Some(agent) = &self.agent {
            return Some(Term::Agent(agent.clone()));
        }
        self.action.as_ref().map(|a| Term::Action(a.clone()))
    }

    /// Whether `record` matches every field set.
    pub fn matches(&self, record: &Record) -> bool {
        let subjects = record.subjects();
        self.agent.as_ref().is_none_or(|a| subjects.agents.contains(&a.as_str()))
            && self.user.as_ref().is_none_or(|u| subjects.user == Some(u.as_str()))
            && self.jti.as_ref().is_none_or(|j| subjects.jti == Some(j.as_str()))
            && self.action.as_ref().is_none_or(|a| record.action() == a)
            && self.site.as_ref().is_none_or(|s| &record.origin.site == s)
            && self.from.is_none_or(|from| record.time >= from)
            && self.until.is_none_or(|until| record.time < until)
            && self.allowed.is_none_or(|allowed| subjects.allowed == Some(allowed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{AuthzDecision, RecordOrigin};

    fn decision(allowed: bool) -> Record {
        let event = Event::Authorized(AuthzDecision {
            agent: Some("spiffe://td/agents/sub".into()),
            on_behalf_of: Some("alice".into()),
            actors: vec!["spiffe://td/agents/sub".into(), "spiffe://td/agents/main".into()],
            jti: Some("tok-1".into()),
            action: "payments:write".into(),
            resource: "acct/1".into(),
            allowed,
            determining_policies: vec![],
            reason: String::new(),
            policy_version: String::new(),
        });
        Record::next(None, RecordOrigin { site: "ship".into(), node: 1 }, UnixMillis(1000), event)
    }

    #[test]
    fn a_decision_is_found_by_every_agent_of_its_chain_its_user_token_and_action() {
        let record = decision(true);
        let terms = record.terms();
        assert_eq!(
            terms,
            vec![
                Term::Agent("spiffe://td/agents/sub".into()),
                Term::Agent("spiffe://td/agents/main".into()),
                Term::User("alice".into()),
                Term::Jti("tok-1".into()),
                Term::Action("payments:write".into()),
            ]
        );
        let by_main = Filter { agent: Some("spiffe://td/agents/main".into()), ..Filter::default() };
        assert!(by_main.matches(&record));
        assert_eq!(by_main.best_term(), Some(Term::Agent("spiffe://td/agents/main".into())));
        let denied = Filter { user: Some("alice".into()), allowed: Some(false), ..Filter::default() };
        assert!(!denied.matches(&record));
        assert!(denied.matches(&decision(false)));
        let elsewhere = Filter { site: Some("port".into()), ..Filter::default() };
        assert!(!elsewhere.matches(&record));
        let window =
            Filter { from: Some(UnixMillis(1000)), until: Some(UnixMillis(1001)), ..Filter::default() };
        assert!(window.matches(&record));
        let later = Filter { from: Some(UnixMillis(1001)), ..Filter::default() };
        assert!(!later.matches(&record));
    }
}
