//! The trust bundle: every site's public signing keys, replicated like agents.
//!
//! A site publishes its own keys under the name `"@site.<site>"` in the shard that name hashes
//! to. `'@'` is not allowed in agent names, so these keys never collide with an agent's. Per key
//! id (`kid`) the entry holds the public `x`, the time it starts to sign and, once retired, the
//! time after which tokens signed by it no longer verify. Only the owning site writes its own
//! entries, so a plain last-writer-wins per field is enough; a `kid` is a thumbprint of `x`, so
//! two values of `x` under one `kid` cannot both be honest: the entry is ignored.

use super::edit::Actor;
use super::shard::{CrdtError, Shard, ShardId, doc_err, shard_of_key};
use crate::PublicJwk;
use automerge::transaction::Transactable as _;
use automerge::{ActorId, ROOT, ReadDoc as _, ScalarValue};
use idmesh_types::{SiteName, UnixMillis};
use std::collections::BTreeMap;

/// What starts the name of a site's trust entry.
pub const SITE_NAME_PREFIX: &str = "@site.";

const ISSUER: &str = "issuer";
const KEY: &str = "key";
const FROM: &str = "from";
const UNTIL: &str = "until";
const NODE: &str = "node";
/// Most node ids a site's entry lists.
pub const SITE_NODES_MAX_COUNT: usize = 1024;

/// One public signing key of a site, as other sites trust it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustedKey {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// The public key.
    pub public: PublicJwk,
    /// When it starts signing, unix ms.
    pub from: UnixMillis,
    /// After this time its tokens no longer verify (set once it is retired).
    pub until: Option<UnixMillis>,
}

impl TrustedKey {
    /// Whether tokens signed by this key verify at `now`.
    pub fn verifies_at(&self, now: UnixMillis) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// What one site published: its issuer and its keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SiteTrust {
    /// The `iss` of the site's tokens (empty until published).
    pub issuer: String,
    /// Its public keys, by kid order.
    pub keys: Vec<TrustedKey>,
    /// The ids of its nodes (every node that was ever a member), ascending: other sites take
    /// audit chains only of these. Empty in entries of older versions: any id is taken.
    #[serde(default)]
    pub nodes: Vec<u64>,
}

/// Every site's published trust, by site name (this site's own entry included once it has
/// published).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TrustBundle {
    sites: BTreeMap<String, SiteTrust>,
}

impl TrustBundle {
    /// Replaces what is known of `site`.
    pub fn set(&mut self, site: &str, trust: SiteTrust) {
        self.sites.insert(site.to_owned(), trust);
    }

    /// What `site` published, if anything.
    pub fn site(&self, site: &str) -> Option<&SiteTrust> {
        self.sites.get(site)
    }

    /// Every site with an entry.
    pub fn sites(&self) -> impl Iterator<Item = (&str, &SiteTrust)> {
        self.sites.iter().map(|(name, trust)| (name.as_str(), trust))
    }

    /// The key `kid` and the site that published it.
    pub fn key(&self, kid: &str) -> Option<(&str, &SiteTrust, &TrustedKey)> {
        self.sites.iter().find_map(|(site, trust)| {
            trust.keys.iter().find(|k| k.kid == kid).map(|k| (site.as_str(), trust, k))
        })
    }
}

/// The name a site's entries are stored under.
pub fn site_entry_name(site: &SiteName) -> String {
    format!("{SITE_NAME_PREFIX}{site}")
}

/// The site whose entry `name` is, if it is one.
pub fn site_of_entry(name: &str) -> Option<&str> {
    name.strip_prefix(SITE_NAME_PREFIX)
}

/// The shard holding the entries of `site`.
pub fn shard_of_site(site: &SiteName) -> ShardId {
    shard_of_key(&site_entry_name(site))
}

fn key_of(site: &str, field: &str, kid: &str) -> String {
    format!("{SITE_NAME_PREFIX}{site}/{field}/{kid}")
}

