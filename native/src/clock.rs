//! The offset that turns the programs' timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) into unix
//! time (CLOCK_REALTIME), written in every batch's header.
//!
//! The two clocks run at one rate (NTP's slewing adjusts both), so their offset only changes when
//! the realtime clock is stepped (settimeofday, an NTP step, a leap second). A reading of it takes
//! two clock calls, and whatever runs between them (a preemption, an interrupt, a VM exit) lands in
//! it: read afresh for every batch, the offset jittered, and a span whose start and end were read in
//! different batches got a duration off by the difference, sometimes negative. So the offset is
//! estimated from the tightest of a few (realtime, monotonic, realtime) readings, and kept: it is
//! looked at again once a second and replaced only when it moved by more than `STEP`, which only a
//! step of the clock does. Durations from monotonic timestamps thus come out exact.
use std::time::{Duration, Instant};

/// Readings per estimate: the tightest one is kept.
const READINGS: usize = 5;
/// How often the estimate is checked against a fresh one (a step is noticed within this).
pub const RECHECK: Duration = Duration::from_secs(1);
/// A move of the offset that counts as a clock step; less is reading noise, and kept out.
pub const STEP_NS: i64 = 1_000_000;

/// Reads a clock in nanoseconds.
pub fn read(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// An estimate of REALTIME - MONOTONIC and its uncertainty (half the tightest reading's width).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub offset_ns: i64,
    pub uncertainty_ns: i64,
}

/// Estimates the offset from `READINGS` (realtime, monotonic, realtime) readings through `read`:
/// the tightest bracket's midpoint minus its monotonic reading. Pure but for `read`.
pub fn estimate(mut read: impl FnMut(libc::clockid_t) -> i64) -> Estimate {
    let mut best: Option<(i64, i64)> = None; // (width, offset)
    for _ in 0..READINGS {
        let before = read(libc::CLOCK_REALTIME);
        let monotonic = read(libc::CLOCK_MONOTONIC);
        let after = read(libc::CLOCK_REALTIME);
        let width = after - before;
        // A bracket that went backwards had a clock step inside it: not a reading.
        if width < 0 {
            continue;
        }
        if best.is_none_or(|(tightest, _)| width < tightest) {
            best = Some((width, before + width / 2 - monotonic));
        }
    }
    let (width, offset_ns) = best.unwrap_or_else(|| {
        // Stepped under every reading (never seen): the last realtime reading, however wide.
        let monotonic = read(libc::CLOCK_MONOTONIC);
        (i64::MAX, read(libc::CLOCK_REALTIME) - monotonic)
    });
    Estimate {
        offset_ns,
        uncertainty_ns: width / 2,
    }
}

/// The offset the reader writes into batches: one estimate, kept until the clock is stepped.
pub struct Offset<R: FnMut(libc::clockid_t) -> i64> {
    read: R,
    current: i64,
    checked: Instant,
}

impl Offset<fn(libc::clockid_t) -> i64> {
    /// The offset of this machine's clocks.
    pub fn system() -> Self {
        Self::with_reader(read, Instant::now())
    }
}

impl<R: FnMut(libc::clockid_t) -> i64> Offset<R> {
    pub fn with_reader(mut read: R, now: Instant) -> Self {
        let current = estimate(&mut read).offset_ns;
        Offset {
            read,
            current,
            checked: now,
        }
    }

