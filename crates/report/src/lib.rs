//! What the agent reports to the server while it works: the task's console
//! ([`LogShipper`]), machine statistics ([`StatsSampler`]) and the worker's status
//! ([`StatusReporter`]).
//!
//! # The console shipper
//!
//! The promise: *a server outage never loses or duplicates a line, and the task keeps
//! running*. The design follows from it:
//! - **Pushing never waits.** [`LogShipper::push_bytes`] cleans the bytes into lines (`console`:
//!   the last `\r` segment, no backspaces, lossy UTF-8, no bare `ESC[0m` line; an incomplete
//!   line is held) and queues them under a short lock. A background task does all network I/O.
//! - **Events are frozen once built.** The sender joins consecutive lines of one level into
//!   events of up to 64 KiB of text (every line ends with `\n`). A line that fits in an event
//!   is never split across two; only a longer line is cut, and each of its later pieces starts
//!   with [`CONTINUATION`] (so the texts concatenated, markers removed, give the console
//!   back). Each event is stamped with `max(capture ms, previous + 1)`: timestamps
//!   strictly increase, so the server's time order is our order. A failed request is retried
//!   with the *same* events, never re-stamped, so a server that ignores an identical
//!   (task, worker, timestamp, msg) event makes retransmits harmless.
//! - **Delivery is in order**: requests of at most 1 MiB from the front of the queue; a
//!   failure (connection, 5xx, 401, 408, 429) is retried with backoff (up to 2 s) until
//!   [`LogShipper::finish`]'s deadline; any other 4xx (task deleted, bad request) is logged
//!   and that batch dropped, since a retry cannot succeed.
//! - **Memory is bounded.** Past `memory_limit_bytes` of undelivered text, new lines go to
//!   json-lines spool files (`spool`); once lines are spooled, later lines follow them there
//!   until the sender has read the spool back, so nothing overtakes anything. Spool files are
//!   deleted once their events are delivered. At the deadline, whatever is left is saved,
//!   in order, as ready-to-send `events.add_batch` json-lines in one file.
//!
//! # Statistics and status
//!
//! [`StatsSampler`] reads `/proc`, `/sys` and `statvfs` directly (no process-wide library) and
//! NVIDIA GPUs through NVML, which `nvml-wrapper` loads at run time: without a driver there
//! are simply no GPU keys. [`StatusReporter`] samples every 0.5 s and sends
//! `workers.status_report` after 3 s, then every period, and at once when the task changes.
//!
//! Nothing here prints: diagnostics go to `tracing`, and the console echo is the caller's
//! callback.

mod console;
mod gpu;
mod shipper;
mod spool;
mod stats;
mod status;

pub use shipper::{CONTINUATION, Echo, Level, LogShipper, ShipSummary, ShipperOptions};
pub use stats::StatsSampler;
pub use status::StatusReporter;
