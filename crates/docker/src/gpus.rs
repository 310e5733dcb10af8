//! `--gpus`/`--cpu-only` to the engine's GPU switches.

use crate::Engine;

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuRequest {
    /// Neither `--gpus` nor `--cpu-only`: all GPUs when the host can give them, else none.
    Default,
    /// `--cpu-only` or `--gpus none`.
    None,
    /// `--gpus all`.
    All,
    /// `--gpus 0,1` or MIG slices `0:1` (kept as written).
    Devices(Vec<String>),
}

impl GpuRequest {
    /// From the daemon's `--gpus` value and `--cpu-only` flag.
    pub fn from_cli(gpus: Option<&str>, cpu_only: bool) -> GpuRequest {
        if cpu_only {
            return GpuRequest::None;
        }
        match gpus.map(str::trim) {
            None | Some("") => GpuRequest::Default,
            Some(g) if g.eq_ignore_ascii_case("all") => GpuRequest::All,
            Some(g) if g.eq_ignore_ascii_case("none") => GpuRequest::None,
            Some(g) => GpuRequest::Devices(
                g.split(',')
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty())
                    .collect(),
            ),
        }
    }
}

/// The switches to add, and the `NVIDIA_VISIBLE_DEVICES` value the container should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuArgs {
    pub args: Vec<String>,
    pub visible_devices: Option<String>,
    /// Set when GPUs were asked for by default but the host has no NVIDIA runtime.
    pub note: Option<String>,
}

/// The GPU switches for `request`. `nvidia_runtime` tells whether the engine can give GPUs
/// (see [`crate::DockerCli::has_nvidia_runtime`]); without it the default request passes no
/// switch at all, because docker would refuse to start the container. An explicit request is
/// passed through, so docker's own error explains why it cannot be met. `skip_flag`
/// (`CLEARML_DOCKER_SKIP_GPUS_FLAG`) passes only `NVIDIA_VISIBLE_DEVICES`.
pub fn gpu_args(
    request: &GpuRequest,
    engine: Engine,
    nvidia_runtime: bool,
    skip_flag: bool,
) -> GpuArgs {
    let (devices, visible): (Option<Vec<String>>, String) = match request {
        GpuRequest::None => {
            return GpuArgs {
                args: Vec::new(),
                visible_devices: Some("none".into()),
                note: None,
            };
        }
        GpuRequest::Default if !nvidia_runtime => {
            return GpuArgs {
                args: Vec::new(),
                visible_devices: None,
                note: Some(
                    "no NVIDIA container runtime on this host: the container runs without GPUs"
                        .into(),
                ),
            };
        }
        GpuRequest::Default | GpuRequest::All => (None, "all".into()),
        GpuRequest::Devices(d) => (Some(d.clone()), d.join(",")),
    };
    if skip_flag {
        return GpuArgs {
            args: Vec::new(),
            visible_devices: Some(visible),
            note: None,
        };
    }
    let args = match (engine, devices) {
        (_, None) => vec!["--gpus".into(), "all".into()],
        // docker reads the value as CSV, so a list of devices must be quoted inside the value.
        (Engine::Docker, Some(d)) if d.len() > 1 => {
            vec!["--gpus".into(), format!("\"device={}\"", d.join(","))]
        }
        (Engine::Docker, Some(d)) => vec!["--gpus".into(), format!("device={}", d.join(","))],
        // podman maps each `--gpus` value to the CDI device nvidia.com/gpu=<value>.
        (Engine::Podman, Some(d)) => d
            .iter()
            .flat_map(|x| ["--gpus".to_string(), x.clone()])
            .collect(),
    };
    GpuArgs {
        args,
        // `--gpus` already limits the devices; inside, every visible device is the task's.
        visible_devices: Some("all".into()),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: &[&str]) -> Vec<String> {
        a.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cli_values_parse() {
        assert_eq!(GpuRequest::from_cli(None, false), GpuRequest::Default);
        assert_eq!(GpuRequest::from_cli(Some("0,1"), true), GpuRequest::None);
        assert_eq!(GpuRequest::from_cli(Some("none"), false), GpuRequest::None);
        assert_eq!(GpuRequest::from_cli(Some("ALL"), false), GpuRequest::All);
        assert_eq!(
            GpuRequest::from_cli(Some("0, 1"), false),
            GpuRequest::Devices(s(&["0", "1"]))
        );
    }

    #[test]
    fn docker_argv_for_each_request() {
        let d = Engine::Docker;
        assert_eq!(
            gpu_args(&GpuRequest::All, d, true, false).args,
            s(&["--gpus", "all"])
        );
        assert_eq!(
            gpu_args(&GpuRequest::Default, d, true, false).args,
            s(&["--gpus", "all"])
        );
        assert_eq!(
            gpu_args(&GpuRequest::from_cli(Some("0,1"), false), d, true, false).args,
            s(&["--gpus", "\"device=0,1\""])
        );
        assert_eq!(
            gpu_args(&GpuRequest::from_cli(Some("2"), false), d, true, false).args,
            s(&["--gpus", "device=2"])
        );
        let mig = gpu_args(&GpuRequest::from_cli(Some("0:1"), false), d, true, false);
        assert_eq!(mig.args, s(&["--gpus", "device=0:1"]));
        assert_eq!(mig.visible_devices.as_deref(), Some("all"));
        let none = gpu_args(&GpuRequest::from_cli(None, true), d, true, false);
        assert!(none.args.is_empty());
        assert_eq!(none.visible_devices.as_deref(), Some("none"));
    }

    #[test]
    fn no_nvidia_runtime_means_no_gpus_unless_asked() {
        let d = Engine::Docker;
        let g = gpu_args(&GpuRequest::Default, d, false, false);
        assert!(g.args.is_empty());
        assert!(g.note.is_some());
        assert_eq!(
            gpu_args(&GpuRequest::All, d, false, false).args,
            s(&["--gpus", "all"])
        );
    }

    #[test]
    fn podman_and_skip_flag() {
        let p = Engine::Podman;
        assert_eq!(
            gpu_args(&GpuRequest::from_cli(Some("0,1"), false), p, true, false).args,
            s(&["--gpus", "0", "--gpus", "1"])
        );
        assert_eq!(
            gpu_args(&GpuRequest::All, p, true, false).args,
            s(&["--gpus", "all"])
        );
        let skip = gpu_args(
            &GpuRequest::from_cli(Some("0,1"), false),
            Engine::Docker,
            true,
            true,
        );
        assert!(skip.args.is_empty());
        assert_eq!(skip.visible_devices.as_deref(), Some("0,1"));
    }
}
