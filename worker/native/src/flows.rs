//! The flow table, the sans-IO core of UDP forwarding (time passed in): flow ids <-> keys
//! with idle expiry and a bound on live flows. The receiver keys flows by client address
//! (ids chosen here, from 1); the worker records the ids the receiver chose.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
pub const MAX_FLOWS: usize = 4096;

/// How long a flow may idle, how often idle flows are swept, how many may be live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub sweep_interval: Duration,
    pub max_flows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: IDLE_TIMEOUT,
            sweep_interval: SWEEP_INTERVAL,
            max_flows: MAX_FLOWS,
        }
    }
}

/// Flow ids <-> keys (a client address, or the flow itself), with idle expiry.
#[derive(Debug)]
pub struct FlowTable<K> {
    idle_timeout: Duration,
    max_flows: usize,
    ids: HashMap<K, u32>,
    keys: HashMap<u32, (K, Instant)>,
    next_id: u32,
}

impl<K: Hash + Eq + Clone> FlowTable<K> {
    pub fn new(idle_timeout: Duration, max_flows: usize) -> Self {
        Self {
            idle_timeout,
            max_flows,
            ids: HashMap::new(),
            keys: HashMap::new(),
            next_id: 1,
        }
    }

    /// The flow of `key`, created if new; `None` when the table is full.
    pub fn flow_for(&mut self, key: &K, now: Instant) -> Option<u32> {
        if let Some(&id) = self.ids.get(key) {
            self.keys.get_mut(&id).expect("both maps agree").1 = now;
            return Some(id);
        }
        if self.ids.len() >= self.max_flows {
            return None;
        }
        let mut id = self.next_id;
        while self.keys.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        self.next_id = id.wrapping_add(1).max(1);
        self.ids.insert(key.clone(), id);
        self.keys.insert(id, (key.clone(), now));
        Some(id)
    }

    /// Records a flow whose id the peer chose (replacing earlier mappings of either side).
    pub fn add(&mut self, flow_id: u32, key: K, now: Instant) {
        if let Some((old_key, _)) = self.keys.remove(&flow_id) {
            self.ids.remove(&old_key);
        }
        if let Some(old_id) = self.ids.remove(&key) {
            self.keys.remove(&old_id);
        }
        self.ids.insert(key.clone(), flow_id);
        self.keys.insert(flow_id, (key, now));
    }

    /// The key of a flow; with `now`, the flow counts as active.
    pub fn key_of(&mut self, flow_id: u32, now: Option<Instant>) -> Option<&K> {
        let entry = self.keys.get_mut(&flow_id)?;
        if let Some(now) = now {
            entry.1 = now;
        }
        Some(&entry.0)
    }

