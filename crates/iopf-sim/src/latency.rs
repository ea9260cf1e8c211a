//! Latency per stage of a group's life, as percentiles and in the buckets of Linux's VT-d
//! debugfs (`drivers/iommu/intel/perf.c`: <0.1 µs, 0.1–1 µs, 1–10 µs, 10–100 µs, 0.1–1 ms,
//! 1–10 ms, ≥10 ms).
//!
//! The producer side marks each group when its LAST_PAGE left the device, when the IOMMU driver
//! reported it into the fault core, and when the device got its response and retried; the
//! consumer side marks when it read the group and when its response was accepted. Both use the
//! same monotonic clock; [`join`] pairs the marks of one group (a consumer mark belongs to the
//! producer group of the same device and PRG index whose report..retry interval contains it:
//! a PRG index is reused only after its response, so the intervals never overlap).

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::resolver::ConsumerMark;
use crate::FunctionId;

/// The bucket edges of the VT-d debugfs histogram, in nanoseconds.
pub const BUCKET_EDGES_NS: [u64; 6] = [100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];
/// The bucket labels.
pub const BUCKET_LABELS: [&str; 7] = [
    "<0.1us", "0.1-1us", "1-10us", "10-100us", "0.1-1ms", "1-10ms", ">=10ms",
];

/// The stages of a group's life.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// LAST_PAGE sent → reported into the fault core (time in the IOMMU's queue).
    Report,
    /// Reported → read by the consumer (the fault core and the fault queue).
    Delivered,
    /// Through a guest: read by the consumer → posted into the guest's page request queue by
    /// the vIOMMU (waiting for room there).
    GuestQueued,
    /// Through a guest: posted → the guest driver's page request handler ran (the interrupt).
    GuestRead,
    /// Through a guest: the handler ran → its page group response reached the host queue.
    GuestAnswered,
    /// Read → response accepted (the resolver's work).
    Answered,
    /// Response accepted → the device retried (the way back through the core).
    Retry,
    /// LAST_PAGE sent → the device retried: the whole round trip.
    Total,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 8] = [
        Stage::Report,
        Stage::Delivered,
        Stage::GuestQueued,
        Stage::GuestRead,
        Stage::GuestAnswered,
        Stage::Answered,
        Stage::Retry,
        Stage::Total,
    ];

    /// Whether the stage exists only for groups that went through a guest.
    pub fn guest_only(self) -> bool {
        matches!(
            self,
            Stage::GuestQueued | Stage::GuestRead | Stage::GuestAnswered
        )
    }

    /// A label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Report => "sent->report",
            Stage::Delivered => "report->delivered",
            Stage::GuestQueued => "delivered->guest-prq",
            Stage::GuestRead => "guest-prq->guest",
            Stage::GuestAnswered => "guest->answered",
            Stage::Answered => "delivered->answered",
            Stage::Retry => "answered->device",
            Stage::Total => "sent->device (all)",
        }
    }

    /// Which groups the stage counts, in words for a report's reader.
    pub fn counts(self) -> &'static str {
        match self {
            Stage::Report => {
                "groups whose LAST_PAGE request the IOMMU driver reported into the fault core"
            }
            Stage::Delivered | Stage::Answered | Stage::Retry => {
                "groups the consumer read and answered (any code), matched to their device's group"
            }
            Stage::GuestQueued | Stage::GuestRead | Stage::GuestAnswered => {
                "groups the consumer read and the vIOMMU posted to the guest"
            }
            Stage::Total => {
                "every group a device received its response for, whatever the code (SUCCESS, \
                 INVALID, FAILURE) and whoever answered: the consumer, the fault core at once, or \
                 the IOMMU for requests its full queue dropped"
            }
        }
    }
}

/// The producer side's marks of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerMark {
    /// The device.
    pub dev: FunctionId,
    /// The PRG index.
    pub grpid: u32,
    /// When the LAST_PAGE left the device.
    pub sent_ns: u64,
    /// When the driver reported the LAST_PAGE into the fault core (none if the IOMMU dropped it).
    pub report_ns: Option<u64>,
    /// When the device received the response and retried.
    pub retry_ns: u64,
}

