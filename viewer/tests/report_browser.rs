//! The HTML report in a real browser (see browser/mod.rs): the report of
//! a recording with snapshots and heap counts must load without console
//! errors or network requests, show every panel, zoom on a click, highlight
//! a search, and show the numbers of `pydeep-view top --json` for the same
//! file.

mod browser;

use browser::{check_page, record_shares, view};

#[test]
fn report_loads_in_chromium_with_every_panel_and_the_numbers_of_top() {
    let dir = tempfile::tempdir().unwrap();
    let (recording, label) = record_shares(dir.path());
    let file = recording.as_os_str();

    // The report.
    let report = dir.path().join("report.html");
    view(&["report".as_ref(), file, "-o".as_ref(), report.as_os_str()]);
    let html = std::fs::read_to_string(&report).unwrap();
    for remote in ["src=\"http", "href=\"http", "url(http"] {
        assert!(
            !html.contains(remote),
            "{label}: no remote resources ({remote})"
        );
    }
    let top: serde_json::Value = serde_json::from_slice(&view(&[
        "top".as_ref(),
        file,
        "--json".as_ref(),
        "--limit".as_ref(),
        "0".as_ref(),
    ]))
    .unwrap();
    let page = check_page("report", &report, "spin");
    eprintln!("{label}: report: {}", page["panels"]);
    assert_eq!(
        page["errors"],
        serde_json::json!([]),
        "{label}: console errors"
    );
    assert_eq!(
        page["requests"],
        serde_json::json!([]),
        "{label}: network requests"
    );
    for panel in [
        "flame",
        "timeline",
        "top",
        "source",
        "bytecode",
        "snapshots",
        "heap",
    ] {
        assert!(
            page["panels"][panel].as_u64().unwrap() > 0,
            "{label}: panel {panel} is empty: {}",
            page["panels"]
        );
    }
    let ticks = top["ticks"].as_u64().unwrap();
    assert!(
        page["root_title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("all ({ticks} ticks")),
        "{label}: the flame graph's root counts top's ticks: {}",
        page["root_title"]
    );
    let zoom = &page["zoom"];
    assert_eq!(zoom["root"], page["zoom_target"], "{label}: a click zooms");
    let (width, flame_width) = (
        zoom["width"].as_f64().unwrap(),
        zoom["flame_width"].as_f64().unwrap(),
    );
    assert!(
        (width - flame_width).abs() < 1.0,
        "{label}: the zoomed frame fills the graph: {zoom}"
    );
    assert!(
        page["search"]["matches"].as_u64().unwrap() > 0,
        "{label}: search highlights: {}",
        page["search"]
    );
    assert!(
        page["search"]["matched"]
            .as_str()
            .unwrap()
            .starts_with("matched "),
        "{label}"
    );
    let rows = page["top_rows"].as_array().unwrap();
    let functions = top["functions"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        functions.len(),
        "{label}: one row per function of top"
    );
    for (row, function) in rows.iter().zip(functions) {
        assert_eq!(
            row["label"], function["label"],
            "{label}: row order and labels as top"
        );
        assert_eq!(row["own"], function["own"], "{label}: own ticks as top");
        assert_eq!(
            row["total"], function["total"],
            "{label}: total ticks as top"
        );
        let cells = row["cells"].as_array().unwrap();
        let own_percent = format!("{:.2}%", function["own_percent"].as_f64().unwrap());
        assert_eq!(cells[0], own_percent.as_str(), "{label}: %own as top");
        assert_eq!(
            cells[2],
            function["own"].to_string().as_str(),
            "{label}: own as top"
        );
        assert_eq!(
            cells[3],
            function["total"].to_string().as_str(),
            "{label}: total as top"
        );
    }
}
