//! `pydeep info --json`: a recording's summary as one JSON object, the same
//! facts the text shows, for scripts (field names are stable; times in
//! nanoseconds, sizes in bytes).

use pydeep_format::proto;
use pydeep_format::Summary;
use serde_json::{json, Value};

/// The summary of a recording as JSON.
pub fn summary_json(summary: &Summary) -> Value {
    let header = &summary.header;
    json!({
        "file": summary.path.display().to_string(),
        "file_bytes": summary.file_size,
        "complete": summary.complete,
        "format_version": header.format_version,
        "pydeep_version": header.pydeep_version,
        "mode": header.mode,
        "target": {
            "pid": header.pid,
            "executable": header.executable,
            "argv": header.argv,
            "python": header.python_version.as_ref().map(python_json),
            "host_name": header.host_name,
        },
        "start_unix_ns": header.start_unix_ns,
        "sampling": header.sampling.as_ref().map(|s| json!({
            "rate_hz": s.rate_hz,
            "blocking": s.blocking,
            "include_idle": s.include_idle,
            "subprocesses": s.subprocesses,
            "embed_source": s.embed_source,
            "record_values": s.record_values,
            "max_depth": s.max_depth,
        })),
        "duration_ns": summary.duration_ns,
        "samples": summary.samples,
        "threads": summary.threads,
        "bytes_per_sample": summary.bytes_per_sample(),
        "chunks": summary.chunks,
        "records": summary.records,
        "record_bytes": summary.record_bytes,
        "footer": summary.footer.as_ref().map(footer_json),
        "gaps": {
            "count": summary.gaps.count,
            "ticks": summary.gaps.ticks,
            "total_ns": summary.gaps.total_ns,
        },
        "withheld_sources": summary.withheld_sources.iter()
            .map(|(path, why)| json!({"path": path, "why": why}))
            .collect::<Vec<_>>(),
        "process_endings": {
            "total": summary.endings.total,
            "first": summary.endings.shown,
        },
        "problem": summary.problem.as_ref().map(|p| json!({
            "offset": p.offset,
            "message": p.message,
        })),
        "bytes_readable": summary.bytes_readable,
    })
}

fn python_json(version: &proto::PythonVersion) -> Value {
    json!({
        "version": format!("{}.{}.{}{}", version.major, version.minor, version.patch, version.release),
        "major": version.major,
        "minor": version.minor,
        "patch": version.patch,
        "free_threaded": version.free_threaded,
        "debug_build": version.debug_build,
    })
}

fn footer_json(footer: &proto::Footer) -> Value {
    json!({
        "sample_count": footer.sample_count,
        "duration_ns": footer.duration_ns,
        "missed_ticks": footer.missed_ticks,
        "dropped_samples": footer.dropped_samples,
        "torn_samples": footer.torn_samples,
        "torn_retries": footer.torn_retries,
        "paused_ticks": footer.paused_ticks,
        "held_ticks": footer.held_ticks,
        "errors": footer.errors,
        "max_lag_ns": footer.max_lag_ns,
        "end_reason": footer.end_reason,
        "snapshot_count": footer.snapshot_count,
        "chunk_count": footer.chunk_count,
        "read_calls": footer.read_calls,
        "gap_count": footer.gap_count,
        "gap_ticks": footer.gap_ticks,
    })
}
