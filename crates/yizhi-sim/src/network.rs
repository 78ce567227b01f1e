//! The virtual network: one directed link per ordered pair of nodes, each with its own delay
//! distribution, loss and duplication rates. Random per-message delays reorder messages; a clogged
//! link holds its messages for a long time; a blocked link (a partition) either drops them, both
//! when sent and when they would arrive (a connection that resets), or holds them until the link
//! heals and then delivers them (an iptables DROP under an open TCP connection: the kernel keeps
//! retransmitting, and minutes-old frames arrive after the heal — the case of issue 13).

use std::collections::{BTreeMap, BTreeSet};

use yizhi_engine::{NodeId, SeededRng};

/// Messages a link holds at once; beyond this the link drops (as a full socket buffer would).
pub const MAX_IN_FLIGHT_PER_LINK: usize = 512;
/// Rates are expressed in parts per million.
pub const PPM: u64 = 1_000_000;
/// How often a message held by a partition looks again whether its link has healed.
pub const HELD_RECHECK_MS: u64 = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkParams {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub loss_ppm: u64,
    pub duplicate_ppm: u64,
    /// Chance that one message takes ten times the maximum delay (a tail-latency spike).
    pub spike_ppm: u64,
}

impl LinkParams {
    pub fn assert_valid(&self) {
        assert!(
            self.min_delay_ms <= self.max_delay_ms,
            "link delay range inverted: {self:?}"
        );
        assert!(
            self.loss_ppm <= PPM && self.duplicate_ppm <= PPM && self.spike_ppm <= PPM,
            "{self:?}"
        );
    }
}

#[derive(Clone, Debug)]
struct Link {
    params: LinkParams,
    blocked: bool,
    /// While blocked: hold messages (deliver them after the heal) instead of dropping them.
    holds: bool,
    clogged_until_ms: u64,
    clog_delay_ms: u64,
    /// Invariant: counts messages sent on this link whose delivery event is still queued.
    in_flight: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Loss,
    Partitioned,
    LinkFull,
}

/// What happens to a message that reached the end of its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    Deliver,
    /// A partition that resets connections formed while it was in flight.
    Drop,
    /// A holding partition: try again after `HELD_RECHECK_MS`.
    Held,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Dropped(DropReason),
    /// One delivery time per copy (two when duplicated).
    Deliver(Vec<u64>),
}

#[derive(Clone, Debug)]
pub struct Network {
    links: BTreeMap<(NodeId, NodeId), Link>,
}

impl Network {
    /// Every link gets its own parameters from `params_for`.
    pub fn new(nodes: &[NodeId], mut params_for: impl FnMut(NodeId, NodeId) -> LinkParams) -> Self {
        let mut links = BTreeMap::new();
        for &from in nodes {
            for &to in nodes {
                if from != to {
                    let params = params_for(from, to);
                    params.assert_valid();
                    let link = Link {
                        params,
                        blocked: false,
                        holds: false,
                        clogged_until_ms: 0,
                        clog_delay_ms: 0,
                        in_flight: 0,
                    };
                    links.insert((from, to), link);
                }
            }
        }
        Network { links }
    }

    fn link(&mut self, from: NodeId, to: NodeId) -> &mut Link {
        self.links
            .get_mut(&(from, to))
            .unwrap_or_else(|| panic!("no link {from}->{to}"))
    }

    pub fn send(&mut self, from: NodeId, to: NodeId, now_ms: u64, rng: &mut SeededRng) -> SendOutcome {
        self.send_copies(from, to, now_ms, rng, true)
    }

    /// A frame of a stream transport: delayed, lost or partitioned like any message, never
    /// duplicated.
    pub fn send_once(&mut self, from: NodeId, to: NodeId, now_ms: u64, rng: &mut SeededRng) -> SendOutcome {
        self.send_copies(from, to, now_ms, rng, false)
    }

