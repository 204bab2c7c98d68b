//! Dataset synthesis: a killed run resumed equals an uninterrupted one file for file, two
//! shards merged equal one unsharded run byte for byte, and invalid plans name their field.
//! (The rectification rule is tested on hand-made probability tables in `synth::label`.)

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use synfer::Pipeline;
use synfer::face::analyzer::FaceAnalyzer;
use synfer::synth::{Plan, Shard, merge, run};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synfer-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// sd1-tiny with the AU test UNet and adapter (the web page's test model), as one folder.
fn model_dir(name: &str) -> PathBuf {
    let sd1: &[&str] = &[
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "vae",
    ];
    common::linked_model(
        &format!("synth-model-{name}"),
        &[("sd1-tiny", sd1), ("au", &["unet", "au_adapter"])],
    )
}

fn plan_text(model: &Path, total: usize) -> String {
    format!(
        r#"
model = "{}"
seed = 5
steps = 3
batch = 4
total = {total}
[shares]
neutral = 1.0
happy = 1.0
surprised = 1.0
[expressions.happy]
jitter = {{ AU12 = [-1.0, 1.0] }}
dropout = 0.25
[split]
train = 0.7
test = 0.3
"#,
        model.display()
    )
}

/// Every file under `dir` (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "file sets differ"
    );
    for (k, v) in &fa {
        assert!(fb[k] == *v, "{k} differs");
    }
}

