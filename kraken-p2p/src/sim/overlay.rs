//! The shape of the overlay: who is linked to whom, analysed as a graph.

use std::collections::{BTreeMap, HashSet, VecDeque};

use petgraph::graph::{NodeIndex, UnGraph};
use serde::{Deserialize, Serialize};

use super::HostId;

/// Above this many linked hosts the diameter is estimated from a few breadth-first sweeps
/// instead of one from every host (which is quadratic).
const EXACT_DIAMETER_LIMIT: usize = 2_000;

/// Sweeps for the estimate: each starts at the farthest host the previous one found.
const DIAMETER_SWEEPS: usize = 8;

/// The overlay graph at one moment: hosts with at least one link, and their links (two hosts
/// linked for several torrents count once).
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct Overlay {
    /// Virtual time of the snapshot, seconds.
    pub at: f64,
    /// Hosts with at least one link.
    pub hosts: usize,
    /// Distinct linked pairs.
    pub links: usize,
    /// Connected components among the linked hosts.
    pub components: usize,
    /// Hosts in the largest component.
    pub largest_component: usize,
    /// Longest shortest path in the largest component, in hops.
    pub diameter: usize,
    /// Whether `diameter` is exact (every host swept) or a lower bound from a few sweeps,
    /// which on random regular-like graphs is almost always exact.
    pub diameter_exact: bool,
    /// Degrees of the linked hosts.
    pub degree: DegreeStats,
}

/// A degree distribution.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct DegreeStats {
    /// Smallest degree.
    pub min: usize,
    /// Median degree.
    pub median: usize,
    /// Largest degree.
    pub max: usize,
    /// Mean degree.
    pub mean: f64,
    /// How many hosts have each degree.
    pub histogram: BTreeMap<usize, usize>,
}

impl Overlay {
    /// Analyses the links among `host_count` hosts, snapshotted at `at` seconds.
    pub fn analyse(host_count: usize, links: &[(HostId, HostId)], at: f64) -> Self {
        let mut graph: UnGraph<(), ()> = UnGraph::with_capacity(host_count, links.len());
        for _ in 0..host_count {
            graph.add_node(());
        }
        let mut seen = HashSet::new();
        for &(a, b) in links {
            let pair = (a.min(b), a.max(b));
            if a != b && seen.insert(pair) {
                graph.add_edge(NodeIndex::new(pair.0), NodeIndex::new(pair.1), ());
            }
        }
        let linked: Vec<NodeIndex> = graph
            .node_indices()
            .filter(|&n| graph.neighbors(n).next().is_some())
            .collect();
        if linked.is_empty() {
            return Self {
                at,
                diameter_exact: true,
                ..Self::default()
            };
        }
        let mut degrees: Vec<usize> = linked.iter().map(|&n| graph.neighbors(n).count()).collect();
        degrees.sort_unstable();
        let mut histogram = BTreeMap::new();
        for &d in &degrees {
            *histogram.entry(d).or_default() += 1;
        }
        let components = petgraph::algo::kosaraju_scc(&graph);
        let components: Vec<&Vec<NodeIndex>> = components.iter().filter(|c| c.len() > 1).collect();
        let largest = components
            .iter()
            .max_by_key(|c| c.len())
            .map_or(&[][..], |c| c.as_slice());
        let (diameter, diameter_exact) = diameter(&graph, largest);
        Self {
            at,
            hosts: linked.len(),
            links: graph.edge_count(),
            components: components.len(),
            largest_component: largest.len(),
            diameter,
            diameter_exact,
            degree: DegreeStats {
                min: degrees[0],
                median: degrees[degrees.len() / 2],
                max: degrees[degrees.len() - 1],
                mean: degrees.iter().sum::<usize>() as f64 / degrees.len() as f64,
                histogram,
            },
        }
    }
}

/// The diameter of the connected `component`: exact for small ones, else the longest path
/// found by repeated double sweeps (a lower bound).
fn diameter(graph: &UnGraph<(), ()>, component: &[NodeIndex]) -> (usize, bool) {
    if component.len() <= EXACT_DIAMETER_LIMIT {
        let longest = component
            .iter()
            .map(|&n| eccentricity(graph, n).0)
            .max()
            .unwrap_or(0);
        return (longest, true);
    }
    let mut longest = 0;
    let mut start = component[0];
    for sweep in 0..DIAMETER_SWEEPS {
        let (ecc, farthest) = eccentricity(graph, start);
        longest = longest.max(ecc);
        // Alternate between following the farthest host and a spread of fresh starts.
        start = if sweep % 2 == 0 {
            farthest
        } else {
            component[(sweep * component.len()) / DIAMETER_SWEEPS]
        };
    }
    (longest, false)
}

/// The largest hop count from `from` to any host it reaches, and one host that far.
fn eccentricity(graph: &UnGraph<(), ()>, from: NodeIndex) -> (usize, NodeIndex) {
    let mut distance = vec![usize::MAX; graph.node_count()];
    let mut queue = VecDeque::from([from]);
    distance[from.index()] = 0;
    let mut farthest = (0, from);
    while let Some(n) = queue.pop_front() {
        let d = distance[n.index()];
        if d > farthest.0 {
            farthest = (d, n);
        }
        for m in graph.neighbors(n) {
            if distance[m.index()] == usize::MAX {
                distance[m.index()] = d + 1;
                queue.push_back(m);
            }
        }
    }
    farthest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_and_a_separate_pair() {
        // Hosts 0..6 in a ring, 7–8 linked apart, 9 alone.
        let mut links: Vec<(HostId, HostId)> = (0..6).map(|i| (i, (i + 1) % 6)).collect();
        links.push((7, 8));
        links.push((8, 7)); // the same pair again, for a second torrent
        let overlay = Overlay::analyse(10, &links, 1.5);
        assert_eq!(overlay.hosts, 8);
        assert_eq!(overlay.links, 7);
        assert_eq!(overlay.components, 2);
        assert_eq!(overlay.largest_component, 6);
        assert_eq!((overlay.diameter, overlay.diameter_exact), (3, true));
        assert_eq!(overlay.degree.min, 1);
        assert_eq!(overlay.degree.max, 2);
        assert_eq!(overlay.degree.histogram, BTreeMap::from([(1, 2), (2, 6)]));
    }

    #[test]
    fn a_long_path_is_measured_by_sweeps() {
        let n = EXACT_DIAMETER_LIMIT + 500;
        let links: Vec<(HostId, HostId)> = (0..n - 1).map(|i| (i, i + 1)).collect();
        let overlay = Overlay::analyse(n, &links, 0.0);
        assert_eq!(overlay.largest_component, n);
        // A double sweep finds a path's end from anywhere, then the other end.
        assert_eq!((overlay.diameter, overlay.diameter_exact), (n - 1, false));
    }
}
