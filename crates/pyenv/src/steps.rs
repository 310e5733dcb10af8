//! Running the install steps in order, shared by the uv and pip backends: each backend only
//! says how one install command looks.

use std::path::Path;
use std::process::Command;

use crate::command::run_streamed;
use crate::error::EnvError;
use crate::report::Reporter;
use crate::requirements::{Install, Prepared};

/// What one install command installs.
pub(crate) enum Target<'a> {
    File(&'a Path),
    Project(&'a Path),
    Lines(&'a [String]),
}

/// Which indexes one install command uses.
pub(crate) enum Index<'a> {
    /// The configured ones (`extra_index_urls`, the environment's settings).
    Default,
    /// This index alone, as the PyTorch install instructions do; `pre` allows pre-releases.
    Only { url: &'a str, pre: bool },
}

/// Runs every step of `prepared`; `make` builds the command for a target.
pub(crate) fn run_all(
    prepared: &Prepared,
    tool: &str,
    reporter: &dyn Reporter,
    make: &dyn Fn(Target, Index) -> Command,
) -> Result<(), EnvError> {
    for step in &prepared.installs {
        match step {
            Install::File { path, source } => run_streamed(
                make(Target::File(path), Index::Default),
                &format!("installing {source} with {tool}"),
                reporter,
            )?,
            Install::Project(dir) => run_streamed(
                make(Target::Project(dir), Index::Default),
                &format!("installing the project {} with {tool}", dir.display()),
                reporter,
            )?,
            Install::Package {
                line,
                optional,
                stage,
            } => {
                let what = format!("installing the {stage} package `{line}` with {tool}");
                let result = run_streamed(
                    make(Target::Lines(std::slice::from_ref(line)), Index::Default),
                    &what,
                    reporter,
                );
                match result {
                    Err(err) if *optional => reporter.line(&format!(
                        "Warning: optional {stage} package `{line}` could not be installed; \
                         continuing ({})",
                        first_line(&err)
                    )),
                    other => other?,
                }
            }
            Install::Torch { lines, index, pre } => {
                let first = run_streamed(
                    make(
                        Target::Lines(lines),
                        Index::Only {
                            url: index,
                            pre: *pre,
                        },
                    ),
                    &format!("installing PyTorch packages from {index} with {tool}"),
                    reporter,
                );
                if let Err(err) = first {
                    // The index may lack this version (or not exist for a future CUDA); the
                    // default index still gives a working, if generic, build.
                    reporter.line(&format!(
                        "Warning: installing {} from {index} failed ({}); retrying from the \
                         default index",
                        lines.join(", "),
                        first_line(&err)
                    ));
                    run_streamed(
                        make(Target::Lines(lines), Index::Default),
                        &format!("installing PyTorch packages with {tool}"),
                        reporter,
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn first_line(err: &EnvError) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
