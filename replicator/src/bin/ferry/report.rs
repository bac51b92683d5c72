//! How `ferry send` (and a continuous job) prints a pass's report: JSON on stdout, or lines
//! on stderr.

use ferry_replicator::sender::Report;

/// Prints the report; the exit code (0, or 3 when the receiver's finalization failed).
pub fn print(rep: &Report, json: bool) -> i32 {
    if json {
        println!("{}", serde_json::json!({"event": "report", "report": rep}));
    } else {
        for d in &rep.disks {
            eprintln!(
                "ferry: {} → {}: {} mode, {} of {} bytes considered, {} sent as data, {} as zero ranges, {} on the wire, {:.1}s{}",
                d.source,
                d.target,
                d.mode,
                d.extent_bytes,
                d.source_size,
                d.bytes_sent,
                d.zero_bytes,
                d.wire_bytes,
                d.seconds,
                match d.verified {
                    Some(true) => ", verified",
                    _ => "",
                }
            );
            if d.mode == "Delta" {
                eprintln!("ferry:   delta: compared {} bytes, sent {}", d.bytes_compared, d.bytes_sent);
            }
        }
        let frozen =
            if rep.frozen.is_empty() { String::new() } else { format!(" (froze {})", rep.frozen.join(", ")) };
        eprintln!(
            "ferry: consistency: {}{frozen}",
            serde_json::to_value(rep.consistency)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .as_deref()
                .unwrap_or("?")
        );
        for p in &rep.consistency_problems {
            eprintln!("ferry:   not crash-consistent: {p}");
        }
        eprintln!("ferry: receiver: {}", receiver_summary(&rep.receiver_report));
    }
    if rep.ok {
        0
    } else {
        3
    }
}

/// One line about the receiver's report: its note, or the conversion's outcome.
pub fn receiver_summary(r: &serde_json::Value) -> String {
    if let Some(n) = r.get("note").and_then(|n| n.as_str()).or(r.as_str()) {
        return n.to_string();
    }
    match (r.get("ok").and_then(|v| v.as_bool()), r.get("error").and_then(|v| v.as_str())) {
        (Some(true), _) => {
            let w = r.get("warnings").and_then(|w| w.as_array()).map_or(0, |w| w.len());
            format!("converted ({w} warnings; the full report is in --json output)")
        }
        (_, Some(e)) => format!("conversion failed: {e}"),
        _ => r.to_string(),
    }
}
