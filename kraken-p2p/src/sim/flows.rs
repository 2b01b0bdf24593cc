//! Piece transfers as fluid flows that share their hosts' links.
//!
//! A flow's rate is the smaller of its sender's uplink divided by the sender's flows and its
//! receiver's downlink divided by the receiver's flows. Starting or ending a flow changes the
//! shares at its two ends only, so only the flows leaving its sender and those entering its
//! receiver are re-rated: the cost of an event is the degree of two hosts, never the size of
//! the network.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::swarm::ConnId;

use super::HostId;
use super::fast_hash::FastMap;
use super::links::LinkId;

/// Names a flow; reused after the flow ends, with a new generation.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) struct FlowId {
    slot: usize,
    generation: u64,
}

#[derive(Debug)]
pub(super) struct Flow {
    pub(super) from: HostId,
    pub(super) from_conn: ConnId,
    pub(super) to: HostId,
    pub(super) to_conn: ConnId,
    /// The link the flow runs over.
    pub(super) link: LinkId,
    pub(super) index: u32,
    pub(super) length: u64,
    pub(super) corrupt: bool,
    remaining: f64,
    rate: f64,
    /// What the sender's uplink gives this flow, and what the receiver's downlink takes. Under
    /// equal split, the two ends' equal shares, kept here when either end's flow count
    /// changes, so that re-rating a flow reads no other host's state (cache misses over
    /// 15,000 hosts were most of the simulator's time).
    send_share: f64,
    receive_share: f64,
    updated: Instant,
    /// When the pending completion check fires. A check is only added when the flow would
    /// finish before it; a check that comes early reschedules itself. This keeps the event
    /// queue near one entry per flow, although every flow start re-rates its neighbours.
    check_at: Option<Instant>,
    /// Bumped at every scheduled check, so that superseded checks are ignored.
    generation: u64,
}

impl Flow {
    pub(super) fn new(
        (from, from_conn): (HostId, ConnId),
        (to, to_conn): (HostId, ConnId),
        link: LinkId,
        index: u32,
        length: u64,
        corrupt: bool,
    ) -> Self {
        Self {
            from,
            from_conn,
            to,
            to_conn,
            link,
            index,
            length,
            corrupt,
            remaining: length as f64,
            rate: 0.0,
            send_share: 0.0,
            receive_share: 0.0,
            updated: Instant::now(),
            check_at: None,
            generation: 0,
        }
    }
}

impl Flow {
    /// Moves the flow forward to `now` at its current rate.
    fn settle(&mut self, now: Instant) {
        let elapsed = (now - self.updated).as_secs_f64();
        self.remaining = (self.remaining - self.rate * elapsed).max(0.0);
        self.updated = now;
    }

    /// Time to finish at the current rate, rounded up to whole nanoseconds so the flow has
    /// surely finished by then.
    fn time_left(&self) -> Duration {
        Duration::from_nanos((self.remaining / self.rate * 1e9).ceil() as u64 + 1)
    }
}

/// What a completion check found.
#[derive(Debug)]
pub(super) enum Check {
    /// The flow finished; its neighbours' checks to schedule.
    Done(Flow, Vec<Completion>),
    /// Not yet: check again then.
    NotYet(Completion),
    /// A later check replaced this one, or the flow was cut.
    Superseded,
}

/// When a flow will finish at its current rate; the caller schedules a check then.
#[derive(Debug)]
pub(super) struct Completion {
    pub(super) flow: FlowId,
    pub(super) after: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Flows {
    slots: Vec<Option<Flow>>,
    free: Vec<usize>,
    generation: u64,
    /// Flows leaving and entering each host, by slot.
    outbound: Vec<Vec<usize>>,
    inbound: Vec<Vec<usize>>,
    up: Vec<f64>,
    down: Vec<f64>,
    /// Pieces waiting behind the one their connection is sending, by sender and connection.
    queued: FastMap<(HostId, ConnId), VecDeque<Flow>>,
    sharing: Sharing,
}

impl Flows {
    pub(super) fn add_host(&mut self, up: f64, down: f64) {
        self.outbound.push(Vec::new());
        self.inbound.push(Vec::new());
        self.up.push(up);
        self.down.push(down);
    }

    /// Starts `flow` at `now`, or queues it behind the piece its connection is sending (a
    /// connection sends one piece at a time, as the node's connection writer does); returns
    /// the completion checks to schedule.
    pub(super) fn start(&mut self, now: Instant, flow: Flow) -> Vec<Completion> {
        let key = (flow.from, flow.from_conn);
        let busy = self.outbound[flow.from].iter().any(|&slot| {
            self.slots[slot]
                .as_ref()
                .is_some_and(|f| f.from_conn == flow.from_conn)
        });
        if busy {
            self.queued.entry(key).or_default().push_back(flow);
            return Vec::new();
        }
        self.activate(now, flow)
    }

    fn activate(&mut self, now: Instant, mut flow: Flow) -> Vec<Completion> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        flow.updated = now;
        let (from, to) = (flow.from, flow.to);
        self.outbound[from].push(slot);
        self.inbound[to].push(slot);
        self.slots[slot] = Some(flow);
        self.rerate(now, from, to)
    }

