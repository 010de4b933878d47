//! What a run computes, and when: the fit passes, what a chunk's consumers demand of the
//! nodes above them, when a node's outputs can be dropped, and how many samples a chunk holds.

use std::path::PathBuf;

use anoflow_sdk::{descriptor::StageKind, value::PortValue};

use super::{cache::read_cached_outputs, CheckedPipeline, Runner, Slot};

/// Which outputs [`Runner::compute_retaining`](super::Runner) leaves in a chunk once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retain {
    /// Only those the consumers read: nothing else reads the chunk afterwards (fit, test).
    ConsumerInputs,
    /// Also those any node outside the computed ones reads.
    OutsideReads,
}

/// Per node and sample of a chunk: whether a consumer needs it, and the cached outputs that
/// stand in for running it.
pub(super) struct Demand {
    pub demanded: Vec<Vec<bool>>,
    pub preloaded: Vec<Vec<Option<Vec<PortValue>>>>,
}

impl Runner<'_> {
    /// Batch size for a node: 1, or for a stage declared batched its `batch_size` param.
    pub(super) fn batch_size(&self, node: usize) -> usize {
        let n = &self.p.nodes[node];
        if n.stage.descriptor.batch_size == 0 {
            return 1;
        }
        let given = n.params.get(anoflow_sdk::config::BATCH_SIZE_PARAM).and_then(serde_json::Value::as_u64);
        given.map_or(n.stage.descriptor.batch_size as usize, |b| b.max(1) as usize)
    }

    /// Samples per chunk of one category's fit while `workers` categories are fitted at once:
    /// `--in-flight` shared among them, so that the samples in flight stay bounded by it (a
    /// chunk's feature maps are what a fit holds most of). The share is cut to a multiple of
    /// every batch size of `nodes`, so each batch holds the samples it holds when categories
    /// are fitted one at a time; where that cannot be (a share below a batch, or `--in-flight`
    /// not a multiple of the batch sizes), each category takes the whole `--in-flight`.
    pub(super) fn category_chunk(&self, nodes: &[usize], workers: usize) -> usize {
        in_flight_share(self.opts.in_flight, workers, nodes.iter().map(|&n| self.batch_size(n)))
    }

    /// What `consumers` need of `nodes` for each live sample of a chunk: demand flows from the
    /// consumers up, stopping at cache entries (`keys`) that load.
    pub(super) fn demand(
        &self,
        nodes: &[usize],
        consumers: &[usize],
        chunk: &[Slot],
        keys: &[Vec<Option<PathBuf>>],
    ) -> Demand {
        let n_nodes = self.p.nodes.len();
        let mut demanded = vec![vec![false; chunk.len()]; n_nodes];
        let mut preloaded: Vec<Vec<Option<Vec<PortValue>>>> = vec![vec![None; chunk.len()]; n_nodes];
        for &c in consumers {
            demanded[c].iter_mut().for_each(|d| *d = true);
        }
        for n in (0..n_nodes).rev() {
            for s in 0..chunk.len() {
                if !demanded[n][s] || chunk[s].failed {
                    continue;
                }
                if !consumers.contains(&n) {
                    if !nodes.contains(&n) {
                        continue;
                    }
                    if let Some(values) =
                        keys[n][s].as_ref().filter(|p| p.is_file()).and_then(|p| read_cached_outputs(p))
                    {
                        preloaded[n][s] = Some(values);
                        continue;
                    }
                }
                for e in &self.p.nodes[n].inputs {
                    demanded[e.from][s] = true;
                }
            }
        }
        Demand { demanded, preloaded }
    }
}

/// The fitted nodes grouped into fit passes, in the order they run. Nodes share a pass when
/// they learn from the same split with the same scope and have the same number of fitted
/// nodes above them on their longest path (so none feeds another): the split then streams
/// once through their common ancestors instead of once per node.
pub(super) fn fit_passes(p: &CheckedPipeline) -> Vec<Vec<usize>> {
    let fitted = |n: usize| p.nodes[n].kind() == StageKind::Fitted;
    // Node indices are topological, so every input's depth is known when it is read.
    let mut depth = vec![0usize; p.nodes.len()];
    for n in 0..p.nodes.len() {
        depth[n] = p.nodes[n].inputs.iter().map(|e| depth[e.from] + usize::from(fitted(e.from))).max().unwrap_or(0);
    }
    /// Depth, split, per category.
    type PassKey<'a> = (usize, &'a str, bool);
    let mut passes: Vec<(PassKey, Vec<usize>)> = Vec::new();
    for f in (0..p.nodes.len()).filter(|&n| fitted(n)) {
        let key = (depth[f], p.nodes[f].fit.as_deref().unwrap_or("train"), p.nodes[f].fit_per_category);
        match passes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nodes)) => nodes.push(f),
            None => passes.push((key, vec![f])),
        }
    }
    // Stable: passes of one depth keep the order of their first node.
    passes.sort_by_key(|((depth, ..), _)| *depth);
    passes.into_iter().map(|(_, nodes)| nodes).collect()
}