    /// Removes and returns the flows idle longer than the timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, K)> {
        let gone: Vec<u32> = self
            .keys
            .iter()
            .filter(|(_, (_, seen))| now.saturating_duration_since(*seen) > self.idle_timeout)
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter()
            .map(|id| {
                let (key, _) = self.keys.remove(&id).expect("listed above");
                self.ids.remove(&key);
                (id, key)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl<K: Hash + Eq + Clone> FlowTable<K> {
    pub fn with_limits(limits: &Limits) -> Self {
        Self::new(limits.idle_timeout, limits.max_flows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_start_at_one_and_are_stable() {
        let t0 = Instant::now();
        let mut t: FlowTable<&str> = FlowTable::new(IDLE_TIMEOUT, 2);
        assert_eq!(t.flow_for(&"a", t0), Some(1));
        assert_eq!(t.flow_for(&"b", t0), Some(2));
        assert_eq!(t.flow_for(&"a", t0), Some(1));
        assert_eq!(t.flow_for(&"c", t0), None, "full");
        assert_eq!(t.key_of(2, None), Some(&"b"));
    }

    #[test]
    fn idle_flows_expire_and_activity_keeps_them() {
        let t0 = Instant::now();
        let mut t: FlowTable<&str> = FlowTable::new(Duration::from_secs(120), 10);
        t.flow_for(&"a", t0);
        t.flow_for(&"b", t0);
        t.key_of(2, Some(t0 + Duration::from_secs(100)));
        let gone = t.expire(t0 + Duration::from_secs(121));
        assert_eq!(gone, vec![(1, "a")]);
        assert_eq!(t.len(), 1);
        assert!(t.expire(t0 + Duration::from_secs(219)).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(221)).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn add_replaces_either_side() {
        let t0 = Instant::now();
        let mut t: FlowTable<&str> = FlowTable::new(IDLE_TIMEOUT, 10);
        t.add(5, "x", t0);
        t.add(5, "y", t0);
        assert_eq!(t.key_of(5, None), Some(&"y"));
        assert_eq!(t.len(), 1);
        t.add(6, "y", t0);
        assert_eq!(t.key_of(5, None), None);
        assert_eq!(t.len(), 1);
    }

    // ---- the receiver's table: one flow per client address --------------------------

    fn client(i: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 40000 + i))
    }

    #[test]
    fn receiver_gives_each_client_address_its_own_stable_flow() {
        let t0 = Instant::now();
        let mut t = FlowTable::with_limits(&Limits::default());
        let ids: Vec<u32> = (0..100)
            .map(|i| t.flow_for(&client(i), t0).unwrap())
            .collect();
        assert_eq!(ids, (1..=100).collect::<Vec<u32>>());
        // The same address again (a later datagram) keeps its flow; replies find it.
        assert_eq!(t.flow_for(&client(42), t0), Some(43));
        assert_eq!(t.key_of(43, None), Some(&client(42)));
        // Another port of the same host is another client.
        let other = std::net::SocketAddr::from(([127, 0, 0, 1], 50000));
        assert_eq!(t.flow_for(&other, t0), Some(101));
        assert_eq!(t.len(), 101);
    }

    #[test]
    fn receiver_table_full_refuses_new_clients_but_serves_known_ones() {
        let t0 = Instant::now();
        let limits = Limits {
            max_flows: 3,
            ..Limits::default()
        };
        let mut t = FlowTable::with_limits(&limits);
        for i in 0..3 {
            assert!(t.flow_for(&client(i), t0).is_some());
        }
        assert_eq!(
            t.flow_for(&client(9), t0),
            None,
            "a fourth client is dropped"
        );
        assert_eq!(t.flow_for(&client(1), t0), Some(2), "known clients go on");
        // Once one expires there is room again.
        t.flow_for(&client(0), t0 + Duration::from_secs(100));
        t.flow_for(&client(1), t0 + Duration::from_secs(100));
        let gone = t.expire(t0 + IDLE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(gone, vec![(3, client(2))]);
        assert_eq!(t.flow_for(&client(9), t0 + IDLE_TIMEOUT), Some(4));
    }

    #[test]
    fn an_expired_client_comes_back_on_a_new_flow_and_the_old_id_is_dead() {
        let t0 = Instant::now();
        let mut t = FlowTable::with_limits(&Limits::default());
        assert_eq!(t.flow_for(&client(1), t0), Some(1));
        let later = t0 + IDLE_TIMEOUT + Duration::from_secs(1);
        assert_eq!(t.expire(later), vec![(1, client(1))]);
        // A late reply for the expired flow finds no client (the receiver drops it) ...
        assert_eq!(t.key_of(1, Some(later)), None);
        // ... and the client's next datagram opens a new flow (the worker opens a new socket).
        assert_eq!(t.flow_for(&client(1), later), Some(2));
    }

    #[test]
    fn replies_keep_a_flow_alive_but_lookups_without_time_do_not() {
        let t0 = Instant::now();
        let mut t = FlowTable::with_limits(&Limits::default());
        t.flow_for(&client(1), t0);
        t.flow_for(&client(2), t0);
        t.key_of(1, Some(t0 + Duration::from_secs(60))); // a reply from the source
        t.key_of(2, None); // a status look-up
        let gone = t.expire(t0 + IDLE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(gone, vec![(2, client(2))]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn flow_ids_wrap_past_u32_max_skipping_zero_and_live_ids() {
        let t0 = Instant::now();
        let mut t = FlowTable::with_limits(&Limits::default());
        assert_eq!(t.flow_for(&client(0), t0), Some(1)); // id 1 stays live
        t.next_id = u32::MAX;
        assert_eq!(t.flow_for(&client(1), t0), Some(u32::MAX));
        assert_eq!(
            t.flow_for(&client(2), t0),
            Some(2),
            "0 is never an id, 1 is taken"
        );
    }
}
