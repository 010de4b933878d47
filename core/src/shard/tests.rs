use std::collections::BTreeMap;

use super::*;
use crate::run_record::{test_summary, RunRecord};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_flag_wins_over_the_cluster_env() {
    let slurm = env(&[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
    assert_eq!(task(None, &slurm).unwrap(), Some(Task { index: 2, count: 4 }));
    assert_eq!(task(Some("1/3"), &slurm).unwrap(), Some(Task { index: 1, count: 3 }));
    let k8s = env(&[("JOB_COMPLETION_INDEX", "14"), (COUNT_ENV, "15")]);
    assert_eq!(task(None, &k8s).unwrap(), Some(Task { index: 14, count: 15 }));
    assert_eq!(task(None, &env(&[])).unwrap(), None);
}

#[test]
fn bad_indices_and_counts_are_named() {
    let e = task(Some("4/4"), &env(&[])).unwrap_err().to_string();
    assert!(e.contains("task index 4 is out of range for 4 tasks (0 to 3)") && e.contains("--array=0-3"), "{e}");
    let slurm = env(&[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
    let e = task(None, &slurm).unwrap_err().to_string();
    assert!(e.starts_with("SLURM_ARRAY_TASK_ID=4, SLURM_ARRAY_TASK_COUNT=4: task index 4 is out of range"), "{e}");
    let e = task(None, &env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err().to_string();
    assert!(e.contains("JOB_COMPLETION_INDEX is set but ANOFLOW_SHARD_COUNT is not"), "{e}");
    for bad in ["1", "a/2", "1/b", "0/0"] {
        assert!(task(Some(bad), &env(&[])).is_err(), "{bad}");
    }
}

fn meta(category: &str, index: u64) -> SampleMeta {
    SampleMeta { index, ..SampleMeta::new(format!("{category}/{index}"), category, "test") }
}

fn plan(count: usize, variants: &[&str], categories: &[&str]) -> Plan {
    let names: Vec<&str> = if variants.is_empty() { vec![""] } else { variants.to_vec() };
    Plan {
        pipeline: "p".into(),
        pipeline_sha256: "x".into(),
        by: ShardBy::Category,
        count,
        variants: variants.iter().map(|v| v.to_string()).collect(),
        units: names
            .iter()
            .flat_map(|v| categories.iter().map(|c| Unit { variant: v.to_string(), category: c.to_string() }))
            .collect(),
    }
}

#[test]
fn units_go_round_robin_over_variants_then_categories() {
    let p = plan(3, &["k=1", "k=2"], &["a", "b", "c"]);
    let owned = |i, v| p.shard(i, v).map(|s| s.categories.unwrap().into_iter().collect::<Vec<_>>());
    // A sweep of 2 variants x 3 categories on 3 tasks: each task has one category in both.
    assert_eq!(owned(0, "k=1"), Some(vec!["a".to_string()]));
    assert_eq!(owned(0, "k=2"), Some(vec!["a".to_string()]));
    assert_eq!(owned(2, "k=2"), Some(vec!["c".to_string()]));
    let p = plan(4, &["k=1", "k=2"], &["a", "b", "c"]);
    assert_eq!(p.task_runs(3), vec!["k=2".to_string()], "unit 3 is (k=2, a), unit 7 does not exist");
    assert!(p.check_task(5).is_ok() && p.check_task(6).is_err());
    let shard = p.shard(0, "k=1").unwrap();
    assert!(shard.owns_test_sample(&meta("a", 7)) && !shard.owns_test_sample(&meta("b", 0)));
    let by_sample = Shard::by_sample(1, 2);
    assert!(by_sample.owns_test_sample(&meta("a", 3)) && !by_sample.owns_test_sample(&meta("a", 4)));
    assert!(by_sample.owns_category(&meta("z", 4)));
}

#[test]
fn a_shared_directory_refuses_another_plan_and_is_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let four = plan(4, &[], &["a", "b", "c", "d"]);
    join(&root, &four).unwrap();
    join(&root, &four).unwrap();
    let recorded = std::fs::read(root.join(PLAN_FILE)).unwrap();
    let e = join(&root, &plan(3, &[], &["a", "b", "c", "d"])).unwrap_err().to_string();
    assert!(e.contains("split into 4 tasks, and this task says 3"), "{e}");
    let e = join(&root, &plan(4, &[], &["a", "b", "c", "e"])).unwrap_err().to_string();
    assert!(e.contains("[a, b, c, d]") && e.contains("[a, b, c, e]"), "{e}");
    assert_eq!(std::fs::read(root.join(PLAN_FILE)).unwrap(), recorded);
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1, "no temporary file is left");
    // A task that finds another one publishing the plan waits for nothing and joins.
    let racing = tmp.path().join("racing");
    std::fs::create_dir_all(&racing).unwrap();
    std::fs::write(racing.join(format!(".{PLAN_FILE}.tmp-1-2")), b"{").unwrap();
    join(&racing, &four).unwrap();
    assert_eq!(read_plan(&racing.join(PLAN_FILE)).unwrap(), four);
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    assert!(matches!(join(&other, &four), Err(ShardError::NotShared(_))));
}

fn completed(shard: &str) -> String {
    RunRecord::Completed { run: test_summary(Some(shard), Vec::new()) }.to_json_text().unwrap()
}

#[test]
fn merge_names_the_tasks_that_did_not_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let p = plan(4, &[], &["a", "b", "c", "d"]);
    join(&root, &p).unwrap();
    for i in [0, 2] {
        let dir = shard_dir(&root, i);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(RUN_FILE), completed(&format!("{i}/4"))).unwrap();
    }
    std::fs::create_dir_all(shard_dir(&root, 3)).unwrap();
    let running = RunRecord::Running { pipeline: "p".into(), started: "t".into(), pid: 1 };
    std::fs::write(shard_dir(&root, 3).join(RUN_FILE), running.to_json_text().unwrap()).unwrap();
    let e = merge_set(std::slice::from_ref(&root)).unwrap_err().to_string();
    assert!(e.contains("2 of 4 tasks did not complete: task 1, task 3") && e.contains("--array=1,3"), "{e}");
    assert!(e.contains("task 1: never started") && e.contains("says `running`"), "{e}");
    std::fs::write(shard_dir(&root, 3).join(RUN_FILE), completed("3/4")).unwrap();
    std::fs::create_dir_all(shard_dir(&root, 1)).unwrap();
    std::fs::write(shard_dir(&root, 1).join(RUN_FILE), completed("1/4")).unwrap();
    let set = merge_set(std::slice::from_ref(&root)).unwrap();
    assert_eq!(set.runs(), (0..4).map(|i| shard_dir(&root, i)).collect::<Vec<_>>());
    assert_eq!(set.default_out, Some(root.join("merged")));
}
