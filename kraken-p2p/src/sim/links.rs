//! Which simulated links still stand, readable without touching either host.

/// Names one link for its whole life. Deliveries carry it, so that whether their link still
/// stands is one read of a compact table, not a lookup in the receiving host's map of
/// links, which missed the cache for nearly every message over thousands of hosts (the
/// gain is smaller than that miss, as the receiving swarm's own state is read next).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) struct LinkId {
    slot: u32,
    generation: u32,
}

/// Open links, by slot; a slot is reused with a new generation once its link closes.
#[derive(Debug, Default)]
pub(super) struct LinkTable {
    /// Odd while the slot's link is open.
    generations: Vec<u32>,
    free: Vec<u32>,
}

impl LinkTable {
    /// Opens a new link.
    pub(super) fn open(&mut self) -> LinkId {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.generations.push(0);
            u32::try_from(self.generations.len() - 1).expect("fewer than 2^32 links at once")
        });
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        LinkId {
            slot,
            generation: *generation,
        }
    }

    /// Closes `link`, if it is open.
    pub(super) fn close(&mut self, link: LinkId) {
        if self.is_open(link) {
            self.generations[link.slot as usize] = link.generation.wrapping_add(1);
            self.free.push(link.slot);
        }
    }

    /// Whether `link` is open.
    pub(super) fn is_open(&self, link: LinkId) -> bool {
        self.generations[link.slot as usize] == link.generation
    }
}

#[cfg(test)]
mod tests {
    use super::LinkTable;

    #[test]
    fn a_closed_link_stays_closed_when_its_slot_is_reused() {
        let mut table = LinkTable::default();
        let first = table.open();
        let second = table.open();
        table.close(first);
        assert!(!table.is_open(first));
        assert!(table.is_open(second));
        let third = table.open();
        assert!(table.is_open(third));
        assert!(
            !table.is_open(first),
            "the reused slot has a new generation"
        );
        table.close(first);
        assert!(table.is_open(third), "closing a stale id closes nothing");
    }
}
