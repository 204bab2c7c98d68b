//! The UNet on a wgpu device (lavapipe in CI: `mesa-vulkan-drivers`) agrees with flex.

mod common;

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;
use common::{fixture, host, load_refs, rel_l2};
use synfer::pipeline::Pipeline;
use synfer::pipeline::source::DirSource;

#[test]
fn unet_on_wgpu_matches_flex() {
    let gpu = Device::wgpu_options()
        .graphics_api(WgpuBackend::Vulkan)
        .init()
        .expect("a Vulkan adapter (install mesa-vulkan-drivers for lavapipe)");
    eprintln!("wgpu adapter: {:?}", gpu.identity().map(|i| i.name));
    let src = DirSource::new(fixture("sd2-tiny")).unwrap();
    let r = load_refs("reference/sd2.safetensors");
    let run = |device: &Device| {
        let p = Pipeline::from_source(&src, device).unwrap();
        let out = p.unet().forward(
            r["unet.sample"].tensor(device),
            &r["unet.timestep"].data,
            r["unet.encoder_hidden_states"].tensor(device),
        );
        host(out)
    };
    let (shape_gpu, on_gpu) = run(&gpu);
    let (shape_cpu, on_cpu) = run(&Device::flex());
    assert_eq!(shape_gpu, shape_cpu);
    let err = rel_l2(&on_gpu, &on_cpu);
    eprintln!("wgpu vs flex: relative L2 = {err:.3e}");
    assert!(err <= 1e-4, "wgpu vs flex relative L2 {err:.3e}");
    let vs_ref = rel_l2(&on_gpu, &r["unet.out"].data);
    assert!(vs_ref <= 1e-4, "wgpu vs diffusers relative L2 {vs_ref:.3e}");
}