#[test]
fn two_shards_merged_equal_one_unsharded_run() {
    let model = model_dir("shards");
    let plan = Plan::from_toml(&plan_text(&model, 18), "plan.toml").unwrap();
    let device = Device::flex();
    let pipe = Pipeline::load(&model, &device).unwrap();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let whole = temp_dir("whole");
    let records = run(&pipe, &analyzer, &plan, &whole, Shard::ALL, false, |_| {}).unwrap();
    assert_eq!(records.len(), 18);
    let indices: Vec<usize> = records.iter().map(|r| r.index).collect();
    assert_eq!(indices, (0..18).collect::<Vec<_>>());
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let dir = temp_dir(&format!("shard{i}"));
            let shard = Shard { index: i, count: 2 };
            run(&pipe, &analyzer, &plan, &dir, shard, false, |_| {}).unwrap();
            dir
        })
        .collect();
    // 18 items in blocks of 4: shard 0 takes blocks 0, 2, 4 (10 items), shard 1 blocks 1, 3.
    let lines = |d: &Path| {
        std::fs::read_to_string(d.join("manifest.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!((lines(&shards[0]), lines(&shards[1])), (10, 8));
    let merged = temp_dir("merged");
    merge(&shards, &merged).unwrap();
    assert_same_tree(&whole, &merged);
    // An incomplete set of shards is refused.
    let err = merge(&shards[..1], &temp_dir("half"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("shard 1/2 is missing"), "{err}");
    // Rerunning into a finished folder without --resume is refused; with it, nothing changes.
    assert!(run(&pipe, &analyzer, &plan, &whole, Shard::ALL, false, |_| {}).is_err());
    let mut made = usize::MAX;
    run(&pipe, &analyzer, &plan, &whole, Shard::ALL, true, |p| {
        made = p.this_run
    })
    .unwrap();
    assert_eq!(made, 0);
    assert_same_tree(&whole, &merged);
}

#[test]
fn a_killed_run_resumes_to_the_uninterrupted_result() {
    let model = model_dir("kill");
    let dir = temp_dir("kill");
    let plan_path = dir.join("plan.toml");
    std::fs::write(&plan_path, plan_text(&model, 40)).unwrap();
    let synth = |out: &Path, resume: bool| synth_cli(&plan_path, out, resume);
    let clean = dir.join("clean");
    assert!(synth(&clean, false).output().unwrap().status.success());

    let killed = dir.join("killed");
    let mut child = spawn_until(synth(&killed, false), &killed, 5);
    let manifest = killed.join("manifest.jsonl");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = std::fs::read_to_string(&manifest).unwrap().lines().count();
    assert!(
        done < 40,
        "the run finished before it was killed ({done} items)"
    );
    // A torn last line (a kill in the middle of an append) is dropped on resume.
    let mut torn = std::fs::read(&manifest).unwrap();
    torn.extend_from_slice(br#"{"file_name":"images/tr"#);
    std::fs::write(&manifest, torn).unwrap();
    let out = synth(&killed, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&clean, &killed);
    // A damaged line in the middle (not a torn last one) is an error naming its line.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{not a record";
    std::fs::write(&manifest, lines.join("\n") + "\n").unwrap();
    let out = synth(&killed, true).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("manifest.jsonl:3"),
        "{stderr}"
    );
}

#[test]
fn invalid_plans_name_the_field() {
    let cases = [
        (
            "total = 5\n[shares]\nhappy = 1.0\nsmug = 1.0\n",
            "shares.smug",
        ),
        ("[counts]\nhappy = 3\ncontempt = 2\n", "counts.contempt"),
        ("[counts]\nhappy = 0\n", "counts"),
        ("steps = 0\n[counts]\nhappy = 1\n", "steps"),
        ("batch = 100\n[counts]\nhappy = 1\n", "batch"),
        ("scheduler = \"lms\"\n[counts]\nhappy = 1\n", "scheduler"),
        (
            "[counts]\nhappy = 1\n[expressions.happy]\naus = { AU12 = 9.0 }\n",
            "expressions.happy.aus.AU12",
        ),
        (
            "[counts]\nhappy = 1\n[expressions.happy]\njitter = { AU12 = [1.0, -1.0] }\n",
            "expressions.happy.jitter.AU12",
        ),
        (
            "[counts]\nhappy = 1\n[prompt]\ntemplates = [\"a {mood} face\"]\n",
            "mood",
        ),
        (
            "[counts]\nhappy = 1\n[label]\nconfidence = 2.0\n",
            "label.confidence",
        ),
        ("[counts]\nhappy = 1\nstepz = 3\n", "stepz"),
    ];
    for (text, field) in cases {
        let err = Plan::from_toml(text, "plan.toml").unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("plan.toml"),
            "{text:?} → {err}"
        );
    }
    assert!(Shard::parse("2/2").is_err() && Shard::parse("x").is_err());
    assert_eq!(Shard::parse("1/3").unwrap(), Shard { index: 1, count: 3 });
}

#[test]
fn items_are_deterministic_balanced_and_follow_the_plan() {
    let text = "seed = 9\ntotal = 70\n[shares]\nneutral = 1.0\nhappy = 2.0\nsad = 4.0\n\
                [expressions.happy]\naus = { AU26 = 2.0 }\n[split]\ntrain = 1.0\ntest = 1.0\n";
    let plan = Plan::from_toml(text, "plan.toml").unwrap();
    let items = plan.items();
    assert_eq!(items, plan.items());
    let count = |e: &str| items.iter().filter(|i| i.expression.name() == e).count();
    assert_eq!(
        (count("neutral"), count("happy"), count("sad")),
        (10, 20, 40)
    );
    // Interleaved: the first 14 items already hold every class.
    for e in ["neutral", "happy", "sad"] {
        assert!(items[..14].iter().any(|i| i.expression.name() == e), "{e}");
    }
    for i in items.iter().filter(|i| i.expression.name() == "happy") {
        // Happy's FineFace prototype (AU6 = 3, AU12 = 4) with AU26 set by the plan.
        assert_eq!(
            (i.aus["AU6"], i.aus["AU12"], i.aus["AU26"]),
            (3.0, 4.0, 2.0)
        );
    }
    let tests = items.iter().filter(|i| i.split == "test").count();
    assert!((20..=50).contains(&tests), "{tests} of 70 in test");
}

/// A plan with `[layout]` from a folder: item `k` starts from image `k mod n`, the records name
/// it, and two shards merged equal one unsharded run byte for byte.
#[test]
fn layout_faces_are_a_function_of_the_item() {
    let model = model_dir("layout");
    let faces = temp_dir("layout-faces");
    for (i, name) in ["a.png", "b.png"].iter().enumerate() {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, 60 + 90 * i as u8])
        });
        img.save(faces.join(name)).unwrap();
    }
    let text = format!(
        "{}\n[layout]\nsource = \"folder:{}\"\nstrength = 0.5\n",
        plan_text(&model, 8),
        faces.display()
    );
    let plan = Plan::from_toml(&text, "plan.toml").unwrap();
    let device = Device::flex();
    let pipe = Pipeline::load(&model, &device).unwrap();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let whole = temp_dir("layout-whole");
    let records = run(&pipe, &analyzer, &plan, &whole, Shard::ALL, false, |_| {}).unwrap();
    for r in &records {
        let want = faces.join(["a.png", "b.png"][r.index % 2]);
        assert_eq!(
            r.layout.as_deref(),
            Some(want.display().to_string().as_str())
        );
    }
    let (s0, s1) = (temp_dir("layout-s0"), temp_dir("layout-s1"));
    for (dir, index) in [(&s0, 0), (&s1, 1)] {
        let shard = Shard { index, count: 2 };
        run(&pipe, &analyzer, &plan, dir, shard, false, |_| {}).unwrap();
    }
    let merged = temp_dir("layout-merged");
    merge(&[s0, s1], &merged).unwrap();
    assert_same_tree(&whole, &merged);
}

