//! The cluster integration shipped in deploy/, checked without a cluster: the Kubernetes
//! manifests are well-formed objects whose env, arguments and volumes fit together, the
//! Containerfile installs what they use, and the Slurm scripts pass the right arguments to
//! `anoflow` and `sbatch` (both replaced by recorders).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anoflow_e2e::workspace_root;
use serde_yaml::Value;

fn deploy(rel: &str) -> PathBuf {
    workspace_root().join("deploy").join(rel)
}

fn manifest(rel: &str) -> Value {
    let path = deploy(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    for key in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(!value[key].is_null(), "{rel}: no `{key}`");
    }
    assert!(value["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()), "{rel}: metadata.name");
    value
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// The value following `flag` in a container's args.
fn arg_after(args: &[String], flag: &str) -> String {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[i + 1].clone()
}

/// Checks what a Job needs to be accepted (batch/v1, a pod template that never restarts in
/// place, named containers with an image) and returns its only container.
fn job_container(job: &Value, rel: &str) -> Value {
    assert_eq!((job["apiVersion"].as_str(), job["kind"].as_str()), (Some("batch/v1"), Some("Job")), "{rel}");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"), "{rel}: a failed task is retried as a new pod");
    let containers = pod["containers"].as_sequence().unwrap_or_else(|| panic!("{rel}: no containers"));
    assert_eq!(containers.len(), 1, "{rel}");
    let c = containers[0].clone();
    assert!(c["name"].as_str().is_some() && c["image"].as_str().is_some(), "{rel}: container name and image");
    c
}

/// The claim each mount path of `container` comes from, checked against the pod's volumes.
fn mounted_claims(job: &Value, container: &Value, rel: &str) -> Vec<(String, String)> {
    let volumes = job["spec"]["template"]["spec"]["volumes"].as_sequence().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for mount in container["volumeMounts"].as_sequence().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap();
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{rel}: mount `{name}` has no volume"));
        let claim = volume["persistentVolumeClaim"]["claimName"].as_str().unwrap_or_else(|| panic!("{rel}: {name}"));
        out.push((mount["mountPath"].as_str().unwrap().to_string(), claim.to_string()));
    }
    out
}

#[test]
fn the_indexed_job_tells_anoflow_its_count_and_shares_one_volume_with_the_merge() {
    let pvc = manifest("k8s/pvc.yaml");
    assert_eq!(pvc["kind"].as_str(), Some("PersistentVolumeClaim"));
    assert!(strings(&pvc["spec"]["accessModes"]).contains(&"ReadWriteMany".to_string()), "pods on several nodes");
    let claim = pvc["metadata"]["name"].as_str().unwrap().to_string();

    let tasks = manifest("k8s/tasks-job.yaml");
    let c = job_container(&tasks, "tasks-job.yaml");
    let spec = &tasks["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"), "JOB_COMPLETION_INDEX is set only for Indexed Jobs");
    let completions = spec["completions"].as_u64().unwrap();
    assert!(spec["parallelism"].as_u64().unwrap() <= completions);
    let env = c["env"].as_sequence().unwrap();
    let count = env.iter().find(|e| e["name"].as_str() == Some("ANOFLOW_SHARD_COUNT")).expect("ANOFLOW_SHARD_COUNT");
    assert_eq!(count["value"].as_str(), Some(completions.to_string().as_str()), "the count is the completions");
    let args = strings(&c["args"]);
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--replace".to_string()), "a retried index replaces what it wrote");
    assert!(!args.contains(&"--shard".to_string()), "the index comes from JOB_COMPLETION_INDEX");

    let mounts = mounted_claims(&tasks, &c, "tasks-job.yaml");
    let shared: Vec<&(String, String)> = mounts.iter().filter(|(_, cl)| *cl == claim).collect();
    assert_eq!(shared.len(), 1, "the shared claim is mounted once: {mounts:?}");
    let shared_path = Path::new(&shared[0].0);
    let (run_dir, cache) = (arg_after(&args, "--out"), arg_after(&args, "--cache"));
    assert!(Path::new(&run_dir).starts_with(shared_path) && Path::new(&cache).starts_with(shared_path), "{args:?}");
    // The pipeline is one the image holds, and the dataset its env names is mounted.
    let pipeline = args[1].strip_prefix("/opt/anoflow/").expect("a pipeline of the image");
    let text = std::fs::read_to_string(workspace_root().join(pipeline)).expect("a shipped pipeline");
    let root = env.iter().find(|e| e["name"].as_str() == Some("MVTEC_ROOT")).expect("MVTEC_ROOT")["value"].clone();
    assert!(text.contains("${MVTEC_ROOT"), "{pipeline} reads MVTEC_ROOT");
    assert!(mounts.iter().any(|(path, _)| Path::new(root.as_str().unwrap()).starts_with(path)), "dataset mounted");

    let merge = manifest("k8s/merge-job.yaml");
    let m = job_container(&merge, "merge-job.yaml");
    assert!(merge["spec"]["completionMode"].is_null(), "the merge is one pod");
    let margs = strings(&m["args"]);
    assert_eq!((margs[0].as_str(), margs[1].as_str()), ("merge", run_dir.as_str()), "it merges the tasks' run");
    assert_eq!(m["image"], c["image"]);
    let mmounts = mounted_claims(&merge, &m, "merge-job.yaml");
    assert!(mmounts.contains(&(shared[0].0.clone(), claim.clone())), "{mmounts:?}");
    assert!(Path::new(&arg_after(&margs, "--out")).starts_with(shared_path));

    // run.sh applies the merge only after the Indexed Job completed.
    let script = std::fs::read_to_string(deploy("k8s/run.sh")).unwrap();
    let wait = script.find("wait --for=condition=complete --timeout=\"$timeout\" job/anoflow-tasks").expect("waits");
    assert!(script.find("merge-job.yaml").unwrap() > wait);
    assert!(script.contains(&format!("job/{}", tasks["metadata"]["name"].as_str().unwrap())));
}

#[test]
fn the_containerfile_installs_what_the_manifests_use() {
    let text = std::fs::read_to_string(deploy("k8s/Containerfile")).unwrap();
    let fetch = std::fs::read_to_string(workspace_root().join("tools/fetch_onnxruntime.sh")).unwrap();
    let version = fetch.lines().find_map(|l| l.strip_prefix("ORT_VERSION=\"${ORT_VERSION:-")).unwrap();
    let version = version.trim_end_matches("}\"");
    assert!(text.contains(&format!("ENV ORT_DYLIB_PATH=/opt/anoflow/lib/libonnxruntime.so.{version}")), "{version}");
    for needed in [
        "tools/setup.sh",
        "cargo build --release --workspace",
        "libanoflow_plugin_*.so /opt/anoflow/bin/",
        "/src/models /opt/anoflow/models",
        "/src/pipelines /opt/anoflow/pipelines",
        "RUN anoflow doctor",
    ] {
        assert!(text.contains(needed), "Containerfile: no `{needed}`");
    }
    let image = manifest("k8s/tasks-job.yaml")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert!(text.contains(&format!("-t {}", image.as_str().unwrap())), "the manifests use the image it builds");
}

/// A directory with recorders named `anoflow` and `sbatch`: each appends its arguments, one
/// per line, and a `--` line to `calls`; `sbatch --parsable` prints a job id.
fn recorders(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, reply) in [("anoflow", ""), ("sbatch", "echo $((999 + $(grep -c -- '^--$' \"$CALLS\")))")] {
        let path = bin.join(name);
        let script = format!(
            "#!/bin/bash\n{{ echo \"{name}\"; printf '%s\\n' \"$@\"; env | grep -E '^(ANOFLOW_|SLURM_)' | sort | sed 's/^/env /'; echo --; }} >> \"$CALLS\"\n{reply}\n"
        );
        std::fs::write(&path, script).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    bin
}

fn calls(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
    text.split("--\n").filter(|c| !c.is_empty()).map(|c| c.lines().map(str::to_string).collect()).collect()
}

fn bash(dir: &Path, script: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let bin = recorders(dir);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("bash");
    cmd.arg(script).args(args).current_dir(dir).env("PATH", path).env("CALLS", dir.join("calls"));
    for var in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "ANOFLOW_SHARD_COUNT", "ANOFLOW_SET"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn the_slurm_scripts_queue_an_array_and_a_dependent_merge_with_the_run_wired_through() {
    for script in ["slurm/anoflow-task.sbatch", "slurm/anoflow-merge.sbatch", "slurm/submit.sh", "k8s/run.sh"] {
        let o = Command::new("bash").arg("-n").arg(deploy(script)).output().unwrap();
        assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = bash(
        dir,
        &deploy("slurm/submit.sh"),
        &[
            "-n",
            "4",
            "-p",
            "p.yaml",
            "-o",
            "runs/x",
            "-s",
            "data.categories=[pill, tiles]",
            "-s",
            "ttt.k=2",
            "--",
            "-p",
            "cpu",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1000 1001", "the two job ids");
    let c = calls(dir);
    assert_eq!(c.len(), 2, "{c:?}");
    let (array, merge) = (&c[0], &c[1]);
    assert!(array.contains(&"--array=0-3".into()) && array.contains(&"--export=ALL".into()), "{array:?}");
    assert!(
        array.last().is_some_and(|a| a.starts_with("env ")) && array.iter().any(|a| a.ends_with("anoflow-task.sbatch"))
    );
    assert!(array.iter().any(|a| a == "-p") && merge.iter().any(|a| a == "-p"), "sbatch args go to both jobs");
    assert!(merge.contains(&"--dependency=afterok:1000".into()), "{merge:?}");
    assert!(
        merge.contains(&"--kill-on-invalid-dep=yes".into())
            && merge.iter().any(|a| a.ends_with("anoflow-merge.sbatch"))
    );
    let run_dir = dir.join("runs/x").display().to_string();
    assert!(array.contains(&format!("env ANOFLOW_RUN_DIR={run_dir}")), "absolute paths: {array:?}");
    assert!(array.contains(&format!("env ANOFLOW_PIPELINE={}", dir.join("p.yaml").display())));
    assert!(!array.iter().any(|a| a.starts_with("env ANOFLOW_SHARD_COUNT")), "the whole array: its own count");

    // A task, as Slurm starts it with what submit.sh exported.
    let task_env = [
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("ANOFLOW_PIPELINE", "/shared/p.yaml"),
        ("ANOFLOW_RUN_DIR", "/shared/runs/x"),
        ("ANOFLOW_SET", "data.categories=[pill, tiles]\nttt.k=2\n"),
    ];
    std::fs::remove_file(dir.join("calls")).unwrap();
    let o = bash(dir, &deploy("slurm/anoflow-task.sbatch"), &[], &task_env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let task = &calls(dir)[0];
    let args: Vec<&str> = task.iter().skip(1).filter(|a| !a.starts_with("env ")).map(String::as_str).collect();
    assert_eq!(&args[..4], ["run", "/shared/p.yaml", "--out", "/shared/runs/x"]);
    for pair in [
        ["--cache", "/shared/runs/x.cache"],
        ["--set", "data.categories=[pill, tiles]"],
        ["--set", "ttt.k=2"],
        ["--shard-by", "category"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    assert!(args.contains(&"--replace") && !args.contains(&"--shard"), "index and count from Slurm's env: {args:?}");

    // Re-running some indices: a smaller array, told the run's count.
    std::fs::remove_file(dir.join("calls")).unwrap();
    let o = bash(dir, &deploy("slurm/submit.sh"), &["-n", "4", "-p", "p.yaml", "-o", "runs/x", "-a", "1,3"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let array = &calls(dir)[0];
    assert!(array.contains(&"--array=1,3".into()) && array.contains(&"env ANOFLOW_SHARD_COUNT=4".into()), "{array:?}");
    std::fs::remove_file(dir.join("calls")).unwrap();
    let env = [("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "2"), ("ANOFLOW_SHARD_COUNT", "4")];
    let env: Vec<(&str, &str)> = task_env[2..4].iter().copied().chain(env).collect();
    let o = bash(dir, &deploy("slurm/anoflow-task.sbatch"), &[], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(calls(dir)[0].windows(2).any(|w| w == ["--shard", "3/4"]), "{:?}", calls(dir)[0]);

    // The merge job merges the shared run directory.
    std::fs::remove_file(dir.join("calls")).unwrap();
    let o = bash(dir, &deploy("slurm/anoflow-merge.sbatch"), &[], &[("ANOFLOW_RUN_DIR", "/shared/runs/x")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let merge: Vec<String> = calls(dir)[0].iter().skip(1).filter(|a| !a.starts_with("env ")).cloned().collect();
    assert_eq!(merge, ["merge", "/shared/runs/x", "--out", "/shared/runs/x/merged", "--replace"]);
}
