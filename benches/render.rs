//! Renders every kafka template repeatedly and prints templates per second (parse + render,
//! and render only). Run: `cargo bench --bench render` (same as `kudo bench render`).

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators/kafka/operator");
    match kudo::bench::render::run(&dir, 3.0) {
        Ok((table, _)) => print!("{}", table.render()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
