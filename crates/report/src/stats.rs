//! Machine statistics from `/proc`, `/sys` and `statvfs` (the keys of the Python agent's
//! `ResourceMonitor`), averaged between reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::gpu::Gpus;

const MB: f64 = 1024.0 * 1024.0;
/// `/proc/diskstats` counts 512-byte sectors whatever the device's sector size.
const SECTOR: u64 = 512;

/// Sums and counts of one metric.
#[derive(Default, Clone, Copy)]
pub(crate) struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    pub(crate) fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.sum += v;
            self.n += 1;
        }
    }

    pub(crate) fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| round3(self.sum / f64::from(self.n)))
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Cumulative counters, turned into rates between two samples.
struct Counters {
    at: Instant,
    /// (busy, total) jiffies over all cores.
    cpu: Option<(u64, u64)>,
    /// (read, written) bytes over whole disks.
    disk: Option<(u64, u64)>,
    /// (received, sent) bytes over all interfaces but loopback.
    net: Option<(u64, u64)>,
}

impl Counters {
    fn read() -> Counters {
        Counters {
            at: Instant::now(),
            cpu: read_to_string("/proc/stat").and_then(|s| parse_cpu(&s)),
            disk: read_to_string("/proc/diskstats").map(|s| parse_diskstats(&s, is_whole_disk)),
            net: read_to_string("/proc/net/dev").map(|s| parse_net_dev(&s)),
        }
    }
}

/// Samples the machine; see [`StatsSampler::report`] for what it reports.
pub struct StatsSampler {
    disk_path: PathBuf,
    last: Counters,
    means: BTreeMap<&'static str, Mean>,
    samples: u32,
    temperature_files: Vec<PathBuf>,
    gpus: Option<Gpus>,
}

impl StatsSampler {
    /// Takes the baseline readings (so the first [`StatsSampler::sample`] already gives rates)
    /// and looks for CPU temperature sensors and NVIDIA GPUs. NVML loading can take a moment
    /// on GPU machines: in async code, construct this in `spawn_blocking`.
    pub fn new(disk_path: PathBuf) -> Self {
        StatsSampler {
            disk_path,
            last: Counters::read(),
            means: BTreeMap::new(),
            samples: 0,
            temperature_files: find_temperature_files(),
            gpus: Gpus::open(),
        }
    }

    /// Whether GPU statistics are being collected.
    pub fn has_gpus(&self) -> bool {
        self.gpus.as_ref().is_some_and(Gpus::enabled)
    }

    /// Takes one sample (call it every 0.5 s).
    pub fn sample(&mut self) {
        self.samples += 1;
        let now = Counters::read();
        let secs = now.at.duration_since(self.last.at).as_secs_f64();
        if let (Some((b0, t0)), Some((b1, t1))) = (self.last.cpu, now.cpu)
            && t1 > t0
        {
            let busy = b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0;
            self.add("cpu_usage", busy.clamp(0.0, 100.0));
        }
        if secs > 0.0 {
            if let (Some((r0, w0)), Some((r1, w1))) = (self.last.disk, now.disk) {
                self.add("disk_read", r1.saturating_sub(r0) as f64 / MB / secs);
                self.add("disk_write", w1.saturating_sub(w0) as f64 / MB / secs);
            }
            if let (Some((r0, t0)), Some((r1, t1))) = (self.last.net, now.net) {
                self.add("network_rx", r1.saturating_sub(r0) as f64 / MB / secs);
                self.add("network_tx", t1.saturating_sub(t0) as f64 / MB / secs);
            }
        }
        self.last = now;
        if let Some((used, free)) = read_to_string("/proc/meminfo").and_then(|s| parse_meminfo(&s))
        {
            self.add("memory_used", used);
            self.add("memory_free", free);
        }
        if let Some(free) = disk_free_percent(&self.disk_path) {
            self.add("disk_free_home", free);
        }
        if let Some(t) = self
            .temperature_files
            .iter()
            .filter_map(|p| read_to_string(p)?.trim().parse::<f64>().ok())
            .map(|milli| milli / 1000.0)
            .reduce(f64::max)
        {
            self.add("cpu_temperature", t);
        }
        if let Some(g) = self.gpus.as_mut() {
            g.sample();
        }
    }

    fn add(&mut self, key: &'static str, v: f64) {
        self.means.entry(key).or_default().add(v);
    }

