//! Group commit: one thread owns the log, batches concurrent submissions into one write and
//! one `fdatasync`, applies them to in-memory state in log order, then acknowledges.

use crate::log::{EventLog, Rolled};
use crate::{Result, StorageError};
use cascade_core::Mutation;
use parking_lot_free::Handle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Applies a committed mutation (with its record sequence number) to in-memory state; runs on
/// the writer thread, in log order.
pub type Applier = Box<dyn FnMut(&Mutation, u64) + Send>;

enum Msg {
    Write {
        m: Mutation,
        ack: Option<oneshot::Sender<Result<u64>>>,
    },
    /// Several mutations committed in one group: written together, synced once, applied in
    /// order, acknowledged (with the last one's sequence number) or refused together.
    WriteAll {
        ms: Vec<Mutation>,
        ack: oneshot::Sender<Result<u64>>,
    },
    Close(oneshot::Sender<()>),
    Roll(oneshot::Sender<Result<Rolled>>),
}

/// Most submissions folded into one group commit.
const MAX_GROUP: usize = 1024;

/// Handle to the writer thread. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    handle: Handle,
    healthy: Arc<AtomicBool>,
}

impl LogWriter {
    /// Starts the writer thread over an opened log. `queue` bounds the submissions waiting
    /// for a commit: past it, `submit` waits (back-pressure) and `submit_nowait` refuses.
    pub fn spawn(log: EventLog, apply: Applier, queue: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let join = std::thread::Builder::new()
            .name("cascade-log-writer".into())
            .spawn(move || run(log, apply, rx, h))
            .map_err(|e| StorageError::io("cascade-log-writer thread", e))?;
        Ok(Self {
            tx,
            handle: Handle::new(join),
            healthy,
        })
    }

    /// Appends `m`, waits until it is durable and applied, and returns its sequence number.
    pub async fn submit(&self, m: Mutation) -> Result<u64> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Write { m, ack: Some(ack) })
            .await
            .map_err(|_| StorageError::Closed)?;
        done.await.map_err(|_| StorageError::Closed)?
    }

    /// Appends every mutation of `ms` in one group commit (none is applied unless all are
    /// durable), waits, and returns the last one's sequence number.
    pub async fn submit_all(&self, ms: Vec<Mutation>) -> Result<u64> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::WriteAll { ms, ack })
            .await
            .map_err(|_| StorageError::Closed)?;
        done.await.map_err(|_| StorageError::Closed)?
    }

    /// Queues `m` without waiting (side effects such as impression logging). Refuses with
    /// [`StorageError::Busy`] rather than block when the queue is full.
    pub fn submit_nowait(&self, m: Mutation) -> Result<()> {
        self.tx
            .try_send(Msg::Write { m, ack: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StorageError::Busy,
                mpsc::error::TrySendError::Closed(_) => StorageError::Closed,
            })
    }

    /// Commits what is queued, then starts a new segment, so that everything acknowledged so
    /// far lies in closed segments (what compaction rewrites).
    pub async fn roll(&self) -> Result<Rolled> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Roll(tx))
            .await
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// [`LogWriter::roll`] from a thread outside the async runtime (the compactor).
    pub fn roll_blocking(&self) -> Result<Rolled> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Roll(tx))
            .map_err(|_| StorageError::Closed)?;
        rx.blocking_recv().map_err(|_| StorageError::Closed)?
    }

    /// False once a write failed in a way that leaves the log or the state in doubt (the
    /// writer then refuses every write), or the writer thread is gone.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst) && !self.tx.is_closed()
    }

    /// Commits everything queued, then stops the thread. Later submissions fail with
    /// [`StorageError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.handle.join();
    }
}

fn run(
    mut log: EventLog,
    mut apply: Applier,
    mut rx: mpsc::Receiver<Msg>,
    healthy: Arc<AtomicBool>,
) {
    let mut group: Vec<(Mutation, Option<oneshot::Sender<Result<u64>>>)> = Vec::new();
    let mut close: Option<oneshot::Sender<()>> = None;
    let mut roll: Option<oneshot::Sender<Result<Rolled>>> = None;
    while close.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write { m, ack } => group.push((m, ack)),
                Msg::WriteAll { ms, ack } => {
                    // Never split: the group may exceed MAX_GROUP by this one submission.
                    let last = ms.len().saturating_sub(1);
                    let mut ack = Some(ack);
                    for (k, m) in ms.into_iter().enumerate() {
                        group.push((m, if k == last { ack.take() } else { None }));
                    }
                }
                Msg::Close(done) => {
                    close = Some(done);
                    break;
                }
                Msg::Roll(done) => {
                    roll = Some(done);
                    break;
                }
            }
            if group.len() >= MAX_GROUP {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !group.is_empty() {
            if !healthy.load(Ordering::SeqCst) {
                fail(
                    &mut group,
                    "the event log is in an unknown state after a failed write; restart the server",
                );
            } else if let Err(reason) = commit(&mut log, &mut apply, &mut group) {
                // The log or the state can no longer be trusted to match: refuse all writes.
                tracing::error!(%reason, "log writer poisoned");
                healthy.store(false, Ordering::SeqCst);
            }
        }
        if let Some(done) = roll.take() {
            let r = if healthy.load(Ordering::SeqCst) {
                log.roll_now()
            } else {
                Err(StorageError::Encode("the log writer is poisoned".into()))
            };
            let _ = done.send(r);
        }
    }
    if let Some(done) = close {
        let _ = done.send(());
    }
    tracing::debug!("log writer stopped");
}

