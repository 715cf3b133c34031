//! The one owner of the run state: a single `select!` over finished executors, journal
//! acknowledgements, the first signal, the deadline and the report timer. It feeds every
//! event to [`RunState::handle`], journals what the event and the resulting actions say,
//! hands the other actions to executors, and rewrites `results.csv` as variants end.
//!
//! An ended variant's record leaves the run state at once for [`Results`] (spooled rows):
//! the coordinator's memory and each event's work stay bounded by what is in flight.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn, Instrument};

use super::events::{end_record, journal_record, Action, Event, StopReason};
use super::executor::Executor;
use super::state::{Ended, RunState};
use crate::journal::writer::JournalWriter;
use crate::journal::JournalError;
use crate::report;
use crate::report::page_stamp::{self, PageWriters, PageWritten};
use crate::report::progress::{Change, Progress, Snapshot};
use crate::report::results::{Results, Unfinished};
use crate::report::shards::{Merged, ShardPart};
use crate::variant::{VariantId, VariantTable};

/// How often `results.csv` is rewritten at most while variants end (longer when writing
/// is slow, so that a huge report never takes over the run).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What stops the run from outside.
pub struct Stops {
    /// Cancelled by the first SIGINT/SIGTERM.
    pub interrupted: CancellationToken,
    /// After this, nothing new is submitted.
    pub deadline: Option<Duration>,
}

pub(super) struct Coordinator {
    pub state: RunState,
    pub executor: Arc<Executor>,
    pub journal: JournalWriter,
    /// Every ended variant's rows, and the report written from them.
    pub results: Results,
    /// What `results.csv` on disk holds, as far as the run knows: a report that would be
    /// the same file is not written again (a rerun that keeps every variant writes no
    /// report of 100,000 rows).
    pub report_on_disk: OnDisk,
    /// Spooling an ended variant's rows failed: the report cannot be complete.
    pub results_failed: Option<std::io::Error>,
    pub out_dir: PathBuf,
    /// A shard's run: where its part of `results.csv` goes, and how the folder's is merged.
    pub shard_part: Option<Arc<ShardPart>>,
    pub tasks: JoinSet<Option<Event>>,
    pub acks: FuturesUnordered<BoxFuture<'static, Result<(), JournalError>>>,
    /// A variant ended since `results.csv` was last written.
    pub report_dirty: bool,
    /// The live view: told every state change of a variant.
    pub progress: Progress,
}

/// What `results.csv` on disk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnDisk {
    /// What the run found there: the last report, when it could be opened
    /// ([`Snapshot::is_the_last_report`](crate::report::results::Snapshot::is_the_last_report)
    /// says whether a report is that file).
    LastReport,
    /// This run's report after that many variants were put, with nothing in flight.
    Settled(u64),
    /// This run's report with variants in flight.
    InFlight,
}

impl OnDisk {
    /// Whether the file holds the report of now: nothing in flight (`settled`), `puts`
    /// variants put, `is_the_last_report` saying whether the report is the one the run
    /// found. A report written with variants in flight holds no later one.
    fn holds(self, settled: bool, puts: u64, is_the_last_report: impl FnOnce() -> bool) -> bool {
        settled
            && match self {
                OnDisk::Settled(written) => written == puts,
                OnDisk::LastReport => is_the_last_report(),
                OnDisk::InFlight => false,
            }
    }
}

/// How a run ended: the state's counts and stops, and what the closing summary names.
pub struct RunEnd {
    /// The run state, every variant ended.
    pub state: RunState,
    /// The variants that did not finish, for the closing summary.
    pub unfinished: Unfinished,
}

/// The coordinator's parts that come from the run's inputs.
pub(super) struct Parts {
    pub journal: JournalWriter,
    pub results: Results,
    pub out_dir: PathBuf,
    pub shard_part: Option<ShardPart>,
    pub progress: Progress,
}

impl Coordinator {
    /// The owner of `state`, carrying out its actions through `executor`.
    pub fn new(state: RunState, executor: Arc<Executor>, parts: Parts) -> Self {
        Coordinator {
            state,
            executor,
            journal: parts.journal,
            results: parts.results,
            report_on_disk: OnDisk::LastReport,
            results_failed: None,
            out_dir: parts.out_dir,
            shard_part: parts.shard_part.map(Arc::new),
            tasks: JoinSet::new(),
            acks: FuturesUnordered::new(),
            report_dirty: false,
            progress: parts.progress,
        }
    }

