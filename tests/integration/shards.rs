//! Issue 12, shards: N processes split one manifest with no coordination, into one folder,
//! each variant exactly once; the folder's results.csv, status and report merge them; a
//! night with another N submits nothing again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use crate::helpers::*;
use stembatch::sim::SimHandle;

const VARIANTS: usize = 15;

/// Runs shards `0..count` of `manifest` at once into `out`, each as its own process.
async fn run_shards(sim: &SimHandle, manifest: &Path, out: &Path, count: u32) -> Vec<Output> {
    let runs = (0..count).map(|i| {
        let shard = format!("{i}/{count}");
        let mut command = run_command(sim, manifest, out, &["--shard", &shard]);
        async move {
            tokio::time::timeout(RUN_TIMEOUT, command.output())
                .await
                .expect("the shard finished in time")
                .expect("the shard ran")
        }
    });
    futures::future::join_all(runs).await
}

/// How many times the simulator was asked for each variant (by its tags).
fn submits_by_tags(sim: &SimHandle) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for submit in sim.submissions() {
        *counts.entry(submit.request.input.tags.clone()).or_default() += 1;
    }
    counts
}

/// The variant ids of a results.csv, each once, in order.
fn variant_ids(rows: &[std::collections::HashMap<String, String>]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    rows.iter()
        .map(|r| r["variant_id"].clone())
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_three_shards_run_every_variant_exactly_once_into_one_folder() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, VARIANTS));
    let out = dir.path().join("out");

    for (i, run) in run_shards(&sim, &manifest, &out, 3)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(run.status.code(), Some(0), "shard {i}: {}", stderr(run));
        assert!(
            stderr(run).contains(&format!("shard {i}/3")),
            "{}",
            stderr(run)
        );
    }

    // Every variant submitted once, by exactly one of the shards.
    let submits = submits_by_tags(&sim);
    assert_eq!(submits.len(), VARIANTS, "{submits:?}");
    assert!(submits.values().all(|&n| n == 1), "{submits:?}");
    // The parts are disjoint, and together they are the manifest.
    let mut from_parts = Vec::new();
    for i in 0..3 {
        let part = out.join(format!(".stembatch/shard-{i}-of-3"));
        let (header, rows) = read_results(&part);
        assert_eq!(header.join(","), SPEC_HEADER);
        from_parts.extend(variant_ids(&rows));
    }
    assert_eq!(from_parts.len(), VARIANTS);
    assert_eq!(from_parts.iter().collect::<BTreeSet<_>>().len(), VARIANTS);
    // The folder's results.csv has every variant, finished, in manifest order.
    let (header, rows) = read_results(&out);
    assert_eq!(header.join(","), SPEC_HEADER);
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);
    let plan = stembatch(&["plan", path_str(&manifest), "--csv"], None).await;
    let planned: Vec<String> = csv::Reader::from_reader(plan.stdout.as_slice())
        .records()
        .map(|r| r.unwrap()[3].to_owned())
        .collect();
    assert_eq!(variant_ids(&rows), planned, "manifest order");

    let status = status_json(&out).await;
    assert_eq!(status["total"]["finished"], VARIANTS, "{status}");
    // report rebuilds results.csv from the parts alone.
    std::fs::remove_file(out.join("results.csv")).unwrap();
    let report = stembatch(&["report", path_str(&out)], None).await;
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    let (_, rebuilt) = read_results(&out);
    assert_eq!(rebuilt.len(), rows.len());
    assert!(out.join("report.html").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_night_with_another_shard_count_or_none_submits_nothing() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, VARIANTS));
    let out = dir.path().join("out");
    for run in run_shards(&sim, &manifest, &out, 3).await {
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    }
    let bought = sim.stats().tasks_created;
    assert_eq!(bought, VARIANTS as u64);

    for run in run_shards(&sim, &manifest, &out, 2).await {
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
        assert!(stderr(&run).contains("new_tasks=0"), "{}", stderr(&run));
    }
    let whole = run_against(&sim, &manifest, &out).await;
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    assert!(stderr(&whole).contains("new_tasks=0"), "{}", stderr(&whole));
    assert_eq!(sim.stats().tasks_created, bought, "nothing bought twice");
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);

    // The manifest grows: only the new variants are bought, each by one shard.
    std::fs::write(&manifest, variants_manifest(FAST_RUN, VARIANTS + 4)).unwrap();
    for run in run_shards(&sim, &manifest, &out, 4).await {
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    }
    assert_eq!(sim.stats().tasks_created, bought + 4);
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS + 4);

    // The manifest shrinks and only one shard of 3 runs: the folder's results.csv lists
    // exactly the manifest's variants, whatever older parts hold.
    std::fs::write(&manifest, variants_manifest(FAST_RUN, VARIANTS - 5)).unwrap();
    let one = run_command(&sim, &manifest, &out, &["--shard", "0/3"])
        .output()
        .await
        .unwrap();
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let plan = stembatch(&["plan", path_str(&manifest), "--csv"], None).await;
    let planned: BTreeSet<String> = csv::Reader::from_reader(plan.stdout.as_slice())
        .records()
        .map(|r| r.unwrap()[3].to_owned())
        .collect();
    let (_, rows) = read_results(&out);
    let listed = variant_ids(&rows);
    assert_eq!(listed.len(), planned.len(), "{listed:?}");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), planned);
    assert!(rows.iter().all(|r| r["status"] == "finished"), "{rows:?}");
    let report = stembatch(&["report", path_str(&out)], None).await;
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    assert_eq!(
        read_results(&out).1,
        rows,
        "report keeps the manifest's variants"
    );
}

