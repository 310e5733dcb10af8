//! LRU eviction against real folders: the size limit with its margin, in-use and recent
//! entries kept, dry runs, and `min_free_bytes` on a small tmpfs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::{File, FileTimes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use clearml_cachepolicy::{Policy, Reason, SkipReason, enforce, status, touch_last_used};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn hours_ago(h: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(h * 3600)
}

fn set_time(path: &Path, t: SystemTime) {
    File::open(path)
        .expect("open")
        .set_times(FileTimes::new().set_accessed(t).set_modified(t))
        .expect("set_times");
}

/// A file entry of `bytes` (written, so it is allocated) last used at `t`.
fn file_entry(dir: &Path, name: &str, bytes: u64, t: SystemTime) -> PathBuf {
    let p = dir.join(name);
    let mut f = File::create(&p).expect("create");
    f.write_all(&vec![7u8; bytes as usize]).expect("write");
    drop(f);
    set_time(&p, t);
    p
}

/// A directory entry holding two files of `bytes / 2`, everything last used at `t`.
fn dir_entry(dir: &Path, name: &str, bytes: u64, t: SystemTime) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir(&p).expect("mkdir");
    file_entry(&p, "a.bin", bytes / 2, t);
    std::fs::create_dir(p.join("sub")).expect("mkdir");
    file_entry(&p.join("sub"), "b.bin", bytes / 2, t);
    set_time(&p.join("sub"), t);
    set_time(&p, t);
    p
}

fn policy(max: Option<u64>, min_free: Option<u64>, margin: f64) -> Policy {
    Policy {
        max_used_bytes: max,
        min_free_bytes: min_free,
        cleanup_margin_percent: margin,
        ..Policy::default()
    }
}

/// Ten 64 KiB entries, e0 the least recently used; returns them oldest first.
fn fill(dir: &Path) -> Vec<PathBuf> {
    (0..10)
        .map(|i| {
            let t = hours_ago(100 - i * 5);
            if i % 2 == 0 {
                dir_entry(dir, &format!("e{i}"), 64 * KIB, t)
            } else {
                file_entry(dir, &format!("e{i}"), 64 * KIB, t)
            }
        })
        .collect()
}

#[test]
fn lru_eviction_goes_down_to_the_limit_minus_the_margin_and_keeps_the_entry_in_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    let entries = fill(&cache);
    let dirs = vec![cache.clone(), tmp.path().join("missing")];

    let before = status(&dirs);
    assert_eq!(before.folders[0].entries, 10);
    assert!(!before.folders[1].exists);
    let total = before.total_bytes();
    assert!(total >= 640 * KIB, "allocated size {total}");
    let each = total / 10;

    // The oldest entry is in use: its lock is held through an open file of our own.
    let lock = File::create(cache.join("e0.lock")).expect("lock file");
    lock.lock().expect("lock");
    assert_eq!(status(&dirs).folders[0].in_use, 1);

    let max = 6 * each; // over by four entries
    let p = policy(Some(max), None, 20.0); // target: 4.8 entries' worth -> keep 4
    assert_eq!(p.used_target(), Some((max as f64 * 0.8).floor() as u64));

    let dry = enforce(&p, &dirs, true);
    assert!(dry.dry_run);
    let names = |r: &clearml_cachepolicy::Report| -> Vec<String> {
        r.removed
            .iter()
            .map(|x| x.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&dry), ["e1", "e2", "e3", "e4", "e5", "e6"]);
    assert!(
        entries.iter().all(|e| e.exists()),
        "a dry run removes nothing"
    );

    let report = enforce(&p, &dirs, false);
    assert_eq!(names(&report), names(&dry));
    assert!(
        report
            .removed
            .iter()
            .all(|r| r.reason == Reason::MaxUsedBytes)
    );
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, entries[0]);
    assert_eq!(report.skipped[0].reason, SkipReason::InUse);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.within_limits);
    assert_eq!(report.used_before, total);
    assert!(report.used_after <= p.used_target().unwrap());
    // The entries left: the one in use and the four most recently used.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.exists(), i == 0 || i >= 7, "{}", e.display());
    }
    let after = status(&dirs);
    assert_eq!(after.folders[0].entries, 4);
    assert_eq!(after.total_bytes(), report.used_after);
    // The lock file is bookkeeping, not an entry, and stays.
    assert!(cache.join("e0.lock").exists());

    // Released, it goes first.
    drop(lock);
    let again = enforce(&policy(Some(3 * each), None, 0.0), &dirs, false);
    assert_eq!(names(&again), ["e0"]);
}

#[test]
fn recently_used_entries_and_stamped_ones_are_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().to_path_buf();
    let old = file_entry(&cache, "old", 8 * KIB, hours_ago(50));
    let stamped = dir_entry(&cache, "stamped", 8 * KIB, hours_ago(60));
    let fresh = file_entry(&cache, "fresh", 8 * KIB, SystemTime::now());
    // The stamp says "used now", whatever the files inside say.
    touch_last_used(&stamped).expect("stamp");
    assert!(stamped.join(".last_used").exists());
    // A directory locked from inside is in use too.
    let locked_dir = dir_entry(&cache, "locked", 8 * KIB, hours_ago(80));
    let lock = File::create(locked_dir.join(".lock")).expect("lock file");
    lock.lock().expect("lock");
    set_time(&locked_dir.join(".lock"), hours_ago(80));
    set_time(&locked_dir, hours_ago(80));

    let report = enforce(
        &policy(Some(0), None, 0.0),
        std::slice::from_ref(&cache),
        false,
    );
    let removed: Vec<&Path> = report.removed.iter().map(|r| r.path.as_path()).collect();
    assert_eq!(removed, [old.as_path()]);
    assert!(!report.within_limits);
    let mut skipped: Vec<(String, SkipReason)> = report
        .skipped
        .iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_string_lossy().into_owned(),
                s.reason,
            )
        })
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        [
            ("fresh".to_string(), SkipReason::TooYoung),
            ("locked".to_string(), SkipReason::InUse),
            ("stamped".to_string(), SkipReason::TooYoung),
        ]
    );
    assert!(fresh.exists() && stamped.exists() && locked_dir.exists());
}

