//! `--uptime` / `--downtime` (and `agent.uptime` / `agent.downtime`): the hours of the week in
//! which the daemon takes new tasks.
//!
//! Each entry is `"<hours> <days>"`: hours `H` (that one hour) or `H-K` (from H:00 up to K:00;
//! `K < H` wraps past midnight), days a comma list of `SUN`..`SAT` names or `MON-FRI` ranges
//! (no days: every day). With uptime entries the daemon works only inside them; with downtime
//! entries it works everywhere else. Outside its window the daemon takes no task but keeps
//! reporting. A queue tagged `force_workers:on` is served outside the window and one tagged
//! `force_workers:off` is not served inside it ([`Schedule::decide`]).
//!
//! Unlike the Python agent, a range starting at hour 0 (`"0-8 MON"`) is kept (there the falsy
//! hour 0 dropped it), and giving both uptime and downtime is an error instead of both being
//! silently ignored.
//!
//! The clock is an argument ([`Schedule::active_at`]) so tests choose the time.

use std::fmt;

/// One `"<hours> <days>"` entry: a set of (weekday, hour) cells.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `hours[d][h]`: day 0 = Sunday.
    cells: [[bool; 24]; 7],
}

/// Which kind of window was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Uptime,
    Downtime,
}

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
    cells: [[bool; 24]; 7],
    text: Vec<String>,
}

