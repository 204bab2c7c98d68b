//! The safe `torch.save` reader against files written by PyTorch itself
//! (`tools/make_torch_fixtures.py`), hostile files, and a deterministic mutation fuzzer.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use common::fixture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};
use synfer::Error;
use synfer::weights::TensorStore;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("torch/{name}"))).unwrap()
}

fn load(name: &str) -> TensorStore {
    TensorStore::from_torch_bytes(name, read(&format!("{name}.pt"))).unwrap()
}

/// `expected/<name>.safetensors` as key → (dtype, shape, bytes).
fn expected(name: &str) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = read(&format!("expected/{name}.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// Every key of `store` equals the reference exactly (dtype, shape, bytes), nothing more or
/// less; float tensors also read as f32; then `finish` passes.
fn assert_matches(store: &TensorStore, reference: &str) {
    let want = expected(reference);
    let keys: Vec<&str> = store.keys().collect();
    let want_keys: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(keys, want_keys, "{reference}: keys");
    for (key, (dtype, shape, bytes)) in &want {
        assert_eq!(store.dtype(key), Some(*dtype), "{reference}: {key} dtype");
        assert_eq!(
            store.shape(key),
            Some(shape.as_slice()),
            "{reference}: {key} shape"
        );
        if matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
            let values = store.read_f32(key, shape).unwrap();
            assert_eq!(values.len(), shape.iter().product::<usize>());
        } else {
            let err = store.read_f32(key, shape).unwrap_err();
            assert!(matches!(err, Error::UnsupportedDtype { .. }), "{err}");
        }
        let (got_dtype, got) = store.read_raw(key, shape).unwrap();
        assert_eq!(got_dtype, *dtype);
        assert_eq!(got, bytes.as_slice(), "{reference}: {key} bytes");
    }
    store.finish().unwrap();
}

#[test]
fn fineface_attn_processors() {
    let store = load("attn_processors");
    assert_matches(&store, "attn_processors");
    let store = load("attn_processors");
    let key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.au_to_k.weight";
    assert_eq!(store.shape(key), Some(&[8usize, 12][..]));
    assert_eq!(store.keys().count(), 6);
    // f32 values are exactly the reference's.
    let want = expected("attn_processors");
    let (_, _, bytes) = &want[key];
    let reference: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(store.read_f32(key, &[8, 12]).unwrap(), reference);
    // Strict accounting still applies.
    let err = store.finish().unwrap_err();
    assert!(
        matches!(&err, Error::UnusedKeys { keys, .. } if keys.len() == 5),
        "{err}"
    );
}

#[test]
fn fineface_au_encoder() {
    let store = load("au_encoder");
    assert_eq!(
        store.keys().collect::<Vec<_>>(),
        ["au_encoder.bias", "au_encoder.weight"]
    );
    assert_matches(&store, "au_encoder");
}

#[test]
fn dtypes_and_parameters() {
    let store = load("dtypes");
    assert_matches(&store, "dtypes");
    let store = load("dtypes");
    assert_eq!(store.shape("num_batches_tracked"), Some(&[][..]));
    let (dtype, bytes) = store.read_raw("num_batches_tracked", &[]).unwrap();
    assert_eq!(
        (dtype, i64::from_le_bytes(bytes[..].try_into().unwrap())),
        (Dtype::I64, 7)
    );
    let (_, bytes) = store.read_raw("i64", &[4]).unwrap();
    let ints: Vec<i64> = bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ints, [-3, 0, 1 << 40, -(1 << 62)]);
    assert_eq!(store.shape("empty"), Some(&[0usize, 3][..]));
    assert_eq!(store.read_f32("empty", &[0, 3]).unwrap(), Vec::<f32>::new());
}

