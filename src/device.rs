//! The one place that picks a concrete device.
//!
//! `auto` takes a real GPU adapter (discrete, integrated or virtual) through wgpu when one
//! exists, and otherwise burn's flex CPU backend — never a software rasteriser (lavapipe,
//! llvmpipe, SwiftShader), which is 30–80× slower than flex. `gpu` takes a hardware adapter and
//! is refused up front without one; `software` takes a software rasteriser on purpose (tests of
//! the GPU path on a machine without a GPU). Neither falls back to wgpu's GL backend, whose
//! software drivers can deadlock instead of failing. `cuda` takes burn's CUDA
//! runtime (builds with the `cuda` feature). [`Precision::F16`] makes a GPU compute in half
//! precision: weights and activations in f16, as diffusers' `torch_dtype=torch.float16`.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
pub enum DeviceChoice {
    /// A hardware GPU if present, else the CPU backend.
    Auto,
    /// burn's flex CPU backend.
    Cpu,
    /// A hardware GPU through wgpu (Vulkan, Metal, DX12); an error when there is none.
    Gpu,
    /// wgpu on a software rasteriser (lavapipe, SwiftShader): slow, for testing the GPU path.
    Software,
    /// An NVIDIA GPU through burn's CUDA runtime (a build with the `cuda` feature).
    Cuda,
}

/// Floating-point precision of the computation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
pub enum Precision {
    /// 32-bit floats everywhere (every device).
    #[default]
    F32,
    /// 16-bit floats on a GPU that supports them (tensor cores on NVIDIA).
    F16,
}

/// A device plus a description for logs and sidecars.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The burn device.
    pub device: Device,
    /// E.g. `flex (CPU)` or `wgpu: NVIDIA H100 (DiscreteGpu, Vulkan)`.
    pub description: String,
    /// The largest buffer the device allocates, in bytes, where the adapter states one (wgpu).
    pub max_buffer: Option<u64>,
    /// The float precision it computes in.
    pub precision: Precision,
}

/// A wgpu adapter found by [`hardware_adapter`]: its kind for burn, a name and its buffer limit.
#[cfg(not(target_family = "wasm"))]
type Adapter = (Option<burn::tensor::DeviceKind>, String, Option<u64>);

#[cfg(not(target_family = "wasm"))]
fn wgpu_adapters() -> Vec<(burn::tensor::wgpu::wgpu::AdapterInfo, u64)> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| {
            let l = a.limits();
            let limit = l.max_buffer_size.min(l.max_storage_buffer_binding_size);
            (a.get_info(), limit)
        })
        .collect()
}

/// The adapters wgpu finds on Vulkan, Metal and DX12, each as `name (DeviceType)`.
#[cfg(not(target_family = "wasm"))]
pub fn wgpu_adapter_names() -> Vec<String> {
    wgpu_adapters()
        .iter()
        .map(|(info, _)| format!("{} ({:?})", info.name, info.device_type))
        .collect()
}

/// [`wgpu_adapter_names`] for error messages.
#[cfg(not(target_family = "wasm"))]
fn adapter_list() -> String {
    let found = wgpu_adapter_names();
    if found.is_empty() {
        "none found".into()
    } else {
        format!("found only {}", found.join(", "))
    }
}

/// The first hardware adapter (discrete, integrated, virtual), or with `software` the first
/// software rasteriser.
#[cfg(not(target_family = "wasm"))]
fn hardware_adapter(software: bool) -> Option<Adapter> {
    use burn::tensor::wgpu::wgpu;
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        _ => None,
    };
    let adapters = wgpu_adapters();
    if software {
        let (info, limit) = adapters
            .iter()
            .find(|(info, _)| info.device_type == wgpu::DeviceType::Cpu)?;
        return Some((
            Some(burn::tensor::DeviceKind::Cpu),
            format!("software rasteriser {} ({:?})", info.name, info.backend),
            Some(*limit),
        ));
    }
    let mut found: Vec<(usize, wgpu::AdapterInfo, u64)> = adapters
        .into_iter()
        .filter_map(|(info, limit)| rank(info.device_type).map(|r| (r, info, limit)))
        .collect();
    found.sort_by_key(|(r, _, _)| *r);
    let (_, info, limit) = found.into_iter().next()?;
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => burn::tensor::DeviceKind::DiscreteGpu(0),
        wgpu::DeviceType::IntegratedGpu => burn::tensor::DeviceKind::IntegratedGpu(0),
        _ => burn::tensor::DeviceKind::VirtualGpu(0),
    };
    Some((
        Some(kind),
        format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
        Some(limit),
    ))
}

