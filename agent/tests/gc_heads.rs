//! The collector's list heads found by shape (what 3.14+ relies on, where
//! no table gives their offsets) are exactly the three generation heads
//! the headers name, on every interpreter found.

use pydeep::heap::generation_heads_by_shape;
use pydeep::memory::read_u64;
use pydeep::Target;
use pydeep_integration::{program, test_pythons};

#[test]
fn gc_list_heads_found_by_shape_are_the_generations_the_headers_name() {
    for python in test_pythons("GC list heads by shape") {
        let mut child = std::process::Command::new(&python.path)
            .arg(program("idle_forever.py"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start python");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .expect("ready line");
        let target = Target::attach(child.id() as i32).expect("attach");
        let o = &target.layout().offsets;
        let main = read_u64(
            target.memory(),
            target.runtime_address() + o.runtime_interpreters_main.unwrap(),
        )
        .unwrap();
        let gc = main + o.interpreter_gc.unwrap();
        let named: Vec<u64> = (0..3)
            .map(|g| gc + o.gc_state_generations.unwrap() + g * o.gc_generation_size.unwrap())
            .collect();
        let guard = target.pause().expect("pause");
        let found =
            generation_heads_by_shape(target.memory(), gc, o.gc_state_collecting.unwrap_or(512));
        drop(guard);
        let _ = child.kill();
        let _ = child.wait();
        // The permanent generation (gc.freeze()) follows the three (after
        // the `generation0` pointer on 3.9-3.11).
        assert!(
            found.len() >= 3 && found[..3] == named[..] && found.len() <= 4,
            "{}: heads by shape {found:x?}, headers name {named:x?}",
            python.label()
        );
        if found.len() == 4 {
            assert!(
                found[3] >= named[2] + o.gc_generation_size.unwrap(),
                "{}",
                python.label()
            );
        }
        eprintln!(
            "   {}: {} heads, the generations at their offsets",
            python.label(),
            found.len()
        );
    }
}