#[test]
fn strided_views_and_shared_storage() {
    let store = load("views");
    assert_matches(&store, "views");
    let store = load("views");
    let base: Vec<f32> = (0..24).map(|i| i as f32).collect();
    assert_eq!(store.read_f32("base", &[4, 6]).unwrap(), base);
    let t = store.read_f32("transposed", &[6, 4]).unwrap();
    assert_eq!(&t[..5], &[0., 6., 12., 18., 1.]);
    assert_eq!(
        store.read_f32("slice", &[2, 3]).unwrap(),
        [8., 9., 10., 14., 15., 16.]
    );
    assert_eq!(store.read_f32("column", &[4]).unwrap(), [4., 10., 16., 22.]);
    assert_eq!(store.read_f32("scalar_view", &[]).unwrap(), [15.]);
    assert_eq!(
        store.read_f32("expanded", &[2, 3]).unwrap(),
        [0., 1., 2., 0., 1., 2.]
    );
    let a = store.read_f32("shared_a", &[3, 4]).unwrap();
    assert_eq!(store.read_f32("shared_b", &[3, 4]).unwrap(), a);
    assert_eq!(store.read_f32("shared_row", &[4]).unwrap(), &a[4..8]);
}

#[test]
fn nested_checkpoint_flattened_and_selected() {
    // Whole file: dotted keys, optimizer state under int keys, non-tensor leaves skipped.
    let store = load("nested");
    assert_matches(&store, "nested");
    let store = load("nested");
    assert!(store.contains("optimizerG_state_dict.state.0.exp_avg"));
    assert!(
        !store
            .keys()
            .any(|k| k.contains("epoch") || k.contains("param_groups"))
    );

    // The generator alone, DCGAN-style keys.
    let bytes = read("nested.pt");
    let g =
        TensorStore::from_torch_bytes_at("nested.pt", bytes.clone(), &["netG_state_dict"]).unwrap();
    assert_eq!(
        g.keys().collect::<Vec<_>>(),
        [
            "main.0.weight",
            "main.1.bias",
            "main.1.num_batches_tracked",
            "main.1.running_mean",
            "main.1.running_var",
            "main.1.weight",
            "main.3.weight",
        ]
    );
    let want = expected("nested");
    for key in g.keys() {
        let (dtype, shape, data) = &want[&format!("netG_state_dict.{key}")];
        let (got_dtype, got) = g.read_raw(key, shape).unwrap();
        assert_eq!((got_dtype, &got[..]), (*dtype, data.as_slice()), "{key}");
    }
    g.finish().unwrap();
    assert_eq!(g.dtype("main.1.num_batches_tracked"), Some(Dtype::I64));

    let err = TensorStore::from_torch_bytes_at("nested.pt", bytes.clone(), &["netD_state_dict"])
        .unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, file } if key == "netD_state_dict" && file == "nested.pt"),
        "{err}"
    );
    let err = TensorStore::from_torch_bytes_at("nested.pt", bytes.clone(), &["epoch"]).unwrap_err();
    assert!(matches!(err, Error::Pickle { .. }), "{err}");
    // Int keys are addressable by their decimal form.
    let s = TensorStore::from_torch_bytes_at(
        "nested.pt",
        bytes,
        &["optimizerG_state_dict", "state", "0"],
    )
    .unwrap();
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        ["exp_avg", "exp_avg_sq", "step"]
    );
}

#[test]
fn pickle_protocols_4_and_5() {
    for name in ["protocol4", "protocol5"] {
        assert_matches(&load(name), name);
    }
    // Same tensors as the protocol-2 file.
    assert_eq!(expected("protocol4"), expected("dtypes"));
}

#[test]
fn big_endian_archive() {
    assert_matches(&load("big_endian"), "dtypes");
}

#[test]
fn malicious_globals_are_refused_by_name() {
    for (file, global) in [
        ("malicious.pt", "posix.system"),
        ("malicious_p4.pt", "builtins.exec"),
    ] {
        let err = TensorStore::from_torch_bytes(file, read(file)).unwrap_err();
        match &err {
            Error::PickleGlobal { file: f, global: g } => {
                assert_eq!((f.as_str(), g.as_str()), (file, global));
            }
            other => panic!("{file}: {other}"),
        }
        assert!(err.to_string().contains(global), "{err}");
    }
}

