//! The agent's configuration: `clearml.conf` as the Python clearml-agent reads it.
//!
//! Loading happens in layers, each merged over the previous one with HOCON's rule (objects
//! merge key by key, anything else is replaced), in the Python agent's order:
//!
//! 1. built-in defaults (`defaults/agent.conf`, `sdk.conf`, `api.conf`, each under its file stem);
//! 2. `CLEARML_CONFIG_PATH`: a folder of extra `*.conf` files, each under its file stem;
//! 3. the user's file: `--config-file`, else `CLEARML_CONFIG_FILE` (or `TRAINS_CONFIG_FILE`),
//!    else `~/trains.conf` then `~/clearml.conf` (both optional, the latter wins);
//! 4. `CLEARML_AGENT__SECTION__KEY=value` variables, each value read as HOCON;
//! 5. the named variables (`CLEARML_API_HOST`, `CLEARML_WORKER_ID`, `CUDA_VERSION`, ...);
//! 6. derived values (`api.host` from `api.api_server`, `agent.worker_name` from the host name).
//!
//! Every value keeps its [`Origin`](clearml_hocon::Origin), so a bad value found later by a
//! typed getter (see [`AgentSettings`]) is reported with the file and line, or the variable, it
//! came from. The environment is read once into an [`Env`] snapshot, which tests replace.

mod agent_more;
mod docker;
mod env;
mod error;
mod load;
mod mask;
mod settings;

pub use agent_more::{GitCredentialConfig, MonitorConfig, VcsConfig, VenvsCache};
pub use docker::{DockerSettings, HideDockerEnv};
pub use env::{ENV_OVERRIDES, Env, EnvOverride};
pub use error::ConfigError;
pub use load::{Config, LoadOptions};
pub use mask::{mask_docker_args, mask_url_passwords};
pub use settings::{
    AgentSettings, ApiSettings, CacheDir, DefaultDocker, PackageManager, PackageManagerKind,
    StorageCache,
};
