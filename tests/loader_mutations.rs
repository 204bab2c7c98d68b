//! The loaders under random damage: safetensors files (header-focused), PyTorch archives and
//! pickles, single-file SD checkpoints, and every config and plan synfer reads, mutated with a fixed seed (bit flips,
//! interesting integers written over the bytes, truncation, insertion, deletion; JSON values
//! replaced by absurd ones). Torch archives verify their CRC-32 first, so the pickle machine
//! itself is fuzzed by `weights::torch::tests::mutated_real_pickles_never_panic` (repacked
//! archives). Each case must end in `Ok` or a typed error, never a panic.
//! Whatever loads is also used (every tensor read as f32, schedulers built), so that damage
//! which survives parsing is exercised too.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::fixture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use synfer::weights::TensorStore;

const SEED: u64 = 0x5eed_f022;

/// Cases per target = its base count × this (the whole run takes about a second).
const SCALE: usize = 5;

/// Interesting integers written over bytes (as little-endian u64 or u32).
const INTEGERS: [u64; 8] = [
    0,
    1,
    0xff,
    0xffff_ffff,
    u64::MAX,
    1 << 40,
    u64::MAX / 2,
    0x7fff_ffff,
];

/// Byte-level damage to `base`; `focus` bytes at the start are hit more often.
fn mutate_bytes(base: &[u8], focus: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut b = base.to_vec();
    let pos = |rng: &mut StdRng, len: usize| {
        if len == 0 {
            0
        } else if focus > 0 && rng.random_bool(0.8) {
            rng.random_range(0..focus.min(len))
        } else {
            rng.random_range(0..len)
        }
    };
    for _ in 0..rng.random_range(1..=3) {
        match rng.random_range(0..6) {
            0 => {
                let p = pos(rng, b.len());
                if let Some(x) = b.get_mut(p) {
                    *x ^= 1 << rng.random_range(0..8);
                }
            }
            1 => {
                let p = pos(rng, b.len());
                let v = INTEGERS[rng.random_range(0..INTEGERS.len())];
                let width = if rng.random_bool(0.5) { 8 } else { 4 };
                for (i, byte) in v.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(x) = b.get_mut(p + i) {
                        *x = *byte;
                    }
                }
            }
            2 => {
                let p = pos(rng, b.len());
                b.truncate(p);
            }
            3 => {
                let p = pos(rng, b.len());
                let n = rng.random_range(1..16);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(p..p, junk);
            }
            4 => {
                let p = pos(rng, b.len());
                let end = (p + rng.random_range(1..32)).min(b.len());
                b.drain(p..end);
            }
            _ => {
                let p = pos(rng, b.len());
                let end = (p + rng.random_range(1..32)).min(b.len());
                let copy = b[p..end].to_vec();
                b.splice(p..p, copy);
            }
        }
    }
    b
}

/// Absurd JSON values.
fn absurd(rng: &mut StdRng) -> Value {
    let pool = [
        json!(-1),
        json!(0),
        json!(1e300),
        json!(-1e300),
        json!(1_000_000_000u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(3.5),
        json!("16"),
        json!(""),
        json!(null),
        json!([]),
        json!([0, -1]),
        json!({}),
        json!(true),
    ];
    pool[rng.random_range(0..pool.len())].clone()
}

/// Replaces (or removes) a random value anywhere in `v`.
fn mutate_value(v: &mut Value, rng: &mut StdRng) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.random_range(0..map.len()))
                .cloned()
                .unwrap();
            match rng.random_range(0..4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, absurd(rng));
                }
                _ => mutate_value(map.get_mut(&key).unwrap(), rng),
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            if rng.random_bool(0.3) {
                items.remove(i);
            } else if rng.random_bool(0.5) {
                items[i] = absurd(rng);
            } else {
                mutate_value(&mut items[i], rng);
            }
        }
        other => *other = absurd(rng),
    }
}