    fn send_copies(
        &mut self,
        from: NodeId,
        to: NodeId,
        now_ms: u64,
        rng: &mut SeededRng,
        may_duplicate: bool,
    ) -> SendOutcome {
        let link = self.link(from, to);
        if link.blocked && !link.holds {
            return SendOutcome::Dropped(DropReason::Partitioned);
        }
        if link.in_flight >= MAX_IN_FLIGHT_PER_LINK {
            return SendOutcome::Dropped(DropReason::LinkFull);
        }
        let params = link.params;
        if rng.chance(params.loss_ppm, PPM) {
            return SendOutcome::Dropped(DropReason::Loss);
        }
        let copies = if rng.chance(params.duplicate_ppm, PPM) && may_duplicate {
            2
        } else {
            1
        };
        let mut times = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut delay_ms = rng.range_inclusive(params.min_delay_ms, params.max_delay_ms);
            if rng.chance(params.spike_ppm, PPM) {
                delay_ms = delay_ms.max(1) * 10;
            }
            let link = self.link(from, to);
            if link.clogged_until_ms > now_ms {
                delay_ms += link.clog_delay_ms;
            }
            link.in_flight += 1;
            times.push(now_ms + delay_ms);
        }
        SendOutcome::Deliver(times)
    }

    /// A message reached the end of its link: delivered, dropped by a partition that formed while
    /// it was in flight, or held by one (it stays in flight and arrives again later).
    pub fn arrive(&mut self, from: NodeId, to: NodeId) -> Arrival {
        let link = self.link(from, to);
        assert!(
            link.in_flight > 0,
            "arrival on {from}->{to} with nothing in flight"
        );
        if link.blocked && link.holds {
            return Arrival::Held;
        }
        link.in_flight -= 1;
        if link.blocked {
            Arrival::Drop
        } else {
            Arrival::Deliver
        }
    }

    /// Blocks exactly the given directed links and unblocks all others; blocked links hold their
    /// messages if `holds`, else drop them.
    pub fn set_blocked(&mut self, blocked: &BTreeSet<(NodeId, NodeId)>, holds: bool) {
        for (key, link) in self.links.iter_mut() {
            link.blocked = blocked.contains(key);
            link.holds = holds;
        }
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.links.get(&(from, to)).is_some_and(|l| l.blocked)
    }

    pub fn clog(&mut self, from: NodeId, to: NodeId, until_ms: u64, extra_delay_ms: u64) {
        let link = self.link(from, to);
        link.clogged_until_ms = until_ms;
        link.clog_delay_ms = extra_delay_ms;
    }

    /// Ends every partition and clog; delays, loss and duplication stay as configured.
    pub fn heal(&mut self) {
        for link in self.links.values_mut() {
            link.blocked = false;
            link.clogged_until_ms = 0;
        }
    }

    /// Removes loss, duplication and spikes too, for the liveness phase.
    pub fn make_reliable(&mut self) {
        self.heal();
        for link in self.links.values_mut() {
            link.params.loss_ppm = 0;
            link.params.duplicate_ppm = 0;
            link.params.spike_ppm = 0;
        }
    }

    pub fn in_flight_total(&self) -> usize {
        self.links.values().map(|l| l.in_flight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(loss_ppm: u64, duplicate_ppm: u64) -> LinkParams {
        LinkParams {
            min_delay_ms: 1,
            max_delay_ms: 5,
            loss_ppm,
            duplicate_ppm,
            spike_ppm: 0,
        }
    }

    /// Nodes 1 and 2 over links of `link`, and the run's random stream.
    fn two_nodes(link: LinkParams, seed: u64) -> (Network, SeededRng) {
        (Network::new(&[1, 2], |_, _| link), SeededRng::new(seed))
    }

    #[test]
    fn delays_stay_in_range_and_copies_are_counted() {
        let (mut net, mut rng) = two_nodes(params(0, PPM), 1);
        let SendOutcome::Deliver(times) = net.send(1, 2, 100, &mut rng) else {
            panic!("dropped")
        };
        assert_eq!(times.len(), 2);
        assert!(times.iter().all(|&t| (101..=105).contains(&t)));
        assert_eq!(net.arrive(1, 2), Arrival::Deliver);
        assert_eq!(net.arrive(1, 2), Arrival::Deliver);
        assert_eq!(net.in_flight_total(), 0);
    }

    #[test]
    fn stream_frames_are_never_duplicated() {
        let (mut net, mut rng) = two_nodes(params(0, PPM), 1);
        let SendOutcome::Deliver(times) = net.send_once(1, 2, 100, &mut rng) else {
            panic!("dropped")
        };
        assert_eq!(times.len(), 1);
        assert_eq!(net.in_flight_total(), 1);
    }

    /// A lossless link from node 1 to node 2 with one message on it.
    fn two_nodes_one_message_sent(seed: u64) -> (Network, SeededRng) {
        let (mut net, mut rng) = two_nodes(params(0, 0), seed);
        assert!(matches!(net.send(1, 2, 0, &mut rng), SendOutcome::Deliver(_)));
        (net, rng)
    }

    #[test]
    fn a_holding_partition_keeps_messages_until_it_heals() {
        let (mut net, mut rng) = two_nodes_one_message_sent(5);
        net.set_blocked(&BTreeSet::from([(1, 2)]), true);
        assert!(
            matches!(net.send(1, 2, 0, &mut rng), SendOutcome::Deliver(_)),
            "accepted, as a socket buffer would"
        );
        assert_eq!(net.arrive(1, 2), Arrival::Held);
        assert_eq!(net.in_flight_total(), 2, "held messages stay in flight");
        net.heal();
        assert_eq!(net.arrive(1, 2), Arrival::Deliver);
        assert_eq!(net.arrive(1, 2), Arrival::Deliver);
        assert_eq!(net.in_flight_total(), 0);
    }

    #[test]
    fn partition_drops_at_send_and_at_arrival() {
        let (mut net, mut rng) = two_nodes_one_message_sent(2);
        net.set_blocked(&BTreeSet::from([(1, 2)]), false);
        assert_eq!(
            net.send(1, 2, 0, &mut rng),
            SendOutcome::Dropped(DropReason::Partitioned)
        );
        assert!(
            matches!(net.send(2, 1, 0, &mut rng), SendOutcome::Deliver(_)),
            "one-way block"
        );
        assert_eq!(
            net.arrive(1, 2),
            Arrival::Drop,
            "in-flight message dropped by the new partition"
        );
        net.heal();
        assert!(!net.is_blocked(1, 2));
    }

    #[test]
    fn total_loss_drops_and_clog_delays() {
        let (mut net, mut rng) = two_nodes(params(PPM, 0), 3);
        assert_eq!(
            net.send(1, 2, 0, &mut rng),
            SendOutcome::Dropped(DropReason::Loss)
        );
        net.make_reliable();
        net.clog(1, 2, 1_000, 500);
        let SendOutcome::Deliver(times) = net.send(1, 2, 0, &mut rng) else {
            panic!("dropped")
        };
        assert!(times[0] >= 501);
    }

    #[test]
    fn full_link_drops() {
        let (mut net, mut rng) = two_nodes(params(0, 0), 4);
        for _ in 0..MAX_IN_FLIGHT_PER_LINK {
            assert!(matches!(net.send(1, 2, 0, &mut rng), SendOutcome::Deliver(_)));
        }
        assert_eq!(
            net.send(1, 2, 0, &mut rng),
            SendOutcome::Dropped(DropReason::LinkFull)
        );
    }
}
