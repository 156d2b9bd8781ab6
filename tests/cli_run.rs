//! `redis-mutex run`, run as built against a real server: commands that never overlap, the
//! conflict status in time, the command's status and signals, a lost lock stopping the
//! command, a killed runner's lock expiring.

#[allow(dead_code)] // this binary uses a part
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use redis_mutex::RedisMutex;
use support::{HANG, Lines, RedisServer, eventually, run_bounded, wait_or_kill};

/// `redis-mutex` pointed at `server`, with `args`.
fn redis_mutex(server: &RedisServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-mutex"));
    cmd.env("REDIS_URL", server.url()).args(args);
    cmd
}

/// A directory of this test's own, empty.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("redis-mutex-run-{}-{test}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A runner started with its stdout piped, read line by line.
fn start(cmd: &mut Command) -> (Child, Lines) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let lines = Lines::new(child.stdout.take().unwrap());
    (child, lines)
}

/// The largest number of runs the journal `path` shows at once (`+` a start, `-` an end).
fn most_at_once(path: &Path) -> (usize, usize) {
    let journal = std::fs::read_to_string(path).unwrap();
    let (mut now, mut most, mut runs) = (0usize, 0usize, 0usize);
    for line in journal.lines() {
        match line {
            "+" => {
                now += 1;
                runs += 1;
                most = most.max(now);
            }
            "-" => now -= 1,
            other => panic!("a journal line {other:?}"),
        }
    }
    assert_eq!(now, 0, "a run started and never ended:\n{journal}");
    (most, runs)
}

/// Six runners of one job at once, each appending `+` and `-` around its work to a journal:
/// never more than `permits` (or one) inside at once.
fn runs_at_once(test: &str, extra: &[&str]) -> (usize, usize) {
    let server = RedisServer::start();
    let dir = scratch(test);
    let journal = dir.join("journal");
    let job = format!("echo + >> {0}; sleep 0.2; echo - >> {0}", journal.display());
    let mut runners: Vec<Child> = (0..6)
        .map(|_| {
            let mut args = vec!["run", "--expire", "5s"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["job", "--", "sh", "-c", &job]);
            redis_mutex(&server, &args).spawn().unwrap()
        })
        .collect();
    for runner in &mut runners {
        let status = wait_or_kill(runner, HANG);
        assert!(status.success(), "a runner exited with {status}");
    }
    most_at_once(&journal)
}

#[test]
fn two_runs_of_a_mutex_never_overlap() {
    let (most, runs) = runs_at_once("mutex", &[]);
    assert_eq!((most, runs), (1, 6), "(most at once, runs)");
}

#[test]
fn fair_runs_never_overlap() {
    let (most, runs) = runs_at_once("fair", &["--fair"]);
    assert_eq!((most, runs), (1, 6), "(most at once, runs)");
}

#[test]
fn permits_2_lets_at_most_two_run_at_once() {
    let (most, runs) = runs_at_once("permits", &["--permits", "2"]);
    assert!(most <= 2, "{most} runs at once with two permits");
    assert_eq!(runs, 6);
}

