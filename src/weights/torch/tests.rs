//! The reader against hand-made archives and pickles: every opcode family, the allow-list,
//! strided and big-endian tensors, and hostile inputs.

use super::super::zip::tests::build_zip;
use super::*;
use crate::error::Error;

/// A pickle writer for hand-made test files.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn s(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(self, i: u8) -> Self {
        self.op(&[b'K', i])
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`
    fn tensor(self, key: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Self {
        let mut p = self
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .s("storage")
            .global("torch", "FloatStorage")
            .s(key)
            .s("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .op(b"(");
        for &d in size {
            p = p.int(d);
        }
        p = p.op(b"t(");
        for &d in stride {
            p = p.int(d);
        }
        p.op(b"t\x89")
            .global("collections", "OrderedDict")
            .op(b")RtR")
    }
}

fn archive(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("t/data.pkl".into(), pickle.to_vec()),
        ("t/byteorder".into(), b"little".to_vec()),
    ];
    for (k, v) in storages {
        files.push((format!("t/data/{k}"), v.clone()));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    build_zip(&refs, false)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn strided_views_and_zero_copy() {
    // {'a': 2x3 contiguous, 't': its transpose, 's': storage[4:6], 'e': expand(2,2)}
    let pickle = P::default()
        .op(b"\x80\x02}(")
        .s("a")
        .tensor("0", 6, 0, &[2, 3], &[3, 1])
        .s("t")
        .tensor("0", 6, 0, &[3, 2], &[1, 3])
        .s("s")
        .tensor("0", 6, 4, &[2], &[1])
        .s("e")
        .tensor("0", 6, 1, &[2, 2], &[0, 1])
        .op(b"u.");
    let data = f32_bytes(&[0., 1., 2., 3., 4., 5.]);
    let store = TensorStore::from_torch_bytes("t.pt", archive(&pickle.0, &[("0", data)])).unwrap();
    assert_eq!(
        store.read_f32("a", &[2, 3]).unwrap(),
        [0., 1., 2., 3., 4., 5.]
    );
    assert_eq!(
        store.read_f32("t", &[3, 2]).unwrap(),
        [0., 3., 1., 4., 2., 5.]
    );
    assert_eq!(store.read_f32("s", &[2]).unwrap(), [4., 5.]);
    assert_eq!(store.read_f32("e", &[2, 2]).unwrap(), [1., 2., 1., 2.]);
    store.finish().unwrap();
}

#[test]
fn view_beyond_storage_is_an_error() {
    let pickle = P::default()
        .op(b"\x80\x02}")
        .s("a")
        .tensor("0", 6, 1, &[2, 3], &[3, 1])
        .op(b"s.");
    let err =
        TensorStore::from_torch_bytes("t.pt", archive(&pickle.0, &[("0", f32_bytes(&[0.; 6]))]))
            .unwrap_err();
    assert!(
        matches!(&err, Error::Pickle { message, .. } if message.contains("reaches element 6")),
        "{err}"
    );
    // numel larger than the record.
    let pickle = P::default()
        .op(b"\x80\x02}")
        .s("a")
        .tensor("0", 7, 0, &[7], &[1])
        .op(b"s.");
    let err =
        TensorStore::from_torch_bytes("t.pt", archive(&pickle.0, &[("0", f32_bytes(&[0.; 6]))]))
            .unwrap_err();
    assert!(matches!(err, Error::Pickle { .. }), "{err}");
}

#[test]
fn forbidden_globals_are_named() {
    for (module, name) in [("os", "system"), ("builtins", "eval"), ("torch", "load")] {
        let pickle = P::default()
            .op(b"\x80\x02")
            .global(module, name)
            .s("echo pwned")
            .op(b"\x85R.");
        let err = TensorStore::from_torch_bytes("evil.pt", archive(&pickle.0, &[])).unwrap_err();
        match err {
            Error::PickleGlobal { file, global } => {
                assert_eq!(file, "evil.pt");
                assert_eq!(global, format!("{module}.{name}"));
            }
            other => panic!("{other}"),
        }
    }
    // STACK_GLOBAL too (protocol 4).
    let pickle = P::default()
        .op(b"\x80\x04")
        .op(b"\x8c\x05posix\x8c\x06system\x93")
        .op(b".");
    let err = TensorStore::from_torch_bytes("evil.pt", archive(&pickle.0, &[])).unwrap_err();
    assert!(matches!(&err, Error::PickleGlobal { global, .. } if global == "posix.system"));
}

#[test]
fn nested_and_int_keys_and_path() {
    // {'outer': {'inner': t, 3: t, 'n': None}, 'l': [t, 1.5], 'epoch': 3}
    let pickle = P::default()
        .op(b"\x80\x02}(")
        .s("outer")
        .op(b"}(")
        .s("inner")
        .tensor("0", 2, 0, &[2], &[1])
        .op(b"q\x01")
        .int(3)
        .op(b"h\x01")
        .s("n")
        .op(b"Nu")
        .s("l")
        .op(b"](h\x01G\x3f\xf8\0\0\0\0\0\0e")
        .s("epoch")
        .int(3)
        .op(b"u.");
    let bytes = archive(&pickle.0, &[("0", f32_bytes(&[7., 8.]))]);
    let store = TensorStore::from_torch_bytes("n.pt", bytes.clone()).unwrap();
    let keys: Vec<&str> = store.keys().collect();
    assert_eq!(keys, ["l.0", "outer.3", "outer.inner"]);
    assert_eq!(store.read_f32("outer.3", &[2]).unwrap(), [7., 8.]);
    let sub = TensorStore::from_torch_bytes_at("n.pt", bytes.clone(), &["outer"]).unwrap();
    assert_eq!(sub.keys().collect::<Vec<_>>(), ["3", "inner"]);
    let err = TensorStore::from_torch_bytes_at("n.pt", bytes.clone(), &["outer", "x"]).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, .. } if key == "outer.x"),
        "{err}"
    );
    // `under`: the key's dict when the top level has it, else the top level.
    let under = TensorStore::from_torch_bytes_under("n.pt", bytes.clone(), "outer").unwrap();
    assert_eq!(under.keys().collect::<Vec<_>>(), ["3", "inner"]);
    let top = TensorStore::from_torch_bytes_under("n.pt", bytes.clone(), "state_dict").unwrap();
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        ["l.0", "outer.3", "outer.inner"]
    );
    let err = TensorStore::from_torch_bytes_at("n.pt", bytes, &["epoch"]).unwrap_err();
    assert!(matches!(err, Error::Pickle { .. }), "{err}");
}

#[test]
fn hostile_structures_are_bounded() {
    // A list containing itself, flattened: nesting limit, not a stack overflow.
    let pickle = P::default()
        .op(b"\x80\x02}")
        .s("x")
        .op(b"]q\x00h\x00a")
        .op(b"s.");
    let err = TensorStore::from_torch_bytes("c.pt", archive(&pickle.0, &[])).unwrap_err();
    assert!(matches!(err, Error::Pickle { .. }), "{err}");

    // Exponential sharing: x0 = (t, t); x(i+1) = (x(i), x(i)) fifty times.
    let mut p = P::default()
        .op(b"\x80\x02}")
        .s("x")
        .tensor("0", 1, 0, &[], &[])
        .op(b"2\x86");
    for _ in 0..50 {
        p = p.op(b"2\x86");
    }
    let pickle = p.op(b"s.");
    let err = TensorStore::from_torch_bytes("x.pt", archive(&pickle.0, &[("0", f32_bytes(&[1.]))]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Pickle { message, .. } if message.contains("steps")),
        "{err}"
    );
}

#[test]
fn broadcast_bomb_is_refused() {
    // One element expanded to 2^24 × 2^24 with stride (0, 0): refused before allocating.
    let pickle = P::default()
        .op(b"\x80\x02}")
        .s("x")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"((")
        .s("storage")
        .global("torch", "FloatStorage")
        .s("0")
        .s("cpu")
        .int(1)
        .op(b"tQ")
        .int(0)
        .op(b"(J\0\0\0\x01J\0\0\0\x01t(")
        .int(0)
        .int(0)
        .op(b"t\x89NtRs.");
    let err = TensorStore::from_torch_bytes("b.pt", archive(&pickle.0, &[("0", f32_bytes(&[1.]))]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Pickle { message, .. } if message.contains("materialising")),
        "{err}"
    );
}

#[test]
fn repeated_copies_are_bounded() {
    // A 1000-pair list handed to OrderedDict 1000 times: refused, not 10^6 copies.
    let mut p = P::default().op(b"\x80\x02ccollections\nOrderedDict\nq\x00](");
    for _ in 0..1000 {
        p = p.op(b"K\x01K\x02\x86");
    }
    p = p.op(b"eq\x010");
    for _ in 0..1000 {
        p = p.op(b"h\x00h\x01\x85R0");
    }
    let pickle = p.op(b"}.");
    let err = TensorStore::from_torch_bytes("o.pt", archive(&pickle.0, &[])).unwrap_err();
    assert!(
        matches!(&err, Error::Pickle { message, .. } if message.contains("copies")),
        "{err}"
    );
    // REDUCE with a huge argument tuple is refused before copying it.
    let mut p = P::default().op(b"\x80\x02ccollections\nOrderedDict\n(");
    for _ in 0..100 {
        p = p.op(b"N");
    }
    let pickle = p.op(b"tR.");
    let err = TensorStore::from_torch_bytes("o.pt", archive(&pickle.0, &[])).unwrap_err();
    assert!(
        matches!(&err, Error::Pickle { message, .. } if message.contains("100 arguments")),
        "{err}"
    );
}

#[test]
fn truncation_never_panics() {
    let pickle = P::default()
        .op(b"\x80\x02}(")
        .s("a")
        .tensor("0", 6, 0, &[2, 3], &[3, 1])
        .op(b"u.");
    let bytes = archive(&pickle.0, &[("0", f32_bytes(&[0.; 6]))]);
    for cut in 0..pickle.0.len() {
        let p = &pickle.0[..cut];
        let _ = TensorStore::from_torch_bytes("t.pt", archive(p, &[("0", f32_bytes(&[0.; 6]))]));
    }
    for cut in 0..bytes.len() {
        let _ = TensorStore::from_torch_bytes("t.pt", bytes[..cut].to_vec());
    }
}

/// The real fixtures' pickles under random damage (bytes flipped, opcodes inserted, ranges cut
/// or repeated), repacked with valid CRCs so that the pickle machine itself sees them: every
/// case is `Ok` (then every tensor is read) or an error, never a panic.
#[test]
fn mutated_real_pickles_never_panic() {
    use super::super::zip::ZipArchive;
    use rand::{Rng, SeedableRng};
    // Opcodes worth inserting: containers, memo, globals, reduce, persistent ids, stops.
    const OPS: &[u8] = b"()}]qhrgjPQRbcsuaetlN.K\x80\x85\x86\x87\x94\x95";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x91c_c1e);
    let mut cases = 0;
    for name in [
        "dtypes",
        "nested",
        "views",
        "protocol4",
        "protocol5",
        "big_endian",
    ] {
        let bytes = std::fs::read(dir.join(format!("{name}.pt"))).unwrap();
        let zip = ZipArchive::parse(&bytes).unwrap();
        let files: Vec<(String, Vec<u8>)> = zip
            .entries()
            .iter()
            .map(|e| {
                let range = zip.data_range(e).unwrap();
                (
                    String::from_utf8_lossy(&e.name).into_owned(),
                    bytes[range].to_vec(),
                )
            })
            .collect();
        let pkl = files
            .iter()
            .position(|(n, _)| n.ends_with("data.pkl"))
            .unwrap();
        for _ in 0..500 {
            let mut p = files[pkl].1.clone();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..p.len());
                match rng.random_range(0..5) {
                    0 => p[at] ^= 1 << rng.random_range(0..8),
                    1 => p.insert(at, OPS[rng.random_range(0..OPS.len())]),
                    2 => p[at] = [0, 0xff, 0x7f, 0x80][rng.random_range(0..4)],
                    3 => {
                        let end = (at + rng.random_range(1..16)).min(p.len());
                        p.drain(at..end);
                    }
                    _ => {
                        let end = (at + rng.random_range(1..16)).min(p.len());
                        let copy = p[at..end].to_vec();
                        p.splice(at..at, copy);
                    }
                }
            }
            let refs: Vec<(&str, &[u8])> = files
                .iter()
                .enumerate()
                .map(|(i, (n, d))| (n.as_str(), if i == pkl { &p[..] } else { &d[..] }))
                .collect();
            let archive = build_zip(&refs, false);
            if let Ok(store) = TensorStore::from_torch_bytes("mutated.pt", archive) {
                let keys: Vec<String> = store.keys().map(String::from).collect();
                for k in keys {
                    let shape = store.shape(&k).unwrap().to_vec();
                    let _ = store.read_f32(&k, &shape);
                }
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 3000);
}
