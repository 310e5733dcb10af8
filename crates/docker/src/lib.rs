//! Docker mode: running a task inside its container image.
//!
//! The design, in the order the daemon uses it:
//!
//! 1. [`resolve_image`] picks the image and base arguments from the task's `container` field
//!    ([`TaskContainer`]), the CLI's `--docker IMAGE [ARGS]`, `CLEARML_DOCKER_IMAGE` and
//!    `agent.default_docker`, and says whether to write the choice back to the task.
//! 2. [`plan_container`] turns that, the [`DockerSettings`](clearml_config::DockerSettings) and
//!    the caller's host paths into a [`RunSpec`]: merged arguments ([`merge_arguments`]:
//!    filters, forbidden switches, the agent's extra arguments, protected switches), GPU switches
//!    ([`gpu_args`]), labels, a name from the task id, the caches, the ssh material, the agent
//!    binary and the configuration copy as mounts, the environment, `--network host` for a
//!    loopback server, and the entry script ([`EntryScript`]) that runs the admin's and the
//!    task's shell scripts and then execs the mounted agent. It also returns the lines to show
//!    in the task's console and the command line with secrets hidden.
//! 3. [`DockerCli`] runs it with the `docker` or `podman` program: [`DockerCli::ensure_image`]
//!    (pull policy), [`DockerCli::run_attached`] (output streamed to a callback, stopped on
//!    request), [`DockerCli::stop`], [`DockerCli::list_by_label`] and [`DockerCli::remove`] (to
//!    clean up after a dead agent), [`DockerCli::commit`] (for `build --docker`).
//!    [`diagnose_failure`] explains failures that come from the image (no `/bin/sh`, musl, a
//!    glibc older than the agent needs); [`required_glibc`] reads the newest glibc symbol
//!    version a binary needs, and [`choose_binary`] picks the agent binary to mount from the
//!    [`candidate_paths`] by the image's glibc ([`DockerCli::image_glibc`], cached per image id
//!    in a [`GlibcCache`]).
//!
//! The crate never prints: everything meant for a console is returned as lines. Secrets given
//! as [`EnvVar::secret`] reach the container through the docker client's environment (`-e
//! NAME`), so they appear neither in the command line nor in its printed form.

mod args;
mod binary;
mod cli;
mod error;
mod glibc;
mod gpus;
mod plan;
mod podman;
mod resolve;
mod script;

pub use args::{expand_vars, has_switch, switch_name};
pub use binary::{
    BASELINE_GLIBC, BINARY_ENV, BinaryCandidate, GlibcCache, GlibcVersion, PORTABLE_NAME,
    PROBE_SCRIPT, candidate_paths, choose_binary, needs_probe,
};
pub use cli::{ContainerSummary, DockerCli, ImageReady, RunOutcome, Stream};
pub use error::DockerError;
pub use glibc::{parse_glibc_version_text, required_glibc};
pub use gpus::{GpuArgs, GpuRequest, gpu_args};
pub use plan::{
    ContainerPlan, ContainerRequest, EnvVar, LABEL_TASK, LABEL_WORKER, Mount, RunSpec, SshSource,
    container_name, copy_ssh_dir, hide_secrets, is_loopback_url, paths, plan_container,
    write_private_file,
};
pub use podman::{own_ulimit_args, ulimit_args};
pub use resolve::{
    ImageChoice, ImageSource, MergedArgs, TaskContainer, agent_image, merge_arguments,
    resolve_image,
};
pub use script::{EXIT_UNSUPPORTED_IMAGE, EntryScript, UNSUPPORTED_IMAGE_MARKER, diagnose_failure};

/// The container engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    /// The program's usual name.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}
