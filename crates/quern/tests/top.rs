//! `quern top` in a real terminal (tmux), against the real server: it shows
//! the queues, a running task's progress, the live worker and the latest
//! failure, follows the server as it changes, and quits on `q`.

mod support;

use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::{Server, eventually, id_of, token_of};

const LIMIT: Duration = Duration::from_secs(30);

/// A tmux session running one command; killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(name: &str, command: &[&str]) -> Tmux {
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", name, "-x", "160", "-y", "50"])
            .args(command)
            .status()
            .expect("tmux runs (CI installs it)");
        assert!(status.success(), "tmux new-session failed");
        Tmux { name: name.to_owned() }
    }

    /// The screen as text, or `None` once the session is gone.
    fn screen(&self) -> Option<String> {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.name]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn keys(&self, keys: &str) {
        let status = Command::new("tmux").args(["send-keys", "-t", &self.name, keys]).status().expect("tmux runs");
        assert!(status.success(), "tmux send-keys failed");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ =
            Command::new("tmux").args(["kill-session", "-t", &self.name]).stderr(std::process::Stdio::null()).status();
    }
}

#[tokio::test]
async fn top_shows_queues_progress_workers_and_failures_and_quits_on_q() {
    let server = Server::start();
    let api = server.api();
    for _ in 0..4 {
        api.submit(json!({"name": "email.send", "queue": "mail"})).await;
    }
    let leased = api.lease_from("w-top", &["mail"], 2, 1_000, 60_000).await;
    assert_eq!(leased.len(), 2);
    let (running, failing) = (&leased[0], &leased[1]);
    let progress = json!({"percent": 40, "message": "halfway there"});
    api.heartbeat("w-top", &id_of(running), &token_of(running), Some(progress)).await;
    api.fail("w-top", &id_of(failing), &token_of(failing), "SMTP refused", false).await;

    let session = format!("quern-top-{}", std::process::id());
    let top = Tmux::start(&session, &[env!("CARGO_BIN_EXE_quern"), "top", "--server", &server.url, "--interval", "1s"]);
    let shown = |screen: &str, all: &[&str]| all.iter().all(|s| screen.contains(s));
    let first = eventually("top shows the server", LIMIT, async || {
        let screen = top.screen()?;
        shown(&screen, &["mail", "email.send", "40%", "halfway there", "w-top", "exception: SMTP refused"])
            .then_some(screen)
    })
    .await;
    assert!(first.contains("QUEUED"), "{first}");

    // It follows the server: the running task ends and leaves the view.
    api.succeed("w-top", &id_of(running), &token_of(running), json!(1)).await;
    eventually("top follows the server", LIMIT, async || {
        let screen = top.screen()?;
        (!screen.contains("halfway there") && screen.contains("running (0 shown)")).then_some(())
    })
    .await;

    top.keys("q");
    eventually("top quits on q", LIMIT, async || top.screen().is_none().then_some(())).await;
}

#[test]
fn top_without_a_server_says_so_and_exits_two() {
    let port = support::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["top", "--server", &format!("http://{port}")])
        .output()
        .expect("quern runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"), "{out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_quern")).args(["top", "--interval", "100ms"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "an interval under a second is refused");
}
