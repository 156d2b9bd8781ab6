//! What the crate logs while a server is down: one WARN when it goes, one INFO when it is
//! back, never a line per attempt and never ERROR (r2d2's own handler logs every failed
//! background connect at ERROR, ten a second).

#[allow(dead_code)] // this binary uses a part
mod support;

use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use redis_mutex::RedisMutex;
use support::RedisServer;

/// Keeps every record this process logs.
struct Recorder {
    records: Mutex<Vec<(Level, String)>>,
}

impl Log for Recorder {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let line = format!("{}: {}", record.target(), record.args());
        self.records.lock().unwrap().push((record.level(), line));
    }

    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder {
    records: Mutex::new(Vec::new()),
};

/// The records so far at `level` that mention `text`.
fn count(level: Level, text: &str) -> usize {
    let records = RECORDER.records.lock().unwrap();
    records
        .iter()
        .filter(|(l, line)| *l == level && line.contains(text))
        .count()
}

fn transcript() -> String {
    let records = RECORDER.records.lock().unwrap();
    records
        .iter()
        .map(|(l, line)| format!("{l} {line}\n"))
        .collect()
}

#[test]
fn a_server_going_away_is_logged_once_at_warn_and_its_return_once_at_info() {
    log::set_logger(&RECORDER).unwrap();
    log::set_max_level(LevelFilter::Trace);

    let mut server = RedisServer::start();
    let address = format!("127.0.0.1:{}", server.port());
    let mutex = RedisMutex::new(server.pool(), "logged").unwrap();
    drop(mutex.lock().unwrap());
    assert_eq!(count(Level::Warn, &address), 0, "{}", transcript());

    for round in 1..=2 {
        server.kill();
        // Every call fails, and so do the pool's background connects meanwhile. A call
        // that sent its acquire on a pooled connection the server closed cannot know
        // whether it was granted, and warns (once per such call) that its undo failed;
        // after those, the outage itself is logged once, whatever the number of attempts.
        for _ in 0..5 {
            let err = mutex.lock().unwrap_err();
            assert!(err.is_unreachable(), "{err:?}");
        }
        let warned = count(Level::Warn, &address);
        for _ in 0..20 {
            let err = mutex.lock().unwrap_err();
            assert!(err.is_unreachable(), "{err:?}");
        }
        assert_eq!(
            count(Level::Warn, &address),
            warned,
            "no WARN per failed attempt:\n{}",
            transcript()
        );
        assert_eq!(
            count(Level::Warn, "retrying in the background"),
            round,
            "one WARN per outage:\n{}",
            transcript()
        );
        server.restart();
        drop(mutex.lock().unwrap());
        assert_eq!(
            count(
                Level::Info,
                &format!("connected to redis at {address} again")
            ),
            round,
            "one INFO per recovery:\n{}",
            transcript()
        );
    }
    let errors = count(Level::Error, "");
    assert_eq!(errors, 0, "nothing at ERROR:\n{}", transcript());
}