#[test]
fn compressed_and_corrupt_archives() {
    let err = TensorStore::from_torch_bytes("compressed.pt", read("compressed.pt")).unwrap_err();
    assert!(
        matches!(&err, Error::TorchArchive { message, .. } if message.contains("compressed (method 8)")),
        "{err}"
    );

    let good = read("dtypes.pt");
    // Truncated anywhere in the tail (central directory / end records): a typed error.
    for cut in [1, 7, 22, 40, 100, 500, good.len() / 2, good.len() - 1] {
        let err =
            TensorStore::from_torch_bytes("cut.pt", good[..good.len() - cut].to_vec()).unwrap_err();
        assert!(
            matches!(err, Error::TorchArchive { .. }),
            "cut {cut}: {err}"
        );
    }
    // A flipped byte inside data.pkl: its CRC catches it.
    let mut bad = good.clone();
    let pkl = good.windows(2).position(|w| w == [0x80, 0x02]).unwrap();
    bad[pkl + 10] ^= 0x55;
    let err = TensorStore::from_torch_bytes("flip.pt", bad).unwrap_err();
    assert!(
        matches!(&err, Error::TorchArchive { message, .. } if message.contains("CRC")),
        "{err}"
    );
    // Not a zip at all; legacy format; empty.
    for (bytes, what) in [
        (
            b"hello world, definitely not a zip file".to_vec(),
            "not a zip",
        ),
        (
            b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.".to_vec(),
            "legacy",
        ),
        (Vec::new(), "too short"),
    ] {
        let err = TensorStore::from_torch_bytes("x.pt", bytes).unwrap_err();
        assert!(
            matches!(&err, Error::TorchArchive { message, .. } if message.contains(what)),
            "{what}: {err}"
        );
    }
    // A safetensors file is not a torch file.
    let st = read("expected/dtypes.safetensors");
    let err = TensorStore::from_torch_bytes("x.safetensors", st).unwrap_err();
    assert!(matches!(err, Error::TorchArchive { .. }), "{err}");
}

/// Regression inputs (found by the fuzzer or by hand) must not panic.
#[test]
fn regression_inputs_do_not_panic() {
    let dir = fixture("torch/regress");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = catch_unwind(|| TensorStore::from_torch_bytes("regress", bytes));
        assert!(result.is_ok(), "{} panics", path.display());
    }
}

/// gan-face-generate 1.1.1's `weights.tar`, when present (opt-in: set SYNFER_GAN_WEIGHTS to
/// the file and SYNFER_GAN_EXPECTED to the safetensors written by
/// `tools/make_torch_fixtures.py --gan weights.tar OUT`).
#[test]
fn gan_face_generate_weights_if_present() {
    let (Ok(weights), Ok(reference)) = (
        std::env::var("SYNFER_GAN_WEIGHTS"),
        std::env::var("SYNFER_GAN_EXPECTED"),
    ) else {
        eprintln!("SYNFER_GAN_WEIGHTS / SYNFER_GAN_EXPECTED not set: skipped");
        return;
    };
    let bytes = std::fs::read(&weights).unwrap();
    let store = TensorStore::from_torch_bytes_at(&weights, bytes, &["netG_state_dict"]).unwrap();
    let want = std::fs::read(&reference).unwrap();
    let want = SafeTensors::deserialize(&want).unwrap();
    let mut n = 0;
    for (key, view) in want.tensors() {
        let (dtype, data) = store.read_raw(&key, view.shape()).unwrap();
        assert_eq!((dtype, &data[..]), (view.dtype(), view.data()), "{key}");
        n += 1;
    }
    store.finish().unwrap();
    eprintln!("gan-face-generate: {n} tensors match");
}

// ---------------------------------------------------------------------------------------------
// Fuzzing.

/// CRC-32 (IEEE), bytewise.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The entries of a valid (fixture) zip, via its central directory.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let eocd = (0..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .unwrap();
    let count = le16(bytes, eocd + 10);
    let mut at = le32(bytes, eocd + 16);
    let mut out = Vec::new();
    for _ in 0..count {
        let size = le32(bytes, at + 24);
        let (n, e, c) = (
            le16(bytes, at + 28),
            le16(bytes, at + 30),
            le16(bytes, at + 32),
        );
        let name = String::from_utf8(bytes[at + 46..at + 46 + n].to_vec()).unwrap();
        let local = le32(bytes, at + 42);
        let data = local + 30 + le16(bytes, local + 26) + le16(bytes, local + 28);
        out.push((name, bytes[data..data + size].to_vec()));
        at += 46 + n + e + c;
    }
    out
}

