//! `clearml-agent daemon` end to end, the flags beyond running one task at a time: graceful
//! stop and status, run flags, services mode, schedules, reload_config, dynamic GPUs, standalone
//! mode, install-globally. Same setup as daemon.rs (tests/daemon_setup).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod daemon_setup;
use common::run;
use daemon_setup::*;

/// Issue 12: `daemon --stop --wait` lets the running task finish (completed, not stopped), takes
/// nothing new (the next task stays queued) and the daemon exits; `--status` lists the agent
/// with its running task.
#[test]
fn stop_wait_drains_and_status_lists_the_agent() {
    let name = format!("drainer{}", std::process::id());
    let mut s = Setup::new(&format!("agent.worker_name: \"{name}\"\n"));
    let tmp = s.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let flag = s.dir.path().join("go");
    let first = s.shell_task(
        "drained",
        &format!(
            "echo started\nwhile [ ! -e {} ]; do sleep 0.1; done\necho done\n",
            flag.display()
        ),
        "default",
    );
    let log = std::fs::File::create(s.dir.path().join("drain-daemon.log")).expect("log");
    let child = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--queue", "default"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("daemon");
    s.daemons.push(child);
    s.wait_status(&first, &["in_progress"], Duration::from_secs(60));
    let second = s.shell_task("left-queued", "echo second\n", "default");

    let status = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--status"])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no line for the agent:\n{text}"));
    assert!(line.contains(&s.daemons[0].id().to_string()), "{text}");
    assert!(line.contains(&first), "{text}");
    assert!(line.contains("default"), "{text}");

    let stopper = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--stop", "--wait"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("stop --wait");
    // The daemon still runs its task while the stopper waits.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status(&first), "in_progress");
    assert!(s.daemons[0].try_wait().expect("wait").is_none());
    std::fs::write(&flag, "").expect("flag");
    let out = stopper.wait_with_output().expect("stopper exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.daemons[0].try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.status(&first), "completed");
    assert_eq!(s.status(&second), "queued");
}

/// Issue 12: `-O` and `--log-level` reach the task's process (PYTHONOPTIMIZE, CLEARML_LOG_LEVEL)
/// in the daemon and in `execute`.
#[test]
fn run_flags_reach_the_task_environment() {
    let mut s = Setup::new("");
    // `execute` first, while no daemon could take the task.
    let other = s.shell_task(
        "env-flags-exec",
        "echo \"opt=[$PYTHONOPTIMIZE] level=[$CLEARML_LOG_LEVEL]\"\n",
        "default",
    );
    let out = s
        .agent()
        .args(["execute", "--id", &other, "-O", "--log-level", "ERROR"])
        .output()
        .expect("execute");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let log = s.log(&other);
    assert!(log.contains("opt=[1] level=[ERROR]"), "{log}\n{text}");

    let task = s.shell_task(
        "env-flags",
        "echo \"opt=[$PYTHONOPTIMIZE] level=[$CLEARML_LOG_LEVEL] user=[$CLEARML_AGENT_GIT_USER]\"\n",
        "default",
    );
    s.start_daemon(&[
        "--queue",
        "default",
        "-OO",
        "--log-level",
        "warning",
        "--git-user",
        "someone",
    ]);
    s.wait_status(&task, &["completed"], Duration::from_secs(60));
    let log = s.log(&task);
    assert!(
        log.contains("opt=[2] level=[WARNING] user=[someone]"),
        "{log}"
    );
}

