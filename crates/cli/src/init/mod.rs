//! `clearml-agent init`: the setup wizard, step by step as the ClearML docs show it.
//!
//! Paste the credentials block from the web app, confirm the three server addresses, have
//! the keys checked against the server, give git credentials and extra package indexes, and
//! get a `clearml.conf` with mode 0600 holding the answers plus a commented copy of the agent
//! and SDK defaults.
//!
//! Where the Python wizard falls short, this one differs on purpose: secrets (the pasted
//! secret key, a git password) never reach the screen; `CLEARML_CONFIG_FILE` is honoured; a
//! pasted `files_server` is kept rather than guessed again; a failed check says why (bad keys,
//! server unreachable, TLS) and ends with a non-zero exit code. An existing file is never
//! edited unasked: the wizard prints the agent settings to add, and
//! `--append-agent-section` appends only the missing ones after making a backup. Every answer
//! can come from a flag or a variable, for provisioning scripts.

mod conffile;
mod hosts;
mod input;
mod paste;
mod section;
mod verify;

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use clearml_config::{Env, LoadOptions};

use conffile::{AgentAnswers, Answers, Existing, State};
use hosts::HostUrl;
use input::{InputError, Io};
use paste::{BlockTracker, Pasted};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The API server's address, e.g. https://api.clear.ml or http://host:8008
    /// [env: CLEARML_API_HOST]
    #[arg(long, value_name = "URL")]
    pub api_host: Option<String>,

    /// The web app's address, e.g. https://app.clear.ml or http://host:8080
    /// [env: CLEARML_WEB_HOST]
    #[arg(long, value_name = "URL")]
    pub web_host: Option<String>,

    /// The file server's address, e.g. https://files.clear.ml or http://host:8081
    /// [env: CLEARML_FILES_HOST]
    #[arg(long, value_name = "URL")]
    pub files_host: Option<String>,

    /// The access key of the credentials [env: CLEARML_API_ACCESS_KEY]
    #[arg(long, value_name = "KEY")]
    pub access_key: Option<String>,

    /// The secret key; other users can see command lines, so prefer the variable
    /// [env: CLEARML_API_SECRET_KEY]
    #[arg(long, value_name = "SECRET")]
    pub secret_key: Option<String>,

    /// Git user for cloning over https; empty means SSH keys [env: CLEARML_AGENT_GIT_USER]
    #[arg(long, value_name = "USER")]
    pub git_user: Option<String>,

    /// Git password or personal access token; prefer the variable
    /// [env: CLEARML_AGENT_GIT_PASS]
    #[arg(long, value_name = "PASSWORD")]
    pub git_pass: Option<String>,

    /// An extra Python package index (repeat for more)
    /// [env: CLEARML_AGENT_EXTRA_INDEX_URL, space-separated]
    #[arg(long, value_name = "URL")]
    pub extra_index_url: Vec<String>,

    /// Do not check the credentials against the server
    #[arg(long)]
    pub no_verify: bool,

    /// Ask nothing: take answers from flags and variables, defaults for the rest, and fail
    /// if the credentials or an address cannot be known
    #[arg(long)]
    pub non_interactive: bool,

    /// When the configuration file exists, append the agent settings it lacks (after
    /// making a backup) instead of only printing them
    #[arg(long)]
    pub append_agent_section: bool,
}

pub fn run(opts: &LoadOptions, args: &InitArgs) -> anyhow::Result<ExitCode> {
    let mut io = Io::new(!args.non_interactive)?;
    match wizard(opts, args, &mut io) {
        Err(e) if matches!(e.downcast_ref(), Some(InputError::Interrupted(_))) => {
            println!("\nSetup interrupted; nothing was written.");
            Ok(ExitCode::from(130))
        }
        other => other,
    }
}

/// An answer given on the command line or in the environment, and where it came from.
struct Given {
    value: String,
    from: String,
}

