//! Rendezvous (highest-random-weight) hashing: which hosts own a blob.
//!
//! Every member scores every key with a keyed hash; a key's owners are the `n` members with
//! the highest scores. With weights the score is `weight / -ln(u)`, where `u` in (0, 1) comes
//! from the hash, so a member of weight 2 owns about twice the keys of a member of weight 1.
//! Because each member's score for a key depends only on that member and that key, adding a
//! member moves to it only the keys it now wins, and removing one moves only the keys it
//! owned: no other key changes hands. This is the scheme Go Kraken's origin ring uses, over
//! SHA-256 instead of murmur3 and over the whole digest instead of its first four hex digits.

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// A member of a [`Ring`]: a name (usually `host:port`) and a weight.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Member {
    name: String,
    weight: u32,
}

impl Member {
    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member's weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    fn score(&self, key: &[u8]) -> f64 {
        let mut hasher = Hasher::new();
        // Length-prefix the name so ("ab", key) and ("a", "b" + key) hash differently.
        hasher.update(&(self.name.len() as u64).to_be_bytes());
        hasher.update(self.name.as_bytes());
        hasher.update(key);
        let hash = hasher.finalize_bytes();
        let bits = u64::from_be_bytes(*hash.first_chunk().expect("32 bytes")) >> 11;
        // 53 random bits mapped into the open interval (0, 1).
        let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
        f64::from(self.weight) / -u.ln()
    }
}

/// A set of weighted members that places keys by rendezvous hashing.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    members: Vec<Member>,
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ring of equally weighted members.
    pub fn with_members<I, S>(names: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut ring = Self::new();
        for name in names {
            ring.add(name, 1)?;
        }
        Ok(ring)
    }

    /// Adds a member, or changes the weight of an existing one. A weight of 0 is an error.
    pub fn add(&mut self, name: impl Into<String>, weight: u32) -> Result<()> {
        let name = name.into();
        if weight == 0 {
            return Err(Error::InvalidRingMember {
                name,
                reason: "weight must be positive",
            });
        }
        match self.members.iter_mut().find(|m| m.name == name) {
            Some(member) => member.weight = weight,
            None => self.members.push(Member { name, weight }),
        }
        Ok(())
    }

    /// Removes a member; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.name != name);
        self.members.len() != before
    }

    /// The members, in insertion order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The `n` members that own `digest`, best first (fewer if the ring is smaller).
    pub fn locations(&self, digest: &Digest, n: usize) -> Vec<&Member> {
        self.locations_for_key(digest.as_bytes(), n)
    }

    /// The `n` members that own an arbitrary key (an info hash, say), best first.
    pub fn locations_for_key(&self, key: &[u8], n: usize) -> Vec<&Member> {
        let mut scored: Vec<(f64, &Member)> =
            self.members.iter().map(|m| (m.score(key), m)).collect();
        // Highest score first; names break (astronomically unlikely) ties deterministically.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        scored.into_iter().take(n).map(|(_, m)| m).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(members: Vec<&Member>) -> Vec<String> {
        members.into_iter().map(|m| m.name.clone()).collect()
    }

    fn key(i: u32) -> Digest {
        Digest::sha256_of(&i.to_be_bytes())
    }

    #[test]
    fn weights_shift_ownership_proportionally() {
        let mut ring = Ring::new();
        ring.add("light", 1).unwrap();
        ring.add("heavy", 3).unwrap();
        let heavy = (0..20_000)
            .filter(|&i| ring.locations(&key(i), 1)[0].name() == "heavy")
            .count();
        // Expected share 3/4 = 15,000; allow a generous statistical margin.
        assert!((14_400..=15_600).contains(&heavy), "heavy owns {heavy}");
    }

    #[test]
    fn rejects_zero_weight_and_updates_existing() {
        let mut ring = Ring::new();
        assert!(ring.add("a", 0).is_err());
        ring.add("a", 1).unwrap();
        ring.add("a", 5).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.members()[0].weight(), 5);
        assert!(ring.remove("a"));
        assert!(!ring.remove("a"));
        assert!(ring.locations(&key(0), 3).is_empty());
    }

    #[test]
    fn spreads_keys_evenly() {
        let ring = Ring::with_members((0..5).map(|i| format!("origin{i}:15002"))).unwrap();
        let mut counts = std::collections::HashMap::new();
        for i in 0..10_000 {
            *counts
                .entry(ring.locations(&key(i), 1)[0].name().to_owned())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        assert!(
            counts.values().all(|&c| (1_800..=2_200).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn adding_a_member_moves_only_keys_it_takes(
            members in proptest::collection::hash_set("[a-z]{1,8}", 1..8),
            newcomer in "[A-Z]{1,8}",
            weight in 1u32..5,
            n in 1usize..4,
        ) {
            let before = Ring::with_members(members.iter().cloned()).unwrap();
            let mut after = before.clone();
            after.add(newcomer.clone(), weight).unwrap();
            for i in 0..200 {
                let old = names(before.locations(&key(i), n));
                let new = names(after.locations(&key(i), n));
                // The newcomer is inserted somewhere; everyone else keeps their order and only
                // the last old owner may drop out.
                let without: Vec<String> = new.iter().filter(|m| **m != newcomer).cloned().collect();
                prop_assert!(old.starts_with(&without), "old {:?} new {:?}", old, new);
                prop_assert!(without.len() + 1 >= old.len().min(n));
            }
        }

        #[test]
        fn removing_a_member_moves_only_keys_it_owned(
            members in proptest::collection::hash_set("[a-z]{1,8}", 2..8),
            victim_index in 0usize..8,
        ) {
            let ring = Ring::with_members(members.iter().cloned()).unwrap();
            let victim = ring.members()[victim_index % ring.len()].name().to_owned();
            let mut smaller = ring.clone();
            smaller.remove(&victim);
            for i in 0..200 {
                let old_owner = ring.locations(&key(i), 1)[0].name().to_owned();
                let new_owner = smaller.locations(&key(i), 1)[0].name().to_owned();
                if old_owner != victim {
                    prop_assert_eq!(old_owner, new_owner);
                } else {
                    // The key goes to whoever was second.
                    prop_assert_eq!(ring.locations(&key(i), 2)[1].name(), new_owner);
                }
            }
        }
    }
}
