//! Who the members of a cluster are: etcd's 64-bit member ids, names, peer URLs, learners, and the
//! small engine node id each member votes under (docs/design-membership.md).
//!
//! Two identities, because Multi-Paxos ballots hold the node in 16 bits (`round << 16 | node`)
//! while etcd's member ids are 64-bit hashes. The table allocates node ids from a counter and never
//! reuses one: a removed member's old messages must never count for a newcomer.
//!
//! The table changes only by applying committed log entries, so every member holds the same one;
//! the checks here are what the leader runs before it proposes a change, with etcd's errors.

use std::collections::{BTreeMap, BTreeSet};

use sha1::{Digest, Sha1};
use yizhi_engine::{ConfChange, ConfChangeKind, NodeId};

use crate::failure::StatusCode;

pub type MemberId = u64;

/// etcd 3.5 allows one learner at a time (`maxLearners`).
pub const LEARNERS_MAX: usize = 1;
/// Members at most, learners included (the engines' bound on one configuration).
pub const MEMBERS_MAX: usize = yizhi_engine::conf_change::MEMBERS_MAX;
/// Removed ids remembered (etcd keeps them all; a bound keeps the table's size finite). Past it
/// the oldest are forgotten first; a forgotten id can only come back by a 64-bit hash collision.
pub const REMOVED_MAX: usize = 4_096;

/// etcd's member id: the first 8 bytes (big-endian) of SHA-1 over the sorted peer URLs joined
/// without separator, the cluster token, and — for a member added to a running cluster — the
/// Unix seconds of the request, in decimal.
pub fn member_id(peer_urls: &[String], cluster_token: &str, added_at_unix_secs: Option<u64>) -> MemberId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for url in urls {
        hasher.update(url.as_bytes());
    }
    hasher.update(cluster_token.as_bytes());
    if let Some(secs) = added_at_unix_secs {
        hasher.update(secs.to_string().as_bytes());
    }
    first_8_bytes(&hasher.finalize())
}

/// etcd's cluster id: the first 8 bytes (big-endian) of SHA-1 over the initial members' ids in
/// ascending order, 8 big-endian bytes each.
pub fn cluster_id(member_ids: impl IntoIterator<Item = MemberId>) -> u64 {
    let sorted: BTreeSet<MemberId> = member_ids.into_iter().collect();
    let mut hasher = Sha1::new();
    for id in sorted {
        hasher.update(id.to_be_bytes());
    }
    first_8_bytes(&hasher.finalize())
}

fn first_8_bytes(digest: &[u8]) -> u64 {
    let bytes: [u8; 8] = digest[..8].try_into().expect("SHA-1 has 20 bytes");
    u64::from_be_bytes(bytes)
}

/// Why a membership request is refused, with etcd's texts (api/v3rpc/rpctypes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("etcdserver: member ID already exist")]
    IdExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    /// Unknown or removed (etcd answers both alike).
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// Yizhi's own bound ([`MEMBERS_MAX`]), reported as etcd would report a full cluster.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    TooManyMembers,
}

impl MemberError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            MemberError::BadUrls => StatusCode::InvalidArgument,
            MemberError::NotFound => StatusCode::NotFound,
            MemberError::IdExists
            | MemberError::PeerUrlExists
            | MemberError::NotLearner
            | MemberError::TooManyLearners
            | MemberError::TooManyMembers => StatusCode::FailedPrecondition,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
    /// What the engines count this member as; allocated once, never reused.
    pub node: NodeId,
}

/// A change of the member table, as a committed log entry carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Add(Member),
    Remove { id: MemberId },
    UpdatePeerUrls { id: MemberId, peer_urls: Vec<String> },
    Promote { id: MemberId },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    members: BTreeMap<MemberId, Member>,
    /// Removed ids, oldest first; never admitted again.
    removed: Vec<MemberId>,
    next_node: NodeId,
}

