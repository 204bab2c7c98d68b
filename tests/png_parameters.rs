//! Generation settings inside every PNG: `synfer generate` writes A1111's `parameters` text and
//! the JSON record, and `synfer generate --from-png` regenerates the same pixels from the file
//! alone (from noise, from a DCGAN layout face, and image 1 of a batch).

use std::path::{Path, PathBuf};
use std::process::Command;

fn synfer(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synfer"))
        .args(["generate", "--device", "cpu"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synfer-png-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `parameters` text of a PNG (read with the `png` decoder, independent of synfer's reader).
fn parameters(path: &Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|t| t.keyword == "parameters")
                .map(|t| t.get_text().unwrap())
        })
        .expect("a parameters chunk")
}

#[test]
fn from_png_regenerates_the_same_pixels() {
    let dir = temp("replay");
    ok(synfer(
        &[
            "--prompt",
            "a photo of a woman",
            "--negative-prompt",
            "blurry, dark",
            "--steps",
            "6",
            "--scheduler",
            "dpm++",
            "--guidance",
            "5",
            "--seed",
            "11",
            "--expression",
            "surprised",
            "--au",
            "AU26=3",
            "--out",
            "a.png",
        ],
        &dir,
    ));
    let text = parameters(&dir.join("a.png"));
    assert!(
        text.starts_with(
            "a photo of a woman, surprised facial expression\nNegative prompt: blurry, dark\n\
             Steps: 6, Sampler: DPM++ 2M, CFG scale: 5, Seed: 11, Size: 64x64, \
             Model: synfer-tiny (built in), Expression: surprised, AUs: "
        ),
        "{text}"
    );
    assert!(text.contains("AU26=3 "), "{text}");
    ok(synfer(&["--from-png", "a.png", "--out", "b.png"], &dir));
    assert_eq!(pixels(&dir.join("a.png")), pixels(&dir.join("b.png")));

    // A layout start from the built-in face generator, image 1 of a batch of 2.
    ok(synfer(
        &[
            "--prompt",
            "a face",
            "--steps",
            "5",
            "--seed",
            "3",
            "--num-images",
            "2",
            "--expression",
            "happy",
            "--layout",
            "dcgan",
            "--out",
            "c.png",
        ],
        &dir,
    ));
    let text = parameters(&dir.join("c-1.png"));
    assert!(
        text.contains("Seed: 4, ") && text.contains("Start: layout, Start image: dcgan seed 4,"),
        "{text}"
    );
    ok(synfer(&["--from-png", "c-1.png", "--out", "d.png"], &dir));
    assert_eq!(pixels(&dir.join("c-1.png")), pixels(&dir.join("d.png")));

    // Stochastic schedulers draw each step's noise from each image's own seed, so image 1 of a
    // batch comes back alone too.
    for (scheduler, sampler) in [("euler-a", "Euler a"), ("lcm", "LCM")] {
        let out = format!("{scheduler}.png");
        ok(synfer(
            &[
                "--prompt",
                "a face",
                "--steps",
                "4",
                "--seed",
                "20",
                "--num-images",
                "2",
                "--scheduler",
                scheduler,
                "--out",
                &out,
            ],
            &dir,
        ));
        let second = dir.join(format!("{scheduler}-1.png"));
        let text = parameters(&second);
        assert!(text.contains(&format!("Sampler: {sampler}, ")), "{text}");
        ok(synfer(
            &[
                "--from-png",
                &format!("{scheduler}-1.png"),
                "--out",
                "e.png",
            ],
            &dir,
        ));
        assert_eq!(pixels(&second), pixels(&dir.join("e.png")), "{scheduler}");
        assert_ne!(
            pixels(&second),
            pixels(&dir.join(format!("{scheduler}-0.png")))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_png_without_a_record_is_a_clear_error() {
    let dir = temp("plain");
    image::RgbImage::new(8, 8)
        .save(dir.join("plain.png"))
        .unwrap();
    let out = synfer(&["--from-png", "plain.png", "--out", "x.png"], &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain.png") && err.contains("no synfer record"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
