//! A panic inside a tokio task while `main` waits for something that never comes: with
//! `peerweb_net::exit_on_panic` (what `peerweb` installs) the process must end at once with
//! exit code 101 instead of hanging. Used by `tests/cli.rs`.
//!
//! Usage: `panic_in_task`

use std::time::Duration;

#[tokio::main]
async fn main() {
    peerweb_net::exit_on_panic();
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        panic!("a driver task failed");
    });
    // What `peerweb join` did after the glare panic: wait on a task that is gone.
    std::future::pending::<()>().await;
}
