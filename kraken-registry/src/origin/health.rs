//! Whether each ring member is healthy, from consecutive check results (no I/O).

use std::collections::HashMap;

/// Members start healthy; a member is left out after `fails` consecutive failed checks and
/// taken back after `passes` consecutive passed ones, as Go Kraken's active health checks do.
#[derive(Debug)]
pub(crate) struct HealthTable {
    fails: u32,
    passes: u32,
    members: HashMap<String, MemberHealth>,
}

#[derive(Clone, Copy, Debug)]
struct MemberHealth {
    healthy: bool,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
}

impl HealthTable {
    pub(crate) fn new(fails: u32, passes: u32) -> Self {
        Self {
            fails: fails.max(1),
            passes: passes.max(1),
            members: HashMap::new(),
        }
    }

    /// Records one check of `member`; returns whether its health changed.
    pub(crate) fn record(&mut self, member: &str, passed: bool) -> bool {
        let (fails, passes) = (self.fails, self.passes);
        let health = self
            .members
            .entry(member.to_owned())
            .or_insert(MemberHealth {
                healthy: true,
                streak: 0,
            });
        if passed == health.healthy {
            health.streak = 0;
            return false;
        }
        health.streak += 1;
        let needed = if health.healthy { fails } else { passes };
        if health.streak >= needed {
            health.healthy = passed;
            health.streak = 0;
            return true;
        }
        false
    }

    /// Whether `member` counts as healthy (unknown members do).
    pub(crate) fn is_healthy(&self, member: &str) -> bool {
        self.members.get(member).is_none_or(|h| h.healthy)
    }

    /// Forgets members no longer listed.
    pub(crate) fn retain(&mut self, listed: &[String]) {
        self.members.retain(|name, _| listed.contains(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_leave_after_consecutive_failures_and_return_after_passes() {
        let mut table = HealthTable::new(3, 2);
        assert!(table.is_healthy("a"));
        assert!(!table.record("a", false));
        assert!(!table.record("a", true)); // a pass resets the failure streak
        assert!(!table.record("a", false));
        assert!(!table.record("a", false));
        assert!(table.record("a", false));
        assert!(!table.is_healthy("a"));
        assert!(!table.record("a", true));
        assert!(table.record("a", true));
        assert!(table.is_healthy("a"));
        table.retain(&[]);
        assert!(table.is_healthy("a"));
    }
}
