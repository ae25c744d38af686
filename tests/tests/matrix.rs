//! The interpreter matrix itself: discovery finds real, runnable CPythons.

#[test]
fn discovery_finds_a_modern_interpreter_and_each_one_runs() {
    let pythons = pydeep_integration::test_pythons("discovery");
    for python in &pythons {
        let out = std::process::Command::new(&python.path)
            .args([
                "-c",
                "import sys; print(sys.version_info[0], sys.version_info[1])",
            ])
            .output()
            .expect("run interpreter");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("{} {}", python.version.0, python.version.1),
            "{} reports another version",
            python.label()
        );
    }
}