/// For each step of `nodes` (a call's nodes in the order they run), the nodes whose outputs
/// can be dropped after it: no later step reads them and `retain` does not keep them. A
/// 16000 x 16000 source image need not outlive the resize that read it. `edges` are
/// `(from, to)` pairs of the graph's `n_nodes` nodes.
pub(super) fn release_points(
    n_nodes: usize,
    edges: impl IntoIterator<Item = (usize, usize)>,
    nodes: &[usize],
    consumers: &[usize],
    retain: Retain,
) -> Vec<Vec<usize>> {
    let mut step_of = vec![None; n_nodes];
    for (step, &n) in nodes.iter().enumerate() {
        step_of[n] = Some(step);
    }
    let mut last_read: Vec<Option<usize>> = vec![None; n_nodes];
    let mut retained = vec![false; n_nodes];
    for (from, reader) in edges {
        let consumer = consumers.contains(&reader);
        match step_of[reader] {
            Some(step) if !consumer => last_read[from] = last_read[from].max(Some(step)),
            _ if consumer || retain == Retain::OutsideReads => retained[from] = true,
            // Read by a node that neither this call nor its caller runs on the chunk.
            _ => {}
        }
    }
    let mut release = vec![Vec::new(); nodes.len()];
    for (step, &n) in nodes.iter().enumerate() {
        if !retained[n] && !consumers.contains(&n) {
            release[last_read[n].map_or(step, |last| last.max(step))].push(n);
        }
    }
    release
}

/// `in_flight` shared by `workers`, cut to a multiple of every one of `batch_sizes`; the whole
/// `in_flight` where the share would batch samples otherwise than `in_flight` does (see
/// [`Runner::category_chunk`]).
pub(super) fn in_flight_share(in_flight: usize, workers: usize, batch_sizes: impl IntoIterator<Item = usize>) -> usize {
    let in_flight = in_flight.max(1);
    let step = batch_sizes.into_iter().fold(1, |a, b| a / gcd(a, b) * b.max(1));
    let share = in_flight / workers.max(1);
    if !in_flight.is_multiple_of(step) || share < step {
        return in_flight;
    }
    share / step * step
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_in_flight_share_in_flight_in_whole_batches() {
        assert_eq!(in_flight_share(32, 1, [8, 1]), 32);
        assert_eq!(in_flight_share(32, 2, [8, 1, 1]), 16);
        assert_eq!(in_flight_share(32, 3, [8]), 8, "10 each would batch 8 + 2");
        assert_eq!(in_flight_share(32, 2, [1]), 16);
        assert_eq!(in_flight_share(33, 2, [1]), 16);
        assert_eq!(in_flight_share(32, 2, [4, 6]), 32, "32 is no multiple of 12: batches would differ");
        assert_eq!(in_flight_share(48, 2, [4, 6]), 24);
        assert_eq!(in_flight_share(32, 8, [8]), 32, "a share below one batch");
        assert_eq!(in_flight_share(0, 2, []), 1);
        assert_eq!(gcd(12, 18), 6);
    }

    #[test]
    fn outputs_are_released_after_their_last_reader_unless_retained() {
        // 0 source -> 1 resize -> 2 features -> 3 scorer -> 5 sink; 1 -> 4 blur -> 5; 0 -> 5 (gt).
        let edges = [(0, 1), (1, 2), (2, 3), (3, 5), (1, 4), (4, 5), (0, 5)];
        let test = |retain| release_points(6, edges, &[0, 1, 2, 3, 4], &[5], retain);
        // The sink reads 0, 3 and 4: kept. 1 goes after 4 (its last reader), 2 after 3.
        let expected: Vec<Vec<usize>> = vec![vec![], vec![], vec![], vec![2], vec![1]];
        assert_eq!(test(Retain::ConsumerInputs), expected);
        assert_eq!(test(Retain::OutsideReads), expected);
        // Fitting 3 on 0..2: the sink and 4 do not run, so the source goes once 1 has read it,
        // and 1 once 2 has.
        let fit = |retain| release_points(6, edges, &[0, 1, 2], &[3], retain);
        assert_eq!(fit(Retain::ConsumerInputs), vec![vec![], vec![0], vec![1]]);
        // A caller that runs more of the chunk later (calibration) keeps what those nodes read.
        let none = |steps: usize| vec![Vec::<usize>::new(); steps];
        assert_eq!(fit(Retain::OutsideReads), none(3));
        // Nodes 0 and 1 first, consumer 2; then 4 runs on the same chunk and reads 1.
        assert_eq!(release_points(6, edges, &[0, 1], &[2], Retain::OutsideReads), none(2));
        // A node nothing reads is released once it has run.
        assert_eq!(
            release_points(3, [(0, 1)], &[0, 1, 2], &[], Retain::ConsumerInputs),
            vec![vec![], vec![0, 1], vec![2]]
        );
    }
}
