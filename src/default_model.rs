//! synfer-tiny, the model trained for this crate (`models/synfer-tiny`, model card in its
//! README), compiled into native builds: `synfer generate`, `eval` and `synth` use it when no
//! `--model` is given, so the CLI works offline with nothing to download. The web page fetches
//! the same folder next to the page instead. Load it with
//! [`Pipeline::default_model`](crate::Pipeline::default_model).

/// How the built-in model names itself in outputs and sidecars.
pub const NAME: &str = "synfer-tiny (built in)";

/// The folder in the source tree.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/synfer-tiny");

macro_rules! model_file {
    ($rel:literal) => {
        (
            $rel,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/synfer-tiny/",
                $rel
            )) as &[u8],
        )
    };
}

/// Every file of the folder the pipeline reads.
pub const FILES: [(&str, &[u8]); 15] = [
    model_file!("model_index.json"),
    model_file!("scheduler/scheduler_config.json"),
    model_file!("text_encoder/config.json"),
    model_file!("text_encoder/model.safetensors"),
    model_file!("tokenizer/merges.txt"),
    model_file!("tokenizer/special_tokens_map.json"),
    model_file!("tokenizer/tokenizer_config.json"),
    model_file!("tokenizer/vocab.json"),
    model_file!("unet/config.json"),
    model_file!("unet/diffusion_pytorch_model.safetensors"),
    model_file!("vae/config.json"),
    model_file!("vae/diffusion_pytorch_model.safetensors"),
    model_file!("au_adapter/config.json"),
    model_file!("au_adapter/diffusion_pytorch_model.safetensors"),
    model_file!("synfer.json"),
];
