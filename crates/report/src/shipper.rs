//! The console log shipper: task output and agent lines to `events.add_batch`, in order,
//! without loss or duplicates across server outages (see the crate documentation).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clearml_api::{ApiError, Client};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::console::{Piece, Splitter};
use crate::spool::{Chunk, Line, Spool, SpoolError, read_lines};

/// Most text in one log event (the Python agent's packet size).
const MAX_EVENT_TEXT: usize = 64 * 1024;
/// Starts every piece of a line that continues the previous event's last line (only lines
/// longer than an event are cut).
pub const CONTINUATION: &str = "\u{21aa} ";
/// Most bytes in one `events.add_batch` request.
const MAX_PACKET: usize = 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a shipper dropped without [`LogShipper::finish`] keeps delivering.
const DROP_GRACE: Duration = Duration::from_secs(30);

/// The level of a log line. Task output goes as [`Level::Debug`], like the Python agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    /// The value of the event's `level` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A line echo, called for every line as it is accepted.
pub type Echo = Box<dyn Fn(&str) + Send + Sync>;

/// How a [`LogShipper`] buffers and paces.
pub struct ShipperOptions {
    /// Undelivered text kept in memory before new lines go to the spool (default 8 MiB).
    pub memory_limit_bytes: usize,
    /// Where overflow files go (created when first needed).
    pub spool_dir: PathBuf,
    /// How long to gather lines before sending (default 300 ms).
    pub flush_interval: Duration,
    /// Called with each line's text (no line end) as it is accepted, e.g. to print it.
    pub echo: Option<Echo>,
}

impl ShipperOptions {
    /// The defaults, spooling to `spool_dir`.
    pub fn new(spool_dir: PathBuf) -> ShipperOptions {
        ShipperOptions {
            memory_limit_bytes: 8 * 1024 * 1024,
            spool_dir,
            flush_interval: Duration::from_millis(300),
            echo: None,
        }
    }
}

impl Default for ShipperOptions {
    /// The defaults, spooling under the system temp folder.
    fn default() -> Self {
        ShipperOptions::new(std::env::temp_dir().join("clearml-agent-spool"))
    }
}

/// What happened to the lines of a shipper. A "line" is one line of output, or a piece of a
/// line over 1 MiB that was still being written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipSummary {
    /// Lines the server stored.
    pub delivered_lines: u64,
    /// Lines the server refused with a 4xx answer (task deleted or locked, bad request),
    /// or lost because a spool file became unreadable.
    pub rejected_lines: u64,
    /// Lines not delivered by the deadline.
    pub undelivered_lines: u64,
    /// Where the undelivered lines were saved: one `events.add_batch` event per line of the
    /// file (json-lines, in order), ready to be sent again. `None` when nothing was left, or
    /// when the file could not be written (then the spool files are left in place).
    pub spool_file: Option<PathBuf>,
}

struct State {
    streams: [Splitter; 4],
    /// Accepted lines not yet sealed into events, oldest first.
    open: Vec<Line>,
    /// Text held in memory: open lines plus sealed, undelivered events.
    mem_bytes: usize,
    spool: Spool,
    accepted: u64,
    delivered: u64,
    rejected: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop the output of a running task.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues complete lines, in memory while they fit, on disk once they do not.
    fn accept(&self, st: &mut State, lines: Vec<Line>) {
        if lines.is_empty() {
            return;
        }
        st.accepted += lines.len() as u64;
        let cost: usize = lines.iter().map(Line::cost).sum();
        // Once lines are spooled, later ones follow them there, so none overtakes another.
        if st.spool.active() || st.mem_bytes + cost > self.limit {
            st.spool.append(lines);
        } else {
            st.mem_bytes += cost;
            st.open.extend(lines);
        }
    }