/// A damaged copy of a JSON text: a value replaced (most cases) or bytes damaged.
fn mutate_json(text: &[u8], rng: &mut StdRng) -> Vec<u8> {
    // Python's `Infinity`/`NaN` tokens (scheduler configs) are not JSON: bytes only there.
    match serde_json::from_slice::<Value>(text) {
        Ok(mut v) if rng.random_bool(0.75) => {
            for _ in 0..rng.random_range(1..=2) {
                mutate_value(&mut v, rng);
            }
            serde_json::to_vec(&v).unwrap()
        }
        _ => mutate_bytes(text, 0, rng),
    }
}

/// Uses what loaded: every tensor read as f32 with its own shape.
fn read_all(store: &TensorStore) {
    let keys: Vec<String> = store.keys().map(String::from).collect();
    for k in keys {
        let shape = store.shape(&k).unwrap().to_vec();
        let _ = store.read_f32(&k, &shape);
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One loader fed `cases` damaged versions of `base`.
struct Target {
    name: String,
    base: Vec<u8>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    SafeTensors,
    Torch,
    UNetConfig,
    VaeConfig,
    TextConfig,
    SchedulerConfig,
    AdapterConfig,
    TokenizerConfig,
    FerConfig,
    Plan,
    /// A single-file checkpoint (original SD layout), opened as a model folder.
    SingleFile,
}

/// Feeds `bytes` to the loader of `kind`; true when it loaded.
fn run_case(kind: Kind, bytes: Vec<u8>) -> bool {
    match kind {
        Kind::SafeTensors => {
            let store = TensorStore::from_bytes("mutated.safetensors", bytes);
            store.map(|s| read_all(&s)).is_ok()
        }
        Kind::Torch => {
            let store = TensorStore::from_torch_bytes("mutated.pt", bytes);
            store.map(|s| read_all(&s)).is_ok()
        }
        Kind::UNetConfig => {
            synfer::unet::config::UNetConfig::from_json(&bytes, "unet/config.json").is_ok()
        }
        Kind::VaeConfig => synfer::vae::VaeConfig::from_json(&bytes, "vae/config.json").is_ok(),
        Kind::TextConfig => {
            synfer::text_encoder::ClipTextConfig::from_json(&bytes, "text_encoder/config.json")
                .is_ok()
        }
        Kind::SchedulerConfig => {
            let text = String::from_utf8_lossy(&bytes);
            let cfg = synfer::scheduler::SchedulerConfig::from_json_str(&text);
            cfg.map(|c| [1, 25, 1000].map(|steps| c.build(steps).is_ok()))
                .is_ok_and(|built| built.contains(&true))
        }
        Kind::AdapterConfig => {
            synfer::au::AuAdapterConfig::from_json(&bytes, "au_adapter/config.json").is_ok()
        }
        Kind::TokenizerConfig => {
            synfer::tokenizer::TokenizerSettings::from_json(Some(&bytes), None).is_ok()
        }
        Kind::FerConfig => serde_json::from_slice::<synfer::fer::FerConfig>(&bytes)
            .is_ok_and(|cfg| cfg.validate("fer.json").is_ok()),
        Kind::SingleFile => {
            let options = synfer::pipeline::single_file::SingleFileOptions::default();
            synfer::pipeline::single_file::open_bytes("mutated.safetensors", bytes, &options)
                .is_ok()
        }
        Kind::Plan => {
            let text = String::from_utf8_lossy(&bytes);
            // Listing the items is what a run does first.
            synfer::synth::Plan::from_toml(&text, "plan.toml")
                .map(|plan| plan.len() > 100_000 || !plan.items().is_empty())
                .is_ok()
        }
    }
}

fn targets() -> Vec<(Target, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = |name: &str, base: Vec<u8>, kind: Kind| Target {
        name: name.to_string(),
        base,
        kind,
    };
    let mut out = vec![
        (
            t(
                "sd1-tiny vae",
                read(&fixture("sd1-tiny/vae/diffusion_pytorch_model.safetensors")),
                Kind::SafeTensors,
            ),
            1500,
        ),
        (
            t(
                "au adapter",
                read(&fixture(
                    "au/au_adapter/diffusion_pytorch_model.safetensors",
                )),
                Kind::SafeTensors,
            ),
            1000,
        ),
        (
            t(
                "lora",
                read(&fixture(
                    "au/lora_diffusers/pytorch_lora_weights.safetensors",
                )),
                Kind::SafeTensors,
            ),
            500,
        ),
    ];
    for pt in [
        "dtypes",
        "nested",
        "views",
        "protocol4",
        "compressed",
        "big_endian",
        "malicious",
    ] {
        out.push((
            t(pt, read(&fixture(&format!("torch/{pt}.pt"))), Kind::Torch),
            450,
        ));
    }
    for (name, path, kind) in [
        ("unet config", "sd1-tiny/unet/config.json", Kind::UNetConfig),
        ("vae config", "sd1-tiny/vae/config.json", Kind::VaeConfig),
        (
            "text config",
            "sd1-tiny/text_encoder/config.json",
            Kind::TextConfig,
        ),
        (
            "sd1 scheduler",
            "sd1-tiny/scheduler/scheduler_config.json",
            Kind::SchedulerConfig,
        ),
        (
            "sd2 scheduler",
            "sd2-tiny/scheduler/scheduler_config.json",
            Kind::SchedulerConfig,
        ),
        (
            "adapter config",
            "au/au_adapter/config.json",
            Kind::AdapterConfig,
        ),
        (
            "tokenizer config",
            "sd1-tiny/tokenizer/tokenizer_config.json",
            Kind::TokenizerConfig,
        ),
    ] {
        out.push((t(name, read(&fixture(path)), kind), 450));
    }
    out.push((
        t(
            "fer.json",
            read(&root.join("models/fer-synfer-tiny/fer.json")),
            Kind::FerConfig,
        ),
        400,
    ));
    out.push((
        t("plan", read(&root.join("examples/plan.toml")), Kind::Plan),
        500,
    ));
    out.push((
        t(
            "sd2 single file",
            read(&fixture("single/sd2-tiny.safetensors")),
            Kind::SingleFile,
        ),
        300,
    ));
    out
}

#[test]
fn damaged_files_give_errors_never_panics() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let panics = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let hook = std::panic::take_hook();
    {
        let panics = panics.clone();
        std::panic::set_hook(Box::new(move |info| {
            eprintln!("{info}");
            panics.lock().unwrap().push(info.to_string());
        }));
    }
    let started = std::time::Instant::now();
    let mut cases = 0;
    let mut failed = Vec::new();
    for (target, count) in targets() {
        let focus = match target.kind {
            // The header: 8 length bytes and the JSON after them.
            Kind::SafeTensors | Kind::SingleFile => {
                8 + u64::from_le_bytes(target.base[..8].try_into().unwrap()) as usize
            }
            _ => 0,
        };
        let t0 = std::time::Instant::now();
        let before = failed.len();
        let mut loaded = 0;
        for i in 0..count * SCALE {
            let bytes = match target.kind {
                Kind::SafeTensors | Kind::Torch | Kind::SingleFile => {
                    mutate_bytes(&target.base, focus, &mut rng)
                }
                Kind::Plan => mutate_bytes(&target.base, 0, &mut rng),
                _ => mutate_json(&target.base, &mut rng),
            };
            let kind = target.kind;
            match catch_unwind(AssertUnwindSafe(|| run_case(kind, bytes))) {
                Ok(ok) => loaded += usize::from(ok),
                Err(_) => {
                    let message = panics.lock().unwrap().last().cloned().unwrap_or_default();
                    failed.push(format!("{} case {i}: {message}", target.name));
                }
            }
            cases += 1;
        }
        eprintln!(
            "{}: {} cases in {:.2} s, {loaded} loaded, {} panics",
            target.name,
            count * SCALE,
            t0.elapsed().as_secs_f64(),
            failed.len() - before
        );
    }
    std::panic::set_hook(hook);
    eprintln!(
        "{cases} damaged inputs in {:.1} s, {} panics",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(cases >= 50_000, "{cases} cases");
    assert!(
        failed.is_empty(),
        "{} of {cases} cases panicked; first ones:\n{}",
        failed.len(),
        failed[..failed.len().min(10)].join("\n")
    );
}