fn given(flag: &Option<String>, flag_name: &str, env: &Env, vars: &[&str]) -> Option<Given> {
    if let Some(v) = flag {
        return Some(Given {
            value: v.trim().to_string(),
            from: flag_name.to_string(),
        });
    }
    env.first(vars).map(|(var, v)| Given {
        value: v.trim().to_string(),
        from: var.to_string(),
    })
}

/// The agent answers given up front (`None`: ask).
struct AgentGiven {
    git_user: Option<Given>,
    git_pass: Option<String>,
    extra_index_urls: Option<Vec<String>>,
}

impl AgentGiven {
    fn new(args: &InitArgs, env: &Env) -> AgentGiven {
        let extra_index_urls = if !args.extra_index_url.is_empty() {
            Some(
                args.extra_index_url
                    .iter()
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
            )
        } else {
            env.get("CLEARML_AGENT_EXTRA_INDEX_URL")
                .map(|v| v.split_whitespace().map(str::to_string).collect())
        };
        AgentGiven {
            git_user: given(
                &args.git_user,
                "--git-user",
                env,
                &["CLEARML_AGENT_GIT_USER"],
            ),
            git_pass: args
                .git_pass
                .clone()
                .or_else(|| env.get("CLEARML_AGENT_GIT_PASS").map(str::to_string)),
            extra_index_urls,
        }
    }
}

fn wizard(opts: &LoadOptions, args: &InitArgs, io: &mut Io) -> anyhow::Result<ExitCode> {
    let env = &opts.env;
    println!("CLEARML-AGENT setup process");
    let target = conffile::locate(opts)?;
    let agent_given = AgentGiven::new(args, env);
    if target.state == State::Existing {
        let existing = Existing::read(&target.path, env)?;
        println!(
            "Configuration file already exists: {}",
            target.path.display()
        );
        return if args.append_agent_section {
            append_agent_section(io, &existing, &agent_given, env)
        } else {
            show_agent_section(&existing, &agent_given)
        };
    }
    if args.append_agent_section {
        println!(
            "There is no configuration at {} yet: it is created now.",
            target.path.display()
        );
    }

    let (mut access_key, mut secret_key, pasted) = credentials(io, args, env)?;
    let mut hosts = resolve_hosts(io, args, env, &pasted)?;
    println!(
        "\nClearML Hosts configuration:\nWeb App: {}\nAPI: {}\nFile Store: {}\n",
        hosts.web, hosts.api, hosts.files
    );
    warn_plain_http(&hosts);
    if args.no_verify {
        println!("Not verifying the credentials (--no-verify).");
    } else if !verify_with_retry(io, env, &mut hosts, &mut access_key, &mut secret_key)? {
        eprintln!(
            "Exiting setup without creating configuration file (use --no-verify to write it \
             without the check)"
        );
        return Ok(ExitCode::FAILURE);
    }

    let (git_user, git_pass) = ask_git(io, &agent_given)?;
    let extra_index_urls = ask_index(io, &agent_given)?;
    let answers = Answers {
        web: hosts.web,
        api: hosts.api,
        files: hosts.files,
        access_key,
        secret_key,
        agent: AgentAnswers {
            git_user: Some(git_user),
            git_pass: Some(git_pass),
            extra_index_urls: Some(extra_index_urls),
        },
    };
    let text = conffile::render_new(&answers)?;
    conffile::write_new(&target, &text, env)?;
    println!("\nNew configuration stored in {}", target.path.display());
    println!("CLEARML-AGENT setup completed successfully.");
    Ok(ExitCode::SUCCESS)
}

fn warn_plain_http(addresses: &Hosts) {
    let plain: Vec<&str> = [&addresses.web, &addresses.api, &addresses.files]
        .into_iter()
        .filter(|u| hosts::is_plain_http_off_host(u))
        .map(String::as_str)
        .collect();
    if !plain.is_empty() {
        eprintln!(
            "Warning: {} use{} http, not https: the credentials and everything sent there \
             cross the network unencrypted. Use https unless this network is trusted.\n",
            plain.join(", "),
            if plain.len() == 1 { "s" } else { "" }
        );
    }
}