/// The scheduler's environment picks the shard: the same variants as `--shard`.
#[tokio::test]
async fn issue_12_the_shard_defaults_from_kubernetes_and_slurm() {
    let (_dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, VARIANTS));
    let plan = |envs: Vec<(&'static str, &'static str)>, extra: Vec<&'static str>| {
        let manifest = manifest.clone();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stembatch"));
            command
                .args(["plan", path_str(&manifest), "--csv"])
                .args(extra);
            // Only the variables of each case: not those of a CI that runs in Slurm.
            for var in stembatch::shard::ENV_VARS {
                command.env_remove(var);
            }
            command.envs(envs).output().await.unwrap()
        }
    };
    let ids = |output: &Output| -> Vec<String> {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
        csv::Reader::from_reader(output.stdout.as_slice())
            .records()
            .map(|r| r.unwrap()[3].to_owned())
            .collect()
    };
    let flag = ids(&plan(vec![], vec!["--shard", "1/3"]).await);
    assert!(!flag.is_empty() && flag.len() < VARIANTS);
    let k8s = plan(
        vec![
            ("JOB_COMPLETION_INDEX", "1"),
            ("STEMBATCH_SHARD_COUNT", "3"),
        ],
        vec![],
    );
    assert_eq!(ids(&k8s.await), flag);
    let k8s_flag = plan(
        vec![("JOB_COMPLETION_INDEX", "1")],
        vec!["--shard-count", "3"],
    );
    assert_eq!(ids(&k8s_flag.await), flag);
    let slurm = plan(
        vec![
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ],
        vec![],
    );
    assert_eq!(ids(&slurm.await), flag);

    let no_count = plan(vec![("JOB_COMPLETION_INDEX", "1")], vec![]).await;
    assert_eq!(no_count.status.code(), Some(2));
    assert!(
        stderr(&no_count).contains("STEMBATCH_SHARD_COUNT"),
        "{}",
        stderr(&no_count)
    );
    let bad = plan(vec![], vec!["--shard", "3/3"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    // A count alone would run every variant on every host that has it.
    let no_index = plan(vec![], vec!["--shard-count", "3"]).await;
    assert_eq!(no_index.status.code(), Some(2), "{}", stderr(&no_index));
    assert!(
        stderr(&no_index).contains("without a shard index"),
        "{}",
        stderr(&no_index)
    );
}

/// A whole-folder run (or a shard of another count) never shares a folder with a shard
/// that runs: their variants overlap. Shards of the same count do share it.
#[tokio::test]
async fn issue_12_runs_of_overlapping_layouts_never_share_a_folder() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 3));
    let out = dir.path().join("out");
    let running_shard = out.join(".stembatch/shard-1-of-3");
    std::fs::create_dir_all(&running_shard).unwrap();
    let lock = std::fs::File::create(running_shard.join("lock")).unwrap();
    lock.lock().unwrap();

    for extra in [vec![], vec!["--shard", "0/2"]] {
        let refused = run_command(&sim, &manifest, &out, &extra)
            .output()
            .await
            .unwrap();
        assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
        assert!(
            stderr(&refused).contains("shard-1-of-3"),
            "{}",
            stderr(&refused)
        );
    }
    assert_eq!(sim.stats().submit_calls, 0);
    let sibling = run_command(&sim, &manifest, &out, &["--shard", "0/3"])
        .output()
        .await
        .unwrap();
    assert_eq!(sibling.status.code(), Some(0), "{}", stderr(&sibling));
    drop(lock);

    // And the other way round: a whole-folder run keeps every shard out.
    let whole = std::fs::File::open(out.join(".stembatch/lock")).unwrap();
    whole.lock().unwrap();
    let refused = run_command(&sim, &manifest, &out, &["--shard", "2/3"])
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
}

