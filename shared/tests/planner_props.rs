//! Property tests of the planner over random dependency graphs.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_shared::fixtures::{release, service};
use flotilla_shared::plan::{Plan, RollbackRequest};
use flotilla_shared::{DepKind, ReleaseSpec, RollbackScope, ServiceName};
use proptest::prelude::*;

/// A random DAG: `n` services named `s0..`, edges `(dependent, dependency)` that respect
/// a random hidden order, so the graph is acyclic but not trivially sorted by name.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize, DepKind)>)> {
    (1usize..40).prop_flat_map(|n| {
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let pairs = prop::collection::vec((0..n, 0..n, prop::sample::select(DepKind::ALL.to_vec())), 0..n * 3);
        (Just(n), order, pairs).prop_map(|(n, order, pairs)| {
            let mut rank = vec![0; n];
            for (r, &v) in order.iter().enumerate() {
                rank[v] = r;
            }
            let edges = pairs
                .into_iter()
                .filter(|&(a, b, _)| rank[a] > rank[b])
                .map(|(a, b, k)| ((a, b), k))
                .collect::<BTreeMap<_, _>>() // one kind per pair
                .into_iter()
                .map(|((a, b), k)| (a, b, k))
                .collect();
            (n, edges)
        })
    })
}

fn spec_of(n: usize, edges: &[(usize, usize, DepKind)]) -> ReleaseSpec {
    let mut spec = release("props");
    for v in 0..n {
        let mut svc = service(&format!("s{v}"), "1.0.0");
        if edges.iter().any(|&(_, b, k)| b == v && k == DepKind::Data) {
            svc = svc.migrations(true);
        }
        for &(_, b, kind) in edges.iter().filter(|&&(a, _, _)| a == v) {
            svc = svc.depends(&format!("s{b}"), kind);
        }
        spec = spec.with(svc);
    }
    spec
}

/// Longest chain, counted in services, by memoised depth-first search.
fn longest_chain(n: usize, edges: &[(usize, usize, DepKind)]) -> u32 {
    fn depth(v: usize, deps: &[Vec<usize>], memo: &mut [Option<u32>]) -> u32 {
        if let Some(d) = memo[v] {
            return d;
        }
        let d = 1 + deps[v].iter().map(|&w| depth(w, deps, memo)).max().unwrap_or(0);
        memo[v] = Some(d);
        d
    }
    let mut deps = vec![Vec::new(); n];
    for &(a, b, _) in edges {
        deps[a].push(b);
    }
    let mut memo = vec![None; n];
    (0..n).map(|v| depth(v, &deps, &mut memo)).max().unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What a plan shows for a failure of each service (computed in time that follows
    /// the rollback set) is the rollback of that failure with every service started.
    #[test]
    fn the_rollback_shown_for_each_service_is_the_one_with_everything_started(
        (n, edges) in dag(),
        scopes in prop::collection::vec(prop::sample::select(vec![RollbackScope::Cascade, RollbackScope::Service, RollbackScope::Release]), 40),
    ) {
        let mut spec = spec_of(n, &edges);
        for (svc, scope) in spec.services.iter_mut().zip(scopes) {
            svc.policy.rollback_scope = scope;
        }
        let plan = Plan::build(&spec, None).expect("a DAG plans");
        let all: BTreeSet<ServiceName> = spec.services.iter().map(|s| s.name.clone()).collect();
        for (v, svc) in spec.services.iter().enumerate() {
            let full = plan.rollback(RollbackRequest {
                failed: Some(&svc.name),
                also_failed: &[],
                scope: svc.policy.rollback_scope,
                started: &all,
                expired: &BTreeSet::new(),
            });
            prop_assert_eq!(plan.rollback_if_failed(v), full, "the rollback shown for {}", svc.name);
        }
    }

    #[test]
    fn waves_respect_every_edge_and_hold_each_service_once((n, edges) in dag()) {
        let spec = spec_of(n, &edges);
        let plan = Plan::build(&spec, None).expect("a DAG plans");
        let g = plan.graph();
        let waves = g.waves();
        let mut seen = BTreeSet::new();
        for wave in &waves {
            prop_assert!(!wave.is_empty(), "no empty wave");
            for &v in wave {
                prop_assert!(seen.insert(v), "service s{v} in two waves");
            }
        }
        prop_assert_eq!(seen.len(), n, "every service in a wave");
        for &(a, b, _) in &edges {
            let (a, b) = (g.node(&format!("s{a}").as_str().into()).unwrap(), g.node(&format!("s{b}").as_str().into()).unwrap());
            prop_assert!(g.wave(a) > g.wave(b), "s{a} (wave {}) must come after s{b} (wave {})", g.wave(a), g.wave(b));
        }
        prop_assert_eq!(waves.len() as u32, longest_chain(n, &edges));
    }

    #[test]
    fn an_injected_cycle_is_refused_with_a_real_cycle(
        (n, edges) in dag(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
        kind in prop::sample::select(vec![DepKind::Hard, DepKind::Config, DepKind::Soft]),
    ) {
        // A chain c0 <- c1 <- ... <- ck plus c0 depending on ck closes a cycle.
        let chain: Vec<usize> = picks.iter().map(|i| i.index(n)).collect::<BTreeSet<_>>().into_iter().collect();
        let mut edges = edges;
        for w in chain.windows(2) {
            edges.push((w[1], w[0], kind));
        }
        edges.push((chain[0], *chain.last().unwrap(), kind));
        let spec = spec_of(n, &edges);
        let errors = Plan::build(&spec, None).expect_err("a cycle is refused");
        let message = &errors[0].message;
        let path = message.strip_prefix("dependency cycle: ").expect("names the cycle");
        let nodes: Vec<&str> = path.split(" -> ").collect();
        prop_assert!(nodes.len() >= 2);
        prop_assert_eq!(nodes.first(), nodes.last(), "the cycle closes: {}", message);
        let written: BTreeSet<(String, String)> = spec
            .services
            .iter()
            .flat_map(|s| s.depends_on.iter().map(move |d| (s.name.to_string(), d.service.to_string())))
            .collect();
        for pair in nodes.windows(2) {
            prop_assert!(
                written.contains(&(pair[0].to_owned(), pair[1].to_owned())),
                "{} -> {} is not a dependency in the spec ({})", pair[0], pair[1], message
            );
        }
        let inner: BTreeSet<&str> = nodes[..nodes.len() - 1].iter().copied().collect();
        prop_assert_eq!(inner.len(), nodes.len() - 1, "no service twice inside the cycle: {}", message);
    }
}