/// Logs in with the keys. After a failure the user may correct the keys (when refused) or
/// the API address (otherwise) once, as the Python wizard allows two tries. False: give up.
fn verify_with_retry(
    io: &mut Io,
    env: &Env,
    addresses: &mut Hosts,
    access_key: &mut String,
    secret_key: &mut String,
) -> anyhow::Result<bool> {
    let verify_cert = env
        .get("CLEARML_API_HOST_VERIFY_CERT")
        .and_then(clearml_hocon::parse_bool_str)
        .unwrap_or(true);
    for attempt in 1..=2 {
        println!("Verifying credentials ...");
        let failure = match verify::verify(&addresses.api, access_key, secret_key, verify_cert) {
            Ok(()) => {
                println!("Credentials verified!");
                return Ok(true);
            }
            Err(f) => f,
        };
        eprintln!(
            "Error: could not verify credentials: {}",
            failure.explain(&addresses.api)
        );
        if attempt == 2 || !io.asks() {
            break;
        }
        if failure.is_credentials() {
            println!("Please enter the credentials again.");
            let Some((k, s)) = manual_credentials(io)? else {
                break;
            };
            (*access_key, *secret_key) = (k, s);
        } else {
            addresses.api = ask_url(io, "API Host", Some(addresses.api.clone()), "--api-host")?;
        }
    }
    Ok(false)
}

/// The keys: from flags/variables, else from the paste, else typed in.
fn credentials(
    io: &mut Io,
    args: &InitArgs,
    env: &Env,
) -> anyhow::Result<(String, String, Pasted)> {
    let key_given = given(
        &args.access_key,
        "--access-key",
        env,
        &["CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY"],
    )
    .filter(|g| !g.value.is_empty());
    let secret_given = given(
        &args.secret_key,
        "--secret-key",
        env,
        &["CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY"],
    )
    .filter(|g| !g.value.is_empty());
    let mut pasted = Pasted::default();
    if (key_given.is_none() || secret_given.is_none()) && io.asks() {
        pasted = read_paste(io)?;
    }
    let from = match (&key_given, &secret_given) {
        (Some(k), Some(s)) if k.from == s.from => Some(k.from.clone()),
        (Some(k), Some(s)) => Some(format!("{} and {}", k.from, s.from)),
        _ => None,
    };
    let key = key_given.map(|g| g.value).or(pasted.access_key.clone());
    let secret = secret_given.map(|g| g.value).or(pasted.secret_key.clone());
    let (key, secret) = match (key, secret) {
        (Some(k), Some(s)) => (k, s),
        (key, secret) => {
            if !io.asks() {
                bail!(
                    "no credentials: pass --access-key and --secret-key, or set \
                     CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY"
                );
            }
            println!("Could not parse credentials, please try entering them manually.");
            let (k, s) = manual_credentials(io)?
                .context("no credentials were entered (standard input ended)")?;
            (key.unwrap_or(k), secret.unwrap_or(s))
        }
    };
    match from {
        Some(from) => println!(
            "Using credentials from {from}: key=\"{}\" secret=\"********\"",
            stars(&key)
        ),
        None => println!(
            "Detected credentials key=\"{}\" secret=\"********\"",
            stars(&key)
        ),
    }
    Ok((key, secret, pasted))
}

/// The access key hidden, keeping its length (the seed shows it so); the secret is always
/// shown as eight stars, which gives away nothing.
fn stars(s: &str) -> String {
    "*".repeat(s.chars().count().clamp(4, 40))
}