    /// The offset at `now`: the kept one, unless a check (once per `RECHECK`) finds it moved by
    /// more than `STEP_NS`, with a reading precise enough to tell.
    pub fn at(&mut self, now: Instant) -> i64 {
        if now.duration_since(self.checked) >= RECHECK {
            self.checked = now;
            let fresh = estimate(&mut self.read);
            if (fresh.offset_ns - self.current).abs() > STEP_NS
                && fresh.uncertainty_ns < STEP_NS / 4
            {
                self.current = fresh.offset_ns;
            }
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A reader replaying (realtime, monotonic, realtime) triples.
    fn replay(triples: &[(i64, i64, i64)]) -> impl FnMut(libc::clockid_t) -> i64 {
        let mut values: VecDeque<i64> = triples.iter().flat_map(|&(a, m, b)| [a, m, b]).collect();
        move |_| values.pop_front().expect("more readings than replayed")
    }

    const BASE: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn the_tightest_reading_wins() {
        // The true offset is BASE; the second reading was preempted for 3 ms between its first two calls.
        let triples = [
            (BASE + 1_000, 1_000 - 40, BASE + 1_000 + 80),
            (BASE + 2_000, 2_000 + 3_000_000, BASE + 2_000 + 3_000_100),
            (BASE + 10_000, 10_000 + 10, BASE + 10_000 + 20),
            (BASE + 20_000, 20_000 + 30, BASE + 20_000 + 60),
            (BASE + 30_000, 30_000 + 50, BASE + 30_000 + 100),
        ];
        let e = estimate(replay(&triples));
        assert_eq!(
            e,
            Estimate {
                offset_ns: BASE,
                uncertainty_ns: 10
            }
        );
    }

    #[test]
    fn a_reading_across_a_step_back_is_ignored() {
        let triples = [
            (BASE + 1_000, 1_000 + 500, BASE - 5_000_000), // stepped back 5 ms inside the bracket
            (BASE + 2_000, 2_000 + 50, BASE + 2_000 + 100),
            (BASE + 3_000, 3_000 + 50, BASE + 3_000 + 100),
            (BASE + 4_000, 4_000 + 50, BASE + 4_000 + 100),
            (BASE + 5_000, 5_000 + 50, BASE + 5_000 + 100),
        ];
        assert_eq!(estimate(replay(&triples)).offset_ns, BASE);
    }

    /// Readings whose offset is `offset` plus `noise` (between the first and second call).
    fn readings(offset: i64, noise: i64) -> Vec<(i64, i64, i64)> {
        (0..READINGS as i64)
            .map(|i| {
                (
                    offset + i * 1000,
                    i * 1000 + noise,
                    offset + i * 1000 + 2 * noise,
                )
            })
            .collect()
    }

    #[test]
    fn the_offset_stays_put_through_noise_and_follows_a_step() {
        let t0 = Instant::now();
        let mut script = readings(BASE, 50); // the first estimate
        script.extend(readings(BASE + 400_000, 50)); // 1 s later: 0.4 ms away, noise
        script.extend(readings(BASE - 2_000_000_000, 50)); // 2 s: the clock stepped back 2 s
        script.extend(readings(BASE + 7_000_000, 3_000_000)); // 3 s: 7 ms away, but read too loosely
        let mut offset = Offset::with_reader(replay(&script), t0);
        assert_eq!(offset.at(t0), BASE);
        // Not looked at again within a second: no reading is taken (the replay would run dry).
        assert_eq!(offset.at(t0 + Duration::from_millis(999)), BASE);
        assert_eq!(offset.at(t0 + Duration::from_secs(1)), BASE);
        assert_eq!(offset.at(t0 + Duration::from_secs(2)), BASE - 2_000_000_000);
        assert_eq!(offset.at(t0 + Duration::from_secs(3)), BASE - 2_000_000_000);
    }

    #[test]
    fn the_real_clocks_give_one_offset_at_every_batch() {
        // Per-batch readings (realtime minus monotonic) differ by the time between the two calls;
        // the kept offset does not.
        let t0 = Instant::now();
        let mut offset = Offset::with_reader(read, t0);
        let first = offset.at(t0);
        for _ in 0..1000 {
            assert_eq!(offset.at(Instant::now()), first);
        }
        // And the estimate agrees with the clocks to well within a step.
        assert!((estimate(read).offset_ns - first).abs() < STEP_NS);
    }
}
