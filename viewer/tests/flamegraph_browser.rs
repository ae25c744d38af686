//! The flamegraph SVG in a real browser (see browser/mod.rs): it must load
//! without console errors, also in a window narrower than its padding
//! (where inferno's script set a negative width), show
//! `qualname (file.py:line)` frame texts with no directory before and after
//! a click zooms, carry the full path in its titles and the thread states,
//! and answer a search.

mod browser;

use browser::{check_page, record_shares, view};

#[test]
fn flamegraph_svg_loads_in_chromium_with_short_labels_and_full_titles() {
    let dir = tempfile::tempdir().unwrap();
    let (recording, label) = record_shares(dir.path());
    let svg = dir.path().join("flame.svg");
    view(&[
        "flamegraph".as_ref(),
        recording.as_os_str(),
        "-o".as_ref(),
        svg.as_os_str(),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("<title>spin (/"),
        "{label}: full path in the titles"
    );
    // A free-threaded interpreter has no GIL to hold: its running
    // pseudo-frame says so.
    let state = if label.contains("free-threaded") {
        "&lt;running (free-threaded: no GIL)&gt;"
    } else {
        "&lt;GIL held&gt;"
    };
    assert!(text.contains(state), "{label}: thread states shown");
    let page = check_page("svg", &svg, "spin");
    assert_eq!(
        page["errors"],
        serde_json::json!([]),
        "{label}: console errors in the SVG"
    );
    for key in ["texts", "texts_after_zoom"] {
        let texts: Vec<&str> = page[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("(cpu_shares.py:")),
            "{label}: {key}: short labels: {texts:?}"
        );
        assert!(
            texts.iter().all(|t| !t.contains('/')),
            "{label}: {key}: no directories in frame texts: {texts:?}"
        );
    }
    assert!(
        page["zoomed_width"].as_str().unwrap().starts_with("100"),
        "{label}: a click zooms the SVG: {page}"
    );
    assert!(
        page["matched"].as_str().unwrap().contains('%'),
        "{label}: search: {page}"
    );
}