/// A stembatch that knows no shards reads only the whole folder's journal: the first shard
/// run leaves a line there that such a version refuses ("upgrade stembatch") instead of
/// buying every variant again.
#[tokio::test]
async fn issue_12_a_sharded_folder_is_refused_by_a_stembatch_that_knows_no_shards() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 3));
    let out = dir.path().join("out");
    let run = run_command(&sim, &manifest, &out, &["--shard", "0/2"])
        .output()
        .await
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let whole = std::fs::read_to_string(out.join(".stembatch/journal.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = whole
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // Version 1 readers stop at a version 2 line before they read any other.
    assert_eq!(lines.len(), 1, "{whole}");
    assert_eq!(lines[0]["v"], 2, "{whole}");
    assert_eq!(lines[0]["kind"], "shards_used", "{whole}");
    // This version reads it and goes on.
    let again = run_command(&sim, &manifest, &out, &["--shard", "1/2"])
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(out.join(".stembatch/journal.jsonl")).unwrap(),
        whole,
        "announced once"
    );
}

/// Shards killed with -9 mid-run, then a night with another N, then a whole-folder run:
/// a submit that was on the wire is never made again unasked, every task that was
/// created is collected, and no variant is bought twice, whichever shard holds it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_shards_killed_mid_run_then_another_n_pay_for_nothing_twice() {
    const MANY: usize = 24;
    let sim = start_sim(stembatch::sim::SimConfig {
        task_duration: std::time::Duration::from_millis(1500),
        latency: std::time::Duration::from_millis(40),
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("submit_rate = \"1200/min\"", "submit_rate = \"600/min\"");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, MANY));
    let out = dir.path().join("out");
    let mut children: Vec<_> = (0..3)
        .map(|i| {
            run_command(&sim, &manifest, &out, &["--shard", &format!("{i}/3")])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until("a third of the tasks", || sim.stats().tasks_created >= 8).await;
    for child in &mut children {
        child.start_kill().unwrap();
        assert_eq!(
            child.wait().await.unwrap().code(),
            None,
            "killed by a signal"
        );
    }

    for run in run_shards(&sim, &manifest, &out, 2).await {
        assert!(matches!(run.status.code(), Some(0 | 1)), "{}", stderr(&run));
    }
    let whole = run_against(&sim, &manifest, &out).await;
    assert!(
        matches!(whole.status.code(), Some(0 | 1)),
        "{}",
        stderr(&whole)
    );
    assert!(stderr(&whole).contains("new_tasks=0"), "{}", stderr(&whole));

    let mut per_variant = BTreeMap::new();
    for submit in sim.submissions() {
        *per_variant
            .entry(submit.request.input.tags.clone())
            .or_insert(0) += 1;
    }
    assert!(per_variant.values().all(|&n| n == 1), "{per_variant:?}");
    let (_, rows) = read_results(&out);
    assert_eq!(variant_ids(&rows).len(), MANY);
    for row in &rows {
        // A submit on the wire at the kill may have created a task: kept as error, not
        // bought again; every other variant collected its task.
        match row["status"].as_str() {
            "finished" => assert!(per_variant.contains_key(&row["tags"]), "{row:?}"),
            "error" => assert!(row["error"].contains("may have created a task"), "{row:?}"),
            other => panic!("{other}: {row:?}"),
        }
    }
}
