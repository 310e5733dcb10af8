//! `clearml-agent task create` against the embedded server, run as real processes: from a
//! local folder, a clone with unpushed commits, a folder outside git, and a remote repository.

mod common;

use common::task_server::*;
use serde_json::json;

#[test]
fn create_from_local_folder_stores_commit_and_uncommitted_diff() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("proj");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q"]);
    write(&repo.join("train.py"), "print('v1')\n");
    write(&repo.join("lib/util.py"), "X = 1\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    // Uncommitted: a changed file and a new, untracked entry script.
    write(&repo.join("train.py"), "print('v2, not committed')\n");
    write(&repo.join("tools/extra.py"), "print('untracked')\n");
    let reqs = work.path().join("reqs.txt");
    write(&reqs, "numpy==1.26.4\n# a comment\npandas\n");

    let repo_arg = repo.to_str().expect("utf-8 path");
    let id = server.create(&[
        "--project",
        "Folder Project",
        "--name",
        "from folder",
        "--folder",
        repo_arg,
        "--script",
        "train.py",
        "--requirements",
        reqs.to_str().expect("utf-8"),
        "--packages",
        "tqdm>=4",
        "--args",
        "lr=0.5",
        "epochs=3",
        "--args=--batch-size=64",
    ]);
    let t = server.task(&id);
    let script = &t["script"];
    let root = std::fs::canonicalize(&repo).expect("canonical");
    assert_eq!(script["repository"], json!(root.to_str()), "{script}");
    assert_eq!(script["version_num"], json!(head));
    assert_eq!(script["branch"], json!("main"));
    assert_eq!(script["entry_point"], json!("train.py"));
    assert_eq!(script["working_dir"], json!("."));
    assert_eq!(script["binary"], json!("python3"));
    let diff = script["diff"].as_str().expect("diff");
    assert!(
        diff.starts_with("diff --git a/train.py b/train.py"),
        "{diff}"
    );
    assert!(diff.contains("+print('v2, not committed')"), "{diff}");
    // Untracked files other than the entry point stay out of the diff.
    assert!(!diff.contains("untracked"), "{diff}");
    assert_eq!(
        script["requirements"]["pip"],
        json!("numpy==1.26.4\n# a comment\npandas\ntqdm>=4")
    );
    let args = &t["hyperparams"]["Args"];
    assert_eq!(args["lr"]["value"], json!("0.5"));
    assert_eq!(args["lr"]["section"], json!("Args"));
    assert_eq!(args["lr"]["name"], json!("lr"));
    assert_eq!(args["epochs"]["value"], json!("3"));
    assert_eq!(args["batch_size"]["value"], json!("64"), "{args}");
    assert_eq!(t["status"], json!("created"));
    assert_eq!(t["type"], json!("training"));
    let project = server.call("projects.get_by_id", json!({"project": t["project"]}));
    assert_eq!(project["project"]["name"], json!("Folder Project"));

    // What the agent will do reproduces the working tree.
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = reproduce(script, scratch.path());
    assert_eq!(
        read(&checkout.join("train.py")),
        "print('v2, not committed')\n"
    );

    // A second task in the same project reuses it; an untracked entry script travels in the diff.
    let id2 = server.create(&[
        "--project",
        "Folder Project",
        "--name",
        "untracked entry",
        "--folder",
        repo_arg,
        "--script",
        "tools/extra.py",
        "--cwd",
        "lib",
        "--packages",
        "requests",
    ]);
    let t2 = server.task(&id2);
    assert_eq!(t2["project"], t["project"]);
    assert_eq!(t2["script"]["working_dir"], json!("lib"));
    assert_eq!(t2["script"]["entry_point"], json!("../tools/extra.py"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = reproduce(&t2["script"], scratch.path());
    assert_eq!(
        read(&checkout.join("tools/extra.py")),
        "print('untracked')\n"
    );
    assert_eq!(
        read(&checkout.join("train.py")),
        "print('v2, not committed')\n"
    );
    let projects = server.call("projects.get_all", json!({"name": "^Folder Project$"}));
    assert_eq!(projects["projects"].as_array().map(Vec::len), Some(1));
}

#[test]
fn create_from_clone_uses_origin_and_carries_unpushed_commits_in_the_diff() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let upstream = work.path().join("upstream.git");
    std::fs::create_dir_all(&upstream).expect("mkdir");
    git(&upstream, &["init", "-q", "--bare"]);
    let clone = work.path().join("clone");
    git(
        work.path(),
        &["clone", "-q", upstream.to_str().expect("utf-8"), "clone"],
    );
    write(&clone.join("src/train.py"), "print('pushed')\n");
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "-q", "-m", "pushed"]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
    git(&clone, &["branch", "-q", "--set-upstream-to=origin/main"]);
    let pushed = git(&clone, &["rev-parse", "HEAD"]);
    write(&clone.join("src/train.py"), "print('local commit')\n");
    git(&clone, &["commit", "-q", "-am", "local"]);
    write(&clone.join("src/new.txt"), "staged\n");
    git(&clone, &["add", "src/new.txt"]);

    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "from clone",
        "--folder",
        clone.to_str().expect("utf-8"),
        "--script",
        clone.join("src/train.py").to_str().expect("utf-8"),
        "--packages",
        "numpy",
    ]);
    let script = server.task(&id)["script"].clone();
    assert_eq!(script["repository"], json!(upstream.to_str()), "{script}");
    assert_eq!(script["version_num"], json!(pushed));
    assert_eq!(script["branch"], json!("main"));
    assert_eq!(script["entry_point"], json!("src/train.py"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = reproduce(&script, scratch.path());
    assert_eq!(
        read(&checkout.join("src/train.py")),
        "print('local commit')\n"
    );
    assert_eq!(read(&checkout.join("src/new.txt")), "staged\n");

    // A token in the origin URL is not stored on the task.
    git(
        &clone,
        &[
            "remote",
            "set-url",
            "origin",
            "https://user:s3cret@git.example.com/org/repo.git",
        ],
    );
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "token url",
        "--folder",
        clone.to_str().expect("utf-8"),
        "--script",
        "src/train.py",
        "--packages",
        "numpy",
    ]);
    assert_eq!(
        server.task(&id)["script"]["repository"],
        json!("https://git.example.com/org/repo.git")
    );
}