impl MemberTable {
    /// The members of `--initial-cluster`, each `(name, peer URLs)`, with etcd's ids. Node ids
    /// follow the list's order from 1, as before member ids were hashes, so that existing data
    /// directories keep their engines' ids.
    pub fn bootstrap(initial: &[(String, Vec<String>)], cluster_token: &str) -> Result<Self, MemberError> {
        let mut table = MemberTable {
            next_node: 1,
            ..MemberTable::default()
        };
        for (name, peer_urls) in initial {
            let id = member_id(peer_urls, cluster_token, None);
            let member = table.new_member(id, name.clone(), peer_urls.clone(), false)?;
            table.apply(&MemberChange::Add(member));
        }
        Ok(table)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn get(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn is_removed(&self, id: MemberId) -> bool {
        self.removed.contains(&id)
    }

    /// A member to add, checked against the table (etcd's `ValidateConfigurationChange`), with the
    /// next node id. Nothing changes until the entry carrying it is applied.
    pub fn new_member(
        &self,
        id: MemberId,
        name: String,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Member, MemberError> {
        self.check_new(id, &peer_urls, is_learner)?;
        Ok(Member {
            id,
            name,
            peer_urls,
            is_learner,
            node: self.next_node,
        })
    }

    fn check_new(&self, id: MemberId, peer_urls: &[String], is_learner: bool) -> Result<(), MemberError> {
        if peer_urls.is_empty() || peer_urls.iter().any(|url| !is_peer_url(url)) {
            return Err(MemberError::BadUrls);
        }
        if self.members.contains_key(&id) || self.is_removed(id) {
            return Err(MemberError::IdExists);
        }
        self.check_urls_unused(peer_urls, None)?;
        if self.members.len() >= MEMBERS_MAX {
            return Err(MemberError::TooManyMembers);
        }
        if is_learner && self.members.values().filter(|m| m.is_learner).count() >= LEARNERS_MAX {
            return Err(MemberError::TooManyLearners);
        }
        Ok(())
    }

    /// Checks `change` against the table and says what the engines must change with it (None for
    /// a change of peer URLs, which moves no vote).
    pub fn check(&self, change: &MemberChange) -> Result<Option<ConfChange>, MemberError> {
        match change {
            MemberChange::Add(member) => {
                self.check_new(member.id, &member.peer_urls, member.is_learner)?;
                assert!(
                    member.node >= self.next_node,
                    "node id {} reused (next {})",
                    member.node,
                    self.next_node
                );
                let kind = if member.is_learner {
                    ConfChangeKind::AddLearner
                } else {
                    ConfChangeKind::AddVoter
                };
                Ok(Some(ConfChange::new(kind, member.node)))
            }
            MemberChange::Remove { id } => {
                let member = self.find(*id)?;
                Ok(Some(ConfChange::new(ConfChangeKind::Remove, member.node)))
            }
            MemberChange::UpdatePeerUrls { id, peer_urls } => {
                self.find(*id)?;
                if peer_urls.is_empty() || peer_urls.iter().any(|url| !is_peer_url(url)) {
                    return Err(MemberError::BadUrls);
                }
                self.check_urls_unused(peer_urls, Some(*id))?;
                Ok(None)
            }
            MemberChange::Promote { id } => {
                let member = self.find(*id)?;
                if !member.is_learner {
                    return Err(MemberError::NotLearner);
                }
                Ok(Some(ConfChange::new(ConfChangeKind::PromoteLearner, member.node)))
            }
        }
    }

    /// Applies a committed change. It was checked when proposed; applying it again is a bug.
    pub fn apply(&mut self, change: &MemberChange) {
        self.check(change).expect("a committed member change is valid");
        match change {
            MemberChange::Add(member) => {
                self.next_node = member.node + 1;
                self.members.insert(member.id, member.clone());
            }
            MemberChange::Remove { id } => {
                self.members.remove(id);
                if self.removed.len() >= REMOVED_MAX {
                    self.removed.remove(0);
                }
                self.removed.push(*id);
            }
            MemberChange::UpdatePeerUrls { id, peer_urls } => {
                self.members.get_mut(id).expect("checked").peer_urls = peer_urls.clone();
            }
            MemberChange::Promote { id } => {
                self.members.get_mut(id).expect("checked").is_learner = false;
            }
        }
    }

    fn find(&self, id: MemberId) -> Result<&Member, MemberError> {
        self.members.get(&id).ok_or(MemberError::NotFound)
    }

    fn check_urls_unused(&self, peer_urls: &[String], except: Option<MemberId>) -> Result<(), MemberError> {
        let taken = self
            .members
            .values()
            .filter(|m| Some(m.id) != except)
            .flat_map(|m| m.peer_urls.iter());
        let wanted: BTreeSet<&String> = peer_urls.iter().collect();
        for url in taken {
            if wanted.contains(url) {
                return Err(MemberError::PeerUrlExists);
            }
        }
        Ok(())
    }
}

/// etcd accepts `http://` and `https://` peer URLs with a host and a port, and no path.
fn is_peer_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|port| port > 0)
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;