#[test]
fn no_wait_and_wait_give_the_conflict_status_in_time_and_start_nothing() {
    let server = RedisServer::start();
    let dir = scratch("conflict");
    let marker = dir.join("ran");
    let job = format!("touch {}", marker.display());
    let mutex = RedisMutex::builder(server.pool(), "report")
        .owner_id("host-7/report")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let _held = mutex.lock().unwrap();

    let started = Instant::now();
    let out = run_bounded(
        &mut redis_mutex(
            &server,
            &["run", "--no-wait", "report", "--", "sh", "-c", &job],
        ),
        HANG,
    );
    let took = started.elapsed();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{said}");
    assert!(took < Duration::from_secs(2), "--no-wait took {took:?}");
    assert!(
        said.contains("`report` is held by host-7/report") && said.contains("s more"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "one line: {said}");

    let started = Instant::now();
    let out = run_bounded(
        &mut redis_mutex(
            &server,
            &[
                "run",
                "--wait",
                "700ms",
                "--conflict-exit-code",
                "9",
                "report",
                "--",
                "sh",
                "-c",
            ]
            .into_iter()
            .chain([job.as_str()])
            .collect::<Vec<_>>(),
        ),
        HANG,
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "--wait 700ms gave up after {took:?}"
    );
    assert!(
        text(&out.stderr).contains("after waiting"),
        "{}",
        text(&out.stderr)
    );
    assert!(!marker.exists(), "the command ran without the lock");
}

#[test]
fn a_semaphore_conflict_names_the_holders() {
    let server = RedisServer::start();
    let semaphore = redis_mutex::RedisSemaphore::builder(server.pool(), "exports")
        .permits(1)
        .owner_id("host-3/export")
        .build()
        .unwrap();
    let _permit = semaphore.acquire().unwrap();
    let out = run_bounded(
        &mut redis_mutex(
            &server,
            &["run", "-n", "--permits", "1", "exports", "--", "true"],
        ),
        HANG,
    );
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{said}");
    assert!(said.contains("host-3/export#"), "{said}");
}

#[test]
fn exits_with_the_commands_status_and_gives_it_the_lock_in_its_environment() {
    let server = RedisServer::start();
    let out = run_bounded(
        &mut redis_mutex(&server, &["run", "job", "--", "sh", "-c", "exit 7"]),
        HANG,
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    let out = run_bounded(
        &mut redis_mutex(&server, &["run", "job", "--", "sh", "-c", "kill -KILL $$"]),
        HANG,
    );
    assert_eq!(out.status.code(), Some(128 + 9), "killed by SIGKILL");

    let out = run_bounded(
        &mut redis_mutex(
            &server,
            &[
                "run",
                "--owner-id",
                "host-1/cron",
                "job",
                "--",
                "sh",
                "-c",
                "echo \"$REDIS_MUTEX_NAME $REDIS_MUTEX_TOKEN $REDIS_MUTEX_OWNER_ID\"",
            ],
        ),
        HANG,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let parts: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{said}");
    assert_eq!((parts[0], parts[2]), ("job", "host-1/cron"), "{said}");
    assert!(
        parts[1].parse::<u64>().unwrap() > 0,
        "a fencing token: {said}"
    );
    assert!(
        !RedisMutex::new(server.pool(), "job")
            .unwrap()
            .is_locked()
            .unwrap()
    );

    let out = run_bounded(
        &mut redis_mutex(&server, &["run", "job", "--", "/nonexistent/command"]),
        HANG,
    );
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        !RedisMutex::new(server.pool(), "job")
            .unwrap()
            .is_locked()
            .unwrap()
    );

    let out = run_bounded(&mut redis_mutex(&server, &["run", "job"]), HANG);
    assert_eq!(out.status.code(), Some(2), "no command is a usage error");
    let out = run_bounded(&mut redis_mutex(&server, &["run", "", "--", "true"]), HANG);
    assert_eq!(out.status.code(), Some(2), "an empty name is a usage error");
    let unreachable = format!("redis://127.0.0.1:{}/", support::free_port());
    let out = run_bounded(
        redis_mutex(&server, &["run", "job", "--", "true"]).env("REDIS_URL", &unreachable),
        HANG,
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let out = run_bounded(
        redis_mutex(
            &server,
            &["run", "--error-exit-code", "99", "job", "--", "true"],
        )
        .env("REDIS_URL", &unreachable),
        HANG,
    );
    assert_eq!(out.status.code(), Some(99), "{}", text(&out.stderr));
}

#[test]
fn sigterm_is_passed_on_and_the_lock_released_only_after_the_command_exits() {
    let server = RedisServer::start();
    let dir = scratch("sigterm");
    let go = dir.join("go");
    // On SIGTERM: say so, wait for the test's go (bounded), exit 3.
    let job = format!(
        "trap 'echo got-term; i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; \
         i=$((i+1)); done; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        go = go.display()
    );
    let (mut runner, lines) = start(&mut redis_mutex(
        &server,
        &["run", "--expire", "5s", "job", "--", "sh", "-c", &job],
    ));
    lines.expect("ready", HANG);
    let mutex = RedisMutex::new(server.pool(), "job").unwrap();
    assert!(mutex.is_locked().unwrap());
    support::signal(runner.id(), "TERM");
    lines.expect("got-term", HANG);
    assert!(
        mutex.is_locked().unwrap(),
        "the lock was released while the command still ran"
    );
    std::fs::write(&go, "").unwrap();
    let status = wait_or_kill(&mut runner, HANG);
    assert_eq!(status.code(), Some(3), "the command's own status");
    assert!(
        !mutex.is_locked().unwrap(),
        "released after the command exited"
    );
}

#[test]
fn a_command_killed_by_a_passed_on_signal_gives_128_plus_it() {
    let server = RedisServer::start();
    let (mut runner, lines) = start(&mut redis_mutex(
        &server,
        &["run", "job", "--", "sh", "-c", "echo ready; exec sleep 30"],
    ));
    lines.expect("ready", HANG);
    support::signal(runner.id(), "HUP");
    let status = wait_or_kill(&mut runner, HANG);
    assert_eq!(status.code(), Some(128 + 1), "SIGHUP passed on");
    assert!(
        !RedisMutex::new(server.pool(), "job")
            .unwrap()
            .is_locked()
            .unwrap()
    );
}

/// A lock reset under a running command: the runner stops it within a renewal interval,
/// with SIGKILL `--kill-after` later when it ignores SIGTERM, and exits with 76.
fn reset_under(job: &str, kill_after: Duration) -> (ExitStatus, Duration, String) {
    let server = RedisServer::start();
    let kill_after = format!("{}ms", kill_after.as_millis());
    let mut cmd = redis_mutex(
        &server,
        &[
            "run",
            "--expire",
            "1500ms",
            "--kill-after",
            &kill_after,
            "job",
            "--",
            "sh",
            "-c",
            job,
        ],
    );
    let (mut runner, lines) = start(cmd.stderr(Stdio::piped()));
    lines.expect("ready", HANG);
    let reset_at = Instant::now();
    assert!(
        RedisMutex::new(server.pool(), "job")
            .unwrap()
            .reset()
            .unwrap()
    );
    let status = wait_or_kill(&mut runner, HANG);
    let took = reset_at.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut runner.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, took, stderr)
}

#[test]
fn a_lock_reset_under_a_running_command_stops_it_with_sigterm() {
    let (status, took, stderr) = reset_under("echo ready; exec sleep 30", Duration::from_secs(10));
    assert_eq!(status.code(), Some(76), "{stderr}");
    // One renewal interval (a third of 1.5 s), and a margin for a loaded machine.
    assert!(
        took < Duration::from_millis(500 + 1500),
        "stopped after {took:?}"
    );
    assert!(
        stderr.contains("lost the lock `job`") && stderr.contains("SIGTERM"),
        "{stderr}"
    );
}

#[test]
fn a_command_that_ignores_sigterm_gets_sigkill_after_kill_after() {
    let (status, took, stderr) = reset_under(
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        Duration::from_millis(800),
    );
    assert_eq!(status.code(), Some(76), "{stderr}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(500 + 800 + 1500),
        "stopped after {took:?}"
    );
    assert!(stderr.contains("SIGKILL"), "{stderr}");
}

#[test]
fn a_runner_killed_with_sigkill_frees_the_lock_one_lease_later() {
    let server = RedisServer::start();
    let (mut runner, lines) = start(&mut redis_mutex(
        &server,
        &[
            "run",
            "--expire",
            "2s",
            "job",
            "--",
            "sh",
            "-c",
            "echo pid $$; exec sleep 30",
        ],
    ));
    let pid = lines.expect("pid ", HANG);
    let mutex = RedisMutex::new(server.pool(), "job").unwrap();
    runner.kill().unwrap();
    let killed_at = Instant::now();
    runner.wait().unwrap();
    // Its command lives on, in its own process group: ours to stop.
    support::signal(pid.trim().parse().unwrap(), "KILL");
    assert!(mutex.is_locked().unwrap(), "held until its lease ends");
    assert!(
        eventually(Duration::from_secs(5), || !mutex.is_locked().unwrap()),
        "still held 5 s after the runner died"
    );
    let freed = killed_at.elapsed();
    assert!(
        freed >= Duration::from_millis(1200) && freed < Duration::from_millis(3500),
        "freed {freed:?} after the runner died, with a 2 s lease renewed every 0.67 s"
    );
}

/// A period whose windows are long enough that a test never straddles two of them (they end
/// about every 41 days, at a moment the test could only meet by chance of ~1e-6).
const LONG_PERIOD: &str = "1000h";

#[test]
fn once_per_with_four_runners_a_second_apart_runs_the_job_once() {
    let server = RedisServer::start();
    let dir = scratch("once-per");
    let journal = dir.join("journal");
    // Long enough that the second runner comes while it runs, and waits.
    let job = format!("echo + >> {0}; sleep 1.5; echo - >> {0}", journal.display());
    let mut runners = Vec::new();
    for i in 0..4 {
        if i > 0 {
            // The cron of each host fires a second after the previous one's.
            std::thread::sleep(Duration::from_secs(1));
        }
        let owner = format!("host-{i}/cron");
        let mut cmd = redis_mutex(
            &server,
            &[
                "run",
                "--once-per",
                LONG_PERIOD,
                "--owner-id",
                &owner,
                "report",
                "--",
                "sh",
                "-c",
                &job,
            ],
        );
        runners.push(cmd.stderr(Stdio::piped()).spawn().unwrap());
    }
    let mut statuses = Vec::new();
    for mut runner in runners {
        let status = wait_or_kill(&mut runner, HANG);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut runner.stderr.take().unwrap(), &mut stderr).unwrap();
        statuses.push((status.code(), stderr));
    }
    let (most, runs) = most_at_once(&journal);
    assert_eq!(
        (most, runs),
        (1, 1),
        "the job ran {runs} times: {statuses:?}"
    );
    assert_eq!(statuses[0].0, Some(0), "{statuses:?}");
    for (code, stderr) in &statuses[1..] {
        assert_eq!(*code, Some(77), "{statuses:?}");
        assert!(
            stderr.contains("was done in this window of 1000h by host-0/cron at "),
            "{stderr}"
        );
    }
    assert!(
        !RedisMutex::new(server.pool(), "report")
            .unwrap()
            .is_locked()
            .unwrap()
    );
}

#[test]
fn once_per_a_failing_job_is_retried_by_the_next_run() {
    let server = RedisServer::start();
    let run = |owner: &str, job: &str| {
        let out = run_bounded(
            &mut redis_mutex(
                &server,
                &[
                    "run",
                    "--once-per",
                    LONG_PERIOD,
                    "--owner-id",
                    owner,
                    "--done-exit-code",
                    "0",
                    "sync",
                    "--",
                    "sh",
                    "-c",
                    job,
                ],
            ),
            HANG,
        );
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, _, _) = run("host-1", "echo ran; exit 3");
    assert_eq!(code, Some(3), "the failed job's own status");
    let (code, said, _) = run("host-2", "echo ran");
    assert_eq!((code, said.as_str()), (Some(0), "ran\n"), "the retry ran");
    let (code, said, stderr) = run("host-3", "echo ran");
    assert_eq!(code, Some(0), "--done-exit-code 0: {stderr}");
    assert_eq!(said, "", "ran twice in one window");
    assert!(stderr.contains("by host-2 at"), "{stderr}");
}

#[test]
fn once_per_a_run_whose_lock_was_lost_leaves_the_window_open() {
    let server = RedisServer::start();
    let dir = scratch("once-lost");
    let go = dir.join("go");
    // Exits 0 once the test says go: after the test reset its lock.
    let job = format!(
        "trap '' TERM; echo ready; i=0; while [ ! -e {} ] && [ $i -lt 400 ]; do sleep 0.05; \
         i=$((i+1)); done",
        go.display()
    );
    let mut cmd = redis_mutex(
        &server,
        &[
            "run",
            "--once-per",
            LONG_PERIOD,
            "--expire",
            "1500ms",
            "--kill-after",
            "20s",
            "lost",
            "--",
            "sh",
            "-c",
            &job,
        ],
    );
    let (mut runner, lines) = start(cmd.stderr(Stdio::piped()));
    lines.expect("ready", HANG);
    assert!(
        RedisMutex::new(server.pool(), "lost")
            .unwrap()
            .reset()
            .unwrap()
    );
    let mut stderr = runner.stderr.take().unwrap();
    let mut seen = String::new();
    // The runner says it lost the lock before the command exits (it ignores SIGTERM).
    let mut byte = [0u8; 1];
    while !seen.contains('\n') {
        let n = std::io::Read::read(&mut stderr, &mut byte).unwrap();
        assert!(n > 0, "stderr closed: {seen}");
        seen.push(byte[0] as char);
    }
    assert!(seen.contains("lost the lock"), "{seen}");
    std::fs::write(&go, "").unwrap();
    let status = wait_or_kill(&mut runner, HANG);
    assert_eq!(status.code(), Some(76), "{seen}");
    let mutex = RedisMutex::new(server.pool(), "lost").unwrap();
    let period = Duration::from_secs(1000 * 3600);
    assert!(
        mutex.period_window(period).unwrap().done.is_none(),
        "a run whose lock was lost marked its window done"
    );
}

#[test]
fn at_a_terminal_the_command_reads_it_and_a_ctrl_c_reaches_it_once() {
    let server = RedisServer::start();
    let dir = scratch("terminal");
    let go = dir.join("go");
    let child = dir.join("child.sh");
    std::fs::write(
        &child,
        format!(
            "trap 'echo int' INT\necho ready\nread x\necho got-$x\ni=0\n\
             while [ ! -e {} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\necho bye\n",
            go.display()
        ),
    )
    .unwrap();
    // script(1) runs the runner on a terminal of its own, in the terminal's foreground.
    let line = format!(
        "REDIS_URL={} {} run job -- sh {}; echo status=$?",
        server.url(),
        env!("CARGO_BIN_EXE_redis-mutex"),
        child.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).stdin(Stdio::piped());
    let (mut terminal, lines) = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(mut terminal) => {
            let lines = Lines::new(terminal.stdout.take().unwrap());
            (terminal, lines)
        }
        Err(e) => panic!("this test needs script(1) from util-linux: {e}"),
    };
    let mut keys = terminal.stdin.take().unwrap();
    lines.expect("ready", HANG);
    std::io::Write::write_all(&mut keys, b"hello\n").unwrap();
    lines.expect("got-hello", HANG);
    std::io::Write::write_all(&mut keys, b"\x03").unwrap(); // Ctrl-C
    lines.expect("int", HANG);
    std::fs::write(&go, "").unwrap();
    let rest = lines.rest(HANG);
    wait_or_kill(&mut terminal, HANG);
    let transcript = lines.transcript();
    assert_eq!(
        transcript.matches("int").count(),
        1,
        "the Ctrl-C reached the command once: {transcript}"
    );
    assert!(
        rest.contains("bye") && rest.contains("status=0"),
        "{transcript}"
    );
}