fn read_paste(io: &mut Io) -> anyhow::Result<Pasted> {
    let prompt = "\nCreate credentials in your ClearML web app: open Settings > Workspace, press \
                  \"Create new credentials\", then \"Copy to clipboard\".\n(No server yet? Run \
                  `clearml-agent server`, or sign up at https://app.clear.ml.)\n\nPaste copied \
                  configuration here:\n";
    let tty = io.is_tty();
    let mut text = String::new();
    let mut tracker = BlockTracker::default();
    io.paste(prompt, |line| {
        let line = line.trim_end_matches('\r');
        if tty {
            // The terminal did not echo the paste; show it back without the secret.
            println!("{}", paste::mask_secrets(line));
        }
        if line.trim().is_empty() {
            // Blank lines inside the block are not its end.
            return tracker.inside();
        }
        text.push_str(line);
        text.push('\n');
        tracker.feed(line);
        !tracker.complete()
    })?;
    Ok(paste::parse(&text).unwrap_or_default())
}

/// The keys typed in; `None` when input ends first.
fn manual_credentials(io: &mut Io) -> anyhow::Result<Option<(String, String)>> {
    loop {
        let key = io.line("Enter user access key: ")?;
        let secret = match &key {
            Some(_) => io.secret("Enter user secret: ")?,
            None => None,
        };
        match (key, secret) {
            (Some(k), Some(s)) if !k.trim().is_empty() && !s.trim().is_empty() => {
                return Ok(Some((k.trim().to_string(), s.trim().to_string())));
            }
            (Some(_), Some(_)) => println!("Both the access key and the secret are needed."),
            _ => return Ok(None),
        }
    }
}

struct Hosts {
    web: String,
    api: String,
    files: String,
}

fn parsed(s: Option<&str>) -> Option<String> {
    s.and_then(HostUrl::parse).map(|u| u.to_string())
}

fn derived(s: &str) -> Option<hosts::Derived> {
    HostUrl::parse(s).as_ref().and_then(hosts::derive)
}

/// The three addresses: given ones are taken as they are; the others are asked with a
/// default from the paste or guessed from the addresses known so far.
fn resolve_hosts(
    io: &mut Io,
    args: &InitArgs,
    env: &Env,
    pasted: &Pasted,
) -> anyhow::Result<Hosts> {
    let check = |g: Option<Given>| -> anyhow::Result<Option<(String, String)>> {
        g.filter(|g| !g.value.is_empty())
            .map(|g| {
                HostUrl::parse(&g.value)
                    .map(|u| (u.to_string(), g.from.clone()))
                    .with_context(|| format!("{} {:?} is not an http(s) address", g.from, g.value))
            })
            .transpose()
    };
    let g_web = check(given(
        &args.web_host,
        "--web-host",
        env,
        &["CLEARML_WEB_HOST", "TRAINS_WEB_HOST"],
    ))?;
    let g_api = check(given(
        &args.api_host,
        "--api-host",
        env,
        &["CLEARML_API_HOST", "TRAINS_API_HOST"],
    ))?;
    let g_files = check(given(
        &args.files_host,
        "--files-host",
        env,
        &["CLEARML_FILES_HOST", "TRAINS_FILES_HOST"],
    ))?;
    let p_web = parsed(pasted.web.as_deref());
    let p_api = parsed(pasted.api.as_deref());
    let p_files = parsed(pasted.files.as_deref());
    let known_api = g_api.as_ref().map(|g| g.0.clone()).or(p_api.clone());

    let mut web = match &g_web {
        Some((w, from)) => {
            announce("WEB Host", w, from);
            w.clone()
        }
        None => {
            let default = p_web
                .clone()
                .or_else(|| known_api.as_deref().and_then(derived).map(|d| d.web));
            let default = match (default, &known_api) {
                (Some(d), _) => Some(d),
                (None, None) => {
                    if io.asks() {
                        println!(
                            "\nEnter the address of the ClearML web app, for example \
                             http://localhost:8080 or https://app.clear.ml"
                        );
                    }
                    Some("https://app.clear.ml".to_string())
                }
                (None, Some(_)) => None,
            };
            let entered = ask_url(io, "WEB Host", default, "--web-host")?;
            // An API address typed where the web app's was asked: use the web app's.
            match derived(&entered) {
                Some(d) if d.web != entered => {
                    if let Some(note) = &d.note {
                        println!("{note}");
                    }
                    d.web
                }
                _ => entered,
            }
        }
    };

    // The pasted addresses go together; once the web address is another, guess afresh.
    let paste_fits = p_web.is_none() || p_web.as_deref() == Some(web.as_str());
    let mut api_default = paste_fits.then(|| p_api.clone()).flatten();
    let mut files_default = paste_fits.then(|| p_files.clone()).flatten();
    if api_default.is_none() || files_default.is_none() {
        let mut guess = derived(&web);
        let no_port = HostUrl::parse(&web).is_some_and(|u| u.port().is_none());
        if guess.is_none() && no_port && g_web.is_none() && io.asks() {
            let answer = io
                .line("Host port not detected, do you wish to use the default 8080 port n/[y]? ")?
                .unwrap_or_default();
            if matches!(answer.trim().to_lowercase().as_str(), "" | "y" | "yes")
                && let Some(u) = HostUrl::parse(&web)
            {
                let d = hosts::with_default_ports(&u);
                web = d.web.clone();
                guess = Some(d);
            }
        }
        if let Some(g) = guess {
            api_default = api_default.or(Some(g.api));
            files_default = files_default.or(Some(g.files));
        }
    }

    let api = match &g_api {
        Some((a, from)) => {
            announce("API Host", a, from);
            a.clone()
        }
        None => ask_url(io, "API Host", api_default, "--api-host")?,
    };
    let files = match &g_files {
        Some((f, from)) => {
            announce("File Store Host", f, from);
            f.clone()
        }
        None => {
            let default = files_default.or_else(|| derived(&api).map(|d| d.files));
            ask_url(io, "File Store Host", default, "--files-host")?
        }
    };
    Ok(Hosts { web, api, files })
}