    /// Runs every variant to its end for this run. An error only when `results.csv`
    /// cannot be written at the start or the end, or an executor panicked.
    pub async fn run(
        mut self,
        stops: Stops,
        first: Option<StopReason>,
        api_checked: Option<Result<(), crate::api::ApiError>>,
    ) -> std::io::Result<RunEnd> {
        self.take_waiting()?;
        // Before any work: a folder whose report cannot be written buys nothing.
        self.write_report().await?;
        self.merge_shards().await?;
        self.progress.begin(self.snapshot());
        self.begin(first, api_checked);
        self.drive(&stops).await?;
        while let Some(ack) = self.acks.next().await {
            self.on_ack(ack);
        }
        self.write_report().await?;
        // Held until the page is written from the merged file.
        let _merged = match self.merge_shards().await {
            Ok(merged) => merged,
            Err(err) => {
                // This shard's part is written: the next merge (another shard's end, or
                // `stembatch report`) puts it in.
                error!(error = %err, "cannot merge the shards' results into results.csv");
                None
            }
        };
        self.write_page().await;
        Ok(RunEnd {
            unfinished: self.results.unfinished(),
            state: self.state,
        })
    }

    /// The stop known before the start, what the balance check found of the API, then
    /// the first actions.
    fn begin(
        &mut self,
        first: Option<StopReason>,
        api_checked: Option<Result<(), crate::api::ApiError>>,
    ) {
        match first {
            Some(StopReason::Interrupted) => self.on_event(Event::Stop(StopReason::Interrupted)),
            // Said by whoever found it (the balance check): applied here without a word.
            Some(reason) => {
                let actions = self
                    .state
                    .handle(now(), chrono::Utc::now(), Event::Stop(reason));
                self.take_ended();
                self.dispatch_quietly(actions);
            }
            None => {}
        }
        if let Some(checked) = api_checked {
            self.on_event(Event::ApiChecked {
                error: checked.err(),
            });
        }
        let actions = self.state.start(now(), chrono::Utc::now());
        self.take_ended();
        self.dispatch(actions);
    }

