//! Trace events (`pydeep trace`) decoded from their batches: absolute
//! times, one struct per event.
//!
//! A batch codes each event's time as the delta from the previous trace
//! event of the stream, the first from `Header.start_clock_ns`; a
//! [`TraceClock`] carries that chain across batches.

use crate::proto;

/// One trace event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent {
    /// Absolute time on the header's clock, in nanoseconds.
    pub time_ns: u64,
    /// ThreadDef id.
    pub thread: u32,
    /// The event's kind.
    pub kind: proto::TraceEventKind,
    /// FrameDef id.
    pub frame: u64,
}

/// Decodes the time chain of a recording's trace batches, in stream order.
#[derive(Debug, Clone)]
pub struct TraceClock {
    last_ns: u64,
}

impl TraceClock {
    /// A clock starting at the header's `start_clock_ns`.
    pub fn new(start_clock_ns: u64) -> Self {
        TraceClock {
            last_ns: start_clock_ns,
        }
    }

    /// The events of `batch`; a batch whose columns differ in length gives
    /// the events all columns have (a corrupt batch never panics).
    pub fn decode(&mut self, batch: &proto::TraceEventBatch) -> Vec<TraceEvent> {
        let n = batch
            .time_delta_ns
            .len()
            .min(batch.thread.len())
            .min(batch.kind.len())
            .min(batch.frame.len());
        (0..n)
            .map(|i| {
                self.last_ns = self.last_ns.saturating_add(batch.time_delta_ns[i]);
                TraceEvent {
                    time_ns: self.last_ns,
                    thread: batch.thread[i],
                    kind: proto::TraceEventKind::try_from(batch.kind[i])
                        .unwrap_or(proto::TraceEventKind::TraceUnspecified),
                    frame: batch.frame[i],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_chain_across_batches_and_ragged_columns_are_cut() {
        let mut clock = TraceClock::new(1000);
        let batch = proto::TraceEventBatch {
            time_delta_ns: vec![5, 0, 10],
            thread: vec![1, 1, 2],
            kind: vec![1, 2, 1],
            frame: vec![7, 7],
            ..Default::default()
        };
        let events = clock.decode(&batch);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].time_ns, 1005);
        assert_eq!(events[1].kind, proto::TraceEventKind::TraceReturn);
        let next = clock.decode(&proto::TraceEventBatch {
            time_delta_ns: vec![1],
            thread: vec![1],
            kind: vec![99],
            frame: vec![1],
            ..Default::default()
        });
        assert_eq!(next[0].time_ns, 1006);
        assert_eq!(next[0].kind, proto::TraceEventKind::TraceUnspecified);
    }
}
