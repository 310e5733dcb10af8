//! `clearml-agent init` driven through a pseudo-terminal, as a person would use it: paste the
//! web app's credentials block, press Enter on the proposed addresses, answer the git and
//! package index questions. The keys are checked against our embedded server. The terminal
//! echoes typed input as a real one does, so the transcript is what the user would see, and
//! the secrets must not be in it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clearml_config::{Config, Env, LoadOptions};
use nix::sys::termios::{LocalFlags, tcgetattr};

const KEY: &str = "WIZARDKEY0123456789";
const SECRET: &str = "S3cret-never-on-screen-7Hq2";
const GIT_PASS: &str = "GitToken-not-shown-x81";

mod common;
use common::TestServer;

fn server() -> TestServer {
    common::in_process_server(KEY, SECRET)
}

/// The program on a pseudo-terminal, with everything it wrote kept.
struct Term {
    child: Child,
    master: File,
    out: Arc<Mutex<Vec<u8>>>,
    seen: usize,
    reader: Option<JoinHandle<()>>,
}

impl Term {
    fn spawn(home: &Path, args: &[&str]) -> Term {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = pty.slave;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clearml-agent"));
        cmd.env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("init")
            .args(args)
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("spawn");
        // Our copies of the terminal's far end must close, so that reading ends with the child.
        drop(cmd);
        let master = File::from(pty.master);
        let mut reading = master.try_clone().expect("dup");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reading.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Term {
            child,
            master,
            out,
            seen: 0,
            reader: Some(reader),
        }
    }

    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    /// Waits for `needle` after what was matched before.
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let out = self.out.lock().expect("lock");
                let hay = &out[self.seen..];
                if let Some(i) = hay
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                {
                    self.seen += i + needle.len();
                    return;
                }
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "did not see {needle:?}; the terminal shows:\n{}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).expect("write");
        self.master.flush().expect("flush");
    }

    /// Waits for the program to end; its status, what it showed, and whether the terminal
    /// echoes again.
    fn finish(mut self) -> (ExitStatus, String, bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not end; the terminal shows:\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let echo = tcgetattr(&self.master)
            .map(|t| t.local_flags.contains(LocalFlags::ECHO))
            .unwrap_or(false);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.transcript(), echo)
    }
}

fn load(path: &Path, home: &Path) -> Config {
    Config::load(&LoadOptions {
        config_file: Some(path.to_path_buf()),
        env: Env::from_pairs([("HOME", home.display().to_string())]),
    })
    .expect("the written file loads")
}

fn web_block(s: &TestServer, secret: &str) -> String {
    format!(
        "api {{\n  web_server: http://127.0.0.1:1\n  api_server: {}\n  files_server: {}\n  \
         credentials {{\n    \"access_key\" = \"{KEY}\"\n    \"secret_key\" = \"{secret}\"\n  }}\n}}\n",
        s.api, s.files
    )
}

/// Enter on the three address questions, with the pasted values proposed.
fn accept_hosts(t: &mut Term, s: &TestServer) {
    t.expect("WEB Host configured to: [http://127.0.0.1:1] ");
    t.send("\r");
    t.expect(&format!("API Host configured to: [{}] ", s.api));
    t.send("\r");
    t.expect(&format!("File Store Host configured to: [{}] ", s.files));
    t.send("\r");
}

#[test]
fn paste_accept_defaults_answer_git_and_index() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let mut t = Term::spawn(home.path(), &[]);
    t.expect("CLEARML-AGENT setup process");
    t.expect("Paste copied configuration here:");
    t.send(&web_block(&s, SECRET));
    // The paste is shown back with the secret hidden.
    t.expect("\"secret_key\" = \"********\"");
    t.expect("Detected credentials key=\"");
    accept_hosts(&mut t, &s);
    t.expect("Credentials verified!");
    t.expect(
        "Enter git username for repository cloning (leave blank for SSH key authentication): [] ",
    );
    t.send("gituser\r");
    t.expect("Enter password for user 'gituser': ");
    t.send(&format!("{GIT_PASS}\r"));
    t.expect("Git repository cloning will be using user=gituser password=********");
    t.expect("Enter additional artifact repository (extra-index-url)");
    t.send("https://pypi.example.org/simple\r");
    t.expect("Another artifact repository?");
    t.send("\r");
    t.expect("New configuration stored in ");
    t.expect("CLEARML-AGENT setup completed successfully.");
    let (status, shown, echo) = t.finish();
    assert!(status.success(), "{shown}");
    assert!(echo, "the terminal echoes again");
    assert!(!shown.contains(SECRET), "the secret was shown:\n{shown}");
    assert!(
        !shown.contains(GIT_PASS),
        "the git password was shown:\n{shown}"
    );

    let path = home.path().join("clearml.conf");
    let mode = std::fs::metadata(&path)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = load(&path, home.path());
    let api = config.api().expect("api settings");
    assert_eq!(api.web_server.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(api.api_server.as_deref(), Some(s.api.as_str()));
    // The pasted file server is kept, not guessed again.
    assert_eq!(api.files_server.as_deref(), Some(s.files.as_str()));
    assert_eq!(api.access_key.as_deref(), Some(KEY));
    assert_eq!(api.secret_key.as_deref(), Some(SECRET));
    let agent = config.agent().expect("agent settings");
    assert_eq!(agent.git_user.as_deref(), Some("gituser"));
    assert_eq!(agent.git_pass.as_deref(), Some(GIT_PASS));
    assert_eq!(
        agent.package_manager.extra_index_url,
        vec!["https://pypi.example.org/simple".to_string()]
    );
    // The commented defaults came along.
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("\nagent {\n") && text.contains("\nsdk {\n"));
    assert!(text.contains("# where task venvs are built"));
}

