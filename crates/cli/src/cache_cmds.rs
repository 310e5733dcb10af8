//! `clearml-agent cache status|prune`: show the agent's cache folders and apply the
//! `sdk.storage.cache.size` policy to them (issue 5; the rule is in `clearml_cachepolicy`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;
use clearml_cachepolicy::{Policy, Report, Status, enforce, human_bytes, status};
use clearml_config::{Config, LoadOptions};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show what the agent's caches hold and the size policy
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Apply the size policy now: remove least recently used entries over the limits
    Prune {
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
}

pub fn run(opts: &LoadOptions, c: &CacheCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    let (policy, dirs) = clearml_cachepolicy::from_config(&config)?;
    match c {
        CacheCommand::Status { json } => {
            let st = status(&dirs);
            if *json {
                let out = json!({"policy": policy_json(&policy), "folders": status_json(&st),
                    "total_bytes": st.total_bytes()});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_status(&policy, &st);
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Prune { dry_run, json } => {
            let report = enforce(&policy, &dirs, *dry_run);
            if *json {
                let out = json!({"policy": policy_json(&policy), "report": report_json(&report)});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", policy_line(&policy));
                if !policy.is_active() {
                    println!("No size limits are configured; nothing to remove.");
                }
                for line in report.lines() {
                    println!("{line}");
                }
                for s in &report.skipped {
                    println!("cache: kept {} ({})", s.path.display(), s.reason.as_str());
                }
            }
            // Entries that could not be removed are worth a non-zero exit for scripts.
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), human_bytes)
}

fn policy_line(p: &Policy) -> String {
    format!(
        "Policy: max_used_bytes={}, min_free_bytes={}, cleanup_margin_percent={}%",
        limit(p.max_used_bytes),
        limit(p.min_free_bytes),
        p.cleanup_margin_percent
    )
}

/// `3h`, `2d`: how long ago.
fn age(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "-".to_string();
    };
    let s = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn print_status(policy: &Policy, st: &Status) {
    println!("{}", policy_line(policy));
    let rows: Vec<[String; 7]> = st
        .folders
        .iter()
        .map(|f| {
            let note = if let Some(e) = &f.error {
                format!(" (error: {e})")
            } else if !f.exists {
                " (missing)".to_string()
            } else if f.folder_locked {
                " (locked)".to_string()
            } else {
                String::new()
            };
            [
                format!("{}{note}", f.path.display()),
                f.entries.to_string(),
                f.in_use.to_string(),
                human_bytes(f.bytes),
                age(f.oldest),
                age(f.newest),
                f.free_bytes.map_or_else(|| "-".to_string(), human_bytes),
            ]
        })
        .collect();
    let head = [
        "FOLDER", "ENTRIES", "IN USE", "SIZE", "OLDEST", "NEWEST", "FS FREE",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = format!("{:<w$}", cells[0], w = width[0]);
        for (c, w) in cells.iter().zip(width).skip(1) {
            s.push_str(&format!("  {c:>w$}"));
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line(r.each_ref().map(String::as_str));
    }
    println!(
        "Total: {} entries, {}",
        st.folders.iter().map(|f| f.entries).sum::<usize>(),
        human_bytes(st.total_bytes())
    );
}

fn secs(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn path(p: &std::path::Path) -> Value {
    json!(p.display().to_string())
}

fn policy_json(p: &Policy) -> Value {
    json!({
        "max_used_bytes": p.max_used_bytes,
        "min_free_bytes": p.min_free_bytes,
        "cleanup_margin_percent": p.cleanup_margin_percent,
        "min_age_seconds": p.min_age.as_secs(),
    })
}

fn status_json(st: &Status) -> Value {
    st.folders
        .iter()
        .map(|f| {
            json!({
                "path": path(&f.path),
                "exists": f.exists,
                "entries": f.entries,
                "bytes": f.bytes,
                "in_use": f.in_use,
                "folder_locked": f.folder_locked,
                "oldest": secs(f.oldest),
                "newest": secs(f.newest),
                "free_bytes": f.free_bytes,
                "fs_bytes": f.fs_bytes,
                "error": f.error,
            })
        })
        .collect()
}

fn report_json(r: &Report) -> Value {
    let empty = PathBuf::new();
    json!({
        "dry_run": r.dry_run,
        "used_before": r.used_before,
        "used_after": r.used_after,
        "within_limits": r.within_limits,
        "removed_bytes": r.removed_bytes(),
        "removed": r.removed.iter().map(|x| json!({
            "path": path(&x.path), "bytes": x.bytes, "last_used": secs(x.last_used),
            "reason": x.reason.as_str(),
        })).collect::<Vec<_>>(),
        "skipped": r.skipped.iter().map(|s| json!({
            "path": path(&s.path), "reason": s.reason.as_str(),
        })).collect::<Vec<_>>(),
        "errors": r.errors.iter().map(|f| json!({
            "path": if f.path == empty { Value::Null } else { path(&f.path) },
            "error": f.error,
        })).collect::<Vec<_>>(),
        "free": r.free.iter().map(|f| json!({
            "dir": path(&f.dir), "before": f.before, "after": f.after,
        })).collect::<Vec<_>>(),
    })
}