    /// A completion check fired: the flow ended (returned with the checks to reschedule for
    /// its neighbours), or it is not done yet (a check to schedule later), or the check was
    /// superseded.
    pub(super) fn check(&mut self, now: Instant, id: FlowId) -> Check {
        let Some(flow) = self.slots.get_mut(id.slot).and_then(Option::as_mut) else {
            return Check::Superseded;
        };
        if flow.generation != id.generation {
            return Check::Superseded;
        }
        flow.settle(now);
        // Less than a byte left is done: rates and times are rounded.
        if flow.remaining >= 1.0 {
            flow.check_at = None;
            return Check::NotYet(self.schedule_check(now, id.slot));
        }
        let flow = self.remove_slot(id.slot).expect("present");
        let mut checks = self.rerate(now, flow.from, flow.to);
        let key = (flow.from, flow.from_conn);
        if let Some(queue) = self.queued.get_mut(&key) {
            let next = queue.pop_front().expect("queues are never left empty");
            if queue.is_empty() {
                self.queued.remove(&key);
            }
            checks.extend(self.activate(now, next));
        }
        Check::Done(flow, checks)
    }

    /// Ends the flows over one link, both ways, and the pieces queued on it; returns the
    /// completion checks to reschedule.
    pub(super) fn cut_link(
        &mut self,
        now: Instant,
        a: (HostId, ConnId),
        b: (HostId, ConnId),
    ) -> Vec<Completion> {
        self.queued.remove(&a);
        self.queued.remove(&b);
        self.cut(now, a.0, |f| {
            (f.from, f.from_conn) == a || (f.from, f.from_conn) == b
        })
    }

    /// Ends every flow and queued piece to or from `host`; returns the completion checks to
    /// reschedule.
    pub(super) fn cut_host(&mut self, now: Instant, host: HostId) -> Vec<Completion> {
        self.queued.retain(|&(from, _), queue| {
            queue.retain(|f| f.to != host);
            from != host && !queue.is_empty()
        });
        self.cut(now, host, |_| true)
    }

    /// Ends the flows to or from `host` that match `cut`.
    fn cut(
        &mut self,
        now: Instant,
        host: HostId,
        mut cut: impl FnMut(&Flow) -> bool,
    ) -> Vec<Completion> {
        let slots: Vec<usize> = self.outbound[host]
            .iter()
            .chain(&self.inbound[host])
            .copied()
            .collect();
        let mut touched = Vec::new();
        for slot in slots {
            if self.slots[slot].as_ref().is_some_and(&mut cut) {
                let flow = self.remove_slot(slot).expect("listed");
                touched.push((flow.from, flow.to));
            }
        }
        let mut checks = Vec::new();
        for (from, to) in touched {
            checks.extend(self.rerate(now, from, to));
        }
        checks
    }

    fn remove_slot(&mut self, slot: usize) -> Option<Flow> {
        let flow = self.slots.get_mut(slot)?.take()?;
        self.outbound[flow.from].retain(|&s| s != slot);
        self.inbound[flow.to].retain(|&s| s != slot);
        self.free.push(slot);
        Some(flow)
    }

    /// Chooses how links are shared among flows.
    pub(super) fn set_sharing(&mut self, sharing: Sharing) {
        self.sharing = sharing;
    }

    /// Re-rates the flows whose rates depend on the flow sets of `from` (which just gained or
    /// lost an outbound flow) and `to` (an inbound one).
    fn rerate(&mut self, now: Instant, from: HostId, to: HostId) -> Vec<Completion> {
        let mut checks = Vec::new();
        match self.sharing {
            // By position rather than through a collected list: this runs for every piece
            // sent, and the allocation showed in profiles.
            Sharing::EqualSplit => {
                let (up, down) = (self.equal_up(from), self.equal_down(to));
                for i in 0..self.outbound[from].len() {
                    let slot = self.outbound[from][i];
                    self.slots[slot].as_mut().expect("listed").send_share = up;
                }
                for i in 0..self.inbound[to].len() {
                    let slot = self.inbound[to][i];
                    self.slots[slot].as_mut().expect("listed").receive_share = down;
                }
                for i in 0..self.outbound[from].len() {
                    let slot = self.outbound[from][i];
                    self.rerate_flow(now, slot, &mut checks);
                }
                for i in 0..self.inbound[to].len() {
                    let slot = self.inbound[to][i];
                    self.rerate_flow(now, slot, &mut checks);
                }
            }
            Sharing::WaterFill => {
                for slot in self.refill(from, to) {
                    self.rerate_flow(now, slot, &mut checks);
                }
            }
        }
        checks
    }

    /// Gives the flow in `slot` its rate under the current sharing, adding a completion
    /// check to `checks` if it now ends before its scheduled one.
    fn rerate_flow(&mut self, now: Instant, slot: usize, checks: &mut Vec<Completion>) {
        let flow = self.slots[slot].as_mut().expect("listed flows exist");
        let rate = flow.send_share.min(flow.receive_share);
        // Settled at the old rate first: the bytes sent so far went at that rate.
        flow.settle(now);
        if flow.rate == rate && flow.check_at.is_some() {
            return;
        }
        flow.rate = rate;
        let finish = now + flow.time_left();
        if flow.check_at.is_none_or(|at| finish < at) {
            checks.push(self.schedule_check(now, slot));
        }
    }

