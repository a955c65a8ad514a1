//! `cargo run -p xtask -- tidy`: the repository checks (dependency rules,
//! module cycles, function length, module docs, the map's paths). The same
//! checks run as a test (`cargo test -p xtask`).
//!
//! `cargo run -p xtask -- long-functions` prints today's functions over the
//! limit in the ratchet list's format.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("tidy") => match xtask::tidy() {
            Ok(()) => println!("tidy: ok"),
            Err(errors) => {
                for e in errors {
                    eprintln!("tidy: {e}");
                }
                std::process::exit(1);
            }
        },
        Some("long-functions") => {
            let found = xtask::source::crates().and_then(|c| xtask::lengths::long_functions(&c));
            match found {
                Ok(fns) => fns.iter().for_each(|f| println!("{} {} {}", f.lines, f.file, f.name)),
                Err(e) => {
                    eprintln!("xtask: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("cycles") => {
            for krate in xtask::source::crates().unwrap_or_default() {
                match xtask::modules::graph(&krate) {
                    Ok(g) => xtask::modules::cycles(&g).iter().for_each(|c| println!("{}: {}", krate.dir, c.join(" "))),
                    Err(e) => eprintln!("xtask: {e}"),
                }
            }
        }
        _ => {
            eprintln!("usage: cargo run -p xtask -- tidy | long-functions | cycles");
            std::process::exit(2);
        }
    }
}
