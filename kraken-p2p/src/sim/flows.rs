//! Piece transfers as fluid flows that share their hosts' links.
//!
//! A flow's rate is the smaller of its sender's uplink divided by the sender's flows and its
//! receiver's downlink divided by the receiver's flows. Starting or ending a flow changes the
//! shares at its two ends only, so only the flows leaving its sender and those entering its
//! receiver are re-rated: the cost of an event is the degree of two hosts, never the size of
//! the network.

use std::time::{Duration, Instant};

use crate::swarm::ConnId;

use super::HostId;

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
    pub(super) index: u32,
    pub(super) length: u64,
    pub(super) corrupt: bool,
    remaining: f64,
    rate: f64,
    updated: Instant,
    /// Bumped at every re-rating, so that stale completion checks are ignored.
    generation: u64,
}

impl Flow {
    pub(super) fn new(
        (from, from_conn): (HostId, ConnId),
        (to, to_conn): (HostId, ConnId),
        index: u32,
        length: u64,
        corrupt: bool,
    ) -> Self {
        Self {
            from,
            from_conn,
            to,
            to_conn,
            index,
            length,
            corrupt,
            remaining: length as f64,
            rate: 0.0,
            updated: Instant::now(),
            generation: 0,
        }
    }
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
}

impl Flows {
    pub(super) fn add_host(&mut self, up: f64, down: f64) {
        self.outbound.push(Vec::new());
        self.inbound.push(Vec::new());
        self.up.push(up);
        self.down.push(down);
    }

    /// Starts `flow` at `now`; returns the completion checks to schedule.
    pub(super) fn start(&mut self, now: Instant, mut flow: Flow) -> Vec<Completion> {
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

    /// The flow named by a completion check, if that check is still current: the flow has
    /// not been re-rated or ended since.
    pub(super) fn is_current(&self, id: FlowId) -> bool {
        self.slots
            .get(id.slot)
            .and_then(Option::as_ref)
            .is_some_and(|f| f.generation == id.generation)
    }

    /// Ends a flow (finished or cut); returns it and the completion checks to reschedule.
    pub(super) fn end(&mut self, now: Instant, id: FlowId) -> Option<(Flow, Vec<Completion>)> {
        let flow = self.remove_slot(id.slot)?;
        let checks = self.rerate(now, flow.from, flow.to);
        Some((flow, checks))
    }

    /// Ends every flow matching `cut`; returns the completion checks to reschedule.
    pub(super) fn cut(
        &mut self,
        now: Instant,
        hosts: &[HostId],
        mut cut: impl FnMut(&Flow) -> bool,
    ) -> Vec<Completion> {
        let mut touched = Vec::new();
        for &host in hosts {
            let slots: Vec<usize> = self.outbound[host]
                .iter()
                .chain(&self.inbound[host])
                .copied()
                .collect();
            for slot in slots {
                if self.slots[slot].as_ref().is_some_and(&mut cut) {
                    let flow = self.remove_slot(slot).expect("listed");
                    touched.push((flow.from, flow.to));
                }
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

    /// Re-rates the flows leaving `from` and entering `to`, whose shares just changed.
    fn rerate(&mut self, now: Instant, from: HostId, to: HostId) -> Vec<Completion> {
        let mut checks = Vec::new();
        let affected: Vec<usize> = self.outbound[from]
            .iter()
            .chain(&self.inbound[to])
            .copied()
            .collect();
        for slot in affected {
            let flow = self.slots[slot].as_mut().expect("listed flows exist");
            let elapsed = (now - flow.updated).as_secs_f64();
            flow.remaining = (flow.remaining - flow.rate * elapsed).max(0.0);
            flow.updated = now;
            let up = self.up[flow.from] / self.outbound[flow.from].len() as f64;
            let down = self.down[flow.to] / self.inbound[flow.to].len() as f64;
            let rate = up.min(down);
            // An unchanged rate keeps its scheduled check valid (this also skips the second
            // listing of a flow between `from` and `to` themselves).
            if flow.generation != 0 && rate == flow.rate {
                continue;
            }
            flow.rate = rate;
            self.generation += 1;
            flow.generation = self.generation;
            // Round up to whole nanoseconds, so the flow has surely finished at the check.
            let after = Duration::from_nanos((flow.remaining / rate * 1e9).ceil() as u64 + 1);
            checks.push(Completion {
                flow: FlowId {
                    slot,
                    generation: flow.generation,
                },
                after,
            });
        }
        checks
    }

    /// Flows in progress.
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}
