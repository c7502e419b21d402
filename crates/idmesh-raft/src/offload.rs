//! Blocking work (a flush, encoding or decoding a snapshot) off the async workers, or inline
//! when the store is in memory (a simulation: no thread may run outside its schedule).

use std::io;

/// Runs `work` on tokio's blocking pool, or right here when `inline`.
pub async fn off_worker<T, F>(inline: bool, what: &'static str, work: F) -> Result<T, io::Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if inline {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| io::Error::other(format!("{what} task failed: {e}")))
}
