//! The readers: a fixed pool of threads, each with a connection of its own
//! (opened at its first read), taking reads from one queue.
//!
//! Invariant: at most [`MAX_READERS`] reader threads and connections exist,
//! however many clients read at once; further reads wait in the queue. A
//! read per blocking task of the runtime, as before, started a thread and a
//! connection (with its page cache) per concurrent client: 2,000 clients
//! reading at once left over 500 threads and hundreds of megabytes.

use super::schema;
use crate::error::backend;
use crate::{Result, StoreError};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

/// Reader threads (and connections) at most.
pub(super) const MAX_READERS: usize = 8;

/// A read, handed the thread's connection (or why it could not be opened).
type Read = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// The reader pool. Dropping it (or [`Readers::close`]) lets its threads
/// finish the reads queued and end.
pub(super) struct Readers {
    queue: Mutex<Option<mpsc::Sender<Read>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Readers {
    /// Starts the threads reading the database at `path`.
    pub(super) fn start(path: PathBuf, durability: schema::Durability) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Read>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(MAX_READERS);
        for i in 0..MAX_READERS {
            let (rx, path) = (rx.clone(), path.clone());
            let thread = std::thread::Builder::new()
                .name(format!("quern-sqlite-r{i}"))
                .spawn(move || serve(&rx, &path, durability))
                .map_err(backend)?;
            threads.push(thread);
        }
        Ok(Self { queue: Mutex::new(Some(tx)), threads: Mutex::new(threads) })
    }

    /// Runs `f` on a reader's connection, waiting for a free reader.
    pub(super) async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let read: Read = Box::new(move |conn| {
            let _ = tx.send(conn.and_then(f));
        });
        {
            let queue = self.queue.lock().map_err(|_| StoreError::Closed)?;
            queue.as_ref().ok_or(StoreError::Closed)?.send(read).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ends the threads after the reads queued. Safe to call twice.
    pub(super) fn close(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// One reader thread: takes reads until the queue closes.
fn serve(queue: &Mutex<mpsc::Receiver<Read>>, path: &Path, durability: schema::Durability) {
    let mut conn: Option<Connection> = None;
    loop {
        let Ok(read) = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ())) else { return };
        if conn.is_none() {
            match open(path, durability) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    read(Err(e));
                    continue;
                }
            }
        }
        read(conn.as_ref().ok_or(StoreError::Closed));
    }
}

fn open(path: &Path, durability: schema::Durability) -> Result<Connection> {
    let c = Connection::open(path).map_err(backend)?;
    schema::configure(&c, durability).map_err(backend)?;
    Ok(c)
}
