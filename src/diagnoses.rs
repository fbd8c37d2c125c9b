//! The [mismatch doctor](crate::doctor)'s background queue: a refused request is answered at
//! once, and its diagnosis runs afterwards on a thread of the layer's own.
//!
//! One thread per layer (shared by its clones), started with the first diagnosis and ended
//! when the last clone of the layer and its services is dropped. It is fed through a bounded
//! queue of [`QUEUE_CAPACITY`] requests: when it is full the request is not diagnosed (and
//! counted in [`Doctor::dropped`] and, with the `metrics` feature, as `result="dropped"`), so a
//! flood holds at most that many requests in memory, whatever the per-second budget. A
//! diagnosis that panics (in a sink, say) is caught: the thread goes on.

use std::{
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
};

use bytes::Bytes;
use http::request::Parts;

use crate::{
    Credentials, Secret,
    config::{OriginalUriFn, PeerAddrFn},
    doctor::{self, Clues, Diagnosis, DiagnosisBudget},
    verify::WebhookRequest,
};

/// The most requests waiting for a diagnosis, per layer.
pub(crate) const QUEUE_CAPACITY: usize = 16;

/// Work for the doctor's thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A layer's doctor: its per-second budget and its queue.
pub(crate) struct Doctor {
    budget: DiagnosisBudget,
    queue: OnceLock<Option<SyncSender<Job>>>,
    dropped: AtomicU64,
}

impl fmt::Debug for Doctor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doctor")
            .field("budget", &self.budget)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Doctor {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            budget: DiagnosisBudget::new(per_second),
            queue: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Takes one diagnosis from this second's budget; `false` when it is spent.
    pub(crate) fn try_take(&self) -> bool {
        self.budget.try_take()
    }

    /// Hands `job` to the doctor's thread (started on first use). When the queue is full, or
    /// the thread could not be started, the job is dropped and counted.
    pub(crate) fn submit(&self, job: Job) {
        let queue = self.queue.get_or_init(start);
        let refused = match queue {
            Some(sender) => match sender.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        crate::metrics::diagnosis_dropped();
        drop(refused);
    }

    /// How many requests were not diagnosed because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the thread; it runs jobs until every sender (the [`Doctor`]) is gone.
fn start() -> Option<SyncSender<Job>> {
    let (sender, jobs) = sync_channel::<Job>(QUEUE_CAPACITY);
    let spawned = std::thread::Builder::new()
        .name("tower-twilio-doctor".to_owned())
        .spawn(move || {
            for job in jobs {
                // A panicking sink must not end the doctor.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        });
    match spawned {
        Ok(_) => Some(sender),
        Err(error) => {
            tracing::error!(
                target: crate::events::TRACING_TARGET,
                %error,
                "the mismatch doctor's thread could not be started: mismatches are not diagnosed"
            );
            None
        }
    }
}

/// A refused request as the doctor needs it: moved off the request path whole (nothing is
/// copied for it there), with the credentials it was verified with.
pub(crate) struct Case {
    pub(crate) parts: Parts,
    pub(crate) body: Bytes,
    /// The URL verification used.
    pub(crate) url: String,
    /// The resolver's credentials, or for an unknown account the key nobody holds that it was
    /// verified with: the request path does the same either way.
    pub(crate) credentials: Credentials,
    pub(crate) shared_key_id: Option<Arc<str>>,
    pub(crate) max_params: usize,
    pub(crate) original_uri: Option<OriginalUriFn>,
    pub(crate) peer_addr: PeerAddrFn,
}

impl Case {
    /// Runs the doctor (see [`doctor::diagnose`]): on the doctor's thread.
    pub(crate) fn diagnose(&self) -> Option<Diagnosis> {
        let parts = &self.parts;
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut clues = Clues::new(&parts.headers, path_and_query);
        let original = self
            .original_uri
            .as_ref()
            .and_then(|original_uri| original_uri(&parts.extensions));
        if let Some(original) = &original {
            clues = clues.original_uri(original.path_and_query().map_or("/", |pq| pq.as_str()));
        }
        if let Some(peer) = (self.peer_addr)(&parts.extensions) {
            clues = clues.peer(peer);
        }
        let key_id = self.shared_key_id.as_deref();
        let secrets: Vec<&Secret> = self
            .credentials
            .iter()
            .filter(|c| c.applies_to(key_id))
            .map(|c| c.secret())
            .collect();
        // The request with its headers: the doctor verifies it again at other URLs.
        let request =
            WebhookRequest::from_parts(&parts.method, &self.url, &parts.headers, &self.body)
                .max_params(self.max_params);
        let diagnosis = doctor::diagnose(&request, &clues, &secrets);
        crate::metrics::diagnosis(diagnosis.is_some());
        diagnosis
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Barrier, mpsc},
        time::Duration,
    };

    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_a_panic_does_not_end_the_thread() {
        let doctor = Doctor::new(1000);
        // Hold the thread in a first job, then fill the queue.
        let (entered, wait_entered) = mpsc::channel();
        let gate = Arc::new(Barrier::new(2));
        let held = Arc::clone(&gate);
        doctor.submit(Box::new(move || {
            entered.send(()).unwrap();
            held.wait();
            panic!("a sink panicked");
        }));
        wait_entered.recv_timeout(Duration::from_secs(30)).unwrap();
        let (done, finished) = mpsc::channel();
        for _ in 0..QUEUE_CAPACITY + 5 {
            let done = done.clone();
            doctor.submit(Box::new(move || done.send(()).unwrap()));
        }
        assert_eq!(doctor.dropped(), 5);
        gate.wait();
        for _ in 0..QUEUE_CAPACITY {
            finished.recv_timeout(Duration::from_secs(30)).unwrap();
        }
    }

    #[test]
    fn the_thread_ends_with_the_doctor() {
        std::thread_local! {
            static KEPT: std::cell::RefCell<Option<mpsc::Sender<()>>> =
                const { std::cell::RefCell::new(None) };
        }
        let doctor = Doctor::new(1000);
        // The doctor's thread keeps a sender until it exits; nothing is ever sent on it.
        let (kept, exited) = mpsc::channel::<()>();
        doctor.submit(Box::new(move || {
            KEPT.with(|k| *k.borrow_mut() = Some(kept));
        }));
        drop(doctor);
        assert_eq!(
            exited.recv_timeout(Duration::from_secs(30)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