/// A malformed entry.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid {kind} entry {entry:?}: {why} (expected \"<hours> <days>\", e.g. \"17-20 SUN,TUE\")"
)]
pub struct ScheduleError {
    kind: &'static str,
    entry: String,
    why: String,
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn day(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_uppercase();
    let head = s.get(..3)?;
    DAYS.iter().position(|d| *d == head)
}

fn hour(s: &str) -> Option<usize> {
    s.trim().parse::<usize>().ok().filter(|h| *h <= 24)
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, String> {
        let mut parts = text.split_whitespace();
        let hours = parts.next().ok_or("it is empty")?;
        let days: Vec<&str> = parts.collect();
        let (start, end) = match hours.split_once('-') {
            Some((a, b)) => (
                hour(a).ok_or(format!("{a:?} is not an hour (0-24)"))?,
                hour(b).ok_or(format!("{b:?} is not an hour (0-24)"))?,
            ),
            None => {
                let h = hour(hours).ok_or(format!("{hours:?} is not an hour (0-23)"))?;
                (h, h + 1)
            }
        };
        if start >= 24 {
            return Err(format!("{start} is not a starting hour (0-23)"));
        }
        let mut wanted = [false; 7];
        if days.is_empty() {
            wanted = [true; 7];
        }
        for item in days.join("").split(',').filter(|s| !s.trim().is_empty()) {
            match item.split_once('-') {
                Some((a, b)) => {
                    let a = day(a).ok_or(format!("{a:?} is not a day (SUN..SAT)"))?;
                    let b = day(b).ok_or(format!("{b:?} is not a day (SUN..SAT)"))?;
                    let mut d = a;
                    loop {
                        wanted[d] = true;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => {
                    wanted[day(item).ok_or(format!("{item:?} is not a day (SUN..SAT)"))?] = true
                }
            }
        }
        let mut cells = [[false; 24]; 7];
        for (d, on) in wanted.iter().enumerate() {
            if !on {
                continue;
            }
            if start < end {
                (start..end).for_each(|h| cells[d][h] = true);
            } else if start > end {
                // Past midnight: the rest of this day and the start of the next.
                (start..24).for_each(|h| cells[d][h] = true);
                (0..end).for_each(|h| cells[(d + 1) % 7][h] = true);
            } else {
                return Err("the range is empty".into());
            }
        }
        Ok(Entry { cells })
    }
}

/// What the daemon does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take tasks.
    Work,
    /// Take none (outside the window, or a queue says `force_workers:off`).
    Idle,
}

impl Schedule {
    /// `None` when neither is given; an error when both are, or an entry is malformed.
    pub fn parse(
        uptime: &[String],
        downtime: &[String],
    ) -> Result<Option<Schedule>, ScheduleError> {
        let (kind, entries, name) = match (uptime.is_empty(), downtime.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err(ScheduleError {
                    kind: "schedule",
                    entry: String::new(),
                    why: "give either uptime or downtime, not both".into(),
                });
            }
            (false, true) => (Kind::Uptime, uptime, "uptime"),
            (true, false) => (Kind::Downtime, downtime, "downtime"),
        };
        // `--uptime 17-20 SUN,TUE` unquoted arrives as two words: days join the hours before.
        let mut joined: Vec<String> = Vec::new();
        for e in entries {
            match joined.last_mut() {
                Some(last)
                    if e.trim_start()
                        .starts_with(|c: char| c.is_ascii_alphabetic()) =>
                {
                    last.push(' ');
                    last.push_str(e.trim());
                }
                _ => joined.push(e.clone()),
            }
        }
        let entries = &joined[..];
        let mut cells = [[false; 24]; 7];
        for text in entries {
            let e = Entry::parse(text).map_err(|why| ScheduleError {
                kind: name,
                entry: text.clone(),
                why,
            })?;
            for (day, new) in cells.iter_mut().zip(e.cells.iter()) {
                for (cell, on) in day.iter_mut().zip(new.iter()) {
                    *cell |= *on;
                }
            }
        }
        Ok(Some(Schedule {
            kind,
            cells,
            text: entries.to_vec(),
        }))
    }

    /// Whether the schedule lets the daemon work on `weekday` (0 = Sunday) at `hour`.
    pub fn active_at(&self, weekday: u32, hour: u32) -> bool {
        let listed = self.cells[(weekday % 7) as usize][(hour % 24) as usize];
        match self.kind {
            Kind::Uptime => listed,
            Kind::Downtime => !listed,
        }
    }

    /// [`Self::active_at`] for the local time now.
    pub fn active_now(&self) -> bool {
        use chrono::{Datelike, Timelike};
        let now = chrono::Local::now();
        self.active_at(now.weekday().num_days_from_sunday(), now.hour())
    }

    /// The schedule combined with the queues' `force_workers:on/off` tags.
    pub fn decide(active: bool, queue_tags: &[String]) -> Decision {
        if queue_tags.iter().any(|t| t == "force_workers:off") {
            return Decision::Idle;
        }
        if active || queue_tags.iter().any(|t| t == "force_workers:on") {
            Decision::Work
        } else {
            Decision::Idle
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Uptime => "uptime",
            Kind::Downtime => "downtime",
        };
        write!(f, "{kind}: {}", self.text.join("; "))
    }
}

/// The schedule from `--uptime`/`--downtime` when either is given, else from `agent.uptime`
/// / `agent.downtime` (a list, or one string).
pub fn schedule_for(
    config: &clearml_config::Config,
    uptime: &Option<Vec<String>>,
    downtime: &Option<Vec<String>>,
) -> Result<Option<Schedule>, crate::DaemonError> {
    let list = |key: &str| -> Vec<String> {
        match config.tree().get_str_list(key) {
            Ok(l) => l.unwrap_or_default(),
            Err(_) => config
                .tree()
                .get_str(key)
                .ok()
                .flatten()
                .into_iter()
                .collect(),
        }
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect()
    };
    let (up, down) = match (uptime, downtime) {
        (None, None) => (list("agent.uptime"), list("agent.downtime")),
        (u, d) => (u.clone().unwrap_or_default(), d.clone().unwrap_or_default()),
    };
    Schedule::parse(&up, &down).map_err(|e| crate::DaemonError::Task(e.to_string()))
}

/// The tags of the daemon's queues (none when the server cannot be asked).
pub(crate) async fn queue_tags(client: &clearml_api::Client, queue_ids: &[String]) -> Vec<String> {
    let Ok(r) = client
        .call(
            "queues.get_all",
            serde_json::json!({"id": queue_ids, "only_fields": ["id", "tags", "system_tags"]}),
        )
        .await
    else {
        return Vec::new();
    };
    r.get("queues")
        .and_then(|q| q.as_array())
        .into_iter()
        .flatten()
        .flat_map(|q| {
            ["tags", "system_tags"]
                .into_iter()
                .filter_map(move |k| q.get(k).and_then(|t| t.as_array()))
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(up: &[&str], down: &[&str]) -> Schedule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Schedule::parse(&v(up), &v(down)).unwrap().unwrap()
    }

    #[test]
    fn uptime_window_on_listed_days() {
        let u = s(&["17-20 SUN,TUE"], &[]);
        assert!(u.active_at(0, 17));
        assert!(u.active_at(2, 19));
        assert!(!u.active_at(2, 20));
        assert!(!u.active_at(2, 16));
        assert!(!u.active_at(1, 18)); // Monday
    }

    #[test]
    fn ranges_starting_at_midnight_are_kept() {
        // The Python agent drops this entry (hour 0 is falsy).
        let u = s(&["0-8 MON"], &[]);
        assert!(u.active_at(1, 0));
        assert!(u.active_at(1, 7));
        assert!(!u.active_at(1, 8));
    }

    #[test]
    fn downtime_inverts_and_day_ranges_and_wrap() {
        let d = s(&["09-13 MON-FRI"], &[]);
        assert!(d.active_at(5, 12) && !d.active_at(6, 12));
        let d = s(&[], &["22-2 SAT"]);
        assert!(!d.active_at(6, 23));
        assert!(!d.active_at(0, 1)); // Sunday early morning
        assert!(d.active_at(0, 2));
        let every_day = s(&["5"], &[]);
        assert!((0..7).all(|w| every_day.active_at(w, 5) && !every_day.active_at(w, 6)));
    }

    #[test]
    fn bad_entries_and_both_kinds_are_errors() {
        let v = |x: &str| vec![x.to_string()];
        assert!(Schedule::parse(&v("25-3 MON"), &[]).is_err());
        assert!(Schedule::parse(&v("1-2 FUNDAY"), &[]).is_err());
        assert!(Schedule::parse(&v("3-3"), &[]).is_err());
        assert!(Schedule::parse(&v("1-2"), &v("3-4")).is_err());
        assert!(Schedule::parse(&[], &[]).unwrap().is_none());
    }

    #[test]
    fn unquoted_days_join_their_hours() {
        let u = s(&["17-20", "SUN,TUE", "9-10", "MON"], &[]);
        assert!(u.active_at(0, 18) && u.active_at(1, 9));
        assert!(!u.active_at(1, 18) && !u.active_at(0, 9));
    }

    #[test]
    fn queue_tags_force_or_forbid() {
        let on = vec!["force_workers:on".to_string()];
        let off = vec!["force_workers:off".to_string()];
        assert_eq!(Schedule::decide(false, &on), Decision::Work);
        assert_eq!(Schedule::decide(true, &off), Decision::Idle);
        assert_eq!(Schedule::decide(false, &[]), Decision::Idle);
        assert_eq!(Schedule::decide(true, &[]), Decision::Work);
    }
}
