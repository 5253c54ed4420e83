//! Password checks (Argon2id: ≈ 19 MiB of memory and tens of milliseconds of CPU each)
//! run on blocking threads, at most `[login] max_parallel_password_checks` at once. A
//! check that finds every place taken is refused at once: a flood of sign-ins gets fast
//! 503s instead of a queue (and memory) that grows without bound.

use std::sync::Arc;
use tokio::sync::Semaphore;

/// Seconds a refused sign-in is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 2;

pub struct PasswordGate {
    permits: Arc<Semaphore>,
}

/// Every password check place is taken.
#[derive(Debug)]
pub struct Busy;

impl PasswordGate {
    pub fn new(max_parallel: usize) -> PasswordGate {
        PasswordGate {
            permits: Arc::new(Semaphore::new(max_parallel.max(1))),
        }
    }

    /// Runs `work` on a blocking thread if a place is free now; the place is held until
    /// the work ends, even if the request is dropped meanwhile.
    pub async fn run<T, F>(&self, work: F) -> Result<Result<T, String>, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| Busy)?;
        let joined = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await;
        Ok(joined.map_err(|e| e.to_string()))
    }

    /// Places free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_when_every_place_is_taken() {
        let gate = Arc::new(PasswordGate::new(1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let held = tokio::spawn(async move { g.run(move || rx.recv().is_ok()).await });
        while gate.available() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(
            gate.run(|| 1).await.is_err(),
            "second check refused at once"
        );
        tx.send(()).unwrap();
        assert!(matches!(held.await.unwrap(), Ok(Ok(true))));
        assert!(matches!(gate.run(|| 2).await, Ok(Ok(2))));
    }
}
