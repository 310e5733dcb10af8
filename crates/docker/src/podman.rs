//! What podman needs beyond docker's arguments.
//!
//! Rootful podman sets the container's open-files and process limits to its own high defaults
//! (1048576), which needs `CAP_SYS_RESOURCE`; without it (an agent that itself runs in a
//! container) every `podman run` fails with "error setting rlimit ... operation not
//! permitted". Docker's containers inherit the daemon's limits, so docker mode gives podman's
//! containers the agent's own limits instead, unless the user passed `--ulimit`.

use crate::args;

/// A soft:hard limit pair.
pub type Limit = (u64, u64);

/// `--ulimit nofile=S:H --ulimit nproc=S:H` for podman, or nothing when `user_args` has a
/// `--ulimit` of its own or a limit is unknown.
pub fn ulimit_args(
    user_args: &[String],
    nofile: Option<Limit>,
    nproc: Option<Limit>,
) -> Vec<String> {
    if args::has_switch(user_args, &["ulimit"]) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, limit) in [("nofile", nofile), ("nproc", nproc)] {
        if let Some((soft, hard)) = limit {
            out.push("--ulimit".to_string());
            out.push(format!("{name}={}:{hard}", soft.min(hard)));
        }
    }
    out
}

/// [`ulimit_args`] with this process's limits. Podman caps its own process limit at the
/// kernel's `pid_max` (its monitor, conmon, runs with that), so the process limit is capped too.
pub fn own_ulimit_args(user_args: &[String]) -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let nproc = limit_of(&limits, "Max processes")
        .map(|(s, h)| pid_max.map_or((s, h), |m| (s.min(m), h.min(m))));
    ulimit_args(user_args, limit_of(&limits, "Max open files"), nproc)
}

/// A `/proc/PID/limits` row as (soft, hard); `unlimited` is `None`.
fn limit_of(text: &str, row: &str) -> Option<Limit> {
    let line = text.lines().find(|l| l.starts_with(row))?;
    let mut words = line[row.len()..].split_whitespace();
    let soft = words.next()?.parse().ok()?;
    let hard = words.next()?.parse().ok()?;
    Some((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn limits_become_ulimit_switches_unless_the_user_gave_one() {
        assert_eq!(
            ulimit_args(&[], Some((1024, 4096)), Some((500, 400))),
            v(&["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=400:400"])
        );
        assert!(ulimit_args(&v(&["--ulimit", "nofile=10:10"]), Some((1, 2)), None).is_empty());
        assert!(ulimit_args(&v(&["--ulimit=nproc=5"]), Some((1, 2)), None).is_empty());
        assert_eq!(ulimit_args(&[], None, None), Vec::<String>::new());
    }

    #[test]
    fn proc_limits_rows_parse() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             96362                96362                processes\n\
                    Max open files            20000                20000                files\n\
                    Max cpu time              unlimited            unlimited            seconds\n";
        assert_eq!(limit_of(text, "Max processes"), Some((96362, 96362)));
        assert_eq!(limit_of(text, "Max open files"), Some((20000, 20000)));
        assert_eq!(limit_of(text, "Max cpu time"), None);
        // This process's own limits are readable here.
        assert!(
            own_ulimit_args(&[])
                .iter()
                .any(|a| a.starts_with("nofile="))
        );
    }
}
