//! The shipper's unit tests: batching, sealing events at line boundaries, spooling.
use super::*;

fn line(level: Level, text: &str, ms: i64) -> Line {
    Line {
        level,
        ms,
        text: text.into(),
        eol: true,
    }
}

fn sealer() -> Sealer {
    Sealer {
        task: "t".into(),
        worker: "w".into(),
        last_ts: 0,
        continuing: false,
    }
}

#[test]
fn consecutive_lines_of_a_level_share_an_event() {
    let mut s = sealer();
    let mut out = VecDeque::new();
    s.seal(
        vec![
            line(Level::Debug, "a", 5),
            line(Level::Debug, "b", 5),
            line(Level::Info, "c", 5),
            line(Level::Debug, "d", 4),
        ],
        &mut out,
    );
    let msgs: Vec<&str> = out.iter().filter_map(|e| e.value["msg"].as_str()).collect();
    assert_eq!(msgs, vec!["a\nb\n", "c\n", "d\n"]);
    let ts: Vec<i64> = out
        .iter()
        .filter_map(|e| e.value["timestamp"].as_i64())
        .collect();
    assert_eq!(
        ts,
        vec![5, 6, 7],
        "strictly increasing even for an older capture"
    );
    assert_eq!(out[1].value["level"], "info");
    assert_eq!(out.iter().map(|e| e.lines).sum::<u64>(), 4);
}

#[test]
fn a_line_that_fits_is_never_split() {
    let mut s = sealer();
    let mut out = VecDeque::new();
    let lines: Vec<String> = (0..160_000)
        .map(|i| format!("line {i:06} of a long console, {}", "x".repeat(i % 13)))
        .collect();
    s.seal(
        lines.iter().map(|t| line(Level::Debug, t, 1)).collect(),
        &mut out,
    );
    let mut back = Vec::new();
    for ev in &out {
        let msg = ev.value["msg"].as_str().unwrap_or_default();
        assert!(msg.len() <= MAX_EVENT_TEXT);
        assert!(msg.ends_with('\n'), "an event ends inside a line");
        back.extend(msg.lines().map(str::to_string));
    }
    assert_eq!(back, lines);
    assert_eq!(out.iter().map(|e| e.lines).sum::<u64>(), 160_000);
    // Events are still filled: fewer than 2% more than the text strictly needs.
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    assert!(
        out.len() <= bytes / MAX_EVENT_TEXT * 102 / 100 + 1,
        "{}",
        out.len()
    );
}

#[test]
fn console_bytes_in_pipe_sized_chunks_come_back_whole() {
    let text: String = (1..=20_000)
        .map(|i| format!("console line {i:06}: the quick brown fox\n"))
        .collect();
    let mut splitter = Splitter::default();
    let mut s = sealer();
    let mut out = VecDeque::new();
    for chunk in text.as_bytes().chunks(65_536) {
        let mut pieces = Vec::new();
        splitter.push(chunk, &mut pieces);
        s.seal(to_lines(Level::Debug, pieces), &mut out);
    }
    let back: String = out.iter().filter_map(|e| e.value["msg"].as_str()).collect();
    assert_eq!(back, text);
}

#[test]
fn only_longer_lines_are_cut_and_their_pieces_marked() {
    let mut s = sealer();
    let mut out = VecDeque::new();
    let long = "é".repeat(70_000); // 140,000 bytes: three pieces
    s.seal(
        vec![
            line(Level::Debug, "x", 1),
            line(Level::Debug, &long, 1),
            line(Level::Debug, "after", 1),
        ],
        &mut out,
    );
    let msgs: Vec<&str> = out.iter().filter_map(|e| e.value["msg"].as_str()).collect();
    assert_eq!(
        msgs.len(),
        4,
        "{:?}",
        msgs.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    assert_eq!(msgs[0], "x\n");
    assert!(!msgs[1].starts_with(CONTINUATION) && !msgs[1].ends_with('\n'));
    assert!(msgs[2].starts_with(CONTINUATION) && !msgs[2].ends_with('\n'));
    assert!(msgs[3].starts_with(CONTINUATION) && msgs[3].ends_with("\nafter\n"));
    assert!(msgs.iter().all(|m| m.len() <= MAX_EVENT_TEXT));
    let joined: String = msgs
        .iter()
        .map(|m| m.trim_start_matches(CONTINUATION))
        .collect();
    assert_eq!(joined, format!("x\n{long}\nafter\n"));
    let counted: Vec<u64> = out.iter().map(|e| e.lines).collect();
    assert_eq!(counted, vec![1, 0, 0, 2]);
}

#[test]
fn the_rest_of_an_unfinished_line_is_marked() {
    let mut s = sealer();
    let mut out = VecDeque::new();
    let mut head = line(Level::Debug, "head", 1);
    head.eol = false;
    s.seal(vec![line(Level::Debug, "a", 1), head], &mut out);
    s.seal(vec![line(Level::Debug, "tail", 2)], &mut out);
    let msgs: Vec<&str> = out.iter().filter_map(|e| e.value["msg"].as_str()).collect();
    assert_eq!(
        msgs,
        vec!["a\nhead".to_string(), format!("{CONTINUATION}tail\n")]
    );
}

#[test]
fn json_len_is_exact() {
    let mut s = sealer();
    let mut out = VecDeque::new();
    let odd = "quote \" back \\ tab \t cr \r bell \u{7} esc \u{1b}[0m é € \u{fffd}";
    s.seal(
        vec![line(Level::Debug, odd, 1), line(Level::Info, "plain", 2)],
        &mut out,
    );
    for ev in &out {
        assert_eq!(ev.json_len, ev.value.to_string().len() + 1, "{}", ev.value);
    }
}

#[test]
fn refusals_are_final_outages_are_not() {
    let server = |code| ApiError::Server {
        endpoint: "e".into(),
        code,
        subcode: 0,
        message: String::new(),
    };
    assert!(is_final(&server(400)));
    assert!(!is_final(&server(429)));
    assert!(!is_final(&server(503)));
    assert!(!is_final(&ApiError::Unreachable {
        endpoint: "e".into(),
        url: "u".into(),
        message: String::new(),
    }));
}