#[test]
fn venv_cache_locks_in_a_locks_folder_count() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().to_path_buf();
    let used = dir_entry(&cache, "k1", 8 * KIB, hours_ago(50));
    let free = dir_entry(&cache, "k2", 8 * KIB, hours_ago(40));
    std::fs::create_dir(cache.join("locks")).expect("mkdir");
    let lock = File::create(cache.join("locks/k1.use")).expect("lock file");
    lock.lock_shared().expect("lock");
    File::create(cache.join("locks/k2.lock")).expect("lock file");
    let report = enforce(
        &policy(Some(0), None, 0.0),
        std::slice::from_ref(&cache),
        false,
    );
    let removed: Vec<&Path> = report.removed.iter().map(|r| r.path.as_path()).collect();
    assert_eq!(removed, [free.as_path()]);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, used);
    assert!(
        cache.join("locks/k2.lock").exists(),
        "the locks folder is no entry"
    );
}

#[test]
fn a_locked_folder_is_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().to_path_buf();
    file_entry(&cache, "old", 8 * KIB, hours_ago(50));
    let lock = File::create(cache.join(".lock")).expect("lock file");
    lock.lock_shared().expect("lock");
    let st = status(std::slice::from_ref(&cache));
    assert!(st.folders[0].folder_locked);
    let report = enforce(
        &policy(Some(0), None, 0.0),
        std::slice::from_ref(&cache),
        false,
    );
    assert!(report.removed.is_empty());
    assert_eq!(report.skipped[0].reason, SkipReason::FolderLocked);
}

#[test]
fn no_limits_remove_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fill(tmp.path());
    let p = policy(None, None, 5.0);
    assert!(!p.is_active());
    let report = enforce(&p, &[tmp.path().to_path_buf()], false);
    assert!(report.removed.is_empty() && report.within_limits);
}

#[test]
fn policy_from_the_config_view() {
    let sc = clearml_config::StorageCache {
        default_base_dir: "/c".into(),
        max_used_bytes: Some(-1),
        min_free_bytes: Some(10_000_000_000),
        cleanup_margin_percent: None,
    };
    let p = Policy::from_storage_cache(&sc);
    assert_eq!(p.max_used_bytes, None);
    assert_eq!(p.min_free_bytes, Some(10_000_000_000));
    assert_eq!(p.cleanup_margin_percent, 5.0);
    assert_eq!(p.free_target(), Some(10_500_000_000));
    let p = Policy::from_storage_cache(&clearml_config::StorageCache {
        max_used_bytes: Some(1000),
        cleanup_margin_percent: Some(250.0),
        ..sc
    });
    assert_eq!(p.cleanup_margin_percent, 100.0);
    assert_eq!(p.used_target(), Some(0));
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    let s = rustix::fs::statvfs(p).expect("statvfs");
    s.f_bavail * s.f_frsize
}

#[test]
fn min_free_bytes_evicts_until_the_file_system_has_room() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("fs");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .output();
    let _mount = match mounted {
        Ok(o) if o.status.success() => Mount(mnt.clone()),
        Ok(o) => {
            eprintln!(
                "skipped: cannot mount a tmpfs (uid {}): {}",
                rustix::process::getuid().as_raw(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run mount: {e}");
            return;
        }
    };
    let cache = mnt.join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    let entries: Vec<PathBuf> = (0..7)
        .map(|i| file_entry(&cache, &format!("w{i}"), MIB, hours_ago(10 - i)))
        .collect();
    let free = free_bytes(&mnt);
    assert!(free < 2 * MIB, "tmpfs nearly full: {free} free");

    // Wants 3 MiB free, 10 % more once it cleans: 3.3 MiB, so three 1 MiB entries go.
    let p = policy(None, Some(3 * MIB), 10.0);
    let report = enforce(&p, std::slice::from_ref(&cache), false);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let removed: Vec<&Path> = report.removed.iter().map(|r| r.path.as_path()).collect();
    let expected: Vec<&Path> = entries
        .iter()
        .take(removed.len())
        .map(|p| p.as_path())
        .collect();
    assert_eq!(removed, expected, "least recently used first");
    assert!(
        report
            .removed
            .iter()
            .all(|r| r.reason == Reason::MinFreeBytes)
    );
    let now_free = free_bytes(&mnt);
    assert!(now_free >= p.free_target().unwrap(), "{now_free} free");
    assert!(
        now_free < p.free_target().unwrap() + MIB,
        "stops once there is room: {now_free} free"
    );
    assert_eq!(report.free.len(), 1);
    assert_eq!(report.free[0].before, free);
    assert_eq!(report.free[0].after, now_free);
    assert!(report.within_limits);
    assert_eq!(status(&[cache]).folders[0].free_bytes, Some(now_free));
}

#[tokio::test]
async fn the_timer_enforces_at_once_and_reports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let old = file_entry(tmp.path(), "old", 8 * KIB, hours_ago(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let timer = tokio::spawn(clearml_cachepolicy::run_periodically(
        policy(Some(0), None, 0.0),
        vec![tmp.path().to_path_buf()],
        Duration::from_secs(600),
        move |r| {
            let _ = tx.send(r);
        },
    ));
    let report = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("a report");
    timer.abort();
    assert!(report.is_noteworthy());
    assert_eq!(report.removed[0].path, old);
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains("removed 1 entries"))
    );
}
