//! A HOCON parser for the dialect ClearML writes and reads: pyhocon's.
//!
//! `clearml.conf` is HOCON as pyhocon understands it, which is not quite the Lightbend spec: an
//! unquoted URL (`api_server: http://localhost:8008`) is a value, not a value plus a `//`
//! comment; `True`/`FALSE`/`Null` are keywords; `${VAR}` falls back to the environment. No crate
//! on crates.io reads such files correctly, so this one is written against the real pyhocon: the
//! corpus under `tests/corpus` holds one-construct snippets with the JSON pyhocon produced for
//! each (`tools/pyhocon/gen_expected.py` regenerates it), and the tests compare.
//!
//! Design, in three steps:
//! - `parse` reads characters into an unresolved tree, applying pyhocon's rules
//!   for repeated keys (objects merge, the rest is replaced) as it goes;
//! - `resolve` replaces substitutions lazily, handling forward references, self-references and
//!   the environment fallback;
//! - the result is a [`Value`] tree that keeps numbers as written (`11.0` is not `11`) and the
//!   [`Origin`] (file, line, column) of every value, so that a typed getter can say where a bad
//!   value was written.
//!
//! Where pyhocon has a bug, this crate follows the HOCON spec instead and the corpus test lists
//! the difference with its reason (for example `+=` appends, and `\u00e9` is decoded).
//!
//! ```
//! let conf = clearml_hocon::parse_str("api { api_server: http://localhost:8008 }").unwrap();
//! assert_eq!(conf.get_str("api.api_server").unwrap().as_deref(), Some("http://localhost:8008"));
//! ```

mod error;
mod getters;
mod node;
mod parse;
mod path;
mod render;
mod resolve;
mod value;

pub use error::Error;
pub use getters::{GetError, parse_bool_str, parse_size};
pub use path::{parse_path, quote_key_if_needed, render_path};
pub use render::{render_hocon, render_json, render_properties};
pub use value::{Kind, Number, Object, Origin, Value};

use std::path::Path;
use std::sync::Arc;

/// Parses HOCON text with substitutions resolved against itself and the process environment.
/// Errors name `<string>` as the source.
pub fn parse_str(text: &str) -> Result<Value, Error> {
    Options::new().parse_str(text, "<string>", None)
}

/// Parses a file; relative includes are read from its folder.
pub fn parse_file(path: &Path) -> Result<Value, Error> {
    Options::new().parse_file(path)
}

/// Reads an environment variable for a `${VAR}` fallback.
type EnvFn<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Parser settings: where `${VAR}` fallbacks come from.
pub struct Options<'a> {
    env: EnvFn<'a>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Options<'a> {
    /// Substitutions fall back to the process environment.
    pub fn new() -> Self {
        Options {
            env: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Substitutions fall back to `env` instead of the process environment.
    pub fn with_env(env: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Options { env: Box::new(env) }
    }

    /// Parses `text`; `source` names it in errors and origins, `base_dir` is where relative
    /// includes are read from.
    pub fn parse_str(
        &self,
        text: &str,
        source: &str,
        base_dir: Option<&Path>,
    ) -> Result<Value, Error> {
        let source: Arc<str> = Arc::from(source);
        let mut includes = parse::IncludeState::default();
        let root = parse::Parser::new(
            text,
            source.clone(),
            base_dir.map(Path::to_path_buf),
            &mut includes,
        )
        .parse_document()?;
        let origin = Origin {
            source,
            line: 1,
            col: 1,
        };
        let root = match root {
            parse::Root::Object(map, o) => node::Node::Obj(map, o),
            parse::Root::List(n) => n,
        };
        let value = resolve::Resolver::new(root, &*self.env).run(&origin)?;
        // Substitutions can copy objects into deeper places; keep the result within the same
        // nesting bound as the text, so that everything we return can be written back.
        if let Some(deep) = too_deep(&value, 0) {
            return Err(Error::at(
                deep.origin.clone(),
                format!(
                    "nesting deeper than {} levels after substitution",
                    parse::MAX_DEPTH
                ),
            ));
        }
        Ok(value)
    }

    /// Reads and parses a file.
    pub fn parse_file(&self, path: &Path) -> Result<Value, Error> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::at(
                Origin::described(source.clone()),
                format!("cannot read the file: {e}"),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let text = String::from_utf8_lossy(good);
            let line = text.matches('\n').count() + 1;
            let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Error::at(
                Origin {
                    source: Arc::from(source.as_str()),
                    line: line as u32,
                    col: col as u32,
                },
                "the file is not valid UTF-8",
            )
        })?;
        self.parse_str(&text, &source, path.parent())
    }
}

/// The first value nested deeper than the parser allows, if any.
fn too_deep(v: &Value, depth: usize) -> Option<&Value> {
    if depth >= parse::MAX_DEPTH {
        return Some(v);
    }
    match &v.kind {
        Kind::Object(o) => o.values().find_map(|c| too_deep(c, depth + 1)),
        Kind::List(l) => l.iter().find_map(|c| too_deep(c, depth + 1)),
        _ => None,
    }
}