    /// The averages since the last report, rounded to 3 decimals, and starts over. Keys:
    /// `cpu_usage` and `cpu_temperature` (one-element lists), `memory_used`, `memory_free`
    /// (MiB), `disk_free_home` (% free), `disk_read`, `disk_write`, `network_tx`,
    /// `network_rx` (MiB/s) and, with GPUs, the per-GPU lists `gpu_temperature` (°C),
    /// `gpu_usage` (%), `gpu_memory_used` and `gpu_memory_free` (MiB). A key without readings
    /// is left out (no temperature sensor, no GPU...). Takes a sample first if none was taken.
    pub fn report(&mut self) -> Value {
        if self.samples == 0 {
            self.sample();
        }
        let mut out = Map::new();
        for key in ["cpu_usage", "cpu_temperature"] {
            if let Some(v) = self.means.get(key).and_then(Mean::get) {
                out.insert(key.into(), json!([v]));
            }
        }
        for key in [
            "memory_used",
            "memory_free",
            "disk_free_home",
            "disk_read",
            "disk_write",
            "network_tx",
            "network_rx",
        ] {
            if let Some(v) = self.means.get(key).and_then(Mean::get) {
                out.insert(key.into(), json!(v));
            }
        }
        if let Some(g) = self.gpus.as_mut() {
            g.report(&mut out);
        }
        self.means.clear();
        self.samples = 0;
        Value::Object(out)
    }
}

fn read_to_string(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// (busy, total) jiffies from the `cpu` line of `/proc/stat`: user nice system idle iowait
/// irq softirq steal (guest time is already inside user).
fn parse_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// (used, available) MiB: used is total minus available, as `psutil` computes it.
fn parse_meminfo(meminfo: &str) -> Option<(f64, f64)> {
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line[name.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some(((total - available).max(0.0), available))
}

/// (read, written) bytes over the devices `keep` accepts.
fn parse_diskstats(diskstats: &str, keep: fn(&str) -> bool) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for line in diskstats.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !keep(f[2]) {
            continue;
        }
        read = read.saturating_add(f[5].parse::<u64>().unwrap_or(0) * SECTOR);
        written = written.saturating_add(f[9].parse::<u64>().unwrap_or(0) * SECTOR);
    }
    (read, written)
}

/// Whole disks have a `/sys/block` entry; partitions do not (counting both would double).
fn is_whole_disk(name: &str) -> bool {
    Path::new("/sys/block")
        .join(name.replace('/', "!"))
        .exists()
}

/// (received, sent) bytes over every interface but `lo`.
fn parse_net_dev(netdev: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in netdev.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 9 {
            continue;
        }
        rx = rx.saturating_add(f[0].parse().unwrap_or(0));
        tx = tx.saturating_add(f[8].parse().unwrap_or(0));
    }
    (rx, tx)
}

/// Percent free for unprivileged users, as `100 - psutil.disk_usage().percent`.
fn disk_free_percent(path: &Path) -> Option<f64> {
    let st = rustix::fs::statvfs(path).ok()?;
    let used = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let avail = st.f_bavail as f64;
    (used + avail > 0.0).then(|| 100.0 - used / (used + avail) * 100.0)
}

/// CPU package/core sensors: hwmon drivers for Intel and AMD CPUs, else CPU thermal zones.
fn find_temperature_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in list_dir("/sys/class/hwmon") {
        let name = read_to_string(dir.join("name")).unwrap_or_default();
        if !matches!(
            name.trim(),
            "coretemp" | "k10temp" | "zenpower" | "cpu_thermal"
        ) {
            continue;
        }
        for f in list_dir(&dir) {
            let file_name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if file_name.starts_with("temp") && file_name.ends_with("_input") {
                files.push(f);
            }
        }
    }
    if files.is_empty() {
        for zone in list_dir("/sys/class/thermal") {
            let kind = read_to_string(zone.join("type")).unwrap_or_default();
            let kind = kind.trim();
            if kind.contains("x86_pkg") || kind.contains("cpu") || kind.contains("soc") {
                files.push(zone.join("temp"));
            }
        }
    }
    files.retain(|f| read_to_string(f).is_some_and(|s| s.trim().parse::<f64>().is_ok()));
    files
}

fn list_dir(path: impl AsRef<Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let stat = "cpu  100 0 100 700 100 0 0 0 50 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_cpu(stat), Some((200, 1000)));
        let meminfo = "MemTotal:       2048 kB\nMemFree:  100 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some((1.0, 1.0)));
        let disks =
            "   8       0 sda 10 0 4 0 10 0 8 0 0 0 0\n   8       1 sda1 10 0 4 0 10 0 8 0\n";
        assert_eq!(
            parse_diskstats(disks, |n| n == "sda"),
            (4 * SECTOR, 8 * SECTOR)
        );
        let netdev = "Inter-|   Receive\n face |bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(netdev), (10, 20));
    }

    #[test]
    fn means_round_to_three_decimals() {
        let mut m = Mean::default();
        assert_eq!(m.get(), None);
        m.add(1.0);
        m.add(2.0 / 3.0);
        m.add(f64::NAN);
        assert_eq!(m.get(), Some(0.833));
    }
}
