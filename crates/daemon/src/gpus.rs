//! `--dynamic-gpus`: one daemon shares a pool of GPUs (`--gpus 0-3`) between tasks, each queue
//! saying how many a task from it gets (`--queue dual=2 single=1`, or `opportunistic=1-4`: at
//! least 1, as many as are free up to 4).
//!
//! The daemon runs like services mode (several tasks at once, see `services`), but only asks
//! the queues whose minimum the free GPUs can meet, and each task runs with its GPUs in
//! `NVIDIA_VISIBLE_DEVICES`/`CUDA_VISIBLE_DEVICES` under the worker id a daemon started with
//! exactly those GPUs would have (`<name>:gpu0,1`), so ids never collide while GPUs are not
//! shared. A task's GPUs return to the pool when it ends.

use std::sync::Mutex;

/// How many GPUs a task from one queue gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueGpus {
    pub queue: String,
    pub min: usize,
    pub max: usize,
}

/// The `--dynamic-gpus` setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicGpus {
    /// The pool, from `--gpus`.
    pub pool: Vec<String>,
    /// Per queue, in `--queue` order.
    pub queues: Vec<QueueGpus>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GpuSpecError(String);

/// `--gpus`: `0,1,2`, `0-3`, or a mix (`0-1,4`); `all` and `none` are not a pool.
pub fn parse_pool(spec: &str) -> Result<Vec<String>, GpuSpecError> {
    let mut out: Vec<String> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.trim().parse::<usize>(), b.trim().parse::<usize>());
                let (Ok(a), Ok(b)) = (a, b) else {
                    return Err(GpuSpecError(format!(
                        "--gpus: {part:?} is not a range like 0-3"
                    )));
                };
                if a > b {
                    return Err(GpuSpecError(format!("--gpus: {part:?} runs backwards")));
                }
                out.extend((a..=b).map(|g| g.to_string()));
            }
            None => out.push(part.to_string()),
        }
    }
    if out.is_empty() || out.iter().any(|g| g == "all" || g == "none") {
        return Err(GpuSpecError(
            "--dynamic-gpus needs --gpus with the GPUs to share, e.g. --gpus 0-3".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = out.iter().find(|g| !seen.insert(g.as_str())) {
        return Err(GpuSpecError(format!("--gpus lists GPU {d} twice")));
    }
    Ok(out)
}

/// `--queue` entries: `name=N` or `name=MIN-MAX` (every queue needs one).
pub fn parse_queues(entries: &[String]) -> Result<Vec<QueueGpus>, GpuSpecError> {
    if entries.is_empty() {
        return Err(GpuSpecError(
            "--dynamic-gpus needs --queue NAME=GPUS entries, e.g. --queue dual=2 single=1".into(),
        ));
    }
    entries
        .iter()
        .map(|e| {
            let bad = || {
                GpuSpecError(format!(
                    "--queue {e:?}: with --dynamic-gpus write NAME=N or NAME=MIN-MAX"
                ))
            };
            let (name, n) = e.rsplit_once('=').ok_or_else(bad)?;
            let (min, max) = match n.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ),
                None => {
                    let n: usize = n.trim().parse().map_err(|_| bad())?;
                    (n, n)
                }
            };
            if name.trim().is_empty() || min == 0 || min > max {
                return Err(bad());
            }
            Ok(QueueGpus {
                queue: name.trim().to_string(),
                min,
                max,
            })
        })
        .collect()
}

/// Which GPUs are free.
#[derive(Debug)]
pub struct Allocator {
    pool: Vec<String>,
    busy: Mutex<Vec<bool>>,
}

impl Allocator {
    pub fn new(pool: Vec<String>) -> Allocator {
        let busy = Mutex::new(vec![false; pool.len()]);
        Allocator { pool, busy }
    }

    pub fn free(&self) -> usize {
        self.busy
            .lock()
            .map(|b| b.iter().filter(|x| !**x).count())
            .unwrap_or(0)
    }

    /// Takes between `min` and `max` free GPUs (as many as there are), or none.
    pub fn take(&self, min: usize, max: usize) -> Option<Vec<String>> {
        let mut busy = self.busy.lock().ok()?;
        let free: Vec<usize> = (0..busy.len()).filter(|i| !busy[*i]).take(max).collect();
        if free.len() < min.max(1) {
            return None;
        }
        free.iter().for_each(|i| busy[*i] = true);
        Some(free.iter().map(|i| self.pool[*i].clone()).collect())
    }

    pub fn give_back(&self, gpus: &[String]) {
        if let Ok(mut busy) = self.busy.lock() {
            for (i, g) in self.pool.iter().enumerate() {
                if gpus.contains(g) {
                    busy[i] = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pools_and_queue_specs_parse() {
        assert_eq!(parse_pool("0-3").unwrap(), v(&["0", "1", "2", "3"]));
        assert_eq!(parse_pool("0-1,4").unwrap(), v(&["0", "1", "4"]));
        assert!(parse_pool("all").is_err());
        assert!(parse_pool("3-1").is_err());
        assert!(parse_pool("0,0").is_err());
        let q = parse_queues(&v(&["dual=2", "any=1-4"])).unwrap();
        assert_eq!(
            q[0],
            QueueGpus {
                queue: "dual".into(),
                min: 2,
                max: 2
            }
        );
        assert_eq!(
            q[1],
            QueueGpus {
                queue: "any".into(),
                min: 1,
                max: 4
            }
        );
        assert!(parse_queues(&v(&["plain"])).is_err());
        assert!(parse_queues(&v(&["q=0"])).is_err());
        assert!(parse_queues(&v(&["q=3-2"])).is_err());
        assert!(parse_queues(&[]).is_err());
    }

    #[test]
    fn allocation_never_shares_a_gpu_and_ids_stay_distinct() {
        let a = Allocator::new(v(&["0", "1", "2", "3"]));
        let dual = a.take(2, 2).unwrap();
        let rest = a.take(1, 4).unwrap();
        assert_eq!(dual, v(&["0", "1"]));
        assert_eq!(rest, v(&["2", "3"]));
        assert_eq!(a.take(1, 1), None);
        a.give_back(&dual);
        assert_eq!(a.free(), 2);
        assert_eq!(a.take(3, 3), None);
        let again = a.take(1, 1).unwrap();
        assert_eq!(again, v(&["0"]));
        // Worker ids as a daemon with exactly those GPUs would have: never equal while the
        // GPU sets do not overlap.
        let id = |gpus: &[String]| {
            crate::identity::worker_id_for(
                &crate::identity::IdentityInput {
                    configured_id: None,
                    worker_name: "box".into(),
                    visible_devices: Some(gpus.join(",")),
                    dir: std::env::temp_dir(),
                },
                0,
            )
        };
        assert_eq!(id(&rest), "box:gpu2,3");
        assert_ne!(id(&again), id(&rest));
    }
}
