use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::proxy::HoldingProxy;
use crate::support::{HANG, RedisServer};
use redis_mutex::{Pool, RedisMutex, RedisRwLock, RedisSemaphore};

struct Monitor {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(HANG)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "+OK");
        Monitor { reader, port }
    }

    fn finish(mut self) -> Vec<String> {
        let marker = "late-resets-monitor-end";
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let _: String = redis::cmd("ECHO").arg(marker).query(&mut conn).unwrap();
        let mut lines = Vec::new();
        for _ in 0..10_000 {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.contains(marker) {
                return lines;
            }
            lines.push(line.trim_end().to_owned());
        }
        panic!("no marker");
    }
}

#[test]
fn probe() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let op_pool = proxy.pool_with(Pool::builder().max_size(4).min_idle(0));
    let m = RedisMutex::new(server.pool(), "m").unwrap();
    let g = m.lock().unwrap();
    let op = RedisMutex::new(op_pool.clone(), "m").unwrap();
    let mon = Monitor::start(server.port());
    println!("mutex reset: {:?}", op.reset());
    for l in mon.finish() {
        println!("  {l}");
    }
    drop(g);
    let r = RedisRwLock::new(server.pool(), "a/b").unwrap();
    let rg = r.read().unwrap();
    let op = RedisRwLock::new(op_pool.clone(), "a/b").unwrap();
    let mon = Monitor::start(server.port());
    println!("rw reset: {:?}", op.reset());
    for l in mon.finish() {
        println!("  {l}");
    }
    drop(rg);
    let s = RedisSemaphore::new(server.pool(), "s", 2).unwrap();
    let p = s.acquire().unwrap();
    let op = RedisSemaphore::new(op_pool.clone(), "s", 2).unwrap();
    let mon = Monitor::start(server.port());
    println!("sem reset: {:?}", op.reset());
    for l in mon.finish() {
        println!("  {l}");
    }
    drop(p);
    let _ = Duration::ZERO;
}