/// Picks a device for `choice` (native), computing in f32.
/// Gives Mesa's Vulkan loader (lavapipe, and real drivers) a private runtime folder when
/// `XDG_RUNTIME_DIR` is unset, so that it does not complain on stderr. Call first thing in a
/// program, before any other thread exists.
#[cfg(not(target_family = "wasm"))]
pub fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // One folder shared by every run (it stays empty), so that runs leave nothing behind.
        let dir = std::env::temp_dir().join("synfer-xdg");
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if builder.create(&dir).is_ok() || dir.is_dir() {
            // SAFETY: documented as called before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

#[cfg(not(target_family = "wasm"))]
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    select_with(choice, Precision::F32)
}

/// Picks a device for `choice` and sets its float precision before any tensor touches it.
/// F16 is refused on the CPU backend (flex computes in f32) and on adapters without f16.
#[cfg(not(target_family = "wasm"))]
pub fn select_with(choice: DeviceChoice, precision: Precision) -> Result<SelectedDevice> {
    let mut selected = select_f32(choice)?;
    if precision == Precision::F16 {
        if selected.description.starts_with("flex") {
            return Err(Error::Device(format!(
                "f16 compute is for GPUs; {} computes in f32 (drop --precision f16 or pick \
                 --device gpu/cuda)",
                selected.description
            )));
        }
        set_f16(&mut selected)?;
    }
    Ok(selected)
}

#[cfg(not(target_family = "wasm"))]
fn set_f16(selected: &mut SelectedDevice) -> Result<()> {
    use burn::tensor::FloatDType;
    if !selected.device.supports_dtype(FloatDType::F16) {
        return Err(Error::Device(format!(
            "{} has no f16 arithmetic; use --precision f32",
            selected.description
        )));
    }
    selected
        .device
        .configure(FloatDType::F16)
        .map_err(|e| Error::Device(format!("setting f16 on {}: {e:?}", selected.description)))?;
    selected.description.push_str(", f16");
    selected.precision = Precision::F16;
    Ok(())
}

#[cfg(not(target_family = "wasm"))]
fn select_f32(choice: DeviceChoice) -> Result<SelectedDevice> {
    let flex = || SelectedDevice {
        device: Device::flex(),
        description: "flex (CPU)".into(),
        max_buffer: None,
        precision: Precision::F32,
    };
    match choice {
        DeviceChoice::Cpu => Ok(flex()),
        DeviceChoice::Auto => match hardware_adapter(false) {
            Some(adapter) => init_wgpu(adapter),
            None => Ok(flex()),
        },
        DeviceChoice::Gpu => match hardware_adapter(false) {
            Some(adapter) => init_wgpu(adapter),
            None => Err(Error::Device(format!(
                "--device gpu: no hardware GPU adapter on Vulkan, Metal or DX12 ({}); use --device \
                 cpu, or --device software to run wgpu on a software rasteriser",
                adapter_list()
            ))),
        },
        DeviceChoice::Software => match hardware_adapter(true) {
            Some(adapter) => init_wgpu(adapter),
            None => Err(Error::Device(format!(
                "--device software: no software rasteriser on Vulkan, Metal or DX12 ({}); \
                 install Mesa's lavapipe, or use --device cpu",
                adapter_list()
            ))),
        },
        DeviceChoice::Cuda => init_cuda(),
    }
}