fn announce(label: &str, value: &str, from: &str) {
    println!("{label} configured to: {value} (from {from})");
}

/// Asks for an address; Enter, `y` or `yes` keeps the default.
fn ask_url(
    io: &mut Io,
    label: &str,
    default: Option<String>,
    flag: &str,
) -> anyhow::Result<String> {
    loop {
        let prompt = match &default {
            Some(d) => format!("{label} configured to: [{d}] "),
            None => format!("{label} configured to: "),
        };
        let shown = io.asks();
        let Some(answer) = io.line(&prompt)? else {
            return match default {
                Some(d) => {
                    if !shown {
                        println!("{label} configured to: {d}");
                    }
                    Ok(d)
                }
                None => bail!("cannot tell the {label} address: pass {flag}"),
            };
        };
        let answer = answer.trim();
        if answer.is_empty()
            || answer.eq_ignore_ascii_case("y")
            || answer.eq_ignore_ascii_case("yes")
        {
            if let Some(d) = default {
                return Ok(d);
            }
            continue;
        }
        match HostUrl::parse(answer) {
            Some(u) => return Ok(u.to_string()),
            None => println!("{answer} is not an http(s) address; please try again."),
        }
    }
}

/// The git user and password: given, asked, or empty (SSH keys).
fn ask_git(io: &mut Io, g: &AgentGiven) -> anyhow::Result<(String, String)> {
    let user = match &g.git_user {
        Some(u) => {
            println!("Git user: {} (from {})", display_user(&u.value), u.from);
            u.value.clone()
        }
        None => io
            .line("Enter git username for repository cloning (leave blank for SSH key authentication): [] ")?
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    let pass = match &g.git_pass {
        Some(p) => p.clone(),
        None if user.is_empty() => String::new(),
        None => {
            if io.asks() {
                println!(
                    "A personal access token can be used as the password. To create one:\n  \
                     GitHub: https://github.com/settings/tokens\n  \
                     GitLab: https://gitlab.com/-/user_settings/personal_access_tokens\n  \
                     Bitbucket: https://bitbucket.org/account/settings/app-passwords/"
                );
            }
            io.secret(&format!("Enter password for user '{user}': "))?
                .unwrap_or_default()
        }
    };
    if !user.is_empty() {
        let shown = if pass.is_empty() {
            "(none)"
        } else {
            "********"
        };
        println!("Git repository cloning will be using user={user} password={shown}");
    }
    Ok((user, pass))
}

fn display_user(u: &str) -> &str {
    if u.is_empty() { "(none: SSH keys)" } else { u }
}

/// Extra package indexes: given, or asked one by one until a blank answer.
fn ask_index(io: &mut Io, g: &AgentGiven) -> anyhow::Result<Vec<String>> {
    let urls = match &g.extra_index_urls {
        Some(urls) => urls.clone(),
        None => {
            let mut urls = Vec::new();
            let mut prompt = "\nEnter additional artifact repository (extra-index-url) to use when \
                              installing python packages (leave blank if not required): ";
            while let Some(line) = io.line(prompt)? {
                let url = line.trim();
                if url.is_empty() {
                    break;
                }
                urls.push(url.to_string());
                prompt =
                    "Another artifact repository? (enter another url or leave blank if done): ";
            }
            urls
        }
    };
    if !urls.is_empty() {
        println!("The following artifact repositories will be added:");
        for u in &urls {
            println!("\t- {}", clearml_config::mask_url_passwords(u));
        }
    }
    Ok(urls)
}

/// The existing-file case without `--append-agent-section`: print what to add.
fn show_agent_section(existing: &Existing, g: &AgentGiven) -> anyhow::Result<ExitCode> {
    let answers = AgentAnswers {
        git_user: g.git_user.as_ref().map(|u| u.value.clone()),
        git_pass: g.git_pass.clone(),
        extra_index_urls: g.extra_index_urls.clone(),
    };
    match existing.additions(&answers, false)? {
        None => println!(
            "It already has every agent setting: nothing to add. The file was not changed."
        ),
        Some(text) => {
            println!(
                "The wizard does not edit or overwrite an existing configuration file; it was \
                 not changed.\nTo set up the agent, add the following to it, after the api \
                 section (or run `clearml-agent init --append-agent-section` to have the \
                 missing settings appended for you, after a backup copy is made):\n"
            );
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--append-agent-section` on an existing file: ask what it lacks, then append.
fn append_agent_section(
    io: &mut Io,
    existing: &Existing,
    g: &AgentGiven,
    env: &Env,
) -> anyhow::Result<ExitCode> {
    let mut answers = AgentAnswers::default();
    if existing.lacks("agent.git_user") || existing.lacks("agent.git_pass") {
        let (user, pass) = ask_git(io, g)?;
        answers.git_user = Some(user);
        answers.git_pass = Some(pass);
    }
    if existing.lacks("agent.package_manager.extra_index_url") {
        answers.extra_index_urls = Some(ask_index(io, g)?);
    }
    let Some(text) = existing.additions(&answers, true)? else {
        println!("It already has every agent setting: nothing to add. The file was not changed.");
        return Ok(ExitCode::SUCCESS);
    };
    let backup = existing.append(&text, env)?;
    println!("Backup of the original file: {}", backup.display());
    println!(
        "Appended the missing agent settings to {}",
        existing.path.display()
    );
    let wrote_password = answers.git_pass.as_deref().is_some_and(|p| !p.is_empty())
        && existing.lacks("agent.git_pass");
    if wrote_password && let Some(mode) = existing.readable_by_others() {
        eprintln!(
            "Warning: {} is readable by other users (mode {mode:o}) and now holds a git \
             password: run `chmod 600 {}`",
            existing.path.display(),
            existing.path.display()
        );
    }
    println!("CLEARML-AGENT setup completed successfully.");
    Ok(ExitCode::SUCCESS)
}
