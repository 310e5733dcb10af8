//! The venv cache's side of preparing a task: the cache key of an environment spec, and
//! restoring (or reusing in place) and storing through `clearml_envcache`. Split from
//! `prepare.rs` to keep files small.

use std::path::{Path, PathBuf};

use clearml_progress::Reporter;

use crate::prepare::{PrepareError, PrepareSettings, io, say};

/// The cache inputs of `spec`, or `None` (said why) when it must not be cached.
pub(crate) fn env_cache_key(
    spec: &clearml_pyenv::EnvSpec,
    python_full_version: &str,
    code_root: &Path,
    settings: &PrepareSettings,
    progress: &dyn Reporter,
) -> Option<clearml_envcache::KeyInputs> {
    let (uv, pip) = (clearml_pyenv::Manager::Uv, clearml_pyenv::Manager::Pip);
    if spec.manager != uv && spec.manager != pip {
        say(
            progress,
            &format!(
                "::: Not using the venv cache: the {} manager installs from the project :::",
                spec.manager.as_str()
            ),
        );
        return None;
    }
    // A lock file can switch the build to `uv sync`/poetry, which install from files the
    // requirement set does not cover.
    if let Some(lock) = ["uv.lock", "poetry.lock"]
        .into_iter()
        .find(|f| code_root.join(f).is_file())
    {
        say(
            progress,
            &format!("::: Not using the venv cache: the repository has a {lock} :::"),
        );
        return None;
    }
    let set = match &spec.requirements {
        clearml_pyenv::Requirements::Text(text) => {
            clearml_envcache::normalise_text(text, spec.base_dir.as_deref())
        }
        clearml_pyenv::Requirements::Files(files) => clearml_envcache::normalise_files(files),
        clearml_pyenv::Requirements::None => Ok(Ok(Vec::new())),
        _ => Ok(Err(clearml_envcache::Uncacheable(
            "the project itself is installed".into(),
        ))),
    };
    let requirements = match set {
        Ok(Ok(set)) => set,
        Ok(Err(why)) => {
            say(
                progress,
                &format!("::: Not using the venv cache: {} :::", why.0),
            );
            return None;
        }
        // The build reports the real problem (a missing -r file) properly.
        Err(_) => return None,
    };
    // Every build option (upgrade, pip version, priority packages, torch settings, ...) goes
    // into the key through the spec's own description, with the per-machine paths and the
    // requirements (hashed by content above) blanked, so an option added to the spec later
    // can never be forgotten here.
    let mut shape = spec.clone();
    shape.venv_dir = PathBuf::new();
    shape.tools_dir = PathBuf::new();
    shape.python_binary = None;
    shape.uv_binary = None;
    shape.uv_cache_dir = None;
    shape.pip_cache_dir = None;
    shape.base_dir = None;
    // the code folder: one per task in services mode, so keeping it would never share an env
    shape.project_dir = None;
    shape.requirements = clearml_pyenv::Requirements::None;
    let install_flags = vec![format!("{shape:?}")];
    Some(clearml_envcache::KeyInputs {
        python_version: python_full_version.to_string(),
        package_manager: spec.manager.as_str().to_string(),
        requirements,
        index_urls: spec.extra_index_urls.clone(),
        install_flags,
        cuda_version: settings.cuda_version.clone(),
        // The agent builds on the host; inside a container the image's python version is
        // already part of the key.
        docker_image: None,
        system_site_packages: spec.system_site_packages,
    })
}

/// A restore into `venv_dir` (cleared first), or `None` on a miss.
pub(crate) fn restore_env(
    cache: &clearml_envcache::EnvCache,
    inputs: &clearml_envcache::KeyInputs,
    venv_dir: &Path,
    progress: &dyn Reporter,
) -> Result<Option<clearml_envcache::Restored>, PrepareError> {
    let key = clearml_envcache::cache_key(inputs);
    let short = clearml_envcache::short(&key);
    if !cache.contains(&key) {
        say(
            progress,
            &format!("::: Python environment cache miss {short} :::"),
        );
        return Ok(None);
    }
    say(
        progress,
        &format!("::: Using Cached environment {short} :::"),
    );
    // The slot's folder may hold this very environment from the last task, untouched.
    match cache.reuse(&key, venv_dir, progress) {
        Ok(Some(r)) => {
            say(
                progress,
                &format!(
                    "Reusing {} as it is (checked in {:.3}s)",
                    venv_dir.display(),
                    r.elapsed.as_secs_f64()
                ),
            );
            return Ok(Some(r));
        }
        Ok(None) => {}
        Err(e) => say(
            progress,
            &format!(
                "Warning: cannot check {} for reuse: {e}",
                venv_dir.display()
            ),
        ),
    }
    // Only the venv folder: task_repository/ and code/ are its siblings.
    if venv_dir.exists() {
        std::fs::remove_dir_all(venv_dir)
            .map_err(io(format!("cannot clear {}", venv_dir.display())))?;
    }
    match cache.restore(&key, venv_dir, progress) {
        Ok(Some(r)) => {
            say(
                progress,
                &format!(
                    "Restored {} in {:.3}s: {} files linked, {} rewritten, {} copied",
                    venv_dir.display(),
                    r.elapsed.as_secs_f64(),
                    r.linked,
                    r.rewritten,
                    r.copied
                ),
            );
            Ok(Some(r))
        }
        Ok(None) => {
            say(progress, "The cached environment is gone; building instead");
            Ok(None)
        }
        Err(e) => {
            say(
                progress,
                &format!(
                    "Warning: restoring the cached environment failed ({e}); building instead"
                ),
            );
            let _ = std::fs::remove_dir_all(venv_dir);
            Ok(None)
        }
    }
}

/// Adds a freshly built environment to the cache; failures only warn.
pub(crate) fn store_env(
    cache: &clearml_envcache::EnvCache,
    inputs: &clearml_envcache::KeyInputs,
    built: &clearml_pyenv::BuiltEnv,
    progress: &dyn Reporter,
) {
    let key = clearml_envcache::cache_key(inputs);
    let short = clearml_envcache::short(&key);
    match cache.store(&key, &built.venv_dir, inputs, &built.frozen, progress) {
        Ok(clearml_envcache::Stored::Added(m)) => {
            say(
                progress,
                &format!(
                    "::: Stored environment {short} in the venv cache ({} files, {:.1} MB) :::",
                    m.files,
                    m.size as f64 / 1e6
                ),
            );
            // The next task of this slot with the same requirements can take the folder as
            // it is.
            cache.mark_reusable(&m, &built.venv_dir);
        }
        Ok(clearml_envcache::Stored::AlreadyPresent) => {
            say(
                progress,
                &format!("::: Environment {short} is already cached :::"),
            );
        }
        Ok(clearml_envcache::Stored::Skipped(why)) => {
            say(
                progress,
                &format!("::: Environment {short} not cached: {why} :::"),
            );
        }
        Err(e) => say(
            progress,
            &format!("Warning: caching the environment failed: {e}"),
        ),
    }
}
