//! A thin async wrapper over the `docker` (or `podman`) command line.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::Engine;
use crate::error::DockerError;
use crate::plan::RunSpec;

/// Which stream a line of container output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How an image became available.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageReady {
    /// The image's id (`sha256:...`), when docker told it.
    pub id: Option<String>,
    /// `docker pull` ran and succeeded.
    pub pulled: bool,
    /// Lines for the task's console, e.g. that the pull failed and the local image is used.
    pub messages: Vec<String>,
}

/// The end of an attached run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// The exit status of `docker run` (the container's, or 125-127 for docker's own errors);
    /// `None` when it was ended by a signal.
    pub exit_code: Option<i32>,
    /// The stop future fired and the container was stopped.
    pub stopped: bool,
}

/// A container as `docker ps -a` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

/// The `docker`/`podman` command line.
#[derive(Clone, Debug)]
pub struct DockerCli {
    engine: Engine,
    program: String,
}

fn lossy_trim(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn is_no_such_container(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("no such container") || m.contains("no container with")
}

impl DockerCli {
    /// The engine's usual program (`docker` or `podman`, found on `PATH`).
    pub fn new(engine: Engine) -> Self {
        DockerCli {
            engine,
            program: engine.program().to_string(),
        }
    }

    /// A specific program, e.g. an absolute path.
    pub fn with_program(engine: Engine, program: impl Into<String>) -> Self {
        DockerCli {
            engine,
            program: program.into(),
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn output(&self, args: &[&str]) -> Result<std::process::Output, DockerError> {
        self.command(args)
            .output()
            .await
            .map_err(|source| DockerError::Spawn {
                program: self.program.clone(),
                source,
            })
    }

    /// Runs the command and returns its stdout; a failure carries docker's stderr.
    async fn checked(&self, args: &[&str]) -> Result<String, DockerError> {
        let out = self.output(args).await?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let mut message = lossy_trim(&out.stderr);
        if message.is_empty() {
            message = lossy_trim(&out.stdout);
        }
        Err(DockerError::Command {
            command: format!("{} {}", self.program, args.join(" ")),
            status: out
                .status
                .code()
                .map_or("signal".to_string(), |c| c.to_string()),
            message,
        })
    }

    /// Whether the engine answers (`docker info`); the error carries its message.
    pub async fn check_available(&self) -> Result<(), DockerError> {
        match self.checked(&["info", "--format", "{{json .}}"]).await {
            Ok(_) => Ok(()),
            Err(DockerError::Command { message, .. }) => Err(DockerError::Unavailable {
                program: self.program.clone(),
                message,
            }),
            Err(e) => Err(e),
        }
    }

    /// Whether containers can be given NVIDIA GPUs: docker lists an `nvidia` runtime (or the
    /// NVIDIA container hook is installed); podman has an NVIDIA CDI specification.
    pub async fn has_nvidia_runtime(&self) -> bool {
        match self.engine {
            Engine::Docker => {
                let runtimes = self
                    .checked(&["info", "--format", "{{json .Runtimes}}"])
                    .await
                    .unwrap_or_default();
                let listed = serde_json::from_str::<serde_json::Value>(runtimes.trim())
                    .ok()
                    .and_then(|v| {
                        v.as_object()
                            .map(|o| o.keys().any(|k| k.contains("nvidia")))
                    })
                    .unwrap_or(false);
                listed || on_path("nvidia-container-runtime-hook")
            }
            Engine::Podman => ["/etc/cdi", "/var/run/cdi"].iter().any(|d| {
                std::fs::read_dir(d).is_ok_and(|mut it| {
                    it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("nvidia")))
                })
            }),
        }
    }

    /// Whether the image is present locally.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        Ok(self.image_id(image).await?.is_some())
    }

    /// The local image's id; `None` when it is not present.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, DockerError> {
        let out = self
            .output(&["image", "inspect", "--format", "{{.Id}}", image])
            .await?;
        let id = lossy_trim(&out.stdout);
        Ok((out.status.success() && !id.is_empty()).then_some(id))
    }

    /// The image's glibc version, from a throwaway container running
    /// [`PROBE_SCRIPT`](crate::PROBE_SCRIPT) with `/bin/sh` (no network). `None` when the image
    /// has no glibc (musl) or no shell; an error when the engine could not run it at all.
    pub async fn image_glibc(
        &self,
        image: &str,
    ) -> Result<Option<crate::GlibcVersion>, DockerError> {
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.engine == Engine::Podman {
            args.extend(crate::own_ulimit_args(&[]));
        }
        args.extend([image.into(), "-c".into(), crate::PROBE_SCRIPT.into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.output(&argv).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(v) = crate::parse_glibc_version_text(&text) {
            return Ok(Some(v));
        }
        // Exit 125: the engine's own failure (the container never ran).
        if out.status.code() == Some(125) {
            return Err(DockerError::Command {
                command: format!("{} {}", self.program, args.join(" ")),
                status: "125".into(),
                message: lossy_trim(&out.stderr),
            });
        }
        Ok(None)
    }

    /// `docker pull IMAGE`; the error carries docker's message.
    pub async fn pull(&self, image: &str) -> Result<(), DockerError> {
        self.checked(&["pull", "--quiet", image]).await.map(|_| ())
    }

    /// Makes sure the image can be run. With `force_pull` it is pulled first, and a failed pull
    /// of an image that exists locally is reported and the local one used. Without it, a
    /// missing image is pulled. An image that is neither local nor pullable is
    /// [`DockerError::MissingImage`] with docker's message.
    pub async fn ensure_image(
        &self,
        image: &str,
        force_pull: bool,
    ) -> Result<ImageReady, DockerError> {
        if !force_pull && let Some(id) = self.image_id(image).await? {
            return Ok(ImageReady {
                id: Some(id),
                pulled: false,
                messages: Vec::new(),
            });
        }
        match self.pull(image).await {
            Ok(()) => Ok(ImageReady {
                id: self.image_id(image).await?,
                pulled: true,
                messages: Vec::new(),
            }),
            Err(DockerError::Command { message, .. }) => {
                if force_pull && let Some(id) = self.image_id(image).await? {
                    Ok(ImageReady {
                        id: Some(id),
                        pulled: false,
                        messages: vec![format!(
                            "docker pull {image} failed ({message}); using the local image"
                        )],
                    })
                } else {
                    Err(DockerError::MissingImage {
                        image: image.to_string(),
                        message,
                    })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Starts the container in the background; returns its id.
    pub async fn run_detached(&self, spec: &RunSpec) -> Result<String, DockerError> {
        let argv = spec.argv_detached();
        let mut c = Command::new(&self.program);
        c.args(&argv)
            .envs(spec.client_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = c.output().await.map_err(|source| DockerError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(lossy_trim(&out.stdout));
        }
        Err(DockerError::Command {
            command: format!("{} run -d ... {}", self.program, spec.image),
            status: out
                .status
                .code()
                .map_or("signal".to_string(), |c| c.to_string()),
            message: lossy_trim(&out.stderr),
        })
    }

    /// Runs the container attached, handing every output line (without its newline, invalid
    /// UTF-8 replaced) to `on_line`. When `stop` completes first, the container is stopped
    /// ([`DockerCli::stop`] with `grace`) and the remaining output is still delivered. The spec
    /// must name the container. If this future is dropped early, the container keeps running:
    /// stop it by name.
    pub async fn run_attached(
        &self,
        spec: &RunSpec,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
        stop: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<RunOutcome, DockerError> {
        let name = spec.name.clone().ok_or(DockerError::Unnamed)?;
        let mut child = Command::new(&self.program)
            .args(spec.argv())
            .envs(spec.client_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DockerError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let mut out = child.stdout.take().map(BufReader::new);
        let mut err = child.stderr.take().map(BufReader::new);
        let mut out_buf = Vec::new();
        let mut err_buf = Vec::new();
        let mut stopped = false;
        tokio::pin!(stop);
        while out.is_some() || err.is_some() {
            tokio::select! {
                r = read_line(&mut out, &mut out_buf), if out.is_some() => {
                    if !deliver(r, &mut out, &mut out_buf, Stream::Stdout, on_line) {
                        out = None;
                    }
                }
                r = read_line(&mut err, &mut err_buf), if err.is_some() => {
                    if !deliver(r, &mut err, &mut err_buf, Stream::Stderr, on_line) {
                        err = None;
                    }
                }
                () = &mut stop, if !stopped => {
                    stopped = true;
                    self.stop(&name, grace).await?;
                }
            }
        }
        let status = child.wait().await.map_err(|source| DockerError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        Ok(RunOutcome {
            exit_code: status.code(),
            stopped,
        })
    }

    /// `docker stop -t GRACE`, then `docker kill` if it still runs. A container that does not
    /// exist (already removed) is not an error.
    pub async fn stop(&self, container: &str, grace: Duration) -> Result<(), DockerError> {
        let secs = grace.as_secs().to_string();
        match self.checked(&["stop", "-t", &secs, container]).await {
            Ok(_) => {}
            Err(DockerError::Command { message, .. }) if is_no_such_container(&message) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if self.is_running(container).await? {
            self.kill(container).await?;
        }
        Ok(())
    }

    /// `docker kill`; a missing or stopped container is not an error.
    pub async fn kill(&self, container: &str) -> Result<(), DockerError> {
        match self.checked(&["kill", container]).await {
            Ok(_) => Ok(()),
            Err(DockerError::Command { message, .. })
                if is_no_such_container(&message) || message.contains("is not running") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `docker rm [-f]`; a missing container is not an error.
    pub async fn remove(&self, container: &str, force: bool) -> Result<(), DockerError> {
        let mut args = vec!["rm"];
        if force {
            args.push("-f");
        }
        args.push(container);
        match self.checked(&args).await {
            Ok(_) => Ok(()),
            Err(DockerError::Command { message, .. }) if is_no_such_container(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the container exists and runs.
    pub async fn is_running(&self, container: &str) -> Result<bool, DockerError> {
        let out = self
            .output(&["inspect", "--format", "{{.State.Running}}", container])
            .await?;
        Ok(out.status.success() && lossy_trim(&out.stdout) == "true")
    }

    /// `docker wait`: the container's exit status.
    pub async fn wait(&self, container: &str) -> Result<i32, DockerError> {
        let out = self.checked(&["wait", container]).await?;
        out.trim().parse().map_err(|_| DockerError::Command {
            command: format!("{} wait {container}", self.program),
            status: "0".into(),
            message: format!("unexpected output {:?}", out.trim()),
        })
    }

    /// Every container (running or not) carrying the label `key=value`.
    pub async fn list_by_label(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let filter = format!("label={key}={value}");
        let ids = self
            .checked(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter])
            .await?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--format", "{{json .}}"];
        args.extend(ids.iter().copied());
        let out = match self.checked(&args).await {
            Ok(o) => o,
            // One was removed between the two calls: list the rest one by one.
            Err(DockerError::Command { .. }) => {
                let mut all = String::new();
                for id in &ids {
                    if let Ok(o) = self
                        .checked(&["inspect", "--format", "{{json .}}", id])
                        .await
                    {
                        all.push_str(&o);
                        all.push('\n');
                    }
                }
                all
            }
            Err(e) => return Err(e),
        };
        Ok(inspect_values(&out).iter().map(summary).collect())
    }

    /// `docker commit` of a container into image `target`, with Dockerfile `changes` such as
    /// `ENTRYPOINT [...]`. Returns the new image id.
    pub async fn commit(
        &self,
        container: &str,
        target: &str,
        changes: &[String],
    ) -> Result<String, DockerError> {
        let mut args: Vec<&str> = vec!["commit"];
        for c in changes {
            args.push("--change");
            args.push(c);
        }
        args.push(container);
        args.push(target);
        Ok(self.checked(&args).await?.trim().to_string())
    }

    /// `docker image rm`; a missing image is not an error.
    pub async fn remove_image(&self, image: &str) -> Result<(), DockerError> {
        match self.checked(&["image", "rm", "-f", image]).await {
            Ok(_) => Ok(()),
            Err(DockerError::Command { message, .. })
                if message.to_ascii_lowercase().contains("no such image") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The containers in `inspect --format '{{json .}}'` output: docker prints one object per
/// line; podman (4.x) ignores the format and prints one pretty JSON array per call.
fn inspect_values(out: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(out)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .flat_map(|v| match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        })
        .collect()
}

fn summary(v: &serde_json::Value) -> ContainerSummary {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let labels = v
        .pointer("/Config/Labels")
        .and_then(|l| l.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    ContainerSummary {
        id: s("/Id"),
        name: s("/Name").trim_start_matches('/').to_string(),
        state: s("/State/Status"),
        labels,
    }
}

async fn read_line<R: AsyncRead + Unpin>(
    r: &mut Option<BufReader<R>>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read_until(b'\n', buf).await,
        None => Ok(0),
    }
}

/// Hands a complete line to the callback; false at the end of the stream.
fn deliver<R>(
    r: std::io::Result<usize>,
    _reader: &mut Option<BufReader<R>>,
    buf: &mut Vec<u8>,
    stream: Stream,
    on_line: &mut (dyn FnMut(Stream, &str) + Send),
) -> bool {
    let n = r.unwrap_or(0);
    if n == 0 {
        if !buf.is_empty() {
            on_line(stream, &String::from_utf8_lossy(buf));
            buf.clear();
        }
        return false;
    }
    let mut line: &[u8] = buf;
    if line.ends_with(b"\n") {
        line = &line[..line.len() - 1];
    }
    if line.ends_with(b"\r") {
        line = &line[..line.len() - 1];
    }
    on_line(stream, &String::from_utf8_lossy(line));
    buf.clear();
    true
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_of_both_engines_reads() {
        let docker = "{\"Id\":\"a\",\"Name\":\"/n1\",\"State\":{\"Status\":\"running\"},\"Config\":{\"Labels\":{\"k\":\"v\"}}}\n{\"Id\":\"b\",\"Name\":\"/n2\"}\n";
        let podman = "[\n {\n  \"Id\": \"a\",\n  \"Name\": \"n1\",\n  \"State\": {\"Status\": \"exited\"}\n },\n {\"Id\": \"b\", \"Name\": \"n2\"}\n]\n";
        for (out, state) in [(docker, "running"), (podman, "exited")] {
            let got: Vec<ContainerSummary> = inspect_values(out).iter().map(summary).collect();
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!((got[0].id.as_str(), got[0].name.as_str()), ("a", "n1"));
            assert_eq!(got[0].state, state);
            assert_eq!(got[1].name, "n2");
        }
        assert_eq!(
            summary(&inspect_values(docker)[0]).labels.get("k"),
            Some(&"v".to_string())
        );
        assert!(inspect_values("").is_empty());
    }
}