    fn summary(&self, spool_file: Option<PathBuf>) -> ShipSummary {
        let st = self.lock();
        ShipSummary {
            delivered_lines: st.delivered,
            rejected_lines: st.rejected,
            undelivered_lines: st
                .accepted
                .saturating_sub(st.delivered)
                .saturating_sub(st.rejected),
            spool_file,
        }
    }
}

/// Ships a task's console to the server in the background; see the crate documentation.
pub struct LogShipper {
    shared: Arc<Shared>,
    closing: watch::Sender<Option<Instant>>,
    task: Option<JoinHandle<ShipSummary>>,
    echo: Option<Echo>,
}

impl LogShipper {
    /// Starts shipping the console of `task_id` as `worker`. Must be called inside a Tokio
    /// runtime: the delivery runs as a spawned task.
    pub fn start(
        client: Arc<Client>,
        task_id: String,
        worker: String,
        opts: ShipperOptions,
    ) -> LogShipper {
        let limit = opts.memory_limit_bytes.max(1);
        let segment_bytes = (limit as u64 / 2).clamp(16 * 1024, 4 * 1024 * 1024);
        let spool = Spool::new(opts.spool_dir, spool_prefix(&task_id), segment_bytes);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                streams: Default::default(),
                open: Vec::new(),
                mem_bytes: 0,
                spool,
                accepted: 0,
                delivered: 0,
                rejected: 0,
            }),
            wake: Notify::new(),
            limit,
        });
        let (closing, closing_rx) = watch::channel(None);
        let sender = Sender {
            shared: shared.clone(),
            client,
            sealer: Sealer {
                task: task_id,
                worker,
                last_ts: 0,
                continuing: false,
            },
            sealed: VecDeque::new(),
            loaded_file: None,
            flush_interval: opts.flush_interval,
            closing: closing_rx,
            failing_since: None,
        };
        LogShipper {
            shared,
            closing,
            task: Some(tokio::spawn(sender.run())),
            echo: opts.echo,
        }
    }

    /// Raw console bytes, possibly ending inside a line (held until completed or
    /// [`LogShipper::finish`]). Never waits for the network and never drops a line.
    pub fn push_bytes(&self, level: Level, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut pieces = Vec::new();
        let echoed = {
            let mut st = self.shared.lock();
            st.streams[level.index()].push(bytes, &mut pieces);
            let echoed = self.texts_for_echo(&pieces);
            let lines = to_lines(level, pieces);
            self.shared.accept(&mut st, lines);
            echoed
        };
        self.after_accept(echoed);
    }

    /// One complete line generated by the agent (a text with `\n`s is several lines).
    pub fn line(&self, level: Level, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let pieces: Vec<Piece> = text
            .split('\n')
            .map(|t| Piece {
                text: t.to_string(),
                eol: true,
            })
            .collect();
        let echoed = {
            let mut st = self.shared.lock();
            let echoed = self.texts_for_echo(&pieces);
            self.shared.accept(&mut st, to_lines(level, pieces));
            echoed
        };
        self.after_accept(echoed);
    }

    /// Sends the held partial lines and everything not yet delivered, waiting at most
    /// `deadline`. What is still undelivered then is saved to a file (see [`ShipSummary`]).
    pub async fn finish(mut self, deadline: Duration) -> ShipSummary {
        self.close(deadline);
        let Some(task) = self.task.take() else {
            return self.shared.summary(None);
        };
        match task.await {
            Ok(summary) => summary,
            Err(e) => {
                tracing::error!("the console shipper stopped unexpectedly: {e}");
                self.shared.summary(None)
            }
        }
    }

    /// Completes the partial lines and tells the sender to finish by `now + deadline`.
    fn close(&self, deadline: Duration) {
        let echoed = {
            let mut st = self.shared.lock();
            let mut echoed = Vec::new();
            for level in [Level::Debug, Level::Info, Level::Warning, Level::Error] {
                if let Some(piece) = st.streams[level.index()].flush() {
                    let pieces = vec![piece];
                    echoed.extend(self.texts_for_echo(&pieces));
                    self.shared.accept(&mut st, to_lines(level, pieces));
                }
            }
            echoed
        };
        self.after_accept(echoed);
        self.closing.send_replace(Some(Instant::now() + deadline));
    }

    fn texts_for_echo(&self, pieces: &[Piece]) -> Vec<String> {
        match self.echo {
            Some(_) => pieces.iter().map(|p| p.text.clone()).collect(),
            None => Vec::new(),
        }
    }

    fn after_accept(&self, echoed: Vec<String>) {
        self.shared.wake.notify_one();
        if let Some(echo) = &self.echo {
            for text in &echoed {
                echo(text);
            }
        }
    }
}