/// A stored zip with correct CRCs (no zip64, no alignment).
fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let mut common = vec![20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        common.extend_from_slice(&crc.to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04]);
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0]);
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
    let n = (entries.len() as u16).to_le_bytes();
    out.extend_from_slice(&[n[0], n[1], n[0], n[1]]);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Pickle opcodes (supported or not), for splicing in.
const OPCODES: &[u8] = b"\x80\x95.(012}d]l)t\x85\x86\x87aesuJKM\x8a\x8bG\x88\x89NXT\x8cU\x8dBC\x8e\x96qr\x94hjc\x93RbQ\x8f\x90\x91\x81\x92IgpS";

/// Applies 1–4 random mutations to `data`; `donors` supply spliced chunks.
fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, donors: &[&[u8]]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        match rng.random_range(0..10) {
            0 if len > 0 => data[at] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => data[at] = rng.random(),
            2 => {
                let n = rng.random_range(1..=8);
                for _ in 0..n {
                    data.insert(at.min(data.len()), rng.random());
                }
            }
            3 if len > 0 => {
                let n = rng.random_range(1..=16).min(len - at);
                data.drain(at..at + n);
            }
            4 => data.truncate(at),
            5 => {
                // Splice a chunk of a donor (or of itself) in, or over.
                let donor = donors[rng.random_range(0..donors.len())];
                if donor.is_empty() {
                    continue;
                }
                let s = rng.random_range(0..donor.len());
                let n = rng.random_range(1..=64).min(donor.len() - s);
                let chunk = donor[s..s + n].to_vec();
                if rng.random() {
                    data.splice(at..at, chunk);
                } else {
                    let end = (at + n).min(len);
                    data.splice(at..end, chunk);
                }
            }
            6 if len > 0 => {
                // An interesting integer of 1, 2, 4 or 8 bytes (lengths, sizes, offsets).
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let v = if rng.random() {
                    v
                } else {
                    v.wrapping_add(rng.random_range(0..4)).wrapping_sub(2)
                };
                let w = [1, 2, 4, 8][rng.random_range(0..4)];
                let bytes = v.to_le_bytes();
                for i in 0..w {
                    if at + i < data.len() {
                        data[at + i] = bytes[i];
                    }
                }
            }
            7 => {
                // An opcode, maybe with random argument bytes.
                let op = OPCODES[rng.random_range(0..OPCODES.len())];
                let mut chunk = vec![op];
                for _ in 0..rng.random_range(0..5) {
                    chunk.push(rng.random());
                }
                let at = at.min(data.len());
                data.splice(at..at, chunk);
            }
            8 if len > 1 => {
                // Duplicate a chunk elsewhere (repeats opcodes, memo puts, marks).
                let s = rng.random_range(0..len);
                let n = rng.random_range(1..=32).min(len - s);
                let chunk = data[s..s + n].to_vec();
                data.splice(at..at, chunk);
            }
            9 => {
                // Rewrite the argument of a small-int opcode (sizes, strides, offsets, numel,
                // memo indices) as an interesting value, possibly widened to BININT/LONG1.
                let Some(k) = (0..len).map(|i| (at + i) % len).find(|&i| data[i] == b'K') else {
                    continue;
                };
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let end = (k + 2).min(len);
                let replacement: Vec<u8> = match rng.random_range(0..3) {
                    0 => vec![b'K', v as u8],
                    1 => [&[b'J'][..], &(v as u32).to_le_bytes()].concat(),
                    _ => [&[0x8a, 8][..], &v.to_le_bytes()].concat(),
                };
                data.splice(k..end, replacement);
            }
            _ => {}
        }
    }
}

const FUZZ_BASES: [&str; 9] = [
    "attn_processors",
    "au_encoder",
    "dtypes",
    "views",
    "nested",
    "protocol4",
    "protocol5",
    "big_endian",
    "malicious_p4",
];