/// The distribution of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageLatency {
    /// The stage.
    pub stage: Stage,
    /// Its label.
    pub label: &'static str,
    /// Which groups it counts ([`Stage::counts`]).
    pub counts: &'static str,
    /// Groups measured.
    pub count: u64,
    /// Mean, ns.
    pub mean_ns: f64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
    /// Counts in the VT-d buckets ([`BUCKET_LABELS`], [`BUCKET_EDGES_NS`]). Serialised as one
    /// object per bucket that states its edges: `{"lower_ns": 100, "upper_ns": 1000, "label":
    /// "0.1-1us", "count": 5}`, a bucket holding `lower_ns <= t < upper_ns` (`lower_ns` 0 for
    /// the first, `upper_ns` null for the last).
    #[serde(serialize_with = "buckets_with_edges")]
    pub buckets: [u64; 7],
}

/// One VT-d bucket as serialised: its edges, label and count.
#[derive(Serialize)]
struct BucketOut {
    lower_ns: u64,
    upper_ns: Option<u64>,
    label: &'static str,
    count: u64,
}

fn buckets_with_edges<S: serde::Serializer>(buckets: &[u64; 7], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(buckets.iter().enumerate().map(|(i, &count)| BucketOut {
        lower_ns: i.checked_sub(1).map_or(0, |j| BUCKET_EDGES_NS[j]),
        upper_ns: BUCKET_EDGES_NS.get(i).copied(),
        label: BUCKET_LABELS[i],
        count,
    }))
}

/// One stage's recorder.
#[derive(Debug, Clone)]
struct Recorder {
    hist: Histogram<u64>,
    buckets: [u64; 7],
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            // 1 ns .. 1 hour, 3 significant digits. These bounds are valid constants.
            hist: match Histogram::new_with_bounds(1, 3_600_000_000_000, 3) {
                Ok(h) => h,
                Err(e) => panic!("histogram bounds: {e}"),
            },
            buckets: [0; 7],
        }
    }

    fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
        let b = BUCKET_EDGES_NS.iter().take_while(|&&e| ns >= e).count();
        self.buckets[b] += 1;
    }

    fn finish(&self, stage: Stage) -> StageLatency {
        let h = &self.hist;
        StageLatency {
            stage,
            label: stage.label(),
            counts: stage.counts(),
            count: h.len(),
            mean_ns: if h.is_empty() { 0.0 } else { h.mean() },
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            buckets: self.buckets,
        }
    }
}