#[test]
fn crlf_and_one_line_pastes_work_too() {
    let s = server();
    let block = web_block(&s, SECRET);
    let json = format!(
        "{{\"api\": {{\"web_server\": \"http://127.0.0.1:1\", \"api_server\": \"{}\", \
         \"files_server\": \"{}\", \"credentials\": {{\"access_key\": \"{KEY}\", \
         \"secret_key\": \"{SECRET}\"}}}}}}\n",
        s.api, s.files
    );
    let one_line = format!(
        "api {{ web_server: http://127.0.0.1:1, api_server: {}, files_server: {}, credentials \
         {{\"access_key\" = \"{KEY}\", \"secret_key\" = \"{SECRET}\"}} }}\n",
        s.api, s.files
    );
    for paste in [
        block.replace('\n', "\r\n"),
        json.clone(),
        json.replace('\n', "\r\n"),
        one_line,
    ] {
        let home = tempfile::tempdir().expect("home");
        let mut t = Term::spawn(home.path(), &[]);
        t.expect("Paste copied configuration here:");
        t.send(&paste);
        t.expect("Detected credentials");
        // A Windows line end is one Enter: no question is answered by the paste's leftovers.
        accept_hosts(&mut t, &s);
        t.expect("Credentials verified!");
        t.expect("Enter git username");
        t.send("\r");
        t.expect("Enter additional artifact repository");
        t.send("\r");
        let (status, shown, _) = t.finish();
        assert!(status.success(), "{paste:?}:\n{shown}");
        assert!(!shown.contains(SECRET), "{paste:?}:\n{shown}");
        assert!(!shown.contains("Enter password for user"));
        let config = load(&home.path().join("clearml.conf"), home.path());
        let api = config.api().expect("api");
        assert_eq!(api.secret_key.as_deref(), Some(SECRET), "{paste:?}");
        assert_eq!(api.files_server.as_deref(), Some(s.files.as_str()));
        let agent = config.agent().expect("agent");
        assert_eq!(agent.git_user, None);
        assert!(agent.package_manager.extra_index_url.is_empty());
    }
}

#[test]
fn a_refused_key_is_explained_and_can_be_typed_again() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let mut t = Term::spawn(home.path(), &[]);
    t.expect("Paste copied configuration here:");
    t.send(&web_block(&s, "WrongSecret-also-hidden"));
    accept_hosts(&mut t, &s);
    t.expect("Error: could not verify credentials: the server at");
    t.expect("refused the access key and secret");
    t.expect("Enter user access key: ");
    t.send(&format!("{KEY}\r"));
    t.expect("Enter user secret: ");
    t.send(&format!("{SECRET}\r"));
    t.expect("Credentials verified!");
    t.expect("Enter git username");
    t.send("\r");
    t.expect("Enter additional artifact repository");
    t.send("\r");
    t.expect("CLEARML-AGENT setup completed successfully.");
    let (status, shown, _) = t.finish();
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains(SECRET) && !shown.contains("WrongSecret"),
        "{shown}"
    );
    let config = load(&home.path().join("clearml.conf"), home.path());
    assert_eq!(
        config.api().expect("api").secret_key.as_deref(),
        Some(SECRET)
    );
}

#[test]
fn ctrl_c_at_a_hidden_prompt_restores_the_terminal_and_writes_nothing() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let mut t = Term::spawn(home.path(), &[]);
    t.expect("Paste copied configuration here:");
    t.send(&web_block(&s, SECRET));
    accept_hosts(&mut t, &s);
    t.expect("Enter git username");
    t.send("someone\r");
    t.expect("Enter password for user 'someone': ");
    t.send("half-typed\x03");
    t.expect("Setup interrupted; nothing was written.");
    let (status, shown, echo) = t.finish();
    assert_eq!(status.code(), Some(130), "{shown}");
    assert!(echo, "the terminal must echo again after Ctrl-C");
    assert!(!shown.contains("half-typed"));
    assert!(!home.path().join("clearml.conf").exists());
}

#[test]
fn a_wrong_address_is_asked_again_with_a_reason() {
    let s = server();
    // Bound, then closed: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let home = tempfile::tempdir().expect("home");
    let mut t = Term::spawn(home.path(), &["--web-host", "http://127.0.0.1:1"]);
    t.expect("Paste copied configuration here:");
    t.send(&format!(
        "api {{ api_server: http://{dead}, credentials {{\"access_key\": \"{KEY}\", \"secret_key\": \"{SECRET}\"}} }}\n"
    ));
    t.expect("WEB Host configured to: http://127.0.0.1:1 (from --web-host)");
    t.expect(&format!("API Host configured to: [http://{dead}] "));
    t.send("\r");
    t.expect("File Store Host configured to: ");
    t.send(&format!("{}\r", s.files));
    t.expect("Error: could not verify credentials: cannot reach the API server");
    t.expect("nothing listens there");
    t.expect(&format!("API Host configured to: [http://{dead}] "));
    t.send(&format!("{}\r", s.api));
    t.expect("Credentials verified!");
    t.expect("Enter git username");
    t.send("\r");
    t.expect("Enter additional artifact repository");
    t.send("\r");
    let (status, shown, _) = t.finish();
    assert!(status.success(), "{shown}");
    let config = load(&home.path().join("clearml.conf"), home.path());
    assert_eq!(
        config.api().expect("api").api_server.as_deref(),
        Some(s.api.as_str())
    );
}
