//! `clearml-agent slurm` on a real one-node Slurm cluster that the test starts itself: munged,
//! slurmctld and slurmd as root, with a slurm.conf under the test's temp folder
//! (proctrack/linuxproc, no accounting, cons_tres with the machine's CPUs), on free ports. The
//! server runs in-process on port 0; tasks are created with `clearml-agent task create`.
//!
//! Skips (printing why) only when Slurm or munge is not installed (`.ci/run` installs them) or
//! when not running as root (slurmd needs it).
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clearml_api::{Client, ClientConfig};
use serde_json::{Value, json};

mod common;
use common::{bin, in_process_server, run};

const KEY: &str = "SLURMTESTKEY";
const SECRET: &str = "slurm-test-secret-8c1f0a";

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A one-node Slurm cluster; dropping it cancels its jobs and stops its daemons.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("scancel")
            .arg("--user=root")
            .env("SLURM_CONF", &self.conf)
            .status();
        std::thread::sleep(Duration::from_secs(2));
        // slurmd, then slurmctld, then munged.
        for d in self.daemons.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && d.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let tools = [
            "munged",
            "slurmctld",
            "slurmd",
            "sbatch",
            "squeue",
            "scancel",
        ];
        let missing: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| find(t).is_none())
            .collect();
        if !missing.is_empty() {
            println!(
                "SKIPPED: Slurm/munge not installed (missing {missing:?}; apt-get install slurm-wlm munge)"
            );
            return None;
        }
        use std::os::unix::fs::MetadataExt as _;
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            println!("SKIPPED: starting slurmd needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("slurm-test")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let key: Vec<u8> = (0..1024).map(|i| (i * 7919 % 251) as u8 ^ 0x5a).collect();
        std::fs::write(d.join("munge.key"), key).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(d.join("munge.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = d.join("munge.sock");
        let munged = Command::new(find("munged").unwrap())
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--key-file={}", d.join("munge.key").display()))
            .arg(format!("--log-file={}", d.join("log/munged.log").display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("munged starts");
        let host = clearml_config::host_name()
            .split('.')
            .next()
            .unwrap_or("localhost")
            .to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ctld_port, slurmd_port) = (free_port(), free_port());
        let conf = d.join("slurm.conf");
        let p = |s: &str| d.join(s).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "ClusterName=clearmltest\n\
                 SlurmctldHost={host}(127.0.0.1)\n\
                 SlurmUser=root\nSlurmdUser=root\n\
                 AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={sock}\n\
                 SlurmctldPort={ctld_port}\nSlurmdPort={slurmd_port}\n\
                 StateSaveLocation={state}\nSlurmdSpoolDir={spool}/slurmd-%n\n\
                 SlurmctldPidFile={ctldpid}\nSlurmdPidFile={slurmdpid}\n\
                 SlurmctldLogFile={ctldlog}\nSlurmdLogFile={slurmdlog}\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n\
                 SchedulerType=sched/backfill\nSchedulerParameters=sched_interval=1\n\
                 MpiDefault=none\nReturnToService=2\nMinJobAge=600\nKillWait=10\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                sock = sock.display(),
                state = p("state"),
                spool = p("spool"),
                ctldpid = p("slurmctld.pid"),
                slurmdpid = p("slurmd.pid"),
                ctldlog = p("log/slurmctld.log"),
                slurmdlog = p("log/slurmd.log"),
            ),
        )
        .unwrap();
        let mut cluster = Cluster {
            dir,
            conf: conf.clone(),
            daemons: vec![munged],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "munged did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        for daemon in ["slurmctld", "slurmd"] {
            let child = Command::new(find(daemon).unwrap())
                .arg("-D")
                .arg("-f")
                .arg(&conf)
                .env("SLURM_CONF", &conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("slurm daemon starts");
            cluster.daemons.push(child);
            std::thread::sleep(Duration::from_millis(500));
        }
        // Up when the node is idle.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("sinfo")
                .args(["--noheader", "-o", "%t"])
                .env("SLURM_CONF", &conf)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            if out == "idle" {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the Slurm node did not come up (sinfo: {out:?}); slurmctld log:\n{}\nslurmd log:\n{}",
                    std::fs::read_to_string(cluster.dir.path().join("log/slurmctld.log"))
                        .unwrap_or_default(),
                    std::fs::read_to_string(cluster.dir.path().join("log/slurmd.log"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(cluster)
    }

    /// The job's state as squeue lists it ("" when Slurm forgot it).
    fn job_state(&self, job: &str) -> String {
        let out = Command::new("squeue")
            .args(["--noheader", "--states=all", "-o", "%T", "-j", job])
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

struct Setup<'c> {
    cluster: &'c Cluster,
    dir: tempfile::TempDir,
    conf: PathBuf,
    rt: tokio::runtime::Runtime,
    client: Client,
    glue: Option<Child>,
    glue_runs: usize,
    _server: common::TestServer,
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        if let Some(g) = &mut self.glue {
            let _ = g.kill();
            let _ = g.wait();
        }
    }
}

impl<'c> Setup<'c> {
    fn new(cluster: &'c Cluster) -> Setup<'c> {
        let server = in_process_server(KEY, SECRET);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let conf = dir.path().join("clearml.conf");
        std::fs::write(
            &conf,
            format!(
                "api {{\n  api_server: \"{api}\"\n  web_server: \"{api}\"\n  files_server: \"{files}\"\n  credentials {{ access_key: \"{KEY}\", secret_key: \"{SECRET}\" }}\n}}\n\
                 agent {{\n  worker_id: \"slurm-test:slurm\"\n  venvs_dir: \"{}\"\n  vcs_cache.path: \"{}\"\n}}\n",
                dir.path().join("venvs").display(),
                dir.path().join("vcs").display(),
                api = server.api,
                files = server.files,
            ),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = Client::new(ClientConfig {
            api_server: server.api.clone(),
            access_key: KEY.into(),
            secret_key: SECRET.into(),
            verify_certificate: true,
            method: "post".into(),
            worker: None,
            retry_for: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        Setup {
            cluster,
            dir,
            conf,
            rt,
            client,
            glue: None,
            glue_runs: 0,
            _server: server,
        }
    }

    fn agent(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config-file")
            .arg(&self.conf)
            .env("HOME", self.dir.path().join("home"))
            .env("SLURM_CONF", &self.cluster.conf)
            .env("CLEARML_AGENT_QUEUE_POLL_FREQ_SEC", "1")
            .env_remove("CLEARML_WORKER_ID");
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn task(&self, name: &str, script: &str, cpus: u32, queue: &str) -> String {
        self.task_with(name, script, &[&format!("cpus={cpus}")], queue)
    }

    fn task_with(&self, name: &str, script: &str, args: &[&str], queue: &str) -> String {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let file = self.write(&format!("{safe}.sh"), script);
        let out = run(self
            .agent()
            .args(["task", "create", "--project", "slurm tests", "--name", name])
            .arg("--script")
            .arg(&file)
            .arg("--args")
            .args(args)
            .args(["--queue", queue]));
        out.lines().last().unwrap_or_default().trim().to_string()
    }

    fn start_glue(&mut self, args: &[&str]) {
        let log = std::fs::File::create(self.path(&format!("glue{}.log", self.glue_runs))).unwrap();
        self.glue_runs += 1;
        let child = self
            .agent()
            .arg("slurm")
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("glue starts");
        self.glue = Some(child);
    }

    fn glue_log(&self) -> String {
        std::fs::read_to_string(self.path(&format!("glue{}.log", self.glue_runs - 1)))
            .unwrap_or_default()
    }

    /// SIGTERM, and wait for the glue to exit.
    fn stop_glue(&mut self) {
        let mut g = self.glue.take().expect("a glue runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(g.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the glue did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn doc(&self, task: &str) -> Value {
        self.rt
            .block_on(self.client.call("tasks.get_by_id", json!({"task": task})))
            .unwrap()["task"]
            .clone()
    }

    fn log(&self, task: &str) -> String {
        let out = self.agent().args(["task", "logs", task]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until `check` holds for the task document.
    fn wait_for(&self, task: &str, what: &str, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let d = self.doc(task);
            if check(&d) {
                return d;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {task}: waited {secs}s for {what}; it is {} ({}: {})\nlog:\n{}\nglue:\n{}",
                    d["status"],
                    d["status_message"],
                    d["status_reason"],
                    self.log(task),
                    self.glue_log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_status(&self, task: &str, status: &str, secs: u64) -> Value {
        self.wait_for(task, &format!("status {status}"), secs, |d| {
            d["status"] == status
        })
    }

    fn job_of(&self, task: &str) -> String {
        self.doc(task)["runtime"]["slurm_job_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn wait_job_gone(&self, job: &str) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let s = self.cluster.job_state(job);
            if !matches!(
                s.as_str(),
                "PENDING" | "RUNNING" | "COMPLETING" | "CONFIGURING" | "SUSPENDED"
            ) {
                return;
            }
            assert!(Instant::now() < deadline, "job {job} is still {s}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

const TEMPLATE: &str = r#"#!/bin/bash
#SBATCH --job-name=clearml-${CLEARML_TASK.id}
#SBATCH --cpus-per-task=${CLEARML_TASK.hyperparams.Args.cpus:1}
#SBATCH --partition=${CLEARML_TASK.hyperparams.Args.partition:debug}
echo "template line before the agent: job $SLURM_JOB_ID project ${CLEARML_TASK.project} queue ${CLEARML_QUEUE_NAME} name ${CLEARML_TASK.name}"
${CLEARML_AGENT_EXECUTE}
status=$?
echo "template line after the agent"
exit $status
"#;

const BAD_TEMPLATE: &str = r#"#!/bin/bash
#SBATCH --partition=${CLEARML_TASK.partition}
${CLEARML_AGENT_EXECUTE}
"#;

fn is_running_in_job(d: &Value) -> bool {
    d["status"] == "in_progress"
        && d["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("running as Slurm job") || m.contains("Changed by"))
}

#[test]
fn slurm_glue_on_a_real_one_node_cluster() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let mut s = Setup::new(&cluster);
    for q in ["slurm-main", "slurm-bad"] {
        run(s.agent().args(["queue", "create", q]));
    }
    let good = s.write("good.tpl", TEMPLATE);
    let bad = s.write("bad.tpl", BAD_TEMPLATE);
    s.start_glue(&[
        "--queue",
        "slurm-main",
        "slurm-bad",
        "--template",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--max-jobs",
        "4",
    ]);

    // An unknown template variable fails the task, naming the variable.
    let t_bad = s.task("bad template", "echo never\n", 1, "slurm-bad");
    let d = s.wait_status(&t_bad, "failed", 60);
    let reason = d["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("${CLEARML_TASK.partition}"), "{d}");
    assert!(s.log(&t_bad).contains("${CLEARML_TASK.partition}"));
    assert_eq!(s.job_of(&t_bad), "", "no job was submitted");

    // A job Slurm refuses (a partition the task asked for that does not exist) fails its task
    // with sbatch's message.
    let t_refused = s.task_with(
        "refused",
        "echo never\n",
        &["cpus=1", "partition=nosuchpartition"],
        "slurm-main",
    );
    let d = s.wait_status(&t_refused, "failed", 60);
    let reason = d["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Slurm refused the job"), "{d}");
    assert!(reason.to_lowercase().contains("partition"), "{d}");
    println!("refused: {reason}");

    // Three tasks complete as three jobs; the template's own lines and the task's output are
    // in each console; each job built in its own folder.
    let names = ["it's one; $(touch /tmp/pwned-slurm)", "two", "three"];
    let tasks: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            s.task(
                n,
                &format!("echo \"task output {i}\"\necho \"work root $CLEARML_AGENT_WORK_ROOT\"\nsleep 2\n"),
                1,
                "slurm-main",
            )
        })
        .collect();
    let mut jobs = Vec::new();
    let mut roots = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        s.wait_status(t, "completed", 180);
        let log = s.log(t);
        assert!(
            log.contains("template line before the agent: job "),
            "{log}"
        );
        assert!(
            log.contains("project slurm tests queue slurm-main"),
            "{log}"
        );
        assert!(log.contains(&format!("task output {i}")), "{log}");
        assert!(log.contains("template line after the agent"), "{log}");
        let job = s.job_of(t);
        assert!(
            !job.is_empty() && job.chars().all(|c| c.is_ascii_digit()),
            "{job}"
        );
        assert!(
            log.contains(&format!("Submitted to Slurm as job {job}")),
            "{log}"
        );
        let root = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("work root "))
            .unwrap_or_default()
            .to_string();
        assert!(root.ends_with(&format!(".slurm/{job}")), "{root}");
        jobs.push(job);
        roots.push(root);
    }
    assert!(s.log(&tasks[0]).contains(&format!("name {}", names[0])));
    assert!(
        !Path::new("/tmp/pwned-slurm").exists(),
        "a task name ran as shell"
    );
    jobs.sort();
    jobs.dedup();
    roots.sort();
    roots.dedup();
    assert_eq!((jobs.len(), roots.len()), (3, 3));

    // A job that takes the whole node keeps the next one pending, with Slurm's reason shown.
    let hold = s.task(
        "hold",
        "echo holding the node\nsleep 600\n",
        cpus,
        "slurm-main",
    );
    s.wait_for(&hold, "running in its job", 60, is_running_in_job);
    let hold_job = s.job_of(&hold);
    let waiter = s.task("waiter", "echo waited\n", 1, "slurm-main");
    let d = s.wait_for(&waiter, "a pending reason", 60, |d| {
        d["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("pending: Resources"))
    });
    assert_eq!(d["status"], "in_progress", "{d}");
    println!("pending: {}", d["status_message"]);
    let waiter_job = s.job_of(&waiter);
    assert_eq!(cluster.job_state(&waiter_job), "PENDING");

    // SIGTERM leaves the jobs alone; a new glue finds them again.
    s.stop_glue();
    assert!(s.glue_log().contains("keep running"), "{}", s.glue_log());
    assert_eq!(cluster.job_state(&hold_job), "RUNNING");
    assert_eq!(cluster.job_state(&waiter_job), "PENDING");
    s.start_glue(&[
        "--queue",
        "slurm-main",
        "slurm-bad",
        "--template",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--max-jobs",
        "2",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(s
        .glue_log()
        .contains(&format!("Slurm job {waiter_job} (PENDING)"))
        && s.glue_log()
            .contains(&format!("Slurm job {hold_job} (RUNNING)")))
    {
        assert!(Instant::now() < deadline, "{}", s.glue_log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // With --max-jobs 2 and two jobs in flight, a new task waits in its queue.
    let waiter2 = s.task("waiter two", "echo never\n", 1, "slurm-main");
    std::thread::sleep(Duration::from_secs(4));
    let d = s.doc(&waiter2);
    assert_eq!(d["status"], "queued", "{d}");
    assert_eq!(s.job_of(&waiter2), "");

    // Aborting the pending task cancels its job (only the glue can: nothing of it runs yet).
    run(s.agent().args(["task", "abort", &waiter]));
    s.wait_status(&waiter, "stopped", 30);
    s.wait_job_gone(&waiter_job);

    // That freed a slot: the waiting task is submitted and pends. A pending job cancelled by
    // hand (before anything of it ran) fails its task with Slurm's state.
    s.wait_for(&waiter2, "a pending reason", 60, |d| {
        d["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("pending:"))
    });
    let waiter2_job = s.job_of(&waiter2);
    // Cancelled while the glue is down: the next glue still sees how it ended.
    s.stop_glue();
    run(Command::new("scancel")
        .arg(&waiter2_job)
        .env("SLURM_CONF", &cluster.conf));
    s.wait_job_gone(&waiter2_job);
    assert_eq!(s.doc(&waiter2)["status"], "in_progress");
    s.start_glue(&[
        "--queue",
        "slurm-main",
        "slurm-bad",
        "--template",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let d = s.wait_status(&waiter2, "failed", 60);
    let reason = d["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("Slurm job {waiter2_job} ended CANCELLED")),
        "{d}"
    );
    assert!(s.log(&waiter2).contains("ended CANCELLED"));
    println!("pending job cancelled by hand: {reason}");

    // A running job cancelled by hand fails its task with Slurm's word for it.
    run(Command::new("scancel")
        .arg(&hold_job)
        .env("SLURM_CONF", &cluster.conf));
    let d = s.wait_status(&hold, "failed", 60);
    let reason = d["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("Slurm job {hold_job}")), "{d}");
    println!("scancel by hand: {reason}");
    let log = s.log(&hold);
    assert!(log.contains("holding the node"), "{log}");

    // Aborting a running task stops it and leaves no job.
    let runner = s.task("runner", "echo running\nsleep 600\n", 1, "slurm-main");
    s.wait_for(&runner, "running in its job", 60, is_running_in_job);
    let runner_job = s.job_of(&runner);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.log(&runner).contains("running") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(200));
    }
    run(s.agent().args(["task", "abort", &runner]));
    s.wait_status(&runner, "stopped", 30);
    s.wait_job_gone(&runner_job);
    println!("runner console:\n{}", s.log(&runner));
    s.stop_glue();
}

/// A port for slurmctld/slurmd, which take their ports from slurm.conf and cannot be asked for
/// port 0: bound, read and released just before the daemons start.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("bound address").port()
}
