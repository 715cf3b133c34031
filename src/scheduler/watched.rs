//! A pacer that tells the live view ([`Waits`]) which slots it handed out, so that the
//! view can say what the run waits for. It paces exactly as the pacer it wraps. Here, not
//! in `report`, so that the report knows nothing of the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::pacer::Pacer;
use crate::report::progress::{Endpoint, Progress, Waits};

/// `inner`, watched for `endpoint`.
struct WatchedPacer {
    inner: Arc<dyn Pacer>,
    endpoint: Endpoint,
    waits: Arc<Waits>,
}

impl Pacer for WatchedPacer {
    fn reserve(&self, earliest: Instant) -> BoxFuture<'_, Instant> {
        Box::pin(async move {
            let slot = self.inner.reserve(earliest).await;
            self.waits.reserved(self.endpoint, slot);
            slot
        })
    }

    fn hold_off(&self, now: Instant, wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.hold_off(now, wait).await;
            self.waits.held(self.endpoint, now, wait);
        })
    }

    fn lapsed(&self, slot: Instant, now: Instant) -> bool {
        self.inner.lapsed(slot, now)
    }

    fn take(&self, slot: Instant, now: Instant) -> Option<Instant> {
        self.inner.take(slot, now)
    }
}

/// `pacer`, reporting its slots to `progress`'s view (as it is when there is no view).
pub fn watch(progress: &Progress, endpoint: Endpoint, pacer: Arc<dyn Pacer>) -> Arc<dyn Pacer> {
    match progress.waits() {
        Some(waits) => Arc::new(WatchedPacer {
            inner: pacer,
            endpoint,
            waits,
        }),
        None => pacer,
    }
}
