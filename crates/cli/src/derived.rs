//! The values the Python agent derives at startup and `config` shows with the rest:
//! `agent.default_python` (the interpreter tasks fall back to, `X.Y`), `agent.cuda_version`
//! and `agent.cudnn_version` (`122`-style, `0` when there is no CUDA). A value the
//! configuration (or `CLEARML_CUDA_VERSION`/`CUDA_VERSION`, ...) gives is normalised and kept.
//!
//! CUDA: `nvidia-smi` ("CUDA Version: 12.2"), else `nvcc --version` ("release 12.2"). cuDNN:
//! `CUDNN_MAJOR`/`CUDNN_MINOR` in `cudnn_version.h` or `cudnn.h` beside nvcc's `include`.

use std::path::{Path, PathBuf};
use std::process::Command;

use clearml_config::Config;
use clearml_hocon::{Origin, Value};

/// `"12.2"` → `"122"`, `"10.0.130"` → `"100"`, `"122"` stays; empty → `None`.
pub fn normalize_cuda(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let parts: Vec<&str> = v.split('.').collect();
    let out = match parts.as_slice() {
        [one] => one.to_string(),
        [a, b, ..] => format!("{a}{b}"),
        [] => return None,
    };
    out.chars().all(|c| c.is_ascii_digit()).then_some(out)
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The `X.Y` after `marker` in `text`.
fn version_after(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let v: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    normalize_cuda(v.trim_end_matches('.'))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn detect_cuda() -> Option<String> {
    output("nvidia-smi", &[])
        .and_then(|t| version_after(&t, "CUDA Version:"))
        .or_else(|| output("nvcc", &["--version"]).and_then(|t| version_after(&t, "release")))
}

fn detect_cudnn() -> Option<String> {
    let include = which("nvcc")?.parent()?.parent()?.join("include");
    ["cudnn_version.h", "cudnn.h"]
        .iter()
        .find_map(|f| cudnn_from_header(&include.join(f)))
}

fn cudnn_from_header(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let define = |name: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.next().map(str::to_string))
                .flatten()
        })
    };
    Some(format!(
        "{}{}",
        define("CUDNN_MAJOR")?,
        define("CUDNN_MINOR")?
    ))
}

fn text(config: &Config, key: &str) -> Option<String> {
    config
        .get(key)
        .and_then(Value::scalar_text)
        .map(|s| s.to_string())
        .filter(|s| !s.trim().is_empty())
}

/// Adds the derived keys to `tree` (the configuration as shown).
pub fn add_derived(config: &Config, tree: &mut Value) {
    let detected = |v: String, how: &str| Value::string(v, Origin::described(how));
    let python = text(config, "agent.default_python").or_else(|| {
        let configured = text(config, "agent.python_binary").map(PathBuf::from);
        clearml_pyenv::find_python(None, configured.as_deref())
            .ok()
            .map(|p| p.version.split('.').take(2).collect::<Vec<_>>().join("."))
    });
    if let Some(p) = python {
        tree.set_keys(&["agent", "default_python"], detected(p, "detected"));
    }
    let cuda = text(config, "agent.cuda_version")
        .and_then(|v| normalize_cuda(&v))
        .or_else(detect_cuda)
        .unwrap_or_else(|| "0".into());
    tree.set_keys(&["agent", "cuda_version"], detected(cuda, "detected"));
    let cudnn = text(config, "agent.cudnn_version")
        .and_then(|v| normalize_cuda(&v))
        .or_else(detect_cudnn)
        .unwrap_or_else(|| "0".into());
    tree.set_keys(&["agent", "cudnn_version"], detected(cudnn, "detected"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_normalise() {
        assert_eq!(normalize_cuda("12.2").as_deref(), Some("122"));
        assert_eq!(normalize_cuda("10.0.130").as_deref(), Some("100"));
        assert_eq!(normalize_cuda("122").as_deref(), Some("122"));
        assert_eq!(normalize_cuda(""), None);
        assert_eq!(normalize_cuda("abc"), None);
        assert_eq!(
            version_after(
                "| NVIDIA-SMI 535.1  Driver Version: 535.1  CUDA Version: 12.2 |",
                "CUDA Version:"
            )
            .as_deref(),
            Some("122")
        );
        assert_eq!(
            version_after("Cuda compilation tools, release 11.8, V11.8.89", "release").as_deref(),
            Some("118")
        );
    }
}
