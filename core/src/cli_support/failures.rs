//! The failed samples of a `--keep-going` run, one line per failing node with a count and
//! the first failure, instead of one line per sample.

use std::fmt::Write;

use crate::executor::RunError;

/// `N samples failed and were skipped:` and one line per (node, stage), in the order the
/// nodes first failed.
pub fn summary(failures: &[RunError]) -> String {
    let mut groups: Vec<(&RunError, usize)> = Vec::new();
    for f in failures {
        match groups.iter_mut().find(|(first, _)| first.node == f.node && first.stage == f.stage) {
            Some((_, count)) => *count += 1,
            None => groups.push((f, 1)),
        }
    }
    let mut s = format!("{} samples failed and were skipped:\n", failures.len());
    for (first, count) in groups {
        let who = if first.node.is_empty() {
            "the run".to_string()
        } else {
            format!("node `{}` (stage `{}`)", first.node, first.stage)
        };
        let sample = first.sample.as_ref().map(|s| format!(", sample `{s}`")).unwrap_or_default();
        let plural = if count == 1 { "" } else { "s" };
        let _ = writeln!(s, "  {who}: {count} sample{plural}; first ({}{sample}): {}", first.phase, first.message);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(node: &str, sample: &str, message: &str) -> RunError {
        RunError {
            phase: "test".into(),
            node: node.into(),
            stage: "faulty".into(),
            sample: Some(sample.into()),
            message: message.into(),
        }
    }

    #[test]
    fn one_line_per_failing_node_with_a_count() {
        let failures = vec![
            failure("bad", "s1", "panicked: x"),
            failure("other", "s1", "no"),
            failure("bad", "s2", "panicked: y"),
        ];
        let text = summary(&failures);
        assert_eq!(
            text,
            "3 samples failed and were skipped:\n  \
             node `bad` (stage `faulty`): 2 samples; first (test, sample `s1`): panicked: x\n  \
             node `other` (stage `faulty`): 1 sample; first (test, sample `s1`): no\n"
        );
    }
}
