//! The accept loop of the daemon's HTTP port, hardened against clients that are slow, many or
//! large: whoever reaches the port must not be able to stall the scrapes of the node's
//! Prometheus or grow the agent's memory.
//!
//! - at most `per_peer` connections from one IP address and `total` overall: a further
//!   connection is closed at once, so a flood from one address cannot use up the slots that
//!   the scraper needs;
//! - a request's head must arrive within `header_timeout` (slowloris) and fit in
//!   `max_head_bytes`; only GETs without a body are served, so no body is ever buffered;
//! - a connection lives at most `max_lifetime`, idle keep-alive included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
    pub header_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: 256,
            per_peer: 16,
            header_timeout: Duration::from_secs(5),
            // hyper's floor is 8 KiB; a scrape's head is a few hundred bytes.
            max_head_bytes: 16 * 1024,
            max_lifetime: Duration::from_secs(120),
        }
    }
}

/// Open connections per peer address; a slot is given back when its guard drops.
#[derive(Default)]
struct Slots {
    per_peer: HashMap<IpAddr, usize>,
    total: usize,
}

struct Slot {
    slots: Arc<Mutex<Slots>>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

fn take_slot(slots: &Arc<Mutex<Slots>>, peer: IpAddr, limits: &Limits) -> Option<Slot> {
    let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
    let mine = s.per_peer.get(&peer).copied().unwrap_or(0);
    if s.total >= limits.total || mine >= limits.per_peer {
        return None;
    }
    s.total += 1;
    *s.per_peer.entry(peer).or_insert(0) += 1;
    Some(Slot {
        slots: slots.clone(),
        peer,
    })
}

/// Serves `router` on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends pass; back off instead of spinning on them.
                eprintln!("timerwatch: accepting an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = take_slot(&slots, peer.ip(), &limits) else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(TokioIo::new(stream), service);
            // A timed-out or broken connection is the client's business, not the log's.
            let _ = tokio::time::timeout(limits.max_lifetime, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_peer_and_in_total_and_given_back() {
        let limits = Limits {
            total: 3,
            per_peer: 2,
            ..Limits::default()
        };
        let slots = Arc::new(Mutex::new(Slots::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = take_slot(&slots, a, &limits).expect("first from a");
        let _a2 = take_slot(&slots, a, &limits).expect("second from a");
        assert!(take_slot(&slots, a, &limits).is_none(), "third from a");
        let _b1 = take_slot(&slots, b, &limits).expect("first from b");
        assert!(take_slot(&slots, b, &limits).is_none(), "over the total");
        drop(a1);
        assert!(
            take_slot(&slots, a, &limits).is_some(),
            "a's slot came back"
        );
        assert_eq!(slots.lock().unwrap().total, 2);
    }
}
