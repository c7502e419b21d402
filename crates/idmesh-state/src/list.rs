//! Paged, filtered listing of agents.

use crate::{Agent, AgentStatus, Registry, validate};
use idmesh_types::limits::{LABEL_SELECTORS_MAX_COUNT, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use idmesh_types::{AgentId, InvalidField};

/// `key=value`: the agent must carry label `key` with exactly `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    /// Label key.
    pub key: String,
    /// Required value.
    pub value: String,
}

/// Which agents to list and where to start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only agents with this owner.
    pub owner: Option<String>,
    /// Only agents in this status.
    pub status: Option<AgentStatus>,
    /// Only agents that match every selector.
    pub labels: Vec<LabelSelector>,
    /// Most agents in the page; 0 means the default (100). At most 1000.
    pub page_size: usize,
    /// Start after this agent (the `next` of the previous page).
    pub after: Option<AgentId>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Matching agents, in id order.
    pub agents: Vec<Agent>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<AgentId>,
}

impl ListQuery {
    /// Checks the limits of the query and returns the effective page size.
    pub fn validate(&self) -> Result<usize, InvalidField> {
        if self.page_size > PAGE_SIZE_MAX {
            return Err(InvalidField::new(
                "page_size",
                format!("must be at most {PAGE_SIZE_MAX} (got {})", self.page_size),
            ));
        }
        if self.labels.len() > LABEL_SELECTORS_MAX_COUNT {
            return Err(InvalidField::new(
                "labels",
                format!("at most {LABEL_SELECTORS_MAX_COUNT} selectors (got {})", self.labels.len()),
            ));
        }
        for selector in &self.labels {
            validate::label_key(&selector.key)?;
        }
        Ok(if self.page_size == 0 { PAGE_SIZE_DEFAULT } else { self.page_size })
    }

    fn matches(&self, agent: &Agent) -> bool {
        self.owner.as_ref().is_none_or(|owner| &agent.owner == owner)
            && self.status.is_none_or(|status| agent.status == status)
            && self.labels.iter().all(|s| agent.labels.get(&s.key).is_some_and(|v| v == &s.value))
    }
}

impl Registry {
    /// One page of the agents matching `query`.
    pub fn list(&self, query: &ListQuery) -> Result<Page, InvalidField> {
        let page_size = query.validate()?;
        let mut agents = Vec::with_capacity(page_size.min(64));
        let mut matching = self.agents_after(query.after.as_ref()).filter(|a| query.matches(a));
        for agent in matching.by_ref().take(page_size) {
            agents.push(agent.clone());
        }
        let more = matching.next().is_some();
        let next = if more { agents.last().map(|a| a.id.clone()) } else { None };
        Ok(Page { agents, next })
    }
}
