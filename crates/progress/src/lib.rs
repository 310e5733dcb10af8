//! The one way library crates tell a person what they are doing.
//!
//! Library crates never print. `clearml-vcs` (clone, fetch, checkout), `clearml-pyenv`
//! (installers' output), `clearml-envcache` (restore, store, evictions) and `clearml-daemon`
//! (the preparation of a task) all report through this [`Reporter`], and the binary decides
//! how it looks: a spinner per long step in a terminal, plain lines in a log or in the task's
//! console (what the daemon ships to the server).
//!
//! The shape follows uv's reporters: the library announces a step when it starts and when
//! it ends, and passes every output line in between; a reporter that only cares about lines
//! implements [`Reporter::line`] alone. Any `Fn(&str)` is a line-only reporter.

/// The long steps of getting a task ready, which a terminal may draw as progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Cloning or fetching a repository, checking out a commit, applying a diff.
    Clone,
    /// Creating a virtual environment and installing its packages.
    EnvBuild,
    /// Linking a cached environment back into place.
    CacheRestore,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Clone => "clone",
            Step::EnvBuild => "environment",
            Step::CacheRestore => "cache restore",
        }
    }
}

/// Receives progress: steps starting and ending, and one human-readable line at a time
/// (what is being run, each output line of git or an installer, notes and warnings).
pub trait Reporter: Send + Sync {
    /// One line for the log. Lines never end with a newline.
    fn line(&self, text: &str);

    /// `step` starts; `label` says on what (a repository URL, a venv folder).
    fn start(&self, step: Step, label: &str) {
        let _ = (step, label);
    }

    /// `step` ended (successfully or not).
    fn finish(&self, step: Step) {
        let _ = step;
    }
}

/// Drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn line(&self, _text: &str) {}
}

/// Any `Fn(&str)` is a reporter that only shows lines, e.g. `&|l: &str| log.push(l)`.
impl<F: Fn(&str) + Send + Sync> Reporter for F {
    fn line(&self, text: &str) {
        self(text)
    }
}

/// Reports the end of a step when dropped, so an early return (`?`) still ends it.
pub struct StepGuard<'a> {
    reporter: &'a dyn Reporter,
    step: Step,
}

impl<'a> StepGuard<'a> {
    pub fn start(reporter: &'a dyn Reporter, step: Step, label: &str) -> StepGuard<'a> {
        reporter.start(step, label);
        StepGuard { reporter, step }
    }
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.reporter.finish(self.step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);

    impl Reporter for Record {
        fn line(&self, text: &str) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text.into());
        }
        fn start(&self, step: Step, label: &str) {
            self.line(&format!("start {} {label}", step.as_str()));
        }
        fn finish(&self, step: Step) {
            self.line(&format!("finish {}", step.as_str()));
        }
    }

    fn fails(r: &dyn Reporter) -> Result<(), ()> {
        let _g = StepGuard::start(r, Step::Clone, "repo");
        r.line("cloning");
        Err(())
    }

    #[test]
    fn a_step_ends_on_an_early_return() {
        let r = Record::default();
        assert!(fails(&r).is_err());
        let lines = r.0.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(lines, ["start clone repo", "cloning", "finish clone"]);
    }

    #[test]
    fn closures_are_line_reporters() {
        let seen = Mutex::new(Vec::new());
        let f = |l: &str| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(l.to_string())
        };
        {
            let r: &dyn Reporter = &f;
            r.start(Step::EnvBuild, "venv");
            r.line("x");
            r.finish(Step::EnvBuild);
        }
        assert_eq!(seen.into_inner().unwrap_or_else(|e| e.into_inner()), ["x"]);
    }
}
