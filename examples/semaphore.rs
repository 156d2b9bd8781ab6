//! Ten worker processes share three permits of a fragile service; one of them is killed
//! (SIGKILL) while it holds a permit, which comes back one lease later, and the others go
//! on. At no moment do more than three hold a permit.
//!
//! ```text
//! cargo run --example semaphore
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis_mutex::{Pool, RedisSemaphore};

const WORKERS: usize = 10;
const PERMITS: u32 = 3;
/// Each permit's lease: a killed holder's permit comes back up to this long after it died
/// (when its last renewal runs out).
const LEASE: Duration = Duration::from_secs(2);

fn service(url: &str) -> redis_mutex::Result<RedisSemaphore> {
    RedisSemaphore::builder(Pool::new(url)?, "examples:fragile-service")
        .permits(PERMITS)
        .expire(LEASE)
        .build()
}

/// A worker: three calls to the service, each under a permit. Worker 0 never gives its
/// first permit back: it is killed while it holds it.
fn worker(url: &str, me: usize) -> Result<(), Box<dyn std::error::Error>> {
    let service = service(url)?;
    for call in 0..3 {
        let permit = service.acquire()?;
        println!(
            "worker {me}: calling the service ({} in use)",
            PERMITS - service.available_permits()?
        );
        if me == 0 && call == 0 {
            println!("worker 0: holding a permit, waiting to be killed");
            thread::sleep(Duration::from_secs(60));
        }
        thread::sleep(Duration::from_millis(300)); // the call
        permit.release()?;
    }
    println!("worker {me}: done");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, url, me] = &args[..]
        && role == "worker"
    {
        return worker(url, me.parse()?);
    }
    let (url, _server) = server::example_server();
    println!("{WORKERS} workers, {PERMITS} permits, leases of {LEASE:?}");
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for me in 0..WORKERS {
        let mut child = Command::new(&exe)
            .args(["worker", &url, &me.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("piped")?;
        let relay = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("  {line}");
                if line.starts_with("worker 0: holding") {
                    return true;
                }
            }
            false
        });
        children.push((me, child, Some(relay)));
    }
    // Kill worker 0 once it holds its permit.
    if let Some((_, child, relay)) = children.first_mut() {
        let holding = relay
            .take()
            .map(|r| r.join().unwrap_or(false))
            .unwrap_or(false);
        if holding {
            child.kill()?;
            println!("killed worker 0 while it held a permit; it comes back within {LEASE:?}");
        }
    }
    let started = Instant::now();
    for (me, mut child, _) in children {
        let status = child.wait()?;
        if me != 0 {
            assert!(status.success(), "worker {me} failed");
        }
    }
    let service = service(&url)?;
    println!(
        "all done in {:.1} s; {} of {PERMITS} permits free",
        started.elapsed().as_secs_f64(),
        service.available_permits()?
    );
    Ok(())
}
