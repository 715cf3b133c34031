//! SIGINT and SIGTERM: the first asks the run to stop (submit nothing more, save, exit
//! 130), the second to abort at once. Signals only cancel tokens; the run decides what
//! stopping means, and nothing here exits the process.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Tokens cancelled by the first and the second signal.
#[derive(Clone, Debug, Default)]
pub struct Interrupts {
    /// Cancelled by the first SIGINT or SIGTERM.
    pub first: CancellationToken,
    /// Cancelled by the second.
    pub second: CancellationToken,
}

impl Interrupts {
    /// Starts listening for SIGINT and SIGTERM on the current runtime.
    pub fn listen() -> std::io::Result<Self> {
        let interrupts = Interrupts::default();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let tokens = interrupts.clone();
        tokio::spawn(async move {
            for token in [&tokens.first, &tokens.second] {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                token.cancel();
            }
        });
        Ok(interrupts)
    }

    /// Whether the run was asked to stop.
    pub fn interrupted(&self) -> bool {
        self.first.is_cancelled()
    }
}
