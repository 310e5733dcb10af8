/// Receives progress lines: what is being run, and every output line of the installers.
/// The caller forwards them to the task's console log.
pub trait Reporter: Send + Sync {
    fn line(&self, text: &str);
}

/// Drops every line.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn line(&self, _text: &str) {}
}

/// Any `Fn(&str)` is a reporter, e.g. `&|l: &str| eprintln!("{l}")`.
impl<F: Fn(&str) + Send + Sync> Reporter for F {
    fn line(&self, text: &str) {
        self(text)
    }
}
