//! Each filter keeps exactly the samples the plan says it should.

mod common;

use common::*;
use pydeep_view::aggregate::Profile;
use pydeep_view::filter::Filter;
use pydeep_view::input::Input;
use pydeep_view::{collapsed, symbols::Granularity};

fn folded(recorded: &Recorded, filter: &Filter) -> std::collections::BTreeMap<String, u64> {
    let mut input = Input::open(&recorded.path).unwrap();
    let profile = Profile::read(&mut input, filter, Granularity::Function);
    let mut out = Vec::new();
    collapsed::write(&profile, false, &mut out).unwrap();
    parse_folded(&String::from_utf8(out).unwrap())
}

fn check(filter: Filter, keep: impl Fn(&Planned) -> bool) {
    let plan = standard_plan();
    let recorded = record(&plan);
    let expected = expected_folded(&plan, "function", keep);
    assert!(!expected.is_empty(), "the filter keeps something");
    assert_eq!(folded(&recorded, &filter), expected);
}

#[test]
fn thread_filter_by_name_keeps_only_that_thread() {
    check(
        Filter {
            threads: vec!["worker".into()],
            ..Default::default()
        },
        |s| s.thread == 2,
    );
}

#[test]
fn thread_filter_by_native_id_keeps_only_that_thread() {
    check(
        Filter {
            threads: vec!["100".into()],
            ..Default::default()
        },
        |s| s.thread == 1,
    );
}

#[test]
fn pid_filter_keeps_the_process_and_drops_others() {
    check(
        Filter {
            pids: vec![PID],
            ..Default::default()
        },
        |_| true,
    );
    let recorded = record(&standard_plan());
    assert!(folded(
        &recorded,
        &Filter {
            pids: vec![1],
            ..Default::default()
        }
    )
    .is_empty());
}

#[test]
fn time_window_keeps_samples_from_inclusive_to_exclusive() {
    let from = 1_000_000_000; // 1 s after the start: tick 100
    let to = 2_500_000_000; // tick 250
    check(
        Filter {
            from_ns: Some(from),
            to_ns: Some(to),
            ..Default::default()
        },
        |s| s.time_ns >= START_NS + from && s.time_ns < START_NS + to,
    );
}

#[test]
fn active_only_drops_idle_samples() {
    check(
        Filter {
            active_only: true,
            ..Default::default()
        },
        |s| s.flags & ACTIVE != 0,
    );
}

#[test]
fn gil_only_keeps_samples_holding_the_gil() {
    check(
        Filter {
            gil_only: true,
            ..Default::default()
        },
        |s| s.flags & GIL != 0,
    );
}

#[test]
fn filters_combine() {
    check(
        Filter {
            threads: vec!["MainThread".into()],
            gil_only: true,
            from_ns: Some(3_000_000_000),
            ..Default::default()
        },
        |s| s.thread == 1 && s.flags & GIL != 0 && s.time_ns >= START_NS + 3_000_000_000,
    );
}

#[test]
fn torn_samples_are_left_out_unless_asked_for() {
    const TORN: u32 = pydeep_format::proto::SampleFlag::Torn as u32;
    let mut plan = standard_plan();
    for (index, sample) in plan.iter_mut().enumerate() {
        if index % 7 == 3 {
            sample.flags |= TORN;
        }
    }
    let recorded = record(&plan);
    let untorn = expected_folded(&plan, "function", |s| s.flags & TORN == 0);
    assert_eq!(folded(&recorded, &Filter::default()), untorn);
    let all = expected_folded(&plan, "function", |_| true);
    let with_torn = Filter {
        include_torn: true,
        ..Default::default()
    };
    assert_eq!(folded(&recorded, &with_torn), all);
    assert_ne!(untorn, all, "the plan has torn samples");
}
