//! The command the container runs: the admin's and the task's shell scripts, then `exec` of
//! the mounted agent, and the reading of failures that come from the image itself.

/// The exit status the entry script uses when the image cannot run the agent (musl, no glibc
/// loader). The console then holds a line starting with [`UNSUPPORTED_IMAGE_MARKER`].
pub const EXIT_UNSUPPORTED_IMAGE: i32 = 86;
/// Start of the line the entry script prints for an image it cannot run the agent in.
pub const UNSUPPORTED_IMAGE_MARKER: &str = "clearml-agent: unsupported image:";

/// The scripts that run in the container before the agent, in this order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntryScript {
    /// `agent.docker_preprocess_bash_script`.
    pub preprocess: Vec<String>,
    /// `agent.docker_init_bash_script`.
    pub init: Vec<String>,
    /// Copy the read-only ssh folder mounted at this path into `~/.ssh` first.
    pub ssh_copy_from: Option<String>,
    /// `agent.extra_docker_shell_script`.
    pub extra: Vec<String>,
    /// The task's `container.setup_shell_script`.
    pub task_setup: Option<String>,
    /// Check for glibc's loader before anything else (the mounted agent is a glibc binary).
    pub require_glibc: bool,
}

/// Runs the script with bash when the image has it (the scripts are "bash scripts" in the
/// configuration), else with `sh`. `$1` is the script, the rest is the command to exec.
const BOOT: &str = "s=\"$1\"; shift; if command -v bash >/dev/null 2>&1; then exec bash -c \"$s\" clearml-entry \"$@\"; fi; exec sh -c \"$s\" clearml-entry \"$@\"";

impl EntryScript {
    /// The script text; it ends by exec'ing its arguments.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.require_glibc {
            out.push_str(&format!(
                "if [ ! -e /lib64/ld-linux-x86-64.so.2 ]; then\n\
                 \x20 musl=; for f in /lib/ld-musl-*; do [ -e \"$f\" ] && musl=1; done\n\
                 \x20 if [ -n \"$musl\" ]; then\n\
                 \x20   echo \"{m} the image uses musl libc (Alpine or similar); the agent needs an x86_64 glibc image (glibc 2.17 or newer)\" >&2\n\
                 \x20 else\n\
                 \x20   echo \"{m} the image has no glibc loader (/lib64/ld-linux-x86-64.so.2); the agent needs an x86_64 glibc image (glibc 2.17 or newer)\" >&2\n\
                 \x20 fi\n\
                 \x20 exit {code}\n\
                 fi\n",
                m = UNSUPPORTED_IMAGE_MARKER,
                code = EXIT_UNSUPPORTED_IMAGE
            ));
        }
        let mut push = |lines: &[String]| {
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        };
        push(&self.preprocess);
        push(&self.init);
        if let Some(from) = &self.ssh_copy_from {
            let q = shell_words::quote(from);
            push(&[format!(
                "if [ -d {q} ]; then mkdir -p \"$HOME/.ssh\" && cp -Rf {q}/. \"$HOME/.ssh/\" && chmod 700 \"$HOME/.ssh\"; fi"
            )]);
        }
        push(&self.extra);
        if let Some(s) = &self.task_setup {
            push(std::slice::from_ref(s));
        }
        out.push_str("exec \"$@\"\n");
        out
    }

    /// The container command: `/bin/sh -c BOOT clearml-entry SCRIPT EXEC...`.
    pub fn command(&self, exec: &[String]) -> Vec<String> {
        let mut cmd = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            BOOT.into(),
            "clearml-entry".into(),
            self.text(),
        ];
        cmd.extend(exec.iter().cloned());
        cmd
    }
}

/// Explains a container failure that comes from the image rather than the task, from the exit
/// status of `docker run` and the console output (`docker run` writes its own errors there).
pub fn diagnose_failure(exit_code: i32, output: &str, image: &str) -> Option<String> {
    if let Some(line) = output
        .lines()
        .find(|l| l.contains(UNSUPPORTED_IMAGE_MARKER))
    {
        let why = line
            .split_once(UNSUPPORTED_IMAGE_MARKER)
            .map_or(line, |(_, w)| w)
            .trim();
        return Some(format!("image {image} cannot run the agent: {why}"));
    }
    let lower = output.to_ascii_lowercase();
    if let Some(line) = output
        .lines()
        .find(|l| l.contains("version `GLIBC_") && l.contains("not found"))
    {
        return Some(format!(
            "image {image} has a glibc older than the agent binary needs: {}",
            line.trim()
        ));
    }
    let missing = lower.contains("no such file or directory") || lower.contains("not found");
    if (exit_code == 126 || exit_code == 127) && missing && lower.contains("/bin/sh") {
        return Some(format!(
            "image {image} has no /bin/sh, which docker mode needs to run its setup scripts and the agent"
        ));
    }
    if exit_code == 125 && lower.contains("is already in use") {
        return Some(format!(
            "a container with this task's name already exists (left by an earlier run?): {}",
            output.trim()
        ));
    }
    if exit_code == 125
        && (lower.contains("no such image")
            || lower.contains("pull access denied")
            || lower.contains("manifest unknown")
            || lower.contains("unable to find image"))
    {
        return Some(format!("image {image} is not available: {}", output.trim()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_run_in_order_then_exec() {
        let s = EntryScript {
            preprocess: vec!["echo pre".into()],
            init: vec!["echo init".into()],
            ssh_copy_from: Some("/opt/clearml/ssh".into()),
            extra: vec!["echo extra".into()],
            task_setup: Some("echo task\necho task2".into()),
            require_glibc: false,
        };
        let t = s.text();
        let pos = |x: &str| t.find(x).unwrap_or_else(|| panic!("{x} missing in {t}"));
        assert!(pos("echo pre") < pos("echo init"));
        assert!(pos("echo init") < pos("/opt/clearml/ssh"));
        assert!(pos("/opt/clearml/ssh") < pos("echo extra"));
        assert!(pos("echo extra") < pos("echo task\necho task2"));
        assert!(t.ends_with("exec \"$@\"\n"));
        let cmd = s.command(&["/a".into(), "execute".into()]);
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        assert_eq!(cmd[5..], ["/a", "execute"]);
    }

    #[test]
    fn failures_from_the_image_are_named() {
        let out = format!("{UNSUPPORTED_IMAGE_MARKER} the image uses musl libc\n");
        let d = diagnose_failure(EXIT_UNSUPPORTED_IMAGE, &out, "alpine").unwrap_or_default();
        assert!(d.contains("musl"), "{d}");
        let sh = "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/bin/sh\": stat /bin/sh: no such file or directory: unknown.";
        let d = diagnose_failure(127, sh, "scratchy").unwrap_or_default();
        assert!(d.contains("no /bin/sh"), "{d}");
        assert_eq!(diagnose_failure(1, "Traceback", "img"), None);
        let old = "/opt/clearml/bin/clearml-agent: /lib64/libc.so.6: version `GLIBC_2.34' not found (required by /opt/clearml/bin/clearml-agent)";
        let d = diagnose_failure(1, old, "centos:7").unwrap_or_default();
        assert!(d.contains("older") && d.contains("GLIBC_2.34"), "{d}");
    }
}
