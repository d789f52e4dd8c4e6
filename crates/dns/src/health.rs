//! Which PoPs are alive, as their edges report it.
//!
//! Each running edge reports every [`REPORT_INTERVAL`]; a PoP whose last report is older than
//! [`DOWN_AFTER`] is down. Liveness is kept apart from the routing snapshot so that a PoP
//! going quiet never forces a snapshot rebuild, and DNS workers read it as one atomic byte.
//! Being down only ever narrows the choice *inside* a domain's set (see [`crate::select`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use meridian_core::{PopCode, PopSet};
use tokio::time::Instant;

/// How often an edge reports that it is alive.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a PoP may stay silent before it counts as down: three missed reports, so one
/// slow tick does not flap it.
pub const DOWN_AFTER: Duration = Duration::from_secs(3);

/// The last report of every PoP, and the live set derived from them.
#[derive(Debug)]
pub struct HealthBoard {
    last_report: Mutex<[Option<Instant>; 8]>,
    live: AtomicU8,
    monitored: bool,
}

impl HealthBoard {
    /// A board on which every PoP is down until it reports.
    pub fn new() -> Self {
        Self {
            last_report: Mutex::new([None; 8]),
            live: AtomicU8::new(0),
            monitored: true,
        }
    }

    /// A board on which every PoP is always live, for a DNS server that runs without edges
    /// (benchmarks, or a deployment whose health comes only from draining).
    pub fn unmonitored() -> Self {
        Self {
            last_report: Mutex::new([None; 8]),
            live: AtomicU8::new(u8::MAX),
            monitored: false,
        }
    }

    /// Records that `pop`'s edge is alive now; it counts as live at once.
    pub fn report(&self, pop: PopCode) {
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        last[pop.index()] = Some(Instant::now());
        self.live.fetch_or(1 << pop.index(), Ordering::Release);
    }

    /// Marks `pop` down at once, for an edge that stops cleanly.
    pub fn withdraw(&self, pop: PopCode) {
        if !self.monitored {
            return;
        }
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        last[pop.index()] = None;
        self.live.fetch_and(!(1 << pop.index()), Ordering::Release);
    }

    /// The PoPs that reported within [`DOWN_AFTER`], as of the last [`Self::expire`].
    pub fn live(&self) -> PopSet {
        let bits = self.live.load(Ordering::Acquire);
        PopCode::ALL
            .into_iter()
            .filter(|p| bits & (1 << p.index()) != 0)
            .collect()
    }

    /// Drops the PoPs whose last report is too old.
    pub fn expire(&self) {
        if !self.monitored {
            return;
        }
        let now = Instant::now();
        let last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        let mut bits = 0u8;
        for pop in PopCode::ALL {
            if last[pop.index()].is_some_and(|at| now.duration_since(at) < DOWN_AFTER) {
                bits |= 1 << pop.index();
            }
        }
        self.live.store(bits, Ordering::Release);
    }

    /// Expires silent PoPs every half second until `shutdown` completes.
    pub async fn watch(&self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => self.expire(),
            }
        }
    }

    /// Reports `pop` alive every [`REPORT_INTERVAL`], for as long as the returned future runs:
    /// run it beside the edge, so the reports stop when the edge does.
    pub async fn report_while_running(&self, pop: PopCode) {
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        loop {
            tick.tick().await;
            self.report(pop);
        }
    }
}

impl Default for HealthBoard {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_pop_goes_down_and_comes_back() {
        let board = Arc::new(HealthBoard::new());
        assert!(board.live().is_empty(), "nothing reported yet");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn({
            let board = board.clone();
            async move { board.watch(async { stop_rx.await.unwrap_or(()) }).await }
        });
        let eu = tokio::spawn({
            let board = board.clone();
            async move { board.report_while_running(PopCode::Eu).await }
        });
        board.report(PopCode::Jp);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(board.live().contains(PopCode::Eu) && board.live().contains(PopCode::Jp));

        // Tokyo never reports again; Frankfurt keeps reporting.
        tokio::time::sleep(DOWN_AFTER + Duration::from_secs(1)).await;
        assert!(board.live().contains(PopCode::Eu));
        assert!(!board.live().contains(PopCode::Jp));

        // Frankfurt's edge stops: it is down within DOWN_AFTER and a tick.
        eu.abort();
        tokio::time::sleep(DOWN_AFTER + Duration::from_secs(1)).await;
        assert!(board.live().is_empty());

        board.report(PopCode::Jp);
        assert_eq!(board.live(), PopSet::only(PopCode::Jp));
        board.withdraw(PopCode::Jp);
        assert!(board.live().is_empty());
        stop_tx.send(()).unwrap();
        watcher.await.unwrap();
    }

    #[test]
    fn unmonitored_boards_are_all_live() {
        let board = HealthBoard::unmonitored();
        board.expire();
        board.withdraw(PopCode::Eu);
        assert_eq!(board.live(), PopSet::ALL);
    }
}
