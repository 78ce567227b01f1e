//! Who is in the cluster: `--initial-cluster` parsed into members with stable ids, and the
//! identity file that pins a data directory to its cluster and member across restarts.
//!
//! Member ids are the 1-based positions in `--initial-cluster` (every member is started with the
//! same list, so all agree). etcd derives 64-bit ids from a hash; small ids are chosen here because
//! the Multi-Paxos engine packs the node id into the low 16 bits of a ballot.

use std::fmt;
use std::path::Path;

use yizhi_engine::NodeId;

/// More members than any consensus group should have; also keeps ids within Paxos's 16 bits.
pub const MAX_MEMBERS: usize = 64;
const IDENTITY_FILE: &str = "member.identity";
const IDENTITY_MAGIC: &str = "yizhi-member v1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// Where peers reach this member (`http://host:port`).
    pub peer_urls: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("--initial-cluster: {0}")]
    Parse(String),
    #[error("--initial-cluster: {0}")]
    Url(UrlError),
    #[error("member name {0:?} is not in --initial-cluster")]
    UnknownName(String),
    #[error("{path}: {reason}")]
    Identity { path: String, reason: String },
}

impl ClusterSpec {
    /// Parses `name1=http://a:2380,name2=http://b:2380` (a name may repeat to list several URLs,
    /// as etcd allows). `token` (`--initial-cluster-token`) keeps two clusters with equal member
    /// lists apart.
    pub fn parse(initial_cluster: &str, token: &str) -> Result<ClusterSpec, ClusterError> {
        let mut members: Vec<Member> = Vec::new();
        for item in initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| ClusterError::Parse(format!("{item:?} is not name=url")))?;
            let (name, url) = (name.trim(), url.trim());
            if name.is_empty() || url.is_empty() {
                return Err(ClusterError::Parse(format!("{item:?} has an empty name or url")));
            }
            parse_url(url).map_err(ClusterError::Url)?;
            match members.iter_mut().find(|m| m.name == name) {
                Some(member) => member.peer_urls.push(url.to_string()),
                None => members.push(Member {
                    id: members.len() as NodeId + 1,
                    name: name.to_string(),
                    peer_urls: vec![url.to_string()],
                }),
            }
        }
        if members.is_empty() {
            return Err(ClusterError::Parse("no members".into()));
        }
        if members.len() > MAX_MEMBERS {
            return Err(ClusterError::Parse(format!(
                "{} members, at most {MAX_MEMBERS}",
                members.len()
            )));
        }
        let mut fingerprint = String::from(token);
        for m in &members {
            fingerprint.push_str(&format!("|{}={}", m.name, m.peer_urls.join(",")));
        }
        Ok(ClusterSpec {
            cluster_id: fnv1a64(fingerprint.as_bytes()),
            members,
        })
    }

    pub fn member_by_name(&self, name: &str) -> Result<&Member, ClusterError> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ClusterError::UnknownName(name.to_string()))
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }
}

/// `http://host:port` or `host:port` → `host:port` (TLS is not supported yet: `https` is refused
/// rather than silently served in the clear).
pub fn parse_url(url: &str) -> Result<String, UrlError> {
    let url_err = |problem| UrlError {
        url: url.to_string(),
        problem,
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") || url.starts_with("unix://") {
        return Err(url_err(UrlProblem::NotHttp));
    } else {
        url
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| url_err(UrlProblem::MissingPort))?;
    if host.is_empty() {
        return Err(url_err(UrlProblem::MissingHost));
    }
    port.parse::<u16>()
        .map_err(|_| url_err(UrlProblem::BadPort(port.to_string())))?;
    Ok(rest.to_string())
}

/// A URL `yizhi` cannot listen on or dial.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{url}: {problem}")]
pub struct UrlError {
    pub url: String,
    pub problem: UrlProblem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlProblem {
    #[error("only http:// URLs are supported")]
    NotHttp,
    #[error("missing port")]
    MissingPort,
    #[error("missing host")]
    MissingHost,
    #[error("bad port {0:?}")]
    BadPort(String),
}

/// Identity of a data directory: written when the member first starts, checked on every restart,
/// so a directory is never reused by another member or another cluster by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: NodeId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{IDENTITY_MAGIC}\ncluster_id={:016x}\nmember_id={:016x}\n",
            self.cluster_id, self.member_id
        )
    }
}

impl Identity {
    pub fn load(data_dir: &Path) -> Result<Option<Identity>, ClusterError> {
        let path = data_dir.join(IDENTITY_FILE);
        let err = |reason: String| ClusterError::Identity {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut lines = text.lines();
        if lines.next() != Some(IDENTITY_MAGIC) {
            return Err(err("not a yizhi member identity file".into()));
        }
        let mut field = |name: &str| -> Result<u64, ClusterError> {
            let line = lines.next().unwrap_or_default();
            let value = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| err(format!("expected {name}=, found {line:?}")))?;
            u64::from_str_radix(value, 16).map_err(|e| err(format!("{name}: {e}")))
        };
        Ok(Some(Identity {
            cluster_id: field("cluster_id")?,
            member_id: field("member_id")?,
        }))
    }

    /// Written to a temp file, fsynced and renamed, then the directory is fsynced.
    pub fn store(&self, data_dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(self.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, data_dir.join(IDENTITY_FILE))?;
        std::fs::File::open(data_dir)?.sync_all()
    }
}

/// FNV-1a: stable across builds and platforms (std's hashers are not).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_order_of_the_list_and_names_may_repeat() {
        let spec = ClusterSpec::parse("a=http://h:1,b=http://h:2,a=http://h:3", "t").expect("valid");
        assert_eq!(spec.ids(), vec![1, 2]);
        assert_eq!(
            spec.member_by_name("a").expect("a").peer_urls,
            vec!["http://h:1", "http://h:3"]
        );
        assert_eq!(spec.member(2).expect("b").name, "b");
    }

    #[test]
    fn the_token_and_the_members_decide_the_cluster_id() {
        let a = ClusterSpec::parse("a=http://h:1", "t1").expect("valid");
        let b = ClusterSpec::parse("a=http://h:1", "t2").expect("valid");
        let c = ClusterSpec::parse("a=http://h:2", "t1").expect("valid");
        assert_ne!(a.cluster_id, b.cluster_id);
        assert_ne!(a.cluster_id, c.cluster_id);
        assert_eq!(
            a.cluster_id,
            ClusterSpec::parse("a=http://h:1", "t1")
                .expect("valid")
                .cluster_id
        );
    }

    #[test]
    fn malformed_lists_are_refused_with_the_reason() {
        for bad in [
            "",
            "a",
            "a=",
            "=http://h:1",
            "a=http://h",
            "a=https://h:1",
            "a=http://h:99999",
        ] {
            assert!(ClusterSpec::parse(bad, "t").is_err(), "{bad:?} accepted");
        }
        let spec = ClusterSpec::parse("a=http://h:1", "t").expect("valid");
        assert_eq!(
            spec.member_by_name("z"),
            Err(ClusterError::UnknownName("z".into()))
        );
    }

    #[test]
    fn identity_round_trips_and_garbage_is_refused() {
        let dir = std::env::temp_dir().join(format!("yizhi-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(Identity::load(&dir).expect("absent is fine"), None);
        let id = Identity {
            cluster_id: 0xdead_beef,
            member_id: 3,
        };
        id.store(&dir).expect("store");
        assert_eq!(Identity::load(&dir).expect("load"), Some(id));
        std::fs::write(dir.join(IDENTITY_FILE), "nonsense").expect("write");
        assert!(Identity::load(&dir).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
