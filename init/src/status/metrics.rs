//! `GET /metrics`: the appliance in the Prometheus text format (version 0.0.4), so one
//! Prometheus can watch many appliances: version and phase, bytes received, passes, RPO, the last
//! pass's throughput, the current pass's position, failed authentications, drill sessions and the
//! conversion outcome.

use super::{Shared, State};
use ferry_replicator::receiver::{unix_now, RxStatus};
use std::fmt::Write;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// The metrics text of the state and the receiver's status at `now` (Unix seconds).
pub fn render(st: &State, rx: Option<&RxStatus>, now: f64) -> String {
    let mut out = String::new();
    let phase = st.phase.to_string();
    let _ = writeln!(
        out,
        "# HELP ferry_info The appliance's version and phase.\n# TYPE ferry_info gauge\nferry_info{{version=\"{}\",phase=\"{phase}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(rx) = rx {
        metric(
            &mut out,
            "ferry_bytes_received_total",
            "counter",
            "Bytes written to targets by completed passes.",
            rx.bytes_received_total,
        );
        metric(&mut out, "ferry_passes_total", "counter", "Completed passes.", rx.passes_completed);
        if let Some(rpo) = rx.rpo_s(now) {
            metric(
                &mut out,
                "ferry_rpo_seconds",
                "gauge",
                "Age of the newest complete copy (since its pass started).",
                format!("{rpo:.1}"),
            );
        }
        if let Some(p) = rx.passes.last() {
            let t = (p.ended - p.started).max(1e-3);
            metric(
                &mut out,
                "ferry_last_pass_bytes",
                "gauge",
                "Bytes written by the last pass.",
                p.bytes_written,
            );
            metric(
                &mut out,
                "ferry_last_pass_seconds",
                "gauge",
                "Duration of the last pass.",
                format!("{t:.3}"),
            );
            metric(
                &mut out,
                "ferry_throughput_bytes_per_second",
                "gauge",
                "Bytes written per second by the last pass.",
                format!("{:.0}", p.bytes_written as f64 / t),
            );
        }
        let position: u64 = rx.disks.iter().map(|d| d.position).sum();
        metric(
            &mut out,
            "ferry_pass_position_bytes",
            "gauge",
            "Bytes of the current (or last) pass done.",
            position,
        );
        metric(
            &mut out,
            "ferry_failed_authentications_total",
            "counter",
            "Failed authentications.",
            rx.failed_auth,
        );
        metric(&mut out, "ferry_checks_total", "counter", "ferry check sessions served.", rx.checks);
        metric(&mut out, "ferry_sessions_total", "counter", "Authenticated sessions.", rx.sessions);
    }
    if let Some(c) = &st.conversion {
        metric(
            &mut out,
            "ferry_conversion_ok",
            "gauge",
            "1 when the conversion succeeded, 0 when it failed.",
            u8::from(c.ok),
        );
        metric(
            &mut out,
            "ferry_conversion_seconds",
            "gauge",
            "Duration of the conversion.",
            format!("{:.1}", c.seconds),
        );
    }
    out
}

/// The metrics of the shared state now.
pub fn text(shared: &Shared) -> String {
    let st = shared.lock().unwrap_or_else(|e| e.into_inner());
    let rx = st.receiver.as_ref().map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone());
    render(&st, rx.as_ref(), unix_now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_replicator::receiver::PassRecord;

    #[test]
    fn counters_follow_the_receiver() {
        let st = State { phase: super::super::Phase::Receiving, ..Default::default() };
        let rx = RxStatus {
            passes_completed: 2,
            bytes_received_total: 3_000,
            failed_auth: 1,
            checks: 1,
            passes: vec![
                PassRecord { started: 100.0, ended: 110.0, bytes_written: 2_000, ..Default::default() },
                PassRecord { started: 200.0, ended: 202.0, bytes_written: 1_000, ..Default::default() },
            ],
            ..Default::default()
        };
        let t = render(&st, Some(&rx), 230.0);
        for want in [
            "ferry_info{version=\"",
            "phase=\"receiving\"} 1",
            "\nferry_bytes_received_total 3000\n",
            "\nferry_passes_total 2\n",
            "\nferry_rpo_seconds 30.0\n",
            "\nferry_throughput_bytes_per_second 500\n",
            "\nferry_failed_authentications_total 1\n",
            "\nferry_checks_total 1\n",
            "# TYPE ferry_passes_total counter\n",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
        assert!(!t.contains("ferry_conversion_ok"));
        // Before any pass: no RPO.
        assert!(!render(&st, Some(&RxStatus::default()), 1.0).contains("ferry_rpo_seconds"));
    }
}
