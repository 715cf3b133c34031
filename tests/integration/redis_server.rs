//! A real `redis-server` for the shared-limit tests, on a free loopback port, without
//! persistence, killed when dropped. Where it is not installed the tests that need it
//! are skipped with a line saying so, except under CI (`CI=true`), where they fail:
//! `.ci/run` installs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts one, with `requirepass` when `password` is given; `None` when redis-server
    /// is not installed and this is not CI.
    pub fn start(password: Option<&str>) -> Option<RedisServer> {
        RedisServer::start_with(password, &[])
    }

    /// Starts one as [`RedisServer::start`] does, with `args` added to its command line
    /// (e.g. `--replicaof`).
    pub fn start_with(password: Option<&str>, args: &[&str]) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is not installed, and CI must run the shared-limit tests (.ci/run installs it)"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        // A port that was free a moment ago; another taker in between makes the server
        // exit, and the next port is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let mut command = Command::new("redis-server");
            command.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            if let Some(password) = password {
                command.args(["--requirepass", password]);
            }
            command.args(args);
            let child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let mut server = RedisServer {
                child,
                port,
                password: password.map(str::to_owned),
            };
            if server.wait_ready() {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of five ports");
    }

    /// `redis://[:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A plain connection, for the tests' own looks and writes.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("the test connects to its redis-server")
    }

    /// Kills it at once (SIGKILL), as a crash or a lost host would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it answers PING within a few seconds; false when it exited.
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let pong = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
