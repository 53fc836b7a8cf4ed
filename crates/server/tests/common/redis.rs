//! A real `redis-server` for tests: private to the test, on a Unix socket in its own temporary
//! directory (no TCP port at all), ended by PID when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    /// `redis+unix:///…/r.sock`
    pub url: String,
    persist: bool,
}

impl RedisServer {
    /// Starts one; with `persist`, every write is in its append-only file before it is
    /// acknowledged, so a restart ([`RedisServer::restart`]) keeps what it accepted.
    pub async fn start(persist: bool) -> RedisServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peerweb-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory for redis-server");
        let url = format!("redis+unix://{}", dir.join("r.sock").display());
        let mut r = RedisServer {
            child: None,
            dir,
            url,
            persist,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let sock = self.dir.join("r.sock");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("");
        if self.persist {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line
                    .to_ascii_lowercase()
                    .contains("ready to accept connections")
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "redis-server did not get ready: {ready:?}"
        );
        // Keep reading (and dropping) its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Ends it abruptly (SIGKILL): its clients see the connection drop.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same socket (and, if persistent, with what it had).
    pub async fn restart(&mut self) {
        self.kill().await;
        let _ = std::fs::remove_file(self.dir.join("r.sock"));
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
