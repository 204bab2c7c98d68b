//! Tokenizer ids vs transformers' CLIPTokenizer as diffusers loads it (padding="max_length",
//! max_length=77, truncation=True), for the vocab.json+merges.txt (SD 1.x) and the
//! tokenizer.json (SD 2.x, pad "!") layouts.

mod common;

use common::fixture;
use synfer::pipeline::load::load_tokenizer;
use synfer::pipeline::source::DirSource;

fn check(key: &str, folder: &str) {
    let tok = load_tokenizer(&DirSource::new(fixture(folder)).unwrap()).unwrap();
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("reference/tokenizer.json")).unwrap())
            .unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "need ≥ 20 prompts");
    let mut truncated = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let expected: Vec<u32> = case[key]["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(prompt).unwrap();
        assert_eq!(got.ids, expected, "{key}: prompt {prompt:?}");
        let untruncated = case[key]["untruncated_ids"].as_array().map_or(0, Vec::len);
        assert_eq!(
            got.truncated.is_some(),
            untruncated > 77,
            "{key}: truncation flag for {prompt:?}"
        );
        truncated += usize::from(got.truncated.is_some());
    }
    assert!(
        truncated >= 1,
        "the cases must include a prompt longer than 77 tokens"
    );
}

#[test]
fn sd1_vocab_and_merges_match_transformers() {
    check("sd1", "sd1-tiny");
}

#[test]
fn sd2_tokenizer_json_matches_transformers() {
    check("sd2", "sd2-tiny");
}