    fn equal_up(&self, host: HostId) -> f64 {
        self.up[host] / self.outbound[host].len().max(1) as f64
    }

    fn equal_down(&self, host: HostId) -> f64 {
        self.down[host] / self.inbound[host].len().max(1) as f64
    }

    /// Water-fills again the uplinks whose flows' caps changed (`from`'s and those of the
    /// senders into `to`, whose equal downlink share changed) and the downlinks likewise;
    /// returns the flows to re-rate.
    fn refill(&mut self, from: HostId, to: HostId) -> Vec<usize> {
        let mut senders: Vec<HostId> = self.inbound[to]
            .iter()
            .map(|&slot| self.flow(slot).from)
            .chain([from])
            .collect();
        senders.sort_unstable();
        senders.dedup();
        let mut receivers: Vec<HostId> = self.outbound[from]
            .iter()
            .map(|&slot| self.flow(slot).to)
            .chain([to])
            .collect();
        receivers.sort_unstable();
        receivers.dedup();
        let mut affected: Vec<usize> = senders
            .into_iter()
            .flat_map(|host| self.fill(host, End::Up))
            .collect();
        for host in receivers {
            affected.extend(self.fill(host, End::Down));
        }
        affected.sort_unstable();
        affected.dedup();
        affected
    }

    /// Water-fills one end of `host`'s links — its uplink over its outbound flows, each capped
    /// by its receiver's equal share, or its downlink over its inbound flows, each capped by
    /// its sender's — and returns the flows it re-shared.
    fn fill(&mut self, host: HostId, end: End) -> Vec<usize> {
        let (slots, capacity) = match end {
            End::Up => (self.outbound[host].clone(), self.up[host]),
            End::Down => (self.inbound[host].clone(), self.down[host]),
        };
        let caps: Vec<f64> = slots
            .iter()
            .map(|&slot| {
                let flow = self.flow(slot);
                match end {
                    End::Up => self.equal_down(flow.to),
                    End::Down => self.equal_up(flow.from),
                }
            })
            .collect();
        for (&slot, share) in slots.iter().zip(water_fill(capacity, &caps)) {
            let flow = self.slots[slot].as_mut().expect("listed flows exist");
            match end {
                End::Up => flow.send_share = share,
                End::Down => flow.receive_share = share,
            }
        }
        slots
    }

    fn flow(&self, slot: usize) -> &Flow {
        self.slots[slot].as_ref().expect("listed flows exist")
    }

    /// Schedules a check for when the flow in `slot` finishes at its current rate.
    fn schedule_check(&mut self, now: Instant, slot: usize) -> Completion {
        self.generation += 1;
        let flow = self.slots[slot].as_mut().expect("present");
        let after = flow.time_left();
        flow.check_at = Some(now + after);
        flow.generation = self.generation;
        Completion {
            flow: FlowId {
                slot,
                generation: flow.generation,
            },
            after,
        }
    }

    /// Flows in progress.
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A host's uplink or downlink.
#[derive(Clone, Copy, Debug)]
enum End {
    Up,
    Down,
}

/// How a link's capacity is divided among the flows through it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sharing {
    /// Each flow gets the smaller of its sender's uplink and its receiver's downlink divided
    /// equally among their flows. Simple and pessimistic: a flow held back at one end leaves
    /// its share at the other end unused.
    #[default]
    EqualSplit,
    /// Closer to what TCP converges to (max-min fairness): each uplink is water-filled over
    /// its flows, each capped by its receiver's equal share, and each downlink likewise; a
    /// flow gets the smaller of its two fills. Capacity one flow cannot use goes to the
    /// others at that end. About four times slower to simulate.
    WaterFill,
}

/// Divides `capacity` among flows with the given caps, max-min fairly: every flow gets its
/// cap or the common level, whichever is smaller, and the level uses up the capacity.
fn water_fill(capacity: f64, caps: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_unstable_by(|&a, &b| caps[a].total_cmp(&caps[b]));
    let mut shares = vec![0.0; caps.len()];
    let mut left = capacity;
    for (filled, &i) in order.iter().enumerate() {
        let level = left / (caps.len() - filled) as f64;
        let share = caps[i].min(level);
        shares[i] = share;
        left -= share;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::water_fill;

    #[test]
    fn water_fill_gives_unused_capacity_to_the_others() {
        assert_eq!(
            water_fill(90.0, &[10.0, 100.0, 100.0]),
            vec![10.0, 40.0, 40.0]
        );
        assert_eq!(water_fill(90.0, &[100.0; 3]), vec![30.0; 3]);
        // Everyone capped below the level: capacity is left over.
        assert_eq!(water_fill(90.0, &[10.0, 20.0]), vec![10.0, 20.0]);
        assert!(water_fill(90.0, &[]).is_empty());
    }
}
