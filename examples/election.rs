//! Leader election across processes: three candidates campaign, the first leader is killed
//! (SIGKILL) while it leads, and the next takes over once its lease ends; the later leaders
//! proclaim a new value, then resign, each handing over at once. A fourth process observes
//! the election and prints every change it sees, woken by each change (no polling).
//!
//! ```text
//! cargo run --example election
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use redis_mutex::{Pool, RedisElection};

const CANDIDATES: usize = 3;
/// The leader's lease: a leader that crashed keeps the role up to this long.
const LEASE: Duration = Duration::from_secs(2);
/// How long the whole example may take before it gives up.
const BOUND: Duration = Duration::from_secs(60);

fn election(url: &str, owner: &str) -> redis_mutex::Result<RedisElection> {
    RedisElection::builder(Pool::new(url)?, "examples:scheduler")
        .expire(LEASE)
        .owner_id(owner)
        .build()
}

/// A candidate: campaigns, then waits for a word from the main process (which kills the
/// first leader instead); then proclaims a new value, works a moment, and resigns.
fn candidate(url: &str, me: usize) -> Result<(), Box<dyn std::error::Error>> {
    let election = election(url, &format!("candidate-{me}"))?;
    let leadership = election.campaign(format!("10.0.0.{me}:8080"))?;
    println!("candidate {me}: leading, term {}", leadership.term());
    let mut word = String::new();
    std::io::stdin().read_line(&mut word)?;
    thread::sleep(Duration::from_millis(200));
    leadership.proclaim(format!("10.0.0.{me}:9090"))?;
    thread::sleep(Duration::from_millis(200));
    leadership.ensure_held()?;
    println!("candidate {me}: resigning");
    leadership.resign()?;
    Ok(())
}

/// The observer: prints every change until it has seen every candidate lead and nobody
/// lead after the last.
fn observer(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let election = election(url, "observer")?;
    let mut changes = election.observe()?;
    let started = Instant::now();
    let mut terms = Vec::new();
    println!("observer: watching");
    while started.elapsed() < BOUND {
        let Some(change) = changes.next_timeout(Duration::from_secs(1)) else {
            continue;
        };
        match change? {
            Some(leader) => {
                println!(
                    "observer: {} leads, term {}, at {} ({:?} left)",
                    leader.owner_id,
                    leader.term,
                    leader.value,
                    leader.expires_in.unwrap_or_default()
                );
                if !terms.contains(&leader.term) {
                    terms.push(leader.term);
                }
            }
            None => {
                println!("observer: nobody leads");
                if terms.len() == CANDIDATES {
                    return Ok(());
                }
            }
        }
    }
    Err("the observer did not see every candidate lead".into())
}

fn spawn(
    exe: &std::path::Path,
    args: &[&str],
    lines: &mpsc::Sender<String>,
) -> std::io::Result<Child> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("piped"))?;
    let lines = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    Ok(child)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match &args[..] {
        [_, role, url, me] if role == "candidate" => return candidate(url, me.parse()?),
        [_, role, url] if role == "observer" => return observer(url),
        _ => {}
    }
    let (url, _server) = server::example_server();
    println!("{CANDIDATES} candidates, leases of {LEASE:?}");
    let exe = std::env::current_exe()?;
    let (tx, rx) = mpsc::channel();
    let mut watcher = spawn(&exe, &["observer", &url], &tx)?;
    // The observer's first line: it is registered before anyone campaigns.
    match rx.recv_timeout(BOUND) {
        Ok(line) => println!("  {line}"),
        Err(_) => return Err("the observer did not start".into()),
    }
    let mut candidates: Vec<Child> = (0..CANDIDATES)
        .map(|me| spawn(&exe, &["candidate", &url, &me.to_string()], &tx))
        .collect::<Result<_, _>>()?;
    drop(tx);
    let started = Instant::now();
    let mut killed_at: Option<Instant> = None;
    let mut leaders = 0;
    while let Ok(line) = rx.recv_timeout(BOUND.saturating_sub(started.elapsed())) {
        println!("  {line}");
        let leading = line
            .strip_prefix("candidate ")
            .and_then(|rest| rest.split_once(": leading"))
            .and_then(|(me, _)| me.parse::<usize>().ok());
        if let Some(me) = leading {
            leaders += 1;
            if let Some(killed) = killed_at.take() {
                println!("taken over {:.0?} after the kill", killed.elapsed());
            }
            if leaders == 1 {
                candidates[me].kill()?;
                killed_at = Some(Instant::now());
                println!("killed candidate {me} while it led; the next leads within {LEASE:?}");
            } else if let Some(stdin) = candidates[me].stdin.as_mut() {
                writeln!(stdin, "go")?;
            }
        }
        if line.starts_with("observer: nobody leads") && watcher.try_wait()?.is_some() {
            break;
        }
    }
    let status = watcher.wait()?;
    for mut child in candidates {
        child.wait()?;
    }
    if !status.success() {
        return Err("the observer failed".into());
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