    /// The loop: every event to the state until every variant's work is over; the report
    /// rewritten at most every [`REPORT_INTERVAL`] (longer when writing it is slow).
    async fn drive(&mut self, stops: &Stops) -> std::io::Result<()> {
        let deadline = stops.deadline.map(|d| Instant::now() + d);
        let (mut interrupted, mut deadline_passed) = (false, deadline.is_none());
        let mut report_due: Option<Instant> = None;
        let mut interval = REPORT_INTERVAL;
        while !(self.state.is_done() && self.tasks.is_empty()) {
            tokio::select! {
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined.expect("the set is not empty") {
                        Ok(Some(event)) => self.on_event(event),
                        Ok(None) => {}
                        Err(panicked) => return Err(self.abandon(panicked).await),
                    }
                }
                Some(ack) = self.acks.next(), if !self.acks.is_empty() => {
                    self.on_ack(ack);
                }
                _ = stops.interrupted.cancelled(), if !interrupted => {
                    interrupted = true;
                    self.on_event(Event::Stop(StopReason::Interrupted));
                }
                _ = sleep_until_opt(deadline), if !deadline_passed => {
                    deadline_passed = true;
                    self.on_event(Event::Stop(StopReason::Deadline));
                }
                _ = sleep_until_opt(report_due), if report_due.is_some() => {
                    let started = Instant::now();
                    self.progress_report().await;
                    interval = REPORT_INTERVAL.max(started.elapsed() * 10);
                    report_due = None;
                }
            }
            if std::mem::take(&mut self.report_dirty) {
                report_due.get_or_insert(Instant::now() + interval);
            }
        }
        Ok(())
    }

    /// The records the run starts from: the kept variants' ends, and what earlier runs
    /// left of those still to do (their rows until they end).
    fn take_waiting(&mut self) -> std::io::Result<()> {
        for (id, record) in self.state.waiting_records() {
            self.results.put_waiting(id, record)?;
        }
        for ended in self.state.drain_ended() {
            let Ended {
                id,
                record,
                kept_tracks,
            } = ended;
            self.results.put_ended(&id, record, &kept_tracks)?;
        }
        Ok(())
    }

    /// Moves the records of the variants that just ended out of the run state.
    fn take_ended(&mut self) {
        for ended in self.state.drain_ended() {
            let put = self
                .results
                .put_ended(&ended.id, ended.record, &ended.kept_tracks);
            if let Err(err) = put {
                if self.results_failed.is_none() {
                    error!(error = %err, "cannot keep the rows of ended variants for results.csv");
                    self.results_failed = Some(err);
                }
            }
        }
    }

    /// An executor panicked (a bug): stop everything, but let the submits on the wire be
    /// answered and the journal catch up before giving up.
    async fn abandon(&mut self, panicked: tokio::task::JoinError) -> std::io::Error {
        error!(error = %panicked, "an executor failed; stopping the run");
        self.executor.stop_submits.cancel();
        self.executor.stop_work.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Some(event)) = joined {
                self.on_event(event);
            }
        }
        while let Some(ack) = self.acks.next().await {
            self.on_ack(ack);
        }
        if let Err(err) = self.write_report().await {
            error!(error = %err, "cannot write results.csv");
        }
        std::io::Error::other(panicked)
    }

    fn on_event(&mut self, event: Event) {
        if let Some(record) = journal_record(&event) {
            self.acks.push(Box::pin(self.journal.enqueue(record)));
        }
        // A created task is a fact whatever the state makes of it next.
        let submitted = match &event {
            Event::Submitted { id, task_id, .. } => Some((id.clone(), task_id.clone())),
            _ => None,
        };
        let actions = self.state.handle(now(), chrono::Utc::now(), event);
        self.take_ended();
        if let Some((id, task_id)) = submitted {
            let task_id = task_id.as_str();
            self.report(&id, Change::Submitted { task_id });
        }
        self.dispatch(actions);
    }

    /// The one line that says the base URL cannot be used, naming it and why.
    fn unusable_line(&self) -> String {
        let why = self.state.unusable_base_url().unwrap_or("no answer");
        format!(
            "the base URL {} cannot be used ({why}); no call of this run reached the API, and nothing more was sent (hint: check --base-url, VIDGO_BASE_URL and api.base_url)",
            self.executor.client.base_url(),
        )
    }

    /// The counts the live view shows.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self.state.phase_counts(),
            tasks_created: self.state.tasks_created(),
        }
    }

    /// Tells the live view of a variant's change.
    fn report(&self, id: &VariantId, change: Change<'_>) {
        if let Some(variant) = self.executor.variants.get(id) {
            self.progress.report(&variant, change, self.snapshot());
        }
    }

    fn on_ack(&mut self, ack: Result<(), JournalError>) {
        if let Err(err) = ack {
            error!(error = %err, "cannot write the journal; buying nothing more");
            let disk_full = err.is_disk_full();
            self.on_event(Event::JournalFailed {
                id: None,
                disk_full,
            });
        }
    }

    fn dispatch_quietly(&mut self, actions: Vec<Action>) {
        for action in actions {
            if let Action::Stop(reason) = action {
                self.apply_stop(reason);
            } else {
                self.dispatch(vec![action]);
            }
        }
    }

    fn apply_stop(&self, reason: StopReason) {
        self.executor.stop_submits.cancel();
        if reason.stops_all_work() {
            self.executor.stop_work.cancel();
        }
    }

    fn dispatch(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::End { id, end } => {
                    self.report_dirty = true;
                    self.report(&id, Change::Ended { end: &end });
                    if let Some(record) = end_record(&id, &end) {
                        self.acks.push(Box::pin(self.journal.enqueue(record)));
                    }
                }
                Action::Stop(reason) => {
                    match reason {
                        StopReason::Interrupted | StopReason::Deadline => {
                            warn!("{}", reason.describe())
                        }
                        StopReason::UnusableBaseUrl => error!("{}", self.unusable_line()),
                        _ => error!("{}", reason.describe()),
                    }
                    self.apply_stop(reason);
                }
                work => {
                    match &work {
                        Action::Submit { id, after } => {
                            self.report(id, Change::Submitting { after: *after })
                        }
                        // Once per variant: its tracks are asked for together.
                        Action::Download { id, number: 1, .. } => {
                            self.report(id, Change::Downloading)
                        }
                        _ => {}
                    }
                    let span = variant_span(&self.executor.variants, &work);
                    let executor = Arc::clone(&self.executor);
                    self.tasks.spawn(executor.execute(work).instrument(span));
                }
            }
        }
    }

    /// Rewrites `results.csv` (the live view says the progress, every 30 s off a terminal).
    async fn progress_report(&mut self) {
        let written = match self.write_report().await {
            Ok(()) => self.merge_shards().await.map(drop),
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            let disk_full = crate::output_files::is_disk_full(&err);
            error!(error = %err, "cannot write results.csv; trying again later");
            if disk_full {
                self.on_event(Event::Stop(StopReason::Storage { disk_full }));
            }
        }
    }

    /// The listening page, from the results.csv just written: once, at the end, since it
    /// reads every track's peaks; with only its time changed when it would show the same
    /// (`report::page_stamp`). A page that cannot be written is said, and the run goes on
    /// to its exit code: results.csv is the record.
    async fn write_page(&self) {
        let dir = self.out_dir.clone();
        // The waveforms drawn as the tracks landed (this run's, and the journal's for earlier
        // ones), read in step with results.csv: the page reads from disk only tracks that
        // have none.
        let known = self.results.waves_in_order();
        let variants = Arc::clone(&self.executor.variants);
        let writers = match self.shard_part {
            Some(_) => PageWriters::EachShard,
            None => PageWriters::One,
        };
        let write = move || {
            let stems = report::choosing::stem_infos(&variants.stems(), &dir);
            page_stamp::write_page(&dir, known, &stems, writers)
        };
        match tokio::task::spawn_blocking(write).await {
            Ok(Ok(PageWritten::Whole(page))) => debug!(
                bytes = page.bytes,
                waveforms = page.waveforms,
                "report.html written"
            ),
            Ok(Ok(PageWritten::TimeOnly)) => {
                debug!("report.html shows this results.csv already: only its time written")
            }
            Ok(Err(err)) => error!(error = %err, "cannot write the listening page"),
            Err(err) => error!(error = %err, "cannot write the listening page"),
        }
    }

    /// A shard's run: `DIR/results.csv` from every shard's part, this one's just written.
    async fn merge_shards(&self) -> std::io::Result<Option<Merged>> {
        let Some(part) = self.shard_part.clone() else {
            return Ok(None);
        };
        let out_dir = self.out_dir.clone();
        tokio::task::spawn_blocking(move || part.merge_into(&out_dir))
            .await
            .map_err(std::io::Error::other)?
            .map(Some)
    }

    /// Rewrites this run's `results.csv`: the folder's, or a shard's part.
    /// A snapshot on the loop (the slot table and the records in flight), the writing
    /// off it.
    async fn write_report(&mut self) -> std::io::Result<()> {
        if let Some(err) = &self.results_failed {
            return Err(std::io::Error::new(err.kind(), err.to_string()));
        }
        let dir = match &self.shard_part {
            Some(part) => part.dir.clone(),
            None => self.out_dir.clone(),
        };
        // The run's journal, beside its report's index: the whole folder's, or the shard's.
        let journal = match &self.shard_part {
            Some(part) => part.dir.join(crate::journal::JOURNAL_FILE),
            None => crate::journal::state_dir(&self.out_dir).join(crate::journal::JOURNAL_FILE),
        };
        let settled = self.state.in_flight_records().next().is_none();
        let puts = self.results.puts();
        let snapshot = self.results.snapshot(self.state.in_flight_records());
        let unchanged = self
            .report_on_disk
            .holds(settled, puts, || snapshot.is_the_last_report());
        let write = move || {
            // The journal has grown since: the report's time says it is current (`status`
            // and a shard's merge read the newer of the two). Gone meanwhile: written.
            let report = dir.join(report::csv::FILE_NAME);
            let touched = unchanged && report::csv::touch(&report, &journal).is_ok();
            match touched {
                true => Ok(false),
                false => snapshot.write_file(&dir).map(|()| true),
            }
        };
        let written = tokio::task::spawn_blocking(write)
            .await
            .map_err(std::io::Error::other)??;
        match written {
            false => debug!("results.csv holds this report already: not written again"),
            true if settled => self.report_on_disk = OnDisk::Settled(puts),
            true => self.report_on_disk = OnDisk::InFlight,
        }
        Ok(())
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One span per variant's action, carrying its id (STYLE §17).
fn variant_span(variants: &VariantTable, action: &Action) -> tracing::Span {
    let id = match action {
        Action::Submit { id, .. } | Action::Poll { id, .. } | Action::Download { id, .. } => id,
        Action::End { id, .. } => id,
        Action::Stop(_) => return tracing::Span::none(),
    };
    match variants.get(id) {
        Some(v) => {
            tracing::info_span!("variant", variant_id = %id, stem = %v.stem.name, variant = %v.name, take = v.take)
        }
        None => tracing::info_span!("variant", variant_id = %id),
    }
}

#[cfg(test)]
mod tests {
    use super::OnDisk;

    /// The report on disk is kept only while it is the one the run would write: the one
    /// found (the last report) until the run writes its own, then the run's own with the
    /// same variants put and nothing in flight; never after a write with variants in
    /// flight, whatever the rows say.
    #[test]
    fn the_report_on_disk_is_kept_only_while_it_is_the_one_to_write() {
        let table = [
            // on disk, settled, puts, is the last report, kept
            (OnDisk::LastReport, true, 9, true, true),
            (OnDisk::LastReport, true, 9, false, false),
            (OnDisk::LastReport, false, 9, true, false),
            (OnDisk::Settled(9), true, 9, false, true),
            (OnDisk::Settled(9), true, 10, true, false),
            (OnDisk::Settled(9), false, 9, true, false),
            (OnDisk::InFlight, true, 9, true, false),
        ];
        for (on_disk, settled, puts, is_last, kept) in table {
            assert_eq!(
                on_disk.holds(settled, puts, || is_last),
                kept,
                "{on_disk:?} settled {settled} puts {puts} last {is_last}"
            );
        }
    }
}
