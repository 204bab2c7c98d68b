//! `FaceAnalyzer` end to end on the committed face fixtures (LFW crops of
//! `fer_reference.safetensors`, the franck video frames of `detector_reference.safetensors`),
//! its JSON shape, and the `synfer analyze` command line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use common::{fixture, host, max_abs};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use synfer::Error;
use synfer::expression::CLASSES;
use synfer::face::analyzer::FaceAnalyzer;
use synfer::face::face_api;
use synfer::face::mesh::LANDMARKS;
use synfer::image::RgbView;

const FER: usize = 112;
const DET: usize = 256;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The first `n` FER A fixture faces as RGB 112×112 (R = G = B) and their tfjs probabilities.
fn fer_faces(n: usize) -> Vec<(Vec<u8>, [f32; 7])> {
    let bytes = std::fs::read(fixture("face/fer_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let input = st.tensor("fer_a.input").unwrap();
    assert_eq!(input.dtype(), Dtype::U8);
    let probs = f32s(st.tensor("fer_a.probs").unwrap().data());
    input
        .data()
        .chunks_exact(FER * FER)
        .zip(probs.chunks_exact(7))
        .take(n)
        .map(|(grey, p)| {
            (
                grey.iter().flat_map(|&v| [v, v, v]).collect(),
                p.try_into().unwrap(),
            )
        })
        .collect()
}

/// The first franck frame (256×256 RGB, resized from 720×576 by the fixture script) and the
/// reference detection's box `[x1, y1, x2, y2]` in those 256×256 pixels, and its confidence.
fn franck_frame() -> (Vec<u8>, [f64; 4], f32) {
    let bytes = std::fs::read(fixture("face/detector_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let rgb = st.tensor("input_rgb").unwrap();
    assert_eq!(rgb.shape(), [4, DET, DET, 3]);
    let pixels = rgb.data()[..DET * DET * 3].to_vec();
    let sizes = f32s(st.tensor("original_size").unwrap().data());
    let counts = f32s(st.tensor("counts").unwrap().data());
    let rows = f32s(st.tensor("detections").unwrap().data());
    // Image 3 (the first frame): skip the rows of images 0..2.
    let skip: usize = counts[..3].iter().map(|&c| c as usize).sum();
    let row = &rows[skip * 22..(skip + 1) * 22];
    let (w, h) = (f64::from(sizes[6]), f64::from(sizes[7]));
    assert_eq!((w, h), (720.0, 576.0));
    let (fx, fy) = (DET as f64 / w, DET as f64 / h);
    let b = [
        f64::from(row[2]) * fx,
        f64::from(row[3]) * fy,
        f64::from(row[4]) * fx,
        f64::from(row[5]) * fy,
    ];
    (pixels, b, row[1])
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "synfer-face-analyzer-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_png(path: &Path, side: usize, rgb: &[u8]) {
    image::RgbImage::from_raw(side as u32, side as u32, rgb.to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

fn argmax(p: &[f32; 7]) -> &'static str {
    CLASSES[(0..7).fold(0, |b, i| if p[i] > p[b] { i } else { b })]
}

#[test]
fn cropped_faces_match_the_models_and_tfjs() {
    let device = Device::flex();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let dir = temp_dir("cropped");
    let mut worst = [0.0f64; 2];
    for (i, (rgb, tfjs)) in fer_faces(4).into_iter().enumerate() {
        // Through a PNG file, as the CLI reads it: lossless.
        let path = dir.join(format!("face{i}.png"));
        write_png(&path, FER, &rgb);
        let decoded = image::open(&path).unwrap().to_rgb8();
        assert_eq!(decoded.as_raw(), &rgb);
        let view = RgbView::new(FER, FER, decoded.as_raw()).unwrap();
        let report = analyzer.analyze_cropped(view).unwrap();

        let (_, direct) = host(
            analyzer
                .fer_a
                .forward(face_api::preprocess_u8(&rgb, &device).unwrap()),
        );
        let e = &report.expression;
        let ours_a = e.face_api.probs;
        worst[0] = worst[0].max(max_abs(&ours_a, &direct));
        worst[1] = worst[1].max(max_abs(&ours_a, &tfjs));
        assert_eq!(e.face_api.label, argmax(&ours_a));
        assert_eq!(e.face_api.label, argmax(&tfjs), "face {i}: tfjs label");
        assert_eq!(e.mini_xception.label, argmax(&e.mini_xception.probs));
        assert!((e.mini_xception.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for k in 0..7 {
            let mean = (e.face_api.probs[k] + e.mini_xception.probs[k]) / 2.0;
            assert_eq!(e.ensemble.probs[k], mean);
        }
        assert_eq!(e.ensemble.label, argmax(&e.ensemble.probs));

        assert_eq!(report.bbox, [0.0, 0.0, FER as f32, FER as f32]);
        assert_eq!(report.detector_score, None);
        assert_eq!(report.landmarks.len(), LANDMARKS);
        // The mesh lies on the face: finite, centroid inside the crop.
        assert!(report.landmarks.iter().flatten().all(|v| v.is_finite()));
        let cx = report.landmarks.iter().map(|p| p[0]).sum::<f32>() / LANDMARKS as f32;
        let cy = report.landmarks.iter().map(|p| p[1]).sum::<f32>() / LANDMARKS as f32;
        assert!(
            (20.0..92.0).contains(&cx) && (20.0..92.0).contains(&cy),
            "{cx}, {cy}"
        );
        assert_eq!(report.aus.values().len(), 12);
        assert!(report.aus.values().iter().all(|v| (0.0..=5.0).contains(v)));
    }
    eprintln!(
        "analyze_cropped FER A: max |analyzer − model| {:.3e}, max |analyzer − tfjs| {:.3e}",
        worst[0], worst[1]
    );
    assert_eq!(worst[0], 0.0, "the 112×112 image enters FER A unchanged");
    assert!(worst[1] <= 1e-4, "{worst:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn detects_the_reference_face_on_a_video_frame() {
    let device = Device::flex();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let (pixels, want, confidence) = franck_frame();
    let faces = analyzer
        .analyze(RgbView::new(DET, DET, &pixels).unwrap())
        .unwrap();
    assert_eq!(faces.len(), 1, "human's default: at most one face");
    let face = &faces[0];
    let [x, y, w, h] = face.bbox.map(f64::from);
    let got = [x, y, x + w, y + h];
    let d = max_abs(&got.map(|v| v as f32), &want.map(|v| v as f32));
    eprintln!(
        "franck frame: bbox {got:.2?} vs reference {want:.2?} (max {d:.3e} px), score {:?} vs {confidence}",
        face.detector_score
    );
    assert!(d <= 1.0, "bbox {d} px from the reference");
    assert!((face.detector_score.unwrap() - confidence).abs() < 1e-3);
    // Landmarks in image pixels, centred on the detected face.
    assert_eq!(face.landmarks.len(), LANDMARKS);
    let cx = face.landmarks.iter().map(|p| p[0]).sum::<f32>() / LANDMARKS as f32;
    let cy = face.landmarks.iter().map(|p| p[1]).sum::<f32>() / LANDMARKS as f32;
    assert!(
        (got[0] as f32..got[2] as f32).contains(&cx)
            && (got[1] as f32..got[3] as f32).contains(&cy),
        "landmark centroid ({cx}, {cy}) outside {got:?}"
    );
    assert_eq!(
        face.expression.ensemble.label,
        argmax(&face.expression.ensemble.probs)
    );
    assert!(face.aus.values().iter().all(|v| (0.0..=5.0).contains(v)));

    // A blank image has no face.
    let grey = vec![128u8; 64 * 48 * 3];
    assert!(
        analyzer
            .analyze(RgbView::new(64, 48, &grey).unwrap())
            .unwrap()
            .is_empty()
    );
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

/// Checks one serialised face against the contract: exactly these four keys.
fn check_face_json(v: &Value) {
    assert_eq!(keys(v), sorted(&["bbox", "expression", "aus", "landmarks"]));
    assert_eq!(v["bbox"].as_array().unwrap().len(), 4);
    assert_eq!(
        keys(&v["expression"]),
        sorted(&["face-api", "mini-xception", "ensemble"])
    );
    for c in ["face-api", "mini-xception", "ensemble"] {
        let e = &v["expression"][c];
        assert_eq!(keys(e), sorted(&["label", "probs"]));
        assert!(CLASSES.contains(&e["label"].as_str().unwrap()));
        let probs: Vec<&str> = e["probs"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(sorted(&probs), sorted(&CLASSES));
    }
    assert_eq!(keys(&v["aus"]), sorted(synfer::au::catalog::FINEFACE.codes));
    let lm = v["landmarks"].as_array().unwrap();
    assert_eq!(lm.len(), LANDMARKS);
    assert!(lm.iter().all(|p| p.as_array().unwrap().len() == 3));
}

#[test]
fn json_shape_and_typed_errors() {
    let device = Device::flex();
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let (rgb, _) = fer_faces(1).pop().unwrap();
    let report = analyzer
        .analyze_cropped(RgbView::new(FER, FER, &rgb).unwrap())
        .unwrap();
    check_face_json(&serde_json::to_value(&report).unwrap());
    let (pixels, _, _) = franck_frame();
    let faces = analyzer
        .analyze(RgbView::new(DET, DET, &pixels).unwrap())
        .unwrap();
    check_face_json(&serde_json::to_value(&faces[0]).unwrap());

    for bad in [
        RgbView {
            width: 0,
            height: 0,
            pixels: &[],
        },
        RgbView {
            width: 10,
            height: 0,
            pixels: &[],
        },
        RgbView {
            width: 4,
            height: 4,
            pixels: &[0; 47],
        },
    ] {
        assert!(matches!(
            analyzer.analyze(bad),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(matches!(
            analyzer.analyze_cropped(bad),
            Err(Error::InvalidRequest { .. })
        ));
    }
}

fn synfer(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synfer"))
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap(),
        lines,
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cli_analyze_reports_every_file() {
    let dir = temp_dir("cli");
    let faces = fer_faces(2);
    write_png(&dir.join("a.png"), FER, &faces[0].0);
    write_png(&dir.join("b.png"), FER, &faces[1].0);
    // A text file with an image extension: walked, fails to decode.
    std::fs::write(dir.join("c.png"), "not an image\n").unwrap();
    // Other extensions are not walked.
    std::fs::write(dir.join("notes.txt"), "ignored\n").unwrap();
    let d = dir.to_str().unwrap();

    let (code, lines, stderr) = synfer(&[
        "analyze",
        "--device",
        "cpu",
        "--assume-cropped",
        "--json",
        d,
    ]);
    assert_eq!(code, 0, "some files were analysed; stderr: {stderr}");
    assert_eq!(lines.len(), 3);
    let files: Vec<&str> = lines.iter().map(|l| l["file"].as_str().unwrap()).collect();
    assert_eq!(
        files,
        ["a.png", "b.png", "c.png"].map(|f| dir.join(f).display().to_string())
    );
    for (line, (_, tfjs)) in lines[..2].iter().zip(&faces) {
        assert_eq!(keys(line), sorted(&["file", "faces"]));
        let faces = line["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1);
        check_face_json(&faces[0]);
        assert_eq!(faces[0]["expression"]["face-api"]["label"], argmax(tfjs));
    }
    assert_eq!(keys(&lines[2]), sorted(&["file", "error"]));
    // Classes and AUs in canonical order on the wire (not alphabetical).
    let raw = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_synfer"))
            .args(["analyze", "--device", "cpu", "--assume-cropped", "--json"])
            .arg(dir.join("a.png"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(raw.starts_with(r#"{"file":"#) && raw.contains(r#""faces":[{"bbox":"#));
    assert!(raw.contains(r#""probs":{"neutral":"#) && raw.contains(r#""aus":{"AU1":"#));
    assert!(lines[2]["error"].as_str().unwrap().contains("c.png"));
    assert!(
        stderr.contains("error:") && stderr.contains("c.png"),
        "{stderr}"
    );

    // The readable table: a header and one row per face, errors on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_synfer"))
        .args(["analyze", "--device", "cpu", "--assume-cropped", d])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("a.png"));

    // Every file failing (here the one named explicitly, whatever its extension): exit 1.
    let txt = dir.join("notes.txt");
    let (code, lines, _) = synfer(&[
        "analyze",
        "--device",
        "cpu",
        "--json",
        txt.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1);
    assert_eq!(keys(&lines[0]), sorted(&["file", "error"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_neutral_picture_calibrates_the_aus() {
    let neutral = fixture("face/franck/franck_01829.png");
    let smiling = fixture("face/franck/franck_03909.png");
    let (n, s) = (neutral.to_str().unwrap(), smiling.to_str().unwrap());
    let aus = |line: &Value| -> Vec<f64> {
        let faces = line["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1);
        check_face_json(&faces[0]);
        let map = faces[0]["aus"].as_object().unwrap();
        assert_eq!(map.len(), 12);
        map.values().map(|v| v.as_f64().unwrap()).collect()
    };
    let (code, lines, stderr) =
        synfer(&["analyze", "--device", "cpu", "--json", "--neutral", n, n, s]);
    assert_eq!(code, 0, "{stderr}");
    // The neutral picture itself reads 0 everywhere; the smile does not.
    assert!(
        aus(&lines[0]).iter().all(|&v| v == 0.0),
        "{}",
        lines[0]["faces"][0]["aus"]
    );
    let au12 = |line: &Value| line["faces"][0]["aus"]["AU12"].as_f64().unwrap();
    assert!(au12(&lines[1]) > 1.0, "{}", lines[1]["faces"][0]["aus"]);
    // Without calibration the same frame reads non-zero units (population baseline).
    let (_, plain, _) = synfer(&["analyze", "--device", "cpu", "--json", n]);
    assert!(aus(&plain[0]).iter().any(|&v| v > 0.0));

    // A neutral picture that is not an image, or shows no face: an error naming it, exit 1.
    let dir = temp_dir("neutral");
    let bad = dir.join("bad.png");
    std::fs::write(&bad, "not an image").unwrap();
    let blank = dir.join("blank.png");
    write_png(&blank, 64, &vec![128u8; 64 * 64 * 3]);
    for file in [&bad, &blank] {
        let out = Command::new(env!("CARGO_BIN_EXE_synfer"))
            .args(["analyze", "--device", "cpu", "--neutral"])
            .arg(file)
            .arg(s)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