/// Starts `synth` with its output silenced and waits (at most 2 minutes) until the manifest of
/// `out` lists `items` records.
fn spawn_until(mut synth: Command, out: &Path, items: usize) -> std::process::Child {
    let child = synth
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest = out.join("manifest.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&manifest).map_or(0, |t| t.lines().count()) < items
        && started.elapsed().as_secs() < 120
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

/// The CLI on `plan` into `out`.
fn synth_cli(plan: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_synfer"));
    c.args(["synth", "--device", "cpu", "--plan"])
        .arg(plan)
        .arg("--out")
        .arg(out);
    if resume {
        c.arg("--resume");
    }
    c
}

#[test]
fn a_second_process_cannot_enter_a_folder_in_use() {
    let model = model_dir("lock");
    let dir = temp_dir("lock");
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, plan_text(&model, 40)).unwrap();
    let out = dir.join("out");
    let mut first = spawn_until(synth_cli(&plan, &out, false), &out, 1);
    let manifest = out.join("manifest.jsonl");
    // While the first run works, a resume of the same folder is refused.
    let second = synth_cli(&plan, &out, true).output().unwrap();
    let running = first.try_wait().unwrap().is_none();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(running, "the first run ended before the second started");
    assert!(
        !second.status.success() && stderr.contains("in use"),
        "{stderr}"
    );
    // Once the holder dies (SIGKILL: no cleanup), its lock is gone and a resume finishes the
    // folder with every item exactly once.
    first.kill().unwrap();
    first.wait().unwrap();
    let resumed = synth_cli(&plan, &out, true).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut indices: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..40).collect::<Vec<_>>());
}