impl Shard {
    /// The sites with entries in this shard.
    pub fn published_sites(&self) -> Vec<String> {
        let end = format!("{}/", SITE_NAME_PREFIX.trim_end_matches('.')); // '.' + 1 = '/'
        let mut sites: Vec<String> = self
            .doc
            .map_range(ROOT, SITE_NAME_PREFIX.to_owned()..end)
            .filter_map(|item| {
                item.key
                    .strip_prefix(SITE_NAME_PREFIX)
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(s, _)| s.to_owned())
            })
            .collect();
        sites.dedup();
        sites
    }

    /// What `site` published in this shard.
    pub fn site_trust(&self, site: &str) -> SiteTrust {
        let issuer = match self.doc.get(ROOT, format!("{SITE_NAME_PREFIX}{site}/{ISSUER}")) {
            Ok(Some((value, _))) => value.into_scalar().ok().and_then(|v| match v {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            }),
            _ => None,
        };
        SiteTrust {
            issuer: issuer.unwrap_or_default(),
            keys: self.site_keys(site),
            nodes: self.site_nodes(site),
        }
    }

    /// The node ids `site` published in this shard, ascending.
    pub fn site_nodes(&self, site: &str) -> Vec<u64> {
        let prefix = format!("{SITE_NAME_PREFIX}{site}/{NODE}/");
        let end = format!("{SITE_NAME_PREFIX}{site}/{NODE}0"); // '/' + 1
        let mut nodes: Vec<u64> = self
            .doc
            .map_range(ROOT, prefix.clone()..end)
            .filter_map(|item| item.key.strip_prefix(&prefix)?.parse().ok())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The keys `site` published in this shard, by kid. Entries that do not parse are skipped.
    pub fn site_keys(&self, site: &str) -> Vec<TrustedKey> {
        let prefix = format!("{SITE_NAME_PREFIX}{site}/");
        let end = format!("{SITE_NAME_PREFIX}{site}0"); // '/' + 1
        let mut public: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut from: BTreeMap<String, u64> = BTreeMap::new();
        let mut until: BTreeMap<String, u64> = BTreeMap::new();
        for item in self.doc.map_range(ROOT, prefix.clone()..end) {
            let key = item.key.to_string();
            let value = item.value.into_value().into_scalar().ok();
            let Some((field, kid)) = key.strip_prefix(&prefix).and_then(|rest| rest.split_once('/')) else {
                continue;
            };
            let values: Vec<ScalarValue> = self
                .doc
                .get_all(ROOT, key.as_str())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(v, _)| v.into_scalar().ok())
                .collect();
            match field {
                KEY => {
                    let mut xs: Vec<String> = values
                        .iter()
                        .filter_map(|v| match v {
                            ScalarValue::Str(s) => Some(s.to_string()),
                            _ => None,
                        })
                        .collect();
                    xs.sort();
                    xs.dedup();
                    public.insert(kid.to_owned(), xs);
                }
                FROM | UNTIL => {
                    let ms = value.as_ref().and_then(ScalarValue::as_i64).and_then(|v| u64::try_from(v).ok());
                    if let Some(ms) = ms {
                        if field == FROM {
                            from.insert(kid.to_owned(), ms);
                        } else {
                            until.insert(kid.to_owned(), ms);
                        }
                    }
                }
                _ => {}
            }
        }
        public
            .into_iter()
            .filter_map(|(kid, xs)| {
                // One honest value only: the kid is the thumbprint of the key.
                let [x] = xs.as_slice() else { return None };
                let jwk = PublicJwk::from_stored_x(x)?;
                (jwk.thumbprint() == kid).then(|| TrustedKey {
                    from: UnixMillis(from.get(&kid).copied().unwrap_or(0)),
                    until: until.get(&kid).copied().map(UnixMillis),
                    kid,
                    public: jwk,
                })
            })
            .collect()
    }

    /// Records, as `actor` at `at`, what differs between what `site` published and `trust`, applies it to this shard and returns the change; `None` if nothing differs.
    /// Keys are never unpublished: a key gone from `keys` keeps its entry (its `until` bounds it).
    pub fn publish_site_keys(
        &mut self,
        actor: &Actor,
        at: UnixMillis,
        site: &SiteName,
        trust: &SiteTrust,
    ) -> Result<Option<Vec<u8>>, CrdtError> {
        let before = self.site_trust(site.as_str());
        let published = before.keys;
        let keys = &trust.keys;
        let site = site.as_str();
        self.doc.set_actor(ActorId::from(actor.0));
        if before.issuer != trust.issuer {
            self.doc
                .put(ROOT, format!("{SITE_NAME_PREFIX}{site}/{ISSUER}"), trust.issuer.as_str())
                .map_err(doc_err)?;
        }
        for node in trust.nodes.iter().filter(|n| !before.nodes.contains(n)) {
            self.doc.put(ROOT, format!("{SITE_NAME_PREFIX}{site}/{NODE}/{node}"), true).map_err(doc_err)?;
        }
        for key in keys {
            let before = published.iter().find(|p| p.kid == key.kid);
            if before.map(|b| &b.public) != Some(&key.public) {
                self.doc.put(ROOT, key_of(site, KEY, &key.kid), key.public.x()).map_err(doc_err)?;
            }
            if before.map(|b| b.from) != Some(key.from) {
                self.doc.put(ROOT, key_of(site, FROM, &key.kid), millis(key.from)).map_err(doc_err)?;
            }
            if let Some(until) = key.until
                && before.and_then(|b| b.until) != Some(until)
            {
                self.doc.put(ROOT, key_of(site, UNTIL, &key.kid), millis(until)).map_err(doc_err)?;
            }
        }
        self.commit_change(at)
    }
}

