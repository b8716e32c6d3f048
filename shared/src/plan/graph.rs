//! The typed service dependency graph: edges, waves (dependency levels) and cycle detection.

use std::collections::HashMap;
use std::fmt;

use crate::model::{DepKind, ServiceName};

/// Index of a service in a [`ServiceGraph`] (its position in the release).
pub type NodeId = usize;

/// Why one service is ordered after another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// A `depends_on` entry of this kind.
    Dep(DepKind),
    /// The dependent `requires` a contract the dependency `provides` in a compatible version.
    Contract {
        /// The contract's name.
        contract: String,
        /// Whether the dependency's previous version, still in the fleet, also serves a
        /// compatible version of the contract: then a rollback of the dependency does not
        /// strand the dependent. `false` when unknown.
        old_version_compatible: bool,
    },
}

impl EdgeKind {
    /// Whether a rollback of the dependency pulls the dependent into a `cascade` rollback.
    pub fn cascades(&self) -> bool {
        match self {
            EdgeKind::Dep(kind) => kind.cascades(),
            EdgeKind::Contract { old_version_compatible, .. } => !old_version_compatible,
        }
    }

    /// A short label for output: the dependency kind, or `contract`.
    pub fn label(&self) -> &'static str {
        match self {
            EdgeKind::Dep(kind) => kind.as_str(),
            EdgeKind::Contract { .. } => "contract",
        }
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeKind::Dep(kind) => write!(f, "{kind}"),
            EdgeKind::Contract { contract, .. } => write!(f, "contract `{contract}`"),
        }
    }
}

/// `dependent` is ordered after `dependency`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The service that must go first.
    pub dependency: NodeId,
    /// The service that waits for it.
    pub dependent: NodeId,
    /// Why.
    pub kind: EdgeKind,
}

/// A dependency cycle: each service depends on the next, and the last on the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The services around the cycle, in "depends on" order, first not repeated at the end.
    pub services: Vec<NodeId>,
    /// The edge used at each step: `edges[i]` is `services[i]` depending on `services[i + 1]`
    /// (wrapping around).
    pub edges: Vec<Edge>,
}

/// Services of one release and the edges that order them. Acyclic by construction.
#[derive(Debug, Clone)]
pub struct ServiceGraph {
    names: Vec<ServiceName>,
    index: HashMap<ServiceName, NodeId>,
    edges: Vec<Edge>,
    /// Per node, indices into `edges` of the edges where it is the dependent.
    incoming: Vec<Vec<usize>>,
    /// Per node, indices into `edges` of the edges where it is the dependency.
    outgoing: Vec<Vec<usize>>,
    /// Per node, its wave counted from 0: the length of the longest dependency chain below it.
    level: Vec<u32>,
    /// Nodes in a dependency order (every dependency before its dependents).
    topo: Vec<NodeId>,
}

impl ServiceGraph {
    /// Builds the graph, or returns a cycle when there is one. Self-edges count as cycles.
    pub fn new(names: Vec<ServiceName>, edges: Vec<Edge>) -> Result<Self, Cycle> {
        let n = names.len();
        let index = names.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        let mut incoming = vec![Vec::new(); n];
        let mut outgoing = vec![Vec::new(); n];
        for (i, e) in edges.iter().enumerate() {
            incoming[e.dependent].push(i);
            outgoing[e.dependency].push(i);
        }

        // Kahn's algorithm; levels follow the longest path because a node is released
        // only after its last dependency, whose level is then final.
        let mut missing: Vec<usize> = incoming.iter().map(Vec::len).collect();
        let mut level = vec![0u32; n];
        let mut topo: Vec<NodeId> = (0..n).filter(|&v| missing[v] == 0).collect();
        let mut head = 0;
        while head < topo.len() {
            let v = topo[head];
            head += 1;
            for &ei in &outgoing[v] {
                let w = edges[ei].dependent;
                level[w] = level[w].max(level[v] + 1);
                missing[w] -= 1;
                if missing[w] == 0 {
                    topo.push(w);
                }
            }
        }
        if topo.len() < n {
            return Err(find_cycle(&edges, &incoming, &missing));
        }
        Ok(Self { names, index, edges, incoming, outgoing, level, topo })
    }