#[test]
fn a_resume_with_another_model_is_refused_with_what_changed() {
    let model = model_dir("fingerprint");
    let plan = Plan::from_toml(&plan_text(&model, 4), "plan.toml").unwrap();
    let device = Device::flex();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let out = temp_dir("fingerprint-out");
    let pipe = Pipeline::load(&model, &device).unwrap();
    run(&pipe, &analyzer, &plan, &out, Shard::ALL, false, |_| {}).unwrap();
    // The model is changed in place: its scheduler config gains a trailing newline.
    let config = model.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::remove_file(model.join("scheduler")).unwrap();
    std::fs::create_dir(model.join("scheduler")).unwrap();
    std::fs::write(&config, format!("{text}\n")).unwrap();
    let changed = Pipeline::load(&model, &device).unwrap();
    let err = run(&changed, &analyzer, &plan, &out, Shard::ALL, true, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scheduler/scheduler_config.json changed") && err.contains("resume"),
        "{err}"
    );
    // Shards of two models do not merge either.
    let two = Plan::from_toml(&plan_text(&model, 8), "plan.toml").unwrap();
    let (a, b) = (temp_dir("fp-shard0"), temp_dir("fp-shard1"));
    run(
        &pipe,
        &analyzer,
        &two,
        &a,
        Shard { index: 0, count: 2 },
        false,
        |_| {},
    )
    .unwrap();
    run(
        &changed,
        &analyzer,
        &two,
        &b,
        Shard { index: 1, count: 2 },
        false,
        |_| {},
    )
    .unwrap();
    let err = merge(&[a, b], &temp_dir("fp-merged"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn a_plan_is_refused_before_its_folder_is_touched() {
    let model = model_dir("early");
    let device = Device::flex();
    let pipe = Pipeline::load(&model, &device).unwrap();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let cases = [
        // A size the model cannot make, a voter that is not there, more shards than blocks.
        (
            format!("size = 13\n{}", plan_text(&model, 4)),
            Shard::ALL,
            "width",
        ),
        (
            format!(
                "{}[label]\nvoters = [\"/nonexistent/fer\"]\n",
                plan_text(&model, 4)
            ),
            Shard::ALL,
            "/nonexistent/fer",
        ),
        (
            plan_text(&model, 4),
            Shard { index: 0, count: 3 },
            "at most 1 shards",
        ),
    ];
    for (i, (text, shard, needle)) in cases.into_iter().enumerate() {
        let plan = Plan::from_toml(&text, "plan.toml").unwrap();
        let out = std::env::temp_dir().join(format!("synfer-early-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let err = run(&pipe, &analyzer, &plan, &out, shard, false, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!out.exists(), "{needle}: {} was created", out.display());
    }
    // Absurd numbers are errors, not aborts or overflow panics.
    for (text, field) in [
        ("total = 1000000000000\n[shares]\nhappy = 1.0\n", "total"),
        (
            "[counts]\nhappy = 18446744073709551615\nsad = 1\n",
            "counts",
        ),
    ] {
        let err = Plan::from_toml(text, "plan.toml").unwrap_err().to_string();
        assert!(err.contains(field), "{text:?} → {err}");
    }
    assert!(Shard::parse("0/1000000000000").is_err());
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let model = model_dir("pipe");
    let dir = temp_dir("pipe");
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, plan_text(&model, 4)).unwrap();
    // `synfer synth … | true`: the reader is gone before the summary is printed.
    let mut child = synth_cli(&plan, &dir.join("out"), false)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// The members of every tar of `dir` (tar name → member names), read with the system `tar`
/// (GNU tar or bsdtar), independent of synfer's reader.
fn tar_listing(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("tar") {
            let list = Command::new("tar").arg("-tf").arg(&p).output().unwrap();
            assert!(list.status.success(), "tar -tf {}", p.display());
            let names = String::from_utf8(list.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            out.insert(p.file_name().unwrap().to_string_lossy().into_owned(), names);
        }
    }
    out
}

#[test]
fn webdataset_shards_resume_and_merge_like_the_folder_output() {
    let model = model_dir("wds");
    let dir = temp_dir("wds");
    let plan_path = dir.join("plan.toml");
    std::fs::write(
        &plan_path,
        "format = \"webdataset\"\nshard_size = 5\n".to_string() + &plan_text(&model, 40),
    )
    .unwrap();
    let plan = Plan::read(&plan_path).unwrap();
    let clean = dir.join("clean");
    let out = synth_cli(&plan_path, &clean, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every kept item is in its split's tar as KEY.cls, KEY.json, KEY.png; nothing is left
    // loose; tar k of a split holds that split's items of rank 5k..5k+4.
    let listing = tar_listing(&clean);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(clean.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut rank: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept = 0;
    for r in &records {
        let split = r["split"].as_str().unwrap().to_string();
        let k = rank.entry(split.clone()).or_insert(0);
        let tar = format!("{split}-{:06}.tar", *k / 5);
        *k += 1;
        let id = r["id"].as_str().unwrap();
        let members = &listing[&tar];
        if let Some(file) = r["file_name"].as_str() {
            kept += 1;
            assert_eq!(file, format!("{tar}/{id}.png"));
            for ext in ["cls", "json", "png"] {
                assert!(
                    members.contains(&format!("{id}.{ext}")),
                    "{tar}: {id}.{ext}"
                );
            }
        } else {
            assert!(
                !members.iter().any(|m| m.starts_with(id)),
                "dropped {id} in {tar}"
            );
        }
    }
    let members: usize = listing.values().map(Vec::len).sum();
    assert_eq!(members, 3 * kept);
    assert!(!clean.join(".staging").exists() && !clean.join("images").exists());
    assert!(!clean.join("metadata.jsonl").exists());
    // Each tar's .cls is the index of its record's label.
    let tar_bytes = std::fs::read(clean.join(listing.keys().next().unwrap())).unwrap();
    let files = synfer::synth::webdataset::untar(&tar_bytes, "t").unwrap();
    for (name, data) in &files {
        if let Some(id) = name.strip_suffix(".json") {
            let meta: serde_json::Value = serde_json::from_slice(data).unwrap();
            let cls = &files
                .iter()
                .find(|(n, _)| *n == format!("{id}.cls"))
                .unwrap()
                .1;
            let index: usize = std::str::from_utf8(cls).unwrap().parse().unwrap();
            assert_eq!(synfer::expression::CLASSES[index], meta["label"]);
            assert_eq!(meta["file_name"], format!("{id}.png"));
        }
    }

    // Killed after 12 items, resumed: the same bytes, no partial tar.
    let killed = dir.join("killed");
    let mut child = spawn_until(synth_cli(&plan_path, &killed, false), &killed, 12);
    let manifest = killed.join("manifest.jsonl");
    child.kill().unwrap();
    child.wait().unwrap();
    let done = std::fs::read_to_string(&manifest).unwrap().lines().count();
    assert!(done < 40, "the run finished before it was killed");
    for (tar, _) in tar_listing(&killed) {
        let bytes = std::fs::read(killed.join(&tar)).unwrap();
        assert!(
            synfer::synth::webdataset::untar(&bytes, &tar).is_ok(),
            "{tar} is partial"
        );
    }
    let out = synth_cli(&plan_path, &killed, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&clean, &killed);

    // Two shards merged: the same tars as the unsharded run.
    let device = Device::flex();
    let pipe = Pipeline::load(&model, &device).unwrap();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let d = dir.join(format!("shard{i}"));
            run(
                &pipe,
                &analyzer,
                &plan,
                &d,
                Shard { index: i, count: 2 },
                false,
                |_| {},
            )
            .unwrap();
            d
        })
        .collect();
    let merged = dir.join("merged");
    merge(&shards, &merged).unwrap();
    assert_same_tree(&clean, &merged);
}