fn millis(at: UnixMillis) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::KeySecret;

    fn site(name: &str) -> SiteName {
        SiteName::parse_field("site", name).unwrap()
    }

    fn key(seed: u8, from: u64, until: Option<u64>) -> TrustedKey {
        let public = KeySecret::from_bytes([seed; 32]).public();
        TrustedKey { kid: public.thumbprint(), public, from: UnixMillis(from), until: until.map(UnixMillis) }
    }

    fn one(key: TrustedKey) -> SiteTrust {
        SiteTrust { issuer: "i".into(), keys: vec![key], nodes: Vec::new() }
    }

    #[test]
    fn published_node_ids_read_back_and_only_grow() {
        let mut shard = Shard::new();
        let actor = Actor::derive("east", 1, 1, 0);
        let mut trust = one(key(1, 0, None));
        trust.nodes = vec![3, 1];
        assert!(shard.publish_site_keys(&actor, UnixMillis(5), &site("east"), &trust).unwrap().is_some());
        assert_eq!(shard.site_trust("east").nodes, vec![1, 3]);
        assert_eq!(shard.site_keys("east").len(), 1, "node entries are not keys");
        // A node removed from the site stays known: its records are still its records.
        trust.nodes = vec![1, 12];
        assert!(shard.publish_site_keys(&actor, UnixMillis(6), &site("east"), &trust).unwrap().is_some());
        assert_eq!(shard.site_trust("east").nodes, vec![1, 3, 12]);
        assert_eq!(shard.publish_site_keys(&actor, UnixMillis(7), &site("east"), &trust).unwrap(), None);
    }

    #[test]
    fn published_keys_read_back_and_republishing_changes_nothing() {
        let mut shard = Shard::new();
        let actor = Actor::derive("east", 1, 1, 0);
        let mut keys = vec![key(1, 10, None), key(2, 20, Some(99))];
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let trust = SiteTrust { issuer: "https://acme/sites/east".into(), keys, nodes: Vec::new() };
        assert!(shard.publish_site_keys(&actor, UnixMillis(5), &site("east"), &trust).unwrap().is_some());
        assert_eq!(shard.site_trust("east"), trust);
        assert_eq!(shard.published_sites(), vec!["east".to_owned()]);
        assert_eq!(shard.site_trust("west"), SiteTrust::default());
        assert_eq!(shard.publish_site_keys(&actor, UnixMillis(6), &site("east"), &trust).unwrap(), None);
    }

    #[test]
    fn replicas_that_apply_the_change_see_the_same_keys() {
        let mut origin = Shard::new();
        let change = origin
            .publish_site_keys(
                &Actor::derive("east", 1, 1, 0),
                UnixMillis(5),
                &site("east"),
                &one(key(3, 1, None)),
            )
            .unwrap()
            .unwrap();
        let mut replica = Shard::new();
        let touched = replica.apply(&[change]).unwrap();
        assert_eq!(touched.into_iter().collect::<Vec<_>>(), vec!["@site.east".to_owned()]);
        assert_eq!(replica.site_keys("east"), origin.site_keys("east"));
    }

    #[test]
    fn a_kid_that_is_not_the_thumbprint_of_its_key_is_ignored() {
        let mut shard = Shard::new();
        let mut forged = key(4, 1, None);
        forged.public = key(5, 1, None).public;
        shard
            .publish_site_keys(&Actor::derive("east", 1, 1, 0), UnixMillis(1), &site("east"), &one(forged))
            .unwrap();
        assert!(shard.site_keys("east").is_empty());
    }

    #[test]
    fn retiring_a_key_bounds_its_verification() {
        let k = key(6, 1, Some(100));
        assert!(k.verifies_at(UnixMillis(99)));
        assert!(!k.verifies_at(UnixMillis(100)));
    }
}
