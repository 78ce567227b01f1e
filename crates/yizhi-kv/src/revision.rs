//! The global revision: etcd's `(main, sub)` pair.

/// `main` grows by one per write request (put, delete that deleted something, txn with writes,
/// lease revoke that deleted keys); `sub` numbers the individual writes inside that request.
/// Ordered lexicographically, which is the order of history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// The revision of an empty store. etcd starts at 1 so that revision 0 can mean "the latest" in
/// requests, and the first write lands at 2.
pub const INITIAL_REVISION: i64 = 1;
