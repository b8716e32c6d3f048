//! Splitting a service's hosts in one stage into a canary and cumulative batches.

use serde::Serialize;

use crate::model::{HostCount, HostId};
use crate::spec::RolloutPolicy;

/// One batch of a service's rollout in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    /// How the batch is named in output and events: `canary`, `25%`, `100%`, `rest`.
    pub name: String,
    /// The hosts this batch adds (not cumulative).
    pub hosts: Vec<HostId>,
}

/// Splits `hosts` (those still to deploy, in inventory order) into batches: the canary,
/// then one batch per cumulative size that adds hosts, then `rest` for any hosts the
/// listed sizes did not reach. Sizes that add nothing are dropped, so every batch is
/// non-empty and every host is in exactly one batch.
pub fn split(policy: &RolloutPolicy, hosts: Vec<HostId>) -> Vec<Batch> {
    let total = hosts.len();
    let mut rest = hosts.into_iter();
    let mut batches = Vec::new();
    let mut done = 0;
    let mut take = |name: String, upto: usize, batches: &mut Vec<Batch>| {
        let upto = upto.min(total);
        if upto > done {
            batches.push(Batch { name, hosts: rest.by_ref().take(upto - done).collect() });
            done = upto;
        }
    };
    if !policy.canary.is_zero() {
        take("canary".to_owned(), policy.canary.of(total), &mut batches);
    }
    for size in &policy.batches {
        take(size.to_string(), size.of(total), &mut batches);
    }
    take("rest".to_owned(), total, &mut batches);
    batches
}

/// The batch names a rollout will use when the hosts are not known (offline plans):
/// the canary size, then the cumulative sizes, then `rest` if the sizes may not reach 100%.
pub fn describe(policy: &RolloutPolicy) -> Vec<String> {
    let mut names = Vec::new();
    if !policy.canary.is_zero() {
        names.push(format!("canary ({})", host_count_phrase(policy.canary)));
    }
    names.extend(policy.batches.iter().map(ToString::to_string));
    if !policy.batches.contains(&HostCount::ALL) {
        names.push("rest".to_owned());
    }
    names
}

fn host_count_phrase(c: HostCount) -> String {
    match c {
        HostCount::Hosts(1) => "1 host".to_owned(),
        HostCount::Hosts(n) => format!("{n} hosts"),
        HostCount::Percent(_) => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<HostId> {
        (1..=n).map(|i| HostId::new(format!("h{i}"))).collect()
    }

    fn sizes(b: &[Batch]) -> Vec<(String, usize)> {
        b.iter().map(|b| (b.name.clone(), b.hosts.len())).collect()
    }

    #[test]
    fn canary_then_cumulative_sizes() {
        let policy = RolloutPolicy::default(); // canary 1, 25%, 100%
        let b = split(&policy, hosts(8));
        assert_eq!(sizes(&b), [("canary".into(), 1), ("25%".into(), 1), ("100%".into(), 6)]);
        assert_eq!(b[0].hosts, [HostId::from("h1")]);
    }

    #[test]
    fn sizes_that_add_nothing_are_dropped_and_the_rest_is_covered() {
        let policy = RolloutPolicy {
            canary: HostCount::Hosts(1),
            batches: vec![HostCount::Percent(1_000), HostCount::Hosts(3)],
            ..RolloutPolicy::default()
        };
        let b = split(&policy, hosts(5));
        assert_eq!(sizes(&b), [("canary".into(), 1), ("3".into(), 2), ("rest".into(), 2)]);
    }

    #[test]
    fn no_canary_and_no_hosts() {
        let policy = RolloutPolicy { canary: HostCount::Hosts(0), ..RolloutPolicy::default() };
        assert_eq!(sizes(&split(&policy, hosts(4))), [("25%".into(), 1), ("100%".into(), 3)]);
        assert!(split(&policy, Vec::new()).is_empty());
    }
}
