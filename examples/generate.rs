//! The library's front door: load a model (a diffusers folder, or the built-in synfer-tiny),
//! ask for an expression, save the image.
//!
//! `cargo run --release --example generate -- [MODEL_DIR] [OUT.png]`

use synfer::{Expression, GenerateRequest, Pipeline};

fn main() -> synfer::Result<()> {
    let mut args = std::env::args().skip(1);
    let (model, out) = (args.next(), args.next());
    let device = synfer::device::select(synfer::device::DeviceChoice::Auto)?;
    let pipeline = match model {
        Some(dir) => Pipeline::builder(dir.as_str())
            .device(&device.device)
            .build()?,
        None => Pipeline::default_model(&device.device)?,
    };
    let request = GenerateRequest {
        expression: Some(Expression::Surprised),
        seed: 7,
        ..GenerateRequest::new("a photo of a woman")
    };
    let image = pipeline.generate(&request)?;
    let path = out.unwrap_or_else(|| "surprised.png".into());
    synfer::image::write_png(path.as_ref(), &image.images[0], image.width, image.height)?;
    println!("wrote {path} ({} × {})", image.width, image.height);
    Ok(())
}