    /// How many services the graph has.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the graph has no services.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of a node.
    pub fn name(&self, node: NodeId) -> &ServiceName {
        &self.names[node]
    }

    /// The node of a service, if it is in the release.
    pub fn node(&self, name: &ServiceName) -> Option<NodeId> {
        self.index.get(name).copied()
    }

    /// Every edge.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Edges into `node`: what it depends on.
    pub fn dependencies(&self, node: NodeId) -> impl Iterator<Item = &Edge> + '_ {
        self.incoming[node].iter().map(|&i| &self.edges[i])
    }

    /// Edges out of `node`: what depends on it.
    pub fn dependents(&self, node: NodeId) -> impl Iterator<Item = &Edge> + '_ {
        self.outgoing[node].iter().map(|&i| &self.edges[i])
    }

    /// The wave of a node, counted from 1 as printed.
    pub fn wave(&self, node: NodeId) -> u32 {
        self.level[node] + 1
    }

    /// Number of waves: the number of services on the longest dependency chain.
    pub fn wave_count(&self) -> u32 {
        self.level.iter().max().map_or(0, |l| l + 1)
    }

    /// Nodes grouped by wave, wave 1 first; inside a wave in release order.
    pub fn waves(&self) -> Vec<Vec<NodeId>> {
        let mut waves = vec![Vec::new(); self.wave_count() as usize];
        for (node, &l) in self.level.iter().enumerate() {
            waves[l as usize].push(node);
        }
        waves
    }

    /// Nodes in an order where every dependency comes before its dependents.
    pub fn topological_order(&self) -> &[NodeId] {
        &self.topo
    }
}

/// Finds one cycle among the nodes Kahn's algorithm could not release. Every such node
/// has an unreleased dependency, so walking to one repeatedly must revisit a node; the
/// walk from that node's first visit onward is a cycle.
fn find_cycle(edges: &[Edge], incoming: &[Vec<usize>], missing: &[usize]) -> Cycle {
    let start = missing.iter().position(|&m| m > 0).expect("a node is left");
    let mut seen_at: HashMap<NodeId, usize> = HashMap::new();
    let mut path: Vec<Edge> = Vec::new();
    let mut v = start;
    loop {
        if let Some(&at) = seen_at.get(&v) {
            let edges: Vec<Edge> = path[at..].to_vec();
            let services = edges.iter().map(|e| e.dependent).collect();
            return Cycle { services, edges };
        }
        seen_at.insert(v, path.len());
        let &ei = incoming[v]
            .iter()
            .find(|&&ei| missing[edges[ei].dependency] > 0)
            .expect("an unreleased node has an unreleased dependency");
        path.push(edges[ei].clone());
        v = edges[ei].dependency;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, deps: &[(usize, usize)]) -> Result<ServiceGraph, Cycle> {
        let names = (0..n).map(|i| ServiceName::new(format!("s{i}"))).collect();
        let edges = deps
            .iter()
            .map(|&(dependent, dependency)| Edge { dependency, dependent, kind: EdgeKind::Dep(DepKind::Hard) })
            .collect();
        ServiceGraph::new(names, edges)
    }

    #[test]
    fn waves_follow_the_longest_chain() {
        // s2 -> s1 -> s0 and s2 -> s0: s2 is in wave 3, not 2.
        let g = graph(4, &[(1, 0), (2, 1), (2, 0)]).unwrap();
        assert_eq!(g.waves(), vec![vec![0, 3], vec![1], vec![2]]);
        assert_eq!(g.wave_count(), 3);
    }

    #[test]
    fn cycles_are_reported_in_depends_on_order() {
        let cycle = graph(4, &[(0, 1), (1, 2), (2, 0), (3, 0)]).unwrap_err();
        assert_eq!(cycle.services.len(), 3);
        for (i, e) in cycle.edges.iter().enumerate() {
            assert_eq!(e.dependent, cycle.services[i]);
            assert_eq!(e.dependency, cycle.services[(i + 1) % cycle.services.len()]);
        }
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let cycle = graph(2, &[(1, 1)]).unwrap_err();
        assert_eq!(cycle.services, vec![1]);
    }
}