/// Issue 12: `--services-mode` runs three tasks at once, each under its own
/// `<id>:service:<task>` worker, and SIGTERM stops all of them (marked stopped).
#[test]
fn services_mode_runs_tasks_together_and_sigterm_stops_them_all() {
    let mut s = Setup::new("");
    let tasks: Vec<String> = (0..3)
        .map(|i| {
            s.shell_task(
                &format!("service{i}"),
                "echo serving\nwhile true; do sleep 0.1; done\n",
                "default",
            )
        })
        .collect();
    let d = s.start_daemon(&["--queue", "default", "--services-mode"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let states: Vec<String> = tasks.iter().map(|t| s.status(t)).collect();
        if states.iter().all(|st| st == "in_progress") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all running at once: {states:?}\n{}",
            s.daemon_output(d)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = s.workers();
        if tasks.iter().all(|t| {
            workers
                .iter()
                .any(|w| w.ends_with(&format!(":service:{t}")))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "workers: {workers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = s.daemons[d].id();
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let status = s.daemons[d].wait().expect("daemon exits");
    assert!(status.success(), "{status:?}\n{}", s.daemon_output(d));
    for t in &tasks {
        assert_eq!(s.status(t), "stopped", "{}", s.daemon_output(d));
    }
    assert!(s.workers().is_empty(), "{:?}", s.workers());
}

/// Issue 12: `--services-mode 2` never runs more than two tasks at once.
#[test]
fn services_mode_limit_is_kept() {
    let mut s = Setup::new("");
    let tasks: Vec<String> = (0..3)
        .map(|i| s.shell_task(&format!("short{i}"), "sleep 2\necho ok\n", "default"))
        .collect();
    let d = s.start_daemon(&["--queue", "default", "--services-mode", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most = 0;
    loop {
        let states: Vec<String> = tasks.iter().map(|t| s.status(t)).collect();
        most = most.max(states.iter().filter(|st| *st == "in_progress").count());
        if states.iter().all(|st| st == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{states:?}\n{}",
            s.daemon_output(d)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(most, 2, "{}", s.daemon_output(d));
}

/// Issue 12: outside its `agent.downtime` window the daemon takes no task but stays
/// registered; with `agent.reload_config` an edit of clearml.conf (the downtime removed)
/// takes effect without a restart.
#[test]
fn downtime_holds_tasks_and_reload_config_picks_up_the_edit() {
    let mut s = Setup::new("agent.reload_config: true\nagent.downtime: [\"0-24\"]\n");
    let task = s.shell_task("after-downtime", "echo ran\n", "default");
    let log = std::fs::File::create(s.dir.path().join("reload-daemon.log")).expect("log");
    let child = s
        .agent()
        .env("CLEARML_AGENT_QUEUE_POLL_FREQ_SEC", "0.3")
        .args(["daemon", "--queue", "default"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("daemon");
    s.daemons.push(child);
    let read = |s: &Setup| {
        std::fs::read_to_string(s.dir.path().join("reload-daemon.log")).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(&s).contains("Outside the working hours") {
        assert!(Instant::now() < deadline, "{}", read(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status(&task), "queued", "{}", read(&s));
    assert_eq!(s.workers().len(), 1, "the idle daemon must stay registered");
    let conf = std::fs::read_to_string(&s.conf).expect("conf");
    std::fs::write(&s.conf, conf.replace("agent.downtime: [\"0-24\"]\n", "")).expect("edit");
    s.wait_status(&task, &["completed"], Duration::from_secs(60));
    assert!(read(&s).contains("Schedule removed"), "{}", read(&s));
}

/// Issue 12: `--dynamic-gpus --gpus 0-2 --queue dual=2 single=1` gives each task its own GPUs
/// (visible devices and worker id), never shares one, and holds a task back until enough
/// GPUs are free. (No GPU is needed: only the assignment is checked.)
#[test]
fn dynamic_gpus_split_the_pool_between_tasks() {
    let mut s = Setup::new("agent.worker_name: \"gpubox\"\n");
    let flag = s.dir.path().join("release");
    let d = s.start_daemon(&[
        "--dynamic-gpus",
        "--gpus",
        "0-2",
        "--queue",
        "dual=2",
        "single=1",
        "--create-queue",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.workers().is_empty() {
        assert!(Instant::now() < deadline, "{}", s.daemon_output(d));
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = format!(
        "echo \"gpus=[$CUDA_VISIBLE_DEVICES]\"\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
        flag.display()
    );
    let a = s.shell_task("dual-a", &script, "dual");
    s.wait_status(&a, &["in_progress"], Duration::from_secs(60));
    let b = s.shell_task("single-b", &script, "single");
    s.wait_status(&b, &["in_progress"], Duration::from_secs(60));
    let c = s.shell_task("dual-c", &script, "dual");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status(&c), "queued", "{}", s.daemon_output(d));
    let workers = s.workers();
    assert!(
        workers.contains(&"gpubox:gpu0,1".to_string()),
        "{workers:?}"
    );
    assert!(workers.contains(&"gpubox:gpu2".to_string()), "{workers:?}");
    std::fs::write(&flag, "").expect("flag");
    for t in [&a, &b, &c] {
        s.wait_status(t, &["completed"], Duration::from_secs(60));
    }
    assert!(s.log(&a).contains("gpus=[0,1]"), "{}", s.log(&a));
    assert!(s.log(&b).contains("gpus=[2]"), "{}", s.log(&b));
    assert!(s.log(&c).contains("gpus=[0,1]"), "{}", s.log(&c));
}

/// Issue 12: `execute --standalone-mode` builds no environment: the task runs with the Python
/// as it is (not in a virtual environment) and nothing is created in agent.venvs_dir.
#[test]
fn standalone_mode_runs_with_the_python_as_it_is() {
    let s = Setup::new("");
    let file = s.dir.path().join("standalone.py");
    std::fs::write(
        &file,
        "import sys\nprint('in-venv=%s' % (sys.prefix != sys.base_prefix))\n",
    )
    .expect("script");
    let task = s.create(&[
        "--name",
        "standalone",
        "--script",
        file.to_str().unwrap_or_default(),
        "--queue",
        "default",
    ]);
    let out = s
        .agent()
        .args(["execute", "--id", &task, "--standalone-mode"])
        .output()
        .expect("execute");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let log = s.log(&task);
    assert!(log.contains("in-venv=False"), "{log}\n{text}");
    assert!(log.contains("Standalone mode"), "{log}");
    let venvs = s.dir.path().join("venvs");
    let built: Vec<_> = std::fs::read_dir(&venvs)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("bin/python").exists())
                .collect()
        })
        .unwrap_or_default();
    assert!(built.is_empty(), "a venv was built: {built:?}");
}

/// Issue 12: `--downtime` holds new tasks in services mode too.
#[test]
fn services_mode_keeps_the_downtime() {
    let mut s = Setup::new("");
    let task = s.shell_task("held", "echo ran\n", "default");
    let d = s.start_daemon(&[
        "--queue",
        "default",
        "--services-mode",
        "--downtime",
        "0-24",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.workers().is_empty() {
        assert!(Instant::now() < deadline, "{}", s.daemon_output(d));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.status(&task), "queued", "{}", s.daemon_output(d));
    let pid = s.daemons[d].id();
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let status = s.daemons[d].wait().expect("daemon exits");
    assert!(status.success(), "{}", s.daemon_output(d));
    assert_eq!(s.status(&task), "queued");
}

/// Issue 12: `build --install-globally` builds an environment that sees the system's
/// site-packages (agent.package_manager.system_site_packages for that build).
#[test]
fn build_install_globally_sees_system_site_packages() {
    let s = Setup::new("");
    let file = s.dir.path().join("glob.py");
    std::fs::write(&file, "print('hi')\n").expect("script");
    let task = s.create(&[
        "--name",
        "globally",
        "--script",
        file.to_str().unwrap_or_default(),
    ]);
    for (flag, target, wanted) in [
        (None, "plain-env", "false"),
        (Some("--install-globally"), "global-env", "true"),
    ] {
        let dir = s.dir.path().join(target);
        let mut cmd = s.agent();
        cmd.args(["build", "--id", &task, "--target"]).arg(&dir);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let out = cmd.output().expect("build");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        let cfg = std::fs::read_to_string(dir.join("pyvenv.cfg")).expect("pyvenv.cfg");
        assert!(
            cfg.contains(&format!("include-system-site-packages = {wanted}")),
            "{flag:?}: {cfg}"
        );
    }
}

/// Issue 12: after `kill -9` of a services-mode daemon, the next daemon kills what is left of
/// its tasks (helpers that left the process group included), marks them failed and removes
/// their `<venvs>.service.<task>` folders.
#[test]
fn a_killed_services_daemon_is_cleaned_up_by_the_next_one() {
    let mut s = Setup::new("");
    let marker = format!("service-orphan-{}", std::process::id());
    let tasks: Vec<String> = (0..2)
        .map(|i| {
            s.shell_task(
                &format!("orphan-service{i}"),
                &format!(
                    "setsid bash -c 'exec -a {marker} sleep 300' &\necho serving\nwhile true; do sleep 0.1; done\n"
                ),
                "default",
            )
        })
        .collect();
    let first = s.start_daemon(&["--queue", "default", "--services-mode"]);
    // `venvs.service.<task>`, or `venvs.N.service.<task>` when other agents on this machine
    // hold slot 0.
    let service_folders = |s: &Setup| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(s.dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("venvs.")
                    && tasks
                        .iter()
                        .any(|t| name.ends_with(&format!(".service.{t}")))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(tasks.iter().all(|t| s.status(t) == "in_progress")
        && processes_with(&marker).len() == 2
        && service_folders(&s).len() == 2)
    {
        assert!(
            Instant::now() < deadline,
            "services never all started\n{}",
            s.daemon_output(first)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.daemons[first].kill().expect("kill -9"); // SIGKILL
    let _ = s.daemons[first].wait();
    let killed_at = Instant::now();
    let second = s.start_daemon(&["--queue", "default", "--services-mode"]);
    loop {
        let states: Vec<String> = tasks.iter().map(|t| s.status(t)).collect();
        let left = processes_with(&marker);
        let kept = service_folders(&s);
        if states.iter().all(|st| st == "failed") && left.is_empty() && kept.is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "60 s after kill -9: {states:?}, processes {left:?}, folders {kept:?}\n{}",
            s.daemon_output(second)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = s.daemon_output(second);
    for t in &tasks {
        let doc = s.task_doc(t);
        assert!(
            doc["status_message"]
                .as_str()
                .unwrap_or_default()
                .contains("was killed while running the task"),
            "{doc}"
        );
        assert!(
            out.contains(&format!(".service.{t} (the services-mode")),
            "{out}"
        );
    }
    // The slots' own working folders (`venvs`, `venvs.N`) are untouched.
    let slots = std::fs::read_dir(s.dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.path().is_dir()
                && (name == "venvs"
                    || name
                        .strip_prefix("venvs.")
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())))
        })
        .count();
    assert!(slots >= 1, "{out}");
}
