//! NVIDIA GPU statistics through NVML. `nvml-wrapper` loads `libnvidia-ml.so.1` at run time,
//! so machines without a driver simply have no GPU statistics.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use serde_json::{Map, Value, json};

use crate::stats::Mean;

/// After this many failed readings GPU statistics are turned off (as the Python agent does).
const MAX_FAILURES: u32 = 3;
/// Reported as utilisation when the device has none (MIG), like `default_gpu_utilization`.
const DEFAULT_UTILIZATION: f64 = 100.0;
const MB: f64 = 1024.0 * 1024.0;

/// Averages of one GPU: temperature, usage, memory used, memory free.
type GpuMeans = [Mean; 4];
const KEYS: [&str; 4] = [
    "gpu_temperature",
    "gpu_usage",
    "gpu_memory_used",
    "gpu_memory_free",
];

pub(crate) struct Gpus {
    nvml: Option<Nvml>,
    /// NVML indices of the GPUs to report, in order.
    indices: Vec<u32>,
    means: Vec<GpuMeans>,
    failures: u32,
}

impl Gpus {
    /// The visible GPUs, or `None` without NVML or GPUs.
    pub fn open() -> Option<Gpus> {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("no GPU statistics: {e}");
                return None;
            }
        };
        let count = nvml.device_count().ok().filter(|&c| c > 0)?;
        let setting = ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"]
            .iter()
            .find_map(|k| std::env::var(k).ok());
        let uuids: Vec<Option<String>> = (0..count)
            .map(|i| nvml.device_by_index(i).and_then(|d| d.uuid()).ok())
            .collect();
        let indices = visible(setting.as_deref(), &uuids);
        if indices.is_empty() {
            return None;
        }
        Some(Gpus {
            nvml: Some(nvml),
            means: vec![GpuMeans::default(); indices.len()],
            indices,
            failures: 0,
        })
    }

    pub fn enabled(&self) -> bool {
        self.nvml.is_some()
    }

    pub fn sample(&mut self) {
        let Some(nvml) = &self.nvml else {
            return;
        };
        let row: Result<Vec<[Option<f64>; 4]>, NvmlError> =
            self.indices.iter().map(|&i| read(nvml, i)).collect();
        match row {
            Ok(row) => {
                for (means, values) in self.means.iter_mut().zip(row) {
                    for (m, v) in means.iter_mut().zip(values) {
                        if let Some(v) = v {
                            m.add(v);
                        }
                    }
                }
            }
            Err(e) => {
                self.failures += 1;
                if self.failures >= MAX_FAILURES {
                    tracing::warn!("GPU statistics turned off after {MAX_FAILURES} failures: {e}");
                    self.nvml = None;
                } else {
                    tracing::debug!("cannot read GPU statistics: {e}");
                }
            }
        }
    }

    /// Adds the per-GPU lists (one entry per visible GPU) and starts over.
    pub fn report(&mut self, out: &mut Map<String, Value>) {
        for (k, key) in KEYS.iter().enumerate() {
            let values: Vec<Option<f64>> = self.means.iter().map(|m| m[k].get()).collect();
            if values.iter().any(Option::is_some) {
                out.insert((*key).into(), json!(values));
            }
        }
        for m in &mut self.means {
            *m = GpuMeans::default();
        }
    }
}

fn read(nvml: &Nvml, index: u32) -> Result<[Option<f64>; 4], NvmlError> {
    let device = nvml.device_by_index(index)?;
    let temperature = match device.temperature(TemperatureSensor::Gpu) {
        Ok(t) => Some(f64::from(t)),
        Err(NvmlError::NotSupported) => None,
        Err(e) => return Err(e),
    };
    let usage = match device.utilization_rates() {
        Ok(u) => f64::from(u.gpu),
        Err(NvmlError::NotSupported) => DEFAULT_UTILIZATION,
        Err(e) => return Err(e),
    };
    let memory = device.memory_info()?;
    Ok([
        temperature,
        Some(usage),
        Some(memory.used as f64 / MB),
        Some(memory.free as f64 / MB),
    ])
}

/// The indices selected by a `NVIDIA_VISIBLE_DEVICES`-style value: unset, empty or `all` is
/// every GPU; `none`/`void` is none; otherwise a comma list of indices or UUIDs. A list that
/// matches no GPU selects them all (the Python agent 3.x does the same).
fn visible(setting: Option<&str>, uuids: &[Option<String>]) -> Vec<u32> {
    let all: Vec<u32> = (0..uuids.len() as u32).collect();
    let setting = setting.map(str::trim).unwrap_or("");
    match setting {
        "" | "all" => return all,
        "none" | "void" | "NoDevFiles" => return Vec::new(),
        _ => {}
    }
    let mut chosen = Vec::new();
    for item in setting.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let index = match item.parse::<u32>() {
            Ok(i) => Some(i).filter(|&i| (i as usize) < uuids.len()),
            Err(_) => uuids
                .iter()
                .position(|u| u.as_deref() == Some(item))
                .map(|i| i as u32),
        };
        if let Some(i) = index.filter(|i| !chosen.contains(i)) {
            chosen.push(i);
        }
    }
    if chosen.is_empty() { all } else { chosen }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices() {
        let uuids = vec![Some("GPU-a".to_string()), Some("GPU-b".to_string()), None];
        assert_eq!(visible(None, &uuids), vec![0, 1, 2]);
        assert_eq!(visible(Some("all"), &uuids), vec![0, 1, 2]);
        assert_eq!(visible(Some("2,0"), &uuids), vec![2, 0]);
        assert_eq!(visible(Some("GPU-b, 0"), &uuids), vec![1, 0]);
        assert_eq!(visible(Some("7"), &uuids), vec![0, 1, 2]);
        assert!(visible(Some("none"), &uuids).is_empty());
    }

    #[test]
    fn no_driver_means_no_gpus() {
        // On machines without libnvidia-ml this must be a clean `None`, not a crash; with a
        // driver it finds the GPUs.
        if let Some(g) = Gpus::open() {
            assert!(!g.indices.is_empty());
        }
    }
}