/// Mutation fuzzing: every input must give `Ok` or `Err`, never a panic. Iterations from
/// `SYNFER_FUZZ_ITERS` (default 20 000), seed from `SYNFER_FUZZ_SEED` (default 1).
/// A panicking input is written to `$CARGO_TARGET_TMPDIR/torch-fuzz-crash-*.bin`.
#[test]
fn fuzz_torch_reader_never_panics() {
    let iters: u64 = std::env::var("SYNFER_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("SYNFER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let files: Vec<Vec<u8>> = FUZZ_BASES
        .iter()
        .map(|n| read(&format!("{n}.pt")))
        .collect();
    let unzipped: Vec<Vec<(String, Vec<u8>)>> = files.iter().map(|f| unzip(f)).collect();
    let pickles: Vec<&[u8]> = unzipped
        .iter()
        .map(|e| {
            e.iter()
                .find(|(n, _)| n.ends_with("/data.pkl"))
                .map(|(_, d)| d.as_slice())
                .unwrap()
        })
        .collect();
    // Sanity: the rebuilt (unaligned, non-zip64) archives load like the originals.
    for (i, entries) in unzipped.iter().enumerate().take(8) {
        TensorStore::from_torch_bytes(FUZZ_BASES[i], zip(entries)).unwrap();
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let (mut ok, mut err) = (0u64, 0u64);
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let start = std::time::Instant::now();
    for iter in 0..iters {
        let base = rng.random_range(0..files.len());
        let input = match rng.random_range(0..10) {
            // Raw file mutation: zip structures (most pickle edits fail the CRC).
            0..=2 => {
                let mut f = files[base].clone();
                let donors = [files[base].as_slice()];
                mutate(&mut rng, &mut f, &donors);
                f
            }
            // Storage records: wrong lengths, missing records, odd byteorder.
            3 => {
                let mut entries = unzipped[base].clone();
                let i = rng.random_range(0..entries.len());
                match rng.random_range(0..3) {
                    0 => {
                        entries.remove(i);
                    }
                    1 => {
                        let d = &mut entries[i].1;
                        let n = rng.random_range(0..=d.len() + 8);
                        d.resize(n, 0xAB);
                    }
                    _ => mutate(&mut rng, &mut entries[i].1, &pickles),
                }
                zip(&entries)
            }
            // Pickle mutation with valid CRCs: exercises the VM and tensor placement.
            _ => {
                let mut entries = unzipped[base].clone();
                let pkl = entries
                    .iter_mut()
                    .find(|(n, _)| n.ends_with("/data.pkl"))
                    .unwrap();
                mutate(&mut rng, &mut pkl.1, &pickles);
                zip(&entries)
            }
        };
        let probe = input.clone();
        match catch_unwind(AssertUnwindSafe(|| {
            TensorStore::from_torch_bytes("fuzz.pt", input).map(|s| {
                // Reading back every float tensor must not panic either.
                for key in s.keys().map(str::to_string).collect::<Vec<_>>() {
                    let shape = s.shape(&key).unwrap().to_vec();
                    let _ = s.read_f32(&key, &shape);
                    let _ = s.read_raw(&key, &shape);
                }
            })
        })) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                err += 1;
                let kind = match e {
                    Error::TorchArchive { .. } => "TorchArchive",
                    Error::Pickle { message, .. } if message.starts_with("tensor `") => {
                        "Pickle(tensor view)"
                    }
                    Error::Pickle { .. } => "Pickle",
                    Error::PickleGlobal { .. } => "PickleGlobal",
                    Error::MissingKey { .. } => "MissingKey",
                    Error::SafeTensors { .. } => "SafeTensors",
                    _ => "other",
                };
                *kinds.entry(kind).or_default() += 1;
            }
            Err(_) => {
                let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("torch-fuzz-crash-{seed}-{iter}.bin"));
                std::fs::write(&path, &probe).unwrap();
                panic!(
                    "iteration {iter} (seed {seed}) panicked; input saved to {}",
                    path.display()
                );
            }
        }
    }
    eprintln!(
        "torch fuzz: {iters} executions (seed {seed}) in {:.1?}: {ok} Ok, {err} Err {kinds:?}, \
         0 panics",
        start.elapsed()
    );
}
