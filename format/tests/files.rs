//! Writer::create: file mode, existing files and symbolic links.

mod common;

use std::os::unix::fs::PermissionsExt;

use pydeep_format::{proto, FormatError, Writer, WriterOptions};

fn create(path: &std::path::Path, overwrite: bool) -> Result<Writer<std::fs::File>, FormatError> {
    Writer::create(path, overwrite, common::header(), WriterOptions::default())
}

#[test]
fn a_new_recording_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.pdr");
    let writer = create(&path, false).unwrap();
    writer.finish(proto::Footer::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(pydeep_format::verify(&path).is_valid());
}

#[test]
fn an_existing_file_is_refused_unless_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.pdr");
    std::fs::write(&path, b"precious").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(create(&path, false), Err(FormatError::Exists(p)) if p == path));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    let writer = create(&path, true).unwrap();
    writer.finish(proto::Footer::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "an overwritten file is made private too"
    );
    assert!(pydeep_format::verify(&path).is_valid());
}

#[test]
fn a_symbolic_link_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"precious").unwrap();
    let link = dir.path().join("r.pdr");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for overwrite in [false, true] {
        assert!(
            matches!(create(&link, overwrite), Err(FormatError::Symlink(_))),
            "overwrite={overwrite}"
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // A dangling link too: O_CREAT would otherwise create its target.
    let dangling = dir.path().join("dangling.pdr");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        create(&dangling, true),
        Err(FormatError::Symlink(_))
    ));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn a_directory_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        create(dir.path(), true),
        Err(FormatError::NotARegularFile(_))
    ));
}

#[test]
fn a_writer_killed_before_finish_leaves_a_readable_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.pdr");
    let options = WriterOptions {
        max_samples_per_chunk: 10,
        ..WriterOptions::default()
    };
    let mut writer = Writer::create(&path, false, common::header(), options).unwrap();
    writer.define_thread(proto::ThreadDef {
        id: 1,
        ..Default::default()
    });
    for i in 0..25 {
        writer.sample(2_000_000 + i, 1, 0, 0).unwrap();
    }
    // Dropped without finish, as a killed agent would leave it: the two full
    // chunks of 10 samples are on disk, the 5 samples of the open chunk are not.
    drop(writer);
    let report = pydeep_format::verify(&path);
    assert!(!report.is_valid());
    assert_eq!(report.samples, 20);
    assert_eq!(report.bytes_readable, report.file_size);
    assert!(report.problem.unwrap().message.contains("truncated"));
}