impl Drop for LogShipper {
    /// Without [`LogShipper::finish`], delivery goes on in the background for a while.
    fn drop(&mut self) {
        if self.task.is_some() {
            self.close(DROP_GRACE);
        }
    }
}

fn to_lines(level: Level, pieces: Vec<Piece>) -> Vec<Line> {
    let ms = now_ms();
    pieces
        .into_iter()
        .map(|p| Line {
            level,
            ms,
            text: p.text,
            eol: p.eol,
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A file name prefix no other shipper (in this or another process) uses.
fn spool_prefix(task_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let task: String = task_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{task}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One log event, frozen when sealed: a retry sends exactly the same JSON.
struct Event {
    value: Value,
    json_len: usize,
    /// Its text bytes (what it counts against the memory limit).
    cost: usize,
    /// Lines that end in this event.
    lines: u64,
}

/// Joins lines into events and stamps them.
struct Sealer {
    task: String,
    worker: String,
    /// Every event gets a later timestamp than the previous one, so the server's
    /// time order is the shipping order.
    last_ts: i64,
    /// The last line was sent without its end (a piece of a line over 1 MiB).
    continuing: bool,
}

struct Building {
    level: Level,
    first_ms: i64,
    msg: String,
    lines: u64,
}

impl Sealer {
    /// Consecutive lines of one level become one event of up to 64 KiB of text; each line
    /// ends with `\n` in it. A line that fits in an event is never split: when it does not fit
    /// in the current one, that event is sealed and the line starts the next. Only a line
    /// longer than an event is cut (on character boundaries); every piece after the first
    /// starts with [`CONTINUATION`], and so does a line continuing a piece sent without end
    /// of line (see `console::MAX_PARTIAL`).
    fn seal(&mut self, lines: Vec<Line>, out: &mut VecDeque<Event>) {
        let mut cur: Option<Building> = None;
        for line in lines {
            let text = match (self.continuing, line.eol) {
                (true, true) => format!("{CONTINUATION}{}\n", line.text),
                (true, false) => format!("{CONTINUATION}{}", line.text),
                (false, true) => {
                    let mut t = line.text;
                    t.push('\n');
                    t
                }
                (false, false) => line.text,
            };
            self.continuing = !line.eol;
            let fits =
                |b: &Building| b.level == line.level && b.msg.len() + text.len() <= MAX_EVENT_TEXT;
            if let Some(b) = cur.take_if(|b| !fits(b)) {
                out.push_back(self.event(b));
            }
            if text.len() <= MAX_EVENT_TEXT {
                let b = cur.get_or_insert_with(|| Building {
                    level: line.level,
                    first_ms: line.ms,
                    msg: String::new(),
                    lines: 0,
                });
                b.msg.push_str(&text);
                b.lines += 1;
            } else {
                self.cut_long(line.level, line.ms, &text, &mut cur, out);
            }
            // The rest of an unfinished line starts a new event, marked as a continuation.
            if !line.eol
                && let Some(b) = cur.take()
            {
                out.push_back(self.event(b));
            }
        }
        if let Some(b) = cur {
            out.push_back(self.event(b));
        }
    }

    /// A line longer than an event (so `cur` is empty): full pieces go out, the last one
    /// stays in `cur` for the lines after it.
    fn cut_long(
        &mut self,
        level: Level,
        ms: i64,
        text: &str,
        cur: &mut Option<Building>,
        out: &mut VecDeque<Event>,
    ) {
        let mut rest = text;
        let mut prefix = "";
        loop {
            let room = MAX_EVENT_TEXT - prefix.len();
            if rest.len() <= room {
                *cur = Some(Building {
                    level,
                    first_ms: ms,
                    msg: format!("{prefix}{rest}"),
                    lines: 1,
                });
                return;
            }
            let mut cut = room;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let piece = Building {
                level,
                first_ms: ms,
                msg: format!("{prefix}{}", &rest[..cut]),
                lines: 0,
            };
            out.push_back(self.event(piece));
            rest = &rest[cut..];
            prefix = CONTINUATION;
        }
    }

    fn event(&mut self, b: Building) -> Event {
        let ts = b.first_ms.max(self.last_ts + 1);
        self.last_ts = ts;
        let cost = b.msg.len();
        let value = json!({
            "type": "log",
            "task": self.task,
            "worker": self.worker,
            "level": b.level.as_str(),
            "msg": b.msg,
            "timestamp": ts,
        });
        let json_len = json_len(&value);
        Event {
            value,
            json_len,
            cost,
            lines: b.lines,
        }
    }
}

/// The length of `value` as one json-lines line (its newline included), for an event: the
/// message is measured by scanning it for what JSON escapes, the small rest by serialising it.
fn json_len(value: &Value) -> usize {
    let Some(msg) = value.get("msg").and_then(Value::as_str) else {
        return value.to_string().len() + 1;
    };
    let mut rest = value.clone();
    rest["msg"] = Value::String(String::new());
    let escaped: usize = msg
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum();
    rest.to_string().len() + escaped + 1
}

enum Sent {
    Done,
    Retry,
    Deadline,
}

/// The background half: seals lines into events and delivers them.
struct Sender {
    shared: Arc<Shared>,
    client: Arc<Client>,
    sealer: Sealer,
    /// Events in delivery order; the front ones are retried until they are answered.
    sealed: VecDeque<Event>,
    /// The spool file whose events are at the front of `sealed`, and how many remain.
    loaded_file: Option<(PathBuf, usize)>,
    flush_interval: Duration,
    closing: watch::Receiver<Option<Instant>>,
    failing_since: Option<Instant>,
}

impl Sender {
    async fn run(mut self) -> ShipSummary {
        let mut backoff = MIN_BACKOFF;
        loop {
            let deadline = *self.closing.borrow();
            // A shipper always sets a deadline before it goes; this is only a safety net.
            let orphaned = deadline.is_none() && self.closing.has_changed().is_err();
            if orphaned || deadline.is_some_and(|d| Instant::now() >= d) {
                return self.give_up().await;
            }
            let collected = self.collect().await;
            if self.sealed.is_empty() {
                if collected {
                    continue;
                }
                if deadline.is_some() {
                    return self.shared.summary(None);
                }
                self.idle().await;
                continue;
            }
            match self.send_front().await {
                Sent::Done => backoff = MIN_BACKOFF,
                Sent::Retry => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = deadline_reached(&mut self.closing) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Sent::Deadline => return self.give_up().await,
            }
        }
    }

    /// Waits for new lines (then a little longer, to batch them) or for the shipper to close.
    async fn idle(&mut self) {
        tokio::select! {
            _ = self.shared.wake.notified() => {}
            changed = self.closing.changed() => {
                if changed.is_err() {
                    // The shipper is gone without a deadline (it always sets one first).
                    return;
                }
            }
        }
        if self.closing.borrow().is_none() {
            tokio::select! {
                _ = tokio::time::sleep(self.flush_interval) => {}
                _ = self.closing.changed() => {}
            }
        }
    }

    /// Seals the open lines, or, when nothing older is waiting, reads back the oldest spool
    /// chunk. True when it found something to do.
    async fn collect(&mut self) -> bool {
        let chunk = {
            let mut st = self.shared.lock();
            if !st.open.is_empty() {
                let lines = std::mem::take(&mut st.open);
                drop(st);
                self.sealer.seal(lines, &mut self.sealed);
                return true;
            }
            if !self.sealed.is_empty() {
                return false;
            }
            st.spool.take()
        };
        let Some(chunk) = chunk else {
            return false;
        };
        let (lines, file) = match chunk {
            Chunk::Memory(lines) => (lines, None),
            Chunk::File { path, lines: count } => {
                let p = path.clone();
                let read = match tokio::task::spawn_blocking(move || read_lines(&p)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match read {
                    Ok(lines) => {
                        // Records torn by a failed write were skipped.
                        let missing = count.saturating_sub(lines.len()) as u64;
                        self.shared.lock().rejected += missing;
                        (lines, Some(path))
                    }
                    Err(why) => {
                        tracing::error!("{count} console lines are lost: {why}");
                        self.shared.lock().rejected += count as u64;
                        (Vec::new(), None)
                    }
                }
            }
        };
        {
            let mut st = self.shared.lock();
            st.mem_bytes += lines.iter().map(Line::cost).sum::<usize>();
            st.spool.loaded();
        }
        let before = self.sealed.len();
        self.sealer.seal(lines, &mut self.sealed);
        let added = self.sealed.len() - before;
        if let Some(path) = file {
            if added == 0 {
                remove_spool_file(&path);
            } else {
                self.loaded_file = Some((path, added));
            }
        }
        true
    }

    /// Sends the events at the front (up to 1 MiB) once.
    async fn send_front(&mut self) -> Sent {
        let mut n = 0;
        let mut size = 0;
        for ev in &self.sealed {
            if n > 0 && size + ev.json_len > MAX_PACKET {
                break;
            }
            size += ev.json_len;
            n += 1;
        }
        // Lent to the request (no copy of up to 1 MiB of text) and put back before any retry.
        let values: Vec<Value> = self
            .sealed
            .iter_mut()
            .take(n)
            .map(|e| std::mem::take(&mut e.value))
            .collect();
        let client = self.client.clone();
        let outcome = tokio::select! {
            r = client.call_lines("events.add_batch", &values) => Some(r),
            _ = deadline_reached(&mut self.closing) => None,
        };
        for (e, v) in self.sealed.iter_mut().zip(values) {
            e.value = v;
        }
        let Some(outcome) = outcome else {
            return Sent::Deadline;
        };
        match outcome {
            Ok(data) => {
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        "console lines are delivered again after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                }
                let added = data.get("added").and_then(Value::as_u64);
                if let Some(added) = added.filter(|&a| a < n as u64) {
                    let errors = data.get("errors_info").cloned().unwrap_or_default();
                    tracing::warn!("the server stored only {added} of {n} log events: {errors}");
                }
                self.pop(n, true);
                Sent::Done
            }
            Err(e) if is_final(&e) => {
                tracing::warn!("dropping {n} log events the server refused: {e}");
                self.pop(n, false);
                Sent::Done
            }
            Err(e) => {
                if self.failing_since.is_none() {
                    tracing::warn!("cannot deliver console lines, will retry: {e}");
                    self.failing_since = Some(Instant::now());
                } else {
                    tracing::debug!("console lines still undelivered: {e}");
                }
                Sent::Retry
            }
        }
    }

    fn pop(&mut self, n: usize, delivered: bool) {
        let mut cost = 0;
        let mut lines = 0;
        for _ in 0..n {
            let Some(ev) = self.sealed.pop_front() else {
                break;
            };
            cost += ev.cost;
            lines += ev.lines;
            if let Some((path, left)) = self.loaded_file.as_mut() {
                *left -= 1;
                if *left == 0 {
                    remove_spool_file(path);
                    self.loaded_file = None;
                }
            }
        }
        let mut st = self.shared.lock();
        st.mem_bytes = st.mem_bytes.saturating_sub(cost);
        if delivered {
            st.delivered += lines;
        } else {
            st.rejected += lines;
        }
    }

    /// The deadline passed: save everything undelivered, in order, to one file.
    async fn give_up(self) -> ShipSummary {
        let Sender {
            shared,
            mut sealer,
            sealed,
            loaded_file,
            ..
        } = self;
        let (open, chunks, dir, prefix) = {
            let mut st = shared.lock();
            let open = std::mem::take(&mut st.open);
            let chunks = st.spool.drain();
            (
                open,
                chunks,
                st.spool.dir().to_path_buf(),
                st.spool.prefix().to_string(),
            )
        };
        if sealed.is_empty() && open.is_empty() && chunks.is_empty() {
            return shared.summary(None);
        }
        let loaded = loaded_file.map(|(p, _)| p);
        let saved = tokio::task::spawn_blocking(move || {
            save_undelivered(&dir, &prefix, &mut sealer, sealed, open, chunks, loaded)
        })
        .await;
        let file = match saved {
            Ok(Ok(path)) => {
                tracing::warn!(
                    "console lines still undelivered at the deadline were saved to {}",
                    path.display()
                );
                Some(path)
            }
            Ok(Err(e)) => {
                tracing::error!("cannot save the undelivered console lines: {e}");
                None
            }
            Err(e) => {
                tracing::error!("cannot save the undelivered console lines: {e}");
                None
            }
        };
        shared.summary(file)
    }
}

/// Refusals that a retry cannot fix: the batch is dropped. 401 (the client already logged in
/// again), 408 and 429 are retried like outages.
fn is_final(e: &ApiError) -> bool {
    matches!(e, ApiError::Server { code, .. }
        if (400..500).contains(code) && !matches!(code, 401 | 408 | 429))
}

/// Resolves once a deadline is set and has passed.
async fn deadline_reached(closing: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *closing.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(d.into()).await;
            return;
        }
        if closing.changed().await.is_err() {
            return;
        }
    }
}

fn remove_spool_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("cannot remove the spool file {}: {e}", path.display());
    }
}

/// Writes every undelivered event, oldest first, as json-lines; removes the spool files it
/// copied only once the whole file is written.
fn save_undelivered(
    dir: &Path,
    prefix: &str,
    sealer: &mut Sealer,
    sealed: VecDeque<Event>,
    open: Vec<Line>,
    chunks: Vec<Chunk>,
    loaded: Option<PathBuf>,
) -> Result<PathBuf, SpoolError> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| SpoolError::Dir(dir.to_path_buf(), e))?;
    let path = dir.join(format!("{prefix}-undelivered.jsonl"));
    let file = std::fs::File::create(&path).map_err(|e| SpoolError::Write(path.clone(), e))?;
    let mut out = std::io::BufWriter::new(file);
    let write = |out: &mut std::io::BufWriter<std::fs::File>, events: VecDeque<Event>| {
        events
            .iter()
            .try_for_each(|ev| writeln!(out, "{}", ev.value))
            .map_err(|e| SpoolError::Write(path.clone(), e))
    };
    write(&mut out, sealed)?;
    let mut events = VecDeque::new();
    sealer.seal(open, &mut events);
    write(&mut out, events)?;
    let mut copied = Vec::new();
    for chunk in chunks {
        let lines = match chunk {
            Chunk::Memory(lines) => lines,
            Chunk::File { path: p, .. } => {
                let lines = read_lines(&p)?;
                copied.push(p);
                lines
            }
        };
        let mut events = VecDeque::new();
        sealer.seal(lines, &mut events);
        write(&mut out, events)?;
    }
    out.flush()
        .and_then(|()| out.get_ref().sync_all())
        .map_err(|e| SpoolError::Write(path.clone(), e))?;
    for p in copied.iter().chain(loaded.iter()) {
        remove_spool_file(p);
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