#[test]
fn create_from_folder_outside_git_stores_the_literal_script() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("plain");
    let text = "import sys\nprint('hello', sys.argv)\n";
    write(&dir.join("hello.py"), text);
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "literal",
        "--folder",
        dir.to_str().expect("utf-8"),
        "--script",
        "hello.py",
    ]);
    let script = server.task(&id)["script"].clone();
    assert_eq!(script["repository"], json!(""), "{script}");
    assert_eq!(script["diff"], json!(text));
    assert_eq!(script["entry_point"], json!("hello.py"));
    assert_eq!(script["working_dir"], json!("."));
    assert_eq!(script["binary"], json!("python3"));

    // A shell script gets bash.
    write(&dir.join("run.sh"), "echo hi\n");
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "shell",
        "--script",
        dir.join("run.sh").to_str().expect("utf-8"),
    ]);
    assert_eq!(server.task(&id)["script"]["binary"], json!("/bin/bash"));

    // A missing script is an error, and nothing is created.
    let err = server.fails(&[
        "task",
        "create",
        "--project",
        "P",
        "--name",
        "missing",
        "--folder",
        dir.to_str().expect("utf-8"),
        "--script",
        "nope.py",
    ]);
    assert!(err.contains("script nope.py not found"), "{err}");
}

#[test]
fn create_from_repo_with_branch_docker_and_queue() {
    let server = Server::start();
    let qid = server.ok(&["queue", "create", "gpu-queue"]);
    let qid = qid.lines().last().unwrap_or_default().trim().to_string();
    let id = server.create(&[
        "--project",
        "Remote/Sub",
        "--name",
        "from repo",
        "--repo",
        "https://github.com/example/project.git",
        "--branch",
        "dev",
        "--script",
        "./src/train.py",
        "--cwd",
        "src",
        "--docker",
        "python:3.11",
        "--docker-args",
        "--ipc=host -e A=1",
        "--type",
        "data_processing",
        "--tags",
        "one",
        "two",
        "--queue",
        "gpu-queue",
    ]);
    let t = server.task(&id);
    let script = &t["script"];
    assert_eq!(
        script["repository"],
        json!("https://github.com/example/project.git")
    );
    assert_eq!(script["branch"], json!("dev"));
    assert!(
        script["version_num"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(script["entry_point"], json!("train.py"));
    assert_eq!(script["working_dir"], json!("src"));
    assert_eq!(script["binary"], json!("python3"));
    assert_eq!(script["diff"], json!(""));
    assert_eq!(t["container"]["image"], json!("python:3.11"));
    assert_eq!(t["container"]["arguments"], json!("--ipc=host -e A=1"));
    assert_eq!(t["type"], json!("data_processing"));
    assert_eq!(t["tags"], json!(["one", "two"]));
    assert_eq!(t["status"], json!("queued"));
    assert_eq!(t["execution"]["queue"], json!(qid));
    assert_eq!(server.queue_entries(&qid), vec![id.clone()]);

    // --commit instead of --branch.
    let id2 = server.create(&[
        "--project",
        "Remote/Sub",
        "--name",
        "at commit",
        "--repo",
        "git@github.com:example/project.git",
        "--commit",
        "0123456789abcdef0123456789abcdef01234567",
        "--script",
        "train.sh",
    ]);
    let s2 = server.task(&id2)["script"].clone();
    assert_eq!(
        s2["version_num"],
        json!("0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(s2["binary"], json!("/bin/bash"));
    assert_eq!(s2["working_dir"], json!("."));

    // A module entry point.
    let id3 = server.create(&[
        "--project",
        "Remote/Sub",
        "--name",
        "module",
        "--repo",
        "https://github.com/example/project.git",
        "--module",
        "pkg.train --epochs 3",
    ]);
    let s3 = server.task(&id3)["script"].clone();
    assert_eq!(s3["entry_point"], json!("-m pkg.train --epochs 3"));
    assert_eq!(s3["binary"], json!("python3"));

    // An unknown queue: a clear error, and no task left behind.
    let err = server.fails(&[
        "task",
        "create",
        "--project",
        "Remote/Sub",
        "--name",
        "never created",
        "--repo",
        "https://github.com/example/project.git",
        "--script",
        "train.py",
        "--queue",
        "nosuch",
    ]);
    assert!(
        err.contains(
            "queue nosuch does not exist; create it with `clearml-agent queue create nosuch`"
        ),
        "{err}"
    );
    let left = server.call("tasks.get_all", json!({"name": "^never created$"}));
    assert_eq!(left["tasks"], json!([]));

    // Malformed --args.
    let err = server.fails(&[
        "task",
        "create",
        "--project",
        "P",
        "--name",
        "bad args",
        "--repo",
        "https://github.com/example/project.git",
        "--script",
        "train.py",
        "--args",
        "novalue",
    ]);
    assert!(err.contains("key=value"), "{err}");
}

// ------------------------------------------------------------------------------------------
// enqueue, abort, show, list
