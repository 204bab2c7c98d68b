//! The one place that picks a concrete device.
//!
//! `auto` takes a real GPU adapter (discrete, integrated or virtual) through wgpu when one
//! exists, and otherwise burn's flex CPU backend — never a software rasteriser (lavapipe,
//! llvmpipe, SwiftShader), which is 30–80× slower than flex. `gpu` takes whatever wgpu adapter
//! exists, software ones included (useful for tests), and says so.

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
    /// Any wgpu adapter (hardware first, software rasteriser as a last resort).
    Gpu,
}

/// A device plus a description for logs and sidecars.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The burn device.
    pub device: Device,
    /// E.g. `flex (CPU)` or `wgpu: NVIDIA H100 (DiscreteGpu, Vulkan)`.
    pub description: String,
}

#[cfg(not(target_family = "wasm"))]
fn hardware_adapter() -> Option<(burn::tensor::DeviceKind, String)> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        _ => None,
    };
    let mut found: Vec<(usize, wgpu::AdapterInfo)> = adapters
        .iter()
        .map(|a| a.get_info())
        .filter_map(|info| rank(info.device_type).map(|r| (r, info)))
        .collect();
    found.sort_by_key(|(r, _)| *r);
    let (_, info) = found.into_iter().next()?;
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => burn::tensor::DeviceKind::DiscreteGpu(0),
        wgpu::DeviceType::IntegratedGpu => burn::tensor::DeviceKind::IntegratedGpu(0),
        _ => burn::tensor::DeviceKind::VirtualGpu(0),
    };
    Some((
        kind,
        format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
    ))
}

/// Picks a device for `choice` (native).
#[cfg(not(target_family = "wasm"))]
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    let flex = || SelectedDevice {
        device: Device::flex(),
        description: "flex (CPU)".into(),
    };
    match choice {
        DeviceChoice::Cpu => Ok(flex()),
        DeviceChoice::Auto => match hardware_adapter() {
            Some((kind, name)) => init_wgpu(Some(kind), name),
            None => Ok(flex()),
        },
        DeviceChoice::Gpu => match hardware_adapter() {
            Some((kind, name)) => init_wgpu(Some(kind), name),
            None => init_wgpu(None, "software rasteriser (no hardware GPU found)".into()),
        },
    }
}

#[cfg(not(target_family = "wasm"))]
fn init_wgpu(kind: Option<burn::tensor::DeviceKind>, name: String) -> Result<SelectedDevice> {
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
    })
}

/// Initialises WebGPU in the browser (must precede any tensor creation there).
#[cfg(target_family = "wasm")]
pub async fn select_web(webgpu: bool) -> Result<SelectedDevice> {
    if !webgpu {
        return Ok(SelectedDevice {
            device: Device::flex(),
            description: "flex (CPU, wasm)".into(),
        });
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
    Ok(SelectedDevice {
        device,
        description: format!("webgpu: {name}"),
    })
}