fn fail(group: &mut Vec<(Mutation, Option<oneshot::Sender<Result<u64>>>)>, msg: &str) {
    for (_, ack) in group.drain(..) {
        if let Some(ack) = ack {
            let _ = ack.send(Err(StorageError::Encode(msg.to_string())));
        }
    }
    metrics::counter!("cascade_log_commit_failures_total").increment(1);
}

/// Writes, syncs and applies one group. `Err` means the writer must be poisoned: a rollback
/// failed (the log may hold unacknowledged bytes) or applying panicked (state is partial).
fn commit(
    log: &mut EventLog,
    apply: &mut Applier,
    group: &mut Vec<(Mutation, Option<oneshot::Sender<Result<u64>>>)>,
) -> std::result::Result<(), String> {
    let start = Instant::now();
    // Rolling only between groups keeps every group inside one segment, so it can be undone.
    if let Err(e) = log.roll_if_full() {
        fail(group, &e.to_string());
        return Ok(());
    }
    let before = log.position();
    let mut seqs = Vec::with_capacity(group.len());
    let mut failure = None;
    for (m, _) in group.iter() {
        match log.append(m) {
            Ok(seq) => seqs.push(seq),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none()
        && let Err(e) = log.sync()
    {
        failure = Some(e);
    }
    if let Some(err) = failure {
        // Nothing of a failed group is acknowledged, so nothing unacknowledged stays in the log.
        tracing::error!(error = %err, "group commit failed; rolling back");
        let rolled = log.rollback(before);
        fail(group, &err.to_string());
        return rolled.map_err(|e| format!("rollback failed: {e}"));
    }
    metrics::histogram!("cascade_log_commit_seconds").record(start.elapsed().as_secs_f64());
    metrics::counter!("cascade_log_records_total").increment(group.len() as u64);
    for ((m, ack), seq) in group.drain(..).zip(seqs) {
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(&m, seq)));
        if applied.is_err() {
            if let Some(ack) = ack {
                let _ = ack.send(Err(StorageError::Encode(
                    "applying the mutation failed".into(),
                )));
            }
            return Err(format!("applying record {seq} panicked"));
        }
        if let Some(ack) = ack {
            let _ = ack.send(Ok(seq));
        }
    }
    Ok(())
}

/// A join handle that can be joined once from `&self`.
mod parking_lot_free {
    use std::sync::Mutex;
    use std::thread::JoinHandle;

    #[derive(Debug)]
    pub struct Handle(Mutex<Option<JoinHandle<()>>>);

    impl Handle {
        pub fn new(j: JoinHandle<()>) -> Self {
            Self(Mutex::new(Some(j)))
        }

        pub fn join(&self) {
            let j = match self.0.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            };
            if let Some(j) = j {
                let _ = j.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogOptions;
    use cascade_core::{Event, EventKind, Target};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn ev(i: usize) -> Mutation {
        Mutation::Events(vec![Event {
            kind: EventKind::Like,
            user_id: format!("u{i}"),
            target: Target::Item("x".into()),
            value: 1.0,
            fraction: None,
            ts: 1,
            request_id: None,
            surface: None,
            position: None,
            propensity: None,
            experiment: None,
        }])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_all_durable_and_applied() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (log, _) = EventLog::open(LogOptions::new(tmp.path()), &mut |_| {}).expect("open");
        let applied = Arc::new(AtomicU64::new(0));
        let a = applied.clone();
        let w = Arc::new(
            LogWriter::spawn(
                log,
                Box::new(move |_, _| {
                    a.fetch_add(1, Ordering::SeqCst);
                }),
                64,
            )
            .expect("spawn"),
        );
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move { w.submit(ev(i)).await }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.expect("join").expect("submit"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..200).collect::<Vec<u64>>());
        // Acknowledged means applied.
        assert_eq!(applied.load(Ordering::SeqCst), 200);
        w.close().await;
        assert!(matches!(w.submit(ev(0)).await, Err(StorageError::Closed)));
        let all = EventLog::read_all(tmp.path()).expect("read");
        assert_eq!(all.len(), 200);
    }

    /// A submission of several mutations lands contiguously among concurrent ones, in its
    /// order, applied before the one acknowledgement (the last one's sequence number).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_submission_of_several_lands_contiguously_and_in_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (log, _) = EventLog::open(LogOptions::new(tmp.path()), &mut |_| {}).expect("open");
        let applied = Arc::new(AtomicU64::new(0));
        let a = applied.clone();
        let w = Arc::new(
            LogWriter::spawn(
                log,
                Box::new(move |_, _| {
                    a.fetch_add(1, Ordering::SeqCst);
                }),
                8,
            )
            .expect("spawn"),
        );
        let mut tasks = Vec::new();
        for i in 0..50 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move { w.submit(ev(i)).await }));
        }
        let many: Vec<Mutation> = (1000..1005).map(ev).collect();
        let seq = w.submit_all(many.clone()).await.expect("submit_all");
        assert!(
            applied.load(Ordering::SeqCst) > seq,
            "applied before the ack"
        );
        for t in tasks {
            t.await.expect("join").expect("submit");
        }
        w.close().await;
        let all = EventLog::read_all(tmp.path()).expect("read");
        let at = seq as usize - 4;
        assert_eq!(&all[at..=seq as usize], &many[..]);
    }
}
