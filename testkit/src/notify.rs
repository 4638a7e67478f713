//! An sd_notify receiver: an `AF_UNIX` datagram socket in a temporary directory whose messages a
//! thread collects, as systemd would receive them from a `Type=notify` service.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One datagram (it can hold several `KEY=value` lines).
#[derive(Debug, Clone)]
pub struct Message {
    pub at: Instant,
    pub text: String,
}

impl Message {
    /// Its `KEY=value` lines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.lines().filter(|l| !l.is_empty())
    }
}

type Shared = Arc<(Mutex<Vec<Message>>, Condvar)>;

/// The socket; set `NOTIFY_SOCKET` to [`NotifySocket::path`].
pub struct NotifySocket {
    _dir: TempDir,
    path: PathBuf,
    shared: Shared,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("notify-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let shared: Shared = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::SeqCst) {
                    // Passed file descriptors (systemd-notify's BARRIER=1) are dropped, and so
                    // closed, by a plain recv.
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        shared.0.lock().unwrap().push(Message {
                            at: Instant::now(),
                            text,
                        });
                        shared.1.notify_all();
                    }
                }
            })
        };
        NotifySocket {
            _dir: dir,
            path,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `("NOTIFY_SOCKET", <path>)`, for [`crate::hail::Hail::spawn_env`].
    pub fn env(&self) -> (&'static str, &str) {
        (
            "NOTIFY_SOCKET",
            self.path.to_str().expect("UTF-8 socket path"),
        )
    }

    /// Every datagram so far, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.0.lock().unwrap().clone()
    }

    /// Every `KEY=value` line so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// Waits until some line satisfies `pred` and returns it (the first such line), or `None`
    /// after `timeout`.
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.shared;
        let mut msgs = lock.lock().unwrap();
        loop {
            if let Some(l) = msgs.iter().flat_map(|m| m.lines()).find(|l| pred(l)) {
                return Some(l.to_string());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            msgs = cvar.wait_timeout(msgs, left).unwrap().0;
        }
    }

    /// Waits for exactly this line, e.g. `"READY=1"`.
    pub fn wait_for_line(&self, line: &str, timeout: Duration) -> bool {
        self.wait_for(|l| l == line, timeout).is_some()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_datagrams() {
        let n = NotifySocket::bind();
        let s = UnixDatagram::unbound().unwrap();
        s.send_to(b"READY=1\nSTATUS=idle", n.path()).unwrap();
        assert!(n.wait_for_line("READY=1", Duration::from_secs(5)));
        assert_eq!(
            n.wait_for(|l| l.starts_with("STATUS="), Duration::ZERO)
                .unwrap(),
            "STATUS=idle"
        );
        assert_eq!(n.lines(), ["READY=1", "STATUS=idle"]);
    }
}