/// Pairs the two sides' marks and returns the distribution of every stage.
/// Groups the IOMMU answered itself have only the `Total` stage; groups the core answered
/// without delivering them have `Report` and `Total`. The guest's stages are present only when
/// some consumer mark went through a guest (`Answered` then spans them: the whole consumer side).
pub fn join(producer: &[ProducerMark], consumer: &[ConsumerMark]) -> Vec<StageLatency> {
    let mut rec: HashMap<Stage, Recorder> =
        Stage::ALL.iter().map(|&s| (s, Recorder::new())).collect();
    let mut by_group: HashMap<(FunctionId, u32), Vec<&ConsumerMark>> = HashMap::new();
    for c in consumer {
        by_group.entry((c.dev, c.grpid)).or_default().push(c);
    }
    for v in by_group.values_mut() {
        v.sort_unstable_by_key(|c| c.delivered_ns);
    }
    let mut record = |s: Stage, ns: u64| {
        if let Some(r) = rec.get_mut(&s) {
            r.record(ns);
        }
    };
    for p in producer {
        record(Stage::Total, p.retry_ns.saturating_sub(p.sent_ns));
        let Some(report) = p.report_ns else { continue };
        record(Stage::Report, report.saturating_sub(p.sent_ns));
        let Some(marks) = by_group.get(&(p.dev, p.grpid)) else {
            continue;
        };
        let i = marks.partition_point(|c| c.delivered_ns < report);
        if let Some(c) = marks.get(i).filter(|c| c.answered_ns <= p.retry_ns) {
            record(Stage::Delivered, c.delivered_ns.saturating_sub(report));
            record(
                Stage::Answered,
                c.answered_ns.saturating_sub(c.delivered_ns),
            );
            if let Some(posted) = c.posted_ns {
                record(Stage::GuestQueued, posted.saturating_sub(c.delivered_ns));
                if let Some(g) = c.guest_ns {
                    record(Stage::GuestRead, g.saturating_sub(posted));
                    record(Stage::GuestAnswered, c.answered_ns.saturating_sub(g));
                }
            }
            record(Stage::Retry, p.retry_ns.saturating_sub(c.answered_ns));
        }
    }
    let guest = consumer.iter().any(|c| c.posted_ns.is_some());
    Stage::ALL
        .iter()
        .filter(|s| guest || !s.guest_only())
        .map(|&s| match rec.get(&s) {
            Some(r) => r.finish(s),
            None => Recorder::new().finish(s),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_pair_by_interval_and_fill_buckets() {
        let p = [
            ProducerMark {
                dev: 1,
                grpid: 3,
                sent_ns: 0,
                report_ns: Some(50),
                retry_ns: 20_000,
            },
            ProducerMark {
                dev: 1,
                grpid: 3,
                sent_ns: 30_000,
                report_ns: Some(30_500),
                retry_ns: 2_000_000,
            },
            ProducerMark {
                dev: 2,
                grpid: 3,
                sent_ns: 0,
                report_ns: None,
                retry_ns: 700,
            },
        ];
        let c = [
            ConsumerMark {
                dev: 1,
                grpid: 3,
                delivered_ns: 40_000,
                answered_ns: 45_000,
                posted_ns: None,
                guest_ns: None,
            },
            ConsumerMark {
                dev: 1,
                grpid: 3,
                delivered_ns: 1_000,
                answered_ns: 11_000,
                posted_ns: None,
                guest_ns: None,
            },
        ];
        let s = join(&p, &c);
        let get = |st: Stage| s.iter().find(|x| x.stage == st).unwrap().clone();
        assert_eq!(get(Stage::Total).count, 3);
        assert_eq!(get(Stage::Report).count, 2);
        let d = get(Stage::Delivered);
        assert_eq!(d.count, 2);
        // 1_000 - 50 = 950 ns (0.1-1 µs) and 40_000 - 30_500 = 9_500 ns (1-10 µs).
        assert_eq!(d.buckets, [0, 1, 1, 0, 0, 0, 0]);
        let r = get(Stage::Retry);
        // 20_000 - 11_000 = 9 µs; 2_000_000 - 45_000 = 1.955 ms.
        assert_eq!(r.buckets, [0, 0, 1, 0, 0, 1, 0]);
        // 700 ns, 20 µs, 1.97 ms.
        assert_eq!(get(Stage::Total).buckets, [0, 1, 0, 1, 0, 1, 0]);
    }

    #[test]
    fn buckets_serialise_with_their_edges() {
        let mut r = Recorder::new();
        for ns in [50, 100, 999, 10_000_000, 42_000_000] {
            r.record(ns);
        }
        let v = serde_json::to_value(r.finish(Stage::Total)).unwrap();
        let b = v["buckets"].as_array().unwrap();
        assert_eq!(b.len(), 7);
        let edges: Vec<(u64, Option<u64>, u64)> = b
            .iter()
            .map(|b| {
                (
                    b["lower_ns"].as_u64().unwrap(),
                    b["upper_ns"].as_u64(),
                    b["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            edges,
            [
                (0, Some(100), 1),
                (100, Some(1_000), 2),
                (1_000, Some(10_000), 0),
                (10_000, Some(100_000), 0),
                (100_000, Some(1_000_000), 0),
                (1_000_000, Some(10_000_000), 0),
                (10_000_000, None, 2),
            ]
        );
        assert_eq!(b[1]["label"], "0.1-1us");
        assert!(b[6]["upper_ns"].is_null());
    }
}
