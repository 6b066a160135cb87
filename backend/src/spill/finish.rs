//! Settling an append in the request's own task, and in a task of its own only if the request is
//! cancelled first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that, dropped before it finished, finishes in a task of its own. A request whose
/// client goes away is cancelled, and its record's bookkeeping (unanswered, rerouted, the
/// spill's backlog) must still be settled; a task per request only for that case would cost
/// every request a spawn and a wake-up.
pub(super) struct FinishOnDrop<F: Future<Output: Send + 'static> + Send + 'static> {
    future: Option<Pin<Box<F>>>,
}

impl<F: Future<Output: Send + 'static> + Send + 'static> FinishOnDrop<F> {
    pub(super) fn new(future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F: Future<Output: Send + 'static> + Send + 'static> Future for FinishOnDrop<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            panic!("FinishOnDrop polled after it finished");
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future<Output: Send + 'static> + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(future);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::FinishOnDrop;

    #[tokio::test]
    async fn finishes_in_place() {
        assert_eq!(FinishOnDrop::new(async { 7 }).await, 7);
    }

    #[tokio::test]
    async fn a_dropped_future_still_finishes() {
        let finished = Arc::new(AtomicBool::new(false));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let flag = finished.clone();
        let settling = FinishOnDrop::new(async move {
            let _ = released.await;
            flag.store(true, Ordering::Release);
        });
        // Cancelled while waiting, as a request is when its client goes away.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), settling).await;
        assert!(
            cancelled.is_err(),
            "the future should still have been waiting"
        );
        assert!(!finished.load(Ordering::Acquire));
        release
            .send(())
            .expect("the dropped future should still be waiting");
        for _ in 0..100 {
            if finished.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped future did not finish in a task of its own");
    }
}