/// burn's CUDA runtime on GPU 0, checked with one small computation: the runtime loads the
/// driver (`libcuda`) and NVRTC when first used and panics without them, which becomes an error.
#[cfg(all(feature = "cuda", not(target_family = "wasm")))]
fn init_cuda() -> Result<SelectedDevice> {
    use burn::tensor::Tensor;
    let probe = || {
        let device = Device::cuda(0);
        let sum = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        (device, sum)
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(probe);
    std::panic::set_hook(hook);
    match result {
        Ok((device, sum)) if sum == 4.0 => {
            let name = device
                .identity()
                .map(|i| i.name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "GPU 0".into());
            Ok(SelectedDevice {
                device,
                description: format!("cuda: {name}"),
                max_buffer: None,
                precision: Precision::F32,
            })
        }
        Ok((_, sum)) => Err(Error::Device(format!(
            "CUDA runtime answered 1+1+1+1 = {sum}: broken driver?"
        ))),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(Error::Device(format!(
                "CUDA is not usable here ({}); it needs an NVIDIA driver (libcuda) and NVRTC \
                 (libnvrtc, from the CUDA toolkit) on the library path, else use --device gpu",
                why.lines().next().unwrap_or("").trim()
            )))
        }
    }
}

#[cfg(all(not(feature = "cuda"), not(target_family = "wasm")))]
fn init_cuda() -> Result<SelectedDevice> {
    Err(Error::Device(
        "this synfer was built without CUDA: rebuild with `cargo build --release --features \
         cuda` (no CUDA toolkit needed, but the build downloads LLVM from GitHub), or use \
         --device gpu (wgpu: Vulkan/Metal/DX12, NVIDIA GPUs included)"
            .into(),
    ))
}

#[cfg(not(target_family = "wasm"))]
fn init_wgpu((kind, name, limit): Adapter) -> Result<SelectedDevice> {
    let mut options = Device::wgpu_options();
    if let Some(kind) = kind {
        options = options.device_kind(kind);
    }
    let device = options
        .init()
        .map_err(|e| Error::Device(format!("wgpu initialisation failed for {name}: {e:?}")))?;
    let adapter = device
        .identity()
        .map(|i| i.name)
        .unwrap_or_else(|| name.clone());
    Ok(SelectedDevice {
        device,
        description: format!("wgpu: {adapter} [{name}]"),
        max_buffer: limit,
        precision: Precision::F32,
    })
}

#[cfg(target_family = "wasm")]
thread_local! {
    /// WebGPU once initialised in this worker: burn registers one server per device, so a
    /// second initialisation fails; later calls share the first.
    static WEBGPU: std::cell::RefCell<Option<SelectedDevice>> = const { std::cell::RefCell::new(None) };
}

/// Initialises WebGPU in the browser (must precede any tensor creation there); once per
/// worker, later calls return the same device. With [`Precision::F16`] it computes in f16 when
/// the adapter has `shader-f16`, else in f32 (the description says which); flex is f32.
#[cfg(target_family = "wasm")]
pub async fn select_web(webgpu: bool, precision: Precision) -> Result<SelectedDevice> {
    use burn::tensor::FloatDType;
    if !webgpu {
        return Ok(SelectedDevice {
            device: Device::flex(),
            description: "flex (CPU, wasm)".into(),
            max_buffer: None,
            precision: Precision::F32,
        });
    }
    if let Some(selected) = WEBGPU.with(|cell| cell.borrow().clone()) {
        return Ok(selected);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| Error::Device(format!("WebGPU initialisation failed: {e:?}")))?;
    let name = device
        .identity()
        .map(|i| i.name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "browser adapter".into());
    let mut selected = SelectedDevice {
        device,
        description: format!("webgpu: {name}"),
        max_buffer: None,
        precision: Precision::F32,
    };
    if precision == Precision::F16 {
        if selected.device.supports_dtype(FloatDType::F16) {
            selected.device.configure(FloatDType::F16).map_err(|e| {
                Error::Device(format!("setting f16 on {}: {e:?}", selected.description))
            })?;
            selected.description.push_str(", f16");
            selected.precision = Precision::F16;
        } else {
            selected
                .description
                .push_str(", f32 (the adapter has no shader-f16)");
        }
    }
    WEBGPU.with(|cell| *cell.borrow_mut() = Some(selected.clone()));
    Ok(selected)
}
